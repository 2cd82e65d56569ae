"""The task list's "Retry all" form: after an outage, every failed (or cancelled) task
of the list, of its workflow only when it lists one, goes back to the queue."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import Any

import pytest
from wfe_flaskui import Dashboard, create_app

from wfcore import ECSWorkflowEngine, Phase, Task, TaskStatus


@pytest.fixture
def client(wfe_store_url: str) -> Iterator[Any]:
    """A dashboard (no worker of its own) on the test's SQLite store."""
    dash = Dashboard(store=wfe_store_url, run_worker=False, token="", kafka_brokers="")
    yield create_app(dash, secret_key="test-secret").test_client()
    dash.stop()


async def _statuses(store_url: str, submit: bool = False) -> dict[str, str]:
    """With ``submit``, three tasks of workflow "w" and one of "other" fail first."""
    engine = ECSWorkflowEngine(store=store_url, load_plugins=False)

    async def call(task: Task) -> None:
        raise ConnectionError("the ledger is down")

    engine.register_handler("call", call)
    engine.register_workflow("w", [Phase("call")])
    engine.register_workflow("other", [Phase("call")])
    if submit:
        for n, workflow in enumerate(["w", "w", "w", "other"]):
            await engine.submit_task(n, workflow, task_id=f"{workflow}-{n}")
        await engine.run_until_idle()
    found = {t.id: t.status.value for t in await engine.list_tasks(limit=10)}
    await engine.aclose()
    return found


def test_retry_all_queues_the_failed_tasks_of_the_listed_workflow(
    client: Any, wfe_store_url: str
) -> None:
    before = asyncio.run(_statuses(wfe_store_url, submit=True))
    assert set(before.values()) == {TaskStatus.FAILED.value}
    listed = client.get("/?status=failed&workflow=w").text
    form = re.search(r'<form[^>]*id="retry-all".*?</form>', listed, re.DOTALL)
    assert form is not None, "the list of failed tasks offers no Retry all"
    assert 'data-confirm="Retry all 3 failed task(s) of workflow w?"' in form.group()
    assert "Retry all 3</button>" in form.group()
    assert 'id="retry-all"' not in client.get("/?status=pending").text
    csrf = client.get("/api/csrf").get_json()["csrf_token"]

    sent = client.post("/retry", data={"csrf_token": csrf, "status": "failed", "workflow": "w"})
    assert sent.status_code == 303
    assert sent.headers["Location"] == "/?status=pending&workflow=w"
    shown = client.get(sent.headers["Location"]).text
    assert "3 failed task(s) of workflow w queued again." in shown
    after = asyncio.run(_statuses(wfe_store_url))
    assert after == {"w-0": "pending", "w-1": "pending", "w-2": "pending", "other-3": "failed"}

    refused = client.post("/retry", data={"csrf_token": csrf, "status": "completed"})
    assert refused.status_code == 400
    assert "only failed or cancelled tasks are retried, not &#39;completed&#39;" in refused.text
    assert asyncio.run(_statuses(wfe_store_url))["other-3"] == "failed"

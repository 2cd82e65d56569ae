"""Child tasks on the dashboard: a parent's page links its children and says it waits
for them (with no deadline, which it has none of, but the end of its wait in the
timeline), a child's page links its parent."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from datetime import timedelta
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


async def _waiting_parent(store_url: str) -> None:
    """Task "doc" waits for its two children, which wait for a person."""
    engine = ECSWorkflowEngine(store=store_url, load_plugins=False)

    async def split(task: Task) -> None:
        for page in task.data:
            await engine.submit_task(page, "page", parent=task)
        engine.wait_for_children(task, timeout=timedelta(days=2))

    engine.register_handler("split", split)
    engine.register_workflow("batch", [Phase("split", assigned_to="functional")])
    engine.register_workflow("page", [Phase("check", assigned_to="human")])
    await engine.submit_task(["a", "b"], "batch", task_id="doc")
    await engine.run_until_idle()
    task = await engine.get_task("doc")
    assert task is not None and task.status is TaskStatus.WAITING_IO
    await engine.aclose()


def test_a_parent_and_its_children_link_each_other(client: Any, wfe_store_url: str) -> None:
    asyncio.run(_waiting_parent(wfe_store_url))
    parent = client.get("/tasks/doc").text
    children = re.search(r'<dd id="task-children">(.*?)</dd>', parent, re.DOTALL)
    assert children is not None, "the parent's page names no children"
    assert re.findall(r'href="([^"]*)"', children.group(1)) == ["/tasks/doc.1", "/tasks/doc.2"]
    # Each with its status, as it is now.
    badges = re.findall(r'class="badge status-([a-z_]+)"', children.group(1))
    assert badges == ["waiting_human", "waiting_human"]
    assert "waiting for 2" in children.group(1)
    assert "waiting for 2 child task(s) to finish" in parent
    # Its deadline is only when a worker next checks on the children: not shown as one.
    assert "<dt>Deadline</dt>" not in parent and "· deadline" not in parent
    # The end of the wait (its timeout) shows in the timeline as a time.
    assert re.search(r'<i>until</i> <time datetime="[^"]+" class="wfe-time-at">', parent)
    child = client.get("/tasks/doc.1").text
    link = re.search(r'<dd id="task-parent"><a href="([^"]*)">', child)
    assert link is not None and link.group(1) == "/tasks/doc"
    inbox = client.get("/inbox?all=1").text
    card = re.search(r'id="inbox-doc".*?</header>', inbox, re.DOTALL)
    assert card is not None, "the inbox of every waiting task lacks the parent"
    assert "waiting for 2 child task(s)" in card.group() and "deadline" not in card.group()

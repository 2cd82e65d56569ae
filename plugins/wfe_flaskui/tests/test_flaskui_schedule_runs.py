"""The workflows page and API say how each schedule's latest run stands: its task's
status, linked to the task, or that the store has no task for that slot."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
from flaskui_helpers import Api
from wfe_flaskui import Dashboard, create_app

from wfcore import ECSWorkflowEngine, Phase

_NOW = datetime.now(timezone.utc).replace(microsecond=0)
# Latest slots hours ago, past their grace: no worker submits them by itself.
_DAILY = _NOW - timedelta(days=2, hours=5)
_WEEKLY = _NOW - timedelta(days=3)
_SLOT = _DAILY + timedelta(days=2)
_TASK_ID = f"nightly@{_SLOT:%Y-%m-%dT%H:%M:%SZ}"


@pytest.fixture
def api(wfe_store_url: str) -> Iterator[Api]:
    engine = ECSWorkflowEngine(wfe_store_url, load_plugins=False)
    engine.register_workflow("reports", [Phase("gather", assigned_to="human")])
    engine.register_schedule("nightly", "reports", every=86400, start=_DAILY)
    engine.register_schedule("weekly", "reports", every=7 * 86400, start=_WEEKLY)

    async def submit_the_latest_night() -> None:
        submitter = ECSWorkflowEngine(wfe_store_url, load_plugins=False)
        submitter.register_workflow("reports", [Phase("gather", assigned_to="human")])
        await submitter.submit_task({}, "reports", task_id=_TASK_ID)
        await submitter.aclose()

    asyncio.run(submit_the_latest_night())
    dash = Dashboard(engine, run_worker=False, token="", kafka_brokers="")
    yield Api(create_app(dash, secret_key="test-secret").test_client())
    dash.stop()


def test_the_api_gives_each_schedules_latest_run(api: Api) -> None:
    [doc] = api.get("/api/workflows").get_json()["workflows"]
    nightly, weekly = doc["schedules"]
    assert nightly["last"] == {
        "slot": _SLOT.isoformat(),
        "task_id": _TASK_ID,
        "status": "pending",
    }
    assert weekly["last"] == {
        "slot": _WEEKLY.isoformat(),
        "task_id": f"weekly@{_WEEKLY:%Y-%m-%dT%H:%M:%SZ}",
        "status": None,
    }


def test_the_workflows_page_links_the_latest_run(api: Api) -> None:
    page = api.get("/workflows").get_data(as_text=True)
    nightly = page.split('data-schedule="nightly">', 1)[1].split("</p>", 1)[0]
    assert '; last <time datetime="' in nightly
    link = nightly.split("; last ", 1)[1]
    assert 'data-last-run="pending">Pending</a>' in link
    href = link.split('<a href="', 1)[1].split('"', 1)[0]
    assert api.get(href).status_code == 200
    assert _TASK_ID in api.get(href).get_data(as_text=True)
    weekly = page.split('data-schedule="weekly">', 1)[1].split("</p>", 1)[0]
    assert 'data-last-run="none"' in weekly and "not in the store" in weekly

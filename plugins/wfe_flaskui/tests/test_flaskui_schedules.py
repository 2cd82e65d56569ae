"""The workflows page and API show a workflow's schedules and its phases' limits."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from flaskui_helpers import Api
from wfe_flaskui import Dashboard, create_app

from wfcore import ECSWorkflowEngine, Phase


@pytest.fixture
def api(wfe_store_url: str) -> Iterator[Api]:
    engine = ECSWorkflowEngine(wfe_store_url, load_plugins=False)
    engine.register_handler("render", lambda task: None)
    engine.register_workflow(
        "reports",
        [Phase("gather", assigned_to="human"), Phase("render", max_concurrency=2)],
    )
    # Daily at 02:00 UTC, and every 6 hours from a start still to come.
    engine.register_schedule(
        "nightly",
        "reports",
        every=timedelta(days=1),
        start=datetime(2026, 1, 1, 2, tzinfo=timezone.utc),
    )
    engine.register_schedule(
        "later",
        "reports",
        every=6 * 3600,
        start=datetime(2100, 1, 1, tzinfo=timezone.utc),
        priority=-10,
    )
    dash = Dashboard(engine, run_worker=False, token="", kafka_brokers="")
    yield Api(create_app(dash, secret_key="test-secret").test_client())
    dash.stop()


def test_the_api_gives_each_workflow_its_schedules_and_limits(api: Api) -> None:
    [doc] = api.get("/api/workflows").get_json()["workflows"]
    assert doc["phases"][1]["max_concurrency"] == 2
    assert "max_concurrency" not in doc["phases"][0]
    later, nightly = doc["schedules"]
    assert later == {
        "name": "later",
        "every": 21600.0,
        "period": "6 hours",
        "start": "2100-01-01T00:00:00+00:00",
        "next": "2100-01-01T00:00:00+00:00",  # its start, still to come
        "grace": 3600.0,
        "priority": -10,
        "last": None,  # no slot has come yet
    }
    assert nightly["every"] == 86400.0
    assert nightly["priority"] == 0
    upcoming = datetime.fromisoformat(nightly["next"])
    now = datetime.now(timezone.utc)
    assert (upcoming.hour, upcoming.minute) == (2, 0)
    assert now < upcoming <= now + timedelta(days=1)


def test_the_workflows_page_shows_them(api: Api) -> None:
    page: Any = api.get("/workflows").get_data(as_text=True)
    assert 'data-schedule="nightly">Scheduled as <code>nightly</code>: every day from' in page
    # The start is a moment, which the page's script leaves a date and time (it made
    # the default start "from 20784 d ago"); the next slot is said as how soon.
    nightly = page.split('data-schedule="nightly">', 1)[1].split("</p>", 1)[0]
    assert (
        'every day from <time datetime="2026-01-01T02:00:00+00:00" class="wfe-time-at">'
        "2026-01-01 02:00:00 UTC</time>; next <time " in nightly
    )
    assert nightly.split("; next ", 1)[1].startswith('<time datetime="')
    assert 'class="wfe-time">' in nightly.split("; next ", 1)[1]
    # A priority other than 0 is said, as wfe workflows says it.
    assert (
        'data-schedule="later">Scheduled as <code>later</code> (priority -10): every 6 hours from'
        in page
    )
    assert 'data-max-concurrency="2"' in page
    assert "≤ 2 at once" in page

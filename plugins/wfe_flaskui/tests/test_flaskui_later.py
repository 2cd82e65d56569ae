"""Tasks that start later: ``run_after`` through the API and the submit form, and the notes
the pages show for a pending task that is not due yet (delayed, or a retry's backoff)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from flaskui_demo_app import make_engine
from flaskui_helpers import Api, submit_form_hidden, wait_for
from werkzeug.datastructures import MultiDict
from wfe_flaskui import Dashboard, create_app
from wfe_flaskui.later import StartError, form_start, start_note, until

from wfcore import Phase, Task, TaskStatus


def _text(html: str) -> str:
    """What a page says, without its markup."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", html)).strip()


def _shown(when: str) -> str:
    return datetime.fromisoformat(when).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _region(html: str, element_id: str) -> str:
    found = re.search(rf'<p class="start-note" id="{element_id}"[^>]*>(.*?)</p>', html, re.S)
    assert found, f"no #{element_id} in the page"
    return _text(found[1])


def _note_cell(html: str, task_id: str) -> str:
    row = html.split(f'<tr data-task-id="{task_id}"', 1)[1].split("</tr>", 1)[0]
    return _text(row.split('<td class="note">', 1)[1])


# -- the JSON API ---------------------------------------------------------------------------


def test_the_api_takes_run_after_as_a_time_or_seconds(api: Api) -> None:
    later = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(hours=2)
    as_utc = api.submit("numbers", {"n": 1}, run_after=later.strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert as_utc["status"] == "pending"
    assert datetime.fromisoformat(as_utc["run_after"]) == later
    assert as_utc["history"][0]["run_after"] == later.isoformat()

    # Another offset names the same moment; the task holds it in UTC.
    paris = later.astimezone(timezone(timedelta(hours=1))).isoformat()
    assert paris.endswith("+01:00")
    as_paris = api.submit("numbers", {"n": 2}, run_after=paris)
    assert as_paris["run_after"] == later.isoformat()

    before = datetime.now(timezone.utc)
    in_seconds = api.submit("numbers", {"n": 3}, run_after=90.5)
    after = datetime.now(timezone.utc)
    start = datetime.fromisoformat(in_seconds["run_after"])
    assert before + timedelta(seconds=90.5) <= start <= after + timedelta(seconds=90.5)

    # The task JSON everywhere carries it: the task URL and the list.
    assert api.task(in_seconds["id"])["run_after"] == in_seconds["run_after"]
    listed = {t["id"]: t for t in api.get("/api/tasks?status=pending").get_json()["tasks"]}
    assert listed[as_utc["id"]]["run_after"] == later.isoformat()

    # Now, null, and a time already past start at once; the delayed ones still wait
    # after those have finished (the worker ran past them).
    now = [
        api.submit("numbers", {"n": 4}, run_after=0),
        api.submit("numbers", {"n": 5}, run_after=None),
        api.submit("numbers", {"n": 6}, run_after="2020-01-01T00:00:00+00:00"),
    ]
    for task in now:
        assert (
            api.wait_status(task["id"], "completed")["output"]
            == f"reported {task['data']['n'] * 2}"
        )
    for task in (as_utc, as_paris, in_seconds):
        stored = api.task(task["id"])
        assert stored["status"] == "pending"
        assert [e["event"] for e in stored["history"]] == ["submitted"]


@pytest.mark.parametrize(
    ("run_after", "problem"),
    [
        ("tomorrow", "'tomorrow' is not an ISO 8601 time"),
        ("2026-02-30T09:00:00Z", "'2026-02-30T09:00:00Z' is not a real time: day is out of range"),
        ("2026-12-01T09:00:00", "'2026-12-01T09:00:00' has no UTC offset"),
        ("2026-12-01", "'2026-12-01' has no UTC offset"),
        ("9999-12-31T23:00:00-05:00", "is out of range"),
        ("3000-01-01T00:00:00Z", "is more than 100 years from now"),
        (-5, "a delay of -5 seconds is not 0 to 100 years"),
        (4e9, "a delay of 4000000000.0 seconds is not 0 to 100 years"),
        (10**30, "is not 0 to 100 years"),
        (True, "not a boolean"),
        ([60], "not a JSON array"),
        ({"minutes": 5}, "not a JSON object"),
    ],
)
def test_a_bad_run_after_is_400_naming_the_field(api: Api, run_after: Any, problem: str) -> None:
    response = api.post("/api/tasks", {"workflow": "numbers", "data": {}, "run_after": run_after})
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error.startswith(
        '"run_after" must be an ISO 8601 time with a UTC offset (e.g. "2026-12-01T09:00:00Z") '
        "or a number of seconds from now"
    ), error
    assert problem in error
    assert api.get("/api/tasks").get_json()["total"] == 0


def test_a_huge_number_of_seconds_is_400_not_a_crash(api: Api) -> None:
    # 1e999 is JSON (an infinite float to Python); 10**400 does not fit a float at all.
    for body in (
        b'{"workflow": "numbers", "run_after": 1e999}',
        b'{"workflow": "numbers", "run_after": 1' + b"0" * 400 + b"}",
    ):
        response = api.post(
            "/api/tasks", data=body, json=None, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 400, body
        assert "is not 0 to 100 years" in response.get_json()["error"]


# -- what the pages show --------------------------------------------------------------------


def test_pages_say_when_a_delayed_task_starts(api: Api) -> None:
    task = api.submit("numbers", {"n": 1}, run_after=2 * 3600)
    when = _shown(task["run_after"])
    page = api.get(f"/tasks/{task['id']}").text
    assert _region(page, "task-start") == (
        f"Starts at {when} (in 2 h): submitted to start later; no worker takes it before then."
    )
    assert 'data-kind="start"' in page
    # The region an open page refreshes itself with says the same.
    partial = api.get(f"/tasks/{task['id']}", headers={"X-WFE-Partial": "1"}).text
    assert _region(partial, "task-start") == _region(page, "task-start")
    # The timeline's submitted event shows the time as a time.
    assert f"run after {when}" in _text(page.split('id="history"', 1)[1])

    listing = api.get("/?status=pending").text
    assert _note_cell(listing, task["id"]) == f"starts at {when} (in 2 h)"
    assert _note_cell(api.get("/", headers={"X-WFE-Partial": "1"}).text, task["id"]).startswith(
        "starts at"
    )

    # A task that starts now has no note.
    now = api.submit("question", {})
    api.wait_status(now["id"], "waiting_human")
    assert 'id="task-start"' not in api.get(f"/tasks/{now['id']}").text
    assert "starts at" not in _note_cell(api.get("/").text, now["id"])


def test_no_note_once_the_start_time_has_passed(wfe_store_url: str) -> None:
    # No worker here, so a task whose time has come stays pending, as it does until a
    # worker gets to it: it is due, and says nothing about starting later.
    engine = make_engine()
    engine.use_store(wfe_store_url)
    dash = Dashboard(engine, token="", kafka_brokers="")
    try:
        api = Api(create_app(dash, secret_key="k").test_client())
        due = api.submit("numbers", {}, run_after="2020-01-01T00:00:00Z")
        assert api.task(due["id"])["status"] == "pending"
        assert 'id="task-start"' not in api.get(f"/tasks/{due['id']}").text
        assert "starts at" not in _note_cell(api.get("/").text, due["id"])
        waiting = api.submit("numbers", {}, run_after=600)
        assert _region(api.get(f"/tasks/{waiting['id']}").text, "task-start").startswith(
            f"Starts at {_shown(waiting['run_after'])} (in 10 min)"
        )
    finally:
        dash.stop()


@pytest.fixture
def slow_retries(wfe_store_url: str) -> Iterator[Api]:
    """A dashboard whose worker waits an hour before retrying a failed attempt."""
    engine = make_engine()
    engine.use_store(wfe_store_url)
    engine.retry_delay = 3600.0
    # The demo's flaky handler fails each task's first attempt.
    engine.register_workflow(
        "flaky_twice", [Phase("flaky", assigned_to="functional", max_attempts=2)]
    )
    dash = Dashboard(engine, run_worker=True, token="", kafka_brokers="")
    try:
        yield Api(create_app(dash, secret_key="k").test_client())
    finally:
        dash.stop()


def test_a_retry_waiting_out_its_backoff_says_retry_at(slow_retries: Api) -> None:
    api = slow_retries
    task = api.submit("flaky_twice", {})
    doc = wait_for(
        lambda: (d := api.task(task["id"]))["status"] == "pending" and d["attempts"] == 1 and d,
        what="the first attempt to fail",
    )
    assert [e["event"] for e in doc["history"]][-2:] == ["attempt_failed", "retry_scheduled"]
    when = _shown(doc["run_after"])
    page = api.get(f"/tasks/{task['id']}").text
    assert _region(page, "task-start") == (
        f"Retry at {when} (in 1 h): attempt 1 failed, the next waits out its backoff."
    )
    assert 'data-kind="retry"' in page
    assert "RuntimeError: the flaky service is down" in page
    note = _note_cell(api.get("/").text, task["id"])
    assert note == f"retry at {when} (in 1 h) · RuntimeError: the flaky service is down"


def test_start_notes_tell_delays_from_retries_and_only_for_the_future() -> None:
    now = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)
    delayed = Task(data=None, workflow_name="w", run_after=now + timedelta(hours=2))
    delayed.record("submitted", run_after=delayed.run_after.isoformat())  # type: ignore[union-attr]
    note = start_note(delayed, now)
    assert note is not None and (note.kind, note.label, note.until) == (
        "start",
        "starts at",
        "in 2 h",
    )
    assert start_note(delayed, now + timedelta(hours=2)) is None
    delayed.status = TaskStatus.IN_PROGRESS
    assert start_note(delayed, now) is None

    retry = Task(data=None, workflow_name="w", run_after=now + timedelta(seconds=4))
    for event in ("submitted", "phase_started", "attempt_failed", "retry_scheduled"):
        retry.record(event)
    note = start_note(retry, now)
    assert note is not None and (note.kind, note.label, note.until) == (
        "retry",
        "retry at",
        "in 4 s",
    )
    # Only a retry_scheduled after the last phase_started counts: an earlier one's
    # retry has run since.
    retry.record("phase_started")
    assert start_note(retry, now).kind == "start"  # type: ignore[union-attr]

    assert [until(s) for s in (0.2, 59.4, 59.6, 90, 3599, 5400, 86399, 90000, 30 * 86400)] == [
        "in 1 s",
        "in 59 s",
        "in 1 min",
        "in 2 min",
        "in 1 h",
        "in 1 h 30 min",
        "in 1 d",
        "in 1 d 1 h",
        "in 30 d",
    ]


# -- the submit form ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "seconds"),
    [("10m", 600), ("2h", 7200), ("1d", 86400), ("1w", 7 * 86400), ("1.5 H", 5400), ("30s", 30)],
)
def test_form_delays(typed: str, seconds: float) -> None:
    now = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)
    assert form_start(typed, now) == now + timedelta(seconds=seconds)
    assert form_start("  ", now) is None


def test_the_submit_form_starts_a_task_later(api: Api) -> None:
    page = api.get("/submit").text
    assert re.search(r'<label for="s-start-later">Start later</label>', page)
    assert '<input id="s-start-later" name="start_later" value=""' in page

    def send(start_later: str, n: int) -> Any:
        hidden = submit_form_hidden(api.get("/submit").text)
        fields = [*hidden, ("workflow", "numbers"), ("data", f'{{"n": {n}}}')]
        return api.client.post("/submit", data=MultiDict([*fields, ("start_later", start_later)]))

    before = datetime.now(timezone.utc)
    delayed = send("2h", 1)
    after = datetime.now(timezone.utc)
    assert delayed.status_code == 303
    task_id = delayed.headers["Location"].rsplit("/", 1)[1]
    doc = api.task(task_id)
    start = datetime.fromisoformat(doc["run_after"])
    assert before + timedelta(hours=2) <= start <= after + timedelta(hours=2)
    shown = api.get(delayed.headers["Location"]).text
    assert f"submitted to numbers; it starts at {_shown(doc['run_after'])}." in shown
    assert _region(shown, "task-start").startswith(f"Starts at {_shown(doc['run_after'])} (in 2 h)")

    at = send("2026-12-24T18:00:00+01:00", 2)
    assert at.status_code == 303
    assert api.task(at.headers["Location"].rsplit("/", 1)[1])["run_after"] == (
        "2026-12-24T17:00:00+00:00"
    )

    # Empty starts it now.
    now = send("", 3)
    assert now.status_code == 303
    now_id = now.headers["Location"].rsplit("/", 1)[1]
    assert api.task(now_id)["run_after"] is None
    assert api.wait_status(now_id, "completed")["output"] == "reported 6"
    assert api.task(task_id)["status"] == "pending"


@pytest.mark.parametrize(
    ("typed", "problem"),
    [
        (
            "soon",
            "'soon' is neither a delay (a number and a unit s, m, h, d or w, e.g. 10m, 2h, 1d) "
            "nor an ISO 8601 time with a UTC offset (e.g. 2026-12-01T09:00:00Z)",
        ),
        ("10x", "'10x' is neither a delay"),
        ("-5m", "'-5m' is neither a delay"),
        (
            "2026-12-01T09:00",
            "'2026-12-01T09:00' has no UTC offset; add one (Z for UTC, or e.g. +01:00)",
        ),
        ("5000000d", "a delay of '5000000d' is not 0 to 100 years"),
        (
            "2026-12-01T25:00:00Z",
            "'2026-12-01T25:00:00Z' is not a real time: hour must be in 0..23",
        ),
        (
            "2026-12-01T09:00:00+25:00",
            "'2026-12-01T09:00:00+25:00' is not a real time: a UTC offset must be less than "
            "24 hours",
        ),
        ("3000-01-01T00:00:00Z", "'3000-01-01T00:00:00Z' is more than 100 years from now"),
    ],
)
def test_a_bad_start_is_shown_beside_the_field(api: Api, typed: str, problem: str) -> None:
    hidden = submit_form_hidden(api.get("/submit").text)
    fields = [*hidden, ("workflow", "numbers"), ("data", '{"n": 1}'), ("start_later", typed)]
    page = api.client.post("/submit", data=MultiDict(fields))
    assert page.status_code == 400
    field = page.text.split('data-field="start_later">', 1)[1].split('<div class="field', 1)[0]
    error = re.search(r'<div class="error" role="alert">(.*?)</div>', field, re.S)
    assert error and problem in _text(error[1]).replace("&#39;", "'"), field
    assert f'name="start_later" value="{typed}"' in page.text  # what was typed is kept
    assert submit_form_hidden(page.text) == hidden  # so is the task's id
    assert api.get("/api/tasks").get_json()["total"] == 0
    with pytest.raises(StartError):
        form_start(typed, datetime.now(timezone.utc))

"""Task priority in the dashboard: submitted through the API and the submit form, carried
by every task JSON, shown on the pages when it is not the default 0, and changed while
the task waits (its page's Priority form, POST /api/tasks/<id>/priority)."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
from flaskui_helpers import Api, submit_form_hidden
from werkzeug.datastructures import MultiDict
from wfe_flaskui import Dashboard


def _text(markup: str) -> str:
    """What a piece of page says, without its markup."""
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", markup))).strip()


def _first_cell(page: str, task_id: str) -> str:
    """The task list's Task cell of one task."""
    row = page.split(f'<tr data-task-id="{task_id}"', 1)[1].split("</tr>", 1)[0]
    return row.split("<td>", 1)[1].split("</td>", 1)[0]


def _field(page: str, name: str) -> str:
    """One field of the submit form."""
    return page.split(f'data-field="{name}">', 1)[1].split('<div class="field', 1)[0]


# -- the JSON API ---------------------------------------------------------------------------


def test_the_api_submits_a_priority_and_every_task_json_carries_it(api: Api) -> None:
    urgent = api.submit("question", {"q": "urgent"}, priority=100)
    low = api.submit("question", {"q": "later"}, priority=-1000)
    plain = api.submit("question", {"q": "plain"})
    null = api.submit("question", {"q": "null"}, priority=None)
    assert [t["priority"] for t in (urgent, low, plain, null)] == [100, -1000, 0, 0]
    # Its submitted event says so, as the engine records it (0 is not said).
    assert urgent["history"][0]["priority"] == 100
    assert "priority" not in plain["history"][0]
    assert api.task(urgent["id"])["priority"] == 100
    listed = api.get("/api/tasks").get_json()["tasks"]
    assert {t["id"]: t["priority"] for t in listed} == {
        urgent["id"]: 100,
        low["id"]: -1000,
        plain["id"]: 0,
        null["id"]: 0,
    }


@pytest.mark.parametrize(
    ("priority", "problem"),
    [
        (5000, '"priority" must be from -1000 to 1000, not 5000'),
        (-1001, '"priority" must be from -1000 to 1000, not -1001'),
        ("high", '"priority" must be an integer from -1000 to 1000, not "high"'),
        ("5", '"priority" must be an integer from -1000 to 1000, not "5"'),
        (2.5, '"priority" must be an integer from -1000 to 1000, not 2.5'),
        (True, '"priority" must be an integer from -1000 to 1000, not true'),
        ([1], '"priority" must be an integer from -1000 to 1000, not [1]'),
    ],
)
def test_a_bad_priority_is_400_naming_the_field(api: Api, priority: Any, problem: str) -> None:
    response = api.post(
        "/api/tasks", {"workflow": "question", "data": {}, "priority": priority, "id": "t-1"}
    )
    assert response.status_code == 400
    assert response.get_json() == {"error": problem}
    assert api.get("/api/tasks").get_json()["total"] == 0


# -- the submit form ------------------------------------------------------------------------


def _send(api: Api, priority: str | None, hidden: list[tuple[str, str]] | None = None) -> Any:
    fields = hidden if hidden is not None else submit_form_hidden(api.get("/submit").text)
    fields = [*fields, ("workflow", "question"), ("data", '{"q": 1}')]
    if priority is not None:
        fields.append(("priority", priority))
    return api.client.post("/submit", data=MultiDict(fields))


def test_the_submit_form_takes_an_optional_priority(api: Api) -> None:
    page = api.get("/submit").text
    assert '<label for="s-priority">Priority</label>' in page
    assert re.search(
        r'<input id="s-priority" name="priority" type="number" min="-1000" max="1000" '
        r'step="1" value="" placeholder="0"',
        page,
    )
    ids = {}
    for typed in ("7", " -20 ", "+3", "", None):
        sent = _send(api, typed)
        assert sent.status_code == 303, sent.text
        ids[typed] = sent.headers["Location"].rsplit("/", 1)[1]
    assert {typed: api.task(i)["priority"] for typed, i in ids.items()} == {
        "7": 7,
        " -20 ": -20,
        "+3": 3,
        "": 0,
        None: 0,
    }


@pytest.mark.parametrize(
    ("typed", "problem"),
    [
        ("5000", "5000 is out of range; a priority is from -1000 to 1000"),
        ("-1001", "-1001 is out of range; a priority is from -1000 to 1000"),
        (
            "2.5",
            "'2.5' is not a whole number in digits (such as 10 or -5); a priority is one from "
            "-1000 to 1000 (higher runs first; empty means 0)",
        ),
        ("1e3", "'1e3' is not a whole number in digits"),  # 1000, as a browser may send it
        ("high", "'high' is not a whole number"),
        ("1_000", "'1_000' is not a whole number"),
        ("\uff15", "'\uff15' is not a whole number"),  # a fullwidth 5, which int() reads
        # Past 4,300 digits int() raised: a 500.
        ("9" * 5000, "99999999999999999999... is out of range; a priority is from -1000"),
    ],
)
def test_a_bad_priority_is_shown_beside_the_field(api: Api, typed: str, problem: str) -> None:
    hidden = submit_form_hidden(api.get("/submit").text)
    page = _send(api, typed, hidden)
    assert page.status_code == 400
    field = _field(page.text, "priority")
    error = re.search(r'<div class="error" role="alert">(.*?)</div>', field, re.S)
    assert error and problem in _text(error[1]), field
    assert 'name="priority" type="number"' in field
    assert f'value="{html.escape(typed)}"' in field  # what was typed is kept
    assert submit_form_hidden(page.text) == hidden  # so is the task's id
    assert 'data-field="data"' in page.text and "{&#34;q&#34;: 1}" in page.text
    assert api.get("/api/tasks").get_json()["total"] == 0
    from wfe_flaskui.submit import PriorityError, form_priority

    with pytest.raises(PriorityError):
        form_priority(typed)


# -- the pages ------------------------------------------------------------------------------


def _submit(dashboard: Dashboard, workflow: str, data: Any, priority: int) -> str:
    """A task submitted by the engine itself: its id."""
    task = dashboard.call(lambda e: e.submit_task(data, workflow, priority=priority))
    return str(task.id)


def test_the_pages_show_a_priority_other_than_0(api: Api, dashboard: Dashboard) -> None:
    urgent = _submit(dashboard, "question", {"q": "urgent"}, 100)
    low = _submit(dashboard, "question", {"q": "later"}, -5)
    plain = _submit(dashboard, "question", {"q": "plain"}, 0)
    done = _submit(dashboard, "numbers", {"n": 1}, 100)
    done_plain = _submit(dashboard, "numbers", {"n": 2}, 0)
    for task_id in (urgent, low, plain):
        api.wait_status(task_id, "waiting_human")
    for task_id in (done, done_plain):
        api.wait_status(task_id, "completed")

    listed = api.get("/").text
    assert _text(_first_cell(listed, urgent)) == f"{urgent[:8]} prio +100"
    assert 'title="priority 100: workers take it before the ready tasks of lower priority"' in (
        _first_cell(listed, urgent)
    )
    assert _text(_first_cell(listed, low)) == f"{low[:8]} prio -5"
    # The common case says nothing: no badge, no column.
    assert _text(_first_cell(listed, plain)) == plain[:8]
    assert "Priority" not in listed

    # A finished task's page says its priority in the summary; one of 0 does not.
    shown = api.get(f"/tasks/{done}").text
    summary = re.search(r'<dd id="task-priority" data-priority="100">(.*?)</dd>', shown, re.S)
    assert summary and _text(summary[1]) == "100 (higher goes first)"
    assert "<i>priority</i> 100" in shown  # and so does the submitted event
    assert "Priority" not in api.get(f"/tasks/{done_plain}").text
    assert 'id="priority-form"' not in shown  # too late to change it
    # A waiting task's page has its priority in a form that changes it, 0 included.
    for task_id, priority in ((urgent, 100), (low, -5), (plain, 0)):
        page = api.get(f"/tasks/{task_id}").text
        assert 'id="task-priority"' not in page
        assert re.search(
            r'<input id="t-priority" name="priority" type="number" min="-1000" max="1000" '
            rf'step="1" value="{priority}"',
            page,
        )

    inbox = api.get("/inbox").text
    card = inbox.split(f'data-task-id="{urgent}"', 1)[1].split("</header>", 1)[0]
    assert 'data-priority="100"' in card
    card = inbox.split(f'data-task-id="{plain}"', 1)[1].split("</header>", 1)[0]
    assert "data-priority" not in card


# -- changing it ----------------------------------------------------------------------------


def test_the_api_changes_the_priority_of_a_waiting_task(api: Api, dashboard: Dashboard) -> None:
    waiting = _submit(dashboard, "question", {"q": 1}, 0)
    done = _submit(dashboard, "numbers", {"n": 1}, 0)
    api.wait_status(waiting, "waiting_human")
    api.wait_status(done, "completed")

    changed = api.post(f"/api/tasks/{waiting}/priority", {"priority": 250})
    assert changed.status_code == 200
    assert changed.get_json()["priority"] == 250 == api.task(waiting)["priority"]
    event = changed.get_json()["history"][-1]
    assert (event["event"], event["previous"], event["priority"]) == ("priority_changed", 0, 250)
    assert (
        api.post(f"/api/tasks/{waiting}/priority", {"priority": None}).get_json()["priority"] == 0
    )

    refusals = [
        (waiting, {"priority": 1001}, 400, '"priority" must be from -1000 to 1000, not 1001'),
        (
            waiting,
            {"priority": "9"},
            400,
            '"priority" must be an integer from -1000 to 1000, not "9"',
        ),
        (waiting, {}, 400, 'the request body must be a JSON object with a "priority" field'),
        (waiting, {"priority": 1, "by": "x"}, 400, "unknown field 'by'"),
        (
            done,
            {"priority": 1},
            409,
            f"task {done!r} is COMPLETED; only a PENDING or waiting task's priority can be changed",
        ),
        ("no-such-task", {"priority": 1}, 404, "unknown task 'no-such-task'"),
    ]
    for task_id, body, status, error in refusals:
        response = api.post(f"/api/tasks/{task_id}/priority", body)
        assert (response.status_code, response.get_json()) == (status, {"error": error}), body
    assert api.task(waiting)["priority"] == 0


def test_the_task_page_changes_the_priority(api: Api, dashboard: Dashboard) -> None:
    waiting = _submit(dashboard, "question", {"q": 1}, 0)
    api.wait_status(waiting, "waiting_human")

    def send(typed: str) -> Any:
        form = {"csrf_token": api.csrf, "priority": typed}
        return api.client.post(f"/tasks/{waiting}/priority", data=form)

    changed = send("40")
    assert changed.status_code == 303
    assert changed.headers["Location"].endswith(f"/tasks/{waiting}")
    page = api.get(f"/tasks/{waiting}").text
    assert f"Task {waiting[:8]} priority set to 40." in page
    assert 'step="1" value="40"' in page
    assert api.task(waiting)["priority"] == 40
    assert "Priority changed" in page  # its event, in the timeline

    assert send("9" * 5000).status_code == 400  # past 4,300 digits int() raised: a 500
    refused = send("4000")
    assert refused.status_code == 400
    form = refused.text.split('id="priority-form"', 1)[1].split("</form>", 1)[0]
    error = re.search(r'<div class="error" role="alert">(.*?)</div>', form, re.S)
    assert error and _text(error[1]) == "4000 is out of range; a priority is from -1000 to 1000"
    assert 'step="1" value="4000"' in form  # what was typed is kept
    # The page stays as it is, error and all, rather than refreshing it away.
    assert "data-refresh=" not in refused.text
    assert api.task(waiting)["priority"] == 40

    dashboard.call(lambda e: e.cancel(waiting))
    late = send("1")
    assert late.status_code == 303
    page = api.get(f"/tasks/{waiting}").text
    assert "is CANCELLED; only a PENDING or waiting task&#39;s priority can be changed" in page
    assert 'id="priority-form"' not in page

"""Task priority in the dashboard: submitted through the API and the submit form, carried
by every task JSON, and shown on the pages when it is not the default 0."""

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
        ("2.5", "'2.5' is not a whole number; a priority is one from -1000 to 1000"),
        ("1e3", "'1e3' is not a whole number"),
        ("high", "'high' is not a whole number"),
        ("1_000", "'1_000' is not a whole number"),
        ("\uff15", "'\uff15' is not a whole number"),  # a fullwidth 5, which int() reads
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


def test_the_pages_show_a_priority_other_than_0(api: Api, dashboard: Dashboard) -> None:
    def submit(question: str, priority: int) -> dict[str, Any]:
        task = dashboard.call(
            lambda e: e.submit_task({"q": question}, "question", priority=priority)
        )
        return {"id": task.id}

    urgent = submit("urgent", 100)
    low = submit("later", -5)
    plain = submit("plain", 0)
    for task in (urgent, low, plain):
        api.wait_status(task["id"], "waiting_human")

    listed = api.get("/").text
    assert _text(_first_cell(listed, urgent["id"])) == f"{urgent['id'][:8]} prio +100"
    assert 'title="priority 100: workers take it before the ready tasks of lower priority"' in (
        _first_cell(listed, urgent["id"])
    )
    assert _text(_first_cell(listed, low["id"])) == f"{low['id'][:8]} prio -5"
    # The common case says nothing: no badge, no column.
    assert _text(_first_cell(listed, plain["id"])) == plain["id"][:8]
    assert "Priority" not in listed

    shown = api.get(f"/tasks/{urgent['id']}").text
    summary = re.search(r'<dd id="task-priority" data-priority="100">(.*?)</dd>', shown, re.S)
    assert summary and _text(summary[1]) == "100 (higher goes first)"
    assert "<dt>Priority</dt>" in api.get(f"/tasks/{low['id']}").text
    assert "<dt>Priority</dt>" not in api.get(f"/tasks/{plain['id']}").text
    # The history says it too, in the submitted event.
    assert "<i>priority</i> 100" in shown

    inbox = api.get("/inbox").text
    card = inbox.split(f'data-task-id="{urgent["id"]}"', 1)[1].split("</header>", 1)[0]
    assert 'data-priority="100"' in card
    card = inbox.split(f'data-task-id="{plain["id"]}"', 1)[1].split("</header>", 1)[0]
    assert "data-priority" not in card

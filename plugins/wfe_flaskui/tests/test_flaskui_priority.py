"""Task priority in the dashboard: submitted through the API and the submit form, carried
by every task JSON, and shown on the pages when it is not the default 0."""

from __future__ import annotations

import html
import re
from typing import Any

from flaskui_helpers import Api
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

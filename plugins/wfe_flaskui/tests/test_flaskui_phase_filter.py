"""The task list filtered by phase: from a phase of a workflow's graph, or a task's
phase in the list, to the tasks at that phase (the page and ``/api/tasks?phase=``)."""

from __future__ import annotations

import html
import re
from typing import Any

from flaskui_helpers import Api, wait_for

_ROW = re.compile(r'<tr data-task-id="([0-9a-f]{32})"')


def _sign_offs_at_two_phases(api: Api) -> tuple[list[str], str]:
    """Three sign_off tasks waiting at 'legal'; then one answered, which waits at
    'finance'. Returns the ids still at legal (newest first) and the one at finance."""
    ids = [api.submit("sign_off", {"contract": f"c-{i}"})["id"] for i in range(3)]
    for task_id in ids:
        api.wait_status(task_id, "waiting_human")
    answered = api.post(f"/api/tasks/{ids[1]}/resume", {"output": {"approved": True}})
    assert answered.status_code == 200, answered.get_data(as_text=True)
    wait_for(
        lambda: (
            (doc := api.task(ids[1]))["classification"] == "finance"
            and doc["status"] == "waiting_human"
        ),
        what="the answered task to wait at finance",
    )
    return [ids[2], ids[0]], ids[1]


def test_the_api_lists_and_counts_the_tasks_at_one_phase(api: Api) -> None:
    at_legal, at_finance = _sign_offs_at_two_phases(api)
    api.submit("question", {"q": "elsewhere"})

    legal = api.get("/api/tasks?workflow=sign_off&phase=legal").get_json()
    assert [t["id"] for t in legal["tasks"]] == at_legal
    assert legal["total"] == 2 and legal["counts"] == {"waiting_human": 2}
    finance = api.get("/api/tasks?phase=finance").get_json()
    assert [t["id"] for t in finance["tasks"]] == [at_finance]
    assert finance["total"] == 1
    paged = api.get("/api/tasks?phase=legal&limit=1&offset=1").get_json()
    assert [t["id"] for t in paged["tasks"]] == at_legal[1:]
    assert api.get("/api/tasks?phase=no-such-phase").get_json()["tasks"] == []


def test_the_page_keeps_the_phase_in_its_links_and_can_drop_it(api: Api) -> None:
    at_legal, at_finance = _sign_offs_at_two_phases(api)

    page = api.get("/?workflow=sign_off&phase=legal").get_data(as_text=True)
    assert _ROW.findall(page) == at_legal
    # The filter shows, carried by the form, with a link to every phase.
    assert '<input type="hidden" name="phase" value="legal">' in page
    assert 'href="/?workflow=sign_off" title="all phases"' in page
    # The status tabs count and link the tasks at this phase only.
    waiting = re.search(
        r'href="([^"]+)" data-status="waiting_human"><span>[^<]*</span><b>(\d+)', page
    )
    assert waiting is not None and waiting[2] == "2"
    assert html.unescape(waiting[1]) == "/?status=waiting_human&workflow=sign_off&phase=legal"

    # A task's phase in the list links to the tasks at that phase.
    everything = api.get("/?workflow=sign_off").get_data(as_text=True)
    assert 'href="/?workflow=sign_off&amp;phase=finance">finance</a>' in everything
    finance = api.get("/?workflow=sign_off&phase=finance").get_data(as_text=True)
    assert _ROW.findall(finance) == [at_finance]


def test_the_workflow_graph_links_each_phase_to_its_tasks(api: Api) -> None:
    _sign_offs_at_two_phases(api)
    page = api.get("/workflows").get_data(as_text=True)
    assert '<a href="/?workflow=sign_off&amp;phase=legal">' in page
    assert '<a href="/?workflow=sign_off&amp;phase=finance">' in page


def test_retry_all_of_one_phase_retries_only_the_tasks_at_it(api: Api) -> None:
    at_legal, at_finance = _sign_offs_at_two_phases(api)
    for task_id in (at_legal[0], at_finance):
        assert api.post(f"/api/tasks/{task_id}/cancel").status_code == 200

    page = api.get("/?status=cancelled&workflow=sign_off&phase=legal").get_data(as_text=True)
    assert _ROW.findall(page) == [at_legal[0]]
    form = re.search(r'<form[^>]*id="retry-all".*?</form>', page, re.DOTALL)
    assert form is not None, "the list of cancelled tasks at a phase offers no Retry all"
    assert (
        'data-confirm="Retry all 1 cancelled task(s) of workflow sign_off at phase legal?"'
        in form.group()
    )
    assert '<input type="hidden" name="phase" value="legal">' in form.group()

    sent = api.client.post(
        "/retry",
        data={
            "csrf_token": api.csrf,
            "status": "cancelled",
            "workflow": "sign_off",
            "phase": "legal",
        },
    )
    assert sent.status_code == 303
    assert sent.headers["Location"] == "/?status=pending&workflow=sign_off&phase=legal"
    shown = api.get(sent.headers["Location"]).get_data(as_text=True)
    assert "1 cancelled task(s) of workflow sign_off at phase legal queued again." in shown
    api.wait_status(at_legal[0], "waiting_human")  # asked again
    assert api.task(at_finance)["status"] == "cancelled"


def test_in_a_browser_the_status_menu_keeps_the_phase_and_the_workflow_menu_drops_it(
    page: Any, live: Any
) -> None:
    from playwright.sync_api import expect

    task = live.api.submit("sign_off", {"contract": "in a browser"})
    live.api.wait_status(task["id"], "waiting_human")
    page.goto(live.url + "/?workflow=sign_off&phase=legal")
    expect(page.locator("#phase-filter code")).to_have_text("legal")
    expect(page.locator(f"tr[data-task-id='{task['id']}']")).to_be_visible()

    page.select_option("select[name=status]", "waiting_human")
    page.wait_for_url(re.compile(r"status=waiting_human"))
    assert "phase=legal" in page.url and "workflow=sign_off" in page.url
    expect(page.locator("#phase-filter code")).to_have_text("legal")

    # A phase is one workflow's: choosing another workflow (here: all) drops it.
    page.select_option("select[name=workflow]", "")
    page.wait_for_url(lambda url: "workflow=sign_off" not in url)
    assert "phase=" not in page.url and "status=waiting_human" in page.url
    expect(page.locator("#phase-filter")).to_have_count(0)

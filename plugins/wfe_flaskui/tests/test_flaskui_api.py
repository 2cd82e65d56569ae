"""The dashboard's JSON API and pages through Flask's test client, on a real SQLite store."""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from flask import Flask
from flaskui_demo_app import make_engine
from flaskui_helpers import (
    AnswerFormReader,
    Api,
    http_request,
    serving,
    submit_form_hidden,
    wait_for,
)
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import HTTPException
from wfe_flaskui import Dashboard, create_app, display
from wfe_flaskui.server import UnsafeBindError, check_bind

from wfcore import ECSWorkflowEngine


def test_submit_runs_to_completion_and_shows_in_lists(api: Api) -> None:
    response = api.post("/api/tasks", {"workflow": "numbers", "data": {"n": 21}})
    assert response.status_code == 201
    created = response.get_json()
    assert response.headers["Location"].endswith(f"/api/tasks/{created['id']}")
    assert created["workflow_name"] == "numbers"

    done = api.wait_status(created["id"], "completed")
    assert done["outputs"]["double"] == {"n": 42}
    assert done["output"] == "reported 42"

    listing = api.get("/api/tasks?status=completed&workflow=numbers").get_json()
    assert [t["id"] for t in listing["tasks"]] == [created["id"]]
    assert listing["total"] == 1
    assert listing["counts"] == {"completed": 1}

    # "data" may be left out: the task's data is then null.
    bare = api.post("/api/tasks", {"workflow": "question"})
    assert bare.status_code == 201 and bare.get_json()["data"] is None

    page = api.get("/").get_data(as_text=True)
    assert created["id"][:8] in page
    assert 'data-status="completed"' in page


def test_list_is_newest_first_filtered_and_paged(api: Api, dashboard: Dashboard) -> None:
    ids = [api.submit("question", {"i": i})["id"] for i in range(5)]
    api.submit("numbers", {"n": 1})
    wait_for(
        lambda: api.get("/api/tasks?status=waiting_human").get_json()["total"] == 5,
        what="five waiting questions",
    )

    first = api.get("/api/tasks?workflow=question&limit=2").get_json()
    second = api.get("/api/tasks?workflow=question&limit=2&offset=2").get_json()
    assert first["total"] == 5
    assert [t["id"] for t in first["tasks"] + second["tasks"]] == ids[::-1][:4]
    oldest = api.get("/api/tasks?workflow=question&limit=1&order=oldest").get_json()
    assert oldest["tasks"][0]["id"] == ids[0]
    both = api.get("/api/tasks?status=waiting_human,completed").get_json()
    assert both["total"] == 5 + both["counts"].get("completed", 0)

    dashboard.page_size = 2
    page2 = api.get("/?workflow=question&page=2").get_data(as_text=True)
    rows = re.findall(r'<tr data-task-id="([0-9a-f]{32})"', page2)
    assert rows == ids[::-1][2:4]
    assert "3\N{EN DASH}4 of 5" in page2 and "page 2 of 3" in page2
    assert 'href="/?workflow=question&amp;page=3" rel="next"' in page2
    assert 'href="/?workflow=question&amp;page=1" rel="prev"' in page2
    counts = re.search(r'data-status="waiting_human"><span>[^<]*</span><b>(\d+)', page2)
    assert counts and counts[1] == "5"
    beyond = api.get("/?workflow=question&page=9").get_data(as_text=True)
    assert (
        'No tasks on this page. <a href="/?workflow=question&amp;page=3">The last page (3)</a>.'
        in beyond
    )
    none = api.get("/?workflow=question&status=failed&page=2").get_data(as_text=True)
    assert (
        'No tasks on this page. <a href="/?status=failed&amp;workflow=question&amp;page=1">'
        "The first page</a>."
    ) in none


def test_the_workflow_filter_offers_every_workflow_on_every_page(
    api: Api, dashboard: Dashboard
) -> None:
    """It offered only the workflows of the tasks on the page shown: those whose
    tasks were all older than the first page could not be picked from it."""
    api.submit("numbers", {"n": 1})
    newer = [api.submit("question", {"i": i})["id"] for i in range(3)]
    dashboard.page_size = 2

    def offered(path: str) -> list[str]:
        page = api.get(path).get_data(as_text=True)
        select = re.search(r'<select name="workflow"[^>]*>(.*?)</select>', page, re.S)
        assert select, page
        return re.findall(r'<option value="([^"]*)"', select[1])

    every = ["", *sorted(dashboard.engine.workflows)]
    assert "numbers" in every and "question" in every
    for path in ("/", "/?page=2", "/?page=9", "/?workflow=question"):
        assert offered(path) == every, path
    assert re.findall(r'<tr data-task-id="([0-9a-f]{32})"', api.get("/").text) == newer[:0:-1]


def test_bad_input_gets_400_with_a_message(api: Api) -> None:
    cases = [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"workflow": "nope", "data": {}}', "unknown workflow 'nope'"),
        (b'{"data": {}}', '"workflow" must name'),
        (b'{"workflow": "numbers", "data": {}, "classification": "zzz"}', "unknown classification"),
        (b'{"workflow": "numbers", "data": {}, "assigned_to": "robot"}', "unknown assigned_to"),
        (b'{"workflow": "numbers", "data": NaN}', "not valid JSON"),
        (b'{"workflow": "numbers", "data": {"a": 1, "a": 2}}', "the key 'a' is given twice"),
        (b'{"workflow": "numbers", "workflow": "question"}', "'workflow' is given twice"),
        (b'{"workflow": "numbers", "colour": 1}', "unknown field 'colour'"),
        (b'{"workflow": "numbers", "id": ["a"]}', '"id" must be a non-empty string'),
        (b'{"workflow": "numbers", "workflow_name": "review"}', '"workflow" and "workflow_name"'),
        (b'{"workflow": "numbers", "data": "\\ud800"}', "lone surrogate \\ud800"),
        (b'{"workflow": "numbers", "data": {"\\udfff": 1}}', "lone surrogate \\udfff"),
        (b'{"workflow": "numbers", "data": ' + b"[" * 600 + b"]" * 600 + b"}", "nested deeper"),
        (b'{"workflow": "numbers", "data": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested deeper"),
    ]
    for body, message in cases:
        response = api.post(
            "/api/tasks", data=body, json=None, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 400, body
        assert message in response.get_json()["error"], (body, response.get_json())
    assert api.get("/api/tasks?limit=many").status_code == 400
    assert api.get("/api/tasks?status=sleeping").status_code == 400
    order = api.get("/api/tasks?order=sideways")
    assert order.status_code == 400
    assert order.get_json()["error"] == "order must be newest or oldest, not 'sideways'"
    assert api.get("/api/tasks").get_json()["total"] == 0  # nothing was stored

    # A refused answer leaves the task waiting.
    task = api.submit("question", {})
    api.wait_status(task["id"], "waiting_human")
    for answer, message in [(b'"\\ud800"', "lone surrogate"), (b"[" * 5000, "nested deeper")]:
        response = api.post(
            f"/api/tasks/{task['id']}/resume",
            data=b'{"output": ' + answer + b"}",
            json=None,
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 400 and message in response.get_json()["error"]
    assert api.task(task["id"])["status"] == "waiting_human"
    page = api.client.post(
        "/submit",
        data={"csrf_token": api.csrf, "workflow": "numbers", "data": "[" * 5000 + "]" * 5000},
    )
    assert page.status_code == 400
    assert re.search(r'data-field="data">.*?nested deeper than', page.text, re.S)


def test_list_arguments_out_of_range_are_400_and_limit_is_capped(api: Api) -> None:
    for query, message in [
        ("limit=0", "limit must be at least 1"),
        ("limit=-1", "limit must be at least 1"),
        ("offset=-5", "offset must be at least 0"),
    ]:
        response = api.get(f"/api/tasks?{query}")
        assert response.status_code == 400, query
        assert response.get_json()["error"] == message
    capped = api.get("/api/tasks?limit=100000").get_json()
    assert capped["limit"] == 500
    page = api.get("/?page=0")
    assert page.status_code == 400 and "page must be at least 1" in page.text


def test_status_names_are_case_insensitive(api: Api) -> None:
    task = api.submit("question", {})
    api.wait_status(task["id"], "waiting_human")
    for status in ("waiting", "WAITING", "Waiting", "WAITING_HUMAN", "waiting_human,Completed"):
        listing = api.get(f"/api/tasks?status={status}").get_json()
        assert [t["id"] for t in listing["tasks"]] == [task["id"]], status
    assert api.get("/api/tasks?status=ALL").get_json()["total"] == 1
    assert task["id"][:8] in api.get("/?status=Waiting").text


def _selected_status(page: str) -> list[str]:
    """The value of each selected option of the task list's status filter."""
    select = re.search(r'<select name="status"[^>]*>(.*?)</select>', page, re.S)
    assert select, "no status filter on the page"
    return re.findall(r'<option value="([^"]*)" selected>', select[1])


def test_the_status_filter_shows_the_status_however_it_is_spelt(api: Api) -> None:
    task = api.submit("question", {})
    api.wait_status(task["id"], "waiting_human")
    for given, shown in [
        ("Waiting_Human", "waiting_human"),
        ("WAITING_HUMAN", "waiting_human"),
        (" waiting_human ", "waiting_human"),
        ("Waiting", "waiting"),
        ("waiting_human&status=COMPLETED", "waiting_human,completed"),
        ("All", ""),
    ]:
        page = api.get(f"/?status={given}").text
        assert _selected_status(page) == [shown], given
        # The counts have a link per status: the one filtered on is marked.
        active = re.findall(r'<a class="count[^"]* active" [^>]*data-status="([^"]+)"', page)
        one = "," not in shown and shown != "waiting"
        assert active == ([shown or "all"] if one else []), given
        # Links that keep the filter spell it as the dropdown does.
        workflow_link = re.search(r'<a class="muted-link" href="([^"]+)"', page)
        assert workflow_link, given
        assert workflow_link[1] == "/?workflow=question" + (
            f"&amp;status={shown}" if shown else ""
        ), given
    both = api.get("/?status=waiting_human,completed").text
    select = re.search(r'<select name="status"[^>]*>(.*?)</select>', both, re.S)
    assert select and ">Waiting: person, Completed</option>" in select[1]


def test_a_page_with_a_bad_query_argument_is_400(api: Api) -> None:
    assert api.get("/?page=").status_code == 200  # empty means the default
    # Other scripts' digits and 1_000 are numbers to int(), not to a person reading the URL.
    for query in ("page=abc", "page=1.5", "status=failed&page=x", "page=%D9%A3", "page=1_0"):
        response = api.get(f"/?{query}")
        assert response.status_code == 400, query
        assert "page must be an integer" in response.text
        assert 'id="error"' in response.text
    region = api.get("/?page=abc", headers={"X-WFE-Partial": "1"})
    assert region.status_code == 400
    assert "page must be an integer" in region.text


def test_every_api_error_is_json(api: Api) -> None:
    cases = [
        ("GET", "/api/bogus", 404, "no API endpoint /api/bogus"),
        ("POST", "/api/tasks/x/y/z", 404, "no API endpoint"),
        ("GET", "/api/tasks/x/cancel", 405, "GET is not allowed on /api/tasks/x/cancel"),
        ("DELETE", "/api/tasks", 405, "allowed: GET, HEAD, OPTIONS, POST"),
        ("PUT", "/api/tasks/x/retry", 405, "allowed: OPTIONS, POST"),
    ]
    for method, path, status, message in cases:
        response = api.client.open(path, method=method, headers={"X-CSRF-Token": api.csrf})
        assert response.status_code == status, (method, path)
        assert response.is_json, (method, path, response.text)
        assert message in response.get_json()["error"], (method, path)
    assert api.get("/api/tasks/x/cancel").headers["Allow"] == "OPTIONS, POST"
    # Pages keep their HTML.
    page = api.get("/no-such-page")
    assert page.status_code == 404 and not page.is_json


def test_unknown_task_is_404(api: Api) -> None:
    assert api.get("/api/tasks/nope").status_code == 404
    assert api.post("/api/tasks/nope/resume", {"output": 1}).status_code == 404
    assert api.post("/api/tasks/nope/cancel").status_code == 404
    assert api.post("/api/tasks/nope/retry").status_code == 404
    page = api.get("/tasks/nope")
    assert page.status_code == 404
    assert "no task &#39;nope&#39;" in page.get_data(as_text=True)


def test_resume_validates_against_the_schema_then_finishes(api: Api) -> None:
    task = api.submit("review", {"topic": "release notes"})
    api.wait_status(task["id"], "waiting_human")

    bad = api.post(f"/api/tasks/{task['id']}/resume", {"output": {"decision": "maybe"}})
    assert bad.status_code == 400
    body = bad.get_json()
    assert any("score" in e for e in body["errors"])
    assert any("decision" in e for e in body["errors"])
    assert api.post(f"/api/tasks/{task['id']}/resume", {"answer": 1}).status_code == 400

    ok = api.post(f"/api/tasks/{task['id']}/resume", {"output": {"decision": "ship", "score": 5}})
    assert ok.status_code == 200
    done = api.wait_status(task["id"], "completed")
    assert done["outputs"]["approve"] == {"decision": "ship", "score": 5}
    assert done["output"] == {"published": True}

    again = api.post(f"/api/tasks/{task['id']}/resume", {"output": {"decision": "hold"}})
    assert again.status_code == 409
    assert "not waiting" in again.get_json()["error"]


def _open_form(api: Api, task_id: str, where: str = "task") -> list[tuple[str, str]]:
    """The hidden fields of the task's answer form, as a page opened now shows them."""
    page = api.get(f"/tasks/{task_id}" if where == "task" else "/inbox").text
    if where == "inbox":
        page = page.split(f'data-task-id="{task_id}"', 1)[1]
    return [(k, v) for k, v in AnswerFormReader(page).hidden if k != "next"] + [("next", where)]


def test_an_answer_form_left_open_is_not_taken_for_the_next_phase(api: Api) -> None:
    # Two people open the legal question; one answers, the other sends a form
    # that still asks it. That answer must not become finance's.
    task = api.submit("sign_off", {"contract": "c-1"})
    api.wait_status(task["id"], "waiting_human")
    alice = _open_form(api, task["id"])
    bob = _open_form(api, task["id"], "inbox")
    assert ("phase", "legal") in alice and ("phase", "legal") in bob

    sent = api.client.post(
        f"/tasks/{task['id']}/answer", data=MultiDict([*alice, ("field.approved", "true")])
    )
    assert sent.status_code == 303
    moved = wait_for(
        lambda: (
            (doc := api.task(task["id"]))["classification"] == "finance"
            and doc["status"] == "waiting_human"
            and doc
        ),
        what="the task to wait for finance",
    )
    assert moved["outputs"] == {"legal": {"approved": True}}

    note = "Legal says NO <b>unsigned</b>"
    for form, where in ((bob, "inbox"), ([*bob[:-1], ("next", "task")], "task")):
        stale = api.client.post(
            f"/tasks/{task['id']}/answer", data=MultiDict([*form, ("field.note", note)])
        )
        assert stale.status_code == 409, where
        html = stale.text
        assert "moved on from phase &#39;legal&#39; to &#39;finance&#39;" in html
        assert "your answer was not recorded" in html
        # What was typed is shown back (as text), so it is not lost.
        refused = html.split('id="answer-refused"', 1)[1].split("</details>", 1)[0]
        assert "Legal says NO &lt;b&gt;unsigned&lt;/b&gt;" in refused
        # The form now shown is finance's, and empty.
        assert ("phase", "finance") in AnswerFormReader(html.split('id="answer-refused"')[1]).hidden
    after = api.task(task["id"])
    assert after["status"] == "waiting_human" and after["classification"] == "finance"
    assert after["outputs"] == {"legal": {"approved": True}}


def test_an_answer_form_left_open_is_not_taken_for_the_next_round_of_its_question(
    api: Api,
) -> None:
    # A workflow that loops asks the same question again: the phase alone cannot
    # tell the rounds apart, the version the form was read at can.
    task = api.submit("rounds", {"doc": "d-1"})
    first = api.wait_status(task["id"], "waiting_human")
    alice = _open_form(api, task["id"])
    bob = _open_form(api, task["id"])
    assert ("version", str(first["version"])) in bob

    sent = api.client.post(
        f"/tasks/{task['id']}/answer", data=MultiDict([*alice, ("field.approved", "false")])
    )
    assert sent.status_code == 303
    wait_for(
        lambda: (
            (doc := api.task(task["id"]))["status"] == "waiting_human"
            and doc["version"] > first["version"]
        ),
        what="the second round of the review",
    )
    stale = api.client.post(
        f"/tasks/{task['id']}/answer", data=MultiDict([*bob, ("field.approved", "true")])
    )
    assert stale.status_code == 409
    assert "is back at phase &#39;review&#39; (waiting: person) with a new round" in (stale.text)
    # '²' is a digit to str.isdigit() but not to int().
    for garbage in ("abc", "\u00b2", "9" * 5000):  # past 4,300 digits int() raised: a 500
        garbled = [(k, garbage if k == "version" else v) for k, v in bob]
        bad = api.client.post(
            f"/tasks/{task['id']}/answer", data=MultiDict([*garbled, ("field.approved", "true")])
        )
        assert bad.status_code == 400 and "version must be a whole number" in bad.text, garbage
    again = api.task(task["id"])
    assert again["status"] == "waiting_human" and again["classification"] == "review"
    assert [e["event"] for e in again["history"]].count("resumed") == 1  # Alice's only
    resume = f"/api/tasks/{task['id']}/resume"
    late = api.post(resume, {"output": {"approved": True}, "version": first["version"]})
    assert late.status_code == 409
    assert f"has changed since version {first['version']} was read" in late.get_json()["error"]
    bad = api.post(resume, {"output": {}, "version": "7"})
    assert bad.status_code == 400
    assert bad.get_json()["error"] == '"version" must be a whole number, not "7"'
    ok = api.post(resume, {"output": {"approved": True}, "version": again["version"]})
    assert ok.status_code == 200


def test_an_answer_form_left_open_on_a_task_finished_since_says_it_finished(api: Api) -> None:
    # One person answers the question; another, whose page was open, sends theirs.
    answered = api.submit("question", {"q": "done elsewhere?"})
    api.wait_status(answered["id"], "waiting_human")
    alice = _open_form(api, answered["id"])
    bob = _open_form(api, answered["id"], "inbox")
    sent = api.client.post(
        f"/tasks/{answered['id']}/answer",
        data=MultiDict([*alice, ("answer", "yes"), ("answer_format", "text")]),
    )
    assert sent.status_code == 303
    api.wait_status(answered["id"], "completed")
    for form in (bob, [*bob[:-1], ("next", "task")]):
        late = api.client.post(
            f"/tasks/{answered['id']}/answer",
            data=MultiDict([*form, ("answer", "no <b>way</b>"), ("answer_format", "text")]),
        )
        assert late.status_code == 409
        message = late.text.split('id="answer-refused"', 1)[1].split("</p>", 1)[0]
        assert (
            f"Task {answered['id'][:8]} is completed now (answered elsewhere); "
            "your answer was not recorded."
        ) in message
        assert "back at phase" not in late.text and "new round" not in late.text
        assert "no &lt;b&gt;way&lt;/b&gt;" in late.text  # what was typed, as text
    assert api.task(answered["id"])["output"] == "yes"

    # Answered elsewhere, and then its next phase failed: both are said.
    # The define_workflow task goes on as the workflow's first task.
    failing = api.define(
        {
            "name": "ask_then_fail",
            "phases": [
                {"target_classification": "ask", "assigned_to": "human"},
                {"target_classification": "boom", "assigned_to": "functional"},
            ],
        }
    )
    api.wait_status(failing["id"], "waiting_human")
    first, second = _open_form(api, failing["id"]), _open_form(api, failing["id"])
    sent = api.client.post(
        f"/tasks/{failing['id']}/answer",
        data=MultiDict([*first, ("answer", "go"), ("answer_format", "text")]),
    )
    assert sent.status_code == 303
    api.wait_status(failing["id"], "failed")  # boom has no handler
    late = api.client.post(
        f"/tasks/{failing['id']}/answer",
        data=MultiDict([*second, ("answer", "stop"), ("answer_format", "text")]),
    )
    assert late.status_code == 409
    assert (
        f"Task {failing['id'][:8]} has failed since you opened it (answered elsewhere); "
        "your answer was not recorded."
    ) in late.text

    # A task cancelled while its question was open says so.
    cancelled = api.submit("question", {"q": "cancelled elsewhere?"})
    api.wait_status(cancelled["id"], "waiting_human")
    carol = _open_form(api, cancelled["id"])
    assert api.post(f"/api/tasks/{cancelled['id']}/cancel").status_code == 200
    late = api.client.post(
        f"/tasks/{cancelled['id']}/answer",
        data=MultiDict([*carol, ("answer", "too late"), ("answer_format", "text")]),
    )
    assert late.status_code == 409
    assert (
        f"Task {cancelled['id'][:8]} is cancelled now; your answer was not recorded."
    ) in late.text
    assert api.task(cancelled["id"])["status"] == "cancelled"


def test_the_api_refuses_an_answer_for_a_phase_the_task_has_left(api: Api) -> None:
    task = api.submit("sign_off", {"contract": "c-2"})
    api.wait_status(task["id"], "waiting_human")
    resume = f"/api/tasks/{task['id']}/resume"
    assert api.post(resume, {"output": {"approved": True}, "phase": "legal"}).status_code == 200
    wait_for(
        lambda: (
            (doc := api.task(task["id"]))["classification"] == "finance"
            and doc["status"] == "waiting_human"
        ),
        what="the task to wait for finance",
    )
    late = api.post(resume, {"output": {"approved": False}, "phase": "legal"})
    assert late.status_code == 409
    assert "'finance' now, not 'legal'" in late.get_json()["error"]
    bad = api.post(resume, {"output": {}, "phase": 7})
    assert bad.status_code == 400
    assert bad.get_json()["error"] == '"phase" must be the name of a phase, not 7'
    assert api.task(task["id"])["outputs"] == {"legal": {"approved": True}}
    ok = api.post(resume, {"output": {"approved": False}, "phase": "finance"})
    assert ok.status_code == 200
    assert api.wait_status(task["id"], "completed")["outputs"]["finance"] == {"approved": False}


def test_an_answer_with_a_misspelt_field_is_refused_and_the_task_still_waits(api: Api) -> None:
    # "verison" instead of "version": taken as no version at all, the answer could
    # land on a later round of the question than the one it was read for.
    task = api.submit("sign_off", {"contract": "c-3"})
    waiting = api.wait_status(task["id"], "waiting_human")
    resume = f"/api/tasks/{task['id']}/resume"
    bad = api.post(resume, {"output": {"approved": True}, "verison": waiting["version"]})
    assert bad.status_code == 400
    assert bad.get_json()["error"] == (
        "unknown field 'verison' (an answer takes: output, phase, version)"
    )
    after = api.task(task["id"])
    assert after["status"] == "waiting_human" and after["classification"] == "legal"
    assert after["outputs"] == {} and after["version"] == waiting["version"]


def test_cancel_and_conflicts(api: Api) -> None:
    task = api.submit("question", {"q": "?"})
    api.wait_status(task["id"], "waiting_human")
    response = api.post(f"/api/tasks/{task['id']}/cancel")
    assert response.status_code == 200
    assert response.get_json()["status"] == "cancelled"
    assert api.post(f"/api/tasks/{task['id']}/cancel").status_code == 409
    assert api.post(f"/api/tasks/{task['id']}/resume", {"output": "x"}).status_code == 409
    # A cancelled task can be retried: it goes back to its phase and waits again.
    retried = api.post(f"/api/tasks/{task['id']}/retry")
    assert retried.status_code == 200 and retried.get_json()["status"] == "pending"
    api.wait_status(task["id"], "waiting_human")
    assert api.post(f"/api/tasks/{task['id']}/retry").status_code == 409


def test_retry_sends_a_failed_task_back_to_work(api: Api) -> None:
    task = api.submit("flaky", {})
    failed = api.wait_status(task["id"], "failed")
    assert "the flaky service is down" in failed["error"]

    response = api.post(f"/api/tasks/{task['id']}/retry")
    assert response.status_code == 200
    done = api.wait_status(task["id"], "completed")
    assert done["output"] == "worked on retry"
    assert done["error"] is None
    assert "retried" in [e["event"] for e in done["history"]]


def test_workflows_include_those_defined_at_run_time(api: Api) -> None:
    names = {w["name"] for w in api.get("/api/workflows").get_json()["workflows"]}
    assert {"numbers", "review", "question", "flaky", "branching"} <= names

    spec = {
        "name": "made_live",
        "phases": [{"target_classification": "confirm", "assigned_to": "human"}],
        "input": {"x": 1},
    }
    task = api.wait_status(api.define(spec)["id"], "waiting_human")
    assert task["workflow_name"] == "made_live"
    doc = next(
        w for w in api.get("/api/workflows").get_json()["workflows"] if w["name"] == "made_live"
    )
    assert doc["tasks_by_phase"] == {"confirm": 1}
    page = api.get("/workflows").get_data(as_text=True)
    assert 'data-workflow="made_live"' in page
    assert 'data-phase="confirm" data-count="1"' in page


def test_state_changes_need_the_csrf_token(app: Flask) -> None:
    client = app.test_client()
    client.get("/api/csrf")
    no_token = client.post("/api/tasks", json={"workflow": "numbers", "data": {"n": 1}})
    assert no_token.status_code == 403
    assert "CSRF" in no_token.get_json()["error"]
    wrong = client.post(
        "/api/tasks",
        json={"workflow": "numbers", "data": {"n": 1}},
        headers={"X-CSRF-Token": "forged"},
    )
    assert wrong.status_code == 403
    form = client.post("/submit", data={"workflow": "numbers", "data": '{"n": 1}'})
    assert form.status_code == 403
    other_session = app.test_client()
    token = client.get("/api/csrf").get_json()["csrf_token"]
    stolen = other_session.post("/tasks/x/cancel", data={"csrf_token": token})
    assert stolen.status_code == 403
    assert client.get("/api/tasks").get_json()["total"] == 0


def test_large_bodies_are_refused_with_413(demo_engine: object) -> None:
    dash = Dashboard(demo_engine, token="", kafka_brokers="", max_body=2000)  # type: ignore[arg-type]
    try:
        app = create_app(dash, secret_key="x")
        api = Api(app.test_client())
        big = {"workflow": "numbers", "data": {"blob": "x" * 5000}}
        response = api.post("/api/tasks", big)
        assert response.status_code == 413
        assert "larger than" in response.get_json()["error"]
        page = api.client.post("/submit", data={"csrf_token": api.csrf, "data": "y" * 5000})
        assert page.status_code == 413
        assert api.get("/api/tasks").get_json()["total"] == 0
    finally:
        dash.stop()


def test_a_multipart_field_may_be_as_large_as_the_body_limit(api: Api) -> None:
    # Flask alone refuses a multipart field over 500 kB; the dashboard's limit is 1 MiB.
    data = json.dumps({"n": 1, "blob": "x" * 600_000})
    response = api.client.post(
        "/submit",
        data={"csrf_token": api.csrf, "workflow": "numbers", "data": data},
        content_type="multipart/form-data",
    )
    assert response.status_code == 303
    task_id = response.headers["Location"].rsplit("/", 1)[1]
    assert len(api.task(task_id)["data"]["blob"]) == 600_000


def test_chunked_bodies_over_the_limit_are_refused_with_413(demo_engine: object) -> None:
    dash = Dashboard(demo_engine, run_worker=True, token="", kafka_brokers="", max_body=2000)  # type: ignore[arg-type]
    try:
        app = create_app(dash, secret_key="x")
        api = Api(app.test_client())
        with serving(app) as port:
            status, headers, body = http_request(port, "GET", "/api/csrf")
            csrf = json.loads(body)["csrf_token"]
            cookie = headers["Set-Cookie"].split(";")[0]
            as_json = {"Cookie": cookie, "X-CSRF-Token": csrf, "Content-Type": "application/json"}
            as_form = {"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"}

            # Sent in chunks there is no Content-Length to refuse it by.
            big = json.dumps({"workflow": "question", "data": {"blob": "x" * 5000}}).encode()
            status, _, body = http_request(port, "POST", "/api/tasks", big, as_json, chunked=True)
            assert status == 413
            assert "larger than" in json.loads(body)["error"]

            small = json.dumps({"workflow": "question", "data": {"q": "?"}}).encode()
            status, _, body = http_request(port, "POST", "/api/tasks", small, as_json, chunked=True)
            assert status == 201
            task_id = json.loads(body)["id"]
            api.wait_status(task_id, "waiting_human")

            def answer(text: str) -> bytes:
                return urlencode(
                    {"csrf_token": csrf, "answer_format": "text", "answer": text}
                ).encode()

            path = f"/tasks/{task_id}/answer"
            status, _, _ = http_request(
                port, "POST", path, answer("y" * 5000), as_form, chunked=True
            )
            assert status == 413
            assert api.task(task_id)["status"] == "waiting_human"

            # A body of exactly the limit is whole, and taken whole.
            fits = answer("z" * (2000 - len(answer(""))))
            assert len(fits) == 2000
            status, headers, _ = http_request(port, "POST", path, fits, as_form, chunked=True)
            assert status == 303, headers
        done = api.wait_status(task_id, "completed")
        assert done["output"] == "z" * (2000 - len(answer("")))
    finally:
        dash.stop()


def test_without_a_token_only_requests_to_a_loopback_name_are_answered(
    app: Flask, wfe_store_url: str
) -> None:
    # DNS rebinding: a web page whose name now resolves to 127.0.0.1 reaches the
    # dashboard, but the browser still sends the page's own name as Host.
    with serving(app) as port:
        foreign = ["evil.example", f"evil.example:{port}", "localhost.evil.example", "10.1.2.3"]
        for host in foreign:
            for path in ("/api/csrf", "/", "/submit"):
                status, headers, body = http_request(port, "GET", path, headers={"Host": host})
                assert status == 400, (host, path)
                assert "Set-Cookie" not in headers and b"csrf" not in body.lower()
        status, _, body = http_request(port, "GET", "/api/csrf", headers={"Host": "evil.example"})
        assert json.loads(body)["error"] == (
            "this dashboard has no access token, so it answers only requests addressed to "
            "127.0.0.1, localhost or [::1], not 'evil.example'"
        )
        status, headers, body = http_request(port, "GET", "/", headers={"Host": "evil.example"})
        assert headers["Content-Type"].startswith("text/plain")
        assert body.decode().startswith("this dashboard has no access token")
        loopback = ["127.0.0.1", f"127.0.0.1:{port}", "localhost", f"LocalHost:{port}", "[::1]"]
        for host in [*loopback, f"[::1]:{port}", "::1"]:
            status, _, body = http_request(port, "GET", "/api/csrf", headers={"Host": host})
            assert status == 200, host
            assert "csrf_token" in json.loads(body)

    # With a token the dashboard may be reached under any name: the token guards it.
    engine = make_engine()
    engine.use_store(wfe_store_url)
    dash = Dashboard(engine, token="tok-1", kafka_brokers="")
    try:
        with serving(create_app(dash, secret_key="x")) as port:
            headers = {"Host": "dashboard.example.com", "Authorization": "Bearer tok-1"}
            status, _, body = http_request(port, "GET", "/api/tasks", headers=headers)
            assert status == 200 and json.loads(body)["total"] == 0
    finally:
        dash.stop()


def test_a_token_of_blanks_is_no_token_and_blanks_around_one_do_not_count(
    demo_engine: object,
) -> None:
    blank = Dashboard(demo_engine, token=" \t", kafka_brokers="")  # type: ignore[arg-type]
    assert blank.token == ""
    dash = Dashboard(demo_engine, token=" tok-2\n", kafka_brokers="")  # type: ignore[arg-type]
    try:
        assert dash.token == "tok-2"
        client = create_app(dash, secret_key="x").test_client()
        bearer = {"Authorization": "Bearer tok-2"}
        assert client.get("/api/tasks", headers=bearer).status_code == 200
        # A token pasted into the login page with a line break after it still logs in.
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text)
        assert csrf
        login = client.post("/login", data={"token": "tok-2\n", "csrf_token": csrf[1]})
        assert login.status_code == 303
        assert client.get("/api/tasks").status_code == 200
    finally:
        dash.stop()
    with pytest.raises(UnsafeBindError, match=r"refusing to listen on 0\.0\.0\.0"):
        check_bind("0.0.0.0", "   ")
    with pytest.raises(UnsafeBindError, match=r"token \(WFE_UI_TOKEN\) only 5 characters long"):
        check_bind("0.0.0.0", "tok-2")
    check_bind("0.0.0.0", " tok-2-of-sixteen\n")
    check_bind("127.0.0.1", " ")
    check_bind("127.0.0.1", "tok-2")
    # The short forms the system takes for 127.0.0.1 are this machine too.
    for short in ("127.1", "127.0.1", "0x7f.1", "2130706433"):
        check_bind(short, "")
    with pytest.raises(UnsafeBindError, match=r"refusing to listen on 10\.1"):
        check_bind("10.1", "")


def test_metrics_for_prometheus(api: Api, dashboard: Dashboard) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    done = api.submit("numbers", {"n": 1})["id"]
    api.wait_status(done, "completed")
    api.submit("question", {"q": "?"})
    response = api.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.get_data(as_text=True))
        for s in family.samples
    }
    assert samples[("wfcore_tasks", (("status", "completed"), ("workflow", "numbers")))] == 1
    # The dashboard runs the worker here: its counters are the dashboard's engine's.
    assert samples[("wfcore_engine_tasks_completed_total", ())] >= 1
    assert samples[("wfcore_engine_running", ())] == 1


@pytest.fixture
def guarded_app(demo_engine: object) -> Iterator[Any]:
    """The app of a dashboard (the demo engine, no worker) that asks for the access
    token ``s3cret-token``."""
    dash = Dashboard(demo_engine, token="s3cret-token", kafka_brokers="")  # type: ignore[arg-type]
    try:
        yield create_app(dash, secret_key="x")
    finally:
        dash.stop()


def test_metrics_need_the_token_like_the_api(guarded_app: Any) -> None:
    client = guarded_app.test_client()
    refused = client.get("/metrics")
    assert refused.status_code == 401
    assert refused.get_json()["error"].startswith("an access token is required")
    scraped = client.get("/metrics", headers={"Authorization": "Bearer s3cret-token"})
    assert scraped.status_code == 200
    # This dashboard runs no worker: no engine counters, whose zeros would read to
    # Prometheus as the workers' counters reset.
    text = scraped.get_data(as_text=True)
    assert "wfcore_tasks" in text and "wfcore_engine_" not in text
    assert "# TYPE wfcore_tasks gauge" in scraped.get_data(as_text=True)


def test_token_guards_every_request(guarded_app: Any, demo_engine: object) -> None:
    client = guarded_app.test_client()
    missing = client.get("/api/tasks")
    assert missing.status_code == 401
    assert missing.get_json()["error"].startswith("an access token is required")
    page = client.get("/inbox")
    assert page.status_code == 302
    assert "/login?next=/inbox" in page.headers["Location"]
    wrong = client.get("/api/tasks", headers={"Authorization": "Bearer wrong"})
    assert wrong.status_code == 401
    assert wrong.get_json()["error"] == "the access token is not valid"
    wrong_header = client.post("/api/tasks", json={}, headers={"X-WFE-Token": "wrong"})
    assert wrong_header.get_json()["error"] == "the access token is not valid"
    assert client.get("/api/tasks?token=wrong").get_json()["error"] == (
        "the access token is not valid"
    )
    bounced = client.get("/?token=wrong&status=failed")
    assert bounced.status_code == 302
    assert bounced.headers["Location"].endswith("/login?next=/?status%3Dfailed")

    bearer = {"Authorization": "Bearer s3cret-token"}
    assert client.get("/api/tasks", headers=bearer).status_code == 200
    # A header token cannot be sent by another site, so it needs no CSRF token.
    made = client.post("/api/tasks", json={"workflow": "numbers", "data": {"n": 2}}, headers=bearer)
    assert made.status_code == 201

    browser = guarded_app.test_client()
    login = browser.get("/login?next=/workflows")
    store_path = demo_engine.store_url.rsplit("/", 1)[0]  # type: ignore[attr-defined]
    assert store_path not in login.get_data(as_text=True)
    assert 'class="mainnav"' not in login.get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', login.get_data(as_text=True))
    assert csrf
    refused = browser.post(
        "/login", data={"token": "nope", "csrf_token": csrf[1], "next": "/workflows"}
    )
    assert refused.status_code == 401
    accepted = browser.post(
        "/login", data={"token": "s3cret-token", "csrf_token": csrf[1], "next": "/workflows"}
    )
    assert accepted.status_code == 303
    assert accepted.headers["Location"].endswith("/workflows")
    assert browser.get("/workflows").status_code == 200

    linked = guarded_app.test_client()
    hop = linked.get("/inbox?token=s3cret-token&all=1")
    assert hop.status_code == 302
    assert hop.headers["Location"].endswith("/inbox?all=1")
    assert linked.get("/inbox?all=1").status_code == 200
    assert linked.get("/_wfe_static/dashboard.css").status_code == 200


def test_errors_before_login_show_nothing_of_the_dashboard(demo_engine: object) -> None:
    dash = Dashboard(
        demo_engine,  # type: ignore[arg-type]
        run_worker=True,
        token="s3cret-token",
        kafka_brokers="",
        max_body=2000,
    )
    try:
        app = create_app(dash, secret_key="x")
        # A task waits in the inbox, so that there is a count to leak.
        bearer = {"Authorization": "Bearer s3cret-token"}
        inside = app.test_client()
        made = inside.post("/api/tasks", json={"workflow": "question", "data": {}}, headers=bearer)
        assert made.status_code == 201

        def waiting() -> int:
            found = inside.get("/api/tasks?status=waiting_human", headers=bearer)
            return int(found.get_json()["total"])

        wait_for(waiting, what="the task to wait for a person")
        store_path = demo_engine.store_url.rsplit("/", 1)[0]  # type: ignore[attr-defined]

        def shows_nothing(page: str) -> None:
            for leak in ('class="mainnav"', 'id="inbox-count"', store_path, "Log out"):
                assert leak not in page, leak

        # A logged-out POST to /login without the CSRF token or the access token.
        client = app.test_client()
        refused = client.post("/login")
        assert refused.status_code == 403
        assert "CSRF token missing or invalid" in refused.text
        shows_nothing(refused.text)
        assert 'href="/login"' in refused.text
        # A body over the limit, refused before the token is even looked at.
        big = client.post("/login", data={"token": "x" * 5000})
        assert big.status_code == 413
        shows_nothing(big.text)
        # Logged in, an error page has the navigation again.
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text)
        assert csrf
        login = client.post("/login", data={"token": "s3cret-token", "csrf_token": csrf[1]})
        assert login.status_code == 303
        forged = client.post("/tasks/x/cancel", data={"csrf_token": "forged"})
        assert forged.status_code == 403
        assert 'class="mainnav"' in forged.text and 'id="inbox-count"' in forged.text
    finally:
        dash.stop()


def test_a_link_with_the_wrong_token_says_so_on_the_login_page(guarded_app: Any) -> None:
    client = guarded_app.test_client()
    bounced = client.get("/inbox?token=wrong")
    assert bounced.status_code == 302
    assert "/login?next=/inbox" in bounced.headers["Location"]
    login = client.get(bounced.headers["Location"])
    assert login.status_code == 401
    error = re.search(r'<div class="error" role="alert">([^<]*)</div>', login.text)
    assert error and error[1] == "That token is not right."
    # Said once: the login page opened again is a plain one.
    again = client.get("/login")
    assert again.status_code == 200 and "That token is not right" not in again.text
    # Nor does a link without a token say it.
    plain = client.get(client.get("/inbox").headers["Location"])
    assert plain.status_code == 200 and "That token is not right" not in plain.text


def test_api_clients_are_told_what_a_change_needs(demo_engine: object) -> None:
    # Without a token an Authorization header counts for nothing: the API client
    # is told what it needs instead, and where to get it.
    open_dash = Dashboard(demo_engine, token="", kafka_brokers="")  # type: ignore[arg-type]
    try:
        client = create_app(open_dash, secret_key="x").test_client()
        body = {"workflow": "numbers", "data": {"n": 1}}
        bearer = client.post("/api/tasks", json=body, headers={"Authorization": "Bearer abc"})
        assert bearer.status_code == 403
        assert bearer.get_json()["error"] == (
            "this dashboard has no access token, so an Authorization or X-WFE-Token header "
            "counts for nothing; an API call that changes something needs the CSRF token: "
            "GET /api/csrf (keeping the session cookie it sets) and send its csrf_token in "
            "the X-CSRF-Token header"
        )
        bare = client.post("/api/tasks", json=body)
        assert bare.get_json()["error"].startswith(
            "this dashboard has no access token; an API call that changes something needs "
            "the CSRF token: GET /api/csrf"
        )
        # Doing just that works.
        csrf = client.get("/api/csrf").get_json()["csrf_token"]
        assert (
            client.post("/api/tasks", json=body, headers={"X-CSRF-Token": csrf}).status_code == 201
        )
        # A page's form still says to reload the page.
        form = client.post("/submit", data={"workflow": "numbers", "data": "{}"})
        assert form.status_code == 403
        assert "CSRF token missing or invalid; reload the page and try again" in form.text
    finally:
        open_dash.stop()

    dash = Dashboard(demo_engine, token="s3cret-token", kafka_brokers="")  # type: ignore[arg-type]
    try:
        client = create_app(dash, secret_key="x").test_client()
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text)
        assert csrf
        client.post("/login", data={"token": "s3cret-token", "csrf_token": csrf[1]})
        session_only = client.post("/api/tasks", json={"workflow": "numbers", "data": {}})
        assert session_only.status_code == 403
        assert session_only.get_json()["error"] == (
            "an API call that changes something needs either the access token "
            "(Authorization: Bearer <token>) or, in a logged-in session, a CSRF token: "
            "GET /api/csrf (keeping the session cookie it sets) and send its csrf_token in "
            "the X-CSRF-Token header"
        )
    finally:
        dash.stop()


def test_redirects_stay_on_the_site(demo_engine: object) -> None:
    dash = Dashboard(demo_engine, token="s3cret-token", kafka_brokers="")  # type: ignore[arg-type]
    try:
        app = create_app(dash, secret_key="x")
        client = app.test_client()
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text)
        assert csrf
        # Browsers drop tabs and newlines and read a backslash as a slash, so each
        # of these would lead to another site; every one falls back to the task list.
        evil = [
            "/\t/evil.com",
            "/\n/evil.com",
            "/\r\n/evil.com",
            "/ /evil.com",
            "/\x00/evil.com",
            "/\u2028/evil.com",
            "/\\evil.com",
            "//evil.com",
            "https://evil.com/",
            "javascript:alert(1)",
            "evil.com",
        ]
        for target in evil:
            shown = client.get("/login", query_string={"next": target})
            assert shown.status_code == 200, repr(target)
            assert "evil" not in shown.text and "javascript" not in shown.text, repr(target)
            login = client.post(
                "/login", data={"token": "s3cret-token", "csrf_token": csrf[1], "next": target}
            )
            assert login.status_code == 303, repr(target)
            assert login.headers["Location"] == "/", repr(target)
        kept = client.post(
            "/login",
            data={"token": "s3cret-token", "csrf_token": csrf[1], "next": "/workflows?a=1"},
        )
        assert kept.headers["Location"] == "/workflows?a=1"

        api = Api(client)
        task = api.post("/api/tasks", {"workflow": "question", "data": {}}).get_json()
        back = client.post(
            f"/tasks/{task['id']}/cancel",
            data={"csrf_token": api.csrf, "next_url": "/\t/evil.com"},
        )
        assert back.status_code == 303
        assert back.headers["Location"] == f"/tasks/{task['id']}"

        # A decoded newline in the path must not reach a Location header either.
        hop = app.test_client().get("/tasks/%0Aevil?token=s3cret-token")
        assert hop.status_code == 302
        assert hop.headers["Location"] == "/tasks/%0Aevil"
    finally:
        dash.stop()

    open_dash = Dashboard(demo_engine, token="", kafka_brokers="")  # type: ignore[arg-type]
    try:
        client = create_app(open_dash, secret_key="x").test_client()
        # Without a token /login sends the browser straight on: the same check applies.
        for target in ("/%09/evil.com", "/%0a/evil.com", "/%5Cevil.com", "/%20/x"):
            response = client.get(f"/login?next={target}")
            assert response.status_code == 302, target
            assert response.headers["Location"] == "/", target
    finally:
        open_dash.stop()


def test_artifacts_listed_previewed_downloaded_and_contained(api: Api, wfe_store_url: str) -> None:
    task = api.submit("numbers", {"n": 4})
    api.wait_status(task["id"], "completed")
    page = api.get(f"/tasks/{task['id']}").get_data(as_text=True)
    assert "report.txt" in page and "blob.bin" in page
    assert "256 B" in page
    assert "The answer is 8." in page
    assert "&lt;b&gt;not bold&lt;/b&gt;" in page

    download = api.get(f"/tasks/{task['id']}/artifacts/report.txt")
    assert download.status_code == 200
    assert download.data == b"The answer is 8.\n<b>not bold</b>\n"
    assert download.headers["Content-Disposition"].startswith("attachment")
    assert "sandbox" in download.headers["Content-Security-Policy"]
    assert api.get(f"/tasks/{task['id']}/artifacts/blob.bin").data == bytes(range(256))

    # The API lists them as result messages do: without the file's path on this host.
    db_name = wfe_store_url.rsplit("/", 1)[1]
    folder = wfe_store_url.removeprefix("sqlite:///").rsplit("/", 1)[0]
    for path in (f"/api/tasks/{task['id']}", f"/api/tasks/{task['id']}?wait=1", "/api/tasks"):
        response = api.get(path)
        assert response.status_code == 200
        doc = response.get_json()
        shown = doc["tasks"][0] if "tasks" in doc else doc
        assert shown["id"] == task["id"]
        assert folder not in response.text, path
        assert [sorted(artifact) for artifact in shown["artifacts"]] == [
            ["created_at", "media_type", "name", "phase", "sha256", "size"]
        ] * 2
    attempts = [
        f"/tasks/{task['id']}/artifacts/..%2F..%2F{db_name}",
        f"/tasks/{task['id']}/artifacts/%2E%2E/%2E%2E/{db_name}",
        f"/tasks/{task['id']}/artifacts/..%5C..%5C{db_name}",
        f"/tasks/{task['id']}/artifacts/%2Fetc%2Fpasswd",
        f"/tasks/..%2F{task['id']}/artifacts/report.txt",
        f"/tasks/{task['id']}/artifacts/missing.txt",
    ]
    for path in attempts:
        response = api.get(path, follow_redirects=True)
        assert response.status_code in (404, 400), path
        assert b"SQLite format" not in response.data
        assert b"root:" not in response.data


def test_an_artifact_whose_file_is_gone_says_so_where_it_is_downloaded(
    api: Api, dashboard: Dashboard
) -> None:
    """Its task still lists it (the page shows it, with a download link), so the
    download says its file is missing rather than that the task has no such artifact."""
    task_id = api.submit("numbers", {"n": 4})["id"]
    api.wait_status(task_id, "completed")
    path = dashboard.call(lambda engine: engine.artifact_path(task_id, "report.txt"))
    path.unlink()
    link = f"/tasks/{task_id}/artifacts/report.txt"
    assert f'href="{link}"' in api.get(f"/tasks/{task_id}").text
    download = api.get(link)
    assert download.status_code == 404
    assert (
        f"task &#39;{task_id}&#39; lists the artifact &#39;report.txt&#39;, but its file is "
        "not in the store&#39;s artifact folder: it was deleted or moved after the task "
        "stored it"
    ) in download.text
    unknown = api.get(f"/tasks/{task_id}/artifacts/other.txt")
    assert unknown.status_code == 404
    assert f"task &#39;{task_id}&#39; has no artifact &#39;other.txt&#39;" in unknown.text


def test_script_in_task_data_is_escaped(api: Api) -> None:
    evil = "<script>alert('xss')</script><img src=x onerror=alert(1)>"
    task = api.submit("question", {"html": evil}, assigned_to="human")
    api.wait_status(task["id"], "waiting_human")
    for path in (f"/tasks/{task['id']}", "/inbox"):
        page = api.get(path).get_data(as_text=True)
        assert "<script>alert" not in page
        assert "<img src=x" not in page
        assert "&lt;script&gt;alert(&#39;xss&#39;)&lt;/script&gt;" in page
    headers = api.get("/").headers
    assert "script-src 'self'" in headers["Content-Security-Policy"]


def test_a_url_without_a_page_is_answered_with_the_headers_of_every_page(api: Api) -> None:
    """Flask answers a URL no view has, or a method a view does not take, before the
    dashboard's views and their headers: such pages could be framed and cached."""
    task_id = api.submit("question", {"q": 1})["id"]
    for method, path, status in [
        ("GET", "/nothing-here", 404),
        ("GET", f"/tasks/{task_id}/cancel", 405),  # a form's URL takes POST only
        ("GET", "/tasks/a%2Fb", 404),
    ]:
        response = api.client.open(path, method=method)
        assert response.status_code == status, path
        assert response.headers["X-Frame-Options"] == "DENY", path
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"], path
        assert response.headers["Cache-Control"] == "no-store", path


def test_answer_form_shows_errors_beside_fields_then_resumes(app: Flask, api: Api) -> None:
    task = api.submit("review", {"topic": "t"})
    api.wait_status(task["id"], "waiting_human")
    client = api.client
    form = client.get(f"/tasks/{task['id']}").get_data(as_text=True)
    assert '<select id="a-' in form and 'name="field.decision"' in form
    assert re.search(r'name="field\.score" type="number"[^>]* step="1" min="1" max="5"', form)
    assert 'type="checkbox"' in form and 'name="field.urgent"' in form
    assert 'name="field.tags" value="&#34;docs&#34;"' in form
    assert form.count('class="req"') == 2

    bad = client.post(
        f"/tasks/{task['id']}/answer",
        data={"csrf_token": api.csrf, "field.score": "nine", "field.comment": "hmm"},
    )
    assert bad.status_code == 400
    html = bad.get_data(as_text=True)
    decision = re.search(r'data-field="decision">.*?</div>\s*</div>', html, re.S)
    assert decision and "required" in decision[0]
    assert re.search(r'data-field="score">.*?must be a number', html, re.S)
    assert "hmm</textarea>" in html
    for typed in ("\u0663", "1_0"):  # an Arabic-Indic 3, which float() reads as 3.0
        odd = client.post(
            f"/tasks/{task['id']}/answer",
            data={"csrf_token": api.csrf, "field.score": typed},
        )
        assert odd.status_code == 400, typed
        assert re.search(r'data-field="score">.*?must be a number', odd.text, re.S), typed
    assert api.task(task["id"])["status"] == "waiting_human"

    out_of_range = client.post(
        f"/tasks/{task['id']}/answer",
        data={"csrf_token": api.csrf, "field.decision": '"ship"', "field.score": "9"},
    )
    assert out_of_range.status_code == 400
    assert re.search(
        r'data-field="score">.*?9 is greater than the maximum of 5',
        out_of_range.get_data(as_text=True),
        re.S,
    )

    ok = client.post(
        f"/tasks/{task['id']}/answer",
        data={
            "csrf_token": api.csrf,
            "field.decision": '"hold"',
            "field.score": "3",
            "field.urgent": "true",
            "field.tags": ['"docs"', '"ops"'],
            "next": "inbox",
        },
    )
    assert ok.status_code == 303
    assert ok.headers["Location"].endswith("/inbox")
    done = api.wait_status(task["id"], "completed")
    assert done["outputs"]["approve"] == {
        "decision": "hold",
        "score": 3,
        "urgent": True,
        "tags": ["docs", "ops"],
    }
    assert done["output"] == {"published": False}


def waiting_for_an_answer(api: Api, name: str, phase: str, input_schema: Any) -> str:
    """Define workflow ``name``, one human phase ``phase`` whose answer must match
    ``input_schema``, with a task of it: that task's id once it waits for its answer."""
    spec = {
        "name": name,
        "phases": [
            {"target_classification": phase, "assigned_to": "human", "input_schema": input_schema}
        ],
        "input": {},
    }
    return api.wait_status(api.define(spec)["id"], "waiting_human")["id"]


def test_schema_properties_may_share_names_with_the_forms_own_fields(api: Api) -> None:
    task_id = waiting_for_an_answer(
        api,
        "clashing",
        "fill",
        input_schema={
            "type": "object",
            "properties": {
                "next": {"type": "string"},
                "csrf_token": {"type": "string"},
                "answer_format": {"type": "integer"},
            },
            "required": ["next", "csrf_token"],
        },
    )

    # Post the form the way a browser does: its hidden fields first, then the answers.
    page = AnswerFormReader(api.get(f"/tasks/{task_id}").text)
    assert set(page.inputs) == {"next", "csrf_token", "answer_format"}
    answers = {"next": "the next step", "csrf_token": "my own token", "answer_format": "7"}
    posted = page.hidden + [(page.inputs[name], value) for name, value in answers.items()]
    response = api.client.post(f"/tasks/{task_id}/answer", data=MultiDict(posted))
    assert response.status_code == 303
    assert response.headers["Location"] == f"/tasks/{task_id}"
    done = api.wait_status(task_id, "completed")
    assert done["outputs"]["fill"] == {
        "next": "the next step",
        "csrf_token": "my own token",
        "answer_format": 7,
    }

    # Errors and the values typed still find their fields.
    again = api.submit("clashing", {})
    api.wait_status(again["id"], "waiting_human")
    page = AnswerFormReader(api.get(f"/tasks/{again['id']}").text)
    typed = [*page.hidden, (page.inputs["next"], "kept"), (page.inputs["answer_format"], "x")]
    refused = api.client.post(f"/tasks/{again['id']}/answer", data=MultiDict(typed))
    assert refused.status_code == 400
    html = refused.text
    assert re.search(r'data-field="csrf_token">.*?required', html, re.S)
    assert re.search(r'data-field="answer_format">.*?must be a number', html, re.S)
    assert re.search(r'data-field="next">.*?value="kept"', html, re.S)
    assert api.task(again["id"])["status"] == "waiting_human"


def test_large_integers_typed_in_a_form_are_stored_exactly(api: Api) -> None:
    task_id = waiting_for_an_answer(
        api,
        "counting",
        "count",
        input_schema={
            "type": "object",
            "properties": {
                "whole": {"type": "integer"},
                "amount": {"type": "number"},
                "ratio": {"type": "number"},
                "ids": {"type": "array", "items": {"type": "integer"}},
            },
        },
    )
    response = api.client.post(
        f"/tasks/{task_id}/answer",
        data={
            "csrf_token": api.csrf,
            "field.whole": "12345678901234567890",
            "field.amount": "-98765432109876543210",
            "field.ratio": "0.25",
            "field.ids": "9007199254740993\n1e3",
        },
    )
    assert response.status_code == 303
    done = api.wait_status(task_id, "completed")
    assert done["outputs"]["count"] == {
        "whole": 12345678901234567890,
        "amount": -98765432109876543210,
        "ratio": 0.25,
        "ids": [9007199254740993, 1000],
    }


def test_an_empty_answer_to_a_string_schema_says_an_answer_is_required(api: Api) -> None:
    task_id = waiting_for_an_answer(
        api, "one_line", "say", {"type": "string", "title": "Your reply"}
    )
    path = f"/tasks/{task_id}/answer"
    empty = api.client.post(path, data={"csrf_token": api.csrf, "field.answer": ""})
    assert empty.status_code == 400
    assert re.search(r'data-field="answer">.*?an answer is required', empty.text, re.S)
    assert "None is not" not in empty.text
    given = api.client.post(path, data={"csrf_token": api.csrf, "field.answer": "hello"})
    assert given.status_code == 303
    assert api.wait_status(task_id, "completed")["output"] == "hello"


def test_the_inbox_shows_the_oldest_few_and_counts_the_rest(api: Api, dashboard: Dashboard) -> None:
    dashboard.inbox_size = 3
    ids = []
    for i in range(5):
        ids.append(api.submit("question", {"i": i})["id"])
        api.wait_status(ids[-1], "waiting_human")
    for headers in ({}, {"X-WFE-Partial": "1"}):
        page = api.get("/inbox", headers=headers).text
        assert (
            re.findall(r'<article class="card inbox-card[^"]*" id="inbox-([0-9a-f]+)"', page)
            == (ids[:3])
        )
        assert "5 tasks waiting; the first 3 (oldest first) are shown here." in page
        assert '<a href="/?status=waiting_human">All 5 in the task list</a>' in page
    every = api.get("/inbox?all=1").text
    assert '<a href="/?status=waiting">All 5 in the task list</a>' in every
    listed = api.get("/?status=waiting_human").text
    assert all(task_id[:8] in listed for task_id in ids)

    dashboard.inbox_size = 100
    page = api.get("/inbox").text
    assert "5 tasks waiting, oldest first." in page and 'id="inbox-more"' not in page


def test_the_inbox_shows_the_highest_priority_first(api: Api, dashboard: Dashboard) -> None:
    """An urgent question asked last is among the few the inbox shows, first."""
    dashboard.inbox_size = 3
    ids = []
    for i, priority in enumerate([0, 0, 0, -5, 50]):
        ids.append(api.submit("question", {"i": i}, priority=priority)["id"])
        api.wait_status(ids[-1], "waiting_human")
    page = api.get("/inbox").text
    shown = re.findall(r'<article class="card inbox-card[^"]*" id="inbox-([0-9a-f]+)"', page)
    assert shown == [ids[4], ids[0], ids[1]]
    assert (
        "5 tasks waiting; the first 3 (the highest priority first, then the oldest) "
        "are shown here." in page
    )


def test_free_answer_as_text_or_json(api: Api) -> None:
    first = api.submit("question", {"q": 1})
    second = api.submit("question", {"q": 2})
    api.wait_status(second["id"], "waiting_human")
    api.wait_status(first["id"], "waiting_human")
    client = api.client
    bad = client.post(
        f"/tasks/{first['id']}/answer",
        data={"csrf_token": api.csrf, "answer": "{oops", "answer_format": "json"},
    )
    assert bad.status_code == 400
    assert "not valid JSON" in bad.get_data(as_text=True)
    twice = client.post(
        f"/tasks/{first['id']}/answer",
        data={"csrf_token": api.csrf, "answer": '{"ok": 1, "ok": 2}', "answer_format": "json"},
    )
    assert twice.status_code == 400
    assert "the key &#39;ok&#39; is given twice" in twice.get_data(as_text=True)
    client.post(
        f"/tasks/{first['id']}/answer",
        data={"csrf_token": api.csrf, "answer": '{"ok": true}', "answer_format": "json"},
    )
    client.post(
        f"/tasks/{second['id']}/answer",
        data={"csrf_token": api.csrf, "answer": "Because.", "answer_format": "text"},
    )
    assert api.wait_status(first["id"], "completed")["output"] == {"ok": True}
    assert api.wait_status(second["id"], "completed")["output"] == "Because."


def test_submit_form_validates_and_redirects(api: Api) -> None:
    client = api.client
    page = client.get("/submit?workflow=review").get_data(as_text=True)
    assert re.search(r'<option value="review"[^>]* selected>', page)
    bad = client.post(
        "/submit",
        data={"csrf_token": api.csrf, "workflow": "numbers", "data": "{n: 1}"},
    )
    assert bad.status_code == 400
    html = bad.get_data(as_text=True)
    assert re.search(r'data-field="data">.*?not valid JSON', html, re.S)
    assert "{n: 1}</textarea>" in html

    unknown = client.post(
        "/submit",
        data={
            "csrf_token": api.csrf,
            "workflow": "numbers",
            "data": "{}",
            "classification": "nowhere",
        },
    )
    assert unknown.status_code == 400
    unknown_html = unknown.get_data(as_text=True)
    assert re.search(r'data-field="classification">.*?unknown classification', unknown_html, re.S)
    missing = client.post("/submit", data={"csrf_token": api.csrf, "data": "{}"})
    missing_html = missing.get_data(as_text=True)
    assert re.search(r'data-field="workflow">.*?choose a workflow', missing_html, re.S)

    ok = client.post(
        "/submit",
        data={"csrf_token": api.csrf, "workflow": "numbers", "data": '{"n": 7}'},
    )
    assert ok.status_code == 303
    task_id = ok.headers["Location"].rsplit("/", 1)[1]
    assert api.wait_status(task_id, "completed")["output"] == "reported 14"


def test_sending_the_submit_form_twice_makes_one_task(api: Api) -> None:
    hidden = submit_form_hidden(api.get("/submit").text)
    fields = [*hidden, ("workflow", "numbers"), ("data", '{"n": 3}')]
    first = api.client.post("/submit", data=MultiDict(fields))
    second = api.client.post("/submit", data=MultiDict(fields))
    assert first.status_code == second.status_code == 303
    assert first.headers["Location"] == second.headers["Location"]
    task_id = first.headers["Location"].rsplit("/", 1)[1]
    assert "already submitted" in api.get(second.headers["Location"]).text
    listing = api.get("/api/tasks?workflow=numbers").get_json()
    assert [t["id"] for t in listing["tasks"]] == [task_id]
    assert api.wait_status(task_id, "completed")["output"] == "reported 6"

    # A form sent back with an error keeps its id, so fixing it still makes one task.
    hidden = submit_form_hidden(api.get("/submit").text)
    broken = [*hidden, ("workflow", "numbers"), ("data", "{n: 4}")]
    bad = api.client.post("/submit", data=MultiDict(broken))
    assert bad.status_code == 400
    assert submit_form_hidden(bad.text) == hidden
    fixed = [*hidden, ("workflow", "numbers"), ("data", '{"n": 4}')]
    again = [api.client.post("/submit", data=MultiDict(fixed)) for _ in range(2)]
    assert again[0].headers["Location"] == again[1].headers["Location"] != first.headers["Location"]
    assert api.get("/api/tasks?workflow=numbers").get_json()["total"] == 2


@contextlib.contextmanager
def _store_locked(store_url: str) -> Iterator[None]:
    """Hold the SQLite store's write lock (as a long write elsewhere would) in the block."""
    lock = sqlite3.connect(store_url.removeprefix("sqlite://"), isolation_level=None)
    try:
        lock.execute("BEGIN IMMEDIATE")
        yield
        lock.execute("ROLLBACK")
    finally:
        lock.close()


def test_a_submission_the_store_is_slow_to_take_can_be_sent_again_safely(
    api: Api, dashboard: Dashboard, wfe_store_url: str
) -> None:
    # The engine gives up waiting (503) but the write it queued is done later: the
    # answer names the id the task will have, and sending that id again is safe.
    dashboard.bridge.timeout = 1.0
    request = {"workflow": "question", "data": {"q": "slow"}}
    with _store_locked(wfe_store_url):
        response = api.post("/api/tasks", request)
    assert response.status_code == 503
    body = response.get_json()
    task_id = body["id"]
    assert re.fullmatch(r"[0-9a-f]{32}", task_id)
    assert body["error"] == (
        "the engine did not answer within 1s; the task may still be stored, as "
        f"{task_id}: check GET /api/tasks/{task_id}, or send the request again with "
        f'"id": "{task_id}" (a known id is never submitted twice)'
    )
    wait_for(lambda: api.get(f"/api/tasks/{task_id}").status_code == 200, what="the late write")
    again = api.post("/api/tasks", {**request, "id": task_id})
    assert again.status_code == 200 and again.get_json()["id"] == task_id

    # The submit form says the same, and keeps its id for the second try.
    hidden = submit_form_hidden(api.get("/submit").text)
    form_id = dict(hidden)["task_id"]
    fields = MultiDict([*hidden, ("workflow", "question"), ("data", '{"q": "form"}')])
    with _store_locked(wfe_store_url):
        page = api.client.post("/submit", data=fields)
    assert page.status_code == 503
    assert "the task may still be stored" in page.text and form_id in page.text
    assert submit_form_hidden(page.text) == hidden
    wait_for(lambda: api.get(f"/api/tasks/{form_id}").status_code == 200, what="the late write")
    resent = api.client.post("/submit", data=fields)
    assert resent.status_code == 303 and resent.headers["Location"].endswith(form_id)
    dashboard.bridge.timeout = 30.0
    assert api.get("/api/tasks?workflow=question").get_json()["total"] == 2


def test_big_data_and_outputs_are_cut_on_pages_with_a_link_to_the_whole(api: Api) -> None:
    # Every open inbox and task page fetches itself again every few seconds.
    task = api.submit("question", {"a_first": "<kept>", "blob": "x" * 300_000})
    api.wait_status(task["id"], "waiting_human")
    whole = f'<a href="/api/tasks/{task["id"]}">the whole task as JSON</a>'
    inbox = api.get("/inbox").text
    assert len(inbox) < 40_000
    assert "&#34;a_first&#34;: &#34;&lt;kept&gt;&#34;" in inbox
    # The size of the whole, as compact JSON: {"a_first": "<kept>", "blob": "xxx..."}.
    assert "cut at 16,384 characters (of 300,033 as compact JSON)" in inbox and whole in inbox

    resume = api.post(f"/api/tasks/{task['id']}/resume", {"output": ["y" * 200_000 + "<end>"]})
    assert resume.status_code == 200
    api.wait_status(task["id"], "completed")
    page = api.get(f"/tasks/{task['id']}").text
    assert len(page) < 60_000
    assert page.count(whole) == 2  # the data and the output
    assert "cut at 16,384 characters (of 200,009 as compact JSON)" in page
    full = api.task(task["id"])
    assert len(full["data"]["blob"]) == 300_000 and len(full["output"][0]) == 200_005

    # Lists show a line of each task: the list's note on its output, and the JSON
    # list's tasks without their data, context, outputs and history (?full=1 has them).
    for url in ("/", "/?status=completed", "/?workflow=question"):
        listed = api.get(url).text
        assert task["id"] in listed and len(listed) < 30_000, url
        assert "<end>" not in listed and "x" * 100 not in listed and "y" * 100 not in listed
    # The start of the output's JSON text, as the store's summary of the task cut it.
    assert '<span class="muted">[&#34;yyyyy' in api.get("/?status=completed").text
    answer = api.get("/api/tasks")
    assert len(answer.data) < 10_000
    [summary] = [t for t in answer.get_json()["tasks"] if t["id"] == task["id"]]
    assert summary["status"] == "completed" and summary["workflow_name"] == "question"
    left_out = ["data", "context", "output", "outputs", "reply", "traceback", "history"]
    assert answer.get_json()["left_out"] == left_out
    assert not set(left_out) & set(summary)
    whole_list = api.get("/api/tasks?full=1").get_json()
    assert "left_out" not in whole_list
    [listed_whole] = [t for t in whole_list["tasks"] if t["id"] == task["id"]]
    assert listed_whole == full
    refused = api.get("/api/tasks?full=maybe")
    assert refused.status_code == 400
    assert refused.get_json()["error"].startswith("full must be 1 (whole tasks) or 0")

    small = api.submit("question", {"q": "short"})
    api.wait_status(small["id"], "waiting_human")
    assert "the whole task as JSON" not in api.get(f"/tasks/{small['id']}").text

    # Data that is text is shown as the text, and measured so.
    text = api.submit("question", "z" * 20_000)
    api.wait_status(text["id"], "waiting_human")
    assert "… cut at 16,384 of 20,000 characters;" in api.get(f"/tasks/{text['id']}").text


def test_pages_name_a_task_with_a_chosen_id_by_all_of_it(api: Api) -> None:
    # Ids a client or a schedule chose share their start ("order-10...",
    # "nightly@2026-..."): cut to 8 characters, every one would read "order-10".
    first = api.submit("question", {"q": 1}, id="order-1001")
    second = api.submit("question", {"q": 2}, id="order-1002")
    made_up = api.submit("question", {"q": 3})
    long_id = "batch-" + "x" * 60
    long = api.submit("question", {"q": 4}, id=long_id)
    for task in (first, second, made_up, long):
        api.wait_status(task["id"], "waiting_human")
    shown_long = long_id[:47] + "…"
    for url in ("/", "/inbox"):
        page = api.get(url).text
        for name in ("order-1001", "order-1002", made_up["id"][:8], shown_long):
            assert f'<code class="tid">{name}</code>' in page or f'">{name}</code>' in page, (
                url,
                name,
            )
        assert made_up["id"] + "</code>" not in page and long_id + "</code>" not in page
    page = api.get("/tasks/order-1002").text
    assert '<h1>Task <code class="tid" title="order-1002">order-1002</code>' in page
    assert "<title>Task order-1002" in page
    cancelled = api.client.post("/tasks/order-1001/cancel", data={"csrf_token": api.csrf})
    assert cancelled.status_code == 303
    shown = api.get(cancelled.headers["Location"]).text
    assert "Task order-1001 cancelled." in shown
    assert display.short_id(made_up["id"]) == made_up["id"][:8]


def test_a_value_is_written_out_only_as_far_as_a_page_shows_it() -> None:
    # The task list's note on an output, and a page's cut JSON, write out the start
    # of a value, not the whole of it: a page of outputs of megabytes each would
    # otherwise write each whole, at every refresh, to show a line of it.
    reached: list[object] = []

    class Far:
        """Stands for the rest of a big value: written out only if reached."""

        def __str__(self) -> str:
            reached.append(self)
            return "far"

    value = {"start": "a" * 300, "rest": [Far() for _ in range(1000)]}
    note = display._note_text(value)
    assert note == '{ "start": "' + "a" * 75 + "..."
    shown, cut = display._pretty_start(value, 200)
    assert cut and shown == '{\n  "start": "' + "a" * 186
    assert reached == []
    assert display._note_text({"n": 42}) == '{ "n": 42 }'
    assert display._note_text("reported 42") == "reported 42"


def test_a_task_before_its_first_phase_is_recorded_says_so(
    api: Api, dashboard: Dashboard, tmp_path: Path
) -> None:
    # A task submitted without a phase gets one when a worker takes it, but that is
    # written only at the worker's next lease renewal (10 s here) or as the phase ends.
    gate = tmp_path / "gate"
    running = api.submit("gated", {"gate": str(gate)})
    doc = api.wait_status(running["id"], "in_progress")
    assert doc["classification"] is None
    later = dashboard.call(
        lambda engine: engine.submit_task({"gate": str(gate)}, "gated", run_after=3600)
    )
    summary = re.compile(r"<dt>Phase</dt><dd>(.*?)</dd>", re.S)
    page = summary.search(api.get(f"/tasks/{running['id']}").text)
    assert page
    assert "first phase running; which one is recorded once it has run a second" in page[1]
    page = summary.search(api.get(f"/tasks/{later.id}").text)
    assert page and "not started; a worker chooses its first phase" in page[1]
    listing = api.get("/?workflow=gated").text
    assert "first phase running" in listing and "not started" in listing

    # The workflow's unfinished tasks add up: in a phase, or not yet in one.
    card = api.get("/workflows").text.split('data-workflow="gated"', 1)[1].split("</section>")[0]
    assert "2 unfinished tasks, 2 not yet in a phase" in re.sub(r"<[^>]+>", "", card)
    assert re.search(r"not yet in a phase.*?</td>\s*<td>2</td>", card, re.S)
    gate.write_text("open")
    api.wait_status(running["id"], "completed")
    card = api.get("/workflows").text.split('data-workflow="gated"', 1)[1].split("</section>")[0]
    assert "1 unfinished task, 1 not yet in a phase" in re.sub(r"<[^>]+>", "", card)


def test_the_task_page_shows_the_type_that_runs_its_phase(api: Api) -> None:
    def shown_type(task_id: str) -> tuple[str, str]:
        page = api.get(f"/tasks/{task_id}").text
        found = re.search(r"<dt>([^<]+)</dt><dd id=\"task-type\"[^>]*>(.*?)</dd>", page)
        assert found, page
        return found[1], re.sub(r"<[^>]+>", "", found[2])

    # An agentic task (the default) waiting in a human phase: the phase is a person's.
    waiting = api.submit("question", {"q": "?"})
    api.wait_status(waiting["id"], "waiting_human")
    assert shown_type(waiting["id"]) == ("Phase type", "human task default agentic")
    # A phase of the task's own type says it once.
    human = api.submit("question", {"q": "?"}, assigned_to="human")
    api.wait_status(human["id"], "waiting_human")
    assert shown_type(human["id"]) == ("Phase type", "human")
    # A phase that names no type is run by the task's type.
    branching = api.submit("branching", {}, classification="reject", assigned_to="functional")
    assert shown_type(branching["id"]) == ("Phase type", "functional")
    # Before a worker chooses its first phase, there is only the task's type.
    pending = api.submit("numbers", {"n": 1}, run_after=3600)
    assert shown_type(pending["id"]) == ("Task type", "agentic for phases that name none")
    # The submit form says what the type it asks for is.
    field = api.get("/submit").text.split('data-field="assigned_to"', 1)[1]
    assert '<label for="s-assigned">Task type</label>' in field
    assert '<option value="">(default: agentic)</option>' in field
    assert "it runs the phases that name no type of their own" in field


def test_task_page_shows_error_traceback_and_timeline(api: Api) -> None:
    task = api.submit("flaky", {})
    api.wait_status(task["id"], "failed")
    html = api.get(f"/tasks/{task['id']}").get_data(as_text=True)
    assert "RuntimeError: the flaky service is down" in html
    assert "<summary>Traceback</summary>" in html
    assert 'data-action="retry"' in html
    for label in ("Submitted", "Phase started (attempt 1)", "Attempt failed (attempt 1)", "Failed"):
        assert label in html
    assert "functional" in html
    partial = api.get(f"/tasks/{task['id']}", headers={"X-WFE-Partial": "1"}).get_data(as_text=True)
    assert "<html" not in partial and 'id="task-summary"' in partial


def test_blueprint_mounts_under_a_prefix_in_a_host_app(wfe_store_url: str) -> None:
    engine = make_engine()
    engine.use_store(wfe_store_url)
    dash = Dashboard(engine, run_worker=True, token="", kafka_brokers="")
    host = Flask("host")
    host.secret_key = "host-secret"

    @host.route("/")
    def home() -> str:
        return "host home"

    @host.errorhandler(404)
    def host_not_found(exc: Exception) -> tuple[str, int]:
        return "the host's own 404", 404

    @host.errorhandler(HTTPException)
    def host_http_error(exc: HTTPException) -> tuple[str, int]:
        return f"the host's own {exc.code}", exc.code or 500

    host.register_blueprint(dash.blueprint, url_prefix="/ops/wfe")
    try:
        client = host.test_client()
        assert client.get("/").get_data(as_text=True) == "host home"
        # The dashboard's API answers its unknown URLs in JSON; the host's keep its page.
        assert client.get("/ops/wfe/api/bogus").get_json() == {
            "error": "no API endpoint /ops/wfe/api/bogus"
        }
        assert client.get("/elsewhere").get_data(as_text=True) == "the host's own 404"
        assert client.get("/ops/wfe/nothing").get_data(as_text=True) == "the host's own 404"
        assert client.post("/").get_data(as_text=True) == "the host's own 405"
        refused = client.delete("/ops/wfe/api/csrf")
        assert refused.status_code == 405 and refused.is_json
        page = client.get("/ops/wfe/").get_data(as_text=True)
        assert 'href="/ops/wfe/inbox"' in page
        assert 'href="/ops/wfe/_wfe_static/dashboard.css"' in page
        assert client.get("/ops/wfe/_wfe_static/dashboard.js").status_code == 200
        api = Api(client, prefix="/ops/wfe")
        task = api.submit("numbers", {"n": 50})
        assert api.wait_status(task["id"], "completed")["output"] == "reported 100"
        html = client.get(f"/ops/wfe/tasks/{task['id']}").get_data(as_text=True)
        assert f'href="/ops/wfe/tasks/{task["id"]}/artifacts/report.txt"' in html
        # The host's own responses are left alone.
        assert "Content-Security-Policy" not in client.get("/").headers
        assert "Content-Security-Policy" not in client.get("/elsewhere").headers
    finally:
        dash.stop()


def test_answering_from_the_inbox_of_every_waiting_task_returns_to_it(api: Api) -> None:
    task_id = api.submit("question", {"q": 1})["id"]
    api.wait_status(task_id, "waiting_human")
    page = api.get("/inbox?all=1").text
    action = f"/tasks/{task_id}/answer?all=1"
    assert f'action="{action}"' in page
    assert f'action="/tasks/{task_id}/answer"' in api.get("/inbox").text
    bad = api.client.post(
        action,
        data={"csrf_token": api.csrf, "next": "inbox", "answer": "{oops", "answer_format": "json"},
    )
    assert bad.status_code == 400 and "not valid JSON" in bad.text
    # The inbox shown again with the error is still the one of every waiting task.
    assert re.search(r'href="/inbox\?all=1"\s+aria-current="true"', bad.text)
    good = api.client.post(
        action,
        data={"csrf_token": api.csrf, "next": "inbox", "answer": "yes", "answer_format": "text"},
    )
    assert good.status_code == 303 and good.headers["Location"].endswith("/inbox?all=1")
    assert api.wait_status(task_id, "completed")["output"] == "yes"


def test_reading_a_task_can_wait_until_it_finishes_or_waits(
    api: Api, dashboard: Dashboard, demo_engine: ECSWorkflowEngine, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    task_id = api.submit("gated", {"gate": str(gate)})["id"]
    api.wait_status(task_id, "in_progress")
    # Still running when the wait is up: the task as it is, not an error.
    assert api.get(f"/api/tasks/{task_id}?wait=0.2").json["status"] == "in_progress"

    answers: list[Any] = []
    reader = threading.Thread(
        target=lambda: answers.append(api.get(f"/api/tasks/{task_id}?wait=30"))
    )
    reader.start()
    # Opened only once the request is waiting, so only the wait can see it finish.
    wait_for(lambda: task_id in demo_engine._waiters, what="the request to start waiting")
    gate.write_text("open")
    reader.join(60)
    [answer] = answers
    assert answer.status_code == 200 and answer.json["status"] == "completed"

    asked = api.submit("question", {"q": 1})["id"]
    assert api.get(f"/api/tasks/{asked}?wait=30").json["status"] == "waiting_human"
    for bad, message in (("soon", "wait must be a number of seconds"), ("-1", "0 or more")):
        refused = api.get(f"/api/tasks/{asked}?wait={bad}")
        assert refused.status_code == 400 and message in refused.json["error"]
    assert api.get("/api/tasks/no-such-task?wait=1").status_code == 404


def test_the_workflows_page_shows_twenty_workflows_a_page(wfe_store_url: str) -> None:
    """A store of run-time workflows holds thousands: each page draws twenty graphs,
    with their counts (two queries), and links to the next."""
    from wfe_flaskui import Dashboard, create_app

    from wfcore import ECSWorkflowEngine, Phase

    engine = ECSWorkflowEngine(store=wfe_store_url, load_plugins=False)
    for n in range(45):
        engine.register_workflow(f"wf-{n:02}", [Phase("ask", assigned_to="human")])
    dash = Dashboard(engine, token="", kafka_brokers="")
    try:
        client = create_app(dash, secret_key="test-secret").test_client()
        first = client.get("/workflows").text
        last = client.get("/workflows?page=3").text
        beyond = client.get("/workflows?page=9").text
    finally:
        dash.stop()
    assert first.count('class="card workflow"') == 20
    assert 'data-workflow="wf-00"' in first and 'data-workflow="wf-20"' not in first
    assert "page 1 of 3" in first and 'href="/workflows?page=2" rel="next"' in first
    assert last.count('class="card workflow"') == 5 and 'data-workflow="wf-44"' in last
    assert 'href="/workflows?page=2" rel="prev"' in last and 'rel="next"' not in last
    assert "No workflows on this page." in beyond

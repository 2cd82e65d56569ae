"""End-to-end: the dashboard in real headless Chromium, beside a real ``wfe worker`` process.

Every page is saved as a screenshot under ``test-output/flaskui/``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from flaskui_helpers import loop_task, screenshot, serving, wait_for
from werkzeug.serving import make_server
from wfe_flaskui import Dashboard, create_app

from wfcore import ECSWorkflowEngine

TASK_URL = re.compile(r"/tasks/[0-9a-f]{32}$")


def _expect() -> Any:
    from playwright.sync_api import expect

    return expect


def test_submit_from_the_form_and_watch_it_complete(page: Any, live: Any, tmp_path: Path) -> None:
    expect = _expect()
    gate = tmp_path / "gate-1"
    page.goto(live.url + "/submit")
    page.select_option("#s-workflow", "gated")
    page.fill("#s-data", json.dumps({"gate": str(gate), "note": "from the form"}))
    # What a number input cannot read it would send as empty (priority 0): the form
    # is not sent, and says so beside the field, keeping what was typed.
    page.locator("#s-priority").press_sequentially("1e")
    page.click("button[data-action=submit]")
    error = page.locator('[data-field="priority"] [data-number-error]')
    expect(error).to_have_text(
        "This is not a number, so the form was not sent: type a number, or empty the field."
    )
    assert page.url == live.url + "/submit"
    assert page.evaluate("document.activeElement.id") == "s-priority"
    page.fill("#s-priority", "7")
    expect(error).to_have_count(0)  # a note beside a good number would mislead
    screenshot(page, "submit")
    page.click("button[data-action=submit]")
    page.wait_for_url(TASK_URL)
    task_id = page.url.rsplit("/", 1)[1]
    expect(page.locator(".flash-ok")).to_contain_text(f"Task {task_id[:8]} submitted")
    expect(page.locator("#task-status")).to_have_text("in_progress")
    expect(page.locator("#task-priority")).to_have_text("7 (higher goes first)")

    # The page updates itself: the same document sees the task complete.
    page.evaluate("window.__sameDocument = true")
    gate.write_text("opened by the test")
    expect(page.locator("#task-status")).to_have_text("completed", timeout=20000)
    assert page.evaluate("window.__sameDocument") is True
    expect(page.locator("#outputs")).to_contain_text("opened by the test")
    expect(page.locator("#history")).to_contain_text("Phase finished")
    screenshot(page, "task")


def test_task_list_refreshes_in_place_keeping_filter_and_scroll(
    page: Any, live: Any, tmp_path: Path
) -> None:
    expect = _expect()
    gate = tmp_path / "gate-2"
    fillers = [live.api.submit("question", {"filler": i})["id"] for i in range(12)]
    page.set_viewport_size({"width": 1280, "height": 500})
    page.goto(live.url + "/?workflow=question")
    expect(page.locator("select[name=workflow]")).to_have_value("question")
    page.evaluate("window.scrollTo(0, 300)")
    wait_for(lambda: page.evaluate("window.scrollY") == 300, what="the page to scroll")
    page.evaluate("window.__sameDocument = true")
    url = page.url

    fresh = live.api.submit("question", {"fresh": True})
    live.api.submit("gated", {"gate": str(gate)})  # another workflow: must stay filtered out
    row = page.locator(f"tr[data-task-id='{fresh['id']}']")
    expect(row).to_be_visible(timeout=20000)
    expect(row).to_have_attribute("data-status", "waiting_human")
    # The count read below is the one the page must show: every question task waits by
    # then, not only the last one (the worker may take them in a batch, in any order).
    for task_id in fillers:
        live.api.wait_status(task_id, "waiting_human")
    waiting = live.api.get("/api/tasks?status=waiting_human&limit=1").get_json()["total"]
    expect(page.locator("#inbox-count")).to_have_text(str(waiting))
    assert page.evaluate("window.__sameDocument") is True
    assert page.url == url
    assert page.evaluate("window.scrollY") == 300
    expect(page.locator("select[name=workflow]")).to_have_value("question")
    workflows = page.locator("#task-table tbody tr td:nth-child(3)").all_inner_texts()
    assert workflows and set(workflows) == {"question"}
    gate.write_text("done")
    page.set_viewport_size({"width": 1280, "height": 900})
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "tasks")


def test_answer_a_waiting_task_from_its_page_and_see_the_workflow_finish(
    page: Any, live: Any
) -> None:
    expect = _expect()
    task = live.api.submit("review", {"topic": "the quarterly report"})
    page.goto(live.url + "/inbox")
    card = page.locator(f"#inbox-{task['id']}")
    expect(card).to_be_visible(timeout=20000)
    expect(card).to_contain_text("Read the draft and decide whether to ship it.")
    screenshot(page, "inbox")

    page.goto(f"{live.url}/tasks/{task['id']}")
    # A priority typed but not yet set stays while the page refreshes around it, even
    # when someone else changes the priority meanwhile; then it is set.
    page.fill("#t-priority", "30")
    page.locator("h1").click()  # the field no longer has the focus
    assert live.api.post(f"/api/tasks/{task['id']}/priority", {"priority": 5}).status_code == 200
    expect(page.locator("#history")).to_contain_text("Priority changed")
    expect(page.locator("#t-priority")).to_have_value("30")
    page.click("button[data-action=priority]")
    expect(page.locator(".flash-ok")).to_contain_text(f"Task {task['id'][:8]} priority set to 30.")
    expect(page.locator("#t-priority")).to_have_value("30")

    form = page.locator("form.answer-form")
    form.locator("input[name='field.score']").fill("9")
    form.locator("button[data-action=answer]").click()
    decision = page.locator(".field[data-field=decision] .error")
    expect(decision).to_have_text("required")
    expect(page.locator(".field[data-field=score] .error")).to_contain_text(
        "greater than the maximum of 5"
    )
    expect(page.locator("#task-status")).to_have_text("waiting_human")
    screenshot(page, "task-answer-errors")

    form = page.locator("form.answer-form")
    form.locator("select[name='field.decision']").select_option(label="ship")
    form.locator("input[name='field.score']").fill("4")
    form.locator("label.check", has_text="docs").locator("input").check()
    form.locator("textarea[name='field.comment']").fill("Looks good <b>to me</b>")
    form.locator("button[data-action=answer]").click()
    expect(page.locator(".flash-ok")).to_contain_text("Answer recorded")
    expect(page.locator("#task-status")).to_have_text("completed", timeout=20000)
    outputs = page.locator("#outputs")
    expect(outputs).to_contain_text('"published": true')
    expect(outputs).to_contain_text("Looks good <b>to me</b>")
    expect(page.locator("#history")).to_contain_text("Answered")
    screenshot(page, "task-completed")


def test_a_file_chosen_in_the_answer_form_is_stored_with_the_task(page: Any, live: Any) -> None:
    expect = _expect()
    task = live.api.submit("question", {"q": "Send the signed contract."})
    live.api.wait_status(task["id"], "waiting_human")
    page.goto(f"{live.url}/tasks/{task['id']}")
    form = page.locator("form.answer-form")
    expect(form.locator(".field-upload")).to_contain_text(
        "Up to 1.0 MiB, the rest of the form included."
    )
    form.locator("textarea[name=answer]").fill("Signed: see the file.")
    form.locator("input[name=file]").set_input_files(
        {"name": "contract.txt", "mimeType": "text/plain", "buffer": b"Signed by both parties."}
    )
    screenshot(page, "task-answer-with-file")
    form.locator("button[data-action=answer]").click()
    expect(page.locator(".flash-ok")).to_contain_text("The file contract.txt was stored with it.")
    expect(page.locator("#task-status")).to_have_text("completed", timeout=20000)
    row = page.locator("#artifacts tr[data-artifact='contract.txt']")
    expect(row).to_contain_text("text/plain")
    expect(row).to_contain_text("ask")
    expect(page.locator("#artifacts")).to_contain_text("Signed by both parties.")
    expect(page.locator("#outputs")).to_contain_text("Signed: see the file.")


def test_a_form_larger_than_the_dashboard_takes_is_not_sent_and_keeps_what_was_typed(
    page: Any, live: Any
) -> None:
    """The dashboard refuses a body over max_body (1 MiB) with a 413 page, which cannot
    keep what was typed: the page says so before sending, beside the form."""
    expect = _expect()
    task = live.api.submit("question", {"q": "Send the scan."})
    waiting = live.api.wait_status(task["id"], "waiting_human")
    url = f"{live.url}/tasks/{task['id']}"
    page.goto(url)
    form = page.locator("form.answer-form")
    form.locator("textarea[name=answer]").fill("Here it is, all of it.")
    big = {"name": "scan.tiff", "mimeType": "image/tiff", "buffer": b"x" * (2 * 2**20)}
    form.locator("input[name=file]").set_input_files(big)
    form.locator("button[data-action=answer]").click()
    refusal = form.locator(".field-upload [data-size-error]")
    expect(refusal).to_have_text(
        "scan.tiff is 2.0 MiB, more than the 1.0 MiB this dashboard takes with the rest "
        "of the form, so it was not sent. Choose a smaller file."
    )
    screenshot(page, "task-answer-too-large")
    assert page.url == url
    expect(form.locator("textarea[name=answer]")).to_have_value("Here it is, all of it.")
    assert live.api.task(task["id"])["version"] == waiting["version"]
    # A smaller file goes, and the note with it.
    small = {"name": "scan.txt", "mimeType": "text/plain", "buffer": b"a smaller scan"}
    form.locator("input[name=file]").set_input_files(small)
    form.locator("button[data-action=answer]").click()
    expect(page.locator(".flash-ok")).to_contain_text("The file scan.txt was stored with it.")
    expect(page.locator("[data-size-error]")).to_have_count(0)

    # The submit form (no file): its data.
    page.goto(f"{live.url}/submit")
    page.select_option("#s-workflow", "question")
    page.fill("#s-data", json.dumps({"q": "x" * (2**20)}))
    page.click("button[data-action=submit]")
    refusal = page.locator("#submit-form > [data-size-error]")
    expect(refusal).to_contain_text(
        "more than the 1.0 MiB this dashboard takes, so it was not sent. Send less."
    )
    assert page.url == f"{live.url}/submit"
    assert len(page.locator("#s-data").input_value()) > 2**20


def test_a_form_left_open_while_someone_else_answers_is_refused(
    browser: Any, page: Any, live: Any
) -> None:
    expect = _expect()
    task = live.api.submit("sign_off", {"contract": "unsigned"})
    live.api.wait_status(task["id"], "waiting_human")
    url = f"{live.url}/tasks/{task['id']}"
    other = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        alice = other.new_page()
        alice.set_default_timeout(15000)
        alice.goto(url)
        page.goto(url)
        expect(page.locator(".instructions")).to_have_text("Legal: approve?")
        # Bob starts typing (his page then holds still); Alice answers first.
        page.fill("input[name='field.note']", "Legal says NO: contract unsigned")
        alice.check("input[name='field.approved']")
        alice.click("button[data-action=answer]")
        expect(alice.locator(".flash-ok")).to_contain_text("Answer recorded")
        expect(alice.locator(".instructions")).to_have_text("Finance: approve?", timeout=20000)
    finally:
        other.close()

    expect(page.locator(".instructions")).to_have_text("Legal: approve?")
    page.click("button[data-action=answer]")
    refused = page.locator("#answer-refused")
    expect(refused).to_contain_text("moved on from phase 'legal' to 'finance'")
    expect(refused).to_contain_text("your answer was not recorded")
    expect(refused.locator("dd")).to_contain_text(["no", "Legal says NO: contract unsigned"])
    expect(page.locator(".instructions")).to_have_text("Finance: approve?")
    expect(page.locator("input[name='field.note']")).to_have_value("")
    screenshot(page, "task-answer-refused")
    doc = live.api.task(task["id"])
    assert doc["classification"] == "finance" and doc["status"] == "waiting_human"
    assert doc["outputs"] == {"legal": {"approved": True}}


def test_cancel_from_the_inbox(page: Any, live: Any) -> None:
    expect = _expect()
    task = live.api.submit("question", {"q": "cancel me"})
    live.api.wait_status(task["id"], "waiting_human")
    page.goto(live.url + "/inbox")
    page.locator(f"#inbox-{task['id']} button[data-action=cancel]").click()
    expect(page.locator(".flash-ok")).to_contain_text(f"Task {task['id'][:8]} cancelled")
    expect(page.locator(f"#inbox-{task['id']}")).to_have_count(0)
    assert live.api.task(task["id"])["status"] == "cancelled"


def test_retry_a_failed_task_from_its_page(page: Any, live: Any) -> None:
    expect = _expect()
    task = live.api.submit("flaky", {})
    live.api.wait_status(task["id"], "failed")
    page.goto(f"{live.url}/tasks/{task['id']}")
    expect(page.locator("#task-error")).to_contain_text("RuntimeError: the flaky service is down")
    page.locator("#task-error summary").click()
    expect(page.locator("#task-error pre.tb")).to_contain_text("RuntimeError")
    screenshot(page, "task-failed")
    page.locator("button[data-action=retry]").click()
    expect(page.locator("#task-status")).to_have_text("completed", timeout=20000)
    expect(page.locator("#history")).to_contain_text("Retried")


def test_a_delayed_task_says_at_what_time_it_starts(page: Any, live: Any) -> None:
    # "Starts at" names a moment: the page's script, which shows other times as how
    # long ago or how soon, leaves it a date and time ("starts at in 1 h (in 2 h)").
    expect = _expect()
    task = live.api.submit("numbers", {"n": 1}, run_after=2 * 3600)
    when = datetime.fromisoformat(task["run_after"]).strftime("%Y-%m-%d %H:%M:%S UTC")
    page.goto(f"{live.url}/tasks/{task['id']}")
    # The script ran: the task's creation time says how long ago it was.
    expect(page.locator("#wfe-region dd time.wfe-time").first).to_have_text(
        re.compile(r"^(just now|\d+ s ago)$")
    )
    expect(page.locator("#task-start")).to_have_text(
        f"Starts at {when} (in 2 h): submitted to start later; no worker takes it before then."
    )
    # The history says what the submitted event asked for, not how far off it is now.
    submitted = page.locator("#history li", has_text="Submitted")
    expect(submitted).to_contain_text(f"run after {when}")
    page.goto(live.url + "/?status=pending")
    row = page.locator(f"tr[data-task-id='{task['id']}']")
    expect(row.locator("td").nth(5)).to_have_text(re.compile(r"^(just now|\d+ s ago)$"))
    expect(row.locator(".start-note")).to_have_text(f"starts at {when} (in 2 h)")
    assert live.api.post(f"/api/tasks/{task['id']}/cancel").status_code == 200


def test_script_in_task_data_shows_as_text(page: Any, live: Any) -> None:
    expect = _expect()
    evil = "<script>window.__xss = 1</script><img src=x onerror=window.__xss=2>"
    page.goto(live.url + "/submit")
    page.select_option("#s-workflow", "question")
    page.fill("#s-data", json.dumps({"html": evil}))
    page.click("button[data-action=submit]")
    page.wait_for_url(TASK_URL)
    task_id = page.url.rsplit("/", 1)[1]
    expect(page.locator("#task-data")).to_contain_text(evil)
    expect(page.locator("#task-status")).to_have_text("waiting_human", timeout=20000)
    assert page.evaluate("typeof window.__xss") == "undefined"
    assert page.locator("#task-data script, #task-data img").count() == 0
    screenshot(page, "xss")

    page.goto(live.url + "/inbox")
    card = page.locator(f"#inbox-{task_id}")
    card.locator("summary", has_text="Task data").click()
    expect(card).to_contain_text(evil)
    assert page.evaluate("typeof window.__xss") == "undefined"


def test_workflow_graphs_with_tasks_per_phase(page: Any, live: Any) -> None:
    expect = _expect()
    task = live.api.submit("review", {"topic": "graphs"})
    live.api.wait_status(task["id"], "waiting_human")
    docs = live.api.get("/api/workflows").get_json()["workflows"]
    counts = {w["name"]: w["tasks_by_phase"] for w in docs}
    page.goto(live.url + "/workflows")
    cards = page.locator("section.workflow")
    expect(cards).to_have_count(len(counts))
    assert page.locator("section.workflow svg.wfe-graph").count() == len(counts)
    review = page.locator("section.workflow[data-workflow=review]")
    nodes = review.locator("g.wfe-node")
    expect(nodes).to_have_count(3)
    approve = review.locator("g.wfe-node[data-phase=approve]")
    expect(approve).to_have_attribute("data-count", str(counts["review"]["approve"]))
    assert int(approve.get_attribute("data-count")) >= 1
    assert approve.get_attribute("class") == "wfe-node wfe-node-human"
    # Measured in one step in the page: the region it refreshes may replace the graph
    # between finding it and measuring it (a detached one has no box).
    page.wait_for_function(
        """() => {
            const graph = document.querySelector(
                "section.workflow[data-workflow=review] svg.wfe-graph");
            const box = graph && graph.getBoundingClientRect();
            return box !== null && box.width > 400 && box.height > 60;
        }""",
        timeout=10_000,
    )
    branching = page.locator("section.workflow[data-workflow=branching]")
    expect(branching.locator("g.wfe-node")).to_have_count(5)
    assert branching.locator("path.wfe-edge-timeout").count() == 1
    screenshot(page, "workflows")


def test_login_page_guards_a_dashboard_with_a_token(page: Any, live: Any) -> None:
    expect = _expect()
    dash = Dashboard(
        ECSWorkflowEngine(store=live.store, load_plugins=False),
        token="open-sesame",
        kafka_brokers="",
    )
    server = make_server("127.0.0.1", 0, create_app(dash, secret_key="k"), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        # A link with the wrong token lands on the login page, which says so.
        page.goto(base + "/workflows?token=wrong")
        expect(page.locator("#login-form .error")).to_have_text("That token is not right.")
        page.goto(base + "/workflows")
        expect(page.locator("#login-form")).to_be_visible()
        expect(page.locator("#login-form .error")).to_have_count(0)
        page.fill("#l-token", "wrong")
        page.click("#login-form button[type=submit]")
        expect(page.locator("#login-form .error")).to_have_text("That token is not right.")
        screenshot(page, "login")
        page.fill("#l-token", "open-sesame")
        page.click("#login-form button[type=submit]")
        page.wait_for_url(base + "/workflows")
        expect(page.locator("section.workflow").first).to_be_visible()
    finally:
        server.shutdown()
        thread.join(10)
        dash.stop()


def test_the_kafka_chip_warns_while_kafka_cannot_be_reached(
    page: Any, live: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wfe_flaskui.kafka

    for package in ("wfe_kafka", "kafka"):
        if importlib.util.find_spec(package) is None:
            pytest.skip(f"{package} is not installed")
    expect = _expect()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        nowhere = f"127.0.0.1:{probe.getsockname()[1]}"
    # Each try of the results reader to reach Kafka lasts 3 s before it fails: set for
    # its consumer (wfe_kafka's consumers take 5 s, which PUBLISH_TIMEOUT does not cut;
    # the environment's settings are read with KAFKA_BROKERS set).
    monkeypatch.setattr(wfe_flaskui.kafka, "PUBLISH_TIMEOUT", 3.0)
    monkeypatch.setenv("KAFKA_BROKERS", nowhere)
    monkeypatch.setenv(
        "WFE_KAFKA_CLIENT_CONFIG", json.dumps({"consumer_config": {"bootstrap_timeout_ms": 3000}})
    )
    dash = Dashboard(
        ECSWorkflowEngine(store=live.store, load_plugins=False),
        token="",
        kafka_brokers=nowhere,
        refresh_seconds=0.5,
    )
    # Started by the first request: the page is served before the first try fails,
    # so the chip it shows is turned into a warning by the page's own refresh.
    app = create_app(dash, secret_key="k", start=False)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        first = page.goto(base + "/")
        assert '<span class="chip chip-kafka" id="kafka-chip"' in first.text()
        chip = page.locator("#kafka-chip")
        expect(chip).to_have_text("kafka unreachable", timeout=20000)
        expect(chip).to_have_class(re.compile(r"\bchip-warn\b"))
        expect(chip).to_have_attribute(
            "title", re.compile(rf"^Kafka cannot be reached at {re.escape(nowhere)} since .+ UTC")
        )
        screenshot(page, "kafka-unreachable")
    finally:
        server.shutdown()
        thread.join(10)
        dash.stop()


def test_answer_form_fields_named_anything_have_their_own_labels(page: Any, live: Any) -> None:
    expect = _expect()
    # Property names that are no HTML id as they are, or become the same one when
    # their odd characters are replaced.
    properties = {
        "first name": {"type": "string", "title": "Spaced"},
        "first_name": {"type": "string", "title": "Underscored"},
        'say "hi"': {"type": "boolean", "title": "Quoted"},
        "x<y>&'z'": {"enum": ["a", "b"], "title": "Marked up"},
        "n\u00e4me \u2603": {"type": "integer", "title": "Unicode"},
        "": {"type": "string", "title": "Empty"},
        "two\nlines": {"type": "string", "title": "Newline"},
        "pick some": {"type": "array", "items": {"enum": ["a", "b"]}, "title": "Several"},
    }
    spec = {
        "name": "odd names",
        "phases": [
            {
                "target_classification": "fill",
                "assigned_to": "human",
                "input_schema": {"type": "object", "properties": properties},
            }
        ],
        "input": {},
    }
    task_id = live.api.wait_status(live.api.define(spec)["id"], "waiting_human")["id"]
    # Two tasks in the inbox whose ids share their first characters.
    twin = live.api.submit("odd names", {}, id=f"{task_id} twin")
    live.api.wait_status(twin["id"], "waiting_human")

    label_targets = (
        "els => els.map(e => document.querySelectorAll('#' + CSS.escape(e.htmlFor)).length)"
    )
    for path in (f"/tasks/{task_id}", "/inbox", "/submit"):
        page.goto(live.url + path)
        ids = page.eval_on_selector_all("[id]", "els => els.map(e => e.id)")
        assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
        assert not [i for i in ids if re.search(r"\s", i)], path
        # Every label names an element that exists, one only.
        targets = page.eval_on_selector_all("label[for]", label_targets)
        assert targets and set(targets) == {1}, path
        # Every label points at something a label can name.
        unlabelable = page.eval_on_selector_all(
            "label[for]",
            "els => els.filter(e => !e.control).map(e => e.htmlFor)",
        )
        assert unlabelable == [], path

    # The submit form offers the phases of the workflow chosen, whatever its name.
    page.select_option("#s-workflow", "odd names")
    phases = page.eval_on_selector(
        "#s-classification", "e => e.list && [...e.list.options].map(o => o.value)"
    )
    assert phases == ["fill"]

    page.goto(f"{live.url}/tasks/{task_id}")
    form = page.locator("form.answer-form")
    form.get_by_label("Spaced").fill("with a space")
    form.get_by_label("Underscored").fill("with an underscore")
    form.get_by_label("Quoted").check()
    form.get_by_label("Marked up").select_option(label="b")
    form.get_by_label("Unicode").fill("7")
    form.get_by_label("Empty").fill("no name at all")
    form.get_by_label("Newline").fill("nl")
    form.get_by_role("group", name="Several").get_by_label("b").check()
    form.locator("button[data-action=answer]").click()
    expect(page.locator(".flash-ok")).to_contain_text("Answer recorded")
    done = live.api.wait_status(task_id, "completed")
    assert done["outputs"]["fill"] == {
        "first name": "with a space",
        "first_name": "with an underscore",
        'say "hi"': True,
        "x<y>&'z'": "b",
        "n\u00e4me \u2603": 7,
        "": "no name at all",
        "two\nlines": "nl",
        "pick some": ["b"],
    }


def test_long_workflow_and_phase_names_wrap_instead_of_widening_pages(page: Any, live: Any) -> None:
    expect = _expect()
    # Names may be 200 characters long, with no space to break them at.
    workflow, phase = "w" * 199 + "1", "p" * 200
    spec = {
        "name": workflow,
        "phases": [{"target_classification": phase, "assigned_to": "human"}],
        "input": {},
    }
    task_id = live.api.wait_status(live.api.define(spec)["id"], "waiting_human")["id"]

    for path in ("/", f"/?workflow={workflow}", "/inbox", f"/tasks/{task_id}", "/workflows"):
        page.goto(live.url + path)
        expect(page.locator("main")).to_contain_text(workflow)
        widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert widths[0] <= widths[1], f"{path} scrolls sideways: {widths}"
        if path.startswith("/?"):
            # Every column of the task list is in view, none pushed out of its box.
            # (Measured in one go: the list refreshes itself meanwhile.)
            expect(page.locator(f"tr[data-task-id='{task_id}']")).to_be_visible()
            outside = page.evaluate(
                """id => {
                  const wrap = document.querySelector('.tablewrap').getBoundingClientRect();
                  const row = document.querySelector(`tr[data-task-id="${id}"]`);
                  return [...row.cells]
                    .filter(cell => cell.getBoundingClientRect().right > wrap.right + 1)
                    .map(cell => cell.textContent.trim().slice(0, 20));
                }""",
                task_id,
            )
            assert outside == [], f"cells outside the table's box: {outside}"
    screenshot(page, "long-names")


def test_an_open_task_page_says_so_when_the_task_is_purged(page: Any, live: Any) -> None:
    expect = _expect()
    task = live.api.submit("numbers", {"n": 4})
    live.api.wait_status(task["id"], "completed")
    page.goto(f"{live.url}/tasks/{task['id']}")
    expect(page.locator("#task-status")).to_have_text("completed")
    page.evaluate("window.__sameDocument = true")

    # `wfe purge` on the store, from elsewhere, while the page is open.
    purged = live.dashboard.call(lambda engine: engine.purge(0, workflow_name="numbers"))
    assert purged >= 1
    gone = page.locator("#task-gone")
    expect(gone).to_contain_text(f"Task {task['id'][:8]} is no longer in the store")
    expect(page.locator("#task-summary")).to_have_count(0)
    assert page.evaluate("window.__sameDocument") is True
    screenshot(page, "task-purged")


def test_behind_a_proxy_naming_the_user_the_history_says_who_answered(
    browser: Any, page: Any, live: Any
) -> None:
    expect = _expect()
    dash = Dashboard(
        ECSWorkflowEngine(store=live.store, load_plugins=False),
        token="",
        kafka_brokers="",
        user_header="X-Forwarded-User",
    )
    server = make_server("127.0.0.1", 0, create_app(dash, secret_key="k"), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    # The authenticating proxy's part: every request carries the header.
    context = browser.new_context(extra_http_headers={"X-Forwarded-User": "Alice Example"})
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        task = live.api.submit("question", {"q": "refund order 17?"})
        live.api.wait_status(task["id"], "waiting_human")
        # Straight to the dashboard, round the proxy: refused, saying why.
        refused = page.goto(f"{base}/tasks/{task['id']}")
        assert refused.status == 401
        expect(page.locator("main")).to_contain_text("it did not come through the proxy")

        tab = context.new_page()
        tab.set_default_timeout(15000)
        tab.goto(f"{base}/tasks/{task['id']}")
        expect(tab.locator("#wfe-user")).to_have_text("Alice Example")
        tab.locator("form.answer-form textarea[name=answer]").fill("yes, refund it")
        tab.locator("form.answer-form button[data-action=answer]").click()
        expect(tab.locator(".flash-ok")).to_contain_text("Answer recorded")
        expect(tab.locator("#task-status")).to_have_text("completed", timeout=20000)
        answered = tab.locator("#history li.ev-resumed .ev-who")
        expect(answered).to_have_text("by Alice Example")
        screenshot(tab, "task-answered-by")
        resumed = [e for e in live.api.task(task["id"])["history"] if e["event"] == "resumed"]
        assert [e.get("by") for e in resumed] == ["Alice Example"]
    finally:
        context.close()
        server.shutdown()
        thread.join(10)
        dash.stop()


def test_a_long_history_shown_whole_stays_whole_as_the_page_refreshes(
    page: Any, live: Any, tmp_path: Path
) -> None:
    expect = _expect()
    store = f"sqlite:///{tmp_path / 'long.db'}"
    # asyncio.run cannot run in this thread while Playwright's loop is open.
    with ThreadPoolExecutor(1) as builder:
        task_id = builder.submit(asyncio.run, loop_task(store, 110)).result(60)
    dash = Dashboard(store=store, run_worker=False, token="", kafka_brokers="", refresh_seconds=0.3)
    try:
        with serving(create_app(dash, secret_key="k")) as port:
            page.goto(f"http://127.0.0.1:{port}/tasks/{task_id}")
            events = page.locator("#history li.ev")
            expect(events).to_have_count(200)
            expect(page.locator("#history-earlier")).to_have_text(
                "… 24 earlier events (show all 224)"
            )
            page.click("#history-earlier a")
            expect(events).to_have_count(224)
            # The region refreshes itself from its own URL: it keeps every event.
            page.evaluate(
                """() => new Promise((done, fail) => {
                    document.addEventListener("wfe:refreshed", () => done(true), { once: true });
                    window.setTimeout(() => fail(new Error("no refresh in 15 s")), 15000);
                })"""
            )
            assert events.count() == 224
            expect(page.locator("#history-all")).to_contain_text("show the last 200")
            screenshot(page, "task-long-history")
    finally:
        dash.stop()

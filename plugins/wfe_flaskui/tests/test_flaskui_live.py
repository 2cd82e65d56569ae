"""Live pages in real headless Chromium: they never go stale without saying so (the
dashboard gone, the session ended), and typing in one inbox card does not stop the
rest of the inbox from updating."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flaskui_helpers import TESTS, screenshot, serving, wait_for
from wfe_flaskui import Dashboard, create_app

from wfcore import ECSWorkflowEngine

CLOCK = r"\d\d:\d\d:\d\d"


def _expect() -> Any:
    from playwright.sync_api import expect

    return expect


@contextmanager
def dashboard_process(store: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``python -m wfe_flaskui`` on ``store``: the process and its URL."""
    env = {k: v for k, v in os.environ.items() if k not in ("WFE_UI_TOKEN", "KAFKA_BROKERS")}
    env.update(WFE_LOAD_PLUGINS="", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "wfe_flaskui", "--port", "0", "--store", store],
        cwd=TESTS,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)

    threading.Thread(target=read, daemon=True).start()

    def announced() -> str | None:
        for line in list(lines):
            found = re.search(r"wfe dashboard on (http://\S+?)/ ", line)
            if found:
                return found[1]
        assert proc.poll() is None, "".join(lines)
        return None

    try:
        yield proc, wait_for(announced, 30, "the dashboard to say where it listens")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)


@contextmanager
def dashboard_tab(browser: Any, store: str, token: str) -> Iterator[tuple[str, Any]]:
    """A dashboard on ``store`` whose live pages refresh every half second, served over
    real HTTP, and the first tab of a new browser context (15 s timeouts): the base URL
    and the tab (``tab.context`` opens more tabs in the same browser session)."""
    dash = Dashboard(
        ECSWorkflowEngine(store=store, load_plugins=False),
        token=token,
        kafka_brokers="",
        refresh_seconds=0.5,
    )
    try:
        with serving(create_app(dash, secret_key="live-k")) as port:
            context = browser.new_context()
            try:
                tab = context.new_page()
                tab.set_default_timeout(15000)
                yield f"http://127.0.0.1:{port}", tab
            finally:
                context.close()
    finally:
        dash.stop()


def test_a_page_whose_dashboard_went_away_says_since_when(page: Any, live: Any) -> None:
    expect = _expect()
    with dashboard_process(live.store) as (proc, url):
        page.goto(url + "/")
        expect(page.locator("#task-table, .empty").first).to_be_visible()
        notice = page.locator("#wfe-live-notice")
        expect(notice).to_have_count(0)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        expect(notice).to_be_visible(timeout=20000)
        expect(notice).to_have_attribute("data-kind", "down")
        expect(notice).to_have_text(
            re.compile(
                rf"Connection lost: the dashboard cannot be reached\. "
                rf"This page was last updated at {CLOCK}; trying again\."
            )
        )
        screenshot(page, "live-connection-lost")


def test_a_page_whose_store_fails_says_what_the_dashboard_answered(
    browser: Any, tmp_path: Path
) -> None:
    """The dashboard still answers, so the notice does not claim the connection is
    lost: it gives the status and why (the store's own words)."""
    expect = _expect()
    db = tmp_path / "wfe.db"
    with dashboard_tab(browser, f"sqlite:///{db}", token="") as (base, tab):
        tab.goto(base + "/")
        notice = tab.locator("#wfe-live-notice")
        expect(notice).to_have_count(0)
        for path in tmp_path.glob("wfe.db*"):
            path.unlink()
        expect(notice).to_be_visible(timeout=20000)
        expect(notice).to_have_attribute("data-kind", "error")
        expect(notice).to_have_text(
            re.compile(
                r"The dashboard answered 503 [A-Z ]+: the store file "
                rf"{re.escape(str(db))} was deleted while this process had it open; .+"
                rf"\. This page was last updated at {CLOCK}; trying again\."
            )
        )
        screenshot(tab, "live-store-failed")


def test_a_page_whose_session_ended_asks_to_log_in_again(browser: Any, live: Any) -> None:
    expect = _expect()
    token = "a-token-long-enough-for-this"
    with dashboard_tab(browser, live.store, token) as (base, tab):
        tab.goto(base + f"/?token={token}")
        tab.wait_for_url(base + "/")
        other = tab.context.new_page()  # the same browser, another tab: log out there
        other.goto(base + "/workflows")
        other.click("form[action='/logout'] button")
        other.wait_for_url(re.compile(r"/login$"))

        notice = tab.locator("#wfe-live-notice")
        expect(notice).to_be_visible(timeout=20000)
        expect(notice).to_have_attribute("data-kind", "session")
        expect(notice).to_contain_text("Your session has ended")
        screenshot(tab, "live-session-ended")
        tab.click("#wfe-live-notice a")
        tab.wait_for_url(re.compile(r"/login\?next=%2F$"))
        tab.fill("#l-token", token)
        tab.click("#login-form button[type=submit]")
        tab.wait_for_url(base + "/")
        expect(tab.locator("#wfe-live-notice")).to_have_count(0)


def test_typing_in_one_inbox_card_holds_only_that_card(page: Any, live: Any) -> None:
    expect = _expect()
    first = live.api.submit("question", {"card": "first"})
    second = live.api.submit("question", {"card": "second"})
    for task in (first, second):
        live.api.wait_status(task["id"], "waiting_human")
    page.goto(live.url + "/inbox")
    card = page.locator(f"#inbox-{first['id']}")
    answer = card.locator("textarea[name=answer]")

    # Typed, cleared, and left: the inbox updates as if nothing happened.
    answer.fill("oops")
    answer.fill("")
    page.locator("h1").click()
    third = live.api.submit("question", {"card": "third"})
    expect(page.locator(f"#inbox-{third['id']}")).to_be_visible(timeout=20000)

    # Typing (and staying in the box): other cards come and go around it.
    answer.click()
    answer.type("half an answer")
    fourth = live.api.submit("question", {"card": "fourth"})
    expect(page.locator(f"#inbox-{fourth['id']}")).to_be_visible(timeout=20000)
    live.api.post(f"/api/tasks/{second['id']}/resume", {"output": "answered by a colleague"})
    expect(page.locator(f"#inbox-{second['id']}")).to_have_count(0, timeout=20000)
    expect(answer).to_have_value("half an answer")
    assert page.evaluate("document.activeElement.name") == "answer"
    assert page.evaluate("document.activeElement.closest('article').dataset.taskId") == first["id"]

    # Left with text in it, its task answered elsewhere: it stays, marked, and the rest
    # of the inbox (and the count in the navigation) still updates.
    page.locator("h1").click()
    live.api.post(f"/api/tasks/{first['id']}/resume", {"output": "someone was faster"})
    expect(card).to_have_class(re.compile(r"\bedit-orphan\b"), timeout=20000)
    expect(card.locator(".orphan-note")).to_contain_text("no longer waits for this answer")
    expect(answer).to_have_value("half an answer")
    fifth = live.api.submit("question", {"card": "fifth"})
    expect(page.locator(f"#inbox-{fifth['id']}")).to_be_visible(timeout=20000)
    waiting = live.api.get("/api/tasks?status=waiting_human&limit=1").get_json()["total"]
    expect(page.locator("#inbox-count")).to_have_text(str(waiting), timeout=20000)
    screenshot(page, "live-inbox-editing")
    # Sending it says what became of the task.
    card.locator("button[data-action=answer]").click()
    expect(page.locator("#answer-refused")).to_contain_text("answered elsewhere")
    for task in (third, fourth, fifth):
        live.api.post(f"/api/tasks/{task['id']}/cancel")

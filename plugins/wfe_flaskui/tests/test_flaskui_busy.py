"""A store another process keeps busy: answers, cancels and retries that the dashboard
stopped waiting for, which the store may still apply, and what the pages and the API
say about them.

Another process really holds SQLite's write lock (``BEGIN IMMEDIATE``), as a long
``wfe purge`` or a migration would; the dashboard waits 1 s instead of 30.
"""

from __future__ import annotations

import html
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from flaskui_demo_app import make_engine
from flaskui_helpers import AnswerFormReader, Api
from werkzeug.datastructures import MultiDict
from wfe_flaskui import Dashboard, create_app
from wfe_flaskui.bridge import BridgeError

_LOCKER = """
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
connection.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()  # held until the test says so (or goes away)
connection.execute("ROLLBACK")
"""


@contextmanager
def write_lock(db: Path) -> Iterator[None]:
    """Another process holds the database's write lock for the duration of the block."""
    locker = subprocess.Popen(
        [sys.executable, "-c", _LOCKER, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert locker.stdout is not None and locker.stdin is not None
    try:
        assert locker.stdout.readline().strip() == "locked"
        yield
    finally:
        locker.stdin.close()
        locker.wait(30)


@pytest.fixture
def busy(tmp_path: Path) -> Iterator[tuple[Api, Dashboard, Path]]:
    db = tmp_path / "wfe.db"
    engine = make_engine()
    engine.use_store(f"sqlite:///{db}")
    dash = Dashboard(engine, run_worker=True, token="", kafka_brokers="", timeout=1.0)
    app = create_app(dash, secret_key="busy-secret")
    try:
        yield Api(app.test_client()), dash, db
    finally:
        dash.stop()


def _waiting_review(api: Api) -> dict[str, Any]:
    task = api.submit("review", {"topic": "busy"})
    return api.wait_status(task["id"], "waiting_human")


def _answer_post(api: Api, task_id: str, **fields: str) -> MultiDict[str, str]:
    """The answer form of the task's page, filled in as a person would."""
    page = api.get(f"/tasks/{task_id}").get_data(as_text=True)
    reader = AnswerFormReader(page)
    return MultiDict([*reader.hidden, *((reader.inputs[k], v) for k, v in fields.items())])


def _text(response: Any) -> str:
    return html.unescape(response.get_data(as_text=True))


def test_an_answer_the_busy_store_did_not_take_in_time_is_said_to_be_queued(
    busy: tuple[Api, Dashboard, Path],
) -> None:
    api, _, db = busy
    task = _waiting_review(api)
    post = _answer_post(api, task["id"], decision='"hold"', score="3", comment="typed while busy")

    with write_lock(db):
        sent = api.client.post(f"/tasks/{task['id']}/answer", data=post)
        assert sent.status_code == 503
        page = _text(sent)
        assert 'id="answer-queued"' in page
        assert "was queued and may still be applied" in page
        assert "check the task" in page and "before answering again" in page
        # What the person typed is on the page.
        assert "typed while busy" in page and "hold" in page

    # The queued answer is applied once the lock is gone.
    done = api.wait_status(task["id"], "completed")
    recorded = done["outputs"]["approve"]
    assert (recorded["decision"], recorded["score"], recorded["comment"]) == (
        "hold",
        3,
        "typed while busy",
    )

    # Sending the same form again: refused (the round is answered) but not "not recorded".
    again = api.client.post(f"/tasks/{task['id']}/answer", data=post)
    assert again.status_code == 409
    page = _text(again)
    assert "not recorded." not in page
    assert "answered elsewhere" not in page
    assert "is the same as yours" in page

    # Someone else's different answer is still reported as before.
    other = _waiting_review(api)
    first = _answer_post(api, other["id"], decision='"ship"', score="5")
    mine = _answer_post(api, other["id"], decision='"hold"', score="1")
    assert api.client.post(f"/tasks/{other['id']}/answer", data=first).status_code == 303
    api.wait_status(other["id"], "completed")
    refused = _text(api.client.post(f"/tasks/{other['id']}/answer", data=mine))
    assert "(answered elsewhere); your answer was not recorded." in refused


def test_inbox_answer_on_a_busy_store_shows_the_inbox_with_the_note(
    busy: tuple[Api, Dashboard, Path],
) -> None:
    api, _, db = busy
    task = _waiting_review(api)
    post = _answer_post(api, task["id"], decision='"ship"', score="4")
    post["next"] = "inbox"
    with write_lock(db):
        sent = api.client.post(f"/tasks/{task['id']}/answer", data=post)
    assert sent.status_code == 503
    page = _text(sent)
    assert "<h1>Inbox</h1>" in page and 'id="answer-queued"' in page
    api.wait_status(task["id"], "completed")


def test_cancel_and_retry_forms_on_a_busy_store_say_they_were_queued(
    busy: tuple[Api, Dashboard, Path],
) -> None:
    api, _, db = busy
    task = _waiting_review(api)
    csrf = {"csrf_token": api.csrf}
    with write_lock(db):
        sent = api.client.post(f"/tasks/{task['id']}/cancel", data=csrf, follow_redirects=True)
        page = _text(sent)
        assert "The store was too busy to take the cancel" in page
        assert "may still be applied: check the task before trying again" in page
    api.wait_status(task["id"], "cancelled")

    with write_lock(db):
        sent = api.client.post(f"/tasks/{task['id']}/retry", data=csrf, follow_redirects=True)
        assert "The store was too busy to take the retry" in _text(sent)
    api.wait_status(task["id"], "waiting_human")


def test_api_changes_on_a_busy_store_answer_503_saying_they_may_still_be_applied(
    busy: tuple[Api, Dashboard, Path],
) -> None:
    api, _, db = busy
    task = _waiting_review(api)
    answer = {"decision": "ship", "score": 2}
    with write_lock(db):
        sent = api.post(
            f"/api/tasks/{task['id']}/resume", {"output": answer, "version": task["version"]}
        )
        assert sent.status_code == 503
        body = sent.get_json()
        assert body["id"] == task["id"]
        assert "the answer was queued and may still be applied" in body["error"]
        assert f"check GET /api/tasks/{task['id']} before sending it again" in body["error"]
    done = api.wait_status(task["id"], "completed")
    assert done["outputs"]["approve"] == answer

    second = _waiting_review(api)
    with write_lock(db):
        body = api.post(f"/api/tasks/{second['id']}/cancel").get_json()
        assert "the cancel was queued and may still be applied" in body["error"]
    api.wait_status(second["id"], "cancelled")
    with write_lock(db):
        sent = api.post(f"/api/tasks/{second['id']}/retry")
        assert sent.status_code == 503
        assert "the retry was queued and may still be applied" in sent.get_json()["error"]
    api.wait_status(second["id"], "waiting_human")


def test_the_timeout_must_be_a_positive_number() -> None:
    with pytest.raises(ValueError, match="timeout must be a positive number of seconds"):
        Dashboard(make_engine(), timeout=0, token="", kafka_brokers="")


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"timeout": float("inf")}, "timeout must be a positive number of seconds, not inf"),
        (
            {"refresh_seconds": float("nan")},
            "refresh_seconds must be a positive number of seconds, not nan",
        ),
        ({"page_size": 0}, "page_size must be a whole number of tasks, 1 or more, not 0"),
        ({"page_size": "25"}, "page_size must be a whole number of tasks, 1 or more, not '25'"),
        ({"inbox_size": -1}, "inbox_size must be a whole number of tasks, 1 or more, not -1"),
        (
            {"preview_bytes": -5},
            "preview_bytes must be a whole number of bytes, 0 or more, not -5",
        ),
        ({"max_body": True}, "max_body must be a whole number of bytes, 1 or more, not True"),
    ],
)
def test_settings_no_page_could_use_are_refused_naming_them(
    setting: dict[str, Any], message: str
) -> None:
    # Taken, each would fail every request that uses it (a Tasks page with
    # page_size="25" was a 500), or the dashboard's start.
    with pytest.raises(ValueError) as refused:
        Dashboard(make_engine(), token="", kafka_brokers="", **setting)
    assert str(refused.value) == message


def test_a_store_held_up_as_it_opens_says_why_then_opens_once_free(tmp_path: Path) -> None:
    """Opening a store writes to it, so another process's write lock holds the open
    up: starting says which store and why (``wfe ui`` prints it as one line), a
    request of a mounted dashboard gets it as its 503, and the next try opens it."""
    db = tmp_path / "wfe.db"
    url = f"sqlite:///{db}"
    Dashboard(make_engine(), store=url, token="", kafka_brokers="").start().stop()  # made

    def dashboard() -> Dashboard:
        engine = make_engine()
        engine.use_store(url)
        return Dashboard(engine, token="", kafka_brokers="", timeout=1.0)

    expected = (
        f"the store {url} did not open: the engine did not answer within 1s; another "
        "process may hold its write lock (a long purge, compaction or upgrade, or a "
        "program stuck in a transaction): try again once that ends"
    )
    mounted = dashboard()
    try:
        with write_lock(db):
            with pytest.raises(BridgeError) as refused:
                create_app(dashboard(), secret_key="s")
            assert str(refused.value) == expected
            api = Api(create_app(mounted, secret_key="s", start=False).test_client())
            page = api.get("/api/tasks")
            assert (page.status_code, page.get_json()) == (503, {"error": expected})
        assert api.get("/api/tasks").status_code == 200
    finally:
        mounted.stop()

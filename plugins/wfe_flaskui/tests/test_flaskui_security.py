"""Who may use the dashboard and what it gives away: the login cookie, wrong tokens,
short tokens, the Secure flag, a token in an API URL, an app without a secret key,
and define_workflow tasks."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flaskui_demo_app import make_engine
from flaskui_helpers import Api, submit_form_hidden, wait_for
from wfe_flaskui import Dashboard, create_app

from wfcore import ECSWorkflowEngine, Phase, TaskStatus

TOKEN = "a-long-enough-access-token"


@pytest.fixture
def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'wfe.db'}"


@pytest.fixture
def guarded(store: str) -> Iterator[tuple[Any, Dashboard]]:
    """A dashboard with an access token, no worker."""
    dash = Dashboard(
        ECSWorkflowEngine(store=store, load_plugins=False), token=TOKEN, kafka_brokers=""
    )
    app = create_app(dash, secret_key="the-app-secret")
    try:
        yield app, dash
    finally:
        dash.stop()


def _login(client: Any, token: str = TOKEN) -> Any:
    page = client.get("/login").get_data(as_text=True)
    csrf = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    return client.post("/login", data={"csrf_token": csrf, "token": token, "next": "/"})


def _session(app: Any, client: Any) -> dict[str, Any]:
    """The session cookie's content, as anyone holding a copy can read it."""
    cookie = client.get_cookie("wfe_session")
    assert cookie is not None
    data: dict[str, Any] = app.session_interface.get_signing_serializer(app).loads(cookie.value)
    return data


def test_the_login_cookie_holds_nothing_to_guess_the_token_from(store: str) -> None:
    marks = []
    for secret in ("secret-one", "secret-two"):
        dash = Dashboard(
            ECSWorkflowEngine(store=store, load_plugins=False), token=TOKEN, kafka_brokers=""
        )
        app = create_app(dash, secret_key=secret)
        try:
            client = app.test_client()
            assert _login(client).status_code == 303
            assert client.get("/").status_code == 200
            saved = _session(app, client)
            marks.append(saved["wfe_auth"])
        finally:
            dash.stop()
    # Not a bare hash of the token (which a copied cookie would let anyone test
    # guesses against), but one the app's secret key goes into.
    for plain in (TOKEN, "wfe-ui:" + TOKEN):
        assert hashlib.sha256(plain.encode()).hexdigest() not in marks
    assert TOKEN not in marks[0]
    assert marks[0] != marks[1]


def test_wrong_tokens_shut_the_address_out_for_a_while(guarded: tuple[Any, Dashboard]) -> None:
    app, dash = guarded
    now = [1000.0]
    dash.backoff.clock = lambda: now[0]
    client = app.test_client()
    wrong = {"Authorization": "Bearer not-the-token"}
    right = {"Authorization": f"Bearer {TOKEN}"}
    # A person mistyping a few times is not slowed down.
    for _ in range(dash.backoff.free + 1):
        assert client.get("/api/tasks", headers=wrong).status_code == 401
    # One too many: this address is shut out, even with the right token.
    shut = client.get("/api/tasks", headers=right)
    assert shut.status_code == 429
    assert shut.headers["Retry-After"] == "5"
    assert shut.get_json()["error"] == (
        "too many wrong access tokens from this address; try again in 5 s"
    )
    # ... on the login page too, and through a link's ?token=.
    login = _login(client)
    assert login.status_code == 429
    assert "Too many wrong access tokens from this address" in login.get_data(as_text=True)
    assert client.get(f"/api/tasks?token={TOKEN}").status_code == 429
    # Another address is not.
    other = client.get("/api/tasks", headers=right, environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert other.status_code == 200
    # Once the time is up the right token works; another wrong one shuts it out longer.
    now[0] += 5.5
    assert client.get("/api/tasks", headers=right).status_code == 200
    assert client.get("/api/tasks", headers=wrong).status_code == 401
    assert client.get("/api/tasks", headers=right).headers["Retry-After"] == "10"


def test_a_short_token_is_warned_about(store: str, caplog: pytest.LogCaptureFixture) -> None:
    engine = ECSWorkflowEngine(store=store, load_plugins=False)
    with caplog.at_level(logging.WARNING, logger="wfe_flaskui"):
        Dashboard(engine, token="s3cret tok", kafka_brokers="")
    assert "the access token (WFE_UI_TOKEN) is only 10 characters long; use 16 or more" in (
        caplog.text
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="wfe_flaskui"):
        Dashboard(engine, token=TOKEN, kafka_brokers="")
        Dashboard(engine, token="", kafka_brokers="")
    assert "WFE_UI_TOKEN" not in caplog.text


def test_the_session_cookie_is_secure_when_told_browsers_use_https(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def cookie(**kwargs: Any) -> str:
        dash = Dashboard(
            ECSWorkflowEngine(store=store, load_plugins=False), token=TOKEN, kafka_brokers=""
        )
        app = create_app(dash, secret_key="s", **kwargs)
        try:
            response = _login(app.test_client())
            return ";".join(response.headers.getlist("Set-Cookie"))
        finally:
            dash.stop()

    monkeypatch.delenv("WFE_UI_HTTPS", raising=False)
    assert "Secure" not in cookie()
    assert "; Secure" in cookie(https=True)
    monkeypatch.setenv("WFE_UI_HTTPS", "1")
    assert "; Secure" in cookie()
    monkeypatch.setenv("WFE_UI_HTTPS", "maybe")
    with pytest.raises(Exception, match="WFE_UI_HTTPS must be 1 or 0"):
        cookie()


def test_a_token_in_an_api_url_is_answered_in_json(guarded: tuple[Any, Dashboard]) -> None:
    app, _ = guarded
    client = app.test_client()
    good = client.get(f"/api/tasks?token={TOKEN}")
    assert good.status_code == 200
    assert good.get_json()["tasks"] == []
    assert client.get_cookie("wfe_session") is None  # no login kept for an API call
    bad = client.get("/api/tasks?token=wrong")
    assert bad.status_code == 401
    assert bad.get_json() == {"error": "the access token is not valid"}
    # A browser's link still logs it in and drops the token from the address.
    page = client.get(f"/inbox?token={TOKEN}")
    assert page.status_code == 302 and page.headers["Location"] == "/inbox"


def test_an_app_without_a_secret_key_gets_one_clear_error(
    store: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = Flask("no_secret")
    dash = Dashboard(ECSWorkflowEngine(store=store, load_plugins=False), kafka_brokers="")
    app.register_blueprint(dash.blueprint, url_prefix="/workflows")
    client = app.test_client()
    try:
        with caplog.at_level(logging.ERROR):
            page = client.get("/workflows/")
            api = client.get("/workflows/api/tasks")
            client.get("/workflows/inbox")
        assert page.status_code == 500 and page.mimetype == "text/plain"
        assert "has no secret key" in page.get_data(as_text=True)
        assert "set app.secret_key" in page.get_data(as_text=True)
        assert api.status_code == 500 and "has no secret key" in api.get_json()["error"]
        logged = [r for r in caplog.records if "has no secret key" in r.getMessage()]
        assert len(logged) == 1 and logged[0].exc_info is None
        assert "Traceback" not in caplog.text
    finally:
        dash.stop()


def test_define_workflow_is_refused_unless_the_dashboard_allows_it(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WFE_UI_ALLOW_DEFINE", raising=False)
    spec = {"name": "made_up", "phases": [{"target_classification": "x"}]}
    engine = make_engine()  # workflows to offer, so that the submit page has its form
    engine.use_store(store)
    dash = Dashboard(engine, token="", kafka_brokers="")
    api = Api(create_app(dash, secret_key="s").test_client())
    try:
        refused = api.post("/api/tasks", {"classification": "define_workflow", "data": spec})
        assert refused.status_code == 403
        assert refused.get_json()["error"].startswith(
            "this dashboard does not take define_workflow tasks"
        )
        assert "--allow-define" in refused.get_json()["error"]
        assert api.get("/api/tasks").get_json()["total"] == 0

        hidden = dict(submit_form_hidden(api.get("/submit").get_data(as_text=True)))
        posted = api.client.post(
            "/submit",
            data={**hidden, "workflow": "", "classification": "define_workflow", "data": "{}"},
        )
        assert posted.status_code == 403
        assert "does not take define_workflow tasks" in posted.get_data(as_text=True)
    finally:
        dash.stop()

    monkeypatch.setenv("WFE_UI_ALLOW_DEFINE", "1")
    dash = Dashboard(ECSWorkflowEngine(store=store, load_plugins=False), token="", kafka_brokers="")
    api = Api(create_app(dash, secret_key="s").test_client())
    try:
        api.define(spec)  # taken
    finally:
        dash.stop()


def test_a_mounted_dashboard_running_a_worker_starts_it_when_registered(store: str) -> None:
    """No one opens the dashboard: its worker runs the app's tasks all the same."""
    engine = make_engine()
    engine.use_store(store)
    app = Flask("mounted")
    app.secret_key = "mounted-secret"
    dash = Dashboard(engine, run_worker=True, kafka_brokers="")
    try:
        app.register_blueprint(dash.blueprint, url_prefix="/workflows")
        assert dash.bridge.worker_running

        async def submit() -> str:
            other = ECSWorkflowEngine(store=store, load_plugins=False)
            try:
                return (await other.submit_task({"n": 4}, "numbers")).id
            finally:
                await other.aclose()

        async def status(task_id: str) -> TaskStatus | None:
            other = ECSWorkflowEngine(store=store, load_plugins=False)
            try:
                found = await other.get_task(task_id)
                return None if found is None else found.status
            finally:
                await other.aclose()

        task_id = asyncio.run(submit())
        wait_for(
            lambda: asyncio.run(status(task_id)) is TaskStatus.COMPLETED,
            20,
            "the mounted dashboard's worker to run the task",
        )
    finally:
        dash.stop()


def test_addresses_in_instructions_are_links_and_nothing_else_is_markup(store: str) -> None:
    engine = ECSWorkflowEngine(store=store, load_plugins=False)
    engine.register_workflow(
        "read_first",
        [
            Phase(
                "read",
                assigned_to="human",
                instructions=(
                    "Read https://example.org/spec?a=1&b=2 first "
                    "(or http://wiki.example/Foo_(bar)). "
                    'Not links: javascript:alert(1), <b>bold</b>, https://x.example/"onclick=alert(1)'
                ),
            )
        ],
    )
    dash = Dashboard(engine, run_worker=True, token="", kafka_brokers="")
    api = Api(create_app(dash, secret_key="s").test_client())
    try:
        task = api.submit("read_first", {})
        api.wait_status(task["id"], "waiting_human")
        for url in (f"/tasks/{task['id']}", "/inbox"):
            page = api.get(url).get_data(as_text=True)
            links = re.findall(r'<a href="([^"]*)" rel="noopener noreferrer nofollow"', page)
            assert links == [
                "https://example.org/spec?a=1&amp;b=2",
                "http://wiki.example/Foo_(bar)",
                "https://x.example/",
            ]
            assert "&lt;b&gt;bold&lt;/b&gt;" in page
            assert "javascript:alert(1)," in page and 'href="javascript' not in page
            assert "&#34;onclick=alert(1)" in page
    finally:
        dash.stop()

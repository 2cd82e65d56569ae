"""Who answered, cancelled or retried: the person behind a request, named by an
authenticating proxy's header (``user_header``) or by the app that mounts the dashboard
(``user=``), recorded as ``by`` in the task's history and shown on its page."""

from __future__ import annotations

import html
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, request, session
from flaskui_helpers import AnswerFormReader, Api, http_request, serving
from test_flaskui_cli import Http, _env, refused_start, running
from werkzeug.datastructures import MultiDict
from wfe_flaskui import Dashboard, create_app

from wfcore import ECSWorkflowEngine, WorkflowError

HEADER = "X-Forwarded-User"
#: How Werkzeug's test client sends the header (WSGI environ key).
ENVIRON_KEY = "HTTP_X_FORWARDED_USER"


@pytest.fixture(autouse=True)
def _no_user_header_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WFE_UI_USER_HEADER", raising=False)


@pytest.fixture
def proxied(demo_engine: ECSWorkflowEngine) -> Iterator[Any]:
    """The dashboard behind an authenticating proxy that names the user in X-Forwarded-User
    (its own worker running the demo workflows)."""
    dash = Dashboard(demo_engine, run_worker=True, token="", kafka_brokers="", user_header=HEADER)
    app = create_app(dash, secret_key="test-secret")
    try:
        yield app
    finally:
        dash.stop()


def _as(client: Any, name: str) -> None:
    """Send the client's next requests as the proxy would for ``name``."""
    client.environ_base[ENVIRON_KEY] = name


def _by(task: dict[str, Any], event: str) -> list[Any]:
    """Who is recorded for each ``event`` of the task's history (None: nobody)."""
    return [entry.get("by") for entry in task["history"] if entry["event"] == event]


def _form(page: str, **fields: str) -> MultiDict[str, str]:
    """The page's first answer form, filled in, as a browser would post it."""
    return MultiDict([*AnswerFormReader(page).hidden, *fields.items()])


def _csrf(page: str) -> str:
    return page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]


def _timeline_by(page: str) -> list[str]:
    """The names the task page's history shows after ``by``, in order."""
    return [html.unescape(name) for name in re.findall(r'class="ev-who" data-by="([^"]*)"', page)]


# -- a proxy's header ------------------------------------------------------------------


def test_the_api_records_the_proxys_user_on_resume_cancel_and_retry(proxied: Any) -> None:
    client = proxied.test_client()
    _as(client, "alice")
    api = Api(client)
    answered = api.submit("question", {"q": "refund order 17?"})
    api.wait_status(answered["id"], "waiting_human")
    resumed = api.post(f"/api/tasks/{answered['id']}/resume", {"output": "yes, refund it"})
    assert resumed.status_code == 200, resumed.text
    assert _by(resumed.get_json(), "resumed") == ["alice"]

    dropped = api.submit("question", {"q": "and order 18?"})
    api.wait_status(dropped["id"], "waiting_human")
    _as(client, "  bob  ")  # blanks around a name are not part of it
    assert api.post(f"/api/tasks/{dropped['id']}/cancel").status_code == 200
    _as(client, "carol")
    retried = api.post(f"/api/tasks/{dropped['id']}/retry")
    assert retried.status_code == 200, retried.text
    assert _by(retried.get_json(), "cancelled") == ["bob"]
    assert _by(retried.get_json(), "retried") == ["carol"]
    assert _by(api.task(answered["id"]), "resumed") == ["alice"]


def test_the_api_records_the_proxys_user_on_an_upload(proxied: Any) -> None:
    client = proxied.test_client()
    _as(client, "dora")
    api = Api(client)
    task = api.submit("question", {"q": "signed contract?"})
    api.wait_status(task["id"], "waiting_human")
    token = client.get("/api/csrf").get_json()["csrf_token"]
    sent = client.post(
        f"/api/tasks/{task['id']}/artifacts",
        data={"file": (io.BytesIO(b"%PDF signed"), "signed.pdf")},
        headers={"X-CSRF-Token": token},
        content_type="multipart/form-data",
    )
    assert sent.status_code == 201, sent.text
    assert _by(sent.get_json(), "artifact_added") == ["dora"]


def test_a_priority_change_records_the_proxys_user(proxied: Any) -> None:
    client = proxied.test_client()
    _as(client, "erin")
    api = Api(client)
    task = api.submit("question", {"q": "urgent?"})
    api.wait_status(task["id"], "waiting_human")
    changed = api.post(f"/api/tasks/{task['id']}/priority", {"priority": 100})
    assert changed.status_code == 200, changed.text
    _as(client, "frank")
    form = {"csrf_token": api.csrf, "priority": "-5"}
    assert client.post(f"/tasks/{task['id']}/priority", data=form).status_code == 303
    assert _by(api.task(task["id"]), "priority_changed") == ["erin", "frank"]
    assert _timeline_by(api.get(f"/tasks/{task['id']}").text) == ["erin", "frank"]


@pytest.mark.parametrize("sent", [None, "", "   "], ids=["absent", "empty", "blank"])
def test_a_request_without_the_proxys_header_is_refused(proxied: Any, sent: str | None) -> None:
    client = proxied.test_client()
    if sent is not None:
        _as(client, sent)
    for path in ("/", "/inbox", "/login"):
        page = client.get(path)
        assert page.status_code == 401, path
        text = html.unescape(page.text)
        assert "expects the authenticating proxy in front of it to say who you are" in text
        assert f"in the {HEADER} header, and this request has none" in text
        assert "it did not come through the proxy" in text
        assert 'id="wfe-user"' not in page.text
    answer = client.get("/api/tasks")
    assert answer.status_code == 401
    assert "it did not come through the proxy" in answer.get_json()["error"]
    # Static files carry nothing of the store, and the error page needs its CSS.
    assert client.get("/_wfe_static/dashboard.css").status_code == 200


@pytest.mark.parametrize(
    "name, shown",
    [("x" * 201, f"{'x' * 60!r}... (201 characters)"), ("ann\tbell", "'ann\\tbell'")],
    ids=["too-long", "tab"],
)
def test_a_name_the_engine_cannot_record_is_refused_clearly(
    proxied: Any, name: str, shown: str
) -> None:
    client = proxied.test_client()
    _as(client, name)
    expected = (
        f"the {HEADER} header is {shown}, not a name the dashboard can record as who "
        "acted (1 to 200 printable characters)"
    )
    page = client.get("/")
    assert page.status_code == 401
    assert expected in html.unescape(page.text)
    answer = client.get("/api/tasks")
    assert answer.status_code == 401
    assert answer.get_json() == {"error": expected}


def test_pages_show_the_user_and_record_their_answers_cancels_and_retries(
    proxied: Any,
) -> None:
    client = proxied.test_client()
    _as(client, "alice")
    api = Api(client)
    task = api.submit("sign_off", {"contract": "c-17"})
    api.wait_status(task["id"], "waiting_human")
    page = client.get(f"/tasks/{task['id']}").text
    assert re.search(
        r'<span class="user" id="wfe-user" title="signed in as alice[^"]*">alice<', page
    )
    # Erin opens the same question, then answers it after Alice did.
    _as(client, "erin")
    late = client.get(f"/tasks/{task['id']}").text
    _as(client, "alice")
    sent = client.post(
        f"/tasks/{task['id']}/answer", data=_form(page, **{"field.approved": "true"})
    )
    assert sent.status_code == 303

    _as(client, "bob")
    api.wait_status(task["id"], "waiting_human")
    inbox = client.get("/inbox").text.split(f'data-task-id="{task["id"]}"', 1)[1]
    sent = client.post(
        f"/tasks/{task['id']}/answer",
        data=_form(inbox, **{"field.approved": "true"}),
    )
    assert sent.status_code == 303
    done = api.wait_status(task["id"], "completed")
    assert _by(done, "resumed") == ["alice", "bob"]

    _as(client, "erin")
    refused = client.post(
        f"/tasks/{task['id']}/answer", data=_form(late, **{"field.note": "erin says no"})
    )
    assert refused.status_code == 409
    assert "is completed now (answered by alice); your answer was not recorded" in html.unescape(
        refused.text
    )

    other = api.submit("question", {"q": "ship it?"})
    api.wait_status(other["id"], "waiting_human")
    _as(client, "carol")
    page = client.get(f"/tasks/{other['id']}").text
    assert (
        client.post(f"/tasks/{other['id']}/cancel", data={"csrf_token": _csrf(page)}).status_code
        == 303
    )
    _as(client, "dave")
    page = client.get(f"/tasks/{other['id']}").text
    assert (
        client.post(f"/tasks/{other['id']}/retry", data={"csrf_token": _csrf(page)}).status_code
        == 303
    )
    shown = client.get(f"/tasks/{other['id']}").text
    assert _timeline_by(shown) == ["carol", "dave"]
    assert ">by carol<" in shown and ">by dave<" in shown
    assert _timeline_by(client.get(f"/tasks/{task['id']}").text) == ["alice", "bob"]


def test_a_moved_on_refusal_names_who_answered(proxied: Any) -> None:
    client = proxied.test_client()
    _as(client, "alice")
    api = Api(client)
    task = api.submit("sign_off", {"contract": "c-18"})
    api.wait_status(task["id"], "waiting_human")
    page = client.get(f"/tasks/{task['id']}").text
    client.post(f"/tasks/{task['id']}/answer", data=_form(page, **{"field.approved": "true"}))
    api.wait_status(task["id"], "waiting_human")  # now in phase finance
    _as(client, "bob")
    again = client.post(f"/tasks/{task['id']}/answer", data=_form(page, **{"field.note": "no"}))
    assert again.status_code == 409
    assert (
        "has moved on from phase 'legal' to 'finance' (waiting: person) since you opened it, "
        "answered by alice; your answer was not recorded"
    ) in html.unescape(again.text)


def test_a_name_in_utf8_from_the_proxy_is_read_as_utf8(proxied: Any) -> None:
    # Over real HTTP: the header's bytes are UTF-8, as a proxy sends them.
    with serving(proxied) as port:
        status, _, body = http_request(
            port,
            "GET",
            "/inbox",
            headers={HEADER: "José Müller".encode()},
        )
    assert status == 200
    assert '<span class="user" id="wfe-user"' in body.decode()
    assert ">José Müller</span>" in body.decode()


# -- the app's own login -----------------------------------------------------------------


@pytest.fixture
def own_app(demo_engine: ECSWorkflowEngine) -> Iterator[Flask]:
    """An app with its own login (a name in its session) that mounts the dashboard."""
    app = Flask(__name__)
    app.secret_key = "the-apps-secret"

    @app.post("/sign-in")
    def sign_in() -> str:
        session["me"] = json.loads(request.form["name"])
        return "signed in"

    dash = Dashboard(
        demo_engine,
        run_worker=True,
        token="",
        kafka_brokers="",
        user=lambda: session.get("me"),
    )
    app.register_blueprint(dash.blueprint, url_prefix="/wf")
    try:
        yield app
    finally:
        dash.stop()


def test_the_apps_user_function_names_who_answered(own_app: Flask) -> None:
    client = own_app.test_client()
    api = Api(client, "/wf")
    # Nobody signed in: the function says None, and nobody is named.
    first = api.submit("question", {"q": 1})
    api.wait_status(first["id"], "waiting_human")
    assert 'id="wfe-user"' not in api.get("/").text
    assert api.post(f"/api/tasks/{first['id']}/resume", {"output": "ok"}).status_code == 200
    assert _by(api.task(first["id"]), "resumed") == [None]
    assert 'data-by="' not in api.get(f"/tasks/{first['id']}").text

    client.post("/sign-in", data={"name": json.dumps("Dana Scully")})
    second = api.submit("question", {"q": 2})
    api.wait_status(second["id"], "waiting_human")
    page = api.get(f"/tasks/{second['id']}").text
    assert ">Dana Scully</span>" in page
    sent = client.post(f"/wf/tasks/{second['id']}/answer", data=_form(page, answer="yes"))
    assert sent.status_code == 303
    assert _by(api.task(second["id"]), "resumed") == ["Dana Scully"]
    assert _timeline_by(api.get(f"/tasks/{second['id']}").text) == ["Dana Scully"]


@pytest.mark.parametrize(
    "name, shown",
    [("dana\nscully", "'dana\\nscully'"), (7, "7"), ("", "''")],
    ids=["newline", "number", "empty"],
)
def test_a_name_the_user_function_gives_that_cannot_be_recorded_is_refused(
    own_app: Flask, name: Any, shown: str
) -> None:
    client = own_app.test_client()
    api = Api(client, "/wf")
    task = api.submit("question", {"q": 3})
    api.wait_status(task["id"], "waiting_human")
    client.post("/sign-in", data={"name": json.dumps(name)})
    expected = (
        f"what the dashboard's user function returned is {shown}, not a name the "
        "dashboard can record as who acted (1 to 200 printable characters)"
    )
    page = client.get(f"/wf/tasks/{task['id']}")
    assert page.status_code == 401
    assert expected in html.unescape(page.text)
    refused = api.post(f"/api/tasks/{task['id']}/resume", {"output": "yes"})
    assert refused.status_code == 401
    assert refused.get_json() == {"error": expected}
    client.post("/sign-in", data={"name": json.dumps(None)})
    assert api.task(task["id"])["status"] == "waiting_human"


# -- settings ------------------------------------------------------------------------------


def test_bad_settings_are_refused_naming_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = ECSWorkflowEngine(store=f"sqlite:///{tmp_path / 'wfe.db'}", load_plugins=False)
    with pytest.raises(ValueError, match="user_header must name an HTTP header, such as"):
        Dashboard(engine, user_header="X Forwarded User")
    # Behind basic auth, Authorization holds each person's password: recorded as who
    # acted, it would be on every task page.
    with pytest.raises(ValueError) as refused:
        Dashboard(engine, user_header="authorization")
    assert str(refused.value) == (
        "user_header cannot be authorization: it carries credentials, which would be "
        "recorded as who acted in the history of every task they change. Give the header "
        "your authenticating proxy sets to each person's name, such as X-Forwarded-User"
    )
    with pytest.raises(ValueError, match="user_header cannot be Host: every client sets it"):
        Dashboard(engine, user_header="Host")
    with pytest.raises(ValueError, match="user= or user_header, not both"):
        Dashboard(engine, user=lambda: None, user_header=HEADER)
    with pytest.raises(TypeError, match="user must be a function of no arguments"):
        Dashboard(engine, user="alice")  # type: ignore[arg-type]
    monkeypatch.setenv("WFE_UI_USER_HEADER", "X-Forwarded-User:")
    with pytest.raises(WorkflowError, match="WFE_UI_USER_HEADER must name an HTTP header"):
        Dashboard(engine)
    monkeypatch.setenv("WFE_UI_USER_HEADER", "Cookie")
    with pytest.raises(WorkflowError, match="WFE_UI_USER_HEADER cannot be Cookie: it carries"):
        Dashboard(engine)
    monkeypatch.setenv("WFE_UI_USER_HEADER", f" {HEADER} ")
    assert Dashboard(engine).user_header == HEADER
    assert Dashboard(engine, user_header="").user_header == ""
    with pytest.raises(ValueError, match="user= or WFE_UI_USER_HEADER, not both"):
        Dashboard(engine, user=lambda: None)


def test_wfe_ui_user_header(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'wfe.db'}"
    bad = refused_start(["--port", "0", "--user-header", "X User"])
    assert bad.returncode == 2
    assert "Invalid value for '--user-header'" in bad.stderr
    assert "must name an HTTP header, such as X-Forwarded-User, not 'X User'" in bad.stderr

    output: list[str] = []
    args = ["--port", "0", "--store", store, "--user-header", HEADER]
    with running(args, _env(), output) as (_, url):
        listening = next(line for line in output if line.startswith("wfe dashboard on "))
        assert listening.rstrip().endswith(
            f"(store {store}; no worker in this process; who you are from the {HEADER} header)"
        )
        status, answer = Http(url).request("GET", "/api/tasks")
        assert status == 401 and "did not come through the proxy" in answer["error"]
        status, page = Http(url, {HEADER: "alice"}).request("GET", "/")
        assert status == 200 and ">alice</span>" in page

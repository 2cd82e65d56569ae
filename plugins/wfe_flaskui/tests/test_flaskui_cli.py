"""``python -m wfe_flaskui`` and ``wfe ui`` as real subprocesses serving real HTTP, and an app
that mounts the dashboard run to its end."""

from __future__ import annotations

import hashlib
import http.cookiejar
import importlib.util
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import pytest
from flaskui_helpers import TESTS, stop_process, wait_for
from wfe_flaskui import plugin


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WFE_UI_TOKEN", "KAFKA_BROKERS")}
    env.update(WFE_LOAD_PLUGINS="", PYTHONUNBUFFERED="1", **extra)
    return env


def refused_start(
    args: list[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m wfe_flaskui ARGS` (in ``env``, else :func:`_env`), expected to stop
    before it serves: its exit status and output."""
    return subprocess.run(
        [sys.executable, "-m", "wfe_flaskui", *args],
        cwd=TESTS,
        env=_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@contextmanager
def running(
    args: list[str],
    env: dict[str, str],
    output: list[str] | None = None,
    command: tuple[str, ...] = ("wfe_flaskui",),
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Start the dashboard; yield the process and its base URL; stop it with SIGTERM.

    ``output`` collects every line it prints, as it prints them: those up to the
    one saying where it listens when this yields, all of them once the block ends.
    ``command`` is the module to run and its arguments before ``args``:
    ``("wfcore.cli", "ui")`` is `wfe ui`.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", *command, *args],
        cwd=TESTS,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen: list[str] = [] if output is None else output

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    def announced() -> str | None:
        for line in list(seen):
            found = re.search(r"wfe dashboard on (http://\S+?)/ ", line)
            if found:
                return found[1]
        if proc.poll() is not None:
            reader.join(10)
            raise AssertionError(f"the dashboard exited early: {''.join(seen)}")
        return None

    try:
        url = wait_for(announced, 30, "the dashboard to announce its address")
        yield proc, url
    finally:
        if proc.poll() is None:
            stop_process(proc, 20)
        reader.join(10)


class Http:
    """A tiny HTTP client that keeps cookies, like a browser session."""

    def __init__(self, base: str, headers: dict[str, str] | None = None) -> None:
        self.base = base
        self.headers = headers or {}
        jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        self._csrf: str | None = None

    def csrf_header(self) -> dict[str, str]:
        """The header a change needs: this session's CSRF token (GET /api/csrf, once)."""
        if self._csrf is None:
            status, body = self.request("GET", "/api/csrf")
            assert status == 200, body
            self._csrf = body["csrf_token"]
        return {"X-CSRF-Token": self._csrf}

    def submit(self, workflow: str, data: Any) -> dict[str, Any]:
        """POST /api/tasks as a client on this machine does (with the CSRF token): the
        new task, which must be taken (201)."""
        body = {"workflow": workflow, "data": data}
        status, task = self.request("POST", "/api/tasks", body, **self.csrf_header())
        assert status == 201, task
        return task

    def request(self, method: str, path: str, body: Any = None, **headers: str) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json", **self.headers, **headers},
        )
        try:
            with self.opener.open(req, timeout=10) as response:
                raw = response.read()
                status = response.status
        except urllib.error.HTTPError as exc:
            raw, status = exc.read(), exc.code
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode("utf-8", "replace")

    def multipart(
        self,
        path: str,
        fields: dict[str, str],
        files: dict[str, tuple[str, bytes]],
        **headers: str,
    ) -> tuple[int, Any, dict[str, str]]:
        """POST multipart/form-data as a browser sends a form with a file input: the
        status, the body (JSON when it is) and the headers, redirects not followed."""
        boundary = uuid.uuid4().hex
        body = b""
        for name, value in fields.items():
            body += (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
            ).encode()
        for name, (filename, data) in files.items():
            body += (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
            ).encode()
            body += data + b"\r\n"
        body += f"--{boundary}--\r\n".encode()
        req = urllib.request.Request(
            self.base + path,
            data=body,
            method="POST",
            headers={
                **self.headers,
                "Content-Type": f"multipart/form-data; boundary={boundary}",
                **headers,
            },
        )

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args: Any, **kwargs: Any) -> None:
                return None

        cookies = [
            h for h in self.opener.handlers if isinstance(h, urllib.request.HTTPCookieProcessor)
        ]
        opener = urllib.request.build_opener(NoRedirect, *cookies)
        try:
            with opener.open(req, timeout=10) as response:
                raw, status, got = response.read(), response.status, dict(response.headers)
        except urllib.error.HTTPError as exc:
            raw, status, got = exc.read(), exc.code, dict(exc.headers)
        try:
            return status, json.loads(raw), got
        except ValueError:
            return status, raw.decode("utf-8", "replace"), got


def test_one_process_dashboard_with_its_own_worker(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'wfe.db'}"
    args = ["--port", "0", "--worker", "flaskui_demo_app:make_engine", "--store", store]
    with running(args, _env()) as (proc, url):
        assert url.startswith("http://127.0.0.1:")
        client = Http(url)
        status, page = client.request("GET", "/")
        assert status == 200 and "<h1>Tasks</h1>" in page
        task = client.submit("numbers", {"n": 8})
        done = wait_for(
            lambda: (
                (doc := client.request("GET", f"/api/tasks/{task['id']}")[1])["status"]
                == "completed"
                and doc
            ),
            what="the task to complete",
        )
        assert done["output"] == "reported 16"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    assert (tmp_path / "wfe.db").exists()


@pytest.mark.parametrize("token", [None, "", " ", "\t \n"])
def test_refuses_a_public_address_without_a_token(token: str | None) -> None:
    # A token of spaces is no token: nobody would be asked for anything real.
    args = ["--host", "0.0.0.0", "--port", "0"]
    result = refused_start(args, None if token is None else _env(WFE_UI_TOKEN=token))
    assert result.returncode == 2
    assert "refusing to listen on 0.0.0.0" in result.stderr
    assert "WFE_UI_TOKEN" in result.stderr


def test_an_empty_host_is_refused_as_every_address() -> None:
    """It said "refusing to listen on : other machines ...", naming nothing."""
    result = refused_start(["--host", "", "--port", "0"])
    assert result.returncode == 2
    assert (
        "refusing to listen on '' (every address of this machine): other machines could "
        "reach the dashboard" in result.stderr
    )


def _ipv6_loopback() -> bool:
    """Whether this machine can listen on ::1 (a container may have no IPv6)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_an_ipv6_address_may_be_given_as_urls_write_it(tmp_path: Path) -> None:
    """`--host [::1]`, as in http://[::1]:5000/, listens on ::1 (a socket takes no
    brackets: it was 'Name or service not known', and nothing else)."""
    if not _ipv6_loopback():
        pytest.skip("this machine cannot listen on the IPv6 loopback address ::1")
    args = ["--host", "[::1]", "--port", "0", "--store", f"sqlite:///{tmp_path / 'wfe.db'}"]
    with running(args, _env()) as (_, url):
        assert url.startswith("http://[::1]:"), url
        status, body = Http(url).request("GET", "/api/tasks")
        assert (status, body["total"]) == (200, 0)


def test_an_empty_or_blank_store_is_refused_as_by_every_wfe_command(tmp_path: Path) -> None:
    """`wfe ui --store ""` served the default store; `wfe --store "" ui` and a blank
    WFE_STORE were reported as the plugin's crash (a ValueError), exit status 1."""
    empty = (
        "Error: --store is empty (an unset variable?): give a store URL, or leave --store "
        "out for WFE_STORE or the default\n"
    )
    blank = "Error: WFE_STORE is blank: give a store URL, or unset it\n"
    cases = [
        (("wfcore.cli", "ui", "--store", ""), {}, empty),
        (("wfcore.cli", "--store", "", "ui"), {}, empty),
        (("wfcore.cli", "ui"), {"WFE_STORE": "  "}, blank),
        (("wfe_flaskui", "--store", " "), {}, empty),
        (("wfe_flaskui",), {"WFE_STORE": " \t"}, blank),
    ]
    for command, env, said in cases:
        # Every installed plugin, the dashboard among them, for `wfe ui`.
        plugins = {k: v for k, v in _env(**env).items() if k != "WFE_LOAD_PLUGINS"}
        result = subprocess.run(
            [sys.executable, "-m", *command, "--port", "0"],
            cwd=tmp_path,
            env=plugins,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2, (command, result.stderr)
        assert result.stderr.endswith(said), (command, result.stderr)
    assert list(tmp_path.iterdir()) == []  # no default store was made
    # Blanks around a URL are not part of it, as for the other commands.
    store = tmp_path / "wfe.db"
    output: list[str] = []
    with running(["--port", "0", "--store", f" sqlite:///{store}\t"], _env(), output):
        pass
    assert store.exists() and f"(store sqlite:///{store};" in "".join(output)


def test_a_store_that_does_not_exist_yet_is_noted(tmp_path: Path) -> None:
    """A mistyped --store would show an empty dashboard without a word; it is not
    refused, since a dashboard may start before the first worker."""
    missing = tmp_path / "typo.db"
    output: list[str] = []
    with running(["--port", "0", "--store", f"sqlite:///{missing}"], _env(), output):
        pass
    assert output[0] == (
        f"note: no store at {missing} yet; the dashboard made an empty one "
        "(check --store and WFE_STORE if your workers use another)\n"
    )
    output.clear()
    with running(["--port", "0", "--store", f"sqlite:///{missing}"], _env(), output):
        pass
    assert output[0].startswith("wfe dashboard on "), output


def test_wfe_ui_worker_creating_its_store_says_so_like_wfe_worker(tmp_path: Path) -> None:
    # Its own worker makes the store: no "no store ... yet" warning, the line
    # `wfe worker` prints for a store it created.
    new = tmp_path / "new.db"
    args = [
        "--port",
        "0",
        "--store",
        f"sqlite:///{new}",
        "--worker",
        "flaskui_demo_app:make_engine",
    ]
    output: list[str] = []
    with running(args, _env(), output):
        pass
    assert output[0] == f"wfe: created a new store at {new}\n"
    assert "no store" not in "".join(output)
    # The app whose callbacks run here is named, as with --app.
    assert output[1].endswith(
        f"(store sqlite:///{new}; running the worker of flaskui_demo_app:make_engine)\n"
    )
    assert new.exists()


def test_wfe_ui_prints_what_plugins_report_after_its_own_lines(tmp_path: Path) -> None:
    (tmp_path / "reporting_app.py").write_text(
        textwrap.dedent(
            """
            import sys

            from flaskui_demo_app import make_engine
            from wfcore import hookimpl


            @hookimpl
            def wfe_report_header(engine):
                return ["reporter: first line", "reporter: second line"]


            def make():
                return make_engine(plugins=[sys.modules[__name__]])
            """
        )
    )
    # Nothing listens on a port just released: Kafka is configured, not reachable.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        nowhere = f"127.0.0.1:{probe.getsockname()[1]}"
    env = _env(
        PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
        KAFKA_BROKERS=nowhere,
        WFE_KAFKA_TASKS_TOPIC="ui-tasks",
        WFE_KAFKA_RESULTS_TOPIC="ui-results",
        # The results reader's tries to reach it last 2 s, not wfe_kafka's 5 s:
        # each stop of the dashboard waits for the try under way.
        WFE_KAFKA_CLIENT_CONFIG=json.dumps({"consumer_config": {"bootstrap_timeout_ms": 2000}}),
    )
    store = f"sqlite:///{tmp_path / 'wfe.db'}"
    args = ["--port", "0", "--store", store, "--worker", "reporting_app:make"]
    output: list[str] = []
    with running(args, env, output):
        wait_for(lambda: len(output) >= 5, what="the plugins' lines")
    start = next(i for i, line in enumerate(output) if line.startswith("wfe dashboard on "))
    assert output[start + 1 : start + 4] == [
        "  dashboard: submitted tasks are published to Kafka topic ui-tasks at "
        f"{nowhere}; results are read from ui-results\n",
        "  reporter: first line\n",
        "  reporter: second line\n",
    ]
    # Without a worker the engine does not run here: what plugins would do for it
    # is not said.
    output.clear()
    with running(["--port", "0", "--store", store], env, output):
        pass
    assert not any("reporter:" in line for line in output), output


@pytest.mark.parametrize("worker", [False, True], ids=["dashboard", "with --worker"])
@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"KAFKA_BROKERS": "bad host:1"},
            "KAFKA_BROKERS: 'bad host:1' is not host:port",
        ),
        (
            {"KAFKA_BROKERS": "127.0.0.1:9092", "WFE_KAFKA_CLIENT_CONFIG": "{bad"},
            "WFE_KAFKA_CLIENT_CONFIG is not valid JSON: Expecting property name enclosed "
            "in double quotes: line 1 column 2 (char 1)",
        ),
        (
            {"KAFKA_BROKERS": "127.0.0.1:9092", "WFE_KAFKA_CLIENT_CONFIG": '{"nope": 1}'},
            "WFE_KAFKA_CLIENT_CONFIG: unknown kafka-python setting 'nope' (not a "
            "KafkaProducer or KafkaConsumer setting)",
        ),
    ],
    ids=["brokers", "client config JSON", "client config key"],
)
def test_kafka_settings_that_cannot_work_stop_wfe_ui_in_one_line(
    tmp_path: Path, settings: dict[str, str], message: str, worker: bool
) -> None:
    if importlib.util.find_spec("wfe_kafka") is None:
        pytest.skip("wfe_kafka is not installed")
    # An app whose engine loads the installed plugins, wfe_kafka's auto-wiring with them.
    (tmp_path / "kafka_app.py").write_text(
        "from wfcore import ECSWorkflowEngine\n\nengine = ECSWorkflowEngine()\n"
    )
    env = {k: v for k, v in _env(**settings).items() if k != "WFE_LOAD_PLUGINS"}
    store = tmp_path / "wfe.db"
    args = ["ui", "--port", "0", "--store", f"sqlite:///{store}"]
    result = subprocess.run(
        [sys.executable, "-m", "wfcore.cli", *args, *(["--worker", "kafka_app:engine"] * worker)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr == f"Error: Kafka settings cannot be used: {message}\n"
    assert not store.exists()  # nothing was started


def test_a_worker_that_refuses_to_start_stops_wfe_ui_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "refusing_app.py").write_text(
        textwrap.dedent(
            """
            import sys

            from flaskui_demo_app import make_engine
            from wfcore import PluginError, hookimpl


            @hookimpl
            def wfe_engine_started(engine):
                raise PluginError("the licence server is down")


            def make():
                return make_engine(plugins=[sys.modules[__name__]])
            """
        )
    )
    env = _env(PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    args = ["--port", "0", "--store", f"sqlite:///{tmp_path / 'wfe.db'}"]
    result = refused_start([*args, "--worker", "refusing_app:make"], env)
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines()[-1] == (
        "Error: the dashboard's worker stopped: plugin 'refusing_app': the licence server is down"
    )
    assert "Traceback" not in result.stderr


def test_an_app_that_cannot_be_loaded_is_named_by_the_worker_option() -> None:
    result = refused_start(["--worker", "nomod:engine"])
    assert result.returncode == 2
    assert "Error: Invalid value for '--worker': cannot import 'nomod'" in result.stderr
    assert "APP" not in result.stderr


def test_an_app_mounting_the_dashboard_closes_its_store_cleanly_at_exit(tmp_path: Path) -> None:
    """The dashboard stops as the interpreter exits, before Python shuts down the
    threads that closing the store needs: no traceback, the store closed (SQLite
    removes its -wal file when the last connection closes)."""
    script = tmp_path / "host_app.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys

            from flask import Flask
            from flaskui_demo_app import make_engine
            from wfe_flaskui import Dashboard, create_app

            folder = sys.argv[1]
            # Mounted in the app's own Flask app, as the README shows it ...
            host = Flask(__name__)
            host.secret_key = "change me"
            dashboard = Dashboard(store=f"sqlite:///{folder}/mounted.db", token="")
            host.register_blueprint(dashboard.blueprint, url_prefix="/workflows")
            print(host.test_client().get("/workflows/").status_code)
            # ... and standalone with a worker, a task run to completion.
            engine = make_engine()
            engine.use_store(f"sqlite:///{folder}/standalone.db")
            client = create_app(engine, run_worker=True, token="").test_client()
            csrf = client.get("/api/csrf").get_json()["csrf_token"]
            task = client.post(
                "/api/tasks",
                json={"workflow": "numbers", "data": {"n": 2}},
                headers={"X-CSRF-Token": csrf},
            ).get_json()
            done = client.get(f"/api/tasks/{task['id']}?wait=20").get_json()
            print(done["status"])
            """
        )
    )
    env = _env(PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    assert result.stderr == ""
    assert result.stdout.split() == ["200", "completed"]
    for name in ("mounted.db", "standalone.db"):
        assert (tmp_path / name).exists()
        assert not (tmp_path / f"{name}-wal").exists(), f"{name} was not closed"
    with sqlite3.connect(tmp_path / "standalone.db") as db:
        assert db.execute("SELECT count(*) FROM tasks").fetchone() == (1,)


def test_a_public_address_with_a_token_needs_it_on_every_request(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'wfe.db'}"
    token = "tok-123-of-sixteen"
    env = _env(WFE_UI_TOKEN=token, WFE_STORE=store)
    output: list[str] = []
    with running(["--host", "0.0.0.0", "--port", "0"], env, output) as (_, url):
        port = url.rsplit(":", 1)[1]
        local = f"http://127.0.0.1:{port}"
        assert Http(local).request("GET", "/api/tasks")[0] == 401
        assert Http(local, {"Authorization": "Bearer nope"}).request("GET", "/api/tasks")[0] == 401
        status, body = Http(local, {"Authorization": f"Bearer {token}"}).request(
            "GET", "/api/tasks"
        )
        assert status == 200 and body["total"] == 0
    printed = "".join(output)
    # Beyond this machine, TLS.
    assert "note: the session cookie is not marked Secure; set WFE_UI_HTTPS=1" in printed
    assert "characters long" not in printed
    output.clear()
    env = _env(WFE_UI_TOKEN="a-token-of-24-characters", WFE_STORE=store, WFE_UI_HTTPS="1")
    with running(["--host", "0.0.0.0", "--port", "0"], env, output):
        pass
    assert "WFE_UI_TOKEN" not in "".join(output) and "Secure" not in "".join(output)


def test_wfe_ui_refuses_a_short_token_beyond_this_machine(tmp_path: Path) -> None:
    """The backoff after wrong tokens counts per address: a few addresses guess a
    token of a few characters soon enough. On 127.0.0.1 only a warning."""
    store = f"sqlite:///{tmp_path / 'wfe.db'}"
    # `wfe ui` itself: the command wfcore's CLI gets from the installed plugin.
    env = {
        k: v for k, v in _env(WFE_UI_TOKEN=" fifteen-chars!!\n").items() if k != "WFE_LOAD_PLUGINS"
    }
    result = subprocess.run(
        [sys.executable, "-m", "wfcore.cli", "ui", "--host", "0.0.0.0", "--port", "0"],
        cwd=tmp_path,
        env={**env, "WFE_STORE": store},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert " ".join(result.stderr.split()).endswith(
        "Error: refusing to listen on 0.0.0.0 with an access token (WFE_UI_TOKEN) only 15 "
        "characters long: other machines could guess it. Use 16 or more random characters, "
        "such as: python -c 'import secrets; print(secrets.token_urlsafe(24))', or listen "
        "on 127.0.0.1."
    ), result.stderr
    assert "fifteen-chars" not in result.stderr
    assert not (tmp_path / "wfe.db").exists()  # nothing was started

    output: list[str] = []
    loopback = _env(WFE_UI_TOKEN="tok-123")
    with running(["--port", "0", "--store", store], loopback, output) as (_, url):
        status, body = Http(url, {"Authorization": "Bearer tok-123"}).request("GET", "/api/tasks")
        assert status == 200 and body["total"] == 0
    printed = "".join(output)
    assert "the access token (WFE_UI_TOKEN) is only 7 characters long; use 16 or more" in printed


def test_the_access_log_does_not_hold_the_access_token(tmp_path: Path) -> None:
    """Browsers are given ?token= links to log in, and API clients may use one; the
    log lines of `wfe ui --access-log` show token=*** instead."""
    token = "correct-horse-battery-staple-2"
    store = f"sqlite:///{tmp_path / 'wfe.db'}"
    # `wfe ui` itself: the command wfcore's CLI gets from the installed plugin.
    env = {k: v for k, v in _env(WFE_UI_TOKEN=token).items() if k != "WFE_LOAD_PLUGINS"}
    args = ["--port", "0", "--store", store, "--access-log"]
    output: list[str] = []
    with running(args, env, output, command=("wfcore.cli", "ui")) as (_, url):
        browser = Http(url)
        status, page = browser.request("GET", f"/?token={token}")  # the redirect followed
        assert status == 200 and "<h1>Tasks</h1>" in page
        api = Http(url)
        assert api.request("GET", f"/api/tasks?limit=5&token={token}")[0] == 200
        # As the dashboard reads the query: a name written %74oken is token too.
        assert api.request("GET", f"/api/tasks?%74oken={token}&limit=5")[0] == 200
        assert api.request("GET", "/api/tasks?token=almost-" + token[7:])[0] == 401
        # A request line the server cannot read is logged as it came.
        host, port = url.removeprefix("http://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as raw:
            raw.sendall(f"GET /?token={token} HTTP/1.1 extra\r\n\r\n".encode())
            answer = b""
            while chunk := raw.recv(4096):
                answer += chunk
            assert b"Error code: 400" in answer
    # Werkzeug colours some lines (ANSI escapes), which wfe's log lines would write
    # out as text (\x1b[32m): the lines have none.
    logged = "".join(output)
    assert "\x1b" not in logged and "\\x1b" not in logged, logged
    assert token not in logged and token[7:] not in logged, logged
    assert '"GET /?token=*** HTTP/1.1" 302' in logged, logged
    assert '"GET / HTTP/1.1" 200' in logged, logged
    assert '"GET /api/tasks?limit=5&token=*** HTTP/1.1" 200' in logged, logged
    assert '"GET /api/tasks?token=***&limit=5 HTTP/1.1" 200' in logged, logged
    assert '"GET /api/tasks?token=*** HTTP/1.1" 401' in logged, logged
    assert '"GET /?token=*** HTTP/1.1 extra" 400' in logged, logged


def test_a_file_is_uploaded_to_a_waiting_task_by_the_api_and_by_its_answer_form(
    tmp_path: Path,
) -> None:
    """POST /api/tasks/<id>/artifacts, and the file input of a waiting task's answer
    form, through `wfe ui` serving real HTTP with its own worker."""
    store = f"sqlite:///{tmp_path / 'wfe.db'}"
    args = ["--port", "0", "--store", store, "--worker", "flaskui_demo_app:make_engine"]
    with running(args, _env()) as (_, url):
        client = Http(url)
        with_csrf = client.csrf_header()

        def now(task_id: str, status: str) -> dict[str, Any]:
            def check() -> Any:
                doc = client.request("GET", f"/api/tasks/{task_id}")[1]
                return doc if doc["status"] == status else None

            return wait_for(check, 30, f"task {task_id} to be {status}")

        task = client.submit("question", {"q": "Is the contract signed?"})
        waiting = now(task["id"], "waiting_human")
        upload = f"/api/tasks/{task['id']}/artifacts"

        # The API: 201 and the task; the file under its own name, or the one given.
        signed = b"%PDF-1.4 signed"
        status, doc, headers = client.multipart(
            upload, {}, {"file": ("signed.pdf", signed)}, **with_csrf
        )
        assert status == 201, doc
        assert headers["Location"] == f"/tasks/{task['id']}/artifacts/signed.pdf"
        assert doc["id"] == task["id"] and doc["status"] == "waiting_human"
        assert doc["version"] == waiting["version"] + 1
        [artifact] = doc["artifacts"]
        assert artifact == {
            "name": "signed.pdf",
            "size": len(signed),
            "sha256": hashlib.sha256(signed).hexdigest(),
            "media_type": "application/pdf",
            "phase": "ask",
            "created_at": artifact["created_at"],
        }
        assert doc["history"][-1]["event"] == "artifact_added"
        assert client.request("GET", headers["Location"]) == (200, signed.decode())
        status, doc, _ = client.multipart(
            upload, {"name": "notes/today.txt"}, {"file": ("whatever.bin", b"note")}, **with_csrf
        )
        assert status == 201, doc
        assert [a["name"] for a in doc["artifacts"]] == ["signed.pdf", "notes/today.txt"]

        # What it refuses, with the codes of the other routes.
        a_file = {"file": ("x.txt", b"x")}
        refusals: list[tuple[str, dict[str, str], Any, dict[str, str], int, str]] = [
            (upload, {}, a_file, {}, 403, "needs the CSRF token"),
            (upload, {"file": "text"}, {}, with_csrf, 400, '"file" field holds text, not a file'),
            (upload, {"note": "x"}, {}, with_csrf, 400, 'in a field named "file"'),
            (upload, {"name": "../up.txt"}, a_file, with_csrf, 400, "'..' components"),
            ("/api/tasks/no-such-task/artifacts", {}, a_file, with_csrf, 404, "unknown task"),
            (upload, {}, {"file": ("big.bin", b"x" * 2**20)}, with_csrf, 413, "than 1.0 MiB"),
        ]
        for path, fields, files, extra, code, words in refusals:
            status, doc, _ = client.multipart(path, fields, files, **extra)
            assert status == code and words in doc["error"], (code, words, doc)
        gate = tmp_path / "gate"
        busy = client.submit("gated", {"gate": str(gate)})
        now(busy["id"], "in_progress")
        status, doc, _ = client.multipart(
            f"/api/tasks/{busy['id']}/artifacts", {}, a_file, **with_csrf
        )
        assert status == 409 and "is running" in doc["error"], doc
        gate.write_text("open")
        assert now(busy["id"], "completed")["artifacts"] == []

        # The answer form of its page: a file input, and how big a file may be.
        status, page = client.request("GET", f"/tasks/{task['id']}")
        assert status == 200
        assert 'enctype="multipart/form-data"' in page and 'name="file" type="file"' in page
        assert "Up to 1.0 MiB, the rest of the form included." in page
        version = now(task["id"], "waiting_human")["version"]
        answer = f"/tasks/{task['id']}/answer"
        form = {
            "csrf_token": with_csrf["X-CSRF-Token"],
            "phase": "ask",
            "version": str(version),
            "answer_format": "json",
        }
        reply = {"file": ("reply.txt", b"my reply")}
        # An answer that cannot be taken stores no file either.
        status, page, _ = client.multipart(answer, {**form, "answer": "{not json"}, reply)
        assert status == 400
        assert "reply.txt was not stored, as the answer was not taken: choose it again." in page
        status, page, headers = client.multipart(answer, {**form, "answer": '"yes"'}, reply)
        assert status == 303, page
        assert headers["Location"] == f"/tasks/{task['id']}"
        done = now(task["id"], "completed")
        assert done["output"] == "yes"
        assert [(a["name"], a["phase"], a["size"]) for a in done["artifacts"]] == [
            ("signed.pdf", "ask", len(signed)),
            ("notes/today.txt", "ask", 4),
            ("reply.txt", "ask", 8),
        ]
        # Stored before the answer, so the phases after it find the file.
        events = [(e["event"], e.get("name")) for e in done["history"]]
        assert events.index(("artifact_added", "reply.txt")) < events.index(("resumed", None))
        status, page = client.request("GET", f"/tasks/{task['id']}")
        assert "Answer recorded for task " in page
        assert "The file reply.txt was stored with it." in page
        # The form sent again with another answer: refused, and its file with it.
        again = {"file": ("again.txt", b"again")}
        status, page, _ = client.multipart(answer, {**form, "answer": '"no"'}, again)
        assert status == 409
        assert "your answer was not recorded. The file again.txt was not stored either." in page
        assert now(task["id"], "completed")["artifacts"] == done["artifacts"]


def test_a_memory_store_without_a_worker_is_refused() -> None:
    result = refused_start(["--port", "0", "--store", "memory://"])
    assert result.returncode == 2
    assert "Error: memory:// lives in this one process: no worker could reach it" in result.stderr
    assert "--worker MODULE:ATTR" in result.stderr


def test_wfe_ui_says_when_it_starts_stopping(tmp_path: Path) -> None:
    """As `wfe worker` does: a worker with a phase running may take a while."""
    store = f"sqlite:///{tmp_path / 'wfe.db'}"
    args = ["--port", "0", "--store", store, "--worker", "flaskui_demo_app:make_engine"]
    output: list[str] = []
    with running(args, _env(), output) as (proc, url):
        client = Http(url)
        task = client.submit("gated", {"gate": str(tmp_path / "never-opened")})
        wait_for(
            lambda: client.request("GET", f"/api/tasks/{task['id']}")[1]["status"] == "in_progress",
            what="the gated phase to run",
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    assert (
        "stopping the dashboard: 1 running phase(s) get up to 2s to finish, "
        "then go back to the store\n"
    ) in output
    output.clear()
    with running(["--port", "0", "--store", store], _env(), output):
        pass
    assert output[-1] == "stopping the dashboard\n"


#: An app as the README has it: a completion callback posting a webhook (here: a line
#: in a file, with the process it ran in) and a plugin with a cancelled hook.
CALLBACK_APP = """
import os
import sys

from wfcore import ECSWorkflowEngine, Phase, hookimpl


def _log(line):
    with open(os.environ["CALLBACK_LOG"], "a") as log:
        log.write(f"{line} pid={os.getpid()}\\n")


async def post_webhook(task):
    _log(f"completed {task.id}")


@hookimpl
def wfe_task_cancelled(task):
    _log(f"cancelled {task.id}")


def make():
    engine = ECSWorkflowEngine(
        load_plugins=False, plugins=[sys.modules[__name__]], poll_interval=0.05
    )
    engine.register_workflow("signoff", [Phase("approve", assigned_to="human")])
    engine.register_task_completed_hook(post_webhook)
    return engine
"""


def _wfe(tmp_path: Path, env: dict[str, str], *args: str) -> str:
    """Run a `wfe` command of the app's in its folder; what it prints."""
    result = subprocess.run(
        [sys.executable, "-m", "wfcore.cli", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _two_waiting_tasks(tmp_path: Path, client: Http, env: dict[str, str]) -> tuple[str, str]:
    """Submit two signoff tasks as the app would and let a real `wfe worker` of the
    app bring them to their question; their ids."""
    ids = [
        json.loads(
            _wfe(tmp_path, env, "submit", "signoff", "--app", "callback_app:make", "--json")
        )["id"]
        for _ in range(2)
    ]
    _wfe(tmp_path, env, "worker", "callback_app:make", "--until-idle", "--quiet")
    for task_id in ids:
        assert client.request("GET", f"/api/tasks/{task_id}")[1]["status"] == "waiting_human"
    return ids[0], ids[1]


def _answer_one_cancel_the_other(client: Http, answered: str, cancelled: str) -> None:
    csrf = client.csrf_header()
    answer = {"output": {"approved": True}}
    status, doc = client.request("POST", f"/api/tasks/{answered}/resume", answer, **csrf)
    assert (status, doc["status"]) == (200, "completed"), doc
    status, doc = client.request("POST", f"/api/tasks/{cancelled}/cancel", {}, **csrf)
    assert (status, doc["status"]) == (200, "cancelled"), doc


def test_wfe_ui_app_runs_the_apps_callbacks_for_what_is_done_in_the_dashboard(
    tmp_path: Path,
) -> None:
    """Beside `wfe worker` processes, a task finished by an answer or a cancel given in
    the dashboard finishes in the dashboard's process: with --app, the app's completion
    callback and its plugin's cancelled hook run there, once."""
    (tmp_path / "callback_app.py").write_text(CALLBACK_APP)
    log = tmp_path / "callbacks.log"
    store = f"sqlite:///{tmp_path / 'wfe.db'}"
    env = _env(
        CALLBACK_LOG=str(log),
        WFE_STORE=store,
        PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
    )
    output: list[str] = []
    with running(["--port", "0", "--app", "callback_app:make"], env, output) as (proc, url):
        client = Http(url)
        answered, cancelled = _two_waiting_tasks(tmp_path, client, env)
        _answer_one_cancel_the_other(client, answered, cancelled)
        dashboard_pid = proc.pid
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    assert log.read_text().splitlines() == [
        f"completed {answered} pid={dashboard_pid}",
        f"cancelled {cancelled} pid={dashboard_pid}",
    ]
    start = next(line for line in output if line.startswith("wfe dashboard on "))
    assert start.endswith(
        f"(store {store}; no worker in this process; the callbacks and hooks of "
        "callback_app:make run here)\n"
    )


def test_without_app_the_dashboard_runs_no_apps_callbacks(tmp_path: Path) -> None:
    """What --app is for: a dashboard without it has an engine of its own, with none of
    the app's callbacks, and no worker runs them later (the task is finished)."""
    (tmp_path / "callback_app.py").write_text(CALLBACK_APP)
    log = tmp_path / "callbacks.log"
    env = _env(
        CALLBACK_LOG=str(log),
        WFE_STORE=f"sqlite:///{tmp_path / 'wfe.db'}",
        PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
    )
    with running(["--port", "0"], env) as (_, url):
        client = Http(url)
        answered, cancelled = _two_waiting_tasks(tmp_path, client, env)
        _answer_one_cancel_the_other(client, answered, cancelled)
    _wfe(tmp_path, env, "worker", "callback_app:make", "--until-idle", "--quiet")
    assert not log.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--app", "flaskui_demo_app:make_engine", "--worker", "flaskui_demo_app:make_engine"],
            "Error: give --worker or --app, not both: --worker loads the app already",
        ),
        (
            ["--app", "flaskui_demo_app:make_engine", "--store", "memory://"],
            "Error: memory:// lives in this one process: no worker could reach it, so the "
            "dashboard would show an empty store for good. Give --worker MODULE:ATTR "
            "instead of --app to run the engine here too",
        ),
        (["--app", "nomod:engine"], "Error: Invalid value for '--app': cannot import 'nomod'"),
    ],
    ids=["with --worker", "memory://", "cannot be loaded"],
)
def test_wfe_ui_app_refusals(tmp_path: Path, args: list[str], message: str) -> None:
    result = refused_start(
        ["--port", "0", *args], _env(WFE_STORE=f"sqlite:///{tmp_path / 'wfe.db'}")
    )
    assert result.returncode == 2, result.stderr
    assert message in " ".join(result.stderr.split())
    assert not (tmp_path / "wfe.db").exists()  # nothing was started


def test_wfe_ui_is_a_command_of_the_wfe_cli() -> None:
    group = click.Group("wfe")
    plugin.wfe_register_commands(cli=group)
    assert "ui" in group.commands
    env = {k: v for k, v in _env().items() if k != "WFE_LOAD_PLUGINS"}
    result = subprocess.run(
        [sys.executable, "-m", "wfcore.cli", "ui", "--help"],
        cwd=TESTS,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    for option in ("--host", "--port", "--store", "--worker", "--app"):
        assert option in result.stdout
    assert "127.0.0.1" in result.stdout and "5000" in result.stdout
    # Why you want --app, where you look for it.
    assert "completion callbacks" in " ".join(result.stdout.split())


def test_wfe_ui_max_body_takes_larger_uploads(tmp_path: Path) -> None:
    """A 2 MB scan is over the 1 MiB default; --max-body (or WFE_UI_MAX_BODY) raises it."""
    store = f"sqlite:///{tmp_path / 'wfe.db'}"
    scan = b"%PDF" + b"x" * 2_000_000
    for extra, expected in (([], 413), (["--max-body", "3MiB"], 201)):
        args = ["--port", "0", "--store", store, "--worker", "flaskui_demo_app:make_engine"]
        with running([*args, *extra], _env()) as (_, url):
            client = Http(url)
            task = client.submit("question", {"q": "scan attached?"})
            status, doc, _ = client.multipart(
                f"/api/tasks/{task['id']}/artifacts",
                {},
                {"file": ("scan.pdf", scan)},
                **client.csrf_header(),
            )
            assert status == expected, doc
    bad = refused_start(["--max-body", "lots"])
    assert bad.returncode == 2
    assert "'lots' is not a size: give bytes, or a number with KiB, MiB or GiB" in bad.stderr
    assert "WFE_UI_MAX_BODY" not in bad.stderr
    # From the environment, the variable is named: the command line has no --max-body.
    bad = refused_start(["--port", "0"], _env(WFE_UI_MAX_BODY="lots"))
    assert bad.returncode == 2
    assert (
        "Invalid value for '--max-body': 'lots' is not a size: give bytes, or a number "
        "with KiB, MiB or GiB (from WFE_UI_MAX_BODY)"
    ) in bad.stderr


@pytest.mark.parametrize("command", [("wfcore.cli", "ui"), ("wfe_flaskui",)])
def test_ctrl_c_stops_the_dashboard_with_status_130(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    """Ctrl-C (SIGINT) stops `wfe ui` and `python -m wfe_flaskui` as it stops every
    wfe command: cleanly, with exit status 130 (SIGTERM's is 0)."""
    store = f"sqlite:///{tmp_path / 'wfe.db'}"
    args = ["--port", "0", "--worker", "flaskui_demo_app:make_engine", "--store", store]
    output: list[str] = []
    env = {**_env(), "WFE_LOAD_PLUGINS": "wfe_flaskui"}
    with running(args, env, output, command) as (proc, _url):
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 130
    assert any("stopping the dashboard" in line for line in output), output
    assert not any("Traceback" in line or "Aborted!" in line for line in output), output

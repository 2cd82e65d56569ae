"""``python -m wfe_flaskui`` and ``wfe ui`` as real subprocesses serving real HTTP, and an app
that mounts the dashboard run to its end."""

from __future__ import annotations

import http.cookiejar
import json
import os
import queue
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import pytest
from flaskui_helpers import TESTS, wait_for
from wfe_flaskui import plugin


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WFE_UI_TOKEN", "KAFKA_BROKERS")}
    env.update(WFE_LOAD_PLUGINS="", PYTHONUNBUFFERED="1", **extra)
    return env


@contextmanager
def running(args: list[str], env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Start the dashboard; yield the process and its base URL; stop it with SIGTERM."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "wfe_flaskui", *args],
        cwd=TESTS,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    seen: list[str] = []

    def announced() -> str | None:
        while not lines.empty():
            seen.append(lines.get())
            found = re.search(r"wfe dashboard on (http://\S+?)/ ", seen[-1])
            if found:
                return found[1]
        if proc.poll() is not None:
            raise AssertionError(f"the dashboard exited early: {''.join(seen)}")
        return None

    try:
        url = wait_for(announced, 30, "the dashboard to announce its address")
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class Http:
    """A tiny HTTP client that keeps cookies, like a browser session."""

    def __init__(self, base: str, headers: dict[str, str] | None = None) -> None:
        self.base = base
        self.headers = headers or {}
        jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))

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


def test_one_process_dashboard_with_its_own_worker(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'wfe.db'}"
    args = ["--port", "0", "--worker", "flaskui_demo_app:make_engine", "--store", store]
    with running(args, _env()) as (proc, url):
        assert url.startswith("http://127.0.0.1:")
        client = Http(url)
        status, page = client.request("GET", "/")
        assert status == 200 and "<h1>Tasks</h1>" in page
        _, token = client.request("GET", "/api/csrf")
        status, task = client.request(
            "POST",
            "/api/tasks",
            {"workflow": "numbers", "data": {"n": 8}},
            **{"X-CSRF-Token": token["csrf_token"]},
        )
        assert status == 201
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
    result = subprocess.run(
        [sys.executable, "-m", "wfe_flaskui", "--host", "0.0.0.0", "--port", "0"],
        cwd=TESTS,
        env=_env() if token is None else _env(WFE_UI_TOKEN=token),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "refusing to listen on 0.0.0.0" in result.stderr
    assert "WFE_UI_TOKEN" in result.stderr


def test_a_store_that_does_not_exist_yet_is_noted(tmp_path: Path) -> None:
    """A mistyped --store would show an empty dashboard without a word; it is not
    refused, since a dashboard may start before the first worker."""
    missing = tmp_path / "typo.db"
    existing = tmp_path / "wfe.db"
    existing.touch()

    def start(path: Path) -> str:
        # A public address without a token is refused right after the note.
        args = ["--host", "0.0.0.0", "--port", "0", "--store", f"sqlite:///{path}"]
        result = subprocess.run(
            [sys.executable, "-m", "wfe_flaskui", *args],
            cwd=TESTS,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        return result.stderr

    assert f"note: no store at {missing} yet" in start(missing)
    assert "note:" not in start(existing)


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
    env = _env(WFE_UI_TOKEN="tok-123", WFE_STORE=store)
    with running(["--host", "0.0.0.0", "--port", "0"], env) as (_, url):
        port = url.rsplit(":", 1)[1]
        local = f"http://127.0.0.1:{port}"
        assert Http(local).request("GET", "/api/tasks")[0] == 401
        assert Http(local, {"Authorization": "Bearer nope"}).request("GET", "/api/tasks")[0] == 401
        status, body = Http(local, {"Authorization": "Bearer tok-123"}).request("GET", "/api/tasks")
        assert status == 200 and body["total"] == 0


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
    for option in ("--host", "--port", "--store", "--worker"):
        assert option in result.stdout
    assert "127.0.0.1" in result.stdout and "5000" in result.stdout

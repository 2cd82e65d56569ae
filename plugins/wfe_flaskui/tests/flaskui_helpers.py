"""Shared helpers of the dashboard tests: polling, an API client, a real HTTP server, a
real ``wfe worker`` process and screenshots."""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import IO, Any

from wfcore import ECSWorkflowEngine, Phase, Task

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parents[2]
SHOTS = REPO / "test-output" / "flaskui"


def wait_for(check: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def demo_workflows_stored(api: Api) -> bool:
    """Whether a demo ``wfe worker`` has stored every workflow of the demo app: it stores
    them one by one as it starts, so seeing some of them is not seeing them all."""
    from flaskui_demo_app import make_engine

    stored = {doc["name"] for doc in api.get("/api/workflows").get_json()["workflows"]}
    return set(make_engine().workflows) <= stored


class Api:
    """The dashboard's JSON API through Flask's test client, with the CSRF header set."""

    def __init__(self, client: Any, prefix: str = "") -> None:
        self.client = client
        self.prefix = prefix
        self.csrf = client.get(f"{prefix}/api/csrf").get_json()["csrf_token"]

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.client.get(self.prefix + path, **kwargs)

    def post(self, path: str, json: Any = None, **kwargs: Any) -> Any:
        headers = {"X-CSRF-Token": self.csrf, **kwargs.pop("headers", {})}
        return self.client.post(self.prefix + path, json=json, headers=headers, **kwargs)

    def submit(self, workflow: str, data: Any, **fields: Any) -> dict[str, Any]:
        response = self.post("/api/tasks", {"workflow": workflow, "data": data, **fields})
        assert response.status_code == 201, response.get_data(as_text=True)
        return response.get_json()

    def define(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Submit a ``define_workflow`` task for ``spec`` (a dashboard that takes them):
        the new task, which must be taken (201)."""
        response = self.post("/api/tasks", {"classification": "define_workflow", "data": spec})
        assert response.status_code == 201, response.get_data(as_text=True)
        return response.get_json()

    def task(self, task_id: str) -> dict[str, Any]:
        return self.get(f"/api/tasks/{task_id}").get_json()

    def wait_status(self, task_id: str, status: str, timeout: float = 20.0) -> dict[str, Any]:
        return wait_for(
            lambda: (doc := self.task(task_id))["status"] == status and doc,
            timeout,
            f"task {task_id} to be {status}",
        )


def screenshot(page: Any, name: str) -> Path:
    """Save a full-page screenshot as test-output/flaskui/<name>.png."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@contextlib.contextmanager
def serving(app: Any) -> Iterator[int]:
    """Serve ``app`` over real HTTP on a free local port (yielded) until the block ends."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()


def start_demo_worker(store: str, log: IO[bytes]) -> subprocess.Popen[bytes]:
    """``wfe worker flaskui_demo_app:make_engine --store STORE -q`` as a real process,
    without entry-point plugins, its output going to the open file ``log``."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "wfcore.cli",
            "worker",
            "flaskui_demo_app:make_engine",
            "--store",
            store,
            "-q",
        ],
        cwd=TESTS,
        env=dict(os.environ, WFE_LOAD_PLUGINS="", PYTHONUNBUFFERED="1"),
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def stop_process(proc: subprocess.Popen[Any], timeout: float) -> None:
    """Stop ``proc`` as a service manager would: SIGTERM, then SIGKILL if it has not
    ended within ``timeout`` seconds."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def http_request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    *,
    chunked: bool = False,
) -> tuple[int, dict[str, str], bytes]:
    """One request with http.client: ``(status, headers, body)``.

    ``chunked`` sends the body with ``Transfer-Encoding: chunked`` (no Content-Length)
    in 512-byte chunks.
    """
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        if chunked and body is not None:
            parts = iter([body[i : i + 512] for i in range(0, len(body), 512)])
            connection.request(method, path, parts, headers or {}, encode_chunked=True)
        else:
            connection.request(method, path, body, headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def submit_form_hidden(html: str) -> list[tuple[str, str]]:
    """The hidden inputs of the page's submit form, as a browser would send them."""
    form = html.split('id="submit-form"', 1)[1].split("</form>", 1)[0]
    return re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form)


class AnswerFormReader(HTMLParser):
    """The first answer form of a page, read as a browser sees it.

    ``hidden`` lists its hidden inputs (name, value) in page order; ``inputs`` maps
    each field (its ``data-field``) to the name its input is posted under.
    """

    def __init__(self, html: str) -> None:
        super().__init__()
        self.hidden: list[tuple[str, str]] = []
        self.inputs: dict[str, str] = {}
        self._state = "before"  # before, inside, after the form
        self._field: str | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {k: v or "" for k, v in attrs}
        if tag == "form" and "answer-form" in found.get("class", "").split():
            if self._state == "before":
                self._state = "inside"
            return
        if self._state != "inside":
            return
        if "data-field" in found:
            self._field = found["data-field"]
        elif tag in ("input", "select", "textarea") and "name" in found:
            if found.get("type") == "hidden":
                self.hidden.append((found["name"], found.get("value", "")))
            elif self._field is not None:
                self.inputs.setdefault(self._field, found["name"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "form" and self._state == "inside":
            self._state = "after"


async def loop_task(url: str, rounds: int) -> str:
    """Run a task that loops through one phase ``rounds`` times, on the store at ``url``,
    to the end: its id. Its history has 2 * rounds + 4 events."""
    engine = ECSWorkflowEngine(store=url, load_plugins=False)

    async def step(task: Task) -> None:
        n = task.context.get("n", 0) + 1
        task.context["n"] = n
        task.next_classification = "step" if n < rounds else "done"

    async def done(task: Task) -> None:
        task.output = task.context["n"]

    engine.register_handler("step", step)
    engine.register_handler("done", done)
    engine.register_workflow(
        "loop", [Phase("step", next_classifications=["step", "done"]), Phase("done")]
    )
    try:
        task = await engine.submit_task({}, "loop")
        await engine.run_until_idle()
        finished = await engine.get_task(task.id)
        assert finished is not None and finished.output == rounds, finished
        assert len(finished.history) == 2 * rounds + 4, len(finished.history)
        return task.id
    finally:
        await engine.aclose()

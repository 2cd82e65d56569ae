"""Failures: a missing key, 429 and 5xx retried by the SDK, malformed replies, no leaked key."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import threading
from typing import Any

import pytest
from wfe_openai import OpenAIAgentAdapter

from wfcore import Phase, TaskStatus, TaskType
from wfcore.wire import task_to_dict


def _run_one(engine: Any, wfe_run: Any, adapter: OpenAIAgentAdapter, **phase: Any) -> Any:
    """Run one task of workflow "w", one agentic phase "p" (with the Phase options
    ``phase``) on ``adapter``, until the engine is idle: the task as stored."""
    engine.register_workflow("w", [Phase("p", assigned_to="agentic", **phase)])
    engine.register_adapter(TaskType.AGENTIC, adapter)

    async def scenario() -> Any:
        task = await engine.submit_task({"q": 1}, "w")
        await engine.run_until_idle()
        return await engine.get_task(task.id)

    return wfe_run(scenario())


def _closed_port() -> int:
    """A local port nothing listens on (one just released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _https_through_a_closed_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Send every HTTPS request to a proxy on a closed port, so that nothing leaves
    the machine and each request fails at once."""
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{_closed_port()}")


def test_missing_key_is_a_clear_error_when_the_adapter_runs(
    openai_server, monkeypatch, wfe_engine, wfe_run
):
    monkeypatch.delenv("OPENAI_API_KEY")
    adapter = OpenAIAgentAdapter(model="gpt-4o")  # building it needs no key

    task = _run_one(wfe_engine, wfe_run, adapter)

    assert task.status is TaskStatus.FAILED
    assert task.error.startswith("AdapterError: OPENAI_API_KEY is not set")
    assert "api_key= or client=" in task.error
    assert openai_server.requests == []


def test_a_handler_that_hands_the_phase_to_a_person_needs_no_key(
    openai_server, monkeypatch, wfe_engine, wfe_run
):
    monkeypatch.delenv("OPENAI_API_KEY")

    async def triage(task, request) -> None:
        if task.data["q"] == 1:
            wfe_engine.suspend(task, reason="a person decides first")

    wfe_engine.register_handler("p", triage)
    adapter = OpenAIAgentAdapter(model="gpt-4o")

    task = _run_one(wfe_engine, wfe_run, adapter)

    assert task.status is TaskStatus.WAITING_HUMAN, task.error
    assert task.waiting_reason == "a person decides first"
    assert openai_server.requests == []


def test_importing_and_building_the_adapter_needs_no_key():
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    code = (
        "import sys, wfe_openai; a = wfe_openai.OpenAIAgentAdapter(model='m'); "
        "print(repr(a), 'openai' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    # The SDK itself is only imported when a phase runs.
    assert done.stdout.strip() == "OpenAIAgentAdapter(model='m', tools=[]) False"


def test_rate_limit_is_retried_honouring_retry_after(openai_server, wfe_engine, wfe_run):
    openai_server.error(429, "Rate limit reached for requests", retry_after="0.05")
    openai_server.error(429, "Rate limit reached for requests", retry_after="0.05")
    openai_server.reply("finally")

    task = _run_one(wfe_engine, wfe_run, OpenAIAgentAdapter())

    assert task.status is TaskStatus.COMPLETED, task.error
    assert task.output == "finally"
    assert len(openai_server.requests) == 3
    # The SDK retried the same request; one attempt of the phase was enough.
    bodies = [r["body"] for r in openai_server.requests]
    assert bodies[0] == bodies[1] == bodies[2]
    assert [r["headers"].get("x-stainless-retry-count") for r in openai_server.requests] == [
        "0",
        "1",
        "2",
    ]
    assert [e["event"] for e in task.history].count("attempt_failed") == 0


def test_server_errors_exhaust_retries_then_max_attempts(openai_server, wfe_engine, wfe_run):
    for _ in range(6):
        openai_server.error(
            500, "The server had an error processing your request", retry_after="0.01"
        )

    task = _run_one(wfe_engine, wfe_run, OpenAIAgentAdapter(max_retries=2), max_attempts=2)

    assert task.status is TaskStatus.FAILED
    assert task.error == (
        f"AdapterError: chat completion failed with HTTP 500 after 2 retries "
        f"({openai_server.base_url}/): The server had an error processing your request"
    )
    # Two attempts of the phase, each one request and two SDK retries.
    assert len(openai_server.requests) == 6
    assert [e["event"] for e in task.history].count("attempt_failed") == 2


def test_errors_the_sdk_does_not_retry_say_why(openai_server, wfe_engine_factory, wfe_run):
    # The SDK gives up at once on a long Retry-After (over one or two minutes,
    # depending on its version) and obeys the server's x-should-retry header: the
    # reason must not claim retries.
    openai_server.error(429, "Rate limit reached", retry_after="600")
    body = json.dumps({"error": {"message": "Overloaded, try later"}}).encode()
    openai_server.push((503, {"Content-Type": "application/json", "x-should-retry": "false"}, body))

    limited = _run_one(wfe_engine_factory(), wfe_run, OpenAIAgentAdapter(max_retries=3))
    refused = _run_one(wfe_engine_factory(), wfe_run, OpenAIAgentAdapter(max_retries=3))

    assert limited.status is refused.status is TaskStatus.FAILED
    assert len(openai_server.requests) == 2  # none retried
    assert limited.error == (
        "RetryLater: chat completion failed with HTTP 429 and was not retried: the "
        f"server asked to wait 600 s (Retry-After) ({openai_server.base_url}/): Rate limit reached"
    )
    assert refused.error == (
        "AdapterError: chat completion failed with HTTP 503 and was not retried: the "
        f"server said not to (x-should-retry: false) ({openai_server.base_url}/): "
        "Overloaded, try later"
    )


def test_the_next_attempt_waits_the_retry_after_the_sdk_did_not(openai_server, wfe_engine, wfe_run):
    """A rate limit whose wait is too long for the SDK is waited out by the engine:
    the phase's next attempt is scheduled no sooner than the server asked."""
    openai_server.error(429, "Rate limit reached", retry_after="600")
    wfe_engine.register_workflow("w", [Phase("p", assigned_to="agentic", max_attempts=3)])
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter(max_retries=3))

    async def scenario() -> Any:
        task = await wfe_engine.submit_task({"q": 1}, "w")
        runner = asyncio.create_task(wfe_engine.run())
        try:
            while True:
                stored = await wfe_engine.get_task(task.id)
                if any(e["event"] == "retry_scheduled" for e in stored.history):
                    return stored
                await asyncio.sleep(0.02)
        finally:
            wfe_engine.stop()
            await runner

    task = wfe_run(scenario(), timeout=20)
    assert task.status is TaskStatus.PENDING and task.attempts == 1
    assert task.error.startswith("RetryLater: chat completion failed with HTTP 429")
    [scheduled] = [e for e in task.history if e["event"] == "retry_scheduled"]
    assert scheduled["delay"] == 600
    assert len(openai_server.requests) == 1


def test_client_errors_are_not_retried(openai_server, wfe_engine, wfe_run):
    openai_server.error(400, "Invalid value for 'temperature': must be <= 2.")

    task = _run_one(wfe_engine, wfe_run, OpenAIAgentAdapter(temperature=9))

    assert task.status is TaskStatus.FAILED
    assert task.error.endswith(
        f"HTTP 400 ({openai_server.base_url}/): Invalid value for 'temperature': must be <= 2."
    )
    assert len(openai_server.requests) == 1


@pytest.mark.parametrize(
    ("given", "origin"),
    [
        ("environment", "OPENAI_API_KEY"),
        ("api_key", "the adapter's api_key="),
        ("client", "the client= given to the adapter"),
    ],
)
def test_a_refused_key_names_the_setting_it_came_from(
    openai_server, fake_key, wfe_engine_factory, wfe_run, given, origin
):
    """A local server's 401 says no more than "Unauthorized": the error names what to
    fix, and never shows the key."""
    import openai

    openai_server.error(401, "Unauthorized")
    settings: dict[str, Any] = {"max_retries": 0}
    if given == "api_key":
        settings["api_key"] = "sk-the-adapters-own"
    elif given == "client":
        settings["client"] = openai.AsyncOpenAI(
            api_key="sk-the-clients", base_url=openai_server.base_url
        )

    task = _run_one(wfe_engine_factory(), wfe_run, OpenAIAgentAdapter(**settings), max_attempts=3)

    # Trying again cannot help until the key is fixed: one request, no retries.
    assert task.status is TaskStatus.FAILED
    assert len(openai_server.requests) == 1
    assert task.error == (
        f"PermanentError: chat completion failed with HTTP 401 ({openai_server.base_url}/): "
        f"Unauthorized (the key comes from {origin}: check that it is this server's key)"
    )


def test_plain_text_error_bodies_are_reported(openai_server, wfe_engine, wfe_run):
    openai_server.error(502, "Bad Gateway from the proxy", as_json=False, retry_after="0.01")

    task = _run_one(wfe_engine, wfe_run, OpenAIAgentAdapter(max_retries=0))

    assert task.status is TaskStatus.FAILED
    assert task.error.endswith(
        "HTTP 502 and was not retried: max_retries is 0 "
        f"({openai_server.base_url}/): Bad Gateway from the proxy"
    )


def test_an_html_error_page_is_reported_by_its_title_on_one_line(
    openai_server, wfe_engine_factory, wfe_run
):
    # What nginx answers for a server behind it that is down; a task's error is one
    # line in `wfe tasks` and the logs, not a page of markup.
    page = (
        "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
        "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.25.3</center>\r\n"
        "</body>\r\n</html>\r\n"
    )
    openai_server.push((502, {"Content-Type": "text/html"}, page.encode()))
    openai_server.error(503, "upstream is\n  warming up,\ttry later", as_json=False)

    adapter = OpenAIAgentAdapter(max_retries=0)
    proxied = _run_one(wfe_engine_factory(), wfe_run, adapter)
    warming = _run_one(wfe_engine_factory(), wfe_run, adapter)

    assert proxied.error == (
        "AdapterError: chat completion failed with HTTP 502 and was not retried: "
        f"max_retries is 0 ({openai_server.base_url}/): 502 Bad Gateway (an HTML page)"
    )
    assert warming.error.endswith(": upstream is warming up, try later")


def test_malformed_bodies_fail_attempts_with_the_reason(openai_server, wfe_engine, wfe_run):
    openai_server.raw(200, b"<html>this is not json</html>")
    openai_server.raw(200, json.dumps({"id": "x", "object": "chat.completion"}).encode())
    openai_server.raw(200, b"[1, 2, 3]")
    openai_server.raw(200, b"[" * 100_000 + b"]" * 100_000)  # too deep for the decoder
    openai_server.reply("good at last")

    task = _run_one(wfe_engine, wfe_run, OpenAIAgentAdapter(), max_attempts=5)

    assert task.status is TaskStatus.COMPLETED, task.error
    errors = [e["error"] for e in task.history if e["event"] == "attempt_failed"]
    assert len(errors) == 4
    assert errors[0].startswith(f"AdapterError: malformed response from {openai_server.base_url}/:")
    assert "JSONDecodeError" in errors[0]
    assert "no choices[0].message" in errors[1]
    assert "no choices[0].message in [1, 2, 3]" in errors[2]
    assert errors[3].startswith(
        f"AdapterError: malformed response from {openai_server.base_url}/: RecursionError:"
    )


def test_a_body_that_cannot_be_decoded_is_a_malformed_response_not_an_unreachable_server(
    openai_server, wfe_engine, wfe_run
):
    # A proxy that labels a plain body gzip: the server was reached all the same.
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    openai_server.push((200, headers, b'{"choices": []}'))

    task = _run_one(wfe_engine, wfe_run, OpenAIAgentAdapter(max_retries=0), max_attempts=1)

    assert task.status is TaskStatus.FAILED
    assert task.error.startswith(
        f"AdapterError: malformed response from {openai_server.base_url}/: its body cannot "
        "be decoded as its Content-Encoding says ("
    ), task.error
    assert "cannot reach" not in task.error


def test_a_body_cut_short_is_a_malformed_response_not_an_unreachable_server(
    openai_server, wfe_engine, wfe_run
):
    # A proxy dropping the connection mid-body: the server was reached, and answered.
    body = b'{"id": "x", "object": "chat.completion", "choices": [{"index": 0'
    headers = {"Content-Type": "application/json", "Content-Length": str(len(body) + 100)}
    for _ in range(2):
        openai_server.push((200, headers, body))

    task = _run_one(wfe_engine, wfe_run, OpenAIAgentAdapter(max_retries=1), max_attempts=1)

    assert task.status is TaskStatus.FAILED
    assert task.error.startswith(
        f"AdapterError: malformed response from {openai_server.base_url}/: its body ended early ("
    ), task.error
    assert task.error.endswith(", after 1 retry"), task.error
    assert "cannot reach" not in task.error


def test_a_server_that_never_accepts_the_connection_is_named_unreachable(wfe_engine, wfe_run):
    # A listening socket whose queue is full drops further connection attempts, as a
    # firewall or a host that is down does: the connect times out, not a reply.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    queued = []
    for _ in range(3):
        client = socket.socket()
        client.setblocking(False)
        client.connect_ex(("127.0.0.1", port))
        queued.append(client)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        adapter = OpenAIAgentAdapter(base_url=url, api_key="k", timeout=0.5, max_retries=0)
        task = _run_one(wfe_engine, wfe_run, adapter, max_attempts=1)
    finally:
        for sock in (*queued, listener):
            sock.close()

    assert task.status is TaskStatus.FAILED
    assert task.error == (
        f"AdapterError: cannot reach the chat completions server ({url}/): no connection "
        "within 0.5 s"
    )


def test_an_organization_or_project_no_header_can_carry_fails_before_anything_is_sent(
    openai_server, monkeypatch, wfe_engine_factory, wfe_run
):
    # The SDK sends them as headers; the HTTP library's refusal was reported as a
    # server that cannot be reached, or a malformed response.
    for name, value, problem in (
        (
            "OPENAI_ORG_ID",
            "org-123\n",
            "holds whitespace or a control character (a trailing newline from a file?)",
        ),
        ("OPENAI_PROJECT_ID", "proj-\u00e9", "holds a non-ASCII character"),
    ):
        monkeypatch.setenv(name, value)
        engine = wfe_engine_factory()
        task = _run_one(engine, wfe_run, OpenAIAgentAdapter(max_retries=0), max_attempts=1)
        monkeypatch.delenv(name)

        assert task.status is TaskStatus.FAILED
        assert task.error == (
            f"AdapterError: {name}={value!r} {problem}: the SDK sends it as an HTTP header, "
            "which cannot carry it"
        )
    assert openai_server.requests == []


def test_an_unreachable_server_is_a_clear_error(openai_server, monkeypatch, wfe_engine, wfe_run):
    port = _closed_port()
    url = f"http://127.0.0.1:{port}/v1"

    task = _run_one(wfe_engine, wfe_run, OpenAIAgentAdapter(base_url=url, max_retries=0))

    assert task.status is TaskStatus.FAILED
    assert task.error.startswith(
        f"AdapterError: cannot reach the chat completions server ({url}/):"
    )


def test_the_key_never_appears_in_the_task_the_logs_or_errors(
    openai_server, fake_key, caplog, wfe_engine_factory, wfe_store_url, wfe_run
):
    caplog.set_level(logging.DEBUG)
    # A server that echoes the key in its error, as some proxies do.
    openai_server.error(401, f"Incorrect API key provided: {fake_key}")
    openai_server.tool_calls(
        ("echo", {"text": "hi"}),
        ("embed", {"text": "hi"}),
        ("ask_human", {"question": "OK?"}),
    )
    openai_server.reply("done")

    def echo(text: str) -> str:
        """Echo."""
        return text

    def embed(text: str) -> list[float]:
        """Embed a text with another service, with the same key."""
        key = os.environ["OPENAI_API_KEY"]
        raise RuntimeError(f"401 from embeddings: Incorrect API key provided: {key}")

    engine = wfe_engine_factory()
    engine.register_workflow("w", [Phase("p", assigned_to="agentic", max_attempts=2)])
    engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter(tools=[echo, embed]))

    async def scenario() -> Any:
        task = await engine.submit_task({"q": 1}, "w")
        await engine.run_until_idle()
        # A refused key fails the task at once (PermanentError): retried once fixed.
        await engine.retry(task.id)
        await engine.run_until_idle()
        await engine.resume(task.id, "yes")
        await engine.run_until_idle()
        return await engine.get_task(task.id)

    task = wfe_run(scenario())
    assert task.status is TaskStatus.COMPLETED, task.error
    [failure] = [e["error"] for e in task.history if e["event"] == "attempt_failed"]
    assert failure.endswith(
        "Incorrect API key provided: *** (the key comes from OPENAI_API_KEY: check that it "
        "is this server's key)"
    )
    # The key did reach the server, and nowhere else.
    assert openai_server.requests[0]["headers"]["authorization"] == f"Bearer {fake_key}"
    assert fake_key not in json.dumps(task_to_dict(task))
    assert fake_key not in json.dumps(task.history)
    assert fake_key not in (task.traceback or "")
    assert caplog.records, "expected some log output at DEBUG level"
    assert fake_key not in caplog.text
    assert all(fake_key not in str(r.__dict__) for r in caplog.records)
    # The tool's error reached the model, the log and the store, the key masked.
    [failed] = [e["result"] for e in task.history if e.get("tool") == "embed" and "result" in e]
    assert failed == "error: RuntimeError: 401 from embeddings: Incorrect API key provided: ***"
    assert failed in [m["content"] for m in openai_server.messages()]
    assert all(fake_key not in json.dumps(r["body"]) for r in openai_server.requests)
    assert (
        "tool embed failed: RuntimeError: 401 from embeddings: Incorrect API key "
        "provided: ***" in caplog.text
    )
    stored = wfe_store_url.removeprefix("sqlite://")
    for path in (stored, stored + "-wal"):
        if os.path.exists(path):
            with open(path, "rb") as fh:
                assert fake_key.encode() not in fh.read()


def test_the_key_in_the_error_of_a_handlers_parse_is_masked(
    openai_server, fake_key, wfe_engine, wfe_run
):
    openai_server.reply("7")

    def parse(text: str) -> int:
        raise ValueError(f"the scoring service refused the key {fake_key}")

    def shape(task, request):
        request.parse = parse

    wfe_engine.register_handler("p", shape)
    task = _run_one(wfe_engine, wfe_run, OpenAIAgentAdapter())

    assert task.status is TaskStatus.FAILED
    assert task.error == (
        "AdapterError: the reply was rejected by the handler's parse: ValueError: the "
        "scoring service refused the key ***"
    )


def test_a_given_client_is_used_as_is(openai_server, monkeypatch, wfe_engine, wfe_run):
    import openai

    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.delenv("OPENAI_BASE_URL")
    openai_server.error(503, "warming up", retry_after="0.01")
    openai_server.reply("via my client")
    client = openai.AsyncOpenAI(
        api_key="sk-my-own", base_url=openai_server.base_url, default_headers={"X-Team": "blue"}
    )

    task = _run_one(wfe_engine, wfe_run, OpenAIAgentAdapter(client=client, max_retries=1))

    assert task.status is TaskStatus.COMPLETED, task.error
    assert task.output == "via my client"
    headers = [r["headers"] for r in openai_server.requests]
    assert [h["authorization"] for h in headers] == ["Bearer sk-my-own"] * 2
    assert headers[0]["x-team"] == "blue"


def test_a_sync_client_and_unknown_options_are_clear_errors(openai_server, wfe_engine, wfe_run):
    import openai
    import pytest

    with pytest.raises(TypeError, match="async client"):
        OpenAIAgentAdapter(client=openai.OpenAI(api_key="k"))

    task = _run_one(wfe_engine, wfe_run, OpenAIAgentAdapter(temprature=0.2))
    assert task.status is TaskStatus.FAILED
    assert task.error.startswith("PermanentError: invalid chat completion request:")
    assert "temprature" in task.error
    assert openai_server.requests == []


def test_credentials_in_the_base_url_never_reach_the_task(
    openai_server, monkeypatch, caplog, wfe_engine, wfe_run
):
    caplog.set_level(logging.DEBUG)
    port = _closed_port()
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter(max_retries=0))
    wfe_engine.register_workflow("w", [Phase("p", assigned_to="agentic")])

    async def run(url: str) -> Any:
        monkeypatch.setenv("OPENAI_BASE_URL", url)
        task = await wfe_engine.submit_task({}, "w")
        await wfe_engine.run_until_idle()
        return await wfe_engine.get_task(task.id)

    server = f"127.0.0.1:{port}/v1"
    unreachable = wfe_run(run(f"http://user:pw-s3cret@{server}"))
    # A query string is refused (the SDK would put the API path after it), masked.
    with_query = wfe_run(run(f"http://user:pw-s3cret@{server}?api-key=qs-s3cret&api-version=1"))

    assert unreachable.status is TaskStatus.FAILED
    # The error still says which server, without what gives access to it.
    assert unreachable.error.startswith(
        f"AdapterError: cannot reach the chat completions server (http://***@{server}/):"
    )
    assert with_query.status is TaskStatus.FAILED
    assert with_query.error == (
        "AdapterError: OPENAI_BASE_URL must not have a query string "
        f"('http://***@{server}?api-key=***&api-version=1'): the SDK adds the API path "
        "after it. Pass query parameters with client=AsyncOpenAI(base_url=..., "
        "default_query={...})"
    )
    for task in (unreachable, with_query):
        assert "s3cret" not in json.dumps(task_to_dict(task))
        assert "s3cret" not in (task.traceback or "")
    assert "s3cret" not in caplog.text


def test_credentials_in_the_base_url_are_redacted_from_http_errors(
    openai_server, wfe_engine, wfe_run
):
    # A proxy that echoes the password it was given, as some do.
    openai_server.error(500, "no upstream for svc-user/pw-s3cret")
    url = openai_server.base_url.replace("http://", "http://svc-user:pw-s3cret@")

    task = _run_one(wfe_engine, wfe_run, OpenAIAgentAdapter(base_url=url, max_retries=0))

    assert task.status is TaskStatus.FAILED
    masked = openai_server.base_url.replace("http://", "http://***@")
    assert task.error == (
        "AdapterError: chat completion failed with HTTP 500 and was not retried: "
        f"max_retries is 0 ({masked}/): "
        "no upstream for svc-user/***"
    )
    assert "s3cret" not in json.dumps(task_to_dict(task))


def test_the_adapter_timeout_bounds_a_hung_server(openai_server, wfe_engine, wfe_run):
    openai_server.hang()
    openai_server.hang()

    task = _run_one(wfe_engine, wfe_run, OpenAIAgentAdapter(timeout=0.2, max_retries=1))

    assert task.status is TaskStatus.FAILED
    assert task.error == (
        f"AdapterError: chat completion timed out after 1 retry ({openai_server.base_url}/): "
        "no reply within 0.2 s per request (the adapter's timeout= option)"
    )
    # The request and one retry, each given up after the timeout.
    assert len(openai_server.requests) == 2


class _TricklingServer:
    """A server that answers every request with a 200 whose body never ends: a blank
    every 50 ms, as some proxies keep a slow reply's connection open, until stopped."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        stop = self.stopped = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "100000")
                self.end_headers()
                try:
                    while not stop.wait(0.05):
                        self.wfile.write(b" ")
                        self.wfile.flush()
                except OSError:
                    pass  # the client gave up

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.stopped.set()
        self.server.shutdown()
        self.server.server_close()


def test_the_adapter_timeout_bounds_a_reply_that_trickles_in(wfe_engine, wfe_run):
    # Bytes that keep coming reset the HTTP library's read timeout: without a bound
    # on the whole reply, only the phase's timeout (10 s here) would end the call.
    server = _TricklingServer()
    try:
        adapter = OpenAIAgentAdapter(
            base_url=server.base_url, api_key="k", timeout=0.5, max_retries=0
        )
        task = _run_one(wfe_engine, wfe_run, adapter, timeout=10, max_attempts=1)
    finally:
        server.close()

    assert task.status is TaskStatus.FAILED
    assert task.error == (
        "AdapterError: chat completion timed out and was not retried: "
        f"max_retries is 0 ({server.base_url}/): "
        "no reply within 0.5 s per request (the adapter's timeout= option)"
    )


def test_a_timeout_error_names_where_the_timeout_is_set(openai_server, wfe_engine, wfe_run):
    """phase_options or a handler, rather than the adapter's timeout= the app never set."""
    openai_server.hang()
    openai_server.hang()

    def shape(task, request):
        request.options["timeout"] = 0.1

    wfe_engine.register_handler("b", shape)
    wfe_engine.register_workflow(
        "w", [Phase("a", assigned_to="agentic"), Phase("b", assigned_to="agentic")]
    )
    adapter = OpenAIAgentAdapter(max_retries=0, phase_options={"a": {"timeout": 0.1}})
    wfe_engine.register_adapter(TaskType.AGENTIC, adapter)

    async def scenario() -> list[Any]:
        first = await wfe_engine.submit_task({}, "w")
        second = await wfe_engine.submit_task({}, "w", classification="b")
        await wfe_engine.run_until_idle()
        return [await wfe_engine.get_task(t.id) for t in (first, second)]

    errors = [t.error.rsplit("(", 1)[-1] for t in wfe_run(scenario())]
    assert errors == [
        "phase_options['a']['timeout'])",
        "request.options['timeout'], set by the phase's handler)",
    ]


def test_the_phase_timeout_bounds_the_whole_attempt(openai_server, wfe_engine, wfe_run):
    import openai  # noqa: F401 - imported now: on a busy machine importing it takes a second

    openai_server.hang()

    task = _run_one(wfe_engine, wfe_run, OpenAIAgentAdapter(), timeout=1)

    assert task.status is TaskStatus.FAILED
    assert task.error == "TimeoutError: phase 'p' timed out after 1s"
    assert len(openai_server.requests) == 1


def test_max_retries_per_phase(openai_server, wfe_engine, wfe_run):
    openai_server.error(503, "warming up", retry_after="0.01")
    openai_server.error(503, "warming up", retry_after="0.01")
    openai_server.reply("patient")
    openai_server.error(503, "still warming up", retry_after="0.01")
    adapter = OpenAIAgentAdapter(max_retries=2, phase_options={"quick": {"max_retries": 0}})
    wfe_engine.register_adapter(TaskType.AGENTIC, adapter)
    wfe_engine.register_workflow(
        "w", [Phase("patient", assigned_to="agentic"), Phase("quick", assigned_to="agentic")]
    )

    async def scenario() -> Any:
        task = await wfe_engine.submit_task({}, "w")
        await wfe_engine.run_until_idle()
        return await wfe_engine.get_task(task.id)

    task = wfe_run(scenario())

    assert task.outputs["patient"] == "patient"
    assert task.status is TaskStatus.FAILED
    assert task.error == (
        f"AdapterError: chat completion failed with HTTP 503 and was not retried: max_retries is 0 "
        f"({openai_server.base_url}/): still warming up"
    )
    assert len(openai_server.requests) == 4
    # The SDK's own option, not a request field.
    assert all("max_retries" not in r["body"] for r in openai_server.requests)


def test_a_bad_max_retries_is_refused_when_the_adapter_is_built():
    import pytest

    for bad in (-1, "2", True, 1.5):
        with pytest.raises(ValueError, match=f"max_retries must be an integer >= 0, not {bad!r}"):
            OpenAIAgentAdapter(max_retries=bad)
        with pytest.raises(ValueError, match=r"phase_options\['p'\] max_retries must be"):
            OpenAIAgentAdapter(phase_options={"p": {"max_retries": bad}})


def test_an_unusable_api_key_is_refused_without_showing_it(
    openai_server, monkeypatch, caplog, wfe_engine_factory, wfe_run
):
    import pytest

    caplog.set_level(logging.DEBUG)
    newline = (
        "the API key ({}) holds whitespace or a control character (a trailing newline from a file?)"
    )
    cases = [
        ("sk-SECRETKEY987\n", newline.format("OPENAI_API_KEY")),
        ("sk-SECRETKEY987 x", newline.format("OPENAI_API_KEY")),
        ("    ", "the API key (OPENAI_API_KEY) is blank: it holds only whitespace"),
        ("sk-SECRETKEY987é", "the API key (OPENAI_API_KEY) holds a non-ASCII character"),
    ]
    for key, problem in cases:
        monkeypatch.setenv("OPENAI_API_KEY", key)
        engine = wfe_engine_factory()
        task = _run_one(engine, wfe_run, OpenAIAgentAdapter())

        assert task.status is TaskStatus.FAILED
        assert task.error == f"AdapterError: {problem}"
        assert "SECRETKEY987" not in json.dumps(task_to_dict(task))
    # Refused before anything was sent (the HTTP library logs the headers it fails on).
    assert openai_server.requests == []
    assert "SECRETKEY987" not in caplog.text

    # Given as api_key=, the key is refused when the adapter is built.
    for key, problem in cases:
        with pytest.raises(ValueError) as info:
            OpenAIAgentAdapter(api_key=key)
        assert str(info.value) == problem.replace("OPENAI_API_KEY", "api_key=")


def test_extra_headers_no_request_can_carry_are_refused_without_showing_them(
    openai_server, caplog, wfe_engine, wfe_run
):
    # A proxy's key read from a file keeps its newline: sent, the HTTP library's
    # error quotes it, and the attempt failed as "cannot reach the chat completions
    # server", with the key in the task's error and history.
    caplog.set_level(logging.DEBUG)
    cases = [
        ("proxy-SECRET987\n", "holds a control character (a trailing newline from a file?)"),
        ("Bearer proxy-SECRET987 ", "has whitespace at its start or end (a trailing space "),
        ("proxy-SECRET987é", "holds a non-ASCII character"),
    ]
    for value, problem in cases:
        for settings in (
            {"extra_headers": {"X-Proxy-Key": value}},
            {"phase_options": {"p": {"extra_headers": {"X-Proxy-Key": value}}}},
        ):
            with pytest.raises(ValueError) as info:
                OpenAIAgentAdapter(**settings)
            assert "extra_headers['X-Proxy-Key'] " + problem in str(info.value)
            assert "SECRET987" not in str(info.value)
    with pytest.raises(ValueError, match="'X Key' is not an HTTP header name"):
        OpenAIAgentAdapter(extra_headers={"X Key": "v"})
    # Tabs inside a value, and the SDK's own values, are the HTTP library's to send.
    OpenAIAgentAdapter(extra_headers={"X-Team": "a\tb", "X-None": None})

    # Set by a handler, the header fails the attempt before anything is sent.
    def shape(task: Any, request: Any) -> None:
        request.options["extra_headers"] = {"X-Proxy-Key": "proxy-SECRET987\n"}

    wfe_engine.register_handler("p", shape)
    task = _run_one(wfe_engine, wfe_run, OpenAIAgentAdapter(), max_attempts=1)

    assert task.status is TaskStatus.FAILED
    assert task.error == (
        "AdapterError: the handler left the request unusable: request.options "
        "extra_headers['X-Proxy-Key'] holds a control character (a trailing newline from "
        "a file?): an HTTP header cannot carry it (the value is not shown: it may be a "
        "credential)"
    )
    assert openai_server.requests == []
    assert "SECRET987" not in json.dumps(task_to_dict(task))
    assert "SECRET987" not in caplog.text


def test_a_key_in_a_given_client_is_redacted_in_its_escaped_form_too(
    openai_server, monkeypatch, wfe_engine, wfe_run
):
    import openai

    # A client given as is is not checked; the HTTP library's error shows its key
    # escaped ('...\\n'), which the redaction must find as well.
    client = openai.AsyncOpenAI(api_key="sk-given-SECRET987\n", base_url=openai_server.base_url)

    task = _run_one(wfe_engine, wfe_run, OpenAIAgentAdapter(client=client, max_retries=0))

    assert task.status is TaskStatus.FAILED
    assert task.error.startswith("AdapterError: cannot reach the chat completions server")
    assert "***" in task.error
    assert "SECRET987" not in json.dumps(task_to_dict(task))
    assert "SECRET987" not in (task.traceback or "")


def test_a_base_url_that_is_not_an_http_url_is_refused_when_the_adapter_is_built():
    import pytest

    for bad, shown in [
        ("127.0.0.1:18777/v1", "127.0.0.1:18777/v1"),
        ("localhost:11434/v1", "localhost:11434/v1"),
        ("not a url at all", "not a url at all"),
        ("ftp://127.0.0.1/v1", "ftp://127.0.0.1/v1"),
        ("http://", "http://"),
        ("http://127.0.0.1:8000/v1 x", "http://127.0.0.1:8000/v1 x"),
        # Credentials are masked, with or without a scheme.
        ("svc:pw-s3cret@127.0.0.1:8000/v1", "***@127.0.0.1:8000/v1"),
        ("ftp://svc:pw-s3cret@127.0.0.1/v1", "ftp://***@127.0.0.1/v1"),
    ]:
        with pytest.raises(ValueError) as info:
            OpenAIAgentAdapter(base_url=bad)
        assert str(info.value) == f"base_url must be an http:// or https:// URL, got {shown!r}"
    # A URL the parser cannot read says why: the text alone looks fine.
    for bad, why in [
        ("http://127.0.0.1:port/v1", "port could not be cast to integer value as 'port'"),
        ("http://127.0.0.1:99999/v1", "port out of range 0-65535"),
        ("http://[::1/v1", "invalid IPv6 URL"),
        ("http://svc:pw-s3cret@127.0.0.1:99999/v1", "port out of range 0-65535"),
    ]:
        with pytest.raises(ValueError) as info:
            OpenAIAgentAdapter(base_url=bad)
        shown = bad.replace("svc:pw-s3cret", "***")
        assert str(info.value) == (
            f"base_url must be an http:// or https:// URL, got {shown!r} ({why})"
        )


def test_base_urls_with_whitespace_around_or_a_query_string_are_refused_saying_so(
    openai_server, monkeypatch, wfe_engine_factory, wfe_run
):
    import pytest

    with pytest.raises(ValueError) as info:
        OpenAIAgentAdapter(base_url="http://127.0.0.1:8000/v1\n")
    assert str(info.value) == (
        "base_url has whitespace at its start or end ('http://127.0.0.1:8000/v1\\n'); "
        "remove it (a trailing newline or space from a file?)"
    )
    with pytest.raises(ValueError) as info:
        OpenAIAgentAdapter(base_url="https://res.example.com/v1?api-version=2024-06-01")
    assert str(info.value) == (
        "base_url must not have a query string ('https://res.example.com/v1?api-version="
        "2024-06-01'): the SDK adds the API path after it. Pass query parameters with "
        "client=AsyncOpenAI(base_url=..., default_query={...})"
    )
    # The same, from the environment, fails the attempt before anything is sent.
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url + " ")
    task = _run_one(wfe_engine_factory(), wfe_run, OpenAIAgentAdapter())
    assert task.error == (
        f"AdapterError: OPENAI_BASE_URL has whitespace at its start or end "
        f"({openai_server.base_url + ' '!r}); remove it (a trailing newline or space from a file?)"
    )
    assert openai_server.requests == []


def test_query_parameters_reach_the_server_through_a_client_with_default_query(
    openai_server, wfe_engine, wfe_run
):
    """What the query-string refusal advises works."""
    import openai

    openai_server.reply("hi")
    client = openai.AsyncOpenAI(
        base_url=openai_server.base_url, api_key="k", default_query={"api-version": "2024-06-01"}
    )
    task = _run_one(wfe_engine, wfe_run, OpenAIAgentAdapter(client=client))
    assert task.output == "hi", task.error
    assert openai_server.requests[0]["path"] == "/v1/chat/completions?api-version=2024-06-01"


def test_a_404_from_a_server_url_without_v1_says_it_may_need_it(
    openai_server, wfe_engine_factory, wfe_run
):
    root = openai_server.base_url.removesuffix("/v1")
    task = _run_one(wfe_engine_factory(), wfe_run, OpenAIAgentAdapter(base_url=root, max_retries=0))
    assert task.error == (
        f"PermanentError: chat completion failed with HTTP 404 ({root}): not found (the server "
        "URL does not end in /v1: OpenAI-compatible servers usually serve the API under it, "
        "e.g. http://localhost:8000/v1)"
    )
    # A 404 from a URL that has /v1 (an unknown model, say) is the server's own word.
    openai_server.error(404, "The model 'gpt-5x' does not exist")
    task = _run_one(wfe_engine_factory(), wfe_run, OpenAIAgentAdapter(max_retries=0))
    assert task.error.endswith(
        f"HTTP 404 ({openai_server.base_url}/): The model 'gpt-5x' does not exist"
    )


def test_openai_api_base_without_openai_base_url_is_warned_about_once(
    openai_server, monkeypatch, caplog, wfe_engine, wfe_run
):
    import wfe_openai.client

    monkeypatch.setattr(wfe_openai.client, "_warned", set())
    monkeypatch.setenv("OPENAI_API_BASE", "http://127.0.0.1:9/v1")
    monkeypatch.delenv("OPENAI_BASE_URL")
    # The requests go to api.openai.com, here through a proxy on a closed port.
    _https_through_a_closed_proxy(monkeypatch)
    caplog.set_level(logging.WARNING, logger="wfe_openai")
    adapter = OpenAIAgentAdapter(max_retries=0)
    wfe_engine.register_adapter(TaskType.AGENTIC, adapter)
    wfe_engine.register_workflow("w", [Phase("p", assigned_to="agentic")])

    async def two_tasks_on_two_clients() -> None:
        for _ in range(2):
            await wfe_engine.submit_task({}, "w")
            await wfe_engine.run_until_idle()
            await adapter.aclose()  # the next task builds a new client

    wfe_run(two_tasks_on_two_clients())
    warnings = [r.getMessage() for r in caplog.records if r.name == "wfe_openai"]
    assert warnings == [
        "OPENAI_API_BASE='http://127.0.0.1:9/v1' is ignored: the openai SDK reads "
        "OPENAI_BASE_URL, so agentic phases go to api.openai.com (set OPENAI_BASE_URL instead)"
    ]


def test_a_bad_openai_base_url_fails_the_attempt_before_anything_is_sent(
    openai_server, monkeypatch, wfe_engine_factory, wfe_run
):
    for bad in ("localhost:18777/v1", f"ftp{openai_server.base_url[4:]}"):
        monkeypatch.setenv("OPENAI_BASE_URL", bad)
        engine = wfe_engine_factory()

        task = _run_one(engine, wfe_run, OpenAIAgentAdapter())

        assert task.status is TaskStatus.FAILED
        assert task.error == (
            f"AdapterError: OPENAI_BASE_URL must be an http:// or https:// URL, got {bad!r}"
        )
        # One history entry: a configuration error, not a server that was tried.
        assert [e["event"] for e in task.history].count("attempt_failed") == 1
    assert openai_server.requests == []


def test_a_base_url_of_the_endpoint_is_refused_naming_the_root(
    openai_server, monkeypatch, wfe_engine_factory, wfe_run
):
    """The URL of the endpoint (pasted from a curl example) is refused before anything
    is sent: the SDK adds /chat/completions itself, and the server would answer 404."""
    import pytest

    with pytest.raises(ValueError) as info:
        OpenAIAgentAdapter(base_url="http://svc:pw@localhost:11434/v1/chat/completions/")
    assert str(info.value) == (
        "base_url must be the API's root URL, not its chat completions endpoint "
        "('http://***@localhost:11434/v1/chat/completions/'): the SDK adds "
        "/chat/completions itself; use 'http://***@localhost:11434/v1'"
    )
    endpoint = openai_server.base_url + "/chat/completions"
    monkeypatch.setenv("OPENAI_BASE_URL", endpoint)

    task = _run_one(wfe_engine_factory(), wfe_run, OpenAIAgentAdapter())

    assert task.status is TaskStatus.FAILED
    assert task.error == (
        "AdapterError: OPENAI_BASE_URL must be the API's root URL, not its chat completions "
        f"endpoint ({endpoint!r}): the SDK adds /chat/completions itself; use "
        f"{openai_server.base_url!r}"
    )
    assert openai_server.requests == []


def test_an_empty_openai_base_url_means_the_default_server(
    openai_server, monkeypatch, wfe_engine, wfe_run
):
    # As in a .env file with "OPENAI_BASE_URL=". The request goes to a proxy on a
    # closed port, so nothing leaves the machine; the error names the server meant.
    _https_through_a_closed_proxy(monkeypatch)
    monkeypatch.setenv("OPENAI_BASE_URL", "")

    task = _run_one(wfe_engine, wfe_run, OpenAIAgentAdapter(max_retries=0))

    assert task.status is TaskStatus.FAILED
    assert task.error.startswith(
        "AdapterError: cannot reach the chat completions server (https://api.openai.com/v1/):"
    )


def test_an_error_object_in_a_200_response_is_reported_in_the_servers_words(
    openai_server, wfe_engine, wfe_run
):
    # Some compatible servers and proxies answer 200 with an error body.
    error = {"error": {"message": "model overloaded, try later", "code": 503}}
    openai_server.raw(200, json.dumps(error).encode())
    openai_server.raw(200, json.dumps({"error": "no such model: m"}).encode())
    openai_server.reply("fine now")

    task = _run_one(wfe_engine, wfe_run, OpenAIAgentAdapter(max_retries=2), max_attempts=3)

    assert task.status is TaskStatus.COMPLETED, task.error
    errors = [e["error"] for e in task.history if e["event"] == "attempt_failed"]
    where = f"{openai_server.base_url}/"
    assert errors == [
        f"AdapterError: chat completion failed ({where}): the server answered with an "
        "error: model overloaded, try later (code 503)",
        f"AdapterError: chat completion failed ({where}): the server answered with an "
        "error: no such model: m",
    ]
    # Not retried by the SDK (it came as a success): each error cost one attempt.
    assert len(openai_server.requests) == 3


def test_a_stream_sent_to_a_plain_request_is_named_as_such(openai_server, wfe_engine, wfe_run):
    chunk = {"id": "c", "object": "chat.completion.chunk", "choices": []}
    stream = f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode()
    openai_server.raw(200, stream, content_type="text/event-stream")

    task = _run_one(wfe_engine, wfe_run, OpenAIAgentAdapter())

    assert task.status is TaskStatus.FAILED
    assert task.error.startswith(
        f"AdapterError: malformed response from {openai_server.base_url}/: the server sent a "
        "stream (server-sent events) to a request that did not ask for one; it begins 'data: {"
    )
    assert "stream" not in openai_server.requests[0]["body"]


def test_a_reply_whose_content_is_not_text_is_named_not_called_empty(
    openai_server, wfe_engine, wfe_run
):
    # A server that is not quite compatible: its content is a number, then an object.
    for content in (42, {"answer": 42}):
        body = {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
        }
        openai_server.raw(200, json.dumps(body).encode())
    openai_server.reply("good at last")

    task = _run_one(wfe_engine, wfe_run, OpenAIAgentAdapter(), max_attempts=3)

    assert task.status is TaskStatus.COMPLETED, task.error
    errors = [e["error"] for e in task.history if e["event"] == "attempt_failed"]
    assert errors == [
        "AdapterError: the reply's content is int, not text: 42 (finish_reason=stop)",
        "AdapterError: the reply's content is dict, not text: {'answer': 42} (finish_reason=stop)",
    ]

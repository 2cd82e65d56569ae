"""A scripted OpenAI-compatible HTTP server on 127.0.0.1 for the wfe_openai tests.

The ``openai_server`` fixture starts a ``ThreadingHTTPServer`` on a free port and
points the environment at it (``OPENAI_BASE_URL``, a fake ``OPENAI_API_KEY``).
A test queues the responses it wants, in order, and afterwards reads the
requests the server received::

    openai_server.reply("hello")
    openai_server.tool_calls(("add", {"a": 1, "b": 2}))
    openai_server.error(429, "slow down", retry_after="0.01")
    ...
    assert openai_server.requests[0]["body"]["model"] == "gpt-4o"

A request arriving with nothing queued gets a 418 (which the SDK does not retry),
so a test that expected fewer calls fails loudly.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

#: The fake key the tests use; it must never show up in a task, a log or an error.
FAKE_KEY = "sk-test-wfe-0123456789-SECRET-abcdef"

Response = tuple[int, dict[str, str], bytes]
Scripted = Response | Callable[[dict[str, Any]], Response]


class FakeOpenAI:
    """The server's script (responses to give) and record (requests received)."""

    def __init__(self) -> None:
        self.url = ""
        self.requests: list[dict[str, Any]] = []
        self._script: list[Scripted] = []
        self._lock = threading.Lock()
        self._ids = 0
        self._released = threading.Event()

    # -- scripting -------------------------------------------------------------------

    def push(self, response: Scripted) -> None:
        """Queue a raw response ``(status, headers, body)`` or a function of the request."""
        with self._lock:
            self._script.append(response)

    def reply(
        self,
        text: str | list[dict[str, Any]] | None,
        *,
        usage: dict[str, Any] | None = None,
        finish_reason: str = "stop",
        **extra: Any,
    ) -> None:
        """Queue a plain assistant reply (``finish_reason="length"``: cut off by max_tokens);
        ``text`` may be a list of content parts, as some compatible servers send it."""
        message = {"content": text}
        self.push(lambda req: self._completion(req, message, finish_reason, usage, extra))

    def json_reply(self, value: Any) -> None:
        """Queue a reply whose text is ``value`` as JSON."""
        self.reply(json.dumps(value))

    def tool_calls(
        self, *calls: tuple[str, Any], content: str | list[dict[str, Any]] | None = None
    ) -> None:
        """Queue a reply asking for tool calls: ``(name, arguments)`` pairs; arguments
        given as a string are sent as is (to test invalid JSON)."""

        def respond(req: dict[str, Any]) -> Response:
            tool_calls = []
            for name, args in calls:
                self._ids += 1
                tool_calls.append(
                    {
                        "id": f"call_{self._ids}",
                        "type": "function",
                        "function": {
                            "name": name,
                            "arguments": args if isinstance(args, str) else json.dumps(args),
                        },
                    }
                )
            message = {"content": content, "tool_calls": tool_calls}
            return self._completion(req, message, "tool_calls", None, {})

        self.push(respond)

    def raw_tool_calls(self, *calls: dict[str, Any]) -> None:
        """Queue a reply whose ``tool_calls`` are exactly these dicts (no id added, the
        arguments not encoded), as some OpenAI-compatible servers send them."""
        message = {"content": None, "tool_calls": list(calls)}
        self.push(lambda req: self._completion(req, message, "tool_calls", None, {}))

    def error(
        self, status: int, message: str, *, retry_after: str | None = None, as_json: bool = True
    ) -> None:
        """Queue an error response in OpenAI's error format (or as plain text)."""
        headers = {"Content-Type": "application/json" if as_json else "text/plain"}
        if retry_after is not None:
            headers["Retry-After"] = retry_after
        body = (
            json.dumps({"error": {"message": message, "type": "server_error", "code": None}})
            if as_json
            else message
        )
        self.push((status, headers, body.encode()))

    def hang(self) -> None:
        """Queue a request that gets no answer until the test ends (a hung server)."""

        def respond(req: dict[str, Any]) -> Response:
            self._released.wait()
            return 503, {"Content-Type": "text/plain"}, b"released at the end of the test"

        self.push(respond)

    def raw(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        """Queue a response with exactly this body (for malformed replies)."""
        self.push((status, {"Content-Type": content_type}, body))

    def _completion(
        self,
        req: dict[str, Any],
        message: dict[str, Any],
        finish_reason: str,
        usage: dict[str, Any] | None,
        extra: dict[str, Any],
    ) -> Response:
        body = req["body"] if isinstance(req["body"], dict) else {}
        prompt_chars = len(json.dumps(body.get("messages", [])))
        completion_chars = len(json.dumps(message))
        counts = usage or {
            "prompt_tokens": prompt_chars // 4,
            "completion_tokens": completion_chars // 4,
        }
        counts.setdefault("total_tokens", counts["prompt_tokens"] + counts["completion_tokens"])
        counts.setdefault("prompt_tokens_details", {"cached_tokens": 0})
        counts.setdefault("completion_tokens_details", {"reasoning_tokens": 0})
        doc = {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "unknown") + "-2024-08-06",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", **message},
                    "finish_reason": finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": counts,
            **extra,
        }
        headers = {"Content-Type": "application/json", "x-request-id": f"req_{len(self.requests)}"}
        return 200, headers, json.dumps(doc).encode()

    # -- serving ---------------------------------------------------------------------

    def _next(self, request: dict[str, Any]) -> Response:
        with self._lock:
            self.requests.append(request)
            scripted = self._script.pop(0) if self._script else None
        if scripted is None:
            body = {"error": {"message": "unscripted request", "type": "test_error"}}
            return 418, {"Content-Type": "application/json"}, json.dumps(body).encode()
        return scripted(request) if callable(scripted) else scripted

    @property
    def pending(self) -> int:
        """How many queued responses were not used."""
        with self._lock:
            return len(self._script)

    def messages(self, index: int = -1) -> list[dict[str, Any]]:
        """The messages of one received request (the last by default)."""
        return self.requests[index]["body"]["messages"]


def _handler_for(fake: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            try:
                body: Any = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
            request = {
                "method": "POST",
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body,
            }
            if self.path.split("?")[0].rstrip("/") != "/v1/chat/completions":
                status, headers, payload = 404, {"Content-Type": "text/plain"}, b"not found"
                with fake._lock:
                    fake.requests.append(request)
            else:
                status, headers, payload = fake._next(request)
            try:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting (a timeout test)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def openai_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAI]:
    """A scripted OpenAI-compatible server; the environment points the SDK at it."""
    fake = FakeOpenAI()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(fake))
    server.daemon_threads = True
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-openai", daemon=True
    )
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    for name in (
        "OPENAI_ORG_ID",
        "OPENAI_PROJECT_ID",
        "OPENAI_ADMIN_KEY",
        "OPENAI_CUSTOM_HEADERS",
        "OPENAI_LOG",
        "WFE_AGENT",
        "WFE_OPENAI_MODEL",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", fake.url)
    try:
        yield fake
    finally:
        fake._released.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def fake_key() -> str:
    """The fake API key the ``openai_server`` fixture exports."""
    return FAKE_KEY

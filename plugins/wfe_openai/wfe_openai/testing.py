"""A scripted OpenAI-compatible server for testing apps that use wfe_openai.

:class:`FakeOpenAI` serves the chat-completions API over real HTTP on 127.0.0.1 (a
free port, a thread), so your tests run the real openai SDK and the real adapter
with no network and no key. You queue the replies the "model" gives, in order, and
afterwards check the requests it received::

    import asyncio

    from wfcore import ECSWorkflowEngine, Phase, Task, TaskType
    from wfe_openai import OpenAIAgentAdapter
    from wfe_openai.testing import FakeOpenAI


    def add(a: int, b: int) -> int:
        \"\"\"Add two numbers.\"\"\"
        return a + b


    async def run_sum(base_url: str) -> Task:
        engine = ECSWorkflowEngine("memory://", load_plugins=False)
        adapter = OpenAIAgentAdapter(tools=[add], base_url=base_url, api_key="test")
        engine.register_adapter(TaskType.AGENTIC, adapter)
        engine.register_workflow("sum", [Phase("sum", assigned_to="agentic")])
        task = await engine.submit_task({"numbers": [2, 3]}, "sum")
        await engine.run_until_idle()
        task = await engine.wait_for_task(task.id)
        await adapter.aclose()
        await engine.aclose()
        return task


    def test_the_agent_adds() -> None:
        with FakeOpenAI() as fake:
            [call_id] = fake.tool_calls(("add", {"a": 2, "b": 3}))  # the first reply
            fake.reply("2 + 3 = 5")  # the second, after the tool's result
            task = asyncio.run(run_sum(fake.base_url))

        assert task.output == "2 + 3 = 5"
        assert len(fake.requests) == 2
        assert fake.requests[0]["body"]["tools"][0]["function"]["name"] == "add"
        assert fake.messages()[-1] == {"role": "tool", "tool_call_id": call_id, "content": "5"}

With pytest, the ``fake_openai`` fixture (installed with this package, see
:mod:`wfe_openai.pytest_plugin`) gives each test a started server and points
``OPENAI_BASE_URL`` and ``OPENAI_API_KEY`` at it.

A request that finds no reply queued gets HTTP 418 (the SDK does not retry it), so
the task fails with ``... HTTP 418 ...: FakeOpenAI: no response queued for request
3 ...``: a test that expected fewer model calls fails loudly. Replies queued but
never asked for are counted in :attr:`FakeOpenAI.pending`.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, TypeAlias, TypedDict

from .human import ASK_HUMAN

__all__ = ["FAKE_API_KEY", "FakeOpenAI", "RecordedRequest", "Response"]

#: The key the ``fake_openai`` fixture puts in ``OPENAI_API_KEY``; the server accepts any.
FAKE_API_KEY = "sk-fake-wfe-openai-testing"

#: A raw response: HTTP status, headers, body.
Response: TypeAlias = tuple[int, dict[str, str], bytes]


class RecordedRequest(TypedDict):
    """One request the server received, in :attr:`FakeOpenAI.requests`."""

    method: str
    #: The request path, e.g. ``/v1/chat/completions``.
    path: str
    #: Header names in lower case.
    headers: dict[str, str]
    #: The JSON body (``model``, ``messages``, ``tools``, ...), or the text if not JSON.
    body: Any


_Scripted: TypeAlias = Response | Callable[[RecordedRequest], Response]


class FakeOpenAI:
    """An OpenAI-compatible chat-completions server on 127.0.0.1, scripted by the test.

    Use it as a context manager (``with FakeOpenAI() as fake:``), or call
    :meth:`start` and :meth:`stop`. Pass :attr:`base_url` to
    ``OpenAIAgentAdapter(base_url=fake.base_url, api_key="test")`` (any key works).

    Queue replies with :meth:`reply`, :meth:`json_reply`, :meth:`tool_calls`,
    :meth:`ask_human`, :meth:`error` and the lower-level :meth:`raw_tool_calls`,
    :meth:`raw`, :meth:`hang` and :meth:`push`; each request to
    ``POST /v1/chat/completions`` takes the next one. Every request received is
    appended to :attr:`requests`; :meth:`messages` reads the messages one sent.
    """

    def __init__(self) -> None:
        #: The requests received, in order (other paths too: they get a 404).
        self.requests: list[RecordedRequest] = []
        self._script: list[_Scripted] = []
        self._lock = threading.Lock()
        self._ids = 0
        self._released = threading.Event()
        # The client connections open now, and those of them serving a request: an
        # SDK keeps its connection open between calls, which stop() must close.
        self._connections: set[socket.socket] = set()
        self._busy: set[socket.socket] = set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False

    # -- life cycle ------------------------------------------------------------------

    def start(self) -> FakeOpenAI:
        """Start serving on 127.0.0.1 and a free port, in a thread; returns ``self``."""
        if self._stopped:
            raise RuntimeError("this FakeOpenAI was stopped; start a new one")
        if self._server is not None:
            raise RuntimeError("this FakeOpenAI is already started")
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        # A client that keeps its connection open must not keep the test process alive.
        server.daemon_threads = True
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name="fake-openai",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread
        return self

    def stop(self) -> None:
        """Stop serving; requests held by :meth:`hang` are answered first. Idempotent.

        From then on the server answers nothing, also on connections a client keeps
        open: the client finds the server gone, as when a real one goes away.
        """
        with self._lock:
            self._stopped = True
            idle = self._connections - self._busy
        self._released.set()
        for connection in idle:
            # Waiting for a next request that must not be served: the client sees
            # the connection closed. A busy one closes after its answer.
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # closed meanwhile
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._server = self._thread = None
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """The API's URL, ``http://127.0.0.1:<port>/v1``, for ``base_url=`` or
        ``OPENAI_BASE_URL``."""
        if self._server is None:
            raise RuntimeError(
                "FakeOpenAI is not serving: use it as a context manager "
                "(with FakeOpenAI() as fake: ...) or call start() first"
            )
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    # -- scripting -------------------------------------------------------------------

    def reply(
        self,
        text: str | list[dict[str, Any]] | None,
        *,
        finish_reason: str = "stop",
        usage: dict[str, Any] | None = None,
    ) -> None:
        """Queue a plain assistant reply.

        ``text`` may also be a list of content parts (``[{"type": "text", "text":
        "..."}]``), as some compatible servers send it. ``finish_reason="length"``
        makes a reply cut off by the token limit. ``usage`` replaces the token counts,
        which are otherwise estimated from the sizes of the request and the reply.
        """
        if text is not None and not isinstance(text, (str, list)):
            raise TypeError(
                f"reply() takes the reply's text (a str, a list of content parts or None), "
                f"not {type(text).__name__}; use json_reply() for a JSON value"
            )
        message = {"content": text}
        self.push(lambda req: self._completion(req, message, finish_reason, usage))

    def json_reply(self, value: Any) -> None:
        """Queue a reply whose text is ``value`` as JSON (for a ``response_format``)."""
        self.reply(json.dumps(value))

    def tool_calls(
        self,
        *calls: tuple[str, Any],
        content: str | list[dict[str, Any]] | None = None,
        finish_reason: str = "tool_calls",
    ) -> list[str]:
        """Queue a reply asking for tool calls, and return their ids (``call_1``, ...).

        Each call is a ``(name, arguments)`` pair; arguments are a dict, sent as JSON,
        or a string, sent as it is (to test invalid JSON). The adapter runs the tools
        and sends their results back in the next request, as ``{"role": "tool",
        "tool_call_id": <id>, "content": ...}`` messages. ``finish_reason="length"``
        makes a reply the token limit cut off as it asked for tools.
        """
        if not calls:
            raise ValueError('tool_calls() needs at least one call, e.g. ("add", {"a": 1})')
        tool_calls: list[dict[str, Any]] = []
        ids: list[str] = []
        with self._lock:
            for call in calls:
                if not (isinstance(call, tuple) and len(call) == 2 and isinstance(call[0], str)):
                    raise TypeError(
                        f"each tool call is a (name, arguments) pair such as "
                        f'("add", {{"a": 1}}), not {call!r}'
                    )
                name, args = call
                self._ids += 1
                ids.append(f"call_{self._ids}")
                tool_calls.append(
                    {
                        "id": ids[-1],
                        "type": "function",
                        "function": {
                            "name": name,
                            "arguments": args if isinstance(args, str) else json.dumps(args),
                        },
                    }
                )
        message = {"content": content, "tool_calls": tool_calls}
        self.push(lambda req: self._completion(req, message, finish_reason, None))
        return ids

    def ask_human(self, question: str) -> str:
        """Queue a reply in which the model asks a person ``question`` (the adapter's
        ``ask_human`` tool); returns the call's id. The task then waits as
        ``WAITING_HUMAN``; after ``engine.resume(task_id, answer)`` the next request
        ends with the answer as that call's result."""
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"ask_human() needs a question (a non-empty str), not {question!r}")
        [call_id] = self.tool_calls((ASK_HUMAN, {"question": question}))
        return call_id

    def error(
        self, status: int, message: str, *, retry_after: str | None = None, as_json: bool = True
    ) -> None:
        """Queue an error response: ``{"error": {"message": ...}}`` as OpenAI sends it,
        or ``message`` as plain text with ``as_json=False``.

        The SDK retries 408, 409, 429 and 5xx itself (``max_retries``, default 2), so
        each retry takes the next queued response: queue one error per try, or set
        the adapter's ``max_retries=0``. ``retry_after`` sets the ``Retry-After``
        header (seconds), which the SDK waits before retrying.
        """
        if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
            raise ValueError(
                f"error() takes an HTTP error status from 400 to 599, not {status!r}; "
                f"use raw() for any other response"
            )
        headers = {"Content-Type": "application/json" if as_json else "text/plain"}
        if retry_after is not None:
            headers["Retry-After"] = retry_after
        body = (
            json.dumps({"error": {"message": message, "type": "server_error", "code": None}})
            if as_json
            else message
        )
        self.push((status, headers, body.encode()))

    def raw_tool_calls(self, *calls: dict[str, Any]) -> None:
        """Queue a reply whose ``tool_calls`` are exactly these dicts (no id added, the
        arguments not encoded), as some OpenAI-compatible servers send them."""
        message = {"content": None, "tool_calls": list(calls)}
        self.push(lambda req: self._completion(req, message, "tool_calls", None))

    def raw(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        """Queue a response with exactly this status and body (for malformed replies)."""
        self.push((status, {"Content-Type": content_type}, body))

    def hang(self) -> None:
        """Queue a request that gets no answer until the server stops (a hung server;
        give the adapter a ``timeout=``)."""

        def respond(req: RecordedRequest) -> Response:
            self._released.wait()
            return 503, {"Content-Type": "text/plain"}, b"released as the server stopped"

        self.push(respond)

    def push(self, response: Response | Callable[[RecordedRequest], Response]) -> None:
        """Queue a raw response ``(status, headers, body)``, or a function that gets the
        request and returns one (it runs in the server's thread)."""
        if not callable(response) and not (isinstance(response, tuple) and len(response) == 3):
            raise TypeError(
                f"push() takes a (status, headers, body) tuple or a function of the "
                f"request returning one, not {response!r}"
            )
        with self._lock:
            self._script.append(response)

    # -- what happened ---------------------------------------------------------------

    @property
    def pending(self) -> int:
        """How many queued responses no request has taken yet."""
        with self._lock:
            return len(self._script)

    @property
    def open_connections(self) -> int:
        """How many client connections are open now (an SDK keeps one open between
        calls until its client is closed)."""
        with self._lock:
            return len(self._connections)

    def messages(self, index: int = -1) -> list[dict[str, Any]]:
        """The ``messages`` of one received request (the last by default)."""
        if not self.requests:
            raise LookupError("FakeOpenAI has received no request yet")
        body = self.requests[index]["body"]
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            raise LookupError(f"request {index} has no messages: {body!r:.200}")
        messages: list[dict[str, Any]] = body["messages"]
        return messages

    # -- serving ---------------------------------------------------------------------

    def _completion(
        self,
        req: RecordedRequest,
        message: dict[str, Any],
        finish_reason: str,
        usage: dict[str, Any] | None,
    ) -> Response:
        body = req["body"] if isinstance(req["body"], dict) else {}
        counts: dict[str, Any] = dict(usage or {})
        # Rough, but in proportion, like a real tokenizer's counts.
        counts.setdefault("prompt_tokens", len(json.dumps(body.get("messages", []))) // 4)
        counts.setdefault("completion_tokens", len(json.dumps(message)) // 4)
        counts.setdefault("total_tokens", counts["prompt_tokens"] + counts["completion_tokens"])
        counts.setdefault("prompt_tokens_details", {"cached_tokens": 0})
        counts.setdefault("completion_tokens_details", {"reasoning_tokens": 0})
        number = len(self.requests)
        doc = {
            "id": f"chatcmpl-{number}",
            "object": "chat.completion",
            "created": int(time.time()),
            # A dated model name, as OpenAI answers for an alias.
            "model": str(body.get("model", "unknown")) + "-2024-08-06",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", **message},
                    "finish_reason": finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": counts,
        }
        headers = {"Content-Type": "application/json", "x-request-id": f"req_{number}"}
        return 200, headers, json.dumps(doc).encode()

    def _record(self, request: RecordedRequest, scripted: bool) -> _Scripted | None:
        with self._lock:
            self.requests.append(request)
            number = len(self.requests)
            if not scripted:
                return None
            if self._script:
                return self._script.pop(0)
        body = {
            "error": {
                "message": (
                    f"FakeOpenAI: no response queued for request {number} "
                    f"({request['method']} {request['path']}); queue one with reply(), "
                    f"tool_calls(), ask_human() or error()"
                ),
                "type": "test_error",
            }
        }
        # 418: a status the SDK does not retry, so the test sees it at once.
        return 418, {"Content-Type": "application/json"}, json.dumps(body).encode()


def _handler_for(fake: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # Keep-alive, as the SDK's httpx client expects of a real server.
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            with fake._lock:
                fake._connections.add(self.connection)

        def finish(self) -> None:
            with fake._lock:
                fake._connections.discard(self.connection)
            super().finish()

        def do_POST(self) -> None:
            with fake._lock:
                if fake._stopped:
                    # Arrived as the server stopped: closed unanswered.
                    self.close_connection = True
                    return
                fake._busy.add(self.connection)
            try:
                self._answer()
            finally:
                with fake._lock:
                    fake._busy.discard(self.connection)
                    if fake._stopped:
                        self.close_connection = True

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            try:
                body: Any = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
            request: RecordedRequest = {
                "method": "POST",
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body,
            }
            is_chat = self.path.split("?")[0].rstrip("/") == "/v1/chat/completions"
            scripted = fake._record(request, is_chat)
            if scripted is None:
                status, headers, payload = 404, {"Content-Type": "text/plain"}, b"not found"
            else:
                status, headers, payload = scripted(request) if callable(scripted) else scripted
            try:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                if "Content-Length" not in headers:  # given: a body cut short, say
                    self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                if "Content-Length" in headers:
                    self.close_connection = True  # what it did not send never comes
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting (its timeout)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # no access log on the test's stderr

    return Handler

"""The OpenAI agent adapter: runs an agentic phase as a chat-completions conversation with tools."""

from __future__ import annotations

import asyncio
import copy
import inspect
import logging
import os
import re
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from wfcore import Phase, Task
from wfcore.adapters import run_handler

from .checks import _check_request, _check_settings
from .client import _build_client
from .conversation import _answer_text, _converse
from .human import ASK_HUMAN, HUMAN_TOOL, _answered_since_asked, _wait_for_person
from .messages import Budget, opening_messages
from .records import CONTEXT_KEY, _short
from .redaction import _without_secrets
from .request import AgentRequest, _shapes_request
from .tools import Tool, as_tool

if TYPE_CHECKING:
    from openai import AsyncOpenAI

    from wfcore import ECSWorkflowEngine

__all__ = ["ASK_HUMAN", "AgentRequest", "OpenAIAgentAdapter"]

logger = logging.getLogger("wfe_openai")

# What the API allows in a json_schema response format's name.
_SCHEMA_NAME = re.compile(r"[^A-Za-z0-9_-]")


class OpenAIAgentAdapter:
    """Run agentic phases with an OpenAI (or OpenAI-compatible) chat model.

    ``engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter(model="gpt-4o"))``.

    :param model: the model name sent with every request.
    :param system_prompt: put before each phase's ``instructions`` in the system message.
    :param tools: functions (or :class:`~wfe_openai.Tool` objects) the model may call.
    :param max_steps: model calls allowed per run of a phase; a model still asking
        for tools after that fails the attempt.
    :param client: an ``openai.AsyncOpenAI`` (or ``AsyncAzureOpenAI``) to use instead of
        one built from ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL``.
    :param api_key: the key, instead of ``OPENAI_API_KEY``.
    :param base_url: the server, instead of ``OPENAI_BASE_URL`` (default api.openai.com).
    :param max_retries: retries of rate-limited (429), timed-out and 5xx requests, done
        by the SDK with backoff honouring ``Retry-After`` (the SDK's default is 2).
    :param allow_human: offer the built-in ``ask_human`` tool.
    :param answer_timeout: seconds a person has to answer each ``ask_human``
        question; then the phase's ``on_timeout`` applies. None: the phase's
        ``timeout`` (which also bounds each attempt of the phase).
    :param phase_options: per classification, options overriding the adapter's:
        ``model``, ``max_steps``, ``max_retries``, ``answer_timeout``,
        ``response_format`` or any request option.
    :param max_item_chars: the most characters of one item (the task data, one
        earlier output, one text artifact, one tool result, one person's answer) put
        into the conversation.
    :param max_input_chars: the most characters of task input in the opening message.
    :param request_options: passed to ``chat.completions.create`` (``temperature``,
        ``max_tokens``, ``response_format``, ``timeout``, ``extra_headers``, ...).
    """

    def __init__(
        self,
        model: str = "gpt-4o",
        system_prompt: str | None = None,
        tools: Iterable[Callable[..., Any] | Tool] | None = None,
        max_steps: int = 8,
        client: AsyncOpenAI | None = None,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        max_retries: int | None = None,
        allow_human: bool = True,
        answer_timeout: float | None = None,
        phase_options: Mapping[str, Mapping[str, Any]] | None = None,
        max_item_chars: int = 20_000,
        max_input_chars: int = 100_000,
        **request_options: Any,
    ) -> None:
        _check_settings(
            model=model,
            system_prompt=system_prompt,
            max_steps=max_steps,
            client=client,
            api_key=api_key,
            base_url=base_url,
            max_retries=max_retries,
            answer_timeout=answer_timeout,
            phase_options=phase_options,
            max_item_chars=max_item_chars,
            max_input_chars=max_input_chars,
            request_options=request_options,
        )
        self.model = model
        self.system_prompt = system_prompt
        self.max_steps = max_steps
        self.allow_human = allow_human
        self.answer_timeout = answer_timeout
        self.phase_options = {k: dict(v) for k, v in (phase_options or {}).items()}
        self.max_item_chars = max_item_chars
        self.max_input_chars = max_input_chars
        self.request_options = dict(request_options)
        if tools is not None and (
            callable(tools) or isinstance(tools, (str, bytes, Mapping)) or not _iterable(tools)
        ):
            # One function passed as tools= would otherwise fail as "not iterable".
            example = getattr(tools, "name", None) or getattr(tools, "__name__", None) or "f"
            raise TypeError(
                f"tools must be a list of functions or Tool objects, such as "
                f"tools=[{example}], not {tools!r}"
            )
        self.tools: list[Tool] = []
        for item in tools or ():
            self.add_tool(item)
        self._api_key = api_key
        self._base_url = base_url
        self._max_retries = max_retries
        if client is not None and max_retries is not None:
            client = client.with_options(max_retries=max_retries)
        self._given_client = client
        self._own_client: AsyncOpenAI | None = None
        self._own_loop: asyncio.AbstractEventLoop | None = None
        # Per event loop, the client built for it and what closes it as the loop ends.
        self._closers: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[AsyncOpenAI, AsyncIterator[None]]
        ] = weakref.WeakKeyDictionary()
        # phase_options keys already warned about as naming no phase (plugin.py).
        self._warned_phase_options: set[str] = set()
        # What a timed-out request's error names as the adapter's timeout: the
        # plugin's adapter has it from WFE_OPENAI_TIMEOUT.
        self._timeout_setting = "the adapter's timeout= option"

    def __repr__(self) -> str:
        return f"OpenAIAgentAdapter(model={self.model!r}, tools={[t.name for t in self.tools]})"

    def add_tool(
        self,
        function: Callable[..., Any] | Tool,
        *,
        name: str | None = None,
        description: str | None = None,
        parameters: Mapping[str, Any] | None = None,
    ) -> Tool:
        """Offer a tool to the model in every phase; returns the :class:`Tool`.

        Usable as a decorator: ``@adapter.add_tool``.
        """
        if isinstance(function, Tool):
            new = function
            if name or description or parameters:
                new = Tool(
                    function.function,
                    name=name or function.name,
                    description=description if description is not None else function.description,
                    parameters=parameters if parameters is not None else function.parameters,
                )
        elif name or description is not None or parameters is not None:
            new = Tool(function, name=name, description=description, parameters=parameters)
        else:
            new = as_tool(function)
        if new.name == ASK_HUMAN and self.allow_human:
            raise ValueError(f"the tool name {ASK_HUMAN!r} is the built-in human escalation")
        if any(t.name == new.name for t in self.tools):
            raise ValueError(f"a tool named {new.name!r} is already registered")
        self.tools.append(new)
        return new

    # -- the client ------------------------------------------------------------------

    def _client(self) -> AsyncOpenAI:
        """The client, built on first use (so a missing key fails the run, not the import)."""
        if self._given_client is not None:
            return self._given_client
        loop = asyncio.get_running_loop()
        # An httpx connection pool belongs to one event loop; build one per loop.
        if self._own_client is not None and self._own_loop is loop:
            return self._own_client
        client = _build_client(self._api_key, self._base_url, self._max_retries, self._redact)
        self._own_client, self._own_loop = client, loop
        return client

    async def _close_with_its_loop(self, client: AsyncOpenAI) -> None:
        """Have a client this adapter built closed as its event loop ends.

        ``asyncio.run`` (a ``wfe worker``, a script, each ``wfe_run`` of a test) closes
        the async generators still open as it ends: this one then closes the client,
        in its own loop, so its connections do not outlive the loop without
        ``aclose()``. A loop ended otherwise leaves that to ``aclose()``, as before.
        """
        if client is not self._own_client:
            return  # a given client is the app's to close
        loop = asyncio.get_running_loop()
        started = self._closers.get(loop)
        if started is not None and started[0] is client:
            return
        closer = _close_at_loop_end(client)
        await closer.__anext__()
        self._closers[loop] = (client, closer)

    async def aclose(self) -> None:
        """Close the HTTP connections of the client this adapter built (not a given one)."""
        client, self._own_client, self._own_loop = self._own_client, None, None
        if client is not None:
            await client.close()

    def _secrets(self) -> list[str]:
        found = [
            self._api_key,
            os.environ.get("OPENAI_API_KEY"),
            getattr(self._given_client, "api_key", None),
            getattr(self._own_client, "api_key", None),
        ]
        # A password in the server URL, wherever a server might echo it.
        for client in (self._given_client, self._own_client):
            found.append(getattr(getattr(client, "base_url", None), "password", None))
        return [s for s in found if isinstance(s, str) and len(s) >= 4]

    def _redact(self, text: str) -> str:
        """``text`` without the API key and without credentials in any URL."""
        return _without_secrets(text, self._secrets())

    # -- running a phase -------------------------------------------------------------

    async def run(self, task: Task, phase: Phase, engine: ECSWorkflowEngine) -> None:
        """Run one attempt of ``phase``: call the model, run its tools, set the output."""
        # Typed by the engine as handler(task); this adapter also calls handler(task, request).
        handler: Callable[..., Any] | None = engine.handler_for(phase.target_classification)
        if handler is not None and not _shapes_request(handler):
            # A plain handler(task) does the phase itself, as with the built-in adapter.
            await run_handler(handler, task)
            return
        state = task.context.setdefault(CONTEXT_KEY, {})
        name = phase.target_classification
        saved = state.get("conversation")
        resumed = bool(
            task.resume_in_phase and isinstance(saved, dict) and saved.get("phase") == name
        )
        progress = state.get("progress")
        # Read before this run's calls: on from the attempt's calls before a
        # person's answer or a worker's end, so that each call has its own step.
        first_number = _next_step(task, name)
        interrupted = _interrupted_run(task, name, progress)
        if not interrupted:
            state.pop("progress", None)  # left by an attempt that ended, if any
        first_step = 1
        if interrupted:
            # The worker of an earlier run of this attempt died (or was stopped) after
            # a round of tool results it checkpointed: go on from there, without
            # running those tools again.
            assert isinstance(progress, dict)
            messages = copy.deepcopy(progress["messages"])
            first_step = progress["steps"] + 1
            resumed = False
            task.record("agent_continued", phase=name, steps=progress["steps"])
        elif resumed and not _answered_since_asked(task):
            # Run again without an answer (a retry after cancelling the wait, say): no
            # person answered, so the question stands; the model is not called. Decided
            # from the history alone: task.reply may still hold the answer to an
            # earlier question of the same phase, which must never answer this one.
            assert isinstance(saved, dict)
            _wait_for_person(task, engine, saved, self._answer_timeout(phase), repeated=True)
            return
        elif resumed:
            assert isinstance(saved, dict)
            messages = copy.deepcopy(saved["messages"])
            answer = _answer_text(task.reply)
            # Cut as a tool result is: a pasted document must not fill the model's
            # context. task.reply keeps the whole answer.
            content = Budget(self.max_item_chars, self.max_item_chars).take(answer)
            messages.append(
                {"role": "tool", "tool_call_id": saved["pending_call_id"], "content": content}
            )
            task.record("agent_resumed", phase=name, answer=_short(answer))
        else:
            # A question left behind (its deadline passed, and on_timeout decided) is
            # no part of a new run.
            state.pop("conversation", None)
            budget = Budget(self.max_item_chars, self.max_input_chars)
            messages = await opening_messages(task, phase, engine, self.system_prompt, budget)
        request = self._request(phase, messages, resumed)
        request.continued = first_step > 1
        if handler is not None:
            result = handler(task, request)
            if inspect.isawaitable(result):
                await result
            if task.status.is_waiting:
                return
            _check_request(request)
        # Built only now: a handler that hands the phase to a person needs no key.
        client = self._client()
        await self._close_with_its_loop(client)
        await _converse(
            client,
            task,
            phase,
            engine,
            request,
            state,
            first_step=first_step,
            first_number=first_number,
            answer_timeout=self._answer_timeout(phase),
            max_item_chars=self.max_item_chars,
            redact=self._redact,
            timeout_origin=self._timeout_origin(phase, request.options),
            key_origin=self._key_origin(),
            progress_stored=progress is not None,
        )

    def _request(self, phase: Phase, messages: list[dict[str, Any]], resumed: bool) -> AgentRequest:
        options = dict(self.request_options)
        options.update(self.phase_options.get(phase.target_classification, {}))
        model = options.pop("model", self.model)
        max_steps = options.pop("max_steps", self.max_steps)
        options.pop("answer_timeout", None)  # the adapter's, not the API's (_answer_timeout)
        response_format = options.pop("response_format", None)
        if response_format is None and phase.input_schema is not None:
            # The phase types its output (as a person's answer to a human phase is
            # typed): ask for JSON of that schema; _output checks the reply against it.
            response_format = {
                "type": "json_schema",
                "json_schema": {
                    "name": _SCHEMA_NAME.sub("_", phase.target_classification)[:64],
                    "schema": phase.input_schema,
                },
            }
        tools = list(self.tools) + ([HUMAN_TOOL] if self.allow_human else [])
        return AgentRequest(
            model=model,
            messages=messages,
            tools=tools,
            response_format=response_format,
            options=options,
            max_steps=max_steps,
            resumed=resumed,
            phase=phase,
        )

    def _timeout_origin(self, phase: Phase, options: Mapping[str, Any]) -> str:
        """Where the request timeout of a phase comes from, for a timed-out request's
        error: the phase's phase_options, the adapter (or WFE_OPENAI_TIMEOUT), or the
        phase's handler; the adapter's setting when none is given (the SDK's default
        applies, which that setting changes)."""
        name = phase.target_classification
        given = options.get("timeout")
        per_phase = self.phase_options.get(name, {})
        if "timeout" in per_phase and given == per_phase["timeout"]:
            return f"phase_options[{name!r}]['timeout']"
        if given == self.request_options.get("timeout"):
            return self._timeout_setting
        return "request.options['timeout'], set by the phase's handler"

    def _key_origin(self) -> str:
        """Where the key the adapter sends comes from, for an error that refuses it."""
        if self._given_client is not None:
            return "the client= given to the adapter"
        if self._api_key:
            return "the adapter's api_key="
        return "OPENAI_API_KEY"

    def _answer_timeout(self, phase: Phase) -> float | None:
        """Seconds a person has to answer a question of ``phase``: its phase_options'
        ``answer_timeout``, else the adapter's, else (None) the phase's ``timeout``."""
        options = self.phase_options.get(phase.target_classification, {})
        seconds = options.get("answer_timeout", self.answer_timeout)
        return phase.timeout if seconds is None else seconds


async def _close_at_loop_end(client: AsyncOpenAI) -> AsyncIterator[None]:
    """Wait, then close ``client``: its loop closes the generator as it ends."""
    try:
        yield
    finally:
        if not client.is_closed():
            await client.close()


def _iterable(value: Any) -> bool:
    try:
        iter(value)
    except TypeError:
        return False
    return True


# History events after which a checkpointed conversation is not continued: the
# attempt that stored it ended (failed, was cancelled or retried, the phase
# finished or waited). A run interrupted by a dead or stopping worker leaves only
# "released", "taken_over" and "phase_started" (and the events of its last round).
_ATTEMPT_ENDED = frozenset(
    {
        "attempt_failed",
        "failed",
        "cancelled",
        "retried",
        "phase_finished",
        "suspended",
        "resumed",
        "deadline_passed",
        "routed",
    }
)


def _interrupted_run(task: Task, phase: str, progress: Any) -> bool:
    """True if ``progress`` is the checkpointed conversation of a run of this phase
    that was interrupted in this attempt, rather than one that ended."""
    if not isinstance(progress, dict) or progress.get("phase") != phase:
        return False
    since = task.history[progress.get("events", len(task.history)) :]
    return not any(event.get("event") in _ATTEMPT_ENDED for event in since)


# History events after which a model call is of a new attempt, not numbered on from
# the calls before it: those that end a conversation, except a person's answer.
_NEW_ATTEMPT = _ATTEMPT_ENDED - {"suspended", "resumed"}


def _next_step(task: Task, phase: str) -> int:
    """The step of the next model call of ``phase``: on from the last call when that
    was made in this attempt (before a person's answer, or by a worker that died or
    stopped), else 1."""
    last = task.context.get(CONTEXT_KEY, {}).get("last_call")
    if not isinstance(last, dict):
        return 1
    step, events = last.get("step"), last.get("events")
    if (
        last.get("phase") != phase
        or last.get("attempt") != task.attempts
        or not isinstance(step, int)
        or not isinstance(events, int)
    ):
        return 1
    if any(event.get("event") in _NEW_ATTEMPT for event in task.history[events:]):
        return 1
    return step + 1

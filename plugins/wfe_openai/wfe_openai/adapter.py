"""The OpenAI agent adapter: runs an agentic phase as a chat-completions conversation with tools."""

from __future__ import annotations

import asyncio
import copy
import inspect
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import jsonschema

from wfcore import AdapterError, Phase, Task, TaskStatus
from wfcore.adapters import run_handler

from .messages import Budget, opening_messages
from .tools import Tool, ToolArgumentsError, as_tool

if TYPE_CHECKING:
    from openai import AsyncOpenAI

    from wfcore import ECSWorkflowEngine

__all__ = ["ASK_HUMAN", "AgentRequest", "OpenAIAgentAdapter"]

logger = logging.getLogger("wfe_openai")

#: The name of the built-in tool through which the model asks a person.
ASK_HUMAN = "ask_human"

#: Where the adapter keeps its state in ``task.context``.
CONTEXT_KEY = "openai"

# Request options the adapter sets itself; passing them would break the conversation.
_RESERVED_OPTIONS = frozenset({"messages", "model", "tools", "stream", "n"})
_HISTORY_CHARS = 2000
# Credentials a server URL can carry: "user:password@" before the host, and keys in
# the query (Azure-style api-key=, key=, SAS signatures). Error messages name the
# server, so these are masked wherever a URL shows.
_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s@]+@")
_URL_SECRET_PARAM = re.compile(
    r"(?P<name>[?&](?:api[-_]?key|key|token|access[-_]token|secret|password|sig|signature)=)"
    r"[^&#\s)]+",
    re.IGNORECASE,
)
# Credentials at the start of a URL, with or without a scheme ("user:pw@host").
_LEADING_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)?[^/?#@]*@")
_JSON_FORMATS = ("json_object", "json_schema")
#: The server the SDK uses when no other is configured.
_DEFAULT_BASE_URL = "https://api.openai.com/v1"


def _ask_human(question: str) -> str:
    raise AssertionError("ask_human is handled by the adapter, never called")


HUMAN_TOOL = Tool(
    _ask_human,
    name=ASK_HUMAN,
    description=(
        "Ask a person a question and wait for their answer. Use it when you need "
        "information, a decision or an approval that only a person can give. The "
        "question must be complete and understandable on its own."
    ),
    parameters={
        "type": "object",
        "properties": {"question": {"type": "string", "description": "The question to ask."}},
        "required": ["question"],
    },
)


@dataclass
class AgentRequest:
    """What the adapter is about to send for one phase; a handler may change any of it.

    A handler registered for the phase's classification as ``handler(task, request)``
    (sync or async) is called before the first model call of every run of the phase,
    including the run that continues after a person answered (``resumed`` is True
    then, and ``messages`` already ends with the answer).
    """

    #: The model to call.
    model: str
    #: The conversation so far: chat-completions message dicts.
    messages: list[dict[str, Any]]
    #: The tools the model may call (``ask_human`` included unless disabled).
    tools: list[Tool]
    #: ``{"type": "json_object"}`` or ``{"type": "json_schema", "json_schema": {...}}``
    #: makes the reply JSON: the output is the parsed object, and a reply that does not
    #: parse (or fails the schema) fails the attempt. None asks for plain text.
    response_format: dict[str, Any] | None
    #: Other ``chat.completions.create`` arguments (temperature, max_tokens, ...), and
    #: ``max_retries``, the SDK's retries of this phase's requests.
    options: dict[str, Any]
    #: How many model calls this run may make.
    max_steps: int
    #: True when this run continues a conversation after a person's answer.
    resumed: bool = False
    #: Turns the reply (the text, or the parsed JSON object) into the phase output;
    #: may be async; raising fails the attempt with the error as the reason.
    parse: Callable[[Any], Any] | None = None
    #: The phase being run.
    phase: Phase | None = field(default=None, repr=False)

    def add_tool(self, function: Callable[..., Any] | Tool, **kwargs: Any) -> Tool:
        """Offer one more tool for this request (see :class:`~wfe_openai.Tool`)."""
        new = function if isinstance(function, Tool) else Tool(function, **kwargs)
        self.tools = [t for t in self.tools if t.name != new.name] + [new]
        return new


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
    :param phase_options: per classification, options overriding the adapter's:
        ``model``, ``max_steps``, ``response_format`` or any request option.
    :param max_item_chars: the most characters of one item (the task data, one
        earlier output, one text artifact, one tool result) put into the conversation.
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
        phase_options: Mapping[str, Mapping[str, Any]] | None = None,
        max_item_chars: int = 20_000,
        max_input_chars: int = 100_000,
        **request_options: Any,
    ) -> None:
        if not isinstance(model, str) or not model:
            raise ValueError("model must be a non-empty string")
        if not _is_count(max_steps, 1):
            raise ValueError("max_steps must be an integer >= 1")
        if max_retries is not None:
            _check_max_retries(max_retries, "max_retries")
        for name, value in (
            ("system_prompt", system_prompt),
            ("api_key", api_key),
            ("base_url", base_url),
        ):
            if value is not None and not isinstance(value, str):
                # The type only: a key given as bytes must not show in a traceback.
                raise TypeError(f"{name} must be a string or None, not {type(value).__name__}")
        if api_key:
            _check_api_key(api_key, "api_key=", ValueError)
        if base_url:
            _check_base_url(base_url, "base_url", ValueError)
        for name, count in (
            ("max_item_chars", max_item_chars),
            ("max_input_chars", max_input_chars),
        ):
            if not _is_count(count, 1):
                raise ValueError(f"{name} must be an integer >= 1, not {count!r}")
        _check_options(request_options, "request option")
        if phase_options is not None and not isinstance(phase_options, Mapping):
            raise TypeError(
                "phase_options must be a dict of classification -> options, such as "
                f"{{'review': {{'model': 'gpt-4o-mini'}}}}, not {phase_options!r}"
            )
        for name, options in (phase_options or {}).items():
            if not isinstance(name, str):
                raise TypeError(f"phase_options keys are classifications (strings), not {name!r}")
            what = f"phase_options[{name!r}]"
            if not isinstance(options, Mapping):
                raise TypeError(
                    f"{what} must be a dict of options such as {{'model': 'gpt-4o-mini'}}, "
                    f"not {options!r}"
                )
            _check_options(options, what)
        if client is not None:
            import openai

            if isinstance(client, openai.OpenAI):
                raise TypeError("client must be an async client: openai.AsyncOpenAI, not OpenAI")
        self.model = model
        self.system_prompt = system_prompt
        self.max_steps = max_steps
        self.allow_human = allow_human
        self.phase_options = {k: dict(v) for k, v in (phase_options or {}).items()}
        self.max_item_chars = max_item_chars
        self.max_input_chars = max_input_chars
        self.request_options = dict(request_options)
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
        key = self._api_key or os.environ.get("OPENAI_API_KEY")
        if not key:
            raise AdapterError(
                "OPENAI_API_KEY is not set: export it (any non-empty value for a local "
                "server that ignores keys), or pass api_key= or client= to OpenAIAgentAdapter"
            )
        if not self._api_key:
            _check_api_key(key, "OPENAI_API_KEY", AdapterError)
        import openai

        kwargs: dict[str, Any] = {"api_key": key}
        if self._base_url:
            kwargs["base_url"] = self._base_url
        else:
            env_url = os.environ.get("OPENAI_BASE_URL")
            if env_url is not None and not env_url.strip():
                # "OPENAI_BASE_URL=" in a .env file means no server of one's own; the
                # SDK would take the empty text as the URL (openai-python#2927).
                kwargs["base_url"] = _DEFAULT_BASE_URL
            elif env_url is not None:
                _check_base_url(env_url, "OPENAI_BASE_URL", AdapterError)
        if self._max_retries is not None:
            kwargs["max_retries"] = self._max_retries
        try:
            client = openai.AsyncOpenAI(**kwargs)
        except openai.OpenAIError as exc:
            raise AdapterError(self._redact(f"cannot create the OpenAI client: {exc}")) from None
        self._own_client, self._own_loop = client, loop
        return client

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
        for secret in sorted(_secret_forms(self._secrets()), key=len, reverse=True):
            text = text.replace(secret, "***")
        text = _URL_USERINFO.sub(r"\g<scheme>***@", text)
        return _URL_SECRET_PARAM.sub(r"\g<name>***", text)

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
        saved = state.get("conversation")
        resumed = bool(
            task.resume_in_phase
            and isinstance(saved, dict)
            and saved.get("phase") == phase.target_classification
        )
        if resumed and task.reply is None and not _answered_since_asked(task):
            # Run again without an answer (a retry after cancelling the wait, say): no
            # person answered, so the question stands; the model is not called.
            assert isinstance(saved, dict)
            _wait_for_person(task, engine, saved, repeated=True)
            return
        client = self._client()
        if resumed:
            assert isinstance(saved, dict)
            messages = copy.deepcopy(saved["messages"])
            answer = _answer_text(task.reply)
            messages.append(
                {"role": "tool", "tool_call_id": saved["pending_call_id"], "content": answer}
            )
            task.record("agent_resumed", phase=phase.target_classification, answer=_short(answer))
        else:
            budget = Budget(self.max_item_chars, self.max_input_chars)
            messages = await opening_messages(task, phase, engine, self.system_prompt, budget)
        request = self._request(phase, messages, resumed)
        if handler is not None:
            result = handler(task, request)
            if inspect.isawaitable(result):
                await result
            if task.status.is_waiting:
                return
            _check_request(request)
        await self._converse(client, task, phase, engine, request, state)

    def _request(self, phase: Phase, messages: list[dict[str, Any]], resumed: bool) -> AgentRequest:
        options = dict(self.request_options)
        options.update(self.phase_options.get(phase.target_classification, {}))
        model = options.pop("model", self.model)
        max_steps = options.pop("max_steps", self.max_steps)
        response_format = options.pop("response_format", None)
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

    async def _converse(
        self,
        client: AsyncOpenAI,
        task: Task,
        phase: Phase,
        engine: ECSWorkflowEngine,
        request: AgentRequest,
        state: dict[str, Any],
    ) -> None:
        name = phase.target_classification
        messages = request.messages
        tools = {t.name: t for t in request.tools}
        last_calls: list[str] = []
        for step in range(1, request.max_steps + 1):
            message, finish_reason = await self._complete(client, task, request, step)
            calls = _tool_calls(message, position=len(messages))
            if not calls:
                task.output = await self._output(request, message, finish_reason)
                state.pop("conversation", None)
                return
            messages.append(_assistant_message(message, calls))
            last_calls = [c.name or "a call without a function name" for c in calls]
            pending: tuple[str, str] | None = None
            for call in calls:
                if call.name == ASK_HUMAN and tools.get(ASK_HUMAN) is HUMAN_TOOL:
                    if pending is not None:
                        content = "Only one question at a time: ask again after the answer."
                    else:
                        try:
                            question = HUMAN_TOOL.parse_arguments(call.arguments)["question"]
                        except ToolArgumentsError as exc:
                            content = f"error: {exc}"
                        else:
                            pending = (call.id, question)
                            continue
                    messages.append({"role": "tool", "tool_call_id": call.id, "content": content})
                    continue
                content = await self._call_tool(task, engine, name, tools, call)
                messages.append({"role": "tool", "tool_call_id": call.id, "content": content})
            if pending is not None:
                call_id, question = pending
                state["conversation"] = {
                    "phase": name,
                    "messages": messages,
                    "pending_call_id": call_id,
                    "question": question,
                }
                _wait_for_person(task, engine, state["conversation"])
                return
        raise AdapterError(
            f"max_steps={request.max_steps} exhausted in phase {name!r}: the model still "
            f"asked for tools ({', '.join(last_calls)}) after {request.max_steps} calls"
        )

    async def _call_tool(
        self,
        task: Task,
        engine: ECSWorkflowEngine,
        phase_name: str,
        tools: dict[str, Tool],
        call: _ToolCall,
    ) -> str:
        """Run one tool call and return what the model gets back; errors go to the model."""
        tool_name = call.name
        task.record(
            "agent_tool_call",
            phase=phase_name,
            tool=tool_name,
            call_id=call.id,
            arguments=_short(_arguments_text(call.arguments)),
        )
        error = True
        tool = tools.get(tool_name)
        if call.type != "function":
            content = f"error: tool calls of type {call.type!r} are not supported"
        elif not tool_name:
            # A compatible server's translation may lose the function object; the
            # model is told, as for any other bad call, and max_steps bounds a repeat.
            content = (
                "error: tool call without a function name; call a tool by its name: "
                f"{', '.join(tools)}"
            )
        elif tool is None or tool is HUMAN_TOOL:
            content = f"error: no tool named {tool_name!r}; available: {', '.join(tools)}"
        else:
            try:
                arguments = tool.parse_arguments(call.arguments)
                result = await tool.invoke(arguments, task, engine)
            except ToolArgumentsError as exc:
                content = f"error: invalid arguments for {tool_name}: {exc}"
            except Exception as exc:
                logger.info("task %s: tool %s failed: %s", task.id, tool_name, exc)
                content = f"error: {type(exc).__name__}: {exc}"
            else:
                content = _answer_text(result)
                error = False
        content = Budget(self.max_item_chars, self.max_item_chars).take(content)
        task.record(
            "agent_tool_result",
            phase=phase_name,
            tool=tool_name,
            call_id=call.id,
            error=error,
            result=_short(content),
        )
        return content

    async def _complete(
        self, client: AsyncOpenAI, task: Task, request: AgentRequest, step: int
    ) -> tuple[Any, str | None]:
        """One chat completion; returns the reply message and finish reason."""
        import openai

        kwargs = dict(request.options)
        # max_retries belongs to the client, not to create(): a phase's own value
        # (phase_options or a handler) gets a copy of the client that shares its
        # connections.
        max_retries = kwargs.pop("max_retries", None)
        if max_retries is not None:
            try:
                _check_max_retries(max_retries, "max_retries")
            except ValueError as exc:
                raise AdapterError(f"invalid chat completion request: {exc}") from None
            client = client.with_options(max_retries=max_retries)
        kwargs["model"] = request.model
        kwargs["messages"] = request.messages
        if request.tools:
            kwargs["tools"] = [t.spec() for t in request.tools]
        if request.response_format is not None:
            kwargs["response_format"] = request.response_format
        where = str(getattr(client, "base_url", "the OpenAI API"))
        started = time.monotonic()
        try:
            completion = await client.chat.completions.create(**kwargs)
        except openai.APIStatusError as exc:
            retried = ""
            if exc.status_code in (408, 409, 429) or exc.status_code >= 500:
                retried = f" after {getattr(client, 'max_retries', '?')} retries"
            raise AdapterError(
                self._redact(
                    f"chat completion failed with HTTP {exc.status_code}{retried} "
                    f"({where}): {_server_error_text(exc)}"
                )
            ) from None
        except openai.APITimeoutError:
            limit = _timeout_text(kwargs.get("timeout", getattr(client, "timeout", None)))
            raise AdapterError(
                self._redact(
                    f"chat completion timed out after {getattr(client, 'max_retries', '?')} "
                    f"retries ({where}): no reply within {limit} per request (the adapter's "
                    "timeout= option)"
                )
            ) from None
        except openai.APIConnectionError as exc:
            cause = exc.__cause__ or exc
            raise AdapterError(
                self._redact(f"cannot reach the chat completions server ({where}): {cause}")
            ) from None
        except TypeError as exc:
            # Raised before anything is sent: an option create() does not take.
            raise AdapterError(self._redact(f"invalid chat completion request: {exc}")) from None
        except (openai.OpenAIError, ValueError) as exc:
            raise AdapterError(
                self._redact(f"malformed response from {where}: {type(exc).__name__}: {exc}")
            ) from None
        seconds = time.monotonic() - started
        choices = getattr(completion, "choices", None)
        choice = choices[0] if isinstance(choices, list) and choices else None
        message = getattr(choice, "message", None)
        if message is None:
            raise AdapterError(self._redact(_no_message_reason(completion, where)))
        finish_reason = getattr(choice, "finish_reason", None)
        self._account(task, request, step, completion, message, finish_reason, seconds)
        return message, finish_reason

    def _account(
        self,
        task: Task,
        request: AgentRequest,
        step: int,
        completion: Any,
        message: Any,
        finish_reason: str | None,
        seconds: float,
    ) -> None:
        """Put the model and token counts of one call into ``task.context["openai"]``."""
        usage = getattr(completion, "usage", None)
        prompt_details = getattr(usage, "prompt_tokens_details", None)
        completion_details = getattr(usage, "completion_tokens_details", None)
        entry = {
            "phase": request.phase.target_classification if request.phase else None,
            "step": step,
            "model": request.model,
            "response_model": getattr(completion, "model", None),
            "request_id": getattr(completion, "_request_id", None),
            "prompt_tokens": _count(usage, "prompt_tokens"),
            "completion_tokens": _count(usage, "completion_tokens"),
            "total_tokens": _count(usage, "total_tokens"),
            "cached_tokens": _count(prompt_details, "cached_tokens"),
            "reasoning_tokens": _count(completion_details, "reasoning_tokens"),
            "tool_calls": len(getattr(message, "tool_calls", None) or []),
            "finish_reason": finish_reason,
            "seconds": round(seconds, 3),
        }
        state = task.context.setdefault(CONTEXT_KEY, {})
        state.setdefault("calls", []).append(entry)
        totals = state.setdefault("usage", {})
        by_model = totals.setdefault(request.model, {})
        for bucket in (totals, by_model):
            bucket["calls"] = bucket.get("calls", 0) + 1
            for key in (
                "prompt_tokens",
                "completion_tokens",
                "total_tokens",
                "cached_tokens",
                "reasoning_tokens",
            ):
                bucket[key] = bucket.get(key, 0) + (entry[key] or 0)
        logger.debug(
            "task %s: %s step %d: %s prompt + %s completion tokens, %d tool call(s)",
            task.id,
            request.model,
            step,
            entry["prompt_tokens"],
            entry["completion_tokens"],
            entry["tool_calls"],
        )

    async def _output(self, request: AgentRequest, message: Any, finish_reason: str | None) -> Any:
        """The phase output from the final reply: text, or the parsed JSON object."""
        refusal = getattr(message, "refusal", None)
        if refusal:
            raise AdapterError(f"the model refused: {refusal}")
        text = _content_text(message)
        if finish_reason == "length":
            # The end is missing, whatever the text looks like (JSON may even parse):
            # a failed attempt, so the phase's max_attempts or a retry applies.
            ending = f"it ends {text[-200:]!r}" if isinstance(text, str) and text else "no text"
            raise AdapterError(
                "the reply was cut off by the output token limit (finish_reason=length; "
                f"raise max_tokens or max_completion_tokens): {ending}"
            )
        if finish_reason == "content_filter":
            # The server withheld some or all of the reply: what came is not the answer.
            raise AdapterError(
                "the reply was stopped by the server's content filter "
                "(finish_reason=content_filter)"
            )
        if not isinstance(text, str) or not text.strip():
            raise AdapterError(f"the model sent an empty reply (finish_reason={finish_reason})")
        value: Any = text
        fmt = request.response_format or {}
        if fmt.get("type") in _JSON_FORMATS:
            value = _parse_json_reply(text, fmt)
        if request.parse is not None:
            try:
                value = request.parse(value)
                if inspect.isawaitable(value):
                    value = await value
            except Exception as exc:
                raise AdapterError(
                    f"the reply was rejected by the handler's parse: {type(exc).__name__}: {exc}"
                ) from None
        return value


# -- helpers -------------------------------------------------------------------------


def _check_api_key(key: str, source: str, error: type[Exception]) -> None:
    """Refuse a key no HTTP header can carry, saying why but never showing the key.

    Sent as it is, such a key fails in the HTTP library, whose error quotes the
    header with the key in it.
    """
    if not key.strip():
        problem = "is blank: it holds only whitespace"
    elif not key.isascii():
        problem = "holds a non-ASCII character"
    elif not all("!" <= char <= "~" for char in key):
        problem = "holds whitespace or a control character (a trailing newline from a file?)"
    else:
        return
    raise error(f"the API key ({source}) {problem}")


def _check_base_url(url: str, source: str, error: type[Exception]) -> None:
    """Refuse a server URL the SDK cannot send a request to.

    Otherwise each request fails only when sent, is retried as a connection error,
    and is reported as a server that cannot be reached.
    """
    try:
        parts = urlsplit(url)
        _ = parts.port  # a port that is not a number raises ValueError
    except ValueError:
        usable = False
    else:
        usable = (
            parts.scheme.lower() in ("http", "https")
            and bool(parts.hostname)
            # urlsplit drops tabs and newlines; httpx refuses them and spaces.
            and not any(char.isspace() or not char.isprintable() for char in url)
        )
    if not usable:
        shown = _URL_SECRET_PARAM.sub(r"\g<name>***", _LEADING_USERINFO.sub(r"\g<scheme>***@", url))
        raise error(f"{source} must be an http:// or https:// URL, got {shown!r}")


def _secret_forms(secrets: Iterable[str]) -> set[str]:
    """Each secret as it may show in an error text: as is, stripped, and escaped.

    Errors often quote a value with repr(), so a key with a newline shows as
    ``sk-...\\n`` and would slip past a search for the key itself.
    """
    forms: set[str] = set()
    for secret in secrets:
        forms.update(
            (
                secret,
                secret.strip(),
                repr(secret)[1:-1],
                json.dumps(secret)[1:-1],
                repr(secret.encode("utf-8", "backslashreplace"))[2:-1],
            )
        )
    # Very short forms would mask unrelated text.
    return {form for form in forms if len(form) >= 4}


def _check_options(options: Mapping[str, Any], what: str) -> None:
    bad = sorted(set(options) & _RESERVED_OPTIONS)
    if "model" in bad and what.startswith("phase_options"):
        bad.remove("model")
    if bad:
        raise TypeError(
            f"{what} {', '.join(bad)} cannot be set: the adapter builds the messages and "
            "tools itself (use tools= / add_tool, or a handler to shape the request)"
        )
    fmt = options.get("response_format")
    if fmt is not None and (not isinstance(fmt, Mapping) or "type" not in fmt):
        raise TypeError(f"{what} response_format must be a dict such as {{'type': 'json_object'}}")
    if fmt is not None:
        _check_json_schema_format(fmt, f"{what} response_format")
    steps = options.get("max_steps")
    if steps is not None and not _is_count(steps, 1):
        raise ValueError(f"{what} max_steps must be an integer >= 1")
    if options.get("max_retries") is not None:
        _check_max_retries(options["max_retries"], f"{what} max_retries")
    if "model" in options and not (isinstance(options["model"], str) and options["model"]):
        raise ValueError(f"{what} model must be a non-empty string, not {options['model']!r}")
    timeout = options.get("timeout")
    # A number must be a positive count of seconds; anything else but a string is
    # left to the SDK (an httpx.Timeout).
    if isinstance(timeout, (bool, str)) or (isinstance(timeout, (int, float)) and not timeout > 0):
        raise ValueError(
            f"{what} timeout must be a number of seconds > 0 (or an httpx.Timeout), not {timeout!r}"
        )


def _check_json_schema_format(fmt: Mapping[str, Any], what: str) -> None:
    """Refuse a ``json_schema`` response format whose schema could not check a reply.

    Checked now, because the schema is first used on the model's reply, after the
    call has been paid for.
    """
    if fmt.get("type") != "json_schema":
        return
    spec = fmt.get("json_schema")
    if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
        raise TypeError(
            f"{what} json_schema must be a dict with a 'name' (and a 'schema'), "
            f"such as {{'name': 'answer', 'schema': {{'type': 'object'}}}}"
        )
    schema = spec.get("schema")
    if schema is None:
        return
    if not isinstance(schema, Mapping):
        raise TypeError(f"{what} json_schema schema must be a dict, not {schema!r}")
    try:
        # A copy: jsonschema's "object" is a dict, not any Mapping.
        jsonschema.validators.validator_for(schema).check_schema(dict(schema))
    except jsonschema.SchemaError as exc:
        raise ValueError(
            f"{what} json_schema schema is not a valid JSON Schema: {exc.message}"
        ) from None


def _check_request(request: AgentRequest) -> None:
    """Fail the attempt, saying why, when a handler left the request unusable."""
    fmt = request.response_format
    problem = None
    if not isinstance(request.model, str) or not request.model:
        problem = f"request.model must be a non-empty string, not {request.model!r}"
    elif not _is_count(request.max_steps, 1):
        problem = f"request.max_steps must be an integer >= 1, not {request.max_steps!r}"
    elif fmt is not None and (not isinstance(fmt, Mapping) or "type" not in fmt):
        problem = f"request.response_format must be None or a dict with a 'type', not {fmt!r}"
    else:
        try:
            if fmt is not None:
                _check_json_schema_format(fmt, "request.response_format")
            _check_options(request.options, "request.options")
        except (TypeError, ValueError) as exc:
            problem = str(exc)
    if problem is not None:
        raise AdapterError(f"the handler left the request unusable: {problem}")


def _is_count(value: Any, low: int) -> bool:
    """True for an int (not a bool) of at least ``low``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _check_max_retries(value: Any, what: str) -> None:
    if not _is_count(value, 0):
        raise ValueError(f"{what} must be an integer >= 0, not {value!r}")


def _shapes_request(handler: Callable[..., Any]) -> bool:
    """True for ``handler(task, request)``; False for a plain ``handler(task)``."""
    try:
        params = inspect.signature(handler).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = 0
    for p in params:
        if p.kind is p.VAR_POSITIONAL:
            return True
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            positional += 1
    return positional >= 2


def _call_name(call: Any) -> str:
    """The called function's name; empty when the server sent none."""
    function = getattr(call, "function", None)
    return str(getattr(function, "name", None) or getattr(call, "name", None) or "")


@dataclass(frozen=True)
class _ToolCall:
    """One tool call of a reply, with an id whether or not the server sent one."""

    id: str
    type: str
    name: str
    #: As the server sent them: JSON text, or an object from some compatible servers.
    arguments: Any


def _tool_calls(message: Any, position: int) -> list[_ToolCall]:
    """The reply's tool calls, each with an id of its own.

    ``position`` is the reply's index in the conversation.
    """
    raw = list(getattr(message, "tool_calls", None) or [])
    given = [getattr(call, "id", None) for call in raw]
    taken = {i for i in given if isinstance(i, str) and i}
    used: set[str] = set()
    found = []
    for index, (call, call_id) in enumerate(zip(raw, given, strict=True)):
        if not isinstance(call_id, str) or not call_id or call_id in used:
            # Some compatible servers send no id, or one id for several calls of a
            # reply, but the API wants one tool result per id. Derived from the
            # position, the new id is unique in the conversation and the same in
            # the copy stored while waiting for a person; it avoids every id the
            # server did send.
            call_id = f"wfe_call_{position}_{index}"
            while call_id in taken or call_id in used:
                call_id += "_"
        used.add(call_id)
        found.append(
            _ToolCall(
                id=call_id,
                type=str(getattr(call, "type", None) or "function"),
                name=_call_name(call),
                arguments=getattr(getattr(call, "function", None), "arguments", None),
            )
        )
    return found


def _content_text(message: Any) -> Any:
    """The reply's text. Some compatible servers send it as a list of content parts
    (``[{"type": "text", "text": "..."}]``), whose text parts make the reply."""
    content = getattr(message, "content", None)
    if not isinstance(content, list):
        return content
    texts = []
    for part in content:
        # Parts arrive as dicts; an SDK that knew the form would give objects.
        fields = part if isinstance(part, dict) else getattr(part, "__dict__", {})
        if fields.get("type") == "text" and isinstance(fields.get("text"), str):
            texts.append(fields["text"])
    return "".join(texts)


def _arguments_text(arguments: Any) -> str:
    """Arguments as the JSON text the API expects, whatever form the server sent."""
    return "" if arguments is None else _as_text(arguments)


def _as_text(value: Any) -> str:
    """A string as it is; anything else as JSON text."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def _assistant_message(message: Any, calls: list[_ToolCall]) -> dict[str, Any]:
    """The assistant's tool-calling turn as a message dict to send back."""
    return {
        "role": "assistant",
        "content": _content_text(message),
        "tool_calls": [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": _arguments_text(call.arguments)},
            }
            for call in calls
        ],
    }


def _wait_for_person(
    task: Task, engine: ECSWorkflowEngine, conversation: dict[str, Any], repeated: bool = False
) -> None:
    """Suspend the task until a person answers the conversation's pending question."""
    question = conversation["question"]
    details = {"repeated": True} if repeated else {}
    task.record(
        "agent_asked_human",
        phase=conversation["phase"],
        question=question,
        call_id=conversation["pending_call_id"],
        **details,
    )
    engine.suspend(task, TaskStatus.WAITING_HUMAN, reason=question, resume_in_phase=True)


def _answered_since_asked(task: Task) -> bool:
    """True if the task was resumed after its last question, even with no answer.

    ``engine.resume(task_id)`` without an answer is a person's choice (and reaches the
    model as "(no answer)"); a retry of a cancelled wait is not an answer.
    """
    for event in reversed(task.history):
        if event.get("event") == "resumed":
            return True
        if event.get("event") == "agent_asked_human":
            return False
    return False


def _answer_text(value: Any) -> str:
    return "(no answer)" if value is None else _as_text(value)


def _short(text: str, limit: int = _HISTORY_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more]"


def _count(obj: Any, name: str) -> int | None:
    value = getattr(obj, name, None) if obj is not None else None
    return value if isinstance(value, int) else None


def _timeout_text(timeout: Any) -> str:
    """A request timeout (seconds, or an httpx Timeout) as the wait for a reply."""
    # An httpx Timeout's read limit is what a slow reply runs into.
    seconds = getattr(timeout, "read", timeout)
    if isinstance(seconds, (int, float)):
        return f"{seconds:g} s"
    return "no set limit" if seconds is None else str(seconds)


def _server_error_text(exc: Any) -> str:
    """The server's own words from an error response."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return _short(str(error["message"]), 500)
        if isinstance(error, str):
            return _short(error, 500)
    try:
        text = exc.response.text
    except Exception:
        text = ""
    return _short(text.strip() or str(body or getattr(exc, "message", "")), 500)


def _no_message_reason(completion: Any, where: str) -> str:
    """Why a successful response holds no reply, in the server's own words if it has any."""
    error = getattr(completion, "error", None)  # a field the ChatCompletion type lacks
    if error:
        # A 200 with an error body, as some compatible servers and proxies send. The
        # SDK does not retry it, and neither does the adapter: what it means (an
        # overload, an unknown model) is the server's own, so the phase's
        # max_attempts decides.
        reason = _error_object_text(error)
        return f"chat completion failed ({where}): the server answered with an error: {reason}"
    if isinstance(completion, str) and completion.lstrip().startswith(("data:", "event:")):
        return (
            f"malformed response from {where}: the server sent a stream (server-sent "
            "events) to a request that did not ask for one; it begins "
            f"{_short(completion.lstrip(), 200)!r}"
        )
    return (
        f"malformed response from {where}: no choices[0].message in {_short(repr(completion), 300)}"
    )


def _error_object_text(error: Any) -> str:
    """An error object's message and code, as OpenAI-style ``{"error": {...}}`` bodies give them."""
    if not isinstance(error, dict):
        return _short(str(error), 500)
    text = _short(str(error.get("message") or json.dumps(error, default=str)), 500)
    code = error.get("code")
    return text if code is None or code == "" else f"{text} (code {code})"


def _parse_json_reply(text: str, fmt: Mapping[str, Any]) -> Any:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AdapterError(
            f"the reply is not valid JSON: {exc.msg} at line {exc.lineno} column "
            f"{exc.colno}; the reply begins {_short(text, 200)!r}"
        ) from None
    spec = fmt.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, Mapping) else None
    if isinstance(schema, Mapping):
        validator = jsonschema.validators.validator_for(schema)(schema)
        problems = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
        if problems:
            raise AdapterError(
                "the JSON reply does not match the response_format schema: "
                + "; ".join(
                    f"{'/'.join(str(p) for p in e.absolute_path) or '(reply)'}: {e.message}"
                    for e in problems[:5]
                )
            )
    return value

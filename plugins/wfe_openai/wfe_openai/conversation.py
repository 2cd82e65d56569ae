"""One run of a phase as a conversation: model calls, the tools they ask for, and their results."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import datetime
import enum
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from wfcore import AdapterError, Phase, Task

from .checks import _check_max_retries
from .errors import _failure, _failure_reason, _no_message_reason
from .human import ASK_HUMAN, HUMAN_TOOL, _wait_for_person
from .messages import Budget
from .records import _account, _short
from .reply import _CUT_OFF, _content_text, _output
from .tools import Tool, ToolArgumentsError

if TYPE_CHECKING:
    from openai import AsyncOpenAI

    from wfcore import ECSWorkflowEngine

    from .request import AgentRequest

logger = logging.getLogger("wfe_openai")


async def _converse(
    client: AsyncOpenAI,
    task: Task,
    phase: Phase,
    engine: ECSWorkflowEngine,
    request: AgentRequest,
    state: dict[str, Any],
    *,
    first_step: int = 1,
    first_number: int = 1,
    answer_timeout: float | None,
    max_item_chars: int,
    redact: Callable[[str], str],
    timeout_origin: str,
    key_origin: str,
    progress_stored: bool = False,
) -> None:
    """Call the model until it replies without tool calls, asks a person, or runs out of steps.

    ``state`` is the task's ``context["openai"]``; ``first_step`` is above 1 when the
    run continues a checkpointed conversation (it counts towards ``max_steps``);
    ``first_number`` is the ``step`` recorded for the run's first call (on from the
    calls of the attempt before a person's answer or a worker's end);
    ``answer_timeout`` is the deadline of a question to a person, in seconds (None:
    none); ``redact`` masks credentials in the reasons of failed calls and tools;
    ``timeout_origin`` names where the request timeout is set, for a timed-out call,
    and ``key_origin`` where the key comes from, for a call refused as unauthorized;
    ``progress_stored`` is True when the task as stored holds a ``progress``.

    The calls are paid for whatever ends the attempt: when it fails, is timed out or
    cancelled, the calls made since the last checkpoint are checkpointed before the
    exception goes on (see :func:`_keep_the_record`). A failed attempt's progress
    goes with it, also from the stored task.
    """
    stored = len(state.get("calls", ()))  # the calls the stored task holds

    async def checkpoint() -> None:
        nonlocal stored, progress_stored
        await engine.checkpoint(task)
        stored = len(state.get("calls", ()))
        progress_stored = "progress" in state

    try:
        await _rounds(
            client,
            task,
            phase,
            engine,
            request,
            state,
            checkpoint,
            first_step=first_step,
            first_number=first_number,
            answer_timeout=answer_timeout,
            max_item_chars=max_item_chars,
            redact=redact,
            timeout_origin=timeout_origin,
            key_origin=key_origin,
        )
    except Exception:
        # A failed attempt starts again from its opening messages (or the answer).
        # wfcore stores the task as of its last checkpoint, which would keep the
        # conversation as progress, a copy of it all, in the failed task for good.
        state.pop("progress", None)
        if len(state.get("calls", ())) > stored or progress_stored:
            await _keep_the_record(task, engine)
        raise
    except asyncio.CancelledError:
        # The phase's timeout, a cancel or a stopping worker. The progress stays: a
        # stopped worker's task goes on from it (a timed-out one is not, as its
        # history tells). A cancelled task's record cannot be written any more (the
        # cancel owns it): _rounds stores each call before its tools run.
        if len(state.get("calls", ())) > stored:
            await _keep_the_record(task, engine)
        raise


async def _rounds(
    client: AsyncOpenAI,
    task: Task,
    phase: Phase,
    engine: ECSWorkflowEngine,
    request: AgentRequest,
    state: dict[str, Any],
    checkpoint: Callable[[], Awaitable[None]],
    *,
    first_step: int,
    first_number: int,
    answer_timeout: float | None,
    max_item_chars: int,
    redact: Callable[[str], str],
    timeout_origin: str,
    key_origin: str,
) -> None:
    """The model calls and tool rounds of :func:`_converse`."""
    name = phase.target_classification
    messages = request.messages
    tools = {t.name: t for t in request.tools}
    last_calls: list[str] = []
    for step in range(first_step, request.max_steps + 1):
        number = first_number + step - first_step
        message, finish_reason = await _complete(
            client, task, request, number, redact, timeout_origin, key_origin
        )
        calls = _tool_calls(message, position=len(messages))
        if not calls:
            task.output = await _output(request, message, finish_reason, redact)
            state.pop("conversation", None)
            state.pop("progress", None)
            return
        last_calls = [c.name or "a call without a function name" for c in calls]
        cut = [c for c in calls if _cut_short(c.arguments)]
        if finish_reason == "length" and cut:
            # A call's arguments are cut short: the model, told they are not JSON,
            # would only ask again and be cut off again, until max_steps, which would
            # not say why. A failed attempt names the limit, as for a final reply.
            # (Calls whose arguments are whole run: some servers, llama.cpp's, say
            # "length" when the model ran on after them.)
            ending = _arguments_text(cut[0].arguments)[-200:]
            raise AdapterError(
                f"{_CUT_OFF} as it asked for tools ({', '.join(last_calls)}): the "
                f"arguments of {cut[0].name or 'a call'} end {ending!r}"
            )
        messages.append(_assistant_message(message, calls))
        if any(not _is_question(call, tools) for call in calls):
            # The call is paid for: stored before its tools run, which may outlast
            # the phase's timeout or meet a cancel, so that usage keeps it.
            await checkpoint()
        pending: tuple[str, str] | None = None
        for call in calls:
            if _is_question(call, tools):
                question, refusal = _question(call, pending is not None)
                if question is not None:
                    pending = (call.id, question)
                    continue
                content = _refuse_question(task, name, call, refusal)
            else:
                content = await _call_tool(task, engine, name, tools, call, max_item_chars, redact)
            messages.append({"role": "tool", "tool_call_id": call.id, "content": content})
        if pending is not None:
            call_id, question = pending
            state.pop("progress", None)  # the stored conversation is the waiting one
            state["conversation"] = {
                "phase": name,
                "messages": messages,
                "pending_call_id": call_id,
                "question": question,
            }
            _wait_for_person(task, engine, state["conversation"], answer_timeout)
            return
        if step < request.max_steps:
            # The tools of this round ran (and may have done things that must not
            # happen twice): a worker that dies from here on leaves a task that goes
            # on from this point, with their calls, results and the usage recorded.
            state["progress"] = {
                "phase": name,
                "messages": copy.deepcopy(messages),
                "steps": step,
                "events": len(task.history),
            }
            await checkpoint()
    raise AdapterError(
        f"max_steps={request.max_steps} exhausted in phase {name!r}: the model still "
        f"asked for tools ({', '.join(last_calls)}) after {request.max_steps} calls"
    )


async def _keep_the_record(task: Task, engine: ECSWorkflowEngine) -> None:
    """Store the calls and usage of an attempt that is ending.

    wfcore may store a failed or timed-out attempt's task as it was at its last
    checkpoint; the calls made since (paid for) belong in ``usage`` all the same.
    The failure is what the phase reports: a checkpoint that cannot be stored (the
    task cancelled meanwhile, a store that fails) is left to the engine, which
    sees it too.
    """
    try:
        await engine.checkpoint(task)
    except Exception as exc:
        logger.debug("task %s: the calls of the ending attempt were not stored: %s", task.id, exc)


def _is_question(call: _ToolCall, tools: dict[str, Tool]) -> bool:
    """True for a call of the built-in ask_human (while it is offered)."""
    return call.name == ASK_HUMAN and tools.get(ASK_HUMAN) is HUMAN_TOOL


def _question(call: _ToolCall, one_pending: bool) -> tuple[str | None, str]:
    """The question of an ask_human call, or None and why the call is refused."""
    try:
        question = HUMAN_TOOL.parse_arguments(call.arguments)["question"]
    except ToolArgumentsError as exc:
        return None, _as_sent(call, f"error: invalid arguments for {ASK_HUMAN}: {exc}")
    if not question.strip():
        # The task would wait for a person shown nothing to answer.
        return None, (
            f"error: invalid arguments for {ASK_HUMAN}: question: it is blank; ask a "
            "question a person can answer on its own"
        )
    if one_pending:
        return None, "error: only one question at a time: ask again after the answer"
    return question, ""


def _refuse_question(task: Task, phase_name: str, call: _ToolCall, content: str) -> str:
    """Record a refused ask_human call, as any tool call is; its result for the model."""
    _record_call(task, phase_name, ASK_HUMAN, call)
    _record_result(task, phase_name, ASK_HUMAN, call, True, content)
    return content


def _record_call(task: Task, phase_name: str, tool: str | None, call: _ToolCall) -> None:
    task.record(
        "agent_tool_call",
        phase=phase_name,
        tool=tool,
        call_id=call.id,
        arguments=_short(_arguments_text(call.arguments)),
    )


def _record_result(
    task: Task, phase_name: str, tool: str | None, call: _ToolCall, error: bool, content: str
) -> None:
    task.record(
        "agent_tool_result",
        phase=phase_name,
        tool=tool,
        call_id=call.id,
        error=error,
        result=_short(content),
    )


async def _complete(
    client: AsyncOpenAI,
    task: Task,
    request: AgentRequest,
    step: int,
    redact: Callable[[str], str],
    timeout_origin: str,
    key_origin: str,
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
    except (openai.OpenAIError, TypeError, ValueError, RecursionError) as exc:
        # RecursionError: a body nested too deeply for the JSON decoder, a malformed reply.
        reason = _failure_reason(exc, client, where, kwargs, timeout_origin, key_origin)
        raise _failure(exc, client, redact(reason)) from None
    seconds = time.monotonic() - started
    choices = getattr(completion, "choices", None)
    choice = choices[0] if isinstance(choices, list) and choices else None
    message = getattr(choice, "message", None)
    if message is None:
        raise AdapterError(redact(_no_message_reason(completion, where)))
    finish_reason = getattr(choice, "finish_reason", None)
    _account(task, request, step, completion, message, finish_reason, seconds)
    return message, finish_reason


async def _call_tool(
    task: Task,
    engine: ECSWorkflowEngine,
    phase_name: str,
    tools: dict[str, Tool],
    call: _ToolCall,
    max_item_chars: int,
    redact: Callable[[str], str],
) -> str:
    """Run one tool call and return what the model gets back; errors go to the model.

    An error's text is ``redact``-ed: a tool calling another service with the same
    key may fail with a message that echoes it. A result is the tool's own, passed
    on as it is."""
    tool_name = call.name
    _record_call(task, phase_name, tool_name, call)
    error = True
    tool = tools.get(tool_name)
    if call.type != "function":
        content = f"error: tool calls of type {call.type!r} are not supported"
    elif not tool_name:
        # A compatible server's translation may lose the function object; the
        # model is told, as for any other bad call, and max_steps bounds a repeat.
        content = (
            f"error: tool call without a function name; call a tool by its name: {', '.join(tools)}"
        )
    elif tool is None or tool is HUMAN_TOOL:
        content = f"error: no tool named {tool_name!r}; available: {', '.join(tools)}"
    else:
        try:
            arguments = tool.parse_arguments(call.arguments)
            result = await tool.invoke(arguments, task, engine)
        except ToolArgumentsError as exc:
            content = _as_sent(call, f"error: invalid arguments for {tool_name}: {exc}")
        except (Exception, SystemExit) as exc:
            # SystemExit too: argparse and click exit on bad input, which is what a
            # model sends; it must not end the worker, and the model can correct it.
            reason = redact(f"{type(exc).__name__}: {exc}")
            logger.info("task %s: tool %s failed: %s", task.id, tool_name, reason)
            content = f"error: {reason}"
            if isinstance(exc, SystemExit):
                content += " (the tool called sys.exit(), as argparse does on bad arguments)"
        else:
            try:
                # None is what a function without a return gives: it ran. "(no
                # answer)" would let the model think it did not, and call it again.
                content = (
                    "(done: the tool returned nothing)" if result is None else _as_text(result)
                )
            except Exception as exc:
                # A value even str() refuses (an int of more than 4300 digits, an
                # object whose __str__ raises): the tool ran, and the model is told
                # so, rather than the attempt failing without naming the tool.
                reason = redact(f"{type(exc).__name__}: {exc}")
                logger.info("task %s: the result of tool %s: %s", task.id, tool_name, reason)
                content = f"error: the tool ran, but its result cannot be sent as text: {reason}"
            else:
                error = False
    if error:
        content = redact(content)
    # Half of a UTF-16 surrogate pair, as os.listdir gives for a file name that is not
    # UTF-8, is no character: the store (and the API) cannot take it. Written as its
    # escape, the model still reads which byte it stood for.
    content = content.encode("utf-8", "backslashreplace").decode("utf-8")
    content = Budget(max_item_chars, max_item_chars).take(content)
    _record_result(task, phase_name, tool_name, call, error, content)
    return content


@dataclasses.dataclass(frozen=True)
class _ToolCall:
    """One tool call of a reply, with an id whether or not the server sent one."""

    id: str
    type: str
    name: str
    #: As the server sent them: JSON text, or an object from some compatible servers.
    arguments: Any
    #: What the server sent beside the function (Gemini's thought signature), to
    #: send back with the call; None when it sent nothing.
    extra_content: dict[str, Any] | None = None


def _tool_calls(message: Any, position: int) -> list[_ToolCall]:
    """The reply's tool calls, each with an id of its own.

    ``position`` is the reply's index in the conversation.
    """
    raw = getattr(message, "tool_calls", None) or []
    if not isinstance(raw, list):
        # A compatible server that sends one call, or text, where the API has a
        # list: taken as a list, a string was a call per character, none of them
        # the model's, and the phase went on as if the tools had run.
        raise AdapterError(
            "malformed response: the reply's tool_calls is "
            f"{type(raw).__name__}, not a list: {raw!r:.200}"
        )
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
                extra_content=_extra_content(call),
            )
        )
    return found


def _extra_content(call: Any) -> dict[str, Any] | None:
    """The ``extra_content`` a server sent with a tool call (a dict), or None."""
    value = getattr(call, "extra_content", None)
    return value if isinstance(value, dict) else None


def _call_name(call: Any) -> str:
    """The called function's name; empty when the server sent none."""
    function = getattr(call, "function", None)
    return str(getattr(function, "name", None) or getattr(call, "name", None) or "")


# Fields in which compatible servers send a reasoning model's thinking beside its
# content, and the form of each: DeepSeek's reasoning_content, the reasoning of
# Ollama, vLLM and OpenRouter, OpenRouter's reasoning_details.
_REASONING_FIELDS = (("reasoning_content", str), ("reasoning", str), ("reasoning_details", list))


def _assistant_message(message: Any, calls: list[_ToolCall]) -> dict[str, Any]:
    """The assistant's tool-calling turn as a message dict to send back.

    The thinking a server sent with it goes back too, as it came: DeepSeek's
    thinking mode (on by default) refuses, with HTTP 400, a request whose
    tool-calling turns lack their reasoning_content, Gemini's OpenAI-compatible
    API one whose tool calls lack the thought signature it sent in their
    extra_content, and other reasoning models continue their reasoning from it.
    OpenAI sends none of these fields, so its requests are unchanged.
    """
    tool_calls = []
    for call in calls:
        sent: dict[str, Any] = {
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": _sent_back_arguments(call)},
        }
        if call.extra_content is not None:
            sent["extra_content"] = call.extra_content
        tool_calls.append(sent)
    turn: dict[str, Any] = {
        "role": "assistant",
        "content": _content_text(message),
        "tool_calls": tool_calls,
    }
    for field, kind in _REASONING_FIELDS:
        value = getattr(message, field, None)
        if isinstance(value, kind):
            turn[field] = value
    return turn


def _arguments_text(arguments: Any) -> str:
    """Arguments as JSON text, whatever form the server sent (for the history)."""
    return "" if arguments is None else _as_text(arguments)


def _sent_back_arguments(call: _ToolCall) -> str:
    """A call's arguments as the conversation sends them back: the JSON text of an
    object, which is what the API specifies.

    Arguments that are no JSON object (text cut off by the token limit, an array,
    none at all) are sent back as ``{}``: vLLM, Ollama and llama.cpp decode the
    arguments of every earlier call in the conversation and refuse the whole
    request when one does not decode to an object, so the model could never read
    the error its call got. That error quotes what the model sent
    (:func:`_as_sent`).
    """
    if _is_object_text(call.arguments):
        return _arguments_text(call.arguments)
    return "{}"


def _is_object_text(arguments: Any) -> bool:
    """True if ``arguments`` are an object, or JSON text of one."""
    if isinstance(arguments, dict):
        return True
    if not isinstance(arguments, str):
        return False
    try:
        return isinstance(json.loads(arguments), dict)
    except ValueError:
        return False


def _cut_short(arguments: Any) -> bool:
    """True for arguments that are no JSON object, and not simply none (a call of a
    tool without parameters, which some servers send as "" or null)."""
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return False
    return not _is_object_text(arguments)


def _as_sent(call: _ToolCall, error: str) -> str:
    """A tool call's error, with the arguments the model sent when the conversation
    sends them back otherwise (see :func:`_sent_back_arguments`)."""
    if _is_object_text(call.arguments):
        return error
    sent = (
        "nothing" if call.arguments is None else repr(_short(_arguments_text(call.arguments), 200))
    )
    return f"{error}; the call's arguments were {sent}"


def _answer_text(value: Any) -> str:
    return "(no answer)" if value is None else _as_text(value)


def _as_text(value: Any) -> str:
    """A string as it is; anything else as JSON text."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, default=_json_form)
    except TypeError:
        # A dict key JSON cannot hold (json.dumps never asks default= about keys): a
        # date, or a tuple as pandas' groupby().to_dict() gives them.
        pass
    except ValueError:  # a circular reference: a result is passed on all the same
        return str(value)
    try:
        return json.dumps(_with_text_keys(value, set()), ensure_ascii=False, default=_json_form)
    except (TypeError, ValueError):
        return str(value)


def _with_text_keys(value: Any, seen: set[int]) -> Any:
    """``value`` with the keys of its dicts (inside lists and tuples too) in a form
    JSON holds: a date as ISO 8601, an enum member as its value, anything else as
    its ``str()``. ``seen``: the containers being copied, to stop at a cycle."""
    if not isinstance(value, (dict, list, tuple)):
        return value
    if id(value) in seen:
        raise ValueError("circular reference")
    seen.add(id(value))
    try:
        if isinstance(value, dict):
            return {_key_form(k): _with_text_keys(v, seen) for k, v in value.items()}
        return [_with_text_keys(item, seen) for item in value]
    finally:
        seen.discard(id(value))


def _key_form(key: Any) -> Any:
    """A dict key as JSON can hold it (a string, a number, a boolean or null)."""
    if key is None or isinstance(key, (str, int, float, bool)):
        return key
    form = _json_form(key)
    return form if isinstance(form, (str, int, float, bool)) else str(key)


def _json_form(value: Any) -> Any:
    """What the JSON of a tool's result holds for a value json cannot write.

    Tools receive pydantic models, enum members, sets and the like, and return
    them too: the model reads their fields and values, as their arguments came,
    rather than Python's repr (``sku='A' colour=<Colour.RED: 'red'>``). Anything
    else is its ``str()``.
    """
    if isinstance(value, type):
        return str(value)
    dump = getattr(value, "model_dump", None)
    if callable(dump):  # a pydantic model
        try:
            return dump(mode="json")
        except Exception:  # some other object's model_dump, or a value pydantic refuses
            return str(value)
    if dataclasses.is_dataclass(value):
        # The fields one level down: json.dumps comes back here for their values.
        return {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (set, frozenset)):
        # Sorted: the same text for the same set, in every run.
        try:
            return sorted(value)
        except TypeError:  # enum members, say: by their JSON
            return sorted(value, key=_as_text)
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    return str(value)

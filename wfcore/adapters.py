"""The built-in adapters, one per task type: human, agentic and functional.

They are an ordinary plugin: registered through ``wfe_register_adapters`` with
``trylast``, so any installed plugin (or ``engine.register_adapter``) replaces them.
"""

from __future__ import annotations

import inspect
import logging
import types
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ._threads import run_blocking
from .errors import AdapterError
from .hookspecs import hookimpl
from .model import Phase, Task, TaskStatus, TaskType

logger = logging.getLogger("wfcore")

if TYPE_CHECKING:
    from .engine import ECSWorkflowEngine

__all__ = [
    "Adapter",
    "AgenticAdapter",
    "FunctionalAdapter",
    "HumanAdapter",
    "run_blocking",
    "run_handler",
]


class Adapter(Protocol):
    """What runs a phase of one task type: any object with this ``run``.

    It sets ``task.output``, may add artifacts, and may suspend the task
    (``engine.suspend``); an exception fails the attempt.
    """

    async def run(self, task: Task, phase: Phase, engine: ECSWorkflowEngine, /) -> None: ...


async def run_handler(handler: Callable[[Task], Any], task: Task, *, phase: bool = True) -> None:
    """Run a phase's handler (``phase``; else a completed hook): await an ``async
    def`` one; call a plain one in a thread (:func:`run_blocking`), so that it
    neither blocks the other tasks nor outlasts the phase's ``timeout``; and await
    what either returns if that is awaitable. A phase's handler that returns
    anything else is warned about, once: the value is not its output."""
    if _is_async(handler):
        result = await handler(task)
    else:
        # A plain function may block (a sleep, a blocking client): not on the event
        # loop. Its context (contextvars) goes with it, and engine.suspend() works
        # from the thread. A timeout ends the attempt, not the thread: it runs on
        # until the function returns, and what it does to the task then is dropped;
        # a daemon thread, it does not keep a stopped worker's process from exiting.
        result = await run_blocking(handler, task)
    if result is None:
        return
    if inspect.isawaitable(result):
        # A coroutine returned rather than awaited (``return helper(task)``).
        await result
    elif phase:
        _say_returned(handler, task, result)


def _say_returned(handler: Callable[[Task], Any], task: Task, result: object) -> None:
    from .worker import running_engine

    engine = running_engine()
    said = set() if engine is None else _SAID_RETURNED.setdefault(engine, set())
    # By identity: two lambdas, or two handlers one factory made, share a name. A
    # registered handler lives as long as its engine, so its id stays its own.
    if id(handler) in said or len(said) >= 1000:
        return
    said.add(id(handler))
    kind = type(result).__name__
    logger.warning(
        "the handler %s of phase %r returned %s %s, which is not used: a handler sets "
        "task.output (this is said once per handler)",
        getattr(handler, "__qualname__", None) or repr(handler),
        task.classification,
        "an" if kind[:1].lower() in "aeiou" else "a",
        kind,
    )


# The handlers whose returned value each engine said was unused.
_SAID_RETURNED: weakref.WeakKeyDictionary[object, set[int]] = weakref.WeakKeyDictionary()


def _is_async(handler: Callable[[Task], Any]) -> bool:
    # A plain or bound async def answers from its code flags, several times faster
    # than inspect.iscoroutinefunction (this runs for every phase); a partial, or a
    # callable object, asks inspect. One that returns an awaitable all the same
    # (an async __call__) is awaited after its thread returns it.
    code = getattr(handler, "__code__", None)
    if code is not None:
        return bool(code.co_flags & inspect.CO_COROUTINE)
    return inspect.iscoroutinefunction(handler)


def _takes_request(handler: Callable[..., Any]) -> bool:
    """True for a handler that needs two positional arguments, ``handler(task,
    request)``: one that shapes the request of an agent adapter (wfe_openai's), which
    cannot be called with the task alone. One parameter, a second one with a
    default, or ``*args`` can be: False."""
    if isinstance(handler, types.FunctionType):
        # The code object answers without inspect.signature (this runs for every
        # agentic phase a built-in adapter runs).
        code = handler.__code__
        if code.co_flags & inspect.CO_VARARGS:
            return False
        return code.co_argcount - len(handler.__defaults__ or ()) >= 2
    try:
        parameters = inspect.signature(handler).parameters.values()
    except (TypeError, ValueError):
        return False
    required = 0
    for p in parameters:
        if p.kind is p.VAR_POSITIONAL:
            return False
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty:
            required += 1
    return required >= 2


class HumanAdapter:
    """Hand the phase to a person: run the handler if one is registered (to notify
    someone, say), then wait as WAITING_HUMAN until ``engine.resume``."""

    async def run(self, task: Task, phase: Phase, engine: ECSWorkflowEngine) -> None:
        handler = engine.handler_for(phase.target_classification)
        if handler is not None:
            await run_handler(handler, task)
        # A handler that took a person's reply itself (it suspended with
        # resume_in_phase) has its answer: the phase does not wait a second time.
        if not task.status.is_waiting and not task.resume_in_phase:
            engine.suspend(task, TaskStatus.WAITING_HUMAN, reason=phase.instructions)


class AgenticAdapter:
    """Run the handler registered for the phase; agent plugins (such as wfe_openai's
    ``OpenAIAgentAdapter``) replace this adapter to call a model instead."""

    async def run(self, task: Task, phase: Phase, engine: ECSWorkflowEngine) -> None:
        handler = engine.handler_for(phase.target_classification)
        if handler is None:
            raise AdapterError(
                f"no handler for agentic phase {phase.target_classification!r}: register "
                "one with engine.register_handler(), or an agent adapter such as "
                "wfe_openai.OpenAIAgentAdapter with engine.register_adapter('agentic', ...)"
            )
        if _takes_request(handler):
            # Called with the task alone, it would fail with a bare TypeError.
            raise AdapterError(
                f"the handler of agentic phase {phase.target_classification!r} takes "
                "(task, request): it shapes the request of an agent adapter, and none is "
                "registered. Start the worker with WFE_AGENT=openai, or register one with "
                "engine.register_adapter('agentic', wfe_openai.OpenAIAgentAdapter(...))"
            )
        await run_handler(handler, task)


class FunctionalAdapter:
    """Run the phase's ``command`` as a subprocess, or else its registered handler."""

    async def run(self, task: Task, phase: Phase, engine: ECSWorkflowEngine) -> None:
        if phase.command:
            from .command import run_command

            await run_command(task, phase, engine)
            return
        handler = engine.handler_for(phase.target_classification)
        if handler is None:
            raise AdapterError(
                f"no handler for functional phase {phase.target_classification!r}: register "
                "one with engine.register_handler(), or give the phase a command"
            )
        await run_handler(handler, task)


@hookimpl(trylast=True)
def wfe_register_adapters(register: Callable[[Any, Any], None]) -> None:
    register(TaskType.HUMAN, HumanAdapter())
    register(TaskType.AGENTIC, AgenticAdapter())
    register(TaskType.FUNCTIONAL, FunctionalAdapter())

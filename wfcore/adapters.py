"""The built-in adapters, one per task type: human, agentic and functional.

They are an ordinary plugin: registered through ``wfe_register_adapters`` with
``trylast``, so any installed plugin (or ``engine.register_adapter``) replaces them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from .errors import AdapterError
from .hookspecs import hookimpl
from .model import Phase, Task, TaskStatus, TaskType

if TYPE_CHECKING:
    from .engine import ECSWorkflowEngine

__all__ = ["Adapter", "AgenticAdapter", "FunctionalAdapter", "HumanAdapter", "run_handler"]


class Adapter(Protocol):
    """What runs a phase of one task type: any object with this ``run``.

    It sets ``task.output``, may add artifacts, and may suspend the task
    (``engine.suspend``); an exception fails the attempt.
    """

    async def run(self, task: Task, phase: Phase, engine: ECSWorkflowEngine, /) -> None: ...


async def run_handler(handler: Callable[[Task], Any], task: Task) -> None:
    """Call a handler and await its result if it is awaitable (sync handlers work too)."""
    result = handler(task)
    if inspect.isawaitable(result):
        await result


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

"""Checks of an engine's workflows and schedules against its handlers and adapters,
as a worker starts.

A phase nothing can run (a handler name with a typo, a forgotten registration) fails
every task that reaches it, often after earlier phases did paid or human work; an
``on_timeout`` on a wait without a deadline never applies. Both are visible before
the first task runs, so the worker says so as it starts.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING

from .adapters import AgenticAdapter, FunctionalAdapter, _takes_request
from .model import Phase, TaskType, WorkflowSpec

if TYPE_CHECKING:
    from .engine import ECSWorkflowEngine

__all__ = ["workflow_problems"]


def workflow_problems(engine: ECSWorkflowEngine) -> list[str]:
    """What would fail or never apply in the workflows registered in code (or by
    plugins) of ``engine``, one sentence each.

    Workflows defined at run time are left out: their tasks say what went wrong,
    and their handlers may come with a later deployment.
    """
    problems: list[str] = []
    only = engine.only_workflows
    for name in sorted(engine._code_workflows):
        if only is not None and name not in only:
            continue  # another pool's: its app may have what this one lacks
        spec = engine._workflows.get(name)
        if spec is not None:
            problems.extend(_spec_problems(engine, spec))
    for schedule in engine._schedules.values():
        spec = engine._workflows.get(schedule.workflow_name)
        if spec is None:
            problems.append(
                f"schedule {schedule.name!r}: workflow {schedule.workflow_name!r} is not "
                "known here: its tasks cannot be submitted until it is registered or defined"
            )
        elif (problem := schedule.phase_problem(spec)) is not None:
            problems.append(f"schedule {schedule.name!r}: {problem}: its tasks cannot be submitted")
    return problems


def _spec_problems(engine: ECSWorkflowEngine, spec: WorkflowSpec) -> list[str]:
    problems = []
    for phase in spec.phases:
        where = f"workflow {spec.name!r}, phase {phase.target_classification!r}"
        unrunnable = _unrunnable(engine, phase)
        if unrunnable:
            problems.append(f"{where}: {unrunnable}{_near(engine, phase)}")
        if (
            phase.on_timeout is not None
            and phase.timeout is None
            and phase.assigned_to is TaskType.HUMAN
            and phase.target_classification not in engine._handlers
        ):
            problems.append(
                f"{where}: on_timeout never applies: the phase has no timeout, so its "
                "wait has no deadline (give it timeout=SECONDS)"
            )
    return problems


def _unrunnable(engine: ECSWorkflowEngine, phase: Phase) -> str:
    """Why the built-in adapter of the phase's type cannot run it, or ""."""
    # None: the task's type decides, agentic unless it was submitted otherwise.
    kind = phase.assigned_to
    adapter = engine._adapters.get(kind or TaskType.AGENTIC)
    handler = engine._handlers.get(phase.target_classification)
    if (
        handler is not None
        and phase.command is None
        and kind in (TaskType.AGENTIC, None)
        and type(adapter) is AgenticAdapter
        and _takes_request(handler)
    ):
        fails = (
            "every task reaching it fails"
            if kind is TaskType.AGENTIC
            else "tasks submitted as agentic (the default) fail in it"
        )
        return (
            "its handler takes (task, request), the request of an agent adapter, and "
            "none is registered (start the worker with WFE_AGENT=openai, or register "
            f"one with engine.register_adapter): {fails}"
        )
    if handler is not None or phase.command is not None:
        return ""
    # Only the built-ins are known to need a handler; a plugin's adapter may not.
    if kind is TaskType.FUNCTIONAL and type(adapter) is FunctionalAdapter:
        return "no handler and no command: every task reaching it fails"
    if kind is TaskType.AGENTIC and type(adapter) is AgenticAdapter:
        return (
            "no handler, and no agent adapter (such as wfe_openai's) is registered: "
            "every task reaching it fails"
        )
    if kind is None and type(adapter) is AgenticAdapter:
        return (
            "no handler, no command and no assigned_to: tasks submitted as agentic "
            "(the default) fail in it"
        )
    return ""


def _near(engine: ECSWorkflowEngine, phase: Phase) -> str:
    if phase.target_classification in engine._handlers:
        return ""  # the phase has its handler: a close name is no typo of it
    close = difflib.get_close_matches(phase.target_classification, engine._handlers, n=1)
    return f" (a handler is registered for {close[0]!r}: a typo?)" if close else ""

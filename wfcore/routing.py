"""Routing: which phase of its workflow a task runs, and where it goes next.

A task without a classification is classified when it is first claimed (the
``wfe_classify`` hooks, else the workflow's first phase); a finished phase moves it
to the phase its ``next_classification`` picks among the phase's
``next_classifications``, to the first of those, or, without any, to the phase
after it in the workflow, and to COMPLETED after the last.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from .errors import WorkflowError, exception_text, storable_text
from .model import Phase, Task, TaskStatus, WorkflowSpec, copy_json
from .plugins import call_first

if TYPE_CHECKING:
    from .engine import ECSWorkflowEngine

__all__ = ["advance", "route"]


def route(engine: ECSWorkflowEngine, task: Task, spec: WorkflowSpec) -> Phase | None:
    """Find the task's phase, asking the classifiers when it has none."""
    if task.classification is None:
        pm = engine.plugin_manager
        try:
            answered = (
                call_first(pm, "wfe_classify", task=task, engine=engine)
                if pm.hook.wfe_classify.get_hookimpls()
                else None
            )
        except WorkflowError as exc:  # a PluginError naming the plugin, or its own
            # A classifier that fails would fail the same way on every claim.
            task.error = storable_text(exception_text(exc))
            return None
        plugin, answer = answered if answered is not None else (None, None)
        if inspect.isawaitable(answer):
            if inspect.iscoroutine(answer):
                answer.close()  # never awaited: close it so Python does not warn
            task.error = f"PluginError: plugin {plugin!r}: wfe_classify must not be async"
            return None
        if answer is not None and spec.phase(answer) is None:
            task.error = (
                f"InvalidTaskError: plugin {plugin!r} classified the task as {answer!r}, "
                f"a classification workflow {spec.name!r} does not have"
            )
            return None
        task.classification = answer or spec.phases[0].target_classification
        if answer is not None:
            task.record("classified", classification=answer, plugin=plugin)
    phase = spec.phase(task.classification)
    if phase is None:
        task.error = (
            f"InvalidTaskError: unknown classification {task.classification!r} "
            f"for workflow {spec.name!r}"
        )
    return phase


def advance(
    task: Task,
    spec: WorkflowSpec,
    phase: Phase,
    output: Any,
    seconds: float | None = None,
) -> None:
    """Record a phase's output and move the task to its next phase or COMPLETED."""
    name = phase.target_classification
    if type(output) is dict or type(output) is list:
        # The task's own copy: an output built from task.outputs, or taken from a
        # phase's on_timeout rule, must not share containers with them.
        output = copy_json(output)
    task.output = output
    task.outputs[name] = output
    task.error = None
    task.traceback = None
    wanted = task.next_classification
    nxt = phase.next_classifications
    if nxt is None:
        index = spec.phases.index(phase)
        target = (
            spec.phases[index + 1].target_classification if index + 1 < len(spec.phases) else None
        )
    elif wanted is not None and wanted in nxt:
        target = wanted
    else:
        target = nxt[0] if nxt else None
    if wanted is not None and wanted != target:
        # A route the phase does not offer (it goes on in list order, has no
        # next phase, or does not list it) is not taken: say so, not silently.
        allowed = list(nxt) if nxt is not None else [] if target is None else [target]
        task.record("route_ignored", phase=name, wanted=wanted, allowed=allowed)
    task.next_classification = None
    task.attempts = 0
    task.reply = None
    task.resume_in_phase = False
    timing = {} if seconds is None else {"seconds": round(seconds, 6)}
    task.record("phase_finished", phase=name, next=target, **timing)
    if target is None:
        task.status = TaskStatus.COMPLETED
        task.record("completed")
    else:
        task.classification = target
        running = task.status is TaskStatus.IN_PROGRESS
        task.status = TaskStatus.IN_PROGRESS if running else TaskStatus.PENDING

"""What the dashboard asks of the engine: listings, counts, workflows, artifact previews.

Every function here is a coroutine run on the bridge's loop.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import attrs

from wfcore import (
    DEFINE_WORKFLOW,
    ArtifactError,
    ECSWorkflowEngine,
    InvalidTaskError,
    Phase,
    Task,
    TaskStatus,
    TaskType,
    UnknownWorkflowError,
    WorkflowSpec,
)
from wfcore.schedules import latest_runs
from wfcore.stores.base import phase_filter

__all__ = [
    "TaskPage",
    "artifact_preview",
    "check_submission",
    "list_page",
    "phase_of",
    "schedules_by_workflow",
    "waiting_tasks",
    "workflows",
]

WAITING = tuple(s for s in TaskStatus if s.is_waiting)


@attrs.define
class TaskPage:
    """One page of the task list with the counts shown above it."""

    tasks: list[Task]
    counts: dict[TaskStatus, int]
    total: int
    offset: int
    limit: int


async def workflows(engine: ECSWorkflowEngine) -> dict[str, WorkflowSpec]:
    """Every workflow: the engine's own and every stored one, sorted by name.

    The stored definitions win: another process may have redefined a workflow
    at run time since this engine loaded it.
    """
    store = await engine.get_store()
    specs = engine.workflows
    specs.update({spec.name: spec for spec in await store.load_workflows()})
    return dict(sorted(specs.items()))


async def schedules_by_workflow(engine: ECSWorkflowEngine) -> dict[str, list[dict[str, Any]]]:
    """The engine's schedules, by the workflow each submits to: name, period
    (``every``, in seconds, and ``period``, in words) and grace (seconds), start and
    next slot (ISO 8601, UTC), the priority of the tasks it submits, and its latest
    run (``last``: the slot, its task's id and status, None when the store has no
    such task; ``last`` itself is None before the first slot)."""
    now = datetime.now(timezone.utc)
    latest = await latest_runs(await engine.get_store(), engine.schedules.values(), now)
    found: dict[str, list[dict[str, Any]]] = {}
    for schedule in sorted(engine.schedules.values(), key=lambda s: s.name):
        run = latest.get(schedule.name)
        found.setdefault(schedule.workflow_name, []).append(
            {
                "name": schedule.name,
                "every": schedule.every,
                "period": schedule.period,
                "start": schedule.start.astimezone(timezone.utc).isoformat(),
                "next": schedule.next_slot(now).astimezone(timezone.utc).isoformat(),
                "grace": schedule.grace,
                "priority": schedule.priority,
                "last": None
                if run is None
                else {
                    "slot": run.slot.astimezone(timezone.utc).isoformat(),
                    "task_id": run.task_id,
                    "status": run.status.value if run.status else None,
                },
            }
        )
    return found


async def workflows_of(engine: ECSWorkflowEngine, tasks: Sequence[Task]) -> dict[str, WorkflowSpec]:
    """The workflows these tasks name, read one by one: a page of tasks needs a few,
    and a store may hold thousands (defined at run time). Stored definitions win, as
    in :func:`workflows`."""
    store = await engine.get_store()
    known = engine.workflows
    specs: dict[str, WorkflowSpec] = {}
    for name in {task.workflow_name for task in tasks if task.workflow_name}:
        spec = await store.load_workflow(name) or known.get(name)
        if spec is not None:
            specs[name] = spec
    return specs


def phase_of(task: Task, specs: dict[str, WorkflowSpec]) -> Phase | None:
    """The phase the task is in (or waits in), if its workflow knows it."""
    spec = specs.get(task.workflow_name or "")
    if spec is None or task.classification is None:
        return None
    return spec.phase(task.classification)


async def list_page(
    engine: ECSWorkflowEngine,
    statuses: Sequence[TaskStatus] = (),
    workflow: str | None = None,
    limit: int = 25,
    offset: int = 0,
    oldest_first: bool = False,
    summaries: bool = True,
    phase: str | None = None,
) -> TaskPage:
    """A page of tasks, filtered by status(es), workflow and phase, with per-status
    counts; each task as ``Store.list_task_summaries`` lists it (the start only of
    its output and error, none of its data) unless ``summaries`` is False."""
    store = await engine.get_store()
    by_phase = phase_filter(store, phase)
    counts = await store.count_tasks(workflow, **by_phase)
    wanted: Any = list(statuses) if statuses else None
    listing = store.list_task_summaries if summaries else store.list_tasks
    tasks = await listing(
        status=wanted,
        workflow_name=workflow,
        limit=limit,
        offset=offset,
        oldest_first=oldest_first,
        **by_phase,
    )
    total = sum(counts.get(s, 0) for s in statuses) if statuses else sum(counts.values())
    return TaskPage(tasks=tasks, counts=counts, total=total, offset=offset, limit=limit)


async def waiting_tasks(
    engine: ECSWorkflowEngine,
    statuses: Sequence[TaskStatus] = (TaskStatus.WAITING_HUMAN,),
    limit: int = 100,
) -> tuple[list[Task], int]:
    """The first ``limit`` tasks in these waiting statuses, the highest priority
    first and then the oldest, and how many wait in all."""
    store = await engine.get_store()
    counts = await store.count_tasks()
    tasks = await store.list_tasks(
        status=list(statuses), limit=limit, oldest_first=True, priority_first=True
    )
    return tasks, sum(counts.get(s, 0) for s in statuses)


async def artifact_preview(
    engine: ECSWorkflowEngine, task: Task, name: str, cap: int
) -> tuple[str | None, bool]:
    """The start of a text artifact (at most ``cap`` bytes) and whether it was cut.

    Returns ``(None, False)`` for a binary or missing file.
    """
    try:
        path = await engine.artifact_path(task, name)
    except ArtifactError:
        return None, False

    def read(p: Path) -> bytes:
        with p.open("rb") as fh:
            return fh.read(cap + 1)

    data = await asyncio.to_thread(read, path)
    if b"\x00" in data[:8192]:
        return None, False
    cut = len(data) > cap
    return data[:cap].decode("utf-8", "replace"), cut


def check_submission(
    specs: dict[str, WorkflowSpec],
    workflow: str | None,
    data: Any,
    classification: str | None,
    assigned_to: str,
    task_id: str | None,
) -> None:
    """The checks ``submit_task`` makes, for a task that goes to Kafka instead of the store.

    Raises UnknownWorkflowError or InvalidTaskError with the engine's messages.
    """
    TaskType.parse(assigned_to)
    if task_id is not None and (
        not isinstance(task_id, str) or not task_id.strip() or "/" in task_id
    ):
        raise InvalidTaskError("task_id must be a non-empty string without '/'")
    try:
        json.dumps(data, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidTaskError(f"task data must be JSON-serializable: {exc}") from None
    if classification == DEFINE_WORKFLOW and workflow is None:
        return
    spec = specs.get(workflow or "")
    if spec is None:
        raise UnknownWorkflowError(workflow, list(specs))
    if classification is not None and spec.phase(classification) is None:
        raise InvalidTaskError(
            f"unknown classification {classification!r} for workflow {workflow!r} "
            f"(phases: {', '.join(spec.classifications)})"
        )

"""Submissions: a submit request checked and made a new task, its files stored first.

``submit_task`` and ``submit_tasks`` (the engine's) take requests, dicts of
``submit_task``'s arguments. Each is checked here (its fields, data and context,
start time, priority, files, and the workflow and phase it starts at) and becomes
a new Task with its ``submitted`` event; a request whose ``task_id`` is stored
already gets that task back. The files of new tasks are written before the tasks
are inserted, so that no phase starts without them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .artifacts import (
    SubmittedFile,
    check_submitted_files,
    remove_artifact_dirs,
    take_task_folder,
    task_artifact_dir,
    write_submitted_files,
)
from .children import child_id
from .errors import (
    LONGEST_WAIT,
    ArtifactError,
    InvalidTaskError,
    StoreError,
    UnknownWorkflowError,
)
from .model import DEFINE_WORKFLOW, Task, TaskType, check_priority, delay_seconds, utcnow
from .wire import check_task_id, json_problem
from .worker import other_engine_hint

if TYPE_CHECKING:
    from .engine import ECSWorkflowEngine
    from .stores.base import Store

__all__ = ["REQUEST_FIELDS", "check_route", "child_request", "new_task", "write_submitted"]

# The keys of a submit_tasks request: submit_task's arguments.
REQUEST_FIELDS = frozenset(
    (
        "data",
        "workflow_name",
        "classification",
        "assigned_to",
        "task_id",
        "context",
        "run_after",
        "artifacts",
        "priority",
        "parent",
    )
)


def child_request(
    engine: ECSWorkflowEngine,
    request: Mapping[str, Any],
    parent: object,
    numbered: dict[int, int],
) -> Mapping[str, Any]:
    """A submit request with a ``parent``, checked, with the child's default id
    (``numbered``: how many of this call's earlier requests each parent has)."""
    if not isinstance(parent, Task):
        raise InvalidTaskError(
            "parent must be the Task object of a phase this engine runs (the "
            f"handler's task), not {type(parent).__name__}"
            + (" (a task id)" if isinstance(parent, str) else "")
        )
    if not engine._worker.runs_phase_of(parent) or parent.status.is_waiting:
        raise InvalidTaskError(
            "parent= takes the task of a phase this engine is running, from inside "
            "that phase (before it waits)" + other_engine_hint(engine, parent)
        )
    if request.get("task_id") is not None:
        return request
    # After the children of this call's earlier requests.
    return {**request, "task_id": child_id(parent, numbered.get(id(parent), 0))}


async def new_task(
    engine: ECSWorkflowEngine, store: Store, request: Mapping[str, Any]
) -> tuple[Task, bool, dict[str, SubmittedFile]]:
    """A checked new task for one submit request and its files, or (False) the
    stored one."""
    if not isinstance(request, Mapping):
        raise InvalidTaskError(
            f"a submit request must be a dict of submit_task's arguments, "
            f"not {type(request).__name__}"
        )
    unknown = request.keys() - REQUEST_FIELDS
    if unknown:
        raise InvalidTaskError(
            f"unknown submit field {sorted(unknown)[0]!r} "
            f"(known: {', '.join(sorted(REQUEST_FIELDS))})"
        )
    data = request.get("data")
    workflow_name = request.get("workflow_name")
    classification = request.get("classification")
    for name, value in (("workflow_name", workflow_name), ("classification", classification)):
        if value is not None and not isinstance(value, str):
            raise TypeError(
                f"{name} must be a str or None, not {type(value).__name__} {value!r:.60}"
            )
    task_id = request.get("task_id")
    context = request.get("context")
    assigned_to = request.get("assigned_to")
    task_type = TaskType.parse("ai" if assigned_to is None else assigned_to)
    if task_id is not None:
        check_task_id(task_id)
    problem = json_problem(data)
    if problem is not None:
        raise InvalidTaskError(f"task data must be JSON-serializable: {problem}")
    if context is not None:
        if not isinstance(context, dict):
            raise InvalidTaskError("context must be a dict")
        problem = json_problem(context)
        if problem is not None:
            raise InvalidTaskError(f"task context must be JSON-serializable: {problem}")
    run_after = _start_time(request.get("run_after"))
    priority = request.get("priority")
    priority = 0 if priority is None else priority
    check_priority(priority)
    files: dict[str, SubmittedFile] = {}
    if request.get("artifacts") is not None:
        try:
            files = await asyncio.to_thread(check_submitted_files, request["artifacts"])
        except ArtifactError as exc:
            raise InvalidTaskError(f"artifacts: {exc}") from None
    try:
        await check_route(engine, workflow_name, classification)
    except (InvalidTaskError, UnknownWorkflowError):
        # A task submitted before its workflow went away is still returned.
        existing = await store.get_task(task_id) if task_id is not None else None
        if existing is None:
            raise
        return existing, False, {}
    kwargs: dict[str, Any] = {} if task_id is None else {"id": task_id}
    task = Task(
        data=data,
        workflow_name=workflow_name,
        classification=classification,
        assigned_to=task_type,
        context=dict(context) if context else {},
        run_after=run_after,
        priority=priority,
        parent_id=parent.id if isinstance(parent := request.get("parent"), Task) else None,
        **kwargs,
    )
    details: dict[str, Any] = {} if run_after is None else {"run_after": run_after.isoformat()}
    if priority:
        details["priority"] = priority
    if files:
        details["artifacts"] = list(files)
    task.record("submitted", workflow=workflow_name, classification=classification, **details)
    return task, True, files


async def write_submitted(
    store: Store, tasks: list[Task], files: dict[str, dict[str, SubmittedFile]]
) -> list[str]:
    """Store submitted tasks' files before the tasks, so that no phase starts
    without them; return the ids of the tasks whose files were written.

    A task id the store holds already is skipped: its submission returns the
    stored task, whose files must not be replaced. Nor may those of a submission
    of the same id going on elsewhere: the first to make the task's folder writes
    its files, and the others wait for its task, or else give up.
    """
    written: list[str] = []
    root = store.artifacts_dir
    seen: set[str] = set()
    try:
        for task in tasks:
            if task.id not in files or task.id in seen:
                continue  # no files, or a second request of an id in this batch
            seen.add(task.id)
            if await store.get_task(task.id) is not None:
                continue
            if not await asyncio.to_thread(take_task_folder, root, task.id):
                folder = task_artifact_dir(root, task.id)
                idle = await asyncio.to_thread(_seconds_unchanged, folder)
                if idle < _STALE_FOLDER and await _stored_soon(store, task.id):
                    continue  # the insert returns the stored task
                why = (
                    f"nothing in it changed for {idle:.0f} s: left by a submission of "
                    "this id that failed (its process killed, say), or by a purge "
                    "killed while it deleted the task"
                    if idle >= _STALE_FOLDER
                    else "another submission of this id is storing its files, or failed just now"
                )
                raise StoreError(
                    f"task {task.id!r}: its artifact folder exists but no such task is "
                    f"stored ({why}); once no submission of it goes on, remove {folder} "
                    "and submit it again"
                )
            written.append(task.id)
            task.artifacts = await asyncio.to_thread(
                write_submitted_files, root, task.id, files[task.id]
            )
    except BaseException as exc:
        await asyncio.to_thread(remove_artifact_dirs, store.artifacts_dir, written)
        if isinstance(exc, ArtifactError):
            raise InvalidTaskError(f"artifacts: {exc}") from exc
        if isinstance(exc, OSError):
            raise StoreError(f"cannot store the task's artifacts: {exc}") from exc
        raise
    return written


#: Seconds without a change after which a task folder without a task is taken for
#: what a failed submission left, not one going on (which writes as it goes).
_STALE_FOLDER = 60.0


def _seconds_unchanged(folder: Path) -> float:
    """How long ago anything in ``folder`` (itself, or what it holds) last changed."""
    newest = 0.0
    for path in [folder, *folder.rglob("*")]:
        try:
            newest = max(newest, path.lstat().st_mtime)
        except OSError:
            return 0.0  # changing now: taken as going on
    return max(0.0, time.time() - newest)


async def _stored_soon(store: Store, task_id: str) -> bool:
    """Whether a task another submission is storing (its files first) is stored
    within a few seconds."""
    for _ in range(50):
        if await store.get_task(task_id) is not None:
            return True
        await asyncio.sleep(0.1)
    return False


async def check_route(
    engine: ECSWorkflowEngine, workflow_name: str | None, classification: str | None
) -> None:
    """Refuse a workflow (or a starting classification) this engine cannot run."""
    if classification == DEFINE_WORKFLOW:
        if workflow_name is not None and await engine._workflow(workflow_name) is None:
            raise UnknownWorkflowError(workflow_name, list(engine._workflows))
        return
    spec = await engine._workflow(workflow_name)
    if spec is None:
        raise UnknownWorkflowError(workflow_name, list(engine._workflows))
    if classification is not None and spec.phase(classification) is None:
        raise InvalidTaskError(
            f"unknown classification {classification!r} for workflow "
            f"{workflow_name!r} (phases: {', '.join(spec.classifications)})"
        )
    starts = spec.start_phases
    if classification is not None and starts is not None and classification not in starts:
        allowed = f"only at {', '.join(map(repr, starts))}" if starts else "at no phase"
        raise InvalidTaskError(
            f"workflow {workflow_name!r} lets a submitted task start {allowed} "
            f"(start_phases), not at {classification!r}; submit it without a "
            "classification to start at its first phase"
        )


def _start_time(value: Any) -> datetime | None:
    """A submit request's ``run_after`` as a UTC time (None: now)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise InvalidTaskError(
                "run_after must be timezone-aware (datetime.now(timezone.utc) + ...): "
                "a naive time means a different moment on every machine"
            )
        try:
            when = value.astimezone(timezone.utc)
        except OverflowError:
            raise InvalidTaskError(
                f"run_after: {value.isoformat()} is out of range (in UTC it is before year 1 "
                "or after year 9999)"
            ) from None
        if when > utcnow() + timedelta(seconds=LONGEST_WAIT):
            raise InvalidTaskError(f"run_after: {value.isoformat()} is more than 100 years away")
        return when
    if isinstance(value, timedelta):
        value = value.total_seconds()
    elif not isinstance(value, (int, float)) or isinstance(value, bool):
        raise InvalidTaskError(
            "run_after must be a datetime, a timedelta or a number of seconds, "
            f"not {type(value).__name__}"
        )
    return utcnow() + timedelta(seconds=delay_seconds(value, "run_after"))

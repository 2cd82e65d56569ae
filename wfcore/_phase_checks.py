"""What a running phase may leave in its task, and the checks that fail an attempt
which breaks it.

A phase's handler gets the task itself: it sets ``output``, ``context``,
``next_classification`` and may wait; the fields the engine keeps (attempts,
history, version, workflow and phase, artifacts, children) are its alone. A phase
that changes one of those, or leaves a value JSON cannot hold, fails that attempt
with a message naming the field, the same on every store, rather than a write that
fails (and the task with it, at every claim) or lands somewhere no route leads.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .errors import InvalidTaskError
from .model import Artifact, Task, TaskStatus, priority_problem
from .wire import json_problem, printable

__all__ = [
    "Owned",
    "check_engine_fields",
    "check_json",
    "check_phase_priority",
    "happened_since_start",
    "json_fields_problem",
    "restore_place",
]

# Not any value a phase could store.
_MISSING = object()


class Owned:
    """The fields of a running phase's task that only the engine sets, as they were
    when the attempt began (version and history: as its last checkpoint stored them)."""

    __slots__ = (
        "added_children",
        "artifacts",
        "assigned_to",
        "attempts",
        "children",
        "classification",
        "created_at",
        "history",
        "history_length",
        "output_values",
        "outputs",
        "parent_id",
        "version",
        "workflow_name",
    )

    def __init__(self, task: Task) -> None:
        self.attempts = task.attempts
        self.outputs = task.outputs
        # Its entries: a phase may set one, which must be JSON like its output.
        self.output_values = dict(task.outputs)
        self.artifacts = task.artifacts
        self.workflow_name = task.workflow_name
        self.classification = task.classification
        self.assigned_to = task.assigned_to
        self.created_at = task.created_at
        self.parent_id = task.parent_id
        self.children = tuple(task.children)
        # The children the phase submits, in order (the worker's record of them).
        self.added_children: dict[str, None] = {}
        self.version = task.version
        self.history = task.history
        self.history_length = len(task.history)

    def checkpointed(self, saved: Task) -> None:
        self.version = saved.version
        self.history = saved.history
        self.history_length = len(saved.history)


def _children_expected(owned: Owned) -> list[str]:
    """The task's children as the engine has them: those it had when the attempt
    began, then those the phase submitted that it did not have."""
    if not owned.added_children:
        return list(owned.children)
    had = set(owned.children)
    return [*owned.children, *(c for c in owned.added_children if c not in had)]


def restore_place(task: Task, owned: Owned) -> None:
    """Put back the workflow and phase an interrupted attempt started in: the task
    goes back to the store from there, whatever the phase did to them."""
    task.workflow_name = owned.workflow_name
    task.classification = owned.classification


def check_engine_fields(task: Task, owned: Owned) -> None:
    """Fail the attempt when a phase broke a field only the engine sets, putting it
    back first: else the task could not be stored (and would run again for ever),
    its write would be refused as a stale one (and its worker taken for dead), or it
    would move to a phase or workflow no route leads to."""
    broken = []
    if task.attempts != owned.attempts:
        task.attempts = owned.attempts
        broken.append("task.attempts")
    if type(task.outputs) is not dict:
        task.outputs = owned.outputs
        broken.append("task.outputs (a dict of the phases' outputs)")
    if type(task.artifacts) is not list or not all(isinstance(a, Artifact) for a in task.artifacts):
        task.artifacts = [a for a in owned.artifacts if isinstance(a, Artifact)]
        broken.append("task.artifacts (use engine.add_artifact_text/bytes)")
    if task.workflow_name != owned.workflow_name:
        task.workflow_name = owned.workflow_name
        broken.append("task.workflow_name")
    if task.classification != owned.classification:
        task.classification = owned.classification
        broken.append("task.classification (to pick the next phase, set task.next_classification)")
    if task.version != owned.version:
        task.version = owned.version
        broken.append("task.version")
    if task.assigned_to is not owned.assigned_to:
        task.assigned_to = owned.assigned_to
        broken.append("task.assigned_to")
    if task.created_at is not owned.created_at:
        task.created_at = owned.created_at
        broken.append("task.created_at")
    history = task.history
    if history is not owned.history or len(history) < owned.history_length:
        task.history = owned.history
        del task.history[owned.history_length :]
        broken.append("task.history (the engine records its events)")
    elif not all(type(event) is dict for event in history[owned.history_length :]):
        del history[owned.history_length :]
        broken.append("task.history (the engine records its events)")
    run_after = task.run_after
    if run_after is not None:
        task.run_after = None
        broken.append("task.run_after (a retry's or a delayed task's start)")
    if type(task.context) is not dict:
        task.context = {}
        broken.append("task.context (a dict)")
    if task.parent_id != owned.parent_id:
        task.parent_id = owned.parent_id
        broken.append("task.parent_id")
    expected = _children_expected(owned)
    if task.children != expected:
        # Ids the engine did not add (cancel(children=True) would cancel those tasks),
        # or its own taken out.
        task.children = expected
        broken.append("task.children (submit children with submit_task(..., parent=task))")
    if task.waiting_for is not None and task.status is not TaskStatus.WAITING_IO:
        task.waiting_for = None
        broken.append("task.waiting_for (call engine.wait_for_children())")
    status = task.status
    if not isinstance(status, TaskStatus) or not (
        status is TaskStatus.IN_PROGRESS or status.is_waiting
    ):
        task.status = TaskStatus.IN_PROGRESS
        broken.append(f"task.status to {status!r} (to wait, call engine.suspend())")
    deadline = task.deadline
    if deadline is not None and not (isinstance(deadline, datetime) and deadline.tzinfo):
        task.deadline = None
        broken.append("task.deadline (pass deadline= to engine.suspend())")
    if broken:
        raise InvalidTaskError("a phase may not set " + "; ".join(broken))


def check_json(task: Task, owned: Owned) -> None:
    """Fail the attempt (not the store write) when a phase leaves non-JSON values."""
    problem = json_problem(task.output)
    if problem is not None:
        task.output = _printed(task.output)  # else the failed task could not be stored
        raise InvalidTaskError(f"the phase output must be JSON-serializable: {problem}")
    # An earlier phase's output the phase set or replaced (those it left are stored
    # already): else the write after the phase fails, and the task with it, for good.
    for name, value in task.outputs.items():
        if owned.output_values.get(name, _MISSING) is value:
            continue
        problem = json_problem(value)
        if problem is not None:
            raise InvalidTaskError(f"task.outputs[{name!r}] must be JSON-serializable: {problem}")
    for name in ("context", "data"):
        value = getattr(task, name)
        problem = json_problem(value) if value else None
        if problem is not None:
            # The failed attempt's data and context are not stored (see _rolled_back).
            raise InvalidTaskError(f"task.{name} must be JSON-serializable: {problem}")
    # The history quotes these (the question asked, the route wanted).
    for name in ("waiting_reason", "next_classification"):
        value = getattr(task, name)
        if value is None:
            continue
        problem = json_problem(value) if isinstance(value, str) else "it is not a string"
        if problem is not None:
            setattr(task, name, None)
            raise InvalidTaskError(f"task.{name} must be text or None: {problem}")


def check_phase_priority(task: Task, before: int) -> None:
    """Fail the attempt when a phase leaves a priority no store can order by,
    putting back the one it started with."""
    problem = priority_problem(task.priority)
    if problem is not None:
        task.priority = before
        raise InvalidTaskError(f"task.priority {problem}")


def _printed(value: Any) -> Any:
    """What prints of a value that cannot be stored, to debug with: JSON where it
    can be, else its repr (a value nested too deep, say)."""
    kept = printable(value)
    return kept if json_problem(kept) is None else repr(value)[:10_000]


def happened_since_start(task: Task, event: str) -> bool:
    """True if the history has an ``event`` since a phase last started (or at all,
    for a task no phase has started)."""
    for entry in reversed(task.history):
        name = entry.get("event") if isinstance(entry, dict) else None
        if name == event:
            return True
        if name == "phase_started":
            return False
    return False


def json_fields_problem(task: Task) -> str | None:
    """Why a running phase's task cannot be stored as it is, or None."""
    for name in ("data", "context", "output"):
        problem = json_problem(getattr(task, name))
        if problem is not None:
            return f"task.{name}: {problem}"
    return None

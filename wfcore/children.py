"""Child tasks: tasks a phase submits with ``submit_task(..., parent=task)`` and then
waits for with ``engine.wait_for_children(task)``, and the join that moves the
parent on once every one of them has finished.

The join happens as soon as the last child finishes: the worker (or ``cancel``)
that finishes a child looks at its parent. Should that worker die between the two
writes, the parent is claimed again at its ``deadline``, which for a task waiting
for children is only when a worker next checks on them, at growing intervals.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from .errors import InvalidTaskError
from .model import Phase, Task, utcnow
from .routing import advance
from .wire import MAX_TASK_ID_BYTES, is_unicode_text

if TYPE_CHECKING:
    from .engine import ECSWorkflowEngine
    from .stores.base import Store
    from .worker import Worker

logger = logging.getLogger("wfcore")

__all__ = [
    "Joins",
    "adopt_children",
    "check_interval",
    "child_id",
    "children_results",
    "first_check",
    "record_join",
    "stored_children",
    "wait_ends",
]

#: Seconds until a worker first checks on the children a task waits for, should
#: none of them have reported back; the interval grows with the wait, up to
#: :data:`LONGEST_CHECK`.
FIRST_CHECK = 5.0
LONGEST_CHECK = 300.0


def child_id(parent: Task, earlier: int = 0) -> str:
    """The id of the next child ``parent`` submits without one (after ``earlier``
    others being submitted with it): its id and the child's place among its
    children, so that a phase run again after a crash or a failed attempt submits
    the same ids, and finds its earlier run's children."""
    task_id = f"{parent.id}.{len(parent.children) + earlier + 1}"
    if len(task_id.encode("utf-8")) > MAX_TASK_ID_BYTES:
        raise InvalidTaskError(
            f"the id of task {parent.id[:40]!r}...'s child would be longer than "
            f"{MAX_TASK_ID_BYTES} bytes: give it a task_id"
        )
    return task_id


async def stored_children(store: Store, task: Task) -> AsyncIterator[Task]:
    """The stored children of ``task``: those its stored ``children`` lists, then
    those with the default ids that come after them, ``<id>.<n>``: submitted by a
    phase still running (listed only when it ends), or by an attempt that failed
    (whose changes to the task were not kept). A listed task whose ``parent_id``
    is another's is left out."""
    for kid in task.children:
        child = await store.get_task(kid)
        # One whose parent is another task is none of this one's (a list written
        # by hand, say), and must not be cancelled or counted with its children.
        if child is not None and child.parent_id == task.id:
            yield child
    number = len(task.children)
    while True:
        number += 1
        kid = f"{task.id}.{number}"
        if not is_unicode_text(kid):
            return
        child = await store.get_task(kid)
        if child is None or child.parent_id != task.id:
            return
        yield child


def check_interval(task: Task, now: datetime | None = None) -> datetime:
    """When a worker next checks on the children ``task`` waits for: after as long
    as it has waited so far (from :data:`FIRST_CHECK` to :data:`LONGEST_CHECK`
    seconds), so a short wait is checked often and a long one seldom; and no later
    than the end of its wait (:func:`wait_ends`)."""
    now = now or utcnow()
    waited = 0.0
    suspended = _last_suspended(task)
    if suspended is not None:
        try:
            waited = (now - datetime.fromisoformat(suspended["at"])).total_seconds()
        except (KeyError, TypeError, ValueError):
            pass
    return first_check(wait_ends(task), now, min(LONGEST_CHECK, max(FIRST_CHECK, waited)))


def first_check(
    until: datetime | None, now: datetime | None = None, seconds: float = FIRST_CHECK
) -> datetime:
    """When a worker first checks on the children of a task that begins to wait for
    them now: :data:`FIRST_CHECK` seconds on, or at ``until``, the end of the wait,
    if that is sooner."""
    check = (now or utcnow()) + timedelta(seconds=seconds)
    return check if until is None else min(check, until)


def wait_ends(task: Task) -> datetime | None:
    """When the wait of ``task`` for its children ends whether or not they have all
    finished (``wait_for_children``'s ``timeout``, recorded as ``until`` in the
    ``suspended`` event), or None."""
    suspended = _last_suspended(task)
    until = suspended.get("until") if suspended is not None else None
    try:
        return datetime.fromisoformat(until) if isinstance(until, str) else None
    except ValueError:
        return None


def _last_suspended(task: Task) -> dict[str, Any] | None:
    """The event that began the task's latest wait."""
    for event in reversed(task.history):
        if event.get("event") == "suspended":
            found: dict[str, Any] = event
            return found
    return None


async def children_results(
    store: Store,
    task_ids: list[str],
    start: int = 0,
    *,
    unfinished: bool = False,
    known: set[str] | None = None,
) -> list[dict[str, Any]] | None:
    """What became of each task of ``task_ids`` (in that order) once all have
    finished, else None. Reading begins at ``start`` and stops at the first that
    has not finished: a child that has just finished looks first at its younger
    siblings, which finish after it as often as not. With ``unfinished`` (a wait
    that has ended), the others are there too, with the status they have now.

    ``known``: ids of children seen finished before (by this process), looked at
    only once no other is found unfinished, and then read for their results; those
    read finished join it. So the siblings that finish together (a group commit's
    worth) do not each read all the others."""
    count = len(task_ids)
    found: dict[int, Task | None] = {}
    for step in range(count):
        index = (start + step) % count
        if known is not None and task_ids[index] in known:
            continue
        child = await store.get_task(task_ids[index])
        if child is not None and not child.status.is_finished and not unfinished:
            return None
        found[index] = child
        if known is not None and child is not None and child.status.is_finished:
            known.add(child.id)
    for index in range(count):
        if index in found:
            continue
        child = await store.get_task(task_ids[index])
        if child is not None and not child.status.is_finished:
            if known is not None:
                known.discard(task_ids[index])  # retried since it was seen finished
            if not unfinished:
                return None
        found[index] = child
    return [_result(task_ids[i], found[i]) for i in range(count)]


class _Reports:
    """The children of one parent reporting their end in this process and event
    loop: one at a time (the others then find the parent moved on, rather than each
    reading every sibling), and which children have been seen finished."""

    __slots__ = ("finished", "lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.finished: set[str] = set()
        self.users = 0


def _result(task_id: str, child: Task | None) -> dict[str, Any]:
    if child is None:
        return {
            "id": task_id,
            "status": None,
            "output": None,
            "error": "the task was deleted before its parent read it",
        }
    finished = child.status.is_finished
    return {
        "id": child.id,
        "status": child.status.value,
        # An unfinished one's is only its latest phase's.
        "output": child.output if finished else None,
        "error": child.error if finished else None,
    }


def record_join(
    task: Task, phase: str, results: list[dict[str, Any]], *, ended: bool = False
) -> None:
    """Record that the children ``task`` waits for in ``phase`` have all finished
    (or, ``ended``, that its wait for them is over), and end its wait; advancing it
    (the results as the phase's output) is left to the caller."""
    counts = Counter(str(result["status"] or "deleted") for result in results)
    details: dict[str, Any] = dict(sorted(counts.items()))
    if ended:
        details["wait_ended"] = True
    task.record("children_finished", phase=phase, **details)
    task.waiting_reason = None
    task.deadline = None
    task.waiting_for = None
    task.resume_in_phase = False
    task.reply = None


class Joins:
    """Moving an engine's parent tasks on when their children have finished.

    The engine holds one: the worker (or ``cancel``) that finishes a child calls
    :meth:`report`, and the worker that stores a parent's wait, or checks on it
    at its deadline, calls :meth:`join`.
    """

    def __init__(self, engine: ECSWorkflowEngine) -> None:
        self._engine = engine
        # The children of one parent reporting in one event loop, by (loop, parent).
        self._reports: dict[tuple[int, str], _Reports] = {}

    async def report(self, task: Task) -> None:
        """A finished task that is a child: if its parent waits for it and it was
        the last of its siblings to finish, move the parent on now."""
        if task.parent_id is None:
            return
        # One child of a parent at a time here: those finishing together (one group
        # commit's worth) would each read every sibling, and then all but one find
        # the parent joined. Each loop its own (an app may cancel from its own).
        key = (id(asyncio.get_running_loop()), task.parent_id)
        reports = self._reports.get(key)
        if reports is None:
            reports = self._reports[key] = _Reports()
        reports.users += 1
        try:
            async with reports.lock:
                reports.finished.add(task.id)
                store = await self._engine.get_store()
                parent = await store.get_task(task.parent_id)
                waited = parent.waiting_for if parent is not None else None
                if parent is None or not waited or task.id not in waited:
                    return
                joined = await self._joined(
                    parent.id, start=waited.index(task.id) + 1, known=reports.finished
                )
            # Announced once the others may report: a hook of the parent's (its
            # completed hook cancelling a child still running) reports here too.
            if joined is not None:
                await self._moved_on(*joined)
        except (KeyboardInterrupt, asyncio.CancelledError):
            raise
        except Exception:
            # The parent's own checks (at its deadline) find the children finished.
            logger.warning(
                "task %s: could not look at its parent task %s; a worker will when it "
                "next checks on that task's children",
                task.id,
                task.parent_id,
                exc_info=True,
            )
        finally:
            reports.users -= 1
            if not reports.users:
                del self._reports[key]

    async def join(self, task_id: str) -> bool:
        """Move a task waiting for its children on if all of them have finished;
        return whether it did."""
        joined = await self._joined(task_id)
        if joined is None:
            return False
        await self._moved_on(*joined)
        return True

    async def _moved_on(self, task: Task, phase: Phase) -> None:
        await self._engine._after_phase(task, phase)
        self._engine._worker.poke()

    async def _joined(
        self, task_id: str, *, start: int = 0, known: set[str] | None = None
    ) -> tuple[Task, Phase] | None:
        """Store a task waiting for its children as moved on if all of them have
        finished (reading them from the one at ``start``; ``known``: see
        :func:`children_results`); return it and the phase it finished, or None."""
        engine = self._engine
        store = await engine.get_store()
        task = await store.get_task(task_id)
        if task is None or not task.status.is_waiting or task.waiting_for is None:
            return None
        waited = task.waiting_for
        results = await children_results(store, waited, start, known=known)
        if results is None:
            return None

        async def join(task: Task) -> Phase:
            if not task.status.is_waiting or task.waiting_for != waited:
                raise _NotJoined  # joined, answered or cancelled meanwhile
            spec = await engine._workflow(task.workflow_name)
            phase = spec.phase(task.classification) if spec and task.classification else None
            if spec is None or phase is None:
                raise _NotJoined  # its worker's check at the deadline fails it
            record_join(task, phase.target_classification, results)
            advance(task, spec, phase, results)
            return phase

        try:
            return await engine._change_stored(task_id, join)
        except _NotJoined:
            return None


class _NotJoined(Exception):
    """The task no longer waits for the children read: nothing to write."""


def adopt_children(
    worker: Worker,
    results: list[Any],
    parents: list[tuple[int, Task]],
    return_exceptions: bool,
) -> None:
    """Add the children just submitted (``results`` of ``submit_tasks``; ``parents``:
    the index of each child's request, and its parent) to their parents'
    ``children``, in order, once each (a phase run again submits the same ones)."""
    known: dict[int, set[str]] = {}  # each parent's children, by id() of parent
    for index, parent in parents:
        child = results[index]
        if not isinstance(child, Task):
            continue  # its request was refused (return_exceptions)
        if child.parent_id != parent.id:
            error = InvalidTaskError(
                f"task {child.id!r} exists already, and is not a child of task "
                f"{parent.id!r}: give the child another task_id"
            )
            if not return_exceptions:
                raise error
            results[index] = error
            continue
        children = known.get(id(parent))
        if children is None:
            children = known[id(parent)] = set(parent.children)
            # A new list, not appends to it: copies of the task share the old one.
            parent.children = list(parent.children)
        if child.id not in children:
            children.add(child.id)
            parent.children.append(child.id)
        worker.note_child(parent, child.id)

"""The in-memory store (``memory://``): the full store contract, kept in one process.

Nothing survives the process; artifacts go to a temporary folder removed on
close, or when the store is garbage-collected or the process exits if nobody
closed it. It is the fastest store, for tests, demos and throw-away pipelines.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import shutil
import tempfile
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path

from ..errors import StoreError
from ..hookspecs import hookimpl
from ..model import Task, TaskStatus, WorkflowSpec, copy_json, copy_with_history
from .base import Store, check_consumer_name, ready_at, record_takeover, utc_from_timestamp

__all__ = ["MemoryStore"]

_ACTIVE = (TaskStatus.PENDING, TaskStatus.IN_PROGRESS)


def _snapshot(task: Task) -> Task:
    """A copy for a worker, that later changes to ``task`` (by a running handler)
    don't reach. Its history events are the stored ones: the worker only adds
    events, and a phase may not change those it has."""
    return task.copy()


def _handed_out(task: Task) -> Task:
    """A copy for the caller of the store (get_task, list_tasks...), its history
    events copied too: a caller changing what it got, say an event's time made a
    datetime for display, must not change what is stored, as with SQLite."""
    return copy_with_history(task, copy_json(task.history))


def _written(task: Task, stored: Task) -> Task:
    """The copy of ``task`` to store over ``stored``, the task at the version it
    was read at. When ``task`` only added to that history (the stored entries are
    its first ones, the same objects), the stored list takes the new entries: no
    other copy shares it, and copying a history of thousands of events at every
    write would make a long-looping task slower at each phase."""
    kept, history = stored.history, task.history
    if kept and len(history) >= len(kept) and history[len(kept) - 1] is kept[-1]:
        kept.extend(history[len(kept) :])
        return copy_with_history(task, kept)
    return copy_with_history(task, copy_json(history))


class _Row:
    __slots__ = ("lease_expires", "lease_owner", "ready_at", "seq", "task")

    def __init__(self, task: Task, seq: int, ready_at: float | None) -> None:
        self.task = task
        self.seq = seq
        self.ready_at = ready_at
        self.lease_owner: str | None = None
        self.lease_expires: float | None = None


class MemoryStore(Store):
    """Tasks in a dict; runnable ones in a heap per priority, ordered by when they
    become ready."""

    durable = False  # gone with the process

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._rows: dict[str, _Row] = {}
        # Scheduled rows by priority, each priority's in a heap by when they become
        # ready: (ready_at, seq, id). An entry a later change made stale (the row
        # rescheduled, or given another priority) stays until popped, and is
        # skipped then. Few priorities are in use at once: a claim looks at each.
        self._ready: dict[int, list[tuple[float, int, str]]] = {}
        self._seq = itertools.count()
        self._workflows: dict[str, WorkflowSpec] = {}
        # consumer -> {task id: the version of the finish to publish}
        self._consumers: dict[str, dict[str, int]] = {}
        self._tmp: str | None = None
        self._remove_tmp: Callable[[], object] | None = None
        # PENDING or IN_PROGRESS rows, kept current so has_active_tasks is O(1).
        self._active = 0
        self.artifacts_dir = Path(tempfile.gettempdir()) / "wfcore-memory-unopened"

    async def open(self) -> None:
        if self._tmp is None:
            self._tmp = tempfile.mkdtemp(prefix="wfcore-memory-")
            self.artifacts_dir = Path(self._tmp) / "artifacts"
            # A script that never closes its engine (asyncio.run(main()) and done)
            # must not leave a folder in the temporary directory at every run.
            self._remove_tmp = weakref.finalize(self, shutil.rmtree, self._tmp, ignore_errors=True)

    async def exists(self) -> bool:
        # Each MemoryStore is a store of its own: it exists from its open() on.
        return self._tmp is not None

    async def close(self) -> None:
        if self._remove_tmp is not None:
            self._remove_tmp()
            self._remove_tmp = self._tmp = None

    def _schedule(self, row: _Row, ready_at: float | None) -> None:
        row.ready_at = ready_at
        if ready_at is not None:
            heap = self._ready.get(row.task.priority)
            if heap is None:
                heap = self._ready[row.task.priority] = []
            heapq.heappush(heap, (ready_at, row.seq, row.task.id))

    async def save_workflow(self, spec: WorkflowSpec) -> None:
        self._workflows[spec.name] = spec

    async def add_workflow(self, spec: WorkflowSpec) -> WorkflowSpec:
        return self._workflows.setdefault(spec.name, spec)

    async def load_workflows(self) -> list[WorkflowSpec]:
        return [self._workflows[n] for n in sorted(self._workflows)]

    async def load_workflow(self, name: str) -> WorkflowSpec | None:
        return self._workflows.get(name)

    async def insert_task(self, task: Task) -> tuple[Task, bool]:
        [result] = await self.insert_tasks([task])
        return result

    async def insert_tasks(self, tasks: Sequence[Task]) -> list[tuple[Task, bool]]:
        now = time.time()
        results = [self._insert(task, now) for task in tasks]
        # Yield as a real store's write would: a producer submitting in a loop
        # must not starve the workers on the same event loop.
        await asyncio.sleep(0)
        return results

    def _insert(self, task: Task, now: float) -> tuple[Task, bool]:
        row = self._rows.get(task.id)
        if row is not None:
            return _handed_out(row.task), False
        row = _Row(_handed_out(task), next(self._seq), None)
        self._rows[task.id] = row
        self._active += task.status in _ACTIVE
        self._schedule(row, ready_at(task, now))
        return task, True

    async def get_task(self, task_id: str) -> Task | None:
        row = self._rows.get(task_id)
        return None if row is None else _handed_out(row.task)

    async def task_ids_starting_with(self, prefix: str, limit: int = 10) -> list[str]:
        return sorted(task_id for task_id in self._rows if task_id.startswith(prefix))[
            : max(limit, 0)
        ]

    async def list_tasks(
        self,
        status: TaskStatus | Sequence[TaskStatus] | None = None,
        workflow_name: str | None = None,
        limit: int = 100,
        offset: int = 0,
        oldest_first: bool = False,
        priority_first: bool = False,
        phase: str | None = None,
    ) -> list[Task]:
        wanted = None
        if status is not None:
            statuses = [status] if isinstance(status, (str, TaskStatus)) else list(status)
            wanted = {TaskStatus.parse(s) for s in statuses}
        rows = self._rows.values() if oldest_first else reversed(self._rows.values())
        found = []
        for row in rows:
            if wanted is not None and row.task.status not in wanted:
                continue
            if workflow_name is not None and row.task.workflow_name != workflow_name:
                continue
            if phase is not None and row.task.classification != phase:
                continue
            found.append(row.task)
        if priority_first:
            found.sort(key=lambda task: -task.priority)  # stable: insertion order kept
        # A negative limit or offset would slice from the end: none, or from the start.
        start = max(offset, 0)
        return [_handed_out(t) for t in found[start : start + max(limit, 0)]]

    async def count_tasks(
        self, workflow_name: str | None = None, phase: str | None = None
    ) -> dict[TaskStatus, int]:
        counts: dict[TaskStatus, int] = {}
        for row in self._rows.values():
            task = row.task
            if workflow_name is not None and task.workflow_name != workflow_name:
                continue
            if phase is None or task.classification == phase:
                counts[task.status] = counts.get(task.status, 0) + 1
        return counts

    async def count_by_phase(self, workflow_name: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self._rows.values():
            task = row.task
            if task.workflow_name == workflow_name and not task.status.is_finished:
                if task.classification is not None:
                    counts[task.classification] = counts.get(task.classification, 0) + 1
        return counts

    async def count_due(self, *, workflows: Sequence[str] | None = None) -> int:
        now = time.time()
        wanted = None if workflows is None else set(workflows)
        return sum(
            1
            for row in self._rows.values()
            if (wanted is None or row.task.workflow_name in wanted)
            and (
                row.task.status is TaskStatus.IN_PROGRESS
                or (
                    row.task.status is TaskStatus.PENDING
                    and row.ready_at is not None
                    and row.ready_at <= now
                )
            )
        )

    async def count_delayed(
        self, *, workflows: Sequence[str] | None = None
    ) -> tuple[int, datetime | None]:
        now = time.time()
        wanted = None if workflows is None else set(workflows)
        count, first = 0, None
        for row in self._rows.values():
            ready_at = row.ready_at
            if (
                row.task.status is TaskStatus.PENDING
                and ready_at is not None
                and ready_at > now
                and (wanted is None or row.task.workflow_name in wanted)
            ):
                count += 1
                first = ready_at if first is None else min(first, ready_at)
        return count, None if first is None else utc_from_timestamp(first)

    async def update_task(self, task: Task, *, keep_lease: bool = False) -> bool:
        row = self._rows.get(task.id)
        if row is None or row.task.version != task.version:
            return False
        was_finished = row.task.status.is_finished
        self._active += (task.status in _ACTIVE) - (row.task.status in _ACTIVE)
        task.version += 1
        now = time.time()
        task.updated_at = utc_from_timestamp(now)
        row.task = _written(task, row.task)
        if keep_lease:
            self._schedule(row, row.lease_expires)
        else:
            row.lease_owner = row.lease_expires = None
            self._schedule(row, ready_at(task, now))
        if task.status.is_finished and not was_finished:
            for pending in self._consumers.values():
                pending[task.id] = task.version
        return True

    async def claim(
        self,
        owner: str,
        limit: int,
        lease_seconds: float,
        *,
        workflows: Sequence[str] | None = None,
    ) -> list[Task]:
        now = time.time()
        expires = now + lease_seconds
        claimed: list[Task] = []
        for priority in sorted(self._ready, reverse=True):
            heap = self._ready[priority]
            self._claim_from(heap, priority, now, owner, expires, limit, workflows, claimed)
            if not heap:
                del self._ready[priority]
            if len(claimed) >= limit:
                break
        if claimed:
            await asyncio.sleep(0)
        return claimed

    def _claim_from(
        self,
        heap: list[tuple[float, int, str]],
        priority: int,
        now: float,
        owner: str,
        expires: float,
        limit: int,
        workflows: Sequence[str] | None,
        claimed: list[Task],
    ) -> None:
        """Claim into ``claimed``, up to ``limit``, the ready tasks of one priority."""
        # Ready tasks of other workflows, put back once this claim is done. (A
        # linear cost in their number: fine for a store that lives in one process.)
        passed_over = []
        while heap and len(claimed) < limit and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            ready_at, _, task_id = entry
            row = self._rows.get(task_id)
            if row is None or row.ready_at != ready_at or row.task.priority != priority:
                continue  # a stale entry: the row was rescheduled since
            if workflows is not None and row.task.workflow_name not in workflows:
                passed_over.append(entry)
                continue
            if row.task.status is TaskStatus.PENDING:
                row.task.status = TaskStatus.IN_PROGRESS
            if row.lease_owner is not None:
                record_takeover(row.task, row.lease_owner, owner)
            row.task.version += 1
            row.lease_owner = owner
            row.lease_expires = expires
            self._schedule(row, expires)
            claimed.append(_snapshot(row.task))
        for entry in passed_over:
            heapq.heappush(heap, entry)

    async def renew(self, owner: str, task_ids: Sequence[str], lease_seconds: float) -> set[str]:
        expires = time.time() + lease_seconds
        held = set()
        for task_id in task_ids:
            row = self._rows.get(task_id)
            if row is not None and row.lease_owner == owner:
                row.lease_expires = expires
                self._schedule(row, expires)
                held.add(task_id)
        return held

    async def note_phases(self, owner: str, phases: Mapping[str, str]) -> None:
        for task_id, phase in phases.items():
            row = self._rows.get(task_id)
            if (
                row is not None
                and row.lease_owner == owner
                and row.task.status is TaskStatus.IN_PROGRESS
                and row.task.classification is None
            ):
                row.task.classification = phase

    async def release_dead_leases(self, owners: Sequence[str]) -> int:
        now = time.time()
        freed = 0
        for row in self._rows.values():
            if row.lease_owner in owners:
                row.lease_expires = now
                self._schedule(row, now)
                freed += 1
        return freed

    async def lease_owners(self) -> list[str]:
        return sorted({r.lease_owner for r in self._rows.values() if r.lease_owner})

    async def lease_of(self, task_id: str) -> tuple[str, datetime] | None:
        row = self._rows.get(task_id)
        if row is None or row.lease_owner is None or row.lease_expires is None:
            return None
        return row.lease_owner, utc_from_timestamp(row.lease_expires)

    async def has_active_tasks(self, *, workflows: Sequence[str] | None = None) -> bool:
        if workflows is None:
            return self._active > 0
        return any(
            row.task.status in _ACTIVE and row.task.workflow_name in workflows
            for row in self._rows.values()
        )

    def _finished_rows(
        self, before: float, statuses: Sequence[TaskStatus], workflow_name: str | None
    ) -> list[_Row]:
        wanted = {TaskStatus.parse(s) for s in statuses}
        if not wanted or not all(s.is_finished for s in wanted):
            raise StoreError("only finished tasks (completed, failed, cancelled) are deleted")
        unpublished = {i for pending in self._consumers.values() for i in pending}
        rows = [
            row
            for row in self._rows.values()
            if row.task.status in wanted
            and row.task.updated_at.timestamp() < before
            and (workflow_name is None or row.task.workflow_name == workflow_name)
            and row.task.id not in unpublished
            and not self._parent_unfinished(row.task)
        ]
        rows.sort(key=lambda row: row.task.updated_at)
        return rows

    def _parent_unfinished(self, task: Task) -> bool:
        """Whether ``task`` is a child whose parent has not finished: the parent reads
        its children's results when the last one finishes."""
        parent = self._rows.get(task.parent_id) if task.parent_id is not None else None
        return parent is not None and not parent.task.status.is_finished

    async def delete_finished(
        self,
        before: float,
        statuses: Sequence[TaskStatus],
        *,
        workflow_name: str | None = None,
        limit: int = 1000,
    ) -> list[str]:
        rows = self._finished_rows(before, statuses, workflow_name)[: max(limit, 0)]
        for row in rows:
            del self._rows[row.task.id]
        return [row.task.id for row in rows]

    async def count_finished(
        self,
        before: float,
        statuses: Sequence[TaskStatus],
        *,
        workflow_name: str | None = None,
    ) -> int:
        return len(self._finished_rows(before, statuses, workflow_name))

    async def outbox_register(self, consumer: str) -> None:
        check_consumer_name(consumer)
        self._consumers.setdefault(consumer, {})

    async def outbox_pending(self, consumer: str, limit: int = 100) -> list[Task]:
        pending = self._consumers.get(consumer, {})
        # A task retried since it finished waits until it finishes again.
        finished = (self._rows[i].task for i in pending if self._rows[i].task.status.is_finished)
        return [_handed_out(task) for task in itertools.islice(finished, max(limit, 0))]

    async def outbox_ack(
        self, consumer: str, task_ids: Sequence[str], *, versions: Sequence[int] | None = None
    ) -> None:
        pending = self._consumers.get(consumer, {})
        if versions is None:
            for task_id in task_ids:
                pending.pop(task_id, None)
            return
        for task_id, version in zip(task_ids, versions, strict=True):
            if pending.get(task_id, version + 1) <= version:
                del pending[task_id]

    async def outbox_consumers(self) -> dict[str, int]:
        return {name: len(self._consumers[name]) for name in sorted(self._consumers)}

    async def outbox_unregister(self, consumer: str) -> int | None:
        pending = self._consumers.pop(consumer, None)
        return None if pending is None else len(pending)


@hookimpl(trylast=True)
def wfe_open_store(url: str) -> Store | None:
    if url == "memory://" or url.startswith("memory:"):
        if url not in ("memory://", "memory:"):
            raise StoreError(f"memory store URL takes no path or options: {url!r}")
        return MemoryStore()
    return None

"""The storage backend interface: the store is the queue, the lease holder and the record."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import ClassVar

from ..errors import StoreError
from ..model import Task, TaskStatus, WorkflowSpec

__all__ = ["UNREADABLE_ERROR", "Store", "record_takeover", "unreadable"]


class Store(abc.ABC):
    """Where tasks, workflows and the results outbox live.

    A store is opened once per engine (``await store.open()``) inside the event
    loop that uses it. Every method that changes a task is a compare-and-set on
    ``task.version``: it succeeds only if the stored version is the one the caller
    read, then increments both. This is how a cancelled or taken-over task's late
    writes are dropped. A task is stored at the version it is inserted with.

    Tasks go in and come out as copies: a Task object the caller keeps changing
    (a running handler's) never changes what is stored, nor does changing one
    read back. Where several processes share a store (``wfe submit`` beside a
    running ``wfe worker``), each must see the others' writes, and the
    compare-and-set must hold across them.

    Leases: ``claim`` hands runnable tasks to one owner until its lease expires;
    the owner renews while it works. Leases (owner, expiry) are the store's own
    record, not fields of the Task. A task is runnable when it is PENDING and its
    ``run_after`` has passed, or IN_PROGRESS with an expired lease (its worker
    died), or WAITING_* with a passed ``deadline``. Claiming bumps the version (a
    write by anyone who read the task before is refused) and returns the tasks
    with their stored status unchanged apart from PENDING becoming IN_PROGRESS;
    one whose previous lease was still on record (its worker died or lost it)
    gets a ``taken_over`` event (see :func:`record_takeover`).

    :class:`wfcore.testing.StoreContract` checks all of this: a store plugin's
    test suite inherits it.
    """

    #: The URL the store was opened from.
    url: str
    #: Whether tasks outlive closing the store (and the process): False for
    #: ``memory://``. Whoever acknowledges work upstream once its task is stored
    #: (wfe_kafka commits a message's offset) needs a durable store.
    durable: ClassVar[bool] = True
    #: The folder under which artifact files live (one sub-folder per task).
    artifacts_dir: Path

    @abc.abstractmethod
    async def open(self) -> None:
        """Open (creating if needed) the store; refuse one that is not ours or newer.

        Raise :class:`~wfcore.StoreError` with a message naming the URL and the
        problem: the ``wfe`` commands print it as their one-line error.
        """

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush pending writes and close."""

    # -- workflows -------------------------------------------------------------------

    @abc.abstractmethod
    async def save_workflow(self, spec: WorkflowSpec) -> None:
        """Insert or replace a workflow definition."""

    @abc.abstractmethod
    async def load_workflows(self) -> list[WorkflowSpec]:
        """Every stored workflow definition."""

    async def load_workflow(self, name: str) -> WorkflowSpec | None:
        """The workflow stored under ``name``, or None.

        The engine asks for a workflow it meets in a task and does not know (one
        another process defined): a store should look the one up. This default
        reads every stored workflow (:meth:`load_workflows`).
        """
        for spec in await self.load_workflows():
            if spec.name == name:
                return spec
        return None

    async def add_workflow(self, spec: WorkflowSpec) -> WorkflowSpec:
        """Store ``spec`` unless a workflow of its name is stored already; return the
        one stored under the name (``spec``, or the earlier one).

        Workflows defined at run time come through here, so that two defined at
        once under one name cannot both win. A store that can should do it in one
        transaction; this default reads, then writes.
        """
        for stored in await self.load_workflows():
            if stored.name == spec.name:
                return stored
        await self.save_workflow(spec)
        return spec

    # -- tasks -----------------------------------------------------------------------

    @abc.abstractmethod
    async def insert_task(self, task: Task) -> tuple[Task, bool]:
        """Store a new task; if its id exists, return the stored one instead.

        Returns ``(task, created)``.
        """

    async def insert_tasks(self, tasks: Sequence[Task]) -> list[tuple[Task, bool]]:
        """Store many new tasks, as :meth:`insert_task` does each, in order.

        Returns ``(task, created)`` for each. A second task with an id seen earlier
        in the same call gets the first one back. This default inserts them one by
        one; a store that can write them in one transaction should override it.
        """
        return [await self.insert_task(task) for task in tasks]

    @abc.abstractmethod
    async def get_task(self, task_id: str) -> Task | None:
        """The stored task, or None."""

    @abc.abstractmethod
    async def list_tasks(
        self,
        status: TaskStatus | Sequence[TaskStatus] | None = None,
        workflow_name: str | None = None,
        limit: int = 100,
        offset: int = 0,
        oldest_first: bool = False,
    ) -> list[Task]:
        """Tasks, newest first (by creation) unless ``oldest_first``."""

    @abc.abstractmethod
    async def count_tasks(self, workflow_name: str | None = None) -> dict[TaskStatus, int]:
        """How many tasks there are in each status (statuses with none are omitted)."""

    @abc.abstractmethod
    async def count_by_phase(self, workflow_name: str) -> dict[str, int]:
        """How many unfinished tasks of a workflow sit in each classification
        (tasks not classified yet are left out)."""

    async def count_all_by_workflow(self) -> dict[str | None, dict[TaskStatus, int]]:
        """:meth:`count_tasks` of every workflow at once: ``{workflow name: {status:
        count}}``, statuses with none omitted, the tasks of no workflow under None.

        Metrics read it at every scrape: a store should count in one pass. This
        default asks :meth:`count_tasks` once per stored workflow, and puts the tasks
        of workflows not stored under None as well.
        """
        counts: dict[str | None, dict[TaskStatus, int]] = {}
        for spec in await self.load_workflows():
            found = await self.count_tasks(spec.name)
            if found:
                counts[spec.name] = found
        rest = {
            status: n - sum(found.get(status, 0) for found in counts.values())
            for status, n in (await self.count_tasks()).items()
        }
        rest = {status: n for status, n in rest.items() if n > 0}
        if rest:
            counts[None] = rest
        return counts

    async def count_all_by_phase(self) -> dict[str, dict[str, int]]:
        """:meth:`count_by_phase` of every stored workflow at once: ``{workflow name:
        {phase: count}}``, workflows without such tasks omitted.

        Metrics read it at every scrape: a store should count in one pass. This
        default asks :meth:`count_by_phase` once per stored workflow.
        """
        counts: dict[str, dict[str, int]] = {}
        for spec in await self.load_workflows():
            found = await self.count_by_phase(spec.name)
            if found:
                counts[spec.name] = found
        return counts

    @abc.abstractmethod
    async def update_task(self, task: Task, *, keep_lease: bool = False) -> bool:
        """Write the task if its stored version is ``task.version``; bump the version.

        Set ``task.updated_at`` to now (the engine does not): ``wfe tasks`` shows it
        and purging goes by it. The lease is released unless ``keep_lease``. When
        the task newly reaches a finished status, an outbox row is added for each
        registered consumer in the same transaction. Returns False (writing nothing) on a version
        mismatch or an unknown task.
        """

    @abc.abstractmethod
    async def claim(
        self,
        owner: str,
        limit: int,
        lease_seconds: float,
        *,
        workflows: Sequence[str] | None = None,
    ) -> list[Task]:
        """Lease to ``owner`` up to ``limit`` runnable tasks: those ready longest.

        With ``workflows``, only tasks of those workflows (a worker that runs only
        some). A task still leased to another owner (expired, or freed by
        ``release_dead_leases``) gets the event :func:`record_takeover` adds, stored
        with the claim.
        """

    @abc.abstractmethod
    async def renew(self, owner: str, task_ids: Sequence[str], lease_seconds: float) -> set[str]:
        """Extend the owner's leases; return the ids it still holds."""

    @abc.abstractmethod
    async def release_dead_leases(self, owners: Sequence[str]) -> int:
        """Expire every lease held by these owners now (their processes are gone)."""

    @abc.abstractmethod
    async def lease_owners(self) -> list[str]:
        """The distinct owners of the leases tasks hold, expired or not: a dead
        worker's lease is still held until a claim takes its task over."""

    async def lease_of(self, task_id: str) -> tuple[str, datetime] | None:
        """Who holds the task's lease and until when, or None when nobody does (or
        the store cannot tell: this default). ``wfe show`` prints it."""
        return None

    @abc.abstractmethod
    async def has_active_tasks(self, *, workflows: Sequence[str] | None = None) -> bool:
        """True while any task (of ``workflows``, if given) is PENDING or IN_PROGRESS.

        Waiting tasks don't count.
        """

    async def count_due(self, *, workflows: Sequence[str] | None = None) -> int:
        """How many tasks (of ``workflows``, if given) are running, or pending and due:
        the work at hand, for backpressure. Tasks delayed (``run_after``) or waiting
        out a retry's backoff are not due yet.

        This default counts every pending task, due or not.
        """
        names: list[str | None] = list(workflows) if workflows is not None else [None]
        total = 0
        for name in names:
            counts = await self.count_tasks(name)
            total += counts.get(TaskStatus.PENDING, 0) + counts.get(TaskStatus.IN_PROGRESS, 0)
        return total

    async def count_delayed(
        self, *, workflows: Sequence[str] | None = None
    ) -> tuple[int, datetime | None]:
        """How many pending tasks (of ``workflows``, if given) are not due yet, and
        when the first of them is: ``(count, earliest run_after)``, the time None when
        the count is 0.

        A pending task is delayed while its ``run_after`` is in the future: it was
        submitted to start later, or waits out a retry's backoff. Worker progress and
        ``wfe worker --until-idle`` use this to say what a worker waits for.

        This default reads every pending task, a page at a time; a store should
        answer from an index instead.
        """
        now = datetime.now(timezone.utc)
        names: list[str | None] = (
            list(dict.fromkeys(workflows)) if workflows is not None else [None]
        )
        count, first = 0, None
        for name in names:
            offset, page_size = 0, 1000
            while True:
                page = await self.list_tasks(
                    TaskStatus.PENDING, name, limit=page_size, offset=offset, oldest_first=True
                )
                for task in page:
                    if task.status is TaskStatus.PENDING and task.run_after is not None:
                        if task.run_after > now:
                            count += 1
                            first = task.run_after if first is None else min(first, task.run_after)
                if len(page) < page_size:
                    break
                offset += page_size
        return count, first

    # -- clearing out finished tasks ---------------------------------------------------

    async def delete_finished(
        self,
        before: float,
        statuses: Sequence[TaskStatus],
        *,
        workflow_name: str | None = None,
        limit: int = 1000,
    ) -> list[str]:
        """Delete up to ``limit`` tasks in these finished ``statuses`` last changed
        before ``before`` (a UNIX time), oldest first; return their ids.

        Tasks that an outbox consumer has not acknowledged yet are kept. Removing
        their artifact files is the caller's job. A store that cannot delete
        raises StoreError (this default).
        """
        raise StoreError(f"{type(self).__name__} cannot delete tasks")

    async def count_finished(
        self,
        before: float,
        statuses: Sequence[TaskStatus],
        *,
        workflow_name: str | None = None,
    ) -> int:
        """How many tasks :meth:`delete_finished` would delete, without a limit."""
        raise StoreError(f"{type(self).__name__} cannot delete tasks")

    async def compact(self) -> tuple[int, int] | None:
        """Give the space that deleted tasks leave back to the file system (optional).

        ``wfe purge --compact`` calls it after deleting. Returns ``(bytes before,
        bytes after)``, or None for a store that has nothing to give back or cannot
        tell (this default does nothing and returns None).
        """
        return None

    # -- results outbox --------------------------------------------------------------

    @abc.abstractmethod
    async def outbox_register(self, consumer: str) -> None:
        """From now on, record every task that finishes for ``consumer``."""

    @abc.abstractmethod
    async def outbox_pending(self, consumer: str, limit: int = 100) -> list[Task]:
        """Finished tasks recorded for ``consumer`` and not yet acknowledged."""

    @abc.abstractmethod
    async def outbox_ack(
        self, consumer: str, task_ids: Sequence[str], *, versions: Sequence[int] | None = None
    ) -> None:
        """Mark these tasks as delivered to ``consumer``.

        ``versions``, one per task id: the stored version each was delivered at
        (``task.version`` as :meth:`outbox_pending` or a completed hook gave it). A
        task finished again since (retried) keeps its row for the later finish.
        """

    async def outbox_consumers(self) -> dict[str, int]:
        """Every registered consumer, with how many finished tasks it has not
        acknowledged yet. A store that cannot tell raises StoreError (this default)."""
        raise StoreError(f"{type(self).__name__} cannot list outbox consumers")

    async def outbox_unregister(self, consumer: str) -> int | None:
        """Stop recording finished tasks for ``consumer`` and forget what it has not
        acknowledged; return how many such tasks there were, or None if ``consumer``
        was not registered. A store that cannot raises StoreError (this default)."""
        raise StoreError(f"{type(self).__name__} cannot unregister outbox consumers")


def record_takeover(task: Task, previous_owner: str, owner: str) -> None:
    """Note in a claimed task's history that its previous worker never finished.

    The phase that worker was running left no trace of its own (an attempt is
    written when it ends), so this event is what tells the reader of a history
    that the phase was interrupted, and by whose loss.
    """
    task.record(
        "taken_over", phase=task.classification, previous_worker=previous_owner, worker=owner
    )


#: How the error of a task that a store could not read begins.
UNREADABLE_ERROR = "StoreError: the stored task cannot be read"


def unreadable(task: Task) -> bool:
    """True for the stand-in a store returns for a row it cannot read (edited by hand,
    say): a FAILED task whose error says why, written back by nobody, since that would
    overwrite what is left of the row."""
    return task.status is TaskStatus.FAILED and (task.error or "").startswith(UNREADABLE_ERROR)

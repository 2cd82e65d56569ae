"""The storage backend interface: the store is the queue, the lease holder and the record."""

from __future__ import annotations

import abc
import inspect
import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

from ..errors import StoreError
from ..model import Task, TaskStatus, WorkflowSpec

__all__ = [
    "MAX_CONSUMER_NAME",
    "SUMMARY_PREVIEW",
    "UNREADABLE_ERROR",
    "Store",
    "StoreBusyError",
    "check_consumer_name",
    "ready_at",
    "record_takeover",
    "shown_url",
    "summarized",
    "unreadable",
    "unreadable_stand_in",
    "utc_from_timestamp",
]


class StoreBusyError(StoreError):
    """Another process holds the store (SQLite's write lock, taken by a long purge or
    a big submission) for longer than this one waits: the same call can succeed
    once that ends. ``wfe worker`` starting on such a store waits for it rather than
    exit; a store plugin raises it for its own "locked" errors."""


# Tasks read a page at a time by the default task_ids_starting_with.
_ID_SCAN_PAGE = 1000


class Store(abc.ABC):
    """Where tasks, workflows and the results outbox live.

    **Event loops and threads.** The ``wfe_open_store`` hook returns the store
    unopened; the engine awaits ``open()`` once, then calls the store from any
    event loop in any thread, at the same time: its worker's loop, and the loops of
    a web app's request threads that submit or resume tasks. So a store keeps no
    asyncio object made in ``open()`` (a lock, a queue, the loop) for later calls:
    it guards its state with ``threading`` locks and does blocking work in threads
    (``asyncio.to_thread``), or in a thread of its own that hands each caller its
    result in the caller's loop (``loop.call_soon_threadsafe``), as the SQLite store
    does. Only a store meant for one thread (``memory://``) may do without.

    **Several processes.** Several processes open one URL at once (``wfe submit``
    beside a running ``wfe worker``, workers side by side). Each read sees what any
    of them wrote by then: reads go to the shared storage, never to a copy taken
    at ``open()``. And every compare-and-set and every claim is atomic across them:
    one transaction, or a lock that every opener shares (``flock`` on a file),
    never a lock of one store object alone, nor one of the process (a lock or a
    cache at module level reaches no other process).

    **Versions.** Every method that changes a task is a compare-and-set on
    ``task.version``: it succeeds only if the stored version is the one the caller
    read, then increments both. Comparing and writing are one atomic step (never
    check, ``await``, then write): of two writes at one version, exactly one
    succeeds. This is how a cancelled or taken-over task's late writes are
    dropped. A task is stored at the version it is inserted with.

    **Tasks.** Tasks go in and come out as copies: a Task object the caller keeps
    changing (a running handler's) never changes what is stored, nor does changing
    one read back. Every field is kept as written, ``attempts``, ``error``,
    ``artifacts`` and ``reply`` included. A store that keeps a task as one JSON
    document writes ``wfcore.wire.task_to_dict(task, internal=True)`` and reads it
    with ``wfcore.wire.task_from_dict``; without ``internal=True`` the version is
    left out, as it is from the wire format. (``wire.task_body`` gives the fields
    other than status, version, history and times, for a store that keeps those
    in columns of their own, as SQLite does.) Workflows: ``wire.workflow_to_dict``
    and ``workflow_from_dict``.

    **Leases.** ``claim`` hands runnable tasks to one owner until its lease
    expires; the owner renews while it works. Leases (owner, expiry) are the
    store's own record, not fields of the Task. A task is runnable when it is
    PENDING and its ``run_after`` has passed (or it has none), or IN_PROGRESS with
    an expired lease (its worker died) or none, or WAITING_* with a passed
    ``deadline``. Claiming bumps the version (a write by anyone who read the task
    before is refused) and returns the tasks with their stored status unchanged
    apart from PENDING becoming IN_PROGRESS; one whose previous lease was still on
    record (its worker died or lost it) gets a ``taken_over`` event (see
    :func:`record_takeover`), stored with the claim.

    **A row that cannot be read** (edited by hand, written by a broken tool) must
    not make every listing fail: ``get_task``, ``list_tasks`` (and so
    ``list_task_summaries``) and ``outbox_pending`` return the stand-in
    :func:`unreadable_stand_in` builds for it, in place of the task, and the other
    tasks as ever. ``claim`` never hands it out (it skips the row, or marks it
    failed for good in place, keeping its stored text), and it takes no place of
    the claim's ``limit`` from the tasks behind it: a worker with room for one task
    must get past it. ``update_task`` returns False for a row whose version it
    cannot read (one that can may take the write, which repairs the row). The
    engine, which tells a stand-in by :func:`unreadable`, never writes one back.

    **Errors.** A method that fails because of the storage (a full disk, a lost
    connection, a database locked for too long, a file server away) raises
    :class:`~wfcore.StoreError`, its message naming the store and the problem:
    wrap the errors of your driver and of the OS in it (``raise
    StoreError(f"{self.location}: {exc}") from exc``). A worker outlives a
    StoreError: when claiming fails it logs the error and tries again after a
    pause (1 s, doubling up to a minute), and a task whose phase's result could not
    be written goes back to the queue (or its lease runs out), to run again once
    the store works. A StoreError whose ``lasting`` is True (a subclass sets it)
    says this process cannot use the store again (its file deleted under it): the
    worker stops. :class:`StoreBusyError`, a StoreError, says another process
    holds the store for longer than this one waits (SQLite's "database is
    locked"): ``wfe worker`` starting on such a store waits for it. Any other
    exception is taken for a bug: raised by ``claim``, it stops the worker with a
    traceback; raised while a task is being run or written, it fails the task for
    good (``EngineError: ...``), since trying again would meet it again.

    :class:`wfcore.testing.StoreContract` checks all of this but the errors: a
    store plugin's test suite inherits it (and gives it a ``damage_row`` method,
    for the rows that cannot be read).
    """

    #: The URL the store was opened from.
    url: str
    #: Whether tasks outlive closing the store (and the process): False for
    #: ``memory://``. Whoever acknowledges work upstream once its task is stored
    #: (wfe_kafka commits a message's offset) needs a durable store.
    durable: ClassVar[bool] = True
    #: The folder under which the engine keeps artifact files, one sub-folder per
    #: task. Set it in ``__init__`` or by the end of ``open()`` (the engine reads
    #: it only once the store is open), to an absolute path that every process
    #: opening the URL finds alike: derived from the URL, or recorded in the store.
    #: The engine makes the folder and its sub-folders as it writes files (a store
    #: may make it when it opens), and removes a purged task's sub-folder.
    artifacts_dir: Path

    @abc.abstractmethod
    async def open(self) -> None:
        """Open (creating if needed) the store; refuse one that is not ours or newer.

        Called once, before any other method but :meth:`exists`;
        :attr:`artifacts_dir` is set by the time it returns. Raise
        :class:`~wfcore.StoreError` with a message naming the URL and the problem:
        the ``wfe`` commands print it as their one-line error.
        """

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush pending writes and close."""

    @property
    def location(self) -> str:
        """Where the store is, as messages name it (``no store at ...``, ``created
        a new store at ...``): its URL with any password masked, unless a store says
        better (wfcore's SQLite store names its file)."""
        return shown_url(self.url)

    async def exists(self) -> bool | None:
        """Whether the store at :attr:`url` exists already: True or False, or None
        when the store cannot tell (this default).

        The ``wfe`` commands that only read or change stored tasks (``wfe tasks``,
        ``show``, ``status``, ``workflows``, ...) ask it of the unopened store the
        ``wfe_open_store`` hook returned, and refuse a store that does not exist
        (``no store at URL``) rather than open it: opening would create it empty,
        and a mistyped URL would look like an empty store. ``wfe submit``, ``wfe
        worker`` and ``wfe ui`` ask it to say when they made a new store
        (:meth:`ECSWorkflowEngine.store_to_create`). With None they open the store
        as ever.

        "Exists" means what :meth:`open` would otherwise create: the database
        file, the schema on a database server. Asked before :meth:`open` (which
        may follow on the same object) or instead of it, so it creates nothing
        and leaves nothing open: close a connection it made. A store that cannot
        reach its storage raises :class:`~wfcore.StoreError` naming the URL and
        the problem, as :meth:`open` would.
        """
        return None

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
        """Store a new task, at its version and with every field as given; if its
        id exists, return the stored one instead.

        Returns ``(task, created)``: the task passed in when it was stored now (the
        store keeps a copy of it; the built-in stores return the object itself),
        else the one stored under the id, read back as a copy.
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
        """The task as stored now, or None.

        Read from the shared storage, so that it shows what other processes wrote
        (see the class docstring); a row that cannot be read comes back as a
        stand-in (:func:`unreadable_stand_in`).
        """

    @abc.abstractmethod
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
        """Tasks, newest first (by insertion) unless ``oldest_first``; never in the
        order of their ids, which need not sort by age. With ``priority_first``, the
        highest priority first, and those of one priority in that order (a queue of
        people's work, urgent first). With ``phase``, only the tasks whose
        classification is that phase (a task not classified yet is at none)."""

    async def list_task_summaries(
        self,
        status: TaskStatus | Sequence[TaskStatus] | None = None,
        workflow_name: str | None = None,
        limit: int = 100,
        offset: int = 0,
        oldest_first: bool = False,
        priority_first: bool = False,
        phase: str | None = None,
    ) -> list[Task]:
        """:meth:`list_tasks` for a listing: the same tasks in the same order, each as
        :func:`summarized` makes it, without what may be megabytes a task (its data,
        context, the phases' outputs, the reply, the traceback; the start only of
        its output and error, and of its history only the latest events).

        A summary is for showing: never write one back (``update_task`` would store
        it as it is, losing what it left out). This default summarizes whole tasks;
        a store that can leave the big fields unread (SQLite does) overrides it.
        """
        tasks = await self.list_tasks(
            status=status,
            workflow_name=workflow_name,
            limit=limit,
            offset=offset,
            oldest_first=oldest_first,
            priority_first=priority_first,
            **({"phase": phase} if phase is not None else {}),
        )
        return [summarized(task) for task in tasks]

    async def task_ids_starting_with(self, prefix: str, limit: int = 10) -> list[str]:
        """The ids of up to ``limit`` tasks that start with ``prefix``, in the order of
        the ids (by code point), for a command line given the start of an id (the
        dashboard shows the first 8 characters of one wfcore made up).

        This default reads every task's summary, a page at a time; a store with an
        index on ids (SQLite) reads only the ids asked for.
        """
        found: list[str] = []
        offset = 0
        while True:
            page = await self.list_task_summaries(limit=_ID_SCAN_PAGE, offset=offset)
            found += [task.id for task in page if task.id.startswith(prefix)]
            if len(page) < _ID_SCAN_PAGE:
                return sorted(found)[:limit]
            offset += _ID_SCAN_PAGE

    @abc.abstractmethod
    async def count_tasks(
        self, workflow_name: str | None = None, phase: str | None = None
    ) -> dict[TaskStatus, int]:
        """How many tasks there are in each status (statuses with none are omitted),
        of one workflow and of those at one ``phase`` (classification), if given."""

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

        Every field but ``created_at`` (which the engine never changes, and a store
        may keep as inserted) is written as given. Comparing the version and
        writing are one atomic step, across processes. The version stored is
        ``task.version + 1``, and ``updated_at`` now (the engine does not set it:
        ``wfe tasks`` shows it and purging goes by it); set both on ``task`` too,
        the very object passed in, not only on the stored row: the engine writes
        that object again at its new version, and hands it on to hooks and
        callers. The lease is released unless ``keep_lease``. A PENDING task's
        ``run_after`` (a retry's backoff) delays it from this write on, as it does
        at insert.

        The engine only adds to a task's history: the history written extends the
        one stored at ``task.version``, so a store may write just the entries added
        since (wfcore's stores do; a task can loop through thousands of phases). A
        shorter history, which no engine writes, is stored as given all the same.

        When the write makes the task finished (its stored status was not), an
        outbox row is added for each consumer registered by then, by any process,
        in the same transaction. A write of a task finished already (an artifact
        added to a completed task) adds none, and leaves a row not yet acknowledged
        standing for the finish it recorded: else the result is published twice.

        Returns False (writing nothing) on a version mismatch or an unknown task.
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
        """Lease to ``owner`` up to ``limit`` runnable tasks and return them: those
        of the highest ``priority`` first, and of one priority those ready longest.

        When a task became ready, by its status:

        - PENDING: at its ``run_after`` if it has one (given at insert, or by
          :meth:`update_task`: a retry's backoff); else when it was inserted (its
          ``created_at``) or last written back by :meth:`update_task`, so a task
          given back queues behind those already waiting;
        - IN_PROGRESS: when its lease expired or ``release_dead_leases`` freed it
          (or when a write left it without a lease);
        - WAITING_*: at its ``deadline`` (with none, it never becomes ready); one
          claimed since, when that claim's lease expired or ``release_dead_leases``
          freed it (its claimer died before timing it out).

        Tasks of one priority ready at the same moment go in insertion order; never
        by id, which need not sort by age. A task's priority is the one last
        written (insert, :meth:`update_task`). The order of the returned list is
        free.

        Choosing and leasing are one atomic step across processes: two claims at
        once never both get a task. Every claimed task, a WAITING one too, is
        leased to ``owner`` for ``lease_seconds`` (nobody else claims it until the
        lease expires or a write releases it) and its version is bumped. A task
        still leased to another owner (expired, or freed by ``release_dead_leases``)
        gets the event :func:`record_takeover` adds, stored in the same write as
        the claim: a worker killed before its first write never stores one, and the
        engine fails a task whose workers keep dying by counting the stored events.
        A claim need not change ``updated_at`` (the built-in stores leave it as the
        last write set it).

        With ``workflows``, only tasks of those workflows (a worker that runs only
        some).
        """

    @abc.abstractmethod
    async def renew(self, owner: str, task_ids: Sequence[str], lease_seconds: float) -> set[str]:
        """Extend the owner's leases; return the ids it still holds.

        An owner holds its lease until another claim takes the task over or a
        write releases it, also after the lease has expired: renewing then still
        succeeds, and a slow worker keeps a phase nobody took from it.
        """

    async def note_phases(self, owner: str, phases: Mapping[str, str]) -> None:
        """Store the phase each of these tasks runs now (``phases``: a task's id to
        its classification), for those of them stored without a phase.

        Called by a worker for the tasks it claimed without a phase and classified
        itself, once their first phase has run a second: the rest of such
        a task is stored when that phase ends or waits, and until then the listings
        and counts by phase (``list_tasks(phase=...)``, ``count_by_phase``) would
        miss it. Only tasks in progress that ``owner`` holds change, and nothing else
        of them: their version stays, so the phase's own write still applies.

        Optional: the default does nothing, and such tasks are at no phase until
        their first phase ends or waits.
        """
        return None

    @abc.abstractmethod
    async def release_dead_leases(self, owners: Sequence[str]) -> int:
        """Expire every lease held by these owners now (their processes are gone):
        their tasks are claimable at once, and the claim that takes each records it
        taken over (:func:`record_takeover`). Returns how many leases it freed:
        every lease the owners held, an expired one too (nobody had claimed its
        task since), as the built-in stores count; a worker logs the number."""

    @abc.abstractmethod
    async def lease_owners(self) -> list[str]:
        """The distinct owners of the leases tasks hold, expired or not: a dead
        worker's lease is still held until a claim takes its task over."""

    async def lease_of(self, task_id: str) -> tuple[str, datetime] | None:
        """Who holds the task's lease and until when, or None when nobody does (or
        the store cannot tell: this default). ``wfe show`` prints it."""
        return None

    # -- phase slots --------------------------------------------------------------

    #: Whether the store keeps the slots of phases with ``max_concurrency`` for every
    #: process that opens it (:meth:`take_phase_slot`, :meth:`release_phase_slot`):
    #: then a phase's limit holds across all the workers on the store. False (this
    #: default): each worker process counts its own, and the limit holds per process.
    shares_phase_slots: ClassVar[bool] = False

    async def take_phase_slot(
        self, task_id: str, owner: str, workflow: str, phase: str, limit: int, priority: int
    ) -> bool | None:
        """Give the task a slot of ``phase`` of ``workflow``, which at most ``limit``
        tasks may hold at once, across processes; True if it has one now, False if
        it waits in line, None if ``owner`` no longer holds the task's lease.

        Called by a worker holding the task's lease (``owner``) before the phase
        runs, and again (with a pause) while it returns False. A task that asked and
        still waits lines up: a slot never goes to a task while one of a higher
        ``priority`` waits; of one priority, the order is the store's (SQLite serves
        those that have waited a while in the order they asked). A slot or a
        place in line counts only while its task's lease is held by the owner that
        asked and has not expired: a worker that dies, or a task cancelled or handed
        back, frees it without a release; so a task whose lease ``owner`` no longer
        holds (cancelled or taken over while it waited) gets none: None, and its
        worker stops waiting at once and does not start its phase (a store that
        answers False instead keeps it waiting until its next lease renewal).
        Asking again for a task that holds a slot (the same phase again) keeps it.
        Atomic across processes, like a claim.

        Called only when :attr:`shares_phase_slots` is True; this default raises
        StoreError.
        """
        raise StoreError(f"{type(self).__name__} does not keep phase slots")

    async def release_phase_slot(self, task_id: str) -> None:
        """Free the task's slot, or its place in line (its phase attempt ended).
        Releasing a task that holds none changes nothing."""
        raise StoreError(f"{type(self).__name__} does not keep phase slots")

    @abc.abstractmethod
    async def has_active_tasks(self, *, workflows: Sequence[str] | None = None) -> bool:
        """True while any task (of ``workflows``, if given) is PENDING or IN_PROGRESS.

        A PENDING task whose ``run_after`` is still to come counts: ``run_until_idle``
        and ``wfe worker --until-idle`` wait for it. Waiting tasks don't count.
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
        before ``before`` (a UNIX time), oldest first, of ``workflow_name`` only
        when it is given; return their ids.

        Tasks that an outbox consumer has not acknowledged yet are kept, and so
        are children (``parent_id``) of a parent that is stored and not finished:
        it reads their results when its last child finishes. Removing their
        artifact files is the caller's job. A store that cannot delete raises
        StoreError (this default).
        """
        raise StoreError(f"{type(self).__name__} cannot delete tasks")

    async def count_finished(
        self,
        before: float,
        statuses: Sequence[TaskStatus],
        *,
        workflow_name: str | None = None,
    ) -> int:
        """How many tasks :meth:`delete_finished` would delete, without a limit
        (those an outbox consumer has not acknowledged are left out here too)."""
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
        """From now on, record every task that finishes for ``consumer``, through any
        process (registering again changes nothing). Raises TypeError or ValueError
        for a name :func:`check_consumer_name` refuses, before anything is stored."""

    @abc.abstractmethod
    async def outbox_pending(self, consumer: str, limit: int = 100) -> list[Task]:
        """The tasks recorded for ``consumer``, not yet acknowledged, whose status is
        finished now: at most ``limit``, in the order they finished.

        A task retried since it finished waits, left out, until it finishes again:
        such tasks must not fill a page, or a consumer that publishes a page and
        acknowledges it never reaches the finished tasks behind them. A task that
        finishes again before its row is acknowledged keeps one row, which now
        stands for the later finish: it comes back once, as stored now
        (:meth:`outbox_ack` at the earlier version keeps it), at the place of either
        finish in the order, as suits the store.
        """

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
        acknowledged yet (``wfe outbox`` shows them). A store that cannot tell
        raises StoreError (this default)."""
        raise StoreError(f"{type(self).__name__} cannot list outbox consumers")

    async def outbox_unregister(self, consumer: str) -> int | None:
        """Stop recording finished tasks for ``consumer`` and forget what it has not
        acknowledged, so that it keeps no task from :meth:`delete_finished` (``wfe
        outbox --drop``); return how many such tasks there were, or None if
        ``consumer`` was not registered. A store that cannot raises StoreError (this
        default)."""
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


def unreadable_stand_in(
    task_id: str,
    reason: str,
    stored_text: str,
    *,
    version: int = 0,
    created_at: datetime | None = None,
    updated_at: datetime | None = None,
) -> Task:
    """The task a store returns for a row it cannot read, instead of failing.

    A FAILED task whose error begins with :data:`UNREADABLE_ERROR` and gives
    ``reason`` (say ``"ValueError: Expecting value: line 1 column 1"``), with the
    row's stored text in ``context["unreadable_doc"]`` for whoever repairs it.
    ``version``, ``created_at`` and ``updated_at``: the row's, where the store can
    still read them (else 0 and now: ``wfe tasks`` would show the row changed at
    every listing). :func:`unreadable` tells it apart; see :class:`Store` for what
    a store and the engine do with it.
    """
    task = Task(
        id=task_id,
        status=TaskStatus.FAILED,
        error=f"{UNREADABLE_ERROR} ({reason}); its stored text is in context['unreadable_doc']",
        context={"unreadable_doc": stored_text},
        version=version,
    )
    if created_at is not None:
        task.created_at = created_at
    if updated_at is not None:
        task.updated_at = updated_at
    return task


#: Characters of a task's output and error a summary keeps
#: (:meth:`Store.list_task_summaries`).
SUMMARY_PREVIEW = 1000

#: Events of a task's history a summary keeps at most, the latest.
_SUMMARY_EVENTS = 20


def summarized(task: Task) -> Task:
    """``task`` as :meth:`Store.list_task_summaries` lists it (changed in place and
    returned): without ``data`` (None), ``context``, ``outputs`` (``{}``),
    ``reply``, ``traceback`` and ``waiting_for`` (None) and ``children`` (``[]``),
    which may list thousands of tasks; an ``output`` whose JSON text is longer
    than :data:`SUMMARY_PREVIEW` characters becomes the start of that text (of a
    string output: of the string), and so does a longer ``error``; ``history``
    keeps at most its latest 20 events."""
    task.data = None
    task.context = {}
    task.outputs = {}
    task.reply = None
    task.traceback = None
    task.children = []
    task.waiting_for = None
    task.output = output_preview(task.output)
    if task.error is not None and len(task.error) > SUMMARY_PREVIEW:
        task.error = task.error[:SUMMARY_PREVIEW]
    task.history = task.history[-_SUMMARY_EVENTS:]
    return task


def output_preview(output: Any) -> Any:
    """An output as a summary keeps it: itself when its JSON text is at most
    :data:`SUMMARY_PREVIEW` characters, else the start of that text (of a string:
    of the string itself)."""
    if output is None or isinstance(output, (bool, int, float)):
        return output
    if isinstance(output, str):
        return output[:SUMMARY_PREVIEW]
    try:
        text = json.dumps(output, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError):
        return repr(output)[:SUMMARY_PREVIEW]
    return output if len(text) <= SUMMARY_PREVIEW else text[:SUMMARY_PREVIEW]


def shown_url(url: str) -> str:
    """A store URL to print, a password in it (a database server's) masked."""
    return re.sub(r"//[^/@]*@", "//***@", url, count=1)


def ready_at(task: Task, now: float) -> float | None:
    """When a task written at ``now`` (a Unix time) next becomes claimable, as a Unix
    time: at once when runnable, at its ``run_after`` when delayed, at its ``deadline``
    when waiting (None: never by itself, a finished task or one waiting without one)."""
    status = task.status
    if status is TaskStatus.PENDING or status is TaskStatus.IN_PROGRESS:
        return task.run_after.timestamp() if task.run_after is not None else now
    if status.is_waiting:
        return task.deadline.timestamp() if task.deadline is not None else None
    return None


def utc_from_timestamp(ts: float) -> datetime:
    """A Unix time as an aware UTC datetime, as stores return times."""
    return datetime.fromtimestamp(ts, timezone.utc)


def phase_filter(store: Store, phase: str | None) -> dict[str, Any]:
    """The keyword arguments that narrow ``list_tasks``, ``list_task_summaries`` and
    ``count_tasks`` to the tasks at ``phase``: none without one, so that a store
    whose methods take no phase still serves every other listing. With one,
    StoreError unless the store's ``list_tasks`` and ``count_tasks`` take it: a
    store written before they did would fail with a bare TypeError, or from its
    default summaries."""
    if phase is None:
        return {}
    missing = [
        f"{name}()"
        for name in ("list_tasks", "count_tasks")
        if not _takes(getattr(store, name), "phase")
    ]
    if missing:
        raise StoreError(
            f"the store {type(store).__name__} cannot list tasks by phase: its "
            f"{' and '.join(missing)} {'take' if len(missing) > 1 else 'takes'} no 'phase' "
            "(see wfcore.Store.list_tasks)"
        )
    return {"phase": phase}


def _takes(method: Any, name: str) -> bool:
    """Whether ``method`` takes the keyword argument ``name``."""
    try:
        parameters = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):
        return True  # not to be told: let the call say
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


# An id wfcore made up (model.new_task_id), and what may stand for one: its start,
# as listings show it (the dashboard shows the first 8 digits).
_MADE_UP_ID = re.compile(r"[0-9a-f]{32}")
_ID_START = re.compile(r"[0-9a-f]{6,31}")


async def ids_started_by(store: Store, start: str, limit: int = 6) -> list[str]:
    """The ids of wfcore's shape (32 hex digits) that start with ``start``, 6 to 31
    hex digits, at most ``limit`` of them; none for anything else. Ids of another
    shape an app or a client chose are never found by their start: ``order-1``
    must not stand for ``order-1001``."""
    if not _ID_START.fullmatch(start):
        return []
    # Ids of other shapes may start alike (UUIDs with their dashes): ask for more
    # until `limit` of wfcore's shape are found or none is left, not to take one
    # id for the only one.
    asked = max(limit, 8)
    while True:
        found = await store.task_ids_starting_with(start, asked)
        made_up = [task_id for task_id in found if _MADE_UP_ID.fullmatch(task_id)]
        if len(made_up) >= limit or len(found) < asked:
            return made_up[:limit]
        asked *= 8


#: The longest outbox consumer name, in characters.
MAX_CONSUMER_NAME = 200


def check_consumer_name(consumer: object) -> None:
    """Refuse an outbox consumer name that is not text, is blank, has control
    characters or is over :data:`MAX_CONSUMER_NAME` characters: kept, a bad name
    (None, say) failed every write that finishes a task from then on, on every
    process of the store."""
    if not isinstance(consumer, str):
        raise TypeError(f"an outbox consumer name must be a string, not {consumer!r}")
    if not consumer.strip() or consumer != consumer.strip():
        raise ValueError(
            f"an outbox consumer name must be a name with no blanks around it, not {consumer!r}"
        )
    if not consumer.isprintable():
        raise ValueError(f"an outbox consumer name must have no control characters: {consumer!r}")
    if len(consumer) > MAX_CONSUMER_NAME:
        raise ValueError(
            f"an outbox consumer name must be at most {MAX_CONSUMER_NAME} characters, "
            f"not {len(consumer)}"
        )

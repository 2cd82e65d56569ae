"""The worker loop: claims runnable tasks under a lease and drives each through its phases.

``ECSWorkflowEngine.run()`` runs one :class:`Worker`, which also renews the leases
of the tasks it drives and frees those of dead worker processes on its host. A
claimed task is driven by one asyncio task through these steps:
:func:`~wfcore.routing.route` (classify or find the phase), ``_dispatch`` (run the
phase on its adapter, then the checks of :mod:`wfcore._phase_checks` on what it
left in the task), :func:`~wfcore.routing.advance` (record the output and pick the
next phase) and ``_persist`` (a compare-and-set write through the store's group
commit).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
import sys
import time
import traceback
from collections.abc import Awaitable
from contextvars import ContextVar
from datetime import datetime, timedelta
from pathlib import Path
from types import CoroutineType
from typing import TYPE_CHECKING, Any, NoReturn

import attrs

from ._eager import start_task
from ._phase_checks import (
    Owned,
    check_engine_fields,
    check_json,
    check_phase_priority,
    happened_since_start,
    json_fields_problem,
    restore_place,
)
from ._processes import worker_died_here
from ._slots import PhaseSlots, Slot, SlotsClosed
from ._wakeup import call_in, running_loop, wake
from .artifacts import (
    check_artifact_name,
    remove_artifact_dirs,
    remove_unlisted_files,
    task_artifact_dir,
)
from .children import check_interval, children_results, record_join, wait_ends
from .command import remove_stale_workdirs
from .errors import (
    LONGEST_WAIT,
    AdapterError,
    ArtifactError,
    CommandError,
    InvalidTaskError,
    PermanentError,
    RetryLater,
    StoreError,
    TaskStateError,
    WorkflowError,
    exception_text,
    storable_text,
    text_of,
)
from .model import (
    DEFINE_WORKFLOW,
    Artifact,
    Phase,
    Task,
    TaskStatus,
    TaskType,
    WorkflowSpec,
    utcnow,
)
from .preflight import workflow_problems
from .routing import advance, route
from .stores.base import Store, unreadable
from .wire import printable, workflow_from_dict

if TYPE_CHECKING:
    from .engine import ECSWorkflowEngine

__all__ = ["Worker"]

logger = logging.getLogger("wfcore")


class _LeaseLost(Exception):
    """Raised inside a driven task whose lease was revoked (cancelled or taken over)."""


#: Seconds a task's first phase runs before the worker stores which phase it is
#: (tasks submitted without one): most phases end sooner, and store it themselves.
_NOTE_PHASES_AFTER = 1.0

#: Seconds at most between lease renewals while phases run, however long the lease:
#: a renewal is how a worker hears that another process cancelled a task it runs.
_RENEW_AT_LEAST_EVERY = 1.0


class Worker:
    """The running side of one engine: what ``run()`` and ``run_until_idle()`` do.

    It reads the engine's settings (``max_concurrency``, ``lease_seconds``,
    ``poll_interval``, ``retry_delay``, ``shutdown_timeout``) as it goes, so a
    change to them applies to the next claim or attempt. Being part of the engine,
    it also uses the engine's private parts: its open store, registries and hooks.
    """

    def __init__(self, engine: ECSWorkflowEngine) -> None:
        self._engine = engine
        self._active: dict[str, asyncio.Task[None]] = {}
        self._lost: set[str] = set()
        # Tasks still being driven whose lease was already given back (finished or
        # suspended, hooks still running): not renewed, and not "lost".
        self._released: set[str] = set()
        # Tasks claimed without a phase whose first phase runs: that phase, and when
        # it was chosen. Stored once it has run a second (Store.note_phases), so
        # that listings by phase find the task before the phase ends, and a worker
        # that takes it over from a dead one knows which phase that was.
        self._unnoted: dict[str, tuple[str, float]] = {}
        # When the last renewal of every lease this worker holds began (its claims
        # since are younger): each lease runs at least lease_seconds from then.
        self._leases_renewed_at = time.monotonic()
        # The Task objects whose phase runs now, for checkpoint(); and the tasks
        # whose checkpoint met a store failure (handed back, not failed).
        self._in_phase: dict[str, Task] = {}
        # The children each running phase submitted (submit_task(parent=...)), in order.
        # In order, each once (a dict: a fan-out of thousands is checked at once).
        self._phase_children: dict[str, dict[str, None]] = {}
        # When the wait for them ends, for a phase that waits for children with a timeout.
        self._wait_ends: dict[str, datetime] = {}
        # What each of those phases may not change of its task (see Owned).
        self._owned: dict[str, Owned] = {}
        self._slots = PhaseSlots()
        # Tasks holding one of this worker's slots that wait for one of the store's,
        # and what wakes them when this worker frees one of the store's slots (or stops).
        self._waiting_shared: dict[tuple[str, str], int] = {}
        self._shared_freed: dict[tuple[str, str], asyncio.Event] = {}
        #: How many times stop() was called: a run compares it with the count when it
        #: was asked for, so that a stop() coming before the run starts is not lost.
        self.stops_asked = 0
        # Schedules: the slot each last submitted, and when (time.time()) to look again.
        self._scheduled: dict[str, datetime] = {}
        self._next_schedule_look = 0.0
        # When this run last looked at the schedules (None: not yet in this run).
        self._schedules_looked: datetime | None = None
        self._store_failed: set[str] = set()
        self._checkpointing: dict[str, asyncio.Lock] = {}
        self._running = False
        self._stopping = False
        self._wake: asyncio.Event | None = None
        # Set by stop(), unlike _wake never cleared: what a phase may wait for.
        self._stop_asked: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the one serve() runs in
        self._failure: BaseException | None = None  # why stop() was asked to fail serve()
        self._serving: asyncio.Task[Any] | None = None
        self._ended: asyncio.Event | None = None
        # Whether the workflows were checked against the handlers (preflight), once.
        self._checked = False
        # The task running alone (or waiting to), one more lost worker from failing.
        self._alone: str | None = None
        # Looks at the store in a row that failed (see _pause_for_store).
        self._store_failures = 0
        # Dead workers whose leases this one has freed (see _reap_dead_owners).
        self._reaped: set[str] = set()
        #: Why the store fails this worker now, or why it made it stop; else None.
        self.store_problem: str | None = None

    @property
    def running(self) -> bool:
        """True while :meth:`serve` runs."""
        return self._running

    @property
    def active_count(self) -> int:
        """How many tasks this worker is driving now."""
        return len(self._active)

    def stop(self, now: bool = False, error: BaseException | None = None) -> None:
        """Ask :meth:`serve` to stop; running phases get ``shutdown_timeout`` seconds,
        or with ``now`` none: they are handed back to the store at once. With
        ``error``, serve raises it once stopped. Callable from any thread or loop."""
        loop = self._loop
        if loop is not None and loop is not running_loop():
            call_in(loop, self.stop, now, error)
            return
        self.stops_asked += 1
        if error is not None and self._running and self._failure is None:
            self._failure = error
        self._stopping = True
        self._slots.close()
        if self._stop_asked is not None:
            self._stop_asked.set()
        for freed in self._shared_freed.values():
            freed.set()
        self.poke()
        if now:
            self._hand_back_all()

    def _hand_back_all(self) -> None:
        """Stop every running phase now: each hands its task back to the store."""
        for driver in list(self._active.values()):
            driver.cancel()

    def schedules_changed(self) -> None:
        """Look at the schedules at the next turn of the loop (one was added)."""
        self._next_schedule_look = 0.0
        self.poke()

    def waiting_for_slots(self) -> dict[tuple[str, str], int]:
        """Tasks waiting for a slot of a limited phase, by (workflow, phase): for one
        of this worker's, or of the store's (see :meth:`_take_shared_slot`)."""
        waiting = self._slots.waiting()
        for key, count in self._waiting_shared.items():
            waiting[key] = waiting.get(key, 0) + count
        return waiting

    def interrupt(self, task_id: str) -> None:
        """Stop driving a task changed elsewhere (cancelled): its writes are dropped."""
        loop = self._loop
        if loop is not None and loop is not running_loop():
            call_in(loop, self.interrupt, task_id)
            return
        driver = self._active.get(task_id)
        if driver is not None:
            self._lost.add(task_id)
            driver.cancel()

    async def stop_and_wait(self) -> None:
        """Stop :meth:`serve` and wait until it has returned."""
        if not self._running:
            return
        if asyncio.current_task() is self._serving:
            raise WorkflowError("the engine cannot wait for its own run to end")
        self.stop()
        ended, loop = self._ended, self._loop
        assert ended is not None
        if loop is None or loop is running_loop():
            await ended.wait()
            return
        # Serving in another thread's loop: wait there, for the event's sake.
        waiting = ended.wait()
        try:
            future = asyncio.run_coroutine_threadsafe(waiting, loop)
        except RuntimeError:  # that loop is closed: nothing serves there any more
            waiting.close()
            return
        await asyncio.wrap_future(future)

    def poke(self) -> None:
        """Wake the loop: there may be work, or a reason to stop. Callable from any
        thread or event loop (a web app's, say, submitting to this worker)."""
        if self._wake is not None and self._loop is not None:
            wake(self._wake, self._loop)

    async def serve(self, until_idle: bool, stops_seen: int | None = None) -> None:
        """Claim and drive tasks until stopped (or, with ``until_idle``, until idle).

        ``stops_seen``: :attr:`stops_asked` when the run was asked for; a stop()
        since then (before this coroutine started) stops it at once."""
        if self._running:
            raise WorkflowError("this engine is already running")
        # Running from here on: a stop() while the store opens must not be lost.
        # The loop first: a stop() from another thread that sees this worker
        # running is then sent to the loop, not overwritten by the line after.
        self._loop = asyncio.get_running_loop()
        self._stopping = stops_seen is not None and stops_seen != self.stops_asked
        self._slots.open()
        self._failure = None
        self.store_problem = None
        self._store_failures = 0
        self._running = True
        # Slots that came before this run are caught up within their grace only.
        self._schedules_looked = None
        # Made here, not once: an engine may run in one event loop after another.
        self._ended = ended = asyncio.Event()
        try:
            store = await self._engine.get_store()
        except BaseException:
            self._running = False
            self._loop = None
            ended.set()
            raise
        self._wake = asyncio.Event()
        self._stop_asked = asyncio.Event()
        if self._stopping:  # a stop() while the store opened
            self._stop_asked.set()
        self._serving = asyncio.current_task()
        self._leases_renewed_at = time.monotonic()  # before the first claim
        keeper = asyncio.create_task(self._keep_leases(store))
        only = self._engine.only_workflows
        # Stores are asked about some workflows only when this worker runs only some.
        which: dict[str, Any] = {} if only is None else {"workflows": only}
        next_reap = 0.0
        # Command work folders of workers that died on this host (SIGKILL, power
        # cut), removed beside the work rather than before it.
        sweeper = asyncio.ensure_future(asyncio.to_thread(remove_stale_workdirs))
        try:
            # A plugin may refuse the start (PluginError): the same way out as a
            # stop then stops what the others started.
            await self._engine._fire("wfe_engine_started", engine=self._engine)
            if not self._checked:
                self._checked = True
                for problem in workflow_problems(self._engine):
                    logger.warning("%s", problem)
            while not self._stopping:
                # Cleared before looking, not after: a poke (a submission, a stop)
                # that comes while the store is asked must not be lost.
                self._wake.clear()
                try:
                    if self._engine._schedules and time.time() >= self._next_schedule_look:
                        await self._submit_scheduled()
                    if time.monotonic() >= next_reap:
                        await self._reap_dead_owners(store)
                        next_reap = time.monotonic() + max(1.0, self._engine.poll_interval * 10)
                    free = self._engine.max_concurrency - len(self._active)
                    if self._alone is not None:
                        free = 0  # a task that may kill its worker runs alone
                    claimed: list[Task] = []
                    if free > 0:
                        claimed = await store.claim(
                            self._engine.worker_id, free, self._engine.lease_seconds, **which
                        )
                        for task in claimed:
                            self._start(task)
                    idle = (
                        until_idle
                        and not self._active
                        and not claimed
                        and not await store.has_active_tasks(**which)
                    )
                except StoreError as exc:
                    # Said by /healthz, also once this worker has stopped for it.
                    self.store_problem = f"the store failed: {exc}"
                    if exc.lasting:
                        raise  # the store cannot be used again by this process
                    await self._pause_for_store(exc)
                    continue
                if self._store_failures:
                    logger.info(
                        "the store works again (after %d failed tries); this worker goes on",
                        self._store_failures,
                    )
                    self._store_failures = 0
                    self.store_problem = None
                if idle:
                    break
                if claimed and len(claimed) == free:
                    await asyncio.sleep(0)
                    continue
                wait = self._engine.poll_interval
                if self._engine._schedules:
                    # Up at a schedule's next slot, not at the next poll after it.
                    wait = max(0.0, min(wait, self._next_schedule_look - time.time()))
                try:
                    await asyncio.wait_for(self._wake.wait(), wait)
                except asyncio.TimeoutError:
                    pass
        except asyncio.CancelledError:
            # run() cancelled (a TaskGroup whose other task failed, asyncio.run's
            # Ctrl-C): a stop, whose running phases hand their tasks back after
            # this phase, not go on through the next ones.
            self.stop()
            raise
        finally:
            try:
                await self._shutdown(store)
            except asyncio.CancelledError:
                # Cancelled again while its phases finish: they stop now, each
                # handing its task back, as stop(now=True) has them do.
                self._hand_back_all()
                await asyncio.shield(asyncio.gather(*self._active.values(), return_exceptions=True))
                raise
            finally:
                keeper.cancel()
                await asyncio.gather(keeper, sweeper, return_exceptions=True)
                self._running = False
                self._wake = None
                self._stop_asked = None
                self._loop = None
                await self._engine._fire("wfe_engine_stopping", engine=self._engine)
                ended.set()
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    async def _submit_scheduled(self) -> None:
        """Submit the task of each schedule's slot that is due, once per slot here;
        the slot's id makes a second submission, by any worker, change nothing."""
        now = utcnow()
        schedules = list(self._engine._schedules.values())
        for schedule in schedules:
            slot = schedule.due(now, self._schedules_looked)
            if slot is None or self._scheduled.get(schedule.name) == slot:
                continue
            task_id = schedule.task_id(slot)
            try:
                await self._engine.submit_task(
                    schedule.data,
                    schedule.workflow_name,
                    schedule.classification,
                    schedule.assigned_to,
                    task_id,
                    context={"schedule": schedule.name, "slot": slot.isoformat()},
                    priority=schedule.priority,
                )
            except StoreError:
                raise  # the loop waits for the store, then this slot is tried again
            except WorkflowError as exc:  # an unknown workflow, say: once per slot
                logger.error(
                    "schedule %r: could not submit task %s: %s", schedule.name, task_id, exc
                )
            else:
                logger.debug("schedule %r: task %s submitted", schedule.name, task_id)
            self._scheduled[schedule.name] = slot
        self._schedules_looked = now
        self._next_schedule_look = min(s.next_slot(now) for s in schedules).timestamp()

    async def _pause_for_store(self, exc: StoreError) -> None:
        """Wait before asking a failing store again (a full disk, a lock held too
        long, a file server away): a second, doubling up to a minute, a log line
        each time. Nothing stored is lost meanwhile: a failed write changes nothing,
        and the tasks whose results could not be stored run again once it works."""
        self._store_failures += 1
        pause = min(_STORE_RETRY_MAX, _STORE_RETRY_FIRST * 2 ** (self._store_failures - 1))
        logger.error(
            "the store failed: %s. This worker tries again in %gs%s",
            exc,
            pause,
            "" if self._store_failures == 1 else f" (failed {self._store_failures} times)",
        )
        if self._stop_asked is not None:
            try:
                await asyncio.wait_for(self._stop_asked.wait(), pause)
            except asyncio.TimeoutError:
                pass

    async def _shutdown(self, store: Store) -> None:
        if not self._active:
            return
        pending = list(self._active.values())
        _, still = await asyncio.wait(pending, timeout=self._engine.shutdown_timeout)
        for running in still:
            running.cancel()
        await asyncio.gather(*still, return_exceptions=True)

    def _start(self, task: Task) -> None:
        earlier = self._active.get(task.id)
        if earlier is not None:
            # The task came back to this worker while an earlier run of it goes
            # on: it was changed elsewhere (cancelled and retried, say) before that
            # run noticed. A run still holding the lease is stale and is stopped;
            # one whose writes are done (running its hooks) may finish. Either way
            # the new run starts after it, and one lease, the new, is renewed.
            if task.id not in self._released:
                last = task.history[-1] if task.history else {}
                if (
                    last.get("event") == "taken_over"
                    and last.get("previous_worker") == self._engine.worker_id
                ):
                    # Its own lease ran out as it ran (renewals could not be written
                    # in time: a store locked longer than lease_seconds, say).
                    logger.warning(
                        "task %s: this worker's lease on it ran out while its phase ran "
                        "(renewals not written in time: was the store locked for "
                        "longer than lease_seconds?); the phase starts again",
                        task.id,
                    )
                self._lost.add(task.id)
                earlier.cancel()
            self._released.discard(task.id)
        driver = start_task(self._drive(task, after=earlier))
        # The driver takes itself out of _active when it ends; on Python 3.12+ it
        # may have ended already, in its first step.
        if not driver.done():
            self._active[task.id] = driver

    def _finished(self, task_id: str) -> None:
        # An earlier run ending must not unregister the run that replaced it.
        if self._active.get(task_id) is asyncio.current_task():
            del self._active[task_id]
        self._lost.discard(task_id)
        self._released.discard(task_id)
        self._unnoted.pop(task_id, None)
        self.poke()

    async def _keep_leases(self, store: Store) -> None:
        # Also the tick that stores first phases, which needs one a second at least.
        interval = min(max(self._engine.lease_seconds / 3, 0.05), _RENEW_AT_LEAST_EVERY)
        renew_failed = False
        while True:
            await asyncio.sleep(interval)
            if self._unnoted:
                await self._note_phases(store)
            ids = [i for i in self._active if i not in self._released]
            if not ids:
                continue
            began = time.monotonic()
            try:
                held = await store.renew(self._engine.worker_id, ids, self._engine.lease_seconds)
            except StoreError as exc:
                # One line when it starts failing (the claims say the rest), not a
                # traceback at every renewal.
                if not renew_failed:
                    logger.error("renewing leases failed: %s", exc)
                renew_failed = True
                continue
            except Exception:
                logger.exception("renewing leases failed")
                continue
            renew_failed = False
            self._leases_renewed_at = began
            for task_id in ids:
                driver = self._active.get(task_id)
                if (
                    task_id not in held
                    and task_id not in self._released
                    and driver is not None
                    and not driver.done()
                ):
                    logger.warning("task %s: lease lost (cancelled or taken over)", task_id)
                    self._lost.add(task_id)
                    driver.cancel()

    async def _note_phases(self, store: Store) -> None:
        """Store the phases of the tasks this worker classified as it claimed them,
        whose first phase has run a second or more (the store changes only those
        whose lease this worker still holds)."""
        began = time.monotonic() - _NOTE_PHASES_AFTER
        noted = {task_id: phase for task_id, (phase, at) in self._unnoted.items() if at <= began}
        if not noted:
            return
        for task_id in noted:
            del self._unnoted[task_id]
        try:
            await store.note_phases(self._engine.worker_id, noted)
        except StoreError as exc:
            logger.warning("storing the phases of %d running task(s) failed: %s", len(noted), exc)
        except Exception:
            logger.exception("storing the phases of running tasks failed")

    async def _reap_dead_owners(self, store: Store) -> None:
        """Free at once the leases of dead processes on this host, once each.

        A freed lease keeps its owner's name until a claim takes the task (the
        claim records whom it took it from), so a dead owner is listed again at
        every look while its tasks wait: for a worker of other workflows, or one
        with no free slot. Its leases need freeing, and saying so, only once.
        """
        owners = await store.lease_owners()
        # Forgotten once gone from the store: the set stays as small as the list.
        self._reaped &= set(owners)
        dead = [
            owner
            for owner in owners
            if owner != self._engine.worker_id
            and owner not in self._reaped
            and worker_died_here(owner)
        ]
        if dead:
            freed = await store.release_dead_leases(dead)
            self._reaped.update(dead)
            logger.info("took over %d task(s) from dead worker(s) %s", freed, ", ".join(dead))
            await asyncio.to_thread(remove_stale_workdirs)

    def runs_phase_of(self, task: Task) -> bool:
        """True if ``task`` is the very Task object of a phase this worker is running."""
        return self._in_phase.get(task.id) is task

    async def check_lease(self, task: Task) -> None:
        """Raise TaskStateError if this worker may no longer hold ``task``'s lease,
        before its running phase writes a file into the task's folder.

        Renewals keep a lease while the event loop runs; a process stopped past it
        (SIGSTOP, a machine suspended, a loop blocked) wakes to find it may have
        run out and the task gone to another worker, whose files this one's must
        not replace. Only then is the store asked: a write's own timing costs no
        round trip.
        """
        lease = self._engine.lease_seconds
        if time.monotonic() - self._leases_renewed_at < lease / 2:
            return
        store = self._engine._store
        assert store is not None
        try:
            held = await store.renew(self._engine.worker_id, [task.id], lease)
        except StoreError:
            return  # cannot tell now: the phase's end finds out
        if task.id not in held:
            self._lost.add(task.id)
            raise TaskStateError(
                f"task {task.id!r}: this worker no longer holds it (its lease ran out "
                "while the process was stopped or its event loop blocked, and it was "
                "cancelled or taken over); its files are left to its new run",
                task_id=task.id,
            )

    def note_child(self, parent: Task, child_id: str) -> None:
        """``parent``'s running phase submitted the task ``child_id`` as its child."""
        if self.runs_phase_of(parent):
            self._phase_children.setdefault(parent.id, {}).setdefault(child_id)
            owned = self._owned.get(parent.id)
            if owned is not None:
                owned.added_children.setdefault(child_id)

    def note_wait_end(self, task: Task, until: datetime | None) -> None:
        """``task``'s running phase waits for its children until ``until`` at most
        (None: for as long as they take)."""
        if not self.runs_phase_of(task):
            return
        if until is None:
            self._wait_ends.pop(task.id, None)
        else:
            self._wait_ends[task.id] = until

    def children_of_phase(self, task: Task) -> list[str]:
        """The children ``task``'s running phase has submitted so far, in order."""
        return list(self._phase_children.get(task.id, ()))

    async def checkpoint(self, task: Task) -> None:
        """Store a running phase's task mid-phase, keeping the lease (see
        :meth:`ECSWorkflowEngine.checkpoint`)."""
        # The very Task object a phase runs with (from the handler, a task it
        # started, or under a phase timeout, which runs it in a task of its own).
        if self.runs_phase_of(task) and task.status.is_waiting:
            raise InvalidTaskError(
                f"checkpoint() after suspend() or wait_for_children(): task {task.id!r} "
                f"waits now ({task.status.value}), and is stored as it is once its phase "
                "returns (to store it sooner, call checkpoint() before)"
            )
        if not self.runs_phase_of(task) or task.status is not TaskStatus.IN_PROGRESS:
            raise InvalidTaskError(
                "checkpoint() is for a task whose phase this engine is running, "
                "called from inside that phase" + other_engine_hint(self._engine, task)
            )
        problem = json_fields_problem(task)
        if problem is not None:
            raise InvalidTaskError(f"cannot checkpoint: {problem}")
        # One at a time per task: each write must start from the version the last
        # one stored (a phase may checkpoint from several of its own tasks at once).
        lock = self._checkpointing.setdefault(task.id, asyncio.Lock())
        async with lock:
            await self._write_checkpoint(task)
        # A yield point on every store, the memory one included: a phase that
        # checkpoints in a loop can still be timed out or cancelled.
        await asyncio.sleep(0)

    async def _write_checkpoint(self, task: Task) -> None:
        if task.id in self._lost:
            raise TaskStateError(f"task {task.id!r} was cancelled or taken over", task_id=task.id)
        # What a worker taking over should start from: the phase not yet counted as
        # attempted, as for any run a dead worker left unfinished.
        saved = task.copy()
        saved.attempts = max(0, task.attempts - 1)
        if not happened_since_start(task, "checkpoint"):
            saved.record("checkpoint", phase=task.classification)  # once per attempt
        assert self._engine._store is not None
        # Shielded: a phase timeout cancelling the checkpoint does not stop a write
        # the store has begun, and the task must know the version it stored.
        writing = asyncio.ensure_future(self._engine._store.update_task(saved, keep_lease=True))
        try:
            ok = await asyncio.shield(writing)
        except asyncio.CancelledError:
            await asyncio.wait([writing])
            if not writing.cancelled() and writing.exception() is None and writing.result():
                self._checkpointed(task, saved)
            raise
        except StoreError:
            # The store, not the phase, failed: the task goes back, uncounted.
            self._store_failed.add(task.id)
            raise
        if not ok:
            self._lost.add(task.id)
            raise TaskStateError(f"task {task.id!r} was cancelled or taken over", task_id=task.id)
        self._checkpointed(task, saved)

    def _checkpointed(self, task: Task, saved: Task) -> None:
        """The phase's task as its checkpoint ``saved`` was stored: its new version
        and history, which the phase's end then expects."""
        task.version = saved.version
        task.history = saved.history
        owned = self._owned.get(task.id)
        if owned is not None:
            owned.checkpointed(saved)

    # -- driving one task ------------------------------------------------------------

    async def _drive(self, task: Task, after: asyncio.Task[None] | None = None) -> None:
        """Run a claimed task's phases while this worker holds its lease (once the
        run ``after``, an earlier one of the same task, has ended)."""
        # This asyncio task's own context: its phases (and their threads) see it.
        _running_engine.set(self._engine)
        try:
            if after is not None:
                await asyncio.wait([after])
            current: Task | None = task
            if task.status.is_waiting:
                current = await self._deadline_passed(task)
            elif _workers_lost(task):
                if self._engine.max_takeovers is not None:
                    # Decided before anything here yields: a task to run alone must
                    # keep this worker's other tasks from starting first.
                    current = await self._after_lost_workers(task, self._engine.max_takeovers)
                if current is not None:
                    # The phase its worker died in left files the task does not name.
                    await self._remove_leftovers(current)
            elif _retried(task):
                # So may a phase cancelled as it ran (its attempt was not rolled back,
                # the task having changed under it) or one that failed with its worker.
                await self._remove_leftovers(task)
            while current is not None and not self._stopping:
                current = await self._run_phase(current)
            if current is not None:
                await self._hand_back(current)
        except asyncio.CancelledError:
            if task.id in self._lost:
                return
            await self._hand_back(task)
        except _LeaseLost:
            return
        except StoreError as exc:
            # The store, not the task, is the problem (locked too long, full, gone):
            # the task goes back, for a claim once the store works again. One line:
            # a full disk fails every running task alike.
            logger.error("task %s: the store failed (%s); handing it back", task.id, exc)
            await self._hand_back(task)
        except Exception as exc:
            logger.exception("task %s: unexpected engine error", task.id)
            # Handing it back would meet the same error at every claim, for ever.
            await self._fail_for_good(task, exc)
        finally:
            if self._alone == task.id:
                self._alone = None
            self._finished(task.id)

    async def _remove_leftovers(self, task: Task) -> None:
        """Delete what the phase of a task taken over wrote before its worker died,
        or that of a task retried wrote before it was cancelled or lost its worker,
        which the task does not list (see :func:`remove_unlisted_files`), so that
        its rerun may write its own files."""
        assert self._engine._store is not None
        root = self._engine._store.artifacts_dir
        if not _has_folder(root, task.id):
            return  # most tasks: no thread to ask, nothing to wait for
        listed = [art.name for art in task.artifacts if isinstance(art, Artifact)]
        removed = await asyncio.to_thread(remove_unlisted_files, root, task.id, listed)
        if removed:
            logger.info(
                "task %s: deleted %d file(s) its artifacts do not name, left in its "
                "folder by a phase that did not finish",
                task.id,
                len(removed),
            )

    async def _after_lost_workers(self, task: Task, limit: int) -> Task | None:
        """A task whose phase lost its worker: failed once that happened ``limit``
        (max_takeovers) times in a row; one short of it, run alone, so that a worker
        it kills is lost to it only, and the tasks merely running beside a phase that
        kills its worker are not failed with it. The task to go on with, or None."""
        lost = _workers_lost(task)
        if lost >= limit:
            await self._fail(task, None, _workers_lost_error(task, lost))
            return None
        if lost >= limit - 1 and not await self._run_alone(task):
            return None
        return task

    async def _run_alone(self, task: Task) -> bool:
        """Wait until the task is the only one this worker runs, claiming no other
        until it ends; True then. One such task at a time: another is put back in the
        store as it was (False), for this worker once that one ended, or another:
        held here meanwhile, it would lose this worker too if that one killed it.
        A stop ends the wait (the task is handed back)."""
        if self._alone is not None:
            task.status = TaskStatus.PENDING
            await self._persist(task, keep_lease=False)
            return False
        self._alone = task.id
        while not self._stopping and set(self._active) - {task.id}:
            await asyncio.sleep(_ALONE_POLL)
        return True

    async def _fail_for_good(self, task: Task, exc: Exception) -> None:
        """Fail a task the engine itself could not go on with; hand it back only if
        even that cannot be stored (the store is down, say)."""
        try:
            await self._fail(task, None, storable_text(f"EngineError: {exception_text(exc)}"))
        except Exception:
            logger.exception("task %s: could not be failed either", task.id)
            await self._hand_back(task)

    async def _hand_back(self, task: Task) -> None:
        """Return an interrupted task to the store as runnable, its attempt uncounted,
        as it was stored when the attempt started or last checkpointed."""
        if self._engine._store is not None:
            # Shielded: a second cancellation (stop(now=True) during the grace
            # time) must not stop it between reading the task and writing it.
            await asyncio.shield(self._give_back(task))

    async def _give_back(self, task: Task) -> None:
        store = self._engine._store
        assert store is not None
        try:
            back = await self._rolled_back(task.id, task)
            if back is not task:
                # The stored row holds the attempt count from before this attempt.
                if back.status is TaskStatus.IN_PROGRESS:
                    back.status = TaskStatus.PENDING
                    back.record("released", worker=self._engine.worker_id)
            elif task.status is TaskStatus.IN_PROGRESS:
                task.status = TaskStatus.PENDING
                task.attempts = max(0, task.attempts - 1)
                task.record("released", worker=self._engine.worker_id)
            await store.update_task(back)
        except StoreError as exc:
            # Its lease runs out instead, and another claim takes it.
            logger.error("task %s: could not hand back either (%s)", task.id, exc)
        except Exception:
            logger.exception("task %s: could not hand back", task.id)

    async def _rolled_back(self, task_id: str, task: Task) -> Task:
        """The task to store after an attempt that failed or is handed back.

        It is the task as stored when the attempt began or last checkpointed (its
        data, context, artifacts, outputs and reply), with the attempt's history
        and its classification (the classifiers may have chosen it as it began):
        every rerun then starts where one after a crash (kill -9) would. It is a
        new Task, out of reach of a plain handler whose thread runs on after its
        timeout: what that thread does to ``task`` is never stored.

        When the stored row is not the one this run holds (it was cancelled, taken
        over or purged: the write will be dropped; or it cannot be read), it is
        ``task`` itself, its id put back.
        """
        assert self._engine._store is not None
        store = self._engine._store
        stored = await store.get_task(task_id)
        if stored is None or stored.version != task.version or unreadable(stored):
            task.id = task_id
            return task
        history = task.history
        stored.history = list(history) if type(history) is list else stored.history
        # Chosen by the classifiers when the attempt began, not by the attempt.
        stored.classification = task.classification
        # The files of artifacts the attempt added go too: the stored task does
        # not name them, and a rerun must be able to add them again (a file
        # "a" left behind would refuse an artifact "a/b"). One it replaced keeps
        # its new bytes (the stored sha256 tells), as after a crash.
        kept = {art.name for art in stored.artifacts}
        added = task.artifacts if type(task.artifacts) is list else []
        names = [art.name for art in added if isinstance(art, Artifact) and art.name not in kept]
        if names:
            await asyncio.to_thread(_remove_artifact_files, store.artifacts_dir, task_id, names)
        return stored

    async def _run_phase(self, task: Task) -> Task | None:
        """Run the task's current phase once; return it if it should go on here."""
        spec = await self._engine._workflow(task.workflow_name) if task.workflow_name else None
        if task.classification == DEFINE_WORKFLOW:
            return await self._define_workflow(task)
        if spec is None:
            await self._fail(
                task, None, f"UnknownWorkflowError: unknown workflow {task.workflow_name!r}"
            )
            return None
        unclassified = task.classification is None
        phase = route(self._engine, task, spec)
        if phase is None:
            await self._fail(task, None, task.error or "routing failed")
            return None
        if unclassified:
            self._unnoted[task.id] = (phase.target_classification, time.monotonic())
        if phase.max_concurrency is None:
            return await self._dispatch(task, spec, phase, None)
        try:
            slot = await self._slots.take(
                spec.name, phase.target_classification, phase.max_concurrency, task.priority
            )
        except SlotsClosed:
            return task  # not started: the stop hands it back as it is stored
        held = [slot]  # the slot this task holds now: waiting, it may give it up
        try:
            store = self._engine._store
            if store is not None and store.shares_phase_slots:
                # The store refuses its slot to a task whose lease is gone.
                if not await self._take_shared_slot(store, task, spec, phase, held):
                    return task  # the worker stops: as above
            elif store is not None and slot.waited:
                await self._check_lease_after_wait(store, task)
            return await self._dispatch(task, spec, phase, held[0])
        finally:
            held[0].release()

    async def _check_lease_after_wait(self, store: Store, task: Task) -> None:
        """Raise _LeaseLost if the task was cancelled (or taken over) while it waited
        for a slot: its phase must not start. Lease renewals would notice only later,
        after the phase had run (its writes dropped) and used a slot it no longer
        had. Asked only of a task that had to wait, so the fast path stays free."""
        held = await store.renew(self._engine.worker_id, [task.id], self._engine.lease_seconds)
        if task.id not in held:
            self._lost_while_waiting(task)

    def _lost_while_waiting(self, task: Task) -> NoReturn:
        """A task cancelled or taken over while it waited for a phase slot: its phase
        must not start, and its worker lets it go."""
        logger.info(
            "task %s: changed elsewhere (cancelled or taken over) while it waited for "
            "a phase slot; not started",
            task.id,
        )
        self._lost.add(task.id)
        raise _LeaseLost

    async def _take_shared_slot(
        self, store: Store, task: Task, spec: WorkflowSpec, phase: Phase, held: list[Slot]
    ) -> bool:
        """Hold, besides this worker's slot (``held[0]``), one of the store's, which
        every worker on the store shares; False if the worker stops first. A release
        by this worker wakes its tasks that wait, which ask again at once; another
        process's release wakes nobody here, so they also ask again after a pause
        (from 50 ms up to the engine's ``poll_interval``).

        Only the tasks holding one of this worker's slots ask the store: one that
        waits for the store's slot gives the worker's up to a task of a higher
        priority waiting behind it (and waits for it again), which then asks in its
        stead, so that the store's next free slot goes to that one."""
        assert phase.max_concurrency is not None
        loop = asyncio.get_running_loop()
        started = loop.time()
        waited = held[0].waited
        pause = _SHARED_SLOT_FIRST_PAUSE
        key = (spec.name, phase.target_classification)
        while not (
            taken := await store.take_phase_slot(
                task.id, self._engine.worker_id, *key, phase.max_concurrency, task.priority
            )
        ):
            if taken is None:
                self._lost_while_waiting(task)
            if self._stopping or self._stop_asked is None:
                return False
            if self._slots.outranked(*key, task.priority):
                held[0].release()  # to the task of a higher priority, which asks now
                try:
                    held[0] = await self._slots.take(*key, phase.max_concurrency, task.priority)
                except SlotsClosed:
                    return False  # the worker stops (held[0] is released already)
                pause = _SHARED_SLOT_FIRST_PAUSE
                continue
            freed = self._shared_freed.get(key)
            if freed is None:
                freed = self._shared_freed[key] = asyncio.Event()
            self._waiting_shared[key] = self._waiting_shared.get(key, 0) + 1
            try:
                await asyncio.wait_for(freed.wait(), pause)
            except asyncio.TimeoutError:
                pass
            finally:
                self._waiting_shared[key] -= 1
            pause = min(pause * 2, max(self._engine.poll_interval, _SHARED_SLOT_FIRST_PAUSE))
        held[0].shared = True
        held[0].waited = waited + loop.time() - started
        return True

    async def _dispatch(
        self, task: Task, spec: WorkflowSpec, phase: Phase, slot: Slot | None
    ) -> Task | None:
        """Run one attempt of a phase on its adapter and persist what came of it;
        the phase's ``slot``, if it has one, is released once the attempt has run."""
        task_type = phase.assigned_to or task.assigned_to
        adapter = self._engine._adapters.get(task_type)
        task.status = TaskStatus.IN_PROGRESS
        task.attempts += 1
        task.output = None
        task.next_classification = None
        task.run_after = None
        task.record(
            "phase_started",
            phase=phase.target_classification,
            attempt=task.attempts,
            task_type=task_type.value,
            worker=self._engine.worker_id,
        )
        if slot is not None and slot.waited:
            task.history[-1]["queued"] = round(slot.waited, 6)
        self._engine.stats["phases"] += 1
        await self._engine._fire("wfe_phase_started", task=task, phase=phase)
        started = time.monotonic()
        task_id = task.id
        owned = Owned(task)
        self._owned[task_id] = owned
        priority = task.priority
        self._in_phase[task_id] = task
        failure: BaseException | None = None
        try:
            if adapter is None:
                raise AdapterError(
                    f"no adapter registered for task type {task_type.value!r}"
                    + _adapters_blocked(self._engine)
                )
            run = adapter.run(task, phase, self._engine)
            if type(run) is not CoroutineType and not inspect.isawaitable(run):
                raise AdapterError(
                    f"the {task_type.value} adapter {type(adapter).__name__}: run() returned "
                    f"{type(run).__name__}, not an awaitable (make it 'async def run')"
                )
            if phase.timeout is not None and task_type is not TaskType.HUMAN:
                if _WAIT_FOR_MAKES_A_TASK:
                    run = _exit_as_exception(run)
                try:
                    await asyncio.wait_for(run, phase.timeout)
                except asyncio.TimeoutError:
                    raise TimeoutError(
                        f"phase {phase.target_classification!r} timed out after {phase.timeout:g}s"
                    ) from None
            else:
                await run
            if task.id != task_id:
                task.id = task_id  # else the write would go to no task, or another
                raise InvalidTaskError("a phase must not change task.id")
            check_engine_fields(task, owned)
            check_json(task, owned)
            check_phase_priority(task, priority)
        except asyncio.CancelledError as exc:
            if _cancelled_from_outside():
                # Handed back (a stop), it must start again at this phase, wherever
                # the phase meant to move it.
                restore_place(task, owned)
                raise
            # The phase raised it itself (a library's own timeout or cancelled
            # future): its failure. Taken for a cancel, it would hand the task
            # back uncounted, to run again at once, for ever.
            failure = exc
        except KeyboardInterrupt:
            raise
        # Any other BaseException too: SystemExit (argparse and click exit on bad
        # input), GeneratorExit, an app's own. One phase's failure must fail its
        # attempt, not end the worker, nor leave its task running until its lease
        # runs out (then counted as a lost worker).
        except BaseException as exc:
            if task_id in self._store_failed:
                raise StoreError(
                    f"a checkpoint could not be stored: {exception_text(exc)}"
                ) from exc
            failure = exc.exited if isinstance(exc, _PhaseExited) else exc
        finally:
            self._in_phase.pop(task_id, None)
            self._phase_children.pop(task_id, None)
            wait_until = self._wait_ends.pop(task_id, None)
            self._owned.pop(task_id, None)
            self._store_failed.discard(task_id)
            self._checkpointing.pop(task_id, None)
            if slot is not None and not slot.shared:
                slot.release()
        if slot is not None and slot.shared:
            # The store's slot first: the next task here asks for it at once.
            try:
                await self._engine._store.release_phase_slot(task_id)  # type: ignore[union-attr]
            finally:
                slot.release()
                freed = self._shared_freed.pop((spec.name, phase.target_classification), None)
                if freed is not None:
                    freed.set()
        if failure is not None:
            if await self._stopped_with_worker(failure):
                if task_id in self._lost:
                    raise _LeaseLost
                task.id = task_id
                restore_place(task, owned)
                logger.info(
                    "task %s: phase %r: its command was stopped by %s as this worker "
                    "stops; handing the task back",
                    task_id,
                    phase.target_classification,
                    _signal_name(_killed_by(failure) or 0),
                )
                await self._hand_back(task)
                return None
            # After the phase's end (above): nothing can checkpoint it any more.
            await self._attempt_failed(
                task_id, task, owned.attempts, phase, failure, time.monotonic() - started
            )
            return None
        if task.id in self._lost:
            raise _LeaseLost
        if task.status.is_waiting:
            await self._suspended(task, phase, time.monotonic() - started, wait_until)
            return None
        advance(task, spec, phase, task.output, seconds=time.monotonic() - started)
        return await self._phase_ended(task, phase)

    async def _phase_ended(self, task: Task, phase: Phase) -> Task | None:
        """Store a task its phase has just moved on (:func:`advance`) and announce it;
        return it if it goes on in this worker (None: finished, or lost)."""
        finished = task.status.is_finished
        if not await self._persist(task, keep_lease=not finished):
            return None
        if finished:
            _log_finished(task)
        await self._engine._after_phase(task, phase)
        return None if finished else task

    async def _stopped_with_worker(self, failure: BaseException) -> bool:
        """True when a phase's command died of a signal because this worker is being
        stopped: a service manager's stop (systemd's default KillMode=control-group)
        sends SIGTERM to the worker and to every process it started at once. Such
        an attempt is not the phase's failure: the task is handed back, uncounted,
        as a stop hands back any running phase."""
        signum = _killed_by(failure)
        if signum is None:
            return False
        if not self._stopping and signum in _STOP_SIGNALS and self._stop_asked is not None:
            # The command may have seen the signal before this worker's handler ran
            # (the manager signals one process after the other): wait for it a little.
            try:
                await asyncio.wait_for(self._stop_asked.wait(), _STOP_SIGNAL_GRACE)
            except asyncio.TimeoutError:
                pass
        return self._stopping

    async def _suspended(
        self, task: Task, phase: Phase, seconds: float, wait_until: datetime | None = None
    ) -> None:
        if (
            task.deadline is None
            and phase.timeout is not None
            and (phase.assigned_to or task.assigned_to) is TaskType.HUMAN
        ):
            task.deadline = utcnow() + timedelta(seconds=phase.timeout)
        task.attempts = max(0, task.attempts - 1) if task.resume_in_phase else task.attempts
        task.record(
            "suspended",
            phase=phase.target_classification,
            status=task.status.value,
            reason=task.waiting_reason,
            deadline=task.deadline.isoformat() if task.deadline else None,
            seconds=round(seconds, 6),
        )
        if wait_until is not None and task.waiting_for is not None:
            task.history[-1]["until"] = wait_until.isoformat()  # see children.wait_ends
        if await self._persist(task, keep_lease=False):
            self._engine.stats["suspended"] += 1
            await self._engine._fire("wfe_task_suspended", task=task)
            if task.waiting_for is not None:
                # Children that finished before this write found their parent still
                # running, and left the join to it.
                await self._engine._joins.join(task.id)
        return None

    async def _attempt_failed(
        self,
        task_id: str,
        task: Task,
        attempt: int,
        phase: Phase,
        exc: BaseException,
        seconds: float,
    ) -> None:
        if task_id in self._lost:
            raise _LeaseLost
        # What the attempt did to data, context and artifacts is not kept: the
        # next attempt starts where one after a crash would. Its output is kept,
        # to debug with (a value that is not JSON, shown as it prints).
        output = task.output
        task = await self._rolled_back(task_id, task)
        task.output = output
        task.attempts = attempt
        task.classification = phase.target_classification
        if isinstance(exc, SystemExit):
            code = text_of(exc.code)
            task.error = storable_text(f"SystemExit: {code} (the phase called sys.exit)")
        else:
            task.error = storable_text(exception_text(exc))
        task.traceback = storable_text("".join(traceback.format_exception(exc)[-6:])[-4000:])
        task.record(
            "attempt_failed",
            phase=phase.target_classification,
            attempt=task.attempts,
            error=task.error,
            seconds=round(seconds, 6),
        )
        if task.attempts < phase.max_attempts and not isinstance(exc, PermanentError):
            delay = _backoff(self._engine.retry_delay, task.attempts)
            if isinstance(exc, RetryLater):
                delay = max(delay, exc.after)
            logger.info(
                "task %s: phase %r attempt %d of %d failed, retrying in %gs: %s",
                task.id,
                phase.target_classification,
                task.attempts,
                phase.max_attempts,
                delay,
                _first_line(task.error),
            )
            task.status = TaskStatus.PENDING
            task.run_after = utcnow() + timedelta(seconds=delay)
            task.record("retry_scheduled", phase=phase.target_classification, delay=delay)
            if await self._persist(task, keep_lease=False):
                self._engine.stats["retried"] += 1
                await self._engine._fire("wfe_attempt_failed", task=task, phase=phase)
            return None
        await self._fail(task, phase, task.error, attempt_failed=True)
        return None

    async def _fail(
        self, task: Task, phase: Phase | None, error: str, attempt_failed: bool = False
    ) -> None:
        name = phase.target_classification if phase else task.classification
        logger.warning(
            "task %s: failed %s: %s",
            task.id,
            "before its first phase" if name is None else f"in phase {name!r}",
            _first_line(error),
        )
        task.status = TaskStatus.FAILED
        task.error = error
        task.record(
            "failed",
            phase=phase.target_classification if phase else task.classification,
            error=error,
        )
        if await self._persist(task, keep_lease=False):
            _log_finished(task)
            self._engine.stats["failed"] += 1
            if attempt_failed:
                await self._engine._fire("wfe_attempt_failed", task=task, phase=phase)
            await self._engine._fire("wfe_task_failed", task=task)
            if task.parent_id is not None:
                await self._engine._joins.report(task)
        return None

    async def _deadline_passed(self, task: Task) -> Task | None:
        """A waiting task's deadline passed: apply its phase's ``on_timeout`` (or,
        for a task waiting for its children, check on them)."""
        spec = await self._engine._workflow(task.workflow_name)
        phase = spec.phase(task.classification) if spec and task.classification else None
        if task.waiting_for is not None and spec is not None and phase is not None:
            return await self._check_children(task, spec, phase)
        if spec is None or phase is None:
            # Its on_timeout rule is the phase's, which is not there to apply.
            waited = f"the deadline passed while the task waited in phase {task.classification!r}"
            if spec is None:
                why = f"of workflow {task.workflow_name!r}, which this worker does not know"
            else:
                names = ", ".join(repr(p.target_classification) for p in spec.phases)
                why = (
                    f"which workflow {spec.name!r} no longer has (redefined since; its "
                    f"phases: {names}), so its on_timeout rule is not known"
                )
            await self._fail(task, None, f"DeadlineExceeded: {waited}, {why}")
            return None
        rule = phase.on_timeout or "fail"
        task.record("deadline_passed", phase=phase.target_classification, on_timeout=rule)
        task.waiting_reason = None
        task.deadline = None
        task.resume_in_phase = False
        task.reply = None  # no answer came: an earlier one must not stand for it
        if rule == "fail":
            await self._fail(
                task,
                phase,
                f"DeadlineExceeded: no answer for phase {phase.target_classification!r} "
                "before its deadline",
            )
            return None
        # Validated with the phase: any rule but "fail" is {"output": ...} or {"goto": name}.
        assert isinstance(rule, dict)
        task.status = TaskStatus.IN_PROGRESS
        if "output" in rule:
            advance(task, spec, phase, rule["output"])
            return await self._phase_ended(task, phase)
        task.classification = rule["goto"]
        task.attempts = 0
        task.record("routed", phase=phase.target_classification, to=task.classification)
        if not await self._persist(task, keep_lease=True):
            return None
        return task

    async def _check_children(self, task: Task, spec: WorkflowSpec, phase: Phase) -> Task | None:
        """A task waiting for its children, claimed at its deadline: move it on if
        they have all finished (a worker that finished the last one died before it
        could), else set the time of the next check."""
        assert self._engine._store is not None and task.waiting_for is not None
        results = await children_results(self._engine._store, task.waiting_for)
        until = wait_ends(task)
        ended = results is None and until is not None and until <= utcnow()
        if ended:
            results = await children_results(self._engine._store, task.waiting_for, unfinished=True)
        if results is None:
            task.deadline = check_interval(task)
            await self._persist(task, keep_lease=False)
            return None
        record_join(task, phase.target_classification, results, ended=ended)
        task.status = TaskStatus.IN_PROGRESS
        advance(task, spec, phase, results)
        return await self._phase_ended(task, phase)

    async def _define_workflow(self, task: Task) -> Task | None:
        """The built-in ``define_workflow`` phase: register the spec, rebind the task."""
        task.attempts += 1
        task.status = TaskStatus.IN_PROGRESS
        regex = _regex_keyword(task.data)
        if regex is not None:
            where, keyword = regex
            await self._fail(
                task,
                None,
                f"InvalidWorkflowError: {where}: {keyword!r} is not allowed in a workflow "
                "defined at run time: a regular expression from a task could hold a "
                "worker's CPU for good (catastrophic backtracking, which nothing can "
                "interrupt); register the workflow in code to use one",
            )
            return None
        try:
            spec = workflow_from_dict(task.data)
        except WorkflowError as exc:
            await self._fail(task, None, f"InvalidWorkflowError: {exc}")
            return None
        for index, phase in enumerate(spec.phases):
            refused = phase.command and self._engine.command_refused(spec.name, phase.command)
            if refused:
                await self._fail(
                    task, None, f"InvalidWorkflowError: phases[{index}].command: {refused}"
                )
                return None
        # All of the spec but its input, the defining task's own data: start_phases
        # too, or a workflow meant to be entered only at its approval would take
        # tasks that name any phase.
        spec_without_input = attrs.evolve(spec, input=None)
        # Replacing a workflow would strand the tasks in its phases, and workers
        # would run whichever definition they loaded last. The same spec again
        # (a rerun of this task, say) is fine.
        # A workflow registered by the app is not always stored yet.
        existing = self._engine._workflows.get(spec.name)
        if existing is None:
            store = await self._engine.get_store()
            existing = await store.add_workflow(spec_without_input)
        if existing != spec_without_input:
            await self._fail(
                task,
                None,
                f"InvalidWorkflowError: a different workflow named {spec.name!r} exists "
                "already; define this one under a new name",
            )
            return None
        self._engine._workflows[spec.name] = spec_without_input
        task.outputs[DEFINE_WORKFLOW] = {"workflow": spec.name}
        task.output = {"workflow": spec.name}
        task.workflow_name = spec.name
        if spec.input is not None:
            task.data = spec.input
        # The spec says where to start: its first phase, not the classifiers' pick.
        task.classification = spec.phases[0].target_classification
        task.attempts = 0
        task.record("workflow_defined", workflow=spec.name)
        only = self._engine.only_workflows
        if only is not None and spec.name not in only:
            # This worker runs only some workflows (it claimed the task by the one it
            # was submitted under): the new workflow's phases are for its workers.
            task.status = TaskStatus.PENDING
            await self._persist(task, keep_lease=False)
            return None
        if not await self._persist(task, keep_lease=True):
            return None
        return task

    async def _persist(self, task: Task, keep_lease: bool) -> bool:
        """Write the task (compare-and-set); False if the write was dropped."""
        assert self._engine._store is not None
        if task.id in self._lost:
            raise _LeaseLost
        self._unnoted.pop(task.id, None)  # stored with this write
        if not keep_lease:
            self._released.add(task.id)
        try:
            ok = await self._engine._store.update_task(task, keep_lease=keep_lease)
        except (TypeError, ValueError) as exc:
            return await self._unstorable(task, exc)
        if ok:
            if self._engine._waiters:  # wait_for_task calls, if any
                self._engine._task_written(task.id)
            if keep_lease:
                self._released.discard(task.id)
        else:
            self._lost.add(task.id)
            store = self._engine._store
            stored = await store.get_task(task.id)
            if stored is None:
                logger.info("task %s: deleted meanwhile; write dropped", task.id)
                # Deleted (purged) while this phase ran: what it wrote goes too.
                await asyncio.to_thread(remove_artifact_dirs, store.artifacts_dir, [task.id])
            else:
                # Which change it was (a cancel, a takeover, an answer, the join of
                # its last child): an operator reading the log need not guess.
                last = stored.history[-1]["event"] if stored.history else "unknown"
                logger.info(
                    "task %s: changed elsewhere meanwhile (%s); write dropped", task.id, last
                )
        return ok

    async def _unstorable(self, task: Task, exc: Exception) -> bool:
        """A handler left a non-JSON value in the task: fail it, keeping what prints."""
        assert self._engine._store is not None
        for name in ("data", "context", "output", "outputs", "reply", "waiting_reason"):
            setattr(task, name, printable(getattr(task, name)))
        task.next_classification = None
        # Events recorded since the phase ended may quote the bad value too.
        task.history = printable(task.history)
        task.status = TaskStatus.FAILED
        task.error = (
            f"InvalidTaskError: the task holds a value that is not JSON-serializable: {exc}"
        )
        task.record("failed", phase=task.classification, error=task.error)
        try:
            ok = await self._engine._store.update_task(task)
        except (TypeError, ValueError):  # NaN or infinity: printable, yet not JSON
            logger.exception("task %s cannot be stored", task.id)
            ok = False
        if ok:
            if self._engine._waiters:  # wait_for_task calls, if any
                self._engine._task_written(task.id)
            _log_finished(task)
            self._engine.stats["failed"] += 1
            await self._engine._fire("wfe_task_failed", task=task)
            if task.parent_id is not None:
                await self._engine._joins.report(task)
        else:
            self._lost.add(task.id)
        return False


def _regex_keyword(spec: Any) -> tuple[str, str] | None:
    """Where a define_workflow spec's schemas use a regular expression (``pattern``,
    ``patternProperties``): (``phases[0].input_schema``, keyword), or None.

    Python's ``re`` backtracks, holding the GIL: a task could define a pattern and
    an input that never finish matching, stalling the worker's every task, its lease
    renewals and its signal handlers. Every part of a schema counts, not only the
    keyword positions a validator visits: a ``$ref`` can make a subschema of any key.
    """
    phases = spec.get("phases") if isinstance(spec, dict) else None
    for index, phase in enumerate(phases if isinstance(phases, list) else []):
        schema = phase.get("input_schema") if isinstance(phase, dict) else None
        keyword = _regex_in(schema)
        if keyword is not None:
            return f"phases[{index}].input_schema", keyword
    return None


def _regex_in(value: Any) -> str | None:
    # A "pattern" key holding a schema (a property named "pattern") is no regex.
    if isinstance(value, dict):
        if isinstance(value.get("pattern"), str):
            return "pattern"
        if isinstance(value.get("patternProperties"), dict) and value["patternProperties"]:
            return "patternProperties"
        found = (_regex_in(item) for item in value.values())
    elif isinstance(value, list):
        found = (_regex_in(item) for item in value)
    else:
        return None
    return next((keyword for keyword in found if keyword is not None), None)


#: The engine whose worker runs the current phase (see wfcore.current_engine).
_running_engine: ContextVar[ECSWorkflowEngine | None] = ContextVar(
    "wfcore_running_engine", default=None
)


def running_engine() -> ECSWorkflowEngine | None:
    """The engine whose worker runs the phase this code is part of, or None."""
    return _running_engine.get()


def other_engine_hint(engine: ECSWorkflowEngine, task: Task) -> str:
    """``: its phase runs in another engine ...`` when a handler called ``engine``
    about a task another engine of this process runs (a handler reaching for a
    module-level engine while a test's engine runs it); else ""."""
    running = _running_engine.get()
    if running is None or running is engine or not running._worker.runs_phase_of(task):
        return ""
    return (
        f"; its phase runs in another engine (store {running.store_url}): call that "
        "one, e.g. wfcore.current_engine(), not a module-level engine"
    )


# How often a task waiting to run alone looks whether the others have finished.
_ALONE_POLL = 0.05
# The first pause before asking the store again for a shared phase slot (doubling
# up to the engine's poll_interval).
_SHARED_SLOT_FIRST_PAUSE = 0.05

# How long a worker waits before asking a failing store again: the first pause,
# doubled at each failure in a row up to the longest.
_STORE_RETRY_FIRST = 1.0
_STORE_RETRY_MAX = 60.0

# The signals a service manager stops a worker with, and how long a command killed
# by one waits for the worker's own to arrive before it counts as a failed attempt.
_STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
_STOP_SIGNAL_GRACE = 1.0


def _killed_by(exc: BaseException) -> int | None:
    """The signal a phase's command died of, or None. Under the command's guard
    shell a signal shows as a negative status (the shell was killed too) or as
    128 + N (the shell reports its command's death)."""
    if not isinstance(exc, CommandError) or exc.returncode is None:
        return None
    code = exc.returncode
    if code < 0:
        return -code
    if 128 < code < 128 + signal.NSIG:
        return code - 128
    return None


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _workers_lost(task: Task) -> int:
    """How many times in a row the task's current phase lost its worker: its
    ``taken_over`` events since anything else happened to it. A rerun's start and
    checkpoints are stored only with a checkpoint, so they don't break the row: a
    phase that checkpoints and then kills its worker must not loop for ever."""
    lost = 0
    for event in reversed(task.history):
        name = event.get("event")
        if name == "taken_over" and event.get("phase") == task.classification:
            lost += 1
        elif name not in ("phase_started", "checkpoint"):
            break
    return lost


def _retried(task: Task) -> bool:
    """Whether the task was retried since a phase last started (a priority changed
    or an artifact added may have come after the retry): a task cancelled as its
    phase ran, or failed with its worker, whose files may be left unlisted."""
    return happened_since_start(task, "retried")


def _has_folder(root: Path, task_id: str) -> bool:
    """Whether the task has a folder of artifact files (a stat, in the event loop)."""
    try:
        return task_artifact_dir(root, task_id).is_dir()
    except ArtifactError:
        return False


def _workers_lost_error(task: Task, lost: int) -> str:
    # None: it died in the first second of a first phase, before its name was stored.
    phase = "its first phase" if task.classification is None else f"phase {task.classification!r}"
    return (
        f"WorkerLostError: {phase} lost its worker {lost} times in a row "
        "(killed, out of memory, or paused past its lease), so it is not run again: it "
        "may be what ends its worker. Retry the task once the cause is fixed"
    )


def _adapters_blocked(engine: ECSWorkflowEngine) -> str:
    """Why there may be no adapter: the built-in ones were switched off."""
    if engine.plugin_manager.is_blocked("wfcore.adapters"):
        return (
            " (the built-in adapters, plugin 'wfcore.adapters', are disabled: WFE_DISABLED_PLUGINS)"
        )
    return ""


# The longest wait between two attempts, unless retry_delay itself is longer: the
# doubling would otherwise wait years by the 30th attempt, and overflow the dates.
_MAX_BACKOFF = 86400.0


def _backoff(retry_delay: float, attempt: int) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (from 1):
    ``retry_delay * 2 ** (attempt - 1)``, at most a day (or ``retry_delay``)."""
    # A retry_delay of centuries is cut to a century, which a date can still hold.
    longest = min(max(retry_delay, _MAX_BACKOFF), LONGEST_WAIT)
    # The exponent is bounded first: 2 ** 1100 is no float.
    return min(retry_delay * 2.0 ** min(attempt - 1, 64), longest)


def _cancelled_from_outside() -> bool:
    """True when the running asyncio task was cancelled (a cancel, a stop, a lost
    lease), not merely handed a CancelledError that a phase raised itself. Python
    3.10 cannot tell the two apart: every CancelledError counts as a cancel there."""
    current = asyncio.current_task()
    cancelling = getattr(current, "cancelling", None)
    return cancelling is None or cancelling() > 0


def _log_finished(task: Task) -> None:
    """A line for each task this worker completed or failed, with its workflow and
    how long after its submission: at DEBUG, as a busy worker finishes thousands a
    second (the progress lines count them; a failure has its WARNING line too)."""
    if not logger.isEnabledFor(logging.DEBUG):
        return
    seconds = (utcnow() - task.created_at).total_seconds()
    logger.debug(
        "task %s (workflow %r): %s, %.3fs after it was submitted",
        task.id,
        task.workflow_name,
        task.status.value,
        seconds,
    )


def _first_line(text: str | None) -> str:
    """An error's first line, for a log line about it (the task keeps the whole)."""
    line = (text or "").strip().split("\n", 1)[0]
    return line if len(line) <= 300 else line[:299] + "…"


# On Python before 3.12, asyncio.wait_for runs the awaitable in a task of its own,
# and a SystemExit raised in a task ends the event loop, so it has to be carried
# out of that task as an ordinary exception.
_WAIT_FOR_MAKES_A_TASK = sys.version_info < (3, 12)


class _PhaseExited(Exception):
    """A SystemExit raised by a phase, carried out of ``wait_for``'s task."""

    def __init__(self, exited: SystemExit) -> None:
        super().__init__(exited)
        self.exited = exited


async def _exit_as_exception(run: Awaitable[None]) -> None:
    try:
        await run
    except SystemExit as exc:
        raise _PhaseExited(exc) from exc


def _remove_artifact_files(root: Path, task_id: str, names: list[str]) -> None:
    """Delete these artifact files of a task, and the folders they leave empty."""
    try:
        base = task_artifact_dir(root, task_id)
    except ArtifactError:
        return  # an id that cannot name a folder has no files
    for name in names:
        try:
            check_artifact_name(name)
        except ArtifactError:
            continue
        path = base / name
        try:
            path.unlink(missing_ok=True)
        except OSError:
            logger.warning("task %s: could not remove artifact file %s", task_id, path)
            continue
        parent = path.parent
        while parent != base.parent:
            try:
                parent.rmdir()  # only when empty
            except OSError:
                break
            parent = parent.parent

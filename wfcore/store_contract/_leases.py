"""The store contract's tests: claiming and leases."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from ..model import Task, TaskStatus
from ..stores.base import Store
from ._support import (
    _CLAIM_BUMPS,
    _STALE_WRITE,
    _ContractBase,
    _task,
    _with_store,
    _with_two_stores,
)


async def _eventually(check: Callable[[], Awaitable[Any]], what: str, timeout: float = 10) -> Any:
    """Await ``check()`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.02)


class _Leases(_ContractBase):
    @_with_store
    async def test_claim_leases_runnable_tasks_oldest_first(self, store: Any) -> None:
        """Claimed tasks are IN_PROGRESS, at a new version, and no one else's."""
        for n in range(3):
            await store.insert_task(_task(n))
        inserted = await store.get_task("task-0")
        inserted_at = inserted.version
        first = await store.claim("worker-a", 2, 30)
        ids = [t.id for t in first]
        assert len(first) <= 2, (
            f"claim('worker-a', limit=2, ...) returned {len(first)} tasks {ids}: a claim "
            "leases at most `limit` tasks (a worker asks for as many as it has room for)"
        )
        assert ids == ["task-0", "task-1"], (
            f"claim('worker-a', limit=2, ...) returned {ids} of task-0, task-1 and task-2, "
            "inserted in that order: the tasks ready longest come first"
        )
        assert all(t.status is TaskStatus.IN_PROGRESS for t in first), (
            "a claim returns a PENDING task IN_PROGRESS, and stores it so"
        )
        assert first[0].version > inserted_at, (
            f"claim returned task-0 at version {first[0].version}, the version it was "
            f"inserted at ({inserted_at}): {_CLAIM_BUMPS}"
        )
        # A write by whoever read the task before the claim is refused.
        inserted.output = "too late"
        wrote = await store.update_task(inserted)
        assert wrote is False, (
            f"update_task returned {wrote!r} for a task read before a claim: the claim "
            "bumps the version, and " + _STALE_WRITE
        )
        second = [t.id for t in await store.claim("worker-b", 5, 30)]
        assert second == ["task-2"], (
            f"claim('worker-b', 5, ...) took {second} after worker-a's claim leased task-0 "
            "and task-1: only task-2 is not leased"
        )
        third = [t.id for t in await store.claim("worker-c", 5, 30)]
        assert third == [], (
            f"claim('worker-c', ...) took {third} while every task is leased (for 30 s): a "
            "leased task is nobody else's until its lease expires or a write releases it"
        )
        owners = sorted(await store.lease_owners())
        assert owners == ["worker-a", "worker-b"], (
            f"lease_owners() gave {owners}: the owners of the leases tasks hold"
        )
        if type(store).lease_of is not Store.lease_of:  # the store can tell (optional)
            now = datetime.now(timezone.utc)
            lease = await store.lease_of("task-2")
            assert lease is not None, "lease_of('task-2') gave None though worker-b claimed it"
            owner, expires = lease
            assert owner == "worker-b", (
                f"lease_of('task-2') names {owner!r} as its owner, not 'worker-b', whose "
                "claim leased it: give the owner the claim was made for"
            )
            assert now + timedelta(seconds=20) < expires < now + timedelta(seconds=40), (
                f"lease_of('task-2') says the lease expires at {expires}, {now} being now: a "
                "claim with lease_seconds=30 leases its tasks until 30 s from the claim (an "
                "aware UTC datetime)"
            )
            missing = await store.lease_of("no-such-task")
            assert missing is None, f"lease_of of an unknown task gave {missing!r}, not None"

    @_with_store
    async def test_tasks_to_start_later_wait_for_their_time(self, store: Any) -> None:
        """A pending task with run_after in the future is not claimed; it is delayed."""
        later = datetime.now(timezone.utc) + timedelta(hours=1)
        await store.insert_task(_task(1, run_after=later))
        await store.insert_task(_task(2, run_after=datetime.now(timezone.utc)))
        claimed = [t.id for t in await store.claim("w", 10, 30)]
        assert claimed == ["task-2"], (
            f"claim took {claimed}: task-1 is to run an hour from now (run_after), task-2 "
            "now; a pending task is claimable only once its run_after has passed"
        )
        count, first = await store.count_delayed()
        assert (count, first is not None) == (1, True), (
            f"count_delayed() gave ({count}, {first}) for one pending task whose run_after "
            "is an hour away: (1, that run_after)"
        )
        assert abs((first - later).total_seconds()) < 1, (
            f"count_delayed() gave the first run_after as {first}, not {later}"
        )

    @_with_store
    async def test_count_due_counts_the_work_at_hand(self, store: Any) -> None:
        """count_due counts the tasks running, and those pending and due: not those
        delayed (run_after), waiting or finished; with workflows=, those of these
        workflows only. Optional: skipped for a store that keeps Store's (which
        counts every pending task, due or not)."""
        if type(store).count_due is Store.count_due:
            pytest.skip("the store keeps Store.count_due's default, which counts delayed tasks")
        later = datetime.now(timezone.utc) + timedelta(hours=1)
        await store.insert_tasks([_task(n) for n in range(4)])
        claimed = {t.id: t for t in await store.claim("w", 3, 30)}  # task-0 to task-2
        claimed["task-1"].status = TaskStatus.WAITING_HUMAN
        claimed["task-2"].status = TaskStatus.COMPLETED
        for task_id in ("task-1", "task-2"):
            assert await store.update_task(claimed[task_id])
        await store.insert_tasks([_task(4, run_after=later), _task(5, workflow_name="other")])
        due = await store.count_due()
        assert due == 3, (
            f"count_due() gave {due}: task-0 is running, task-3 and task-5 pending and "
            "due; task-1 waits for a person, task-2 is completed and task-4 delayed an "
            "hour, which are not at hand"
        )
        due = await store.count_due(workflows=["w"])
        assert due == 2, (
            f"count_due(workflows=['w']) gave {due}: task-0 and task-3 (task-5 is of "
            "workflow 'other')"
        )

    @_with_store
    async def test_claim_takes_the_task_ready_longest_whatever_its_id(self, store: Any) -> None:
        """claim takes the tasks that have been runnable longest: a waiting task since
        its deadline, a pending one since its run_after, or without one since it was
        inserted or last written back pending (a released task queues behind those
        already waiting); never by id, which need not sort by age."""
        now = datetime.now(timezone.utc)
        await store.insert_task(_task(9))
        [waiting] = await store.claim("w", 1, 30)
        waiting.status = TaskStatus.WAITING_HUMAN
        waiting.deadline = now - timedelta(hours=2)
        assert await store.update_task(waiting)
        await store.insert_task(_task(10, run_after=now - timedelta(hours=1)))
        await store.insert_task(Task(id="b", workflow_name="w", classification="p"))
        await store.insert_task(Task(id="a", workflow_name="w", classification="p"))
        # One at a time: the order within one claim's list is not part of the rule.
        claimed = [(await store.claim("w", 1, 30))[0] for _ in range(3)]
        released = claimed[-1]  # b, given back: now behind a
        released.status = TaskStatus.PENDING
        assert await store.update_task(released)
        claimed += [(await store.claim("w", 1, 30))[0] for _ in range(2)]
        order = [t.id for t in claimed]
        assert order == ["task-9", "task-10", "b", "a", "b"], (
            f"claim took the tasks in the order {order}, not by how long each has been "
            "runnable: task-9 since its deadline 2 h ago, task-10 since its run_after 1 h "
            "ago, then b and a as they were inserted, then b again, written back pending "
            "after a was inserted. Order claims by that time (ties in insertion order), "
            "not by id or created_at"
        )

    @_with_store
    async def test_claim_takes_the_highest_priority_first(self, store: Any) -> None:
        """Of the ready tasks, claim takes those of the highest priority first, and
        those of one priority by how long each has been ready. A task of a higher
        priority that is not ready yet (delayed, or leased) waits its turn; a priority
        written by update_task counts from that write on, whichever workflows the
        claim is for."""
        now = datetime.now(timezone.utc)
        await store.insert_task(_task(1))
        await store.insert_task(_task(2, priority=5))
        await store.insert_task(_task(3, priority=-3))
        await store.insert_task(_task(4, priority=5))
        await store.insert_task(_task(5, priority=9, run_after=now + timedelta(hours=1)))
        await store.insert_task(_task(6, priority=1000, workflow_name="other"))
        await store.insert_task(_task(7))
        order = [t.id for t in await store.claim("w", 3, 30, workflows=["w"])]
        order += [(await store.claim("w", 1, 30, workflows=["w"]))[0].id for _ in range(2)]
        # The order within one claim's list is not part of the rule.
        assert sorted(order[:3]) == ["task-1", "task-2", "task-4"], (
            f"claim took {order[:3]} first, not the two tasks of priority 5 and the "
            "oldest of priority 0"
        )
        assert order[3:] == ["task-7", "task-3"], (
            f"after the priority 5 tasks and task-1, claim took {order[3:]}: expected "
            "task-7 (priority 0, ready after task-1) then task-3 (priority -3); the "
            "delayed priority 9 task-5 must not be taken before its run_after"
        )
        [task] = [t for t in await store.claim("w", 10, 30) if t.id == "task-6"]
        # Given back with a new priority: it goes ahead of those of the old one.
        task.status, task.priority = TaskStatus.PENDING, -1000
        assert await store.update_task(task)
        await store.insert_task(_task(8, priority=-999, workflow_name="other"))
        assert [t.id for t in await store.claim("w", 1, 30)] == ["task-8"], (
            "a task written back with priority -1000 was claimed before one inserted "
            "later with -999: claim must order by the priority of the task's last write"
        )
        assert (await store.get_task("task-6")).priority == -1000

    @_with_store
    async def test_a_run_after_written_by_update_delays_the_task(self, store: Any) -> None:
        """A task written back PENDING with run_after in the future (a retry's backoff)
        is not claimed until then, and counts as delayed; one whose run_after is moved
        into the past is claimed at once."""
        await store.insert_task(_task(1))
        [task] = await store.claim("w", 1, 30)
        later = datetime.now(timezone.utc) + timedelta(hours=1)
        task.status, task.run_after = TaskStatus.PENDING, later
        assert await store.update_task(task)
        claimed = await store.claim("w", 5, 30)
        assert claimed == [], (
            "a task written back PENDING by update_task with run_after an hour from now "
            "was claimed at once: claim must go by the run_after of the task's last "
            "write, not only of its insert (a retry's backoff is set by update_task)"
        )
        count, first = await store.count_delayed()
        assert count == 1, "count_delayed does not count a task delayed by update_task"
        assert first is not None and abs((first - later).total_seconds()) < 1
        assert await store.has_active_tasks(), (
            "has_active_tasks() is False while a PENDING task waits for its run_after: a "
            "delayed task is still active, or run_until_idle returns before running it"
        )
        task.run_after = datetime.now(timezone.utc) - timedelta(seconds=1)
        assert await store.update_task(task)
        assert [t.id for t in await store.claim("w", 5, 30)] == ["task-1"], (
            "a task whose run_after update_task moved into the past is not claimed"
        )

    @_with_store
    async def test_a_delayed_task_is_still_active(self, store: Any) -> None:
        """has_active_tasks counts a PENDING task whose run_after is in the future:
        run_until_idle and ``wfe worker --until-idle`` wait for it."""
        later = datetime.now(timezone.utc) + timedelta(hours=1)
        await store.insert_task(_task(1, run_after=later))
        assert await store.has_active_tasks(), (
            "has_active_tasks() is False while a PENDING task waits for its run_after: "
            "a delayed task is still active, or run_until_idle returns before running it"
        )
        assert await store.has_active_tasks(workflows=["w"]), (
            "has_active_tasks(workflows=['w']) is False while a delayed task of w waits"
        )
        assert not await store.has_active_tasks(workflows=["other"]), (
            "has_active_tasks(workflows=['other']) is True though only a task of "
            "workflow 'w' is stored: with workflows=, count only tasks of those workflows"
        )

    @_with_store
    async def test_an_owner_renews_its_expired_lease_nobody_took(self, store: Any) -> None:
        """renew extends a lease the owner still holds even after it expired, as long
        as nobody has claimed the task since; the renewed task is nobody else's."""
        await store.insert_task(_task(1))
        assert len(await store.claim("slow-worker", 1, 0)) == 1  # expired at once
        assert await store.renew("slow-worker", ["task-1"], 30) == {"task-1"}, (
            "renew refused a lease that had expired although nobody had taken the task "
            "over: the owner still holds it until another claim takes the task (or a "
            "write releases it), and refusing makes a slow worker give up its phase"
        )
        taken = [t.id for t in await store.claim("other", 1, 30)]
        assert taken == [], (
            f"claim took {taken} right after renew('slow-worker', ['task-1'], 30) returned "
            "it: renew extends each lease it returns to lease_seconds from now"
        )

    @_with_store
    async def test_writes_at_one_version_at_once_let_one_win(self, store: Any) -> None:
        """update_task calls made at once (asyncio.gather) over one read version: for
        each task exactly one succeeds, as a worker finishing a phase and a cancel do;
        the version check and the write are one atomic step."""
        ids = [f"task-{n}" for n in range(10)]
        await store.insert_tasks([_task(n) for n in range(10)])
        claimed = {t.id: t.version for t in await store.claim("w", 10, 30)}
        writes = []
        for task_id in ids:
            finish, cancel = await store.get_task(task_id), await store.get_task(task_id)
            finish.status, finish.output = TaskStatus.COMPLETED, "done"
            cancel.status = TaskStatus.CANCELLED
            writes += [finish, cancel]
        results = await asyncio.gather(*(store.update_task(t) for t in writes))
        both = [i for n, i in enumerate(ids) if results[2 * n] and results[2 * n + 1]]
        assert not both, (
            f"update_task returned True for both of two writes at one version of {both}: "
            "one was lost (a cancel, or a result) while both callers believe they won. "
            "Compare the version and write in one atomic step (one transaction, or under "
            "one lock held across both), never check, then await, then write"
        )
        assert all(results[2 * n] or results[2 * n + 1] for n in range(len(ids))), (
            "neither of two writes at one version succeeded"
        )
        for n, task_id in enumerate(ids):
            stored = await store.get_task(task_id)
            winner = TaskStatus.COMPLETED if results[2 * n] else TaskStatus.CANCELLED
            assert (stored.status, stored.version) == (winner, claimed[task_id] + 1), (
                f"{task_id} is stored {stored.status.value} at version {stored.version}: "
                f"the write that returned True stored it, {winner.value} at version "
                f"{claimed[task_id] + 1}"
            )

    @_with_store
    async def test_a_finished_write_releases_the_lease(self, store: Any) -> None:
        """update_task frees the lease unless keep_lease; a released pending task is
        claimable again at once."""
        await store.insert_task(_task(1))
        [task] = await store.claim("w", 1, 30)
        task.context["step"] = 1
        assert await store.update_task(task, keep_lease=True)
        assert await store.renew("w", ["task-1"], 30) == {"task-1"}
        task.status = TaskStatus.PENDING
        assert await store.update_task(task)
        renewed = await store.renew("w", ["task-1"], 30)
        assert renewed == set(), (
            f"renew gave {renewed} for a task written back PENDING without keep_lease: "
            "such a write releases the lease, and renew returns only the ids whose "
            "lease the owner still holds"
        )
        lease = await store.lease_of("task-1")
        assert lease is None, (
            f"lease_of('task-1') gave {lease} after a write without keep_lease released it"
        )
        [again] = await store.claim("other", 1, 30)
        assert again.context == {"step": 1}, (
            f"the task claimed again has context {again.context}, not the one last written"
        )
        assert not [e for e in again.history if e["event"] == "taken_over"], (
            "a claim of a task whose lease a write released added a taken_over event: only "
            "a task still leased to another owner (expired, or freed by "
            "release_dead_leases) is taken over"
        )

    @_with_store
    async def test_an_expired_lease_is_taken_over(self, store: Any) -> None:
        """A running task whose lease ran out goes to the next claimer, with a
        taken_over event naming the worker that lost it."""
        await store.insert_task(_task(1))
        [task] = await store.claim("dead-worker", 1, 0.2)
        assert await store.claim("next-worker", 1, 30) == [], (
            "a task was claimed again right after a claim leased it for 0.2 s"
        )
        [taken] = await _eventually(
            lambda: store.claim("next-worker", 1, 30), "the expired lease to be claimable"
        )
        assert (taken.id, taken.status) == ("task-1", TaskStatus.IN_PROGRESS), (
            f"the claim after task-1's lease expired gave {taken.id} {taken.status.value}: "
            "task-1, still IN_PROGRESS"
        )
        events = [e for e in taken.history if e["event"] == "taken_over"]
        assert [(e.get("previous_worker"), e.get("worker")) for e in events] == [
            ("dead-worker", "next-worker")
        ], (
            f"the task taken over has taken_over events {events}: one, from "
            "record_takeover(task, 'dead-worker', 'next-worker'), as the claim that takes "
            "over a task still leased to another owner adds it"
        )
        [event] = events
        stored = await store.get_task("task-1")
        assert [e for e in stored.history if e["event"] == "taken_over"] == [event], (
            "claim added the taken_over event to the task it returned but did not store "
            "it: the event must be written with the claim itself, since a worker killed "
            "before its first write never stores it, and the engine fails a task whose "
            "workers keep dying by counting the stored events (max_takeovers)"
        )
        assert stored.version == taken.version, "claim returned another version than it stored"
        # The old owner can neither renew nor write any more.
        renewed = await store.renew("dead-worker", ["task-1"], 30)
        assert renewed == set(), (
            f"renew gave {renewed} to the worker whose expired lease another claim took: "
            "renew returns only the ids whose lease the owner still holds"
        )
        task.output = "late"
        wrote = await store.update_task(task)
        assert wrote is False, (
            f"update_task returned {wrote!r} for the task as its expired lease's owner "
            "had it, after another worker claimed it: the claim bumps the version, and "
            + _STALE_WRITE
        )

    @_with_store
    async def test_leases_of_dead_owners_are_released_at_once(self, store: Any) -> None:
        """release_dead_leases makes a dead process's tasks claimable now, and says
        how many leases it freed: every lease the owners held, expired ones too."""
        for n in range(3):
            await store.insert_task(_task(n))
        claimed = await store.claim("dead", 2, 3600)
        claimed += await store.claim("dead", 1, 0)  # expired at once, not taken yet
        assert len(claimed) == 3, f"claims of 3 tasks by 'dead' took {[t.id for t in claimed]}"
        released = await store.release_dead_leases(["dead"])
        assert released == 3, (
            f"release_dead_leases(['dead']) returned {released!r} after 'dead' claimed three "
            "tasks (one lease of them expired already): it frees the leases of those owners "
            "and returns how many it freed, expired ones included (nobody had taken their "
            "tasks yet)"
        )
        taken = await store.claim("alive", 5, 30)
        assert sorted(t.id for t in taken) == ["task-0", "task-1", "task-2"], (
            f"claim took {sorted(t.id for t in taken)} after release_dead_leases(['dead']) "
            "freed the leases of task-0 to task-2: a freed lease's task is claimable at once"
        )
        assert all(
            [e["previous_worker"] for e in t.history if e["event"] == "taken_over"] == ["dead"]
            for t in taken
        ), (
            "a task whose lease release_dead_leases freed came back from its claim without "
            "one taken_over event naming 'dead': the lease stays on record, its owner's "
            "name with it, until the claim that takes the task over"
        )
        for task in taken:
            stored = await store.get_task(task.id)
            assert [e["worker"] for e in stored.history if e["event"] == "taken_over"] == [
                "alive"
            ], "the taken_over event the claim returned is not stored with the claim"
        owners = await store.lease_owners()
        assert owners == ["alive"], (
            f"lease_owners() gave {owners} after 'alive' took over every task 'dead' held"
        )

    @_with_store
    async def test_phase_slots_go_up_to_the_limit_and_in_order(self, store: Any) -> None:
        """take_phase_slot gives at most ``limit`` slots of a phase, and never one
        to a task while a task of a higher priority waits for one."""
        if not store.shares_phase_slots:
            pytest.skip("the store keeps no phase slots (shares_phase_slots = False)")
        for n in range(4):
            await store.insert_task(_task(n))
        await store.claim("w1", 4, 30)
        one, two, low, high = (f"task-{n}" for n in range(4))

        async def take(task_id: str, priority: int = 0, phase: str = "p") -> bool:
            return bool(await store.take_phase_slot(task_id, "w1", "w", phase, 1, priority))

        assert await take(one)
        assert await take(one), "asking again for a slot held must keep it"
        assert not await take(two), "a second slot was given with limit=1"
        assert not await take(low, -5)
        assert not await take(high, 5)
        assert await take(low, -5, phase="other"), "another phase must have slots of its own"
        await store.release_phase_slot(low)
        await store.release_phase_slot(one)
        assert not await take(low, -5), "a lower priority overtook the tasks in line"
        assert not await take(two), "a task overtook a higher priority in line"
        assert await take(high, 5), "the freed slot did not go to the highest priority"
        await store.release_phase_slot(high)
        assert not await take(low, -5)
        assert await take(two), "the freed slot did not go to the waiting task"
        await store.release_phase_slot(two)
        assert await take(low, -5)
        await store.release_phase_slot("never-asked")  # changes nothing

    @_with_two_stores
    async def test_a_phase_slot_whose_lease_is_gone_is_free(self, first: Any, second: Any) -> None:
        """A slot, or a place in line, counts only while its task's lease is held by
        the owner that asked: a dead worker's frees without a release."""
        if not first.shares_phase_slots:
            pytest.skip("the store keeps no phase slots (shares_phase_slots = False)")
        for n in range(3):
            await first.insert_task(_task(n))
        await first.claim("dead-worker", 2, 3600)
        assert await first.take_phase_slot("task-0", "dead-worker", "w", "p", 1, 0)
        assert not await first.take_phase_slot("task-1", "dead-worker", "w", "p", 1, 0)
        [mine] = await second.claim("live-worker", 1, 30)
        assert not await second.take_phase_slot(mine.id, "live-worker", "w", "p", 1, 0)
        await second.release_dead_leases(["dead-worker"])
        gone = await second.take_phase_slot("task-1", "dead-worker", "w", "p", 1, 0)
        assert gone is None, (
            f"take_phase_slot returned {gone!r} for a task whose lease its owner no longer "
            "holds: None, so that the worker stops waiting for a slot it can never use"
        )
        assert await second.take_phase_slot(mine.id, "live-worker", "w", "p", 1, 0), (
            "a slot held by a task whose lease is gone (its worker died) still counted"
        )
        taken = await second.claim("live-worker", 2, 30)
        assert sorted(t.id for t in taken) == ["task-0", "task-1"]
        assert not await second.take_phase_slot("task-0", "live-worker", "w", "p", 1, 0), (
            "a task taken over kept the slot its dead worker held"
        )

    @_with_store
    async def test_waiting_tasks_are_claimed_only_after_their_deadline(self, store: Any) -> None:
        """WAITING_* tasks are not runnable, until their deadline passes; they come
        back still waiting, for the engine to time them out."""
        now = datetime.now(timezone.utc)
        await store.insert_task(_task(1))
        await store.insert_task(_task(2))
        await store.insert_task(_task(3))
        claimed = {t.id: t for t in await store.claim("w", 3, 30)}
        for task_id, deadline in [
            ("task-1", None),
            ("task-2", now + timedelta(hours=1)),
            ("task-3", now - timedelta(seconds=1)),
        ]:
            task = claimed[task_id]
            task.status = TaskStatus.WAITING_HUMAN
            task.deadline = deadline
            assert await store.update_task(task)
        assert not await store.has_active_tasks(), (
            "has_active_tasks() is True though every task is waiting: waiting tasks don't "
            "count, or run_until_idle never returns while a person has work"
        )
        due_now = await store.claim("w", 5, 30)
        assert [(t.id, t.status) for t in due_now] == [("task-3", TaskStatus.WAITING_HUMAN)], (
            f"claim took {[(t.id, t.status.value) for t in due_now]} of three waiting tasks: "
            "task-3 alone, whose deadline has passed (task-1 has none, task-2's is an hour "
            "away), still waiting (the engine times it out)"
        )
        [due] = due_now
        before = claimed["task-3"]
        assert due.version > before.version, (
            "claiming a waiting task did not bump its version: every claim does, so that "
            "a write by whoever read the task before (a person's answer) cannot cross "
            "the claimer's (its timeout)"
        )
        wrote = await store.update_task(before)
        assert wrote is False, (
            f"update_task returned {wrote!r} for a waiting task read before its claim: "
            + _STALE_WRITE
        )
        assert await store.claim("other", 5, 30) == [], (
            "a waiting task claimed after its deadline was claimed again at once: it is "
            "leased to its claimer like any claimed task, until the lease expires or a "
            "write (the engine's timeout) releases it"
        )

    @_with_store
    async def test_a_waiting_task_whose_claimer_died_is_claimed_again(self, store: Any) -> None:
        """A waiting task claimed after its deadline whose claimer dies before timing
        it out (its lease runs out, or release_dead_leases frees it) is claimable
        again, still waiting, with a taken_over event: else a person's task whose
        timing-out worker was killed waits for ever."""
        past = datetime.now(timezone.utc) - timedelta(seconds=1)
        await store.insert_tasks([_task(1), _task(2)])
        for task in await store.claim("w", 2, 30):
            task.status, task.deadline = TaskStatus.WAITING_HUMAN, past
            assert await store.update_task(task)
        dead = [t.id for t in await store.claim("dead", 1, 3600)]
        expiring = [t.id for t in await store.claim("expiring", 1, 0.2)]
        assert sorted(dead + expiring) == ["task-1", "task-2"], (
            f"claims of one task each took {dead}, then {expiring}: two waiting tasks "
            "whose deadline has passed are each claimable"
        )

        def check(claimed: list[Task], lost: list[str], owner: str, how: str) -> None:
            ids = [t.id for t in claimed]
            assert ids == lost, (
                f"claim gave {ids} after {owner!r}, which held waiting task {lost}, died "
                f"({how}): a waiting task claimed after its deadline is claimable again "
                "once its lease expires or is freed, like any claimed task, or it waits "
                "for ever"
            )
            [task] = claimed
            events = [e.get("previous_worker") for e in task.history if e["event"] == "taken_over"]
            assert (task.status, events) == (TaskStatus.WAITING_HUMAN, [owner]), (
                f"the waiting task claimed again came back {task.status.value} with "
                f"taken_over events from {events}: still waiting (the engine times it "
                f"out), with one taken_over event naming {owner!r}"
            )

        claimed = await _eventually(
            lambda: store.claim("other", 5, 30),
            "a waiting task claimed after its deadline to be claimable again once its "
            "claimer's lease ran out (else a person's task whose timing-out worker died "
            "waits for ever)",
            timeout=5,
        )
        check(claimed, expiring, "expiring", "its lease ran out")
        await store.release_dead_leases(["dead"])
        check(await store.claim("other", 5, 30), dead, "dead", "release_dead_leases")

    @_with_store
    async def test_workers_of_some_workflows_see_only_those(self, store: Any) -> None:
        """claim and has_active_tasks with workflows= look at those workflows only."""
        await store.insert_task(_task(1, workflow_name="left"))
        await store.insert_task(_task(2, workflow_name="right"))
        assert await store.has_active_tasks(workflows=["left"])
        claimed = await store.claim("w", 5, 30, workflows=["left"])
        assert [t.id for t in claimed] == ["task-1"], (
            f"claim(workflows=['left']) took {[t.id for t in claimed]}, not ['task-1']: "
            "with workflows=, claim only tasks of those workflows (other workers run the rest)"
        )
        [left] = claimed
        left.status = TaskStatus.COMPLETED
        assert await store.update_task(left)
        assert not await store.has_active_tasks(workflows=["left"]), (
            "has_active_tasks(workflows=['left']) is True though left's only task is "
            "COMPLETED (task-2, of workflow 'right', is pending): with workflows=, count "
            "only tasks of those workflows"
        )
        assert await store.has_active_tasks(), (
            "has_active_tasks() is False though task-2 is pending"
        )
        rest = [t.id for t in await store.claim("w", 5, 30)]
        assert rest == ["task-2"], f"claim() without workflows= took {rest}, not ['task-2']"

"""The store contract's tests: several openers, threads and event loops."""

from __future__ import annotations

import asyncio
import functools
import threading
from typing import Any

import pytest

from ..model import Phase, TaskStatus, WorkflowSpec
from ._openers import _meet, _Ready, _start_in_threads
from ._support import (
    _ContractBase,
    _task,
    _with_store,
    _with_two_stores,
)


class _Concurrency(_ContractBase):
    @_with_two_stores
    async def test_a_second_opener_sees_the_first_ones_writes(
        self, first: Any, second: Any
    ) -> None:
        """Two stores open on one URL at once (``wfe submit`` beside a running ``wfe
        worker``) see each other's inserts, claims, writes, workflows and consumers as
        soon as they are made: reads go to the shared store, not to a copy of it."""
        assert first.artifacts_dir == second.artifacts_dir, (
            f"two stores opened on one URL keep artifacts in different folders "
            f"({first.artifacts_dir}, {second.artifacts_dir}): derive it from the URL"
        )
        await first.save_workflow(WorkflowSpec("flow", [Phase("a")]))
        await first.outbox_register("results")
        await first.insert_task(_task(1, workflow_name="flow"))
        seen = await second.get_task("task-1")
        assert seen is not None, (
            "a task inserted through one store was not found by get_task on a second "
            "store opened on the same URL before the insert: every read must see what "
            "other openers (other processes) wrote by then; a store that reads from a copy "
            "taken at open() never sees the tasks `wfe submit` stores. (For a store two "
            "openers never share, like memory://, set shared = False on the test class.)"
        )
        listed = [t.id for t in await second.list_tasks()]
        assert listed == ["task-1"], f"the second store lists {listed}, not the first one's task"
        assert await second.load_workflow("flow") == WorkflowSpec("flow", [Phase("a")]), (
            "the second store does not load a workflow the first one saved"
        )
        before_claim = await first.get_task("task-1")
        claimed = await second.claim("w", 5, 30)
        assert [t.id for t in claimed] == ["task-1"], (
            "the second store cannot claim a task the first one inserted"
        )
        [task] = claimed
        on_first = await first.get_task("task-1")
        assert (on_first.status, on_first.version) == (TaskStatus.IN_PROGRESS, task.version), (
            "the first store does not see the second one's claim"
        )
        before_claim.output = "late"
        assert await first.update_task(before_claim) is False, (
            "a write through the first store at the version it read before the second "
            "store's claim succeeded: the compare-and-set must hold across openers"
        )
        task.status, task.output = TaskStatus.COMPLETED, "done"
        assert await second.update_task(task)
        done = await first.get_task("task-1")
        assert (done.status, done.output) == (TaskStatus.COMPLETED, "done"), (
            "the first store does not see the second one's write"
        )
        assert [t.id for t in await first.outbox_pending("results")] == ["task-1"], (
            "a task finished through the second store has no outbox row for the consumer "
            "registered through the first: a finishing write records it for every "
            "consumer registered by then, by any opener"
        )

    def test_two_openers_claiming_at_once_never_share_a_task(self, store_url: str) -> None:
        """Two stores opened on one URL by two processes (one forked, where the system
        can fork; else two threads), each with an event loop and a store of its own,
        claiming at once never both get one task: picking and leasing tasks is one
        atomic step for everyone sharing the store."""
        self._skip_unless_shared()
        ids = [f"task-{n}" for n in range(60)]
        self._on_store(store_url, lambda store: store.insert_tasks([_task(n) for n in range(60)]))

        async def claim_all(store: Any, n: int, ready: _Ready) -> list[str]:
            await ready()
            got: list[str] = []
            while batch := await store.claim(f"worker-{n}", 2, 30):
                got += [t.id for t in batch]
            return got

        first, second = self._two_openers(store_url, claim_all)
        twice = sorted(set(first) & set(second), key=ids.index)
        assert not twice, (
            f"{len(twice)} tasks were claimed by both stores at once ({', '.join(twice[:5])}"
            f"{', ...' if len(twice) > 5 else ''}): claim must choose and lease its tasks in "
            "one atomic step that holds across processes (a transaction, or a lock shared "
            "by every opener of the URL, such as flock on a file; a lock of one store "
            "object does not reach another)"
        )
        assert sorted(first + second, key=ids.index) == ids, (
            "claims at once returned a task twice to one store, or left tasks unclaimed"
        )

    def test_two_openers_writing_at_one_version_let_one_win(self, store_url: str) -> None:
        """Two stores opened on one URL by two processes (one forked, where the system
        can fork; else two threads) write the same tasks at once, each at the version
        it read: for each task exactly one write succeeds, the compare-and-set
        holding across processes."""
        self._skip_unless_shared()
        ids = [f"task-{n}" for n in range(20)]

        async def prepare(store: Any) -> dict[str, int]:
            await store.insert_tasks([_task(n) for n in range(20)])
            return {t.id: t.version for t in await store.claim("worker", 20, 30)}

        claimed = self._on_store(store_url, prepare)

        async def write_all(store: Any, n: int, ready: _Ready) -> list[bool]:
            tasks = [await store.get_task(task_id) for task_id in ids]
            for task in tasks:
                task.status = TaskStatus.COMPLETED if n == 0 else TaskStatus.CANCELLED
            await ready()
            return list(await asyncio.gather(*(store.update_task(t) for t in tasks)))

        finished, cancelled = self._two_openers(store_url, write_all)
        both = [i for i, a, b in zip(ids, finished, cancelled, strict=True) if a and b]
        assert not both, (
            f"update_task returned True on both stores for {len(both)} tasks written at one "
            f"version ({', '.join(both[:5])}): one write was lost while both callers believe "
            "they won. Compare the version and write in one atomic step that holds across "
            "processes (one transaction, or a lock shared by every opener held across both)"
        )

        async def check(store: Any) -> None:
            for task_id, won in zip(ids, finished, strict=True):
                stored = await store.get_task(task_id)
                winner = TaskStatus.COMPLETED if won else TaskStatus.CANCELLED
                assert (stored.status, stored.version) == (winner, claimed[task_id] + 1), (
                    f"{task_id}: neither write at its version succeeded, or the stored task "
                    "is not the one the successful write wrote"
                )

        self._on_store(store_url, check)

    @_with_store
    async def test_one_store_serves_several_event_loops_at_once(self, store: Any) -> None:
        """One opened store takes calls from several event loops in several threads at
        once (an engine serving a web app's request threads beside its worker's loop),
        and its claims stay atomic across them."""
        if not self.threadsafe:
            pytest.skip("the store is meant for one thread (threadsafe = False)")
        ids = [f"task-{n}" for n in range(30)]
        await store.insert_tasks([_task(n) for n in range(30)])

        async def work(n: int, ready: _Ready) -> list[str]:
            await ready()
            assert (await store.insert_task(_task(100 + n)))[1]
            got: list[str] = []
            while batch := await store.claim(f"loop-{n}", 2, 30):
                for task in batch:
                    task.status = TaskStatus.COMPLETED
                    assert await store.update_task(task)
                got += [t.id for t in batch]
            return got

        # The loop that opened the store works too, beside two loops of two threads.
        barrier = threading.Barrier(3)

        async def in_this_loop() -> list[str]:
            try:
                return await work(2, functools.partial(_meet, barrier, self.timeout))
            except BaseException:
                barrier.abort()
                raise

        others = _start_in_threads(2, self.timeout, work, barrier)
        try:
            here, first, second = await asyncio.gather(
                in_this_loop(), *(asyncio.wrap_future(f) for f in others)
            )
        except (AssertionError, threading.BrokenBarrierError):
            raise
        except Exception as exc:
            pytest.fail(
                "a store call failed while three event loops in three threads used the "
                f"store at once: {type(exc).__name__}: {exc}. The engine calls its one store "
                "from several loops and threads at once: keep no asyncio object (a lock, a "
                "queue, the loop) made in open() for later calls, guard shared state with "
                "threading locks, and give each caller its result in its own loop. (For a "
                "store meant for one thread, like memory://, set threadsafe = False on the "
                "test class.)",
                pytrace=False,
            )
        claims = first + second + here
        twice = sorted({i for i in claims if claims.count(i) > 1})
        assert not twice, (
            f"tasks claimed twice by claims from several event loops at once: {twice[:5]}"
        )
        expected = ids + [f"task-{n}" for n in (100, 101, 102)]
        assert sorted(claims) == sorted(expected), "some tasks were never claimed"
        assert await store.count_tasks() == {TaskStatus.COMPLETED: len(expected)}

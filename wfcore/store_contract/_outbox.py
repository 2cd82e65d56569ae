"""The store contract's tests: the results outbox."""

from __future__ import annotations

import time
from typing import Any

import pytest

from ..model import Artifact, Task, TaskStatus
from ..stores.base import Store
from ._support import (
    _ContractBase,
    _task,
    _with_store,
)


class _Outbox(_ContractBase):
    @_with_store
    async def test_the_outbox_records_each_finish_until_acknowledged(self, store: Any) -> None:
        """Tasks finishing after a consumer registered wait in its outbox until
        acknowledged at their version; a later finish (a retry) waits again."""
        await store.insert_task(_task(0))
        [early] = await store.claim("w", 1, 30)
        early.status = TaskStatus.COMPLETED
        assert await store.update_task(early)  # before anyone registered
        await store.outbox_register("results")
        await store.outbox_register("results")  # idempotent
        await store.insert_task(_task(1))
        [task] = await store.claim("w", 1, 30)
        task.status, task.output = TaskStatus.COMPLETED, "done"
        assert await store.update_task(task)
        published = await store.outbox_pending("results")
        assert [(t.id, t.output, t.version) for t in published] == [
            ("task-1", "done", task.version)
        ], (
            f"outbox_pending('results') gave {[(t.id, t.output, t.version) for t in published]}: "
            f"task-1 alone, as its finishing write stored it (output 'done', version "
            f"{task.version}); task-0 finished before 'results' registered"
        )
        nobody = await store.outbox_pending("nobody")
        assert nobody == [], (
            f"outbox_pending('nobody') gave {[t.id for t in nobody]} for a consumer never "
            "registered: nothing is recorded for it"
        )

        await store.outbox_ack("results", ["task-1"], versions=[task.version])
        left = [t.id for t in await store.outbox_pending("results")]
        assert left == [], (
            f"outbox_pending gave {left} after outbox_ack('results', ['task-1'], "
            f"versions=[{task.version}]), the version it gave: an acknowledged finish "
            "leaves the consumer's outbox, or its result is published again and again"
        )
        task.status = TaskStatus.PENDING  # retried...
        assert await store.update_task(task)
        [task] = await store.claim("w", 1, 30)
        task.status = TaskStatus.FAILED  # ...and finished again
        assert await store.update_task(task)
        published = await store.outbox_pending("results")
        assert [(t.id, t.status) for t in published] == [("task-1", TaskStatus.FAILED)], (
            f"outbox_pending gave {[(t.id, t.status.value) for t in published]} after task-1, "
            "acknowledged, was retried and finished again (FAILED): a later finish is "
            "recorded again, and waits for its own acknowledgement"
        )
        # An acknowledgement of the earlier finish does not cover the later one.
        await store.outbox_ack("results", ["task-1"], versions=[task.version - 3])
        left = [t.id for t in await store.outbox_pending("results")]
        assert left == ["task-1"], (
            f"outbox_pending gave {left} after task-1 finished again and an outbox_ack "
            "at the version of its earlier finish: that acknowledgement covers only the "
            "finish it names (compare `versions`), or the later result is never published"
        )

    @_with_store
    async def test_the_outbox_gives_tasks_finished_now_in_finish_order(self, store: Any) -> None:
        """outbox_pending lists, in the order they finished, the tasks whose status is
        finished now: one retried since waits, without filling a page, until it finishes
        again, then comes back once, as stored then."""
        await store.outbox_register("results")
        await store.insert_tasks([Task(id=i, workflow_name="w") for i in ("t9", "t10", "b")])
        running = {t.id: t for t in await store.claim("w", 3, 30)}
        for task_id, status in [
            ("b", TaskStatus.COMPLETED),
            ("t9", TaskStatus.FAILED),
            ("t10", TaskStatus.CANCELLED),
        ]:
            running[task_id].status = status
            assert await store.update_task(running[task_id])
        order = [t.id for t in await store.outbox_pending("results")]
        assert order == ["b", "t9", "t10"], (
            f"outbox_pending gave {order} for tasks that finished as b, t9, t10: give them "
            "in the order they finished"
        )
        page = [t.id for t in await store.outbox_pending("results", limit=2)]
        assert page == ["b", "t9"], (
            f"outbox_pending('results', limit=2) gave {page}: give at most `limit` tasks, "
            "the first to finish"
        )
        for task_id in ("b", "t9"):  # retried before their results went out
            retried = await store.get_task(task_id)
            retried.status = TaskStatus.PENDING
            assert await store.update_task(retried)
        page = [(t.id, t.status.value) for t in await store.outbox_pending("results", limit=1)]
        assert page == [("t10", "cancelled")], (
            f"outbox_pending(limit=1) gave {page}: leave out the tasks that are not "
            "finished now (retried since they finished), or they fill the page and a "
            "consumer that publishes only finished tasks never reaches t10"
        )
        again = {t.id: t for t in await store.claim("w", 2, 30)}["b"]
        again.status = TaskStatus.COMPLETED
        assert await store.update_task(again)
        pending = await store.outbox_pending("results")
        assert sorted(t.id for t in pending) == ["b", "t10"], (
            f"after b, retried, finished again, outbox_pending gave {[t.id for t in pending]}: "
            "a task finished twice before it was acknowledged comes back once, for its "
            "latest finish"
        )
        [b] = [t for t in pending if t.id == "b"]
        assert (b.status, b.version) == (TaskStatus.COMPLETED, again.version), (
            f"outbox_pending gave b {b.status.value} at version {b.version}: as stored now, "
            f"COMPLETED at {again.version}"
        )

    @_with_store
    async def test_a_finish_is_recorded_once(self, store: Any) -> None:
        """Only a write that makes a task finished adds it to the outbox: writing a task
        that was finished already (an artifact added to a completed task) adds nothing,
        and an acknowledgement of its finish covers such later writes."""
        await store.outbox_register("results")
        await store.insert_tasks([_task(1), _task(2)])
        running = {t.id: t for t in await store.claim("w", 2, 30)}
        for task in running.values():
            task.status, task.output = TaskStatus.COMPLETED, "done"
            assert await store.update_task(task)
        published = {t.id: t.version for t in await store.outbox_pending("results")}
        assert sorted(published) == ["task-1", "task-2"], (
            f"outbox_pending gave {sorted(published)} after task-1 and task-2 finished"
        )
        await store.outbox_ack("results", ["task-1"], versions=[published["task-1"]])
        for task in running.values():  # an artifact added to each, still COMPLETED
            task.artifacts = [
                Artifact(name="note.txt", size=1, sha256="0" * 64, media_type="text/plain")
            ]
            assert await store.update_task(task)
        pending = [t.id for t in await store.outbox_pending("results")]
        assert pending == ["task-2"], (
            f"outbox_pending gave {pending} after a write of two tasks that were COMPLETED "
            "already (task-1's finish acknowledged, task-2's not): add outbox rows only "
            "when a task newly reaches a finished status, or its result is published twice"
        )
        await store.outbox_ack("results", ["task-2"], versions=[published["task-2"]])
        assert await store.outbox_pending("results") == [], (
            "acknowledging task-2 at the version outbox_pending gave did not remove it: a "
            "write after its finish that did not finish it again must not change which "
            "finish its outbox row stands for"
        )

    @_with_store
    async def test_bad_consumer_names_are_refused_before_anything_is_stored(
        self, store: Any
    ) -> None:
        """outbox_register refuses, with TypeError or ValueError and storing nothing,
        a name wfcore.stores.base.check_consumer_name refuses: not text, blank, with
        blanks around it or control characters, over 200 characters. Kept, a bad
        name (None, say) could fail every write that finishes a task."""
        for name in [None, 7, "", "   ", " results", "results\n", "a\x00b", "x" * 201]:
            try:
                await store.outbox_register(name)
            except (TypeError, ValueError):
                continue
            except Exception as exc:
                pytest.fail(
                    f"outbox_register({name!r:.30}) raised {type(exc).__name__}: {exc}: "
                    "refuse a bad consumer name with TypeError or ValueError, as "
                    "wfcore.stores.base.check_consumer_name(consumer) does",
                    pytrace=False,
                )
            pytest.fail(
                f"outbox_register({name!r:.30}) took the name: call "
                "wfcore.stores.base.check_consumer_name(consumer) before storing anything; "
                "it raises TypeError or ValueError for a name no consumer may have",
                pytrace=False,
            )
        if type(store).outbox_consumers is not Store.outbox_consumers:
            registered = await store.outbox_consumers()
            assert registered == {}, (
                f"outbox_consumers() gave {registered} after outbox_register refused every "
                "name it was given: a refused name is stored nowhere"
            )
        await store.outbox_register("results")
        await store.insert_task(_task(1))
        [task] = await store.claim("w", 1, 30)
        task.status = TaskStatus.COMPLETED
        assert await store.update_task(task), (
            "update_task refused the write that finished a task, after outbox_register "
            "had refused bad consumer names"
        )
        assert [t.id for t in await store.outbox_pending("results")] == ["task-1"]

    @_with_store
    async def test_outbox_consumers_counts_what_each_has_not_acknowledged(self, store: Any) -> None:
        """outbox_consumers gives every registered consumer, with how many finished
        tasks it has not acknowledged yet (``wfe outbox`` shows it). Optional:
        skipped for a store that keeps Store's (which raises StoreError)."""
        if type(store).outbox_consumers is Store.outbox_consumers:
            pytest.skip("the store keeps Store.outbox_consumers' default: it cannot list them")
        await store.outbox_register("a")
        await store.outbox_register("b")
        await store.insert_tasks([_task(n) for n in range(3)])
        for task in await store.claim("w", 3, 30):
            task.status = TaskStatus.COMPLETED
            assert await store.update_task(task)
            if task.id == "task-0":
                await store.outbox_ack("a", ["task-0"], versions=[task.version])
        await store.outbox_register("c")  # after the finishes: nothing recorded for it
        counts = await store.outbox_consumers()
        ours = {name: counts.get(name) for name in ("a", "b", "c")}
        assert ours == {"a": 2, "b": 3, "c": 0}, (
            f"outbox_consumers() gave {counts}: three tasks finished while 'a' and 'b' "
            "were registered, 'a' acknowledged one, and 'c' registered after; give each "
            "registered consumer with how many finished tasks it has not acknowledged"
        )

    @_with_store
    async def test_an_unregistered_consumer_is_forgotten(self, store: Any) -> None:
        """outbox_unregister stops recording finishes for a consumer and drops what it
        has not acknowledged, returning how many tasks that was (None for a consumer
        not registered); its rows no longer keep tasks from a purge (``wfe outbox
        --drop``). Optional: skipped for a store that keeps Store's (which raises
        StoreError)."""
        if type(store).outbox_unregister is Store.outbox_unregister:
            pytest.skip("the store keeps Store.outbox_unregister's default: it cannot")
        await store.outbox_register("a")
        await store.outbox_register("b")
        await store.insert_tasks([_task(0), _task(1)])
        finished: dict[str, int] = {}
        for task in await store.claim("w", 2, 30):
            task.status = TaskStatus.COMPLETED
            assert await store.update_task(task)
            finished[task.id] = task.version
        await store.outbox_ack("a", ["task-0"], versions=[finished["task-0"]])
        dropped = await store.outbox_unregister("a")
        assert dropped == 1, (
            f"outbox_unregister('a') returned {dropped!r}: 'a' had not acknowledged one "
            "finished task (task-1); return how many tasks the consumer had not "
            "acknowledged, and forget them"
        )
        again = await store.outbox_unregister("a")
        assert again is None, (
            f"outbox_unregister('a') a second time returned {again!r}: return None for a "
            "consumer that is not registered (any more); the first call forgets it"
        )
        never = await store.outbox_unregister("never-registered")
        assert never is None, f"outbox_unregister('never-registered') returned {never!r}, not None"
        left = [t.id for t in await store.outbox_pending("a")]
        assert left == [], f"outbox_pending('a') gave {left} after 'a' was unregistered"
        await store.insert_task(_task(2))
        [task] = await store.claim("w", 1, 30)
        task.status = TaskStatus.COMPLETED
        assert await store.update_task(task)
        finished[task.id] = task.version
        left = [t.id for t in await store.outbox_pending("a")]
        assert left == [], (
            f"outbox_pending('a') gave {left}: a task that finished after 'a' was "
            "unregistered was recorded for it; unregistering stops the recording"
        )
        if type(store).outbox_consumers is not Store.outbox_consumers:
            consumers = await store.outbox_consumers()
            assert "a" not in consumers and consumers.get("b") == 3, (
                f"outbox_consumers() gave {consumers} after 'a' was unregistered: 'b' "
                "alone, with the 3 tasks it has not acknowledged"
            )
        if type(store).delete_finished is not Store.delete_finished:
            await store.outbox_ack("b", list(finished), versions=list(finished.values()))
            purged = sorted(await store.delete_finished(time.time() + 60, [TaskStatus.COMPLETED]))
            assert purged == ["task-0", "task-1", "task-2"], (
                f"delete_finished deleted {purged} of three COMPLETED tasks whose results "
                "'b' acknowledged: an unregistered consumer's rows ('a' had not "
                "acknowledged task-1) must not keep tasks from a purge any more"
            )

    @_with_store
    async def test_purging_keeps_the_children_of_a_parent_not_finished(self, store: Any) -> None:
        """delete_finished and count_finished leave out the finished children of a
        parent that has not finished (it reads their results when its last child
        finishes); once the parent has finished, or is gone, they are purged."""
        can_delete = type(store).delete_finished is not Store.delete_finished
        can_count = type(store).count_finished is not Store.count_finished
        if not (can_delete or can_count):
            pytest.skip("the store keeps Store's delete_finished and count_finished (no purge)")
        await store.insert_tasks(
            [
                _task(0, status=TaskStatus.WAITING_IO, children=["task-1", "task-2"]),
                _task(1, parent_id="task-0"),
                _task(2, parent_id="task-0"),
                _task(3, parent_id="gone"),
            ]
        )
        claimed = {t.id: t for t in await store.claim("w", 3, 30)}
        for task_id in ("task-1", "task-3"):
            claimed[task_id].status = TaskStatus.COMPLETED
            assert await store.update_task(claimed[task_id])
        later, completed = time.time() + 60, [TaskStatus.COMPLETED]
        keep = (
            "a purge keeps a finished child (task-1) while its parent (task-0, waiting "
            "for its other child) has not finished: the parent reads every child's "
            "result when its last child finishes. A child whose parent is not stored "
            "(task-3) goes."
        )
        if can_count:
            count = await store.count_finished(later, completed)
            assert count == 1, f"count_finished gave {count}, not 1 (task-3): {keep}"
        if can_delete:
            deleted = sorted(await store.delete_finished(later, completed))
            assert deleted == ["task-3"], f"delete_finished deleted {deleted}: {keep}"
        parent = await store.get_task("task-0")
        parent.status = TaskStatus.COMPLETED
        assert await store.update_task(parent)
        if can_delete:
            deleted = sorted(await store.delete_finished(later, completed))
            assert deleted == ["task-0", "task-1"], (
                f"delete_finished deleted {deleted} once the parent task-0 had finished: "
                "['task-0', 'task-1'] (task-2 never finished)"
            )

    @_with_store
    async def test_purging_keeps_results_not_yet_published(self, store: Any) -> None:
        """delete_finished and count_finished leave out the tasks an outbox consumer has
        not acknowledged yet, and those of other statuses or changed later; with
        ``workflow_name``, those of other workflows; delete_finished deletes at most
        ``limit``."""
        can_delete = type(store).delete_finished is not Store.delete_finished
        can_count = type(store).count_finished is not Store.count_finished
        if not (can_delete or can_count):
            pytest.skip("the store keeps Store's delete_finished and count_finished (no purge)")
        await store.insert_task(_task(0))
        [early] = await store.claim("w", 1, 30)
        early.status = TaskStatus.COMPLETED  # before any consumer registered
        assert await store.update_task(early)
        await store.outbox_register("results")
        await store.insert_tasks([_task(1), _task(2), _task(3)])
        running = {t.id: t for t in await store.claim("w", 3, 30)}
        for task_id, status in [
            ("task-1", TaskStatus.COMPLETED),
            ("task-2", TaskStatus.COMPLETED),
            ("task-3", TaskStatus.FAILED),
        ]:
            running[task_id].status = status
            assert await store.update_task(running[task_id])
        await store.outbox_ack("results", ["task-1"], versions=[running["task-1"].version])
        later, long_ago = time.time() + 60, time.time() - 3600
        completed = [TaskStatus.COMPLETED]
        keep = (
            "a purge keeps each task whose result an outbox consumer has not acknowledged "
            "(task-2: its result would never be published), and those of other statuses "
            "(task-3) or changed after `before`"
        )
        if can_count:
            assert await store.count_finished(long_ago, completed) == 0, keep
            count = await store.count_finished(later, completed)
            assert count == 2, f"count_finished gave {count}, not 2 (task-0, task-1): {keep}"
        if can_delete:
            assert await store.delete_finished(long_ago, completed) == [], keep
            deleted = sorted(await store.delete_finished(later, completed))
            assert deleted == ["task-0", "task-1"], f"delete_finished deleted {deleted}: {keep}"
            assert await store.get_task("task-1") is None, (
                "get_task still finds a task delete_finished deleted"
            )
            assert (await store.get_task("task-2")) is not None, (
                f"task-2 is gone though delete_finished did not name it: {keep}"
            )
            assert (await store.get_task("task-3")) is not None, (
                f"task-3 is gone though delete_finished did not name it: {keep}"
            )
            await store.outbox_ack("results", ["task-2"], versions=[running["task-2"].version])
            deleted = await store.delete_finished(later, completed)
            assert deleted == ["task-2"], (
                f"delete_finished deleted {deleted} once 'results' acknowledged task-2, the "
                "only COMPLETED task left: ['task-2']"
            )
        # `wfe purge --workflow` and its batches: only that workflow's, `limit` at a time.
        await store.insert_tasks([_task(4, workflow_name="other"), _task(5), _task(6)])
        finished = {t.id: t for t in await store.claim("w", 3, 30)}
        for task in finished.values():
            task.status = TaskStatus.COMPLETED
            assert await store.update_task(task)
        await store.outbox_ack(
            "results", list(finished), versions=[t.version for t in finished.values()]
        )
        if can_count:
            count = await store.count_finished(later, completed, workflow_name="other")
            assert count == 1, (
                f"count_finished(workflow_name='other') gave {count}, not 1: count only the "
                "tasks of workflow_name when it is given"
            )
        if can_delete:
            deleted = await store.delete_finished(later, completed, workflow_name="other")
            assert deleted == ["task-4"], (
                f"delete_finished(workflow_name='other') deleted {deleted}, not ['task-4']: "
                "delete only the tasks of workflow_name when it is given (`wfe purge "
                "--workflow other` must not delete the other workflows' tasks)"
            )
            deleted = await store.delete_finished(later, completed, limit=1)
            assert len(deleted) == 1, (
                f"delete_finished(limit=1) deleted {deleted}: delete at most `limit` tasks "
                "(a purge goes in batches, so that it never holds the store for long)"
            )
            rest = await store.delete_finished(later, completed)
            assert sorted(deleted + rest) == ["task-5", "task-6"], (
                f"delete_finished deleted {deleted}, then {rest}, not task-5 and task-6"
            )

"""The store contract's tests: reading many."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from ..errors import StoreError
from ..model import Phase, Task, TaskStatus, WorkflowSpec
from ..stores.base import Store, phase_filter, summarized
from ._support import (
    _ContractBase,
    _task,
    _with_store,
)


def _lists_by_phase(store: Store) -> bool:
    """Whether the store's list_tasks and count_tasks take ``phase`` (optional)."""
    try:
        phase_filter(store, "p")
    except StoreError:
        return False
    return True


def _skip_without_phase_listing(store: Store) -> None:
    if not _lists_by_phase(store):
        pytest.skip(
            "listing by phase is optional, and this store's list_tasks or count_tasks "
            "takes no 'phase': the engine refuses such listings with a StoreError"
        )


class _ReadingMany(_ContractBase):
    @_with_store
    async def test_lists_and_counts(self, store: Any) -> None:
        """list_tasks filters, orders by creation and pages; the counts agree."""
        for name in ("a", "b"):
            await store.save_workflow(WorkflowSpec(name, [Phase("p"), Phase("q")]))
        for n in range(5):
            await store.insert_task(_task(n, workflow_name="a" if n < 3 else "b"))
        [task] = await store.claim("w", 1, 30)
        task.status, task.classification = TaskStatus.COMPLETED, "q"
        assert await store.update_task(task)

        newest_first = [t.id for t in await store.list_tasks()]
        assert newest_first == [f"task-{n}" for n in (4, 3, 2, 1, 0)], (
            f"list_tasks() gave {newest_first} for tasks inserted task-0 to task-4: "
            "without oldest_first, the last inserted comes first"
        )
        paged = [t.id for t in await store.list_tasks(oldest_first=True, limit=2, offset=1)]
        assert paged == ["task-1", "task-2"], (
            f"list_tasks(oldest_first=True, limit=2, offset=1) gave {paged} for tasks "
            "inserted task-0 to task-4: oldest first, skip `offset` tasks, then give at "
            "most `limit`"
        )
        pending = [t.id for t in await store.list_tasks(TaskStatus.PENDING, "a")]
        assert pending == ["task-2", "task-1"], (
            f"list_tasks(PENDING, 'a') gave {pending}: the pending tasks of workflow a, "
            "newest first (task-0 is completed, task-3 and task-4 are of b)"
        )
        either = [
            t.id for t in await store.list_tasks([TaskStatus.PENDING, TaskStatus.COMPLETED], "a")
        ]
        assert len(either) == 3, (
            f"list_tasks([PENDING, COMPLETED], 'a') gave {either}: a list of statuses "
            "lists the tasks in any of them"
        )
        counted = await store.count_tasks()
        assert counted == {TaskStatus.PENDING: 4, TaskStatus.COMPLETED: 1}, (
            f"count_tasks() gave {counted}, not 4 pending and 1 completed"
        )
        counted = await store.count_tasks("b")
        assert counted == {TaskStatus.PENDING: 2}, (
            f"count_tasks('b') gave {counted}, not the 2 pending tasks of workflow b: "
            "count only the named workflow's tasks (statuses with none left out)"
        )
        counted = await store.count_by_phase("a")
        assert counted == {"p": 2}, (
            f"count_by_phase('a') gave {counted}: the unfinished tasks of workflow a by "
            "classification, {'p': 2} (task-0, completed at q, is left out)"
        )
        by_workflow = await store.count_all_by_workflow()
        assert by_workflow == {
            "a": {TaskStatus.PENDING: 2, TaskStatus.COMPLETED: 1},
            "b": {TaskStatus.PENDING: 2},
        }, f"count_all_by_workflow() gave {by_workflow}: count_tasks of each workflow"
        by_phase = await store.count_all_by_phase()
        assert by_phase == {"a": {"p": 2}, "b": {"p": 2}}, (
            f"count_all_by_phase() gave {by_phase}: count_by_phase of each workflow"
        )

    @_with_store
    async def test_lists_and_counts_by_phase(self, store: Any) -> None:
        """list_tasks(phase=...) lists only the tasks at that phase (classification),
        with the other filters and in the same order; count_tasks(phase=...) counts
        them. A task not classified yet is at no phase. Optional: skipped for a
        store whose list_tasks and count_tasks take no phase."""
        _skip_without_phase_listing(store)
        for name in ("a", "b"):
            await store.save_workflow(WorkflowSpec(name, [Phase("p"), Phase("q")]))
        places = [("a", "p"), ("a", "q"), ("b", "p"), ("a", "p"), ("a", None), ("b", "q")]
        for n, (workflow, phase) in enumerate(places):
            await store.insert_task(_task(n, workflow_name=workflow, classification=phase))
        [task] = await store.claim("w", 1, 30)  # task-0, the oldest
        task.status = TaskStatus.COMPLETED
        assert await store.update_task(task)

        at_p = [t.id for t in await store.list_tasks(phase="p")]
        assert at_p == ["task-3", "task-2", "task-0"], (
            f"list_tasks(phase='p') gave {at_p}: only the tasks whose classification is "
            "'p', of every workflow, newest first"
        )
        listed = [t.id for t in await store.list_tasks(workflow_name="a", phase="p")]
        assert listed == ["task-3", "task-0"], f"list_tasks(workflow_name='a', phase='p'): {listed}"
        listed = [t.id for t in await store.list_tasks(TaskStatus.PENDING, "a", phase="p")]
        assert listed == ["task-3"], f"list_tasks(PENDING, 'a', phase='p') gave {listed}"
        listed = [
            t.id for t in await store.list_tasks(phase="p", oldest_first=True, limit=1, offset=1)
        ]
        assert listed == ["task-2"], f"list_tasks(phase='p', oldest_first, 1, 1) gave {listed}"
        summaries = [t.id for t in await store.list_task_summaries(workflow_name="a", phase="q")]
        assert summaries == ["task-1"], f"list_task_summaries(phase='q') gave {summaries}"
        assert await store.list_tasks(phase="r") == []
        counted = await store.count_tasks(phase="p")
        assert counted == {TaskStatus.PENDING: 2, TaskStatus.COMPLETED: 1}, (
            f"count_tasks(phase='p') gave {counted}: count the tasks at phase 'p' by status"
        )
        counted = await store.count_tasks("a", "p")
        assert counted == {TaskStatus.PENDING: 1, TaskStatus.COMPLETED: 1}, (
            f"count_tasks('a', 'p') gave {counted}: the tasks of workflow 'a' at phase 'p'"
        )
        assert await store.count_tasks("b", phase="r") == {}

    @_with_store
    async def test_notes_the_phase_of_a_task_claimed_without_one(self, store: Any) -> None:
        """note_phases stores the phase of the tasks in progress that the owner holds
        and that were stored without one, and changes nothing else of them, so that a
        running first phase is found by phase. Optional: skipped for a store that
        keeps the default (which does nothing)."""
        if type(store).note_phases is Store.note_phases:
            pytest.skip("the store keeps Store.note_phases' default: tasks show no phase")
        for n, phase in enumerate([None, None, "q"]):
            await store.insert_task(_task(n, classification=phase))
        claimed = {t.id: t for t in await store.claim("w", 3, 30)}
        await store.insert_task(_task(3, classification=None))  # pending, not held

        await store.note_phases("w", {"task-0": "p", "task-2": "p", "task-3": "p"})
        await store.note_phases("other", {"task-1": "p"})

        phases = {t.id: t.classification for t in await store.list_tasks()}
        assert phases == {"task-0": "p", "task-1": None, "task-2": "q", "task-3": None}, (
            f"after note_phases the tasks are at {phases}: only a task in progress that "
            "the owner holds and that has no phase takes the one noted"
        )
        if _lists_by_phase(store):
            assert [t.id for t in await store.list_tasks(phase="p")] == ["task-0"]
        assert await store.count_by_phase("w") == {"p": 1, "q": 1}
        stored = await store.get_task("task-0")
        assert stored is not None and stored.classification == "p"
        assert stored.version == claimed["task-0"].version, (
            "note_phases changed the task's version: the phase's own write must still apply"
        )
        assert stored.history == claimed["task-0"].history
        ended = claimed["task-0"]
        ended.classification = "q"
        ended.status = TaskStatus.PENDING
        assert await store.update_task(ended), "the phase's write after note_phases was refused"
        stored = await store.get_task("task-0")
        assert stored is not None and stored.classification == "q"

    @_with_store
    async def test_finds_the_ids_that_start_with_a_prefix(self, store: Any) -> None:
        """task_ids_starting_with gives the ids that start with a prefix, in code point
        order, at most ``limit`` of them."""
        for task_id in ["abc2", "ab", "abc\u00e9", "x-abc", "abc1", "abd", "abcZ"]:
            await store.insert_task(Task(id=task_id, workflow_name="w", classification="p"))
        found = await store.task_ids_starting_with("abc")
        assert found == ["abc1", "abc2", "abcZ", "abc\u00e9"], (
            f"task_ids_starting_with('abc') gave {found}: the ids that start with 'abc' "
            "(not 'x-abc', not 'ab'), sorted by code point"
        )
        assert await store.task_ids_starting_with("abc", limit=2) == ["abc1", "abc2"]
        assert await store.task_ids_starting_with("abc1") == ["abc1"]
        assert await store.task_ids_starting_with("abe") == []
        assert len(await store.task_ids_starting_with("", limit=5)) == 5

    @_with_store
    async def test_lists_go_by_insertion_whatever_the_ids(self, store: Any) -> None:
        """list_tasks orders by creation (insertion), never by id: ids need not sort by
        age (task-9 before task-10, or random ones)."""
        ids = ["task-9", "task-10", "b", "a"]
        for task_id in ids:
            await store.insert_task(Task(id=task_id, workflow_name="w", classification="p"))
        oldest_first = [t.id for t in await store.list_tasks(oldest_first=True)]
        assert oldest_first == ids, (
            f"list_tasks(oldest_first=True) gave {oldest_first} for tasks inserted as {ids}: "
            "order by when tasks were inserted, not by id"
        )
        newest_first = [t.id for t in await store.list_tasks()]
        assert newest_first == ids[::-1], (
            f"list_tasks() gave {newest_first} for tasks inserted as {ids}: the last "
            "inserted first, whatever the ids"
        )
        paged = [t.id for t in await store.list_tasks(limit=2, offset=1)]
        assert paged == ["b", "task-10"], (
            f"list_tasks(limit=2, offset=1) gave {paged} for tasks inserted as {ids}"
        )

    @_with_store
    async def test_lists_can_put_the_highest_priority_first(self, store: Any) -> None:
        """list_tasks(priority_first=True) orders by priority, highest first, and the
        tasks of one priority by insertion, as oldest_first says; then it pages."""
        for n, priority in enumerate([0, 5, 0, -2, 5]):
            await store.insert_task(_task(n, priority=priority))
        listed = [t.id for t in await store.list_tasks(priority_first=True, oldest_first=True)]
        assert listed == ["task-1", "task-4", "task-0", "task-2", "task-3"], (
            f"list_tasks(priority_first=True, oldest_first=True) gave {listed}: the highest "
            "priority first, each priority's tasks in the order they were inserted"
        )
        newest = [t.id for t in await store.list_tasks(priority_first=True, limit=3, offset=1)]
        assert newest == ["task-1", "task-2", "task-0"], (
            f"list_tasks(priority_first=True, limit=3, offset=1) gave {newest}: the highest "
            "priority first, each priority's tasks newest first, then skip 1 and give 3"
        )
        assert [t.id for t in await store.list_tasks()] == [f"task-{n}" for n in (4, 3, 2, 1, 0)]

    @_with_store
    async def test_summaries_list_the_same_tasks_without_their_big_fields(self, store: Any) -> None:
        """list_task_summaries lists what list_tasks lists, in the same order, each
        task as wfcore.stores.base.summarized makes it from the whole one."""
        outputs: list[Any] = [None, True, 7, 2.5, "short", "x" * 3000, {"a": [1]}, ["y" * 2000]]
        for n, output in enumerate(outputs):
            task = _task(n, context={"notes": "z" * 5000}, outputs={"p": output})
            task.output = output
            task.error = None if n % 2 else "E" * 3000
            task.history = [
                {"at": "2026-01-01T00:00:00+00:00", "event": f"e{i}"} for i in range(30)
            ]
            await store.insert_task(task)
        listings: list[dict[str, Any]] = [{}, {"oldest_first": True, "limit": 3, "offset": 2}]
        if _lists_by_phase(store):
            listings.append({"phase": "p"})
        for args in listings:
            whole = await store.list_tasks(**args)
            summaries = await store.list_task_summaries(**args)
            assert [t.id for t in summaries] == [t.id for t in whole], (
                f"list_task_summaries({args}) listed other tasks than list_tasks({args})"
            )
            for task, summary in zip(whole, summaries, strict=True):
                expected = summarized(task)
                for field in attrs.fields(Task):
                    got, want = getattr(summary, field.name), getattr(expected, field.name)
                    assert got == want and type(got) is type(want), (
                        f"list_task_summaries: {task.id}.{field.name} is {got!r:.80}, not "
                        f"{want!r:.80} as wfcore.stores.base.summarized makes it"
                    )

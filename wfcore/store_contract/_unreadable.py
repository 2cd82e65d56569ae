"""The store contract's tests: rows that cannot be read."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from ..model import Task, TaskStatus
from ..stores.base import UNREADABLE_ERROR, unreadable
from ._support import (
    _ContractBase,
    _task,
)

_DAMAGED = "a row the store cannot read must not make every read fail, nor stop a worker"


_READ_AS_STAND_IN = (
    "Read a row you cannot decode as the stand-in wfcore.stores.base."
    "unreadable_stand_in(task_id, reason, stored_text) builds (see wfcore.Store, 'A row "
    "that cannot be read')"
)


async def _unbroken(
    call: Callable[[], Awaitable[Any]], what: str, damaged: str, do: str = _READ_AS_STAND_IN
) -> Any:
    """``await call()``; fail saying what to ``do`` when it raises for a damaged row."""
    try:
        return await call()
    except Exception as exc:
        pytest.fail(
            f"{what} raised {type(exc).__name__}: {str(exc)[:200]} once damage_row had "
            f"damaged the stored {damaged}: {_DAMAGED}. {do}",
            pytrace=False,
        )


def _check_stand_in(task: Task | None, task_id: str, read_by: str, *, whole: bool = True) -> None:
    """Fail unless ``task`` is the stand-in of the damaged ``task_id`` (``whole``:
    not a summary, so with the stored text)."""
    if task is None:
        pytest.fail(
            f"{read_by} gave no {task_id} after damage_row damaged it: a row the store "
            "cannot read is still there, as the stand-in wfcore.stores.base."
            "unreadable_stand_in builds, so that people see it and repair it",
            pytrace=False,
        )
    if task.id != task_id or not unreadable(task):
        pytest.fail(
            f"{read_by} gave {task_id}, damaged by damage_row, as task {task.id!r} "
            f"{task.status.value}, error {task.error!r:.80}: not the stand-in "
            "wfcore.stores.base.unreadable_stand_in(task_id, reason, stored_text) builds "
            f"(FAILED, its error starting {UNREADABLE_ERROR!r}), which tells the engine "
            "never to run it or write it back. (Or damage_row did not damage the row.)",
            pytrace=False,
        )
    if whole:
        text = task.context.get("unreadable_doc")
        assert isinstance(text, str) and text, (
            f"the stand-in {read_by} gave for {task_id} has context['unreadable_doc'] "
            f"{text!r:.80}: pass the row's stored text as stored_text, for whoever repairs it"
        )


class _UnreadableRows(_ContractBase):
    def test_a_row_that_cannot_be_read_reads_as_a_stand_in(self, store_url: str) -> None:
        """A stored task the store cannot read (edited by hand, written by a broken
        tool) breaks no read: get_task, list_tasks, list_task_summaries and
        outbox_pending give the stand-in wfcore.stores.base.unreadable_stand_in
        builds for it, and the other tasks as ever. Optional: run for a test class
        with damage_row."""
        self._skip_unless_damageable()

        async def scenario(store: Any) -> None:
            await store.outbox_register("results")
            await store.insert_tasks([_task(n) for n in range(3)])
            running = {t.id: t for t in await store.claim("w", 3, 30)}
            for task_id in ("task-0", "task-1"):
                running[task_id].status = TaskStatus.COMPLETED
                assert await store.update_task(running[task_id])
            await asyncio.to_thread(self.damage_row, store_url, "task-1")
            damaged = "task-1"

            got = await _unbroken(lambda: store.get_task("task-1"), "get_task('task-1')", damaged)
            _check_stand_in(got, "task-1", "get_task")
            other = await _unbroken(lambda: store.get_task("task-0"), "get_task('task-0')", damaged)
            assert other is not None and (other.status, unreadable(other)) == (
                TaskStatus.COMPLETED,
                False,
            ), f"get_task('task-0') gave {other!r:.200} after damage_row damaged task-1 only"
            for method in ("list_tasks", "list_task_summaries"):
                listed = await _unbroken(getattr(store, method), f"{method}()", damaged)
                ids = sorted(t.id for t in listed)
                assert ids == ["task-0", "task-1", "task-2"], (
                    f"{method}() listed {ids} after damage_row damaged task-1: list every "
                    "task, one the store cannot read as its stand-in"
                )
                [stand_in] = [t for t in listed if t.id == "task-1"]
                _check_stand_in(stand_in, "task-1", method, whole=method == "list_tasks")
            published = await _unbroken(
                lambda: store.outbox_pending("results"), "outbox_pending('results')", damaged
            )
            ids = sorted(t.id for t in published)
            assert ids == ["task-0", "task-1"], (
                f"outbox_pending('results') gave {ids} after task-0 and task-1 finished and "
                "damage_row damaged task-1: give every task recorded for the consumer, one "
                "the store cannot read as its stand-in"
            )
            _check_stand_in(published[ids.index("task-1")], "task-1", "outbox_pending")

        self._on_store(store_url, scenario)

    def test_claim_never_hands_out_a_row_that_cannot_be_read(self, store_url: str) -> None:
        """claim never hands out a stored task it cannot read (it skips the row, or
        fails the task for good in place, keeping the stored text), and goes on
        handing out the others, also one at a time; a write at the version read
        before the damage stores nothing, or the task whole. Optional: run for a
        test class with damage_row."""
        self._skip_unless_damageable()

        async def scenario(store: Any) -> None:
            await store.insert_tasks([_task(n) for n in range(4)])
            before = await store.get_task("task-3")
            for task_id in ("task-0", "task-3"):
                await asyncio.to_thread(self.damage_row, store_url, task_id)
            damaged = "task-0 and task-3"
            wrote = await _unbroken(
                lambda: store.update_task(before),
                "update_task(task-3)",
                damaged,
                "Return False for a row whose version you cannot read (see wfcore.Store, 'A "
                "row that cannot be read')",
            )
            if wrote:
                # A store that still reads the version (a column of its own) may take
                # the write, which repairs the row.
                got = await store.get_task("task-3")
                assert got is not None and not unreadable(got), (
                    "update_task returned True for task-3, damaged by damage_row, at the "
                    f"version read before, but get_task then gave {got!r:.200}: return "
                    "False for a row whose version you cannot read, or store the task whole"
                )
            claimed: list[Task] = []
            for _ in range(4):  # one at a time: the damaged task-0 is first in line
                claimed += await _unbroken(
                    lambda: store.claim("w", 1, 30), "claim('w', 1, 30)", damaged
                )
            claimed += await _unbroken(lambda: store.claim("w", 10, 30), "claim", damaged)
            handed = [t.id for t in claimed]
            expected = ["task-1", "task-2"] + (["task-3"] if wrote else [])
            assert sorted(handed) == expected, (
                f"claims gave {handed} of task-0 to task-3, damage_row having damaged "
                f"task-0 and task-3{' (task-3 written whole again since)' if wrote else ''}: "
                f"expected {expected}. Never hand out a row you cannot read (skip it, or "
                "fail it for good in place, keeping its stored text), and let it take no "
                "place of the claim's limit from the tasks behind it, or a worker with "
                "room for one task never gets past it"
            )
            stored = await _unbroken(lambda: store.get_task("task-0"), "get_task", damaged)
            assert stored is not None and stored.status is TaskStatus.FAILED, (
                f"after the claims, get_task('task-0'), damaged, gave {stored!r:.200}: the "
                "stand-in (FAILED), or the task failed for good in place"
            )

        self._on_store(store_url, scenario)

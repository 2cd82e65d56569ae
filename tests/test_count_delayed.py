"""``Store.count_delayed``: how many pending tasks are not due yet, and when the first is."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone

import pytest
from core_util import db_path

from wfcore import ECSWorkflowEngine, MemoryStore, Phase, Task, TaskStatus
from wfcore.stores.base import Store
from wfcore.stores.sqlite import SQLiteStore


def _engine(make_engine) -> ECSWorkflowEngine:
    engine = make_engine(poll_interval=0.05)

    async def work(task: Task) -> None:
        task.output = "done"

    for name in ("main", "other"):
        engine.register_handler(name, work)
        engine.register_workflow(name, [Phase(name, assigned_to="functional")])
    return engine


def test_count_delayed_counts_pending_tasks_not_due_yet(make_engine, wfe_run):
    engine = _engine(make_engine)
    soon = datetime(2099, 12, 1, 8, 0, tzinfo=timezone.utc)
    later = soon + timedelta(days=30)

    async def scenario():
        store = await engine.get_store()
        before = await store.count_delayed()
        await engine.submit_task({}, "main", run_after=later)
        await engine.submit_task({}, "other", run_after=soon)
        await engine.submit_task({}, "main")  # due now
        waiting = await engine.submit_task({}, "main", run_after=later)
        cancelled = await engine.cancel(waiting.id)  # no longer pending
        return (
            before,
            await store.count_delayed(),
            await store.count_delayed(workflows=["main"]),
            await store.count_delayed(workflows=["nothing"]),
            await store.count_due(),
            cancelled.status,
        )

    before, every, main, nothing, due, cancelled = wfe_run(scenario())
    assert before == (0, None)
    assert cancelled is TaskStatus.CANCELLED
    count, first = every
    assert count == 2 and first is not None
    assert abs(first - soon) < timedelta(milliseconds=1) and first.tzinfo is not None
    count, first = main
    assert count == 1 and first is not None and abs(first - later) < timedelta(milliseconds=1)
    assert nothing == (0, None)
    assert due == 1


def test_the_default_count_delayed_reads_pending_tasks(wfe_run):
    """A store without its own count_delayed (a plugin's, say) gets the same answer."""
    store = MemoryStore()
    now = datetime.now(timezone.utc)
    tasks = [
        Task(workflow_name="w", run_after=now + timedelta(hours=2)),
        Task(workflow_name="w", run_after=now + timedelta(hours=1)),
        Task(workflow_name="x", run_after=now - timedelta(hours=1)),
        Task(workflow_name="x"),
        Task(workflow_name="x", run_after=now + timedelta(hours=3), status="cancelled"),
    ]

    async def scenario():
        await store.open()
        try:
            await store.insert_tasks(tasks)
            return (
                await Store.count_delayed(store),
                await Store.count_delayed(store, workflows=["x", "x"]),
                await store.count_delayed(),
            )
        finally:
            await store.close()

    default, only_x, own = wfe_run(scenario())
    assert default == (2, tasks[1].run_after)
    assert only_x == (0, None)
    assert own[0] == 2 and abs(own[1] - tasks[1].run_after) < timedelta(milliseconds=1)


def test_sqlite_count_delayed_reads_an_index_of_pending_tasks(wfe_store_url, wfe_run):
    """The first call makes the partial index; the queries name it (INDEXED BY),
    so SQLite either uses it or refuses the query: never a scan of the table."""
    store = SQLiteStore.from_url(wfe_store_url)

    async def scenario():
        await store.open()
        try:
            await store.insert_task(Task(run_after=datetime(2099, 1, 1, tzinfo=timezone.utc)))
            return await store.count_delayed(), await store.count_delayed(workflows=["w"])
        finally:
            await store.close()

    every, none_of_w = wfe_run(scenario())
    assert every == (1, datetime(2099, 1, 1, tzinfo=timezone.utc))
    assert none_of_w == (0, None)
    with sqlite3.connect(store.path) as conn:
        [(sql,)] = conn.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'tasks_pending_ready'"
        ).fetchall()
    assert "WHERE status = 'pending'" in sql


def test_a_store_this_process_may_only_read_counts_without_making_the_index(wfe_store_url, wfe_run):
    """wfe metrics, run by a scraper that may read the store but not write it, asks
    count_delayed first: it used to fail making the index."""
    import subprocess

    path = db_path(wfe_store_url)
    writer = SQLiteStore.from_url(wfe_store_url)

    async def fill() -> None:
        await writer.open()
        try:
            await writer.insert_task(Task(run_after=datetime(2099, 1, 1, tzinfo=timezone.utc)))
        finally:
            await writer.close()

    wfe_run(fill())
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot make the store file immutable: {done.stderr.strip()}")
    reader = SQLiteStore.from_url(wfe_store_url)
    reader.upgrade = False

    async def count() -> tuple[int, datetime | None]:
        await reader.open()
        try:
            return await reader.count_delayed()
        finally:
            await reader.close()

    try:
        assert wfe_run(count()) == (1, datetime(2099, 1, 1, tzinfo=timezone.utc))
    finally:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)

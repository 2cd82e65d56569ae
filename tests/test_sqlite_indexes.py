"""The SQLite store's reads stay cheap on a big store: what EXPLAIN QUERY PLAN says of
the statements the store itself runs, on a real file.

Without ANALYZE statistics (the store never gathers any) SQLite's planner picks
the same plan for a small table as for a large one, so a few tasks show what a
store of millions does: which index a read uses, and whether it sorts (``USE TEMP
B-TREE``) everything that matches to keep a page of it.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from wfcore import Phase, Task, TaskStatus, WorkflowSpec
from wfcore.stores.sqlite import APPLICATION_ID, SCHEMA_VERSION, SQLiteStore


class _Traced(SQLiteStore):
    """A SQLite store that records the statements its connections run, with their
    parameters written in (what sqlite3's trace callback gives)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.statements: list[str] = []

    def _connect(self) -> sqlite3.Connection:
        conn = super()._connect()
        conn.set_trace_callback(self.statements.append)
        return conn


async def _statement(store: _Traced, call: Callable[[], Awaitable[Any]], marker: str) -> str:
    """The one statement containing ``marker`` that ``call()`` ran."""
    store.statements.clear()
    await call()
    [found] = [s for s in store.statements if marker in s]
    return found


def _plan(path: Path, sql: str) -> list[tuple[int, int, str]]:
    """EXPLAIN QUERY PLAN of ``sql``: (node id, parent id, detail) for each line."""
    conn = sqlite3.connect(path)
    try:
        return [(row[0], row[1], row[3]) for row in conn.execute("EXPLAIN QUERY PLAN " + sql)]
    finally:
        conn.close()


def _details(plan: list[tuple[int, int, str]]) -> str:
    return " / ".join(detail for _, _, detail in plan)


def _task(n: int, workflow: str = "a", **fields: Any) -> Task:
    return Task(data={"n": n}, id=f"task-{n}", workflow_name=workflow, classification="p", **fields)


async def _finish(store: SQLiteStore, count: int) -> list[str]:
    """Claim ``count`` tasks and complete them one by one; their ids, in that order."""
    done = []
    for task in await store.claim("w", count, 30):
        task.status = TaskStatus.COMPLETED
        assert await store.update_task(task)
        done.append(task.id)
    return done


def test_an_outbox_poll_reads_its_consumers_rows_in_order(tmp_path, wfe_run) -> None:
    """outbox_pending walks the consumer's rows oldest first and stops at the limit:
    a Kafka backlog of millions costs a poll what the page costs."""
    path = tmp_path / "wfe.db"
    store = _Traced(path)

    async def scenario() -> tuple[list[str], list[str], str]:
        await store.open()
        try:
            await store.outbox_register("results")
            await store.outbox_register("other")
            await store.insert_tasks([_task(n) for n in range(6)])
            finished = await _finish(store, 6)
            page: list[Task] = []

            async def poll() -> None:
                page.extend(await store.outbox_pending("results", 4))

            sql = await _statement(store, poll, "FROM outbox JOIN tasks")
            return finished, [t.id for t in page], sql
        finally:
            await store.close()

    finished, page, sql = wfe_run(scenario())
    assert page == finished[:4]
    plan = _details(_plan(path, sql))
    assert "USING INDEX outbox_consumer_seq (consumer=?)" in plan, plan
    assert "USE TEMP B-TREE" not in plan, plan


def test_a_workflows_newest_tasks_are_read_without_sorting_the_workflow(tmp_path, wfe_run):
    """list_tasks(workflow_name=...) (wfe tasks -w, the dashboard's filter) reads the
    workflow's newest tasks from an index, in order, instead of sorting all of them."""
    path = tmp_path / "wfe.db"
    store = _Traced(path)

    async def scenario() -> tuple[list[str], str]:
        await store.open()
        try:
            await store.insert_tasks([_task(n, "a" if n % 2 else "b") for n in range(8)])
            await _finish(store, 3)  # statuses differ within the workflow
            page: list[Task] = []

            async def read() -> None:
                page.extend(await store.list_tasks(workflow_name="a", limit=3))

            sql = await _statement(store, read, "workflow_name = 'a'")
            return [t.id for t in page], sql
        finally:
            await store.close()

    page, sql = wfe_run(scenario())
    assert page == ["task-7", "task-5", "task-3"]
    plan = _details(_plan(path, sql))
    assert "INDEX tasks_workflow_rowid (workflow_name=?)" in plan, plan
    assert "USE TEMP B-TREE" not in plan, plan


def test_a_claim_seeks_each_priority_instead_of_reading_the_backlog(tmp_path, wfe_run):
    """A claim finds the priorities in use by seeking the index, then reads one range
    of ready tasks per priority: tasks of a higher priority that are not ready yet
    (delayed, or running) are never read, however many; nor, for a worker of some
    workflows, the tasks of the others."""
    path = tmp_path / "wfe.db"
    store = _Traced(path)
    later = datetime.now(timezone.utc) + timedelta(hours=1)

    async def scenario() -> tuple[list[str], list[str], list[str]]:
        await store.open()
        try:
            await store.insert_tasks(
                [_task(n, priority=9, run_after=later) for n in range(5)]
                + [_task(n, priority=n % 2) for n in range(5, 9)]
                + [_task(9, "b", priority=5)]
            )
            store.statements.clear()
            claimed = [t.id for t in await store.claim("w", 3, 30, workflows=["a"])]
            of_some = [s for s in store.statements if "FROM tasks INDEXED BY" in s]
            store.statements.clear()
            claimed += [t.id for t in await store.claim("w", 10, 30)]
            of_all = [s for s in store.statements if "FROM tasks INDEXED BY" in s]
            return claimed, of_some, of_all
        finally:
            await store.close()

    claimed, of_some, of_all = wfe_run(scenario())
    # Of workflow a: priority 1 (tasks 5 and 7), then the oldest of 0 (task 6); then
    # the rest (task 9 of workflow b, task 8), the delayed ones left.
    assert sorted(claimed[:3]) == ["task-5", "task-6", "task-7"]
    assert claimed[3:] == ["task-9", "task-8"]
    for statements, index in (
        (of_some, "tasks_ready_workflow_priority"),
        (of_all, "tasks_ready_priority"),
    ):
        assert statements, "the claim read no index"
        for sql in statements:
            plan = _details(_plan(path, sql))
            assert f"SEARCH tasks USING COVERING INDEX {index}" in plan, (sql, plan)
            assert "USE TEMP B-TREE" not in plan, (sql, plan)
            if "max(priority)" not in sql:
                assert "priority=?" in plan, (sql, plan)  # one priority's range


def test_a_list_sorts_rowids_not_tasks(tmp_path, wfe_run) -> None:
    """list_tasks picks the page's rowids, then reads those rows: a filter whose
    matches must be sorted (several statuses) sorts integers read from an index, not
    the matching tasks' documents (a few of 1 MB made a 50-row page take seconds)."""
    path = tmp_path / "wfe.db"
    store = _Traced(path)
    big = "x" * 100_000

    async def scenario() -> tuple[list[str], list[str], str]:
        await store.open()
        try:
            await store.insert_tasks([Task(data=big, id=f"big-{n}") for n in range(3)])
            await store.insert_tasks([_task(n) for n in range(6)])
            await _finish(store, 5)  # the three big ones and task-0, task-1
            page: list[Task] = []

            async def read() -> None:
                statuses = [TaskStatus.PENDING, TaskStatus.COMPLETED]
                page.extend(await store.list_tasks(statuses, limit=3, offset=1))

            sql = await _statement(store, read, "status IN ('pending', 'completed')")
            oldest = await store.list_tasks(TaskStatus.COMPLETED, limit=2, oldest_first=True)
            return [t.id for t in page], [t.id for t in oldest], sql
        finally:
            await store.close()

    page, oldest, sql = wfe_run(scenario())
    assert page == ["task-4", "task-3", "task-2"]
    assert oldest == ["big-0", "big-1"]
    plan = _plan(path, sql)
    details = _details(plan)
    assert "SEARCH tasks USING INTEGER PRIMARY KEY (rowid=?)" in details, details
    sorts = [(node, parent) for node, parent, detail in plan if "USE TEMP B-TREE" in detail]
    assert sorts, details  # two statuses: their rowids are merged by a sort...
    for node, parent in sorts:
        beside = [d for n, p, d in plan if p == parent and n != node]
        # ...of the index entries alone, in the subquery that picks the page.
        assert parent != 0 and any("COVERING INDEX tasks_status" in d for d in beside), details


def test_tasks_by_phase_are_counted_from_an_index_alone(tmp_path, wfe_run) -> None:
    """count_by_phase (metrics, the dashboard's workflow pages) reads the workflow's
    unfinished tasks' index entries, not its rows nor its finished tasks, also once
    ANALYZE has gathered statistics (with them, an index on the workflow alone made
    SQLite read every row of the workflow)."""
    path = tmp_path / "wfe.db"
    store = _Traced(path)

    async def scenario() -> tuple[dict[str, int], str]:
        await store.open()
        try:
            await store.insert_tasks([_task(n, "a" if n < 6 else "b") for n in range(9)])
            await _finish(store, 2)
            [waiting] = await store.claim("w", 1, 30)
            waiting.status, waiting.classification = TaskStatus.WAITING_HUMAN, "q"
            assert await store.update_task(waiting)
            counts: dict[str, int] = {}

            async def count() -> None:
                counts.update(await store.count_by_phase("a"))

            return counts, await _statement(store, count, "GROUP BY classification")
        finally:
            await store.close()

    counts, sql = wfe_run(scenario())
    assert counts == {"p": 3, "q": 1}
    for analyzed in (False, True):
        if analyzed:
            with sqlite3.connect(path) as conn:
                conn.execute("ANALYZE")
        plan = _details(_plan(path, sql))
        assert "USING COVERING INDEX tasks_workflow_phase (workflow_name=? AND status=?" in plan, (
            analyzed,
            plan,
        )


def test_every_workflow_is_counted_in_one_pass_of_an_index(tmp_path, wfe_run) -> None:
    """count_all_by_workflow and count_all_by_phase (metrics) read index entries only,
    the first without sorting, the second only those of unfinished tasks."""
    path = tmp_path / "wfe.db"
    store = _Traced(path)

    async def scenario() -> tuple[Any, ...]:
        await store.open()
        try:
            for name in ("a", "b"):
                await store.save_workflow(WorkflowSpec(name, [Phase("p")]))
            await store.insert_tasks([_task(n, "a" if n < 4 else "b") for n in range(6)])
            await store.insert_task(Task(data={}, id="unbound"))
            await _finish(store, 1)
            found: list[Any] = []

            async def by_workflow() -> None:
                found.append(await store.count_all_by_workflow())

            async def by_phase() -> None:
                found.append(await store.count_all_by_phase())

            statuses = await _statement(store, by_workflow, "GROUP BY workflow_name, status")
            phases = await _statement(store, by_phase, "GROUP BY workflow_name, classification")
            return *found, statuses, phases
        finally:
            await store.close()

    statuses, phases, statuses_sql, phases_sql = wfe_run(scenario())
    pending, completed = TaskStatus.PENDING, TaskStatus.COMPLETED
    assert statuses == {"a": {pending: 3, completed: 1}, "b": {pending: 2}, None: {pending: 1}}
    assert phases == {"a": {"p": 3}, "b": {"p": 2}}
    plan = _details(_plan(path, statuses_sql))
    assert "SCAN tasks USING COVERING INDEX tasks_workflow" in plan, plan
    assert "USE TEMP B-TREE" not in plan, plan
    plan = _details(_plan(path, phases_sql))
    assert "COVERING INDEX tasks_workflow_phase (workflow_name=? AND status=?" in plan, plan


def test_a_purge_dry_run_reads_only_the_tasks_old_enough(tmp_path, wfe_run) -> None:
    """count_finished (purge --dry-run) reads the index of finished tasks by time that
    the purge itself uses, made by the dry run if no purge has made it yet: a cron job
    counting what a month's age would delete reads no newer task."""
    path = tmp_path / "wfe.db"
    store = _Traced(path)
    finished = [TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED]

    async def scenario() -> tuple[int, int, str, str]:
        await store.open()
        try:
            await store.insert_tasks([_task(n, "a" if n % 2 else "b") for n in range(6)])
            await _finish(store, 4)
            counted: list[int] = []

            async def dry_run(**kwargs: Any) -> None:
                counted.append(await store.count_finished(time.time() + 60, finished, **kwargs))

            every = await _statement(store, dry_run, "SELECT count(*)")
            one = await _statement(store, lambda: dry_run(workflow_name="a"), "SELECT count(*)")
            return counted[0], counted[1], every, one
        finally:
            await store.close()

    every, of_a, every_sql, of_a_sql = wfe_run(scenario())
    assert (every, of_a) == (4, 2)
    for sql in (every_sql, of_a_sql):
        plan = _details(_plan(path, sql))
        assert "USING INDEX tasks_finished (updated_at<?)" in plan, plan


# The tables and indexes as schema 3 (wfcore before the indexes above) made them:
# written out, not built from the store's _SCHEMA, so that they stay what schema 3
# made when a later schema changes that.
_SCHEMA_3 = """
CREATE TABLE wfe_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE tasks (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    workflow_name TEXT,
    classification TEXT,
    ready_at REAL,
    lease_owner TEXT,
    lease_expires REAL,
    version INTEGER NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    doc TEXT NOT NULL,
    history TEXT
);
CREATE INDEX tasks_ready ON tasks (ready_at) WHERE ready_at IS NOT NULL;
CREATE INDEX tasks_status ON tasks (status);
CREATE INDEX tasks_workflow ON tasks (workflow_name, status);
CREATE INDEX tasks_owner ON tasks (lease_owner) WHERE lease_owner IS NOT NULL;
CREATE TABLE workflows (name TEXT PRIMARY KEY, doc TEXT NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE outbox_consumers (consumer TEXT PRIMARY KEY);
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY,
    consumer TEXT NOT NULL,
    task_id TEXT NOT NULL,
    version INTEGER,
    UNIQUE (consumer, task_id)
);
"""


def _indexes(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
        )
        return {name for (name,) in rows}
    finally:
        conn.close()


def test_a_schema_3_store_is_upgraded_in_place(tmp_path, wfe_run) -> None:
    """A store file laid out by schema 3 opens: it gets the indexes, keeps its tasks,
    workflows and outbox rows, and its reads use the indexes at once."""
    scratch, old = tmp_path / "scratch.db", tmp_path / "old.db"
    flow = WorkflowSpec("a", [Phase("p")])

    async def fill() -> list[str]:
        store = SQLiteStore(scratch)
        await store.open()
        try:
            await store.save_workflow(flow)
            await store.outbox_register("results")
            await store.insert_tasks([_task(n) for n in range(4)])
            return await _finish(store, 2)
        finally:
            await store.close()

    finished = wfe_run(fill())
    # The rows, copied into a file made with schema 3's statements.
    conn = sqlite3.connect(old, isolation_level=None)
    conn.executescript(_SCHEMA_3)
    conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executemany(
        "INSERT INTO wfe_meta (key, value) VALUES (?, ?)",
        [("application", "wfcore"), ("schema_version", "3"), ("artifacts_dir", "old.db-artifacts")],
    )
    conn.execute("ATTACH ? AS scratch", (str(scratch),))
    # Schema 3's tasks have no priority (schema 6): every other column, in order.
    columns = ", ".join(r[1] for r in conn.execute("PRAGMA main.table_info(tasks)"))
    conn.execute(f"INSERT INTO main.tasks SELECT {columns} FROM scratch.tasks")
    for table in ("workflows", "outbox_consumers", "outbox"):
        conn.execute(f"INSERT INTO main.{table} SELECT * FROM scratch.{table}")
    conn.execute("DETACH scratch")
    conn.close()
    new = {"outbox_consumer_seq", "tasks_workflow_rowid", "tasks_workflow_phase"}
    assert not new & _indexes(old)

    store = _Traced(old)

    async def reopen() -> tuple[Any, ...]:
        await store.open()
        try:
            pending = [t.id for t in await store.outbox_pending("results")]
            listed = [t.id for t in await store.list_tasks(workflow_name="a")]
            sql = await _statement(
                store, lambda: store.outbox_pending("results"), "FROM outbox JOIN tasks"
            )
            return pending, listed, await store.load_workflows(), sql
        finally:
            await store.close()

    pending, listed, workflows, sql = wfe_run(reopen())
    assert pending == finished
    assert listed == ["task-3", "task-2", "task-1", "task-0"]
    assert workflows == [flow]
    assert new <= _indexes(old)
    assert "tasks_workflow" not in _indexes(old)  # a prefix of tasks_workflow_phase
    # Claims go by priority, then ready time (schema 6): not by ready time alone.
    assert "tasks_ready_priority" in _indexes(old) and "tasks_ready" not in _indexes(old)
    assert "outbox_consumer_seq" in _details(_plan(old, sql))
    conn = sqlite3.connect(old)
    try:
        [(version,)] = conn.execute("SELECT value FROM wfe_meta WHERE key = 'schema_version'")
    finally:
        conn.close()
    assert version == str(SCHEMA_VERSION) == "6"

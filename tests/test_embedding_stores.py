"""The built-in stores used directly, as a program or a store plugin's author uses
them: a negative ``limit`` or ``offset`` means none, alike on both."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from wfcore import (
    ECSWorkflowEngine,
    MemoryStore,
    Phase,
    SQLiteStore,
    Store,
    StoreError,
    Task,
    TaskStatus,
)
from wfcore.testing import run_sync


@pytest.fixture(params=["sqlite", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "sqlite":
        return SQLiteStore(tmp_path / "wfe.db")
    return MemoryStore()


def test_a_negative_limit_takes_nothing(store: Store):
    """On SQLite a negative LIMIT is no limit: claim(limit=-1) leased every ready
    task to one owner, and delete_finished deleted every finished one."""

    async def scenario() -> None:
        await store.open()
        try:
            await store.outbox_register("results")
            for i in range(3):
                await store.insert_task(Task(data=i, workflow_name="w", id=f"ready-{i}"))
            done, _ = await store.insert_task(Task(data=0, workflow_name="w", id="done"))
            done.status = TaskStatus.COMPLETED  # finished by a write: the outbox has it
            assert await store.update_task(done)
            later = time.time() + 60

            assert await store.claim("me", -1, 30) == []
            assert await store.list_tasks(limit=-1) == []
            assert await store.outbox_pending("results", limit=-1) == []
            assert await store.delete_finished(later, [TaskStatus.COMPLETED], limit=-1) == []
            # A negative offset is no offset.
            newest = [t.id for t in await store.list_tasks(limit=2, offset=-5)]
            assert newest == ["done", "ready-2"]

            assert [t.id for t in await store.outbox_pending("results", limit=10)] == ["done"]
            counts = await store.count_tasks()
            assert counts == {TaskStatus.PENDING: 3, TaskStatus.COMPLETED: 1}
            # The ready tasks are still there for a claim that asks for them.
            assert len(await store.claim("me", 10, 30)) == 3
        finally:
            await store.close()

    run_sync(scenario())


def test_a_sqlite_path_with_options_in_it_is_refused(tmp_path: Path):
    """``SQLiteStore("/srv/wfe.db?durability=full")`` made a file of that name,
    whose ``url`` (which workers and ``wfe`` commands take) names ``/srv/wfe.db``:
    another store. No file is made."""
    with pytest.raises(StoreError, match="has a '\\?', which a sqlite:// URL reads as"):
        SQLiteStore(tmp_path / "jobs.db?durability=full")
    assert list(tmp_path.iterdir()) == []


def test_a_sqlite_url_with_a_hash_is_refused_not_cut_short(tmp_path: Path):
    """``sqlite:///srv/C#/wfe.db`` opened the file ``/srv/C``; so did the url of a
    store opened by a path with a '#' in it."""
    url = f"sqlite://{tmp_path}/C#/wfe.db"
    with pytest.raises(StoreError, match="has a '#', which would end the file's path there"):
        SQLiteStore.from_url(url)
    engine = ECSWorkflowEngine(store=url, load_plugins=False)
    with pytest.raises(StoreError, match="has a '#'"):
        run_sync(engine.get_task("x"))
    assert list(tmp_path.iterdir()) == []
    by_path = SQLiteStore(tmp_path / "odd #1.db")
    with pytest.raises(StoreError, match="opens only as SQLiteStore\\(path\\)"):
        SQLiteStore.from_url(by_path.url)


def test_a_sqlite_path_with_blanks_or_percent_signs_round_trips(tmp_path: Path):
    for name in ("a b.db", "a%20b.db"):
        store = SQLiteStore(tmp_path / name)
        assert SQLiteStore.from_url(store.url).path == store.path


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"path": ""}, StoreError, "SQLiteStore needs a database file's path"),
        ({"path": "x.db", "timeout": "5"}, TypeError, "timeout must be a number of seconds"),
        ({"path": "x.db", "timeout": None}, TypeError, "timeout must be a number of seconds"),
    ],
)
def test_sqlite_store_arguments_of_the_wrong_kind(
    kwargs: dict[str, Any], error: type[Exception], message: str
):
    with pytest.raises(error, match=message):
        SQLiteStore(**kwargs)


def test_a_task_row_copied_in_sql_under_a_new_id_is_a_task_of_its_own(tmp_path: Path):
    """A row copied with SQL (``INSERT ... SELECT 'copy', doc, ...``) keeps the
    original's id inside its document. The row's id is the task's: the copy runs
    once as itself, and the original is left as it was (before, each write of the
    copy went to the original's id or nowhere, and the copy was claimed and run
    again at every lease's end)."""
    db = tmp_path / "wfe.db"
    engine = ECSWorkflowEngine(
        store=f"sqlite://{db}", load_plugins=False, poll_interval=0.05, lease_seconds=1
    )
    runs: list[str] = []

    def handler(task: Task) -> None:
        runs.append(task.id)
        task.output = {"ran": task.id}

    engine.register_handler("p", handler)
    engine.register_workflow("w", [Phase("p", assigned_to="functional")])
    run_sync(engine.submit_task({"n": 1}, "w", task_id="original"))
    run_sync(engine.aclose())
    with sqlite3.connect(db) as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(tasks)")]
        rest = ", ".join(c for c in columns if c != "id")
        conn.execute(
            f"INSERT INTO tasks (id, {rest}) SELECT 'copy', {rest} FROM tasks WHERE id = ?",
            ("original",),
        )
    conn.close()

    async def scenario() -> dict[str, Any]:
        copy = await engine.get_task("copy")
        assert copy is not None and copy.id == "copy"
        await engine.run_until_idle()
        found = {}
        for task_id in ("original", "copy"):
            task = await engine.get_task(task_id)
            assert task is not None
            found[task_id] = (task.status, task.output)
        await engine.aclose()
        return found

    assert run_sync(scenario(), timeout=20) == {
        "original": (TaskStatus.COMPLETED, {"ran": "original"}),
        "copy": (TaskStatus.COMPLETED, {"ran": "copy"}),
    }
    assert sorted(runs) == ["copy", "original"]


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("attempts", "2", "attempts must be a whole number, 0 or more, not '2'"),
        ("priority", "5", "priority must be an integer from -1000 to 1000, not '5'"),
        ("context", [1], "context must be an object, not [1]"),
        ("classification", 5, "classification must be text or null, not 5"),
        ("resume_in_phase", "yes", "resume_in_phase must be true or false, not 'yes'"),
    ],
)
def test_a_task_document_edited_to_hold_a_field_of_the_wrong_kind_reads_as_damaged(
    tmp_path: Path, field: str, value: Any, why: str
):
    """Such a row read as a task that failed later, in a worker, with a Python
    error (``attempts`` of "2": "can only concatenate str"), and could be retried
    into the same failure; it is a row that cannot be read, saying which field."""
    db = tmp_path / "wfe.db"
    engine = ECSWorkflowEngine(store=f"sqlite://{db}", load_plugins=False, poll_interval=0.05)
    engine.register_handler("p", lambda task: None)
    engine.register_workflow("w", [Phase("p", assigned_to="functional")])
    run_sync(engine.submit_task({"n": 1}, "w", task_id="t1"))
    run_sync(engine.aclose())
    with sqlite3.connect(db) as conn:
        [(text,)] = conn.execute("SELECT doc FROM tasks WHERE id = 't1'").fetchall()
        doc = {**json.loads(text), field: value}
        conn.execute("UPDATE tasks SET doc = ? WHERE id = 't1'", (json.dumps(doc),))
    conn.close()

    async def scenario() -> Task | None:
        await engine.run_until_idle()
        task = await engine.get_task("t1")
        await engine.aclose()
        return task

    task = run_sync(scenario(), timeout=20)
    assert task is not None and task.status is TaskStatus.FAILED
    assert task.error is not None and f"not a valid task: {why}" in task.error
    assert json.loads(task.context["unreadable_doc"])[field] == value


def test_a_sqlite_store_used_unopened_or_closed_names_itself(tmp_path: Path):
    """An app that gave its engine a SQLiteStore and closed it was told only "the
    store is not open", not which one or what to do."""
    store = SQLiteStore(tmp_path / "jobs.db")
    engine = ECSWorkflowEngine(store=store, load_plugins=False)

    async def scenario() -> None:
        with pytest.raises(StoreError) as before:
            await store.get_task("x")
        assert str(before.value) == (
            f"the store {tmp_path / 'jobs.db'} is not open (never opened, or closed): "
            "await store.open() first"
        )
        assert await engine.get_task("x") is None  # the engine opens it
        await engine.aclose()  # and leaves it open: the app's to close
        assert await store.get_task("x") is None
        await store.close()
        with pytest.raises(StoreError, match=r"jobs\.db is not open \(never opened, or closed\)"):
            await engine.get_task("x")

    run_sync(scenario())


def test_a_sqlite_path_under_a_file_says_which_file_is_in_the_way(tmp_path: Path):
    """``sqlite:///srv/wfe.db/jobs.db`` (a store's file taken for a folder) said
    "File exists (/srv/wfe.db)", not what was wrong with it."""
    (tmp_path / "wfe.db").write_bytes(b"")
    for path in (tmp_path / "wfe.db" / "jobs.db", tmp_path / "wfe.db" / "a" / "jobs.db"):
        engine = ECSWorkflowEngine(store=f"sqlite://{path}", load_plugins=False)
        with pytest.raises(StoreError) as caught:
            run_sync(engine.get_store())
        assert (
            str(caught.value) == f"cannot use {path}: {tmp_path / 'wfe.db'} is a file, not a folder"
        )
    assert [p.name for p in tmp_path.iterdir()] == ["wfe.db"]


def test_a_stores_durability_is_taken_in_any_case_as_the_url_takes_it(tmp_path) -> None:
    assert SQLiteStore(tmp_path / "a.db", durability="FULL").durability == "full"
    assert SQLiteStore.from_url(f"sqlite://{tmp_path / 'b.db'}?durability=FULL").durability == (
        "full"
    )
    with pytest.raises(StoreError, match="durability must be 'normal' or 'full', not 'fast'"):
        SQLiteStore(tmp_path / "c.db", durability="fast")

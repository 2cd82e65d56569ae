"""Operating a SQLite store: backups and copies beside it, and its artifacts folder."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import sqlite3
from pathlib import Path

import pytest
from core_util import store_error_with_its_folder_gone

from wfcore import ECSWorkflowEngine, Phase, Task
from wfcore.stores.sqlite import SQLiteStore


def _engine(path: Path) -> ECSWorkflowEngine:
    engine = ECSWorkflowEngine(f"sqlite://{path}", load_plugins=False)

    async def report(task: Task) -> None:
        await engine.add_artifact_text(task, "report.txt", task.data)

    engine.register_handler("report", report)
    engine.register_workflow("w", [Phase("report", assigned_to="functional")])
    return engine


def _run_one(path: Path, text: str, wfe_run, task_id: str = "same-id") -> None:
    """A finished task with an artifact in the store at ``path``."""
    engine = _engine(path)

    async def scenario() -> None:
        await engine.submit_task(text, "w", task_id=task_id)
        await engine.run_until_idle()

    try:
        wfe_run(scenario())
    finally:
        wfe_run(engine.aclose())


def _reopen(path: Path, wfe_run) -> None:
    engine = _engine(path)
    wfe_run(engine.get_store())
    wfe_run(engine.aclose())


def _backup(live: Path, copy: Path, how: str) -> None:
    """What the README says to back up with: SQLite's backup, or VACUUM INTO."""
    source = sqlite3.connect(live)
    try:
        if how == "backup":
            target = sqlite3.connect(copy)
            source.backup(target)
            target.close()
        else:
            source.execute("VACUUM INTO ?", (str(copy),))
    finally:
        source.close()


def _purge_all(path: Path, wfe_run) -> tuple[int, Path]:
    engine = _engine(path)

    async def scenario() -> tuple[int, Path]:
        deleted = await engine.purge(0)
        return deleted, (await engine.get_store()).artifacts_dir

    try:
        return wfe_run(scenario())
    finally:
        wfe_run(engine.aclose())


def _read(path: Path, wfe_run, task_id: str = "same-id") -> bytes:
    engine = _engine(path)
    try:
        return wfe_run(engine.read_artifact(task_id, "report.txt"))
    finally:
        wfe_run(engine.aclose())


@pytest.mark.parametrize("how", ["backup", "vacuum"])
@pytest.mark.parametrize("marked", [False, True], ids=["live-not-reopened", "live-reopened"])
def test_a_backup_beside_the_live_store_never_deletes_its_artifact_files(
    tmp_path, wfe_run, caplog, how, marked
) -> None:
    """The copy records the live store's folder name; purging the copy deleted the
    files of the live store's tasks (the same ids) from that folder."""
    live, copy = tmp_path / "wfe.db", tmp_path / "wfe-backup.db"
    _run_one(live, "LIVE report", wfe_run)
    if marked:
        _reopen(live, wfe_run)  # a live store opened since it first made its folder
    _backup(live, copy, how)
    caplog.set_level(logging.WARNING, logger="wfcore")

    deleted, folder = _purge_all(copy, wfe_run)

    assert deleted == 1
    assert folder == tmp_path / "wfe-backup.db-artifacts"
    assert (tmp_path / "wfe.db-artifacts" / "same-id" / "report.txt").is_file()
    assert _read(live, wfe_run) == b"LIVE report"
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"{copy} is a copy of wfe.db beside it" in said[0], said


def test_a_backup_with_its_artifacts_copied_beside_it_reads_them(tmp_path, wfe_run) -> None:
    """The README's backup: the database, then its artifacts folder under the
    copy's own file name."""
    live, copy = tmp_path / "wfe.db", tmp_path / "wfe-backup.db"
    _run_one(live, "LIVE report", wfe_run)
    _backup(live, copy, "backup")
    shutil.copytree(tmp_path / "wfe.db-artifacts", tmp_path / "wfe-backup.db-artifacts")
    assert _read(copy, wfe_run) == b"LIVE report"
    assert _purge_all(copy, wfe_run) == (1, tmp_path / "wfe-backup.db-artifacts")
    assert not (tmp_path / "wfe-backup.db-artifacts" / "same-id").exists()
    assert _read(live, wfe_run) == b"LIVE report"


def test_a_store_renamed_keeps_its_folder_and_its_purges_clear_it(tmp_path, wfe_run) -> None:
    old, new = tmp_path / "wfe.db", tmp_path / "jobs.db"
    _run_one(old, "report", wfe_run)
    _reopen(old, wfe_run)
    old.rename(new)
    assert _read(new, wfe_run) == b"report"
    marker = json.loads((tmp_path / "wfe.db-artifacts" / ".wfcore-store").read_text())
    assert marker["database"] == "jobs.db"
    assert _purge_all(new, wfe_run) == (1, tmp_path / "wfe.db-artifacts")
    assert not (tmp_path / "wfe.db-artifacts" / "same-id").exists()


def test_a_backup_takes_the_folder_over_once_the_live_store_is_gone(tmp_path, wfe_run) -> None:
    live, copy = tmp_path / "wfe.db", tmp_path / "wfe-backup.db"
    _run_one(live, "LIVE report", wfe_run)
    _reopen(live, wfe_run)
    _backup(live, copy, "backup")
    live.unlink()
    assert _read(copy, wfe_run) == b"LIVE report"
    # Put back under the live store's name, it is the folder's owner again.
    copy.rename(live)
    assert _read(live, wfe_run) == b"LIVE report"


def test_a_store_made_before_the_marker_keeps_its_folder_and_gets_marked(tmp_path, wfe_run) -> None:
    path = tmp_path / "wfe.db"
    _run_one(path, "report", wfe_run)
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM wfe_meta WHERE key = 'store_id'")
    conn.commit()
    conn.close()
    (tmp_path / "wfe.db-artifacts" / ".wfcore-store").unlink(missing_ok=True)

    assert _read(path, wfe_run) == b"report"
    marker = json.loads((tmp_path / "wfe.db-artifacts" / ".wfcore-store").read_text())
    conn = sqlite3.connect(path)
    [(store_id,)] = conn.execute("SELECT value FROM wfe_meta WHERE key = 'store_id'")
    conn.close()
    assert marker == {"database": "wfe.db", "store_id": store_id}


def test_two_old_stores_sharing_a_folder_named_after_their_stem_keep_sharing_it(
    tmp_path, wfe_run
) -> None:
    """jobs.db and jobs.sqlite, made before each named its folder after its whole
    file name, both recorded jobs-artifacts: each still reads its files there."""
    prod, test = tmp_path / "jobs.db", tmp_path / "jobs.sqlite"
    _run_one(prod, "PROD report", wfe_run, task_id="prod-task")
    _run_one(test, "TEST report", wfe_run, task_id="test-task")
    for path in (prod, test):
        conn = sqlite3.connect(path)
        conn.execute("UPDATE wfe_meta SET value = 'jobs-artifacts' WHERE key = 'artifacts_dir'")
        conn.commit()
        conn.close()
    shared = tmp_path / "jobs-artifacts"
    shared.mkdir()
    for name, task_id in (("jobs.db", "prod-task"), ("jobs.sqlite", "test-task")):
        (tmp_path / f"{name}-artifacts" / task_id).rename(shared / task_id)

    for _ in range(2):  # each opened after the other marked the folder
        assert _read(prod, wfe_run, "prod-task") == b"PROD report"
        assert _read(test, wfe_run, "test-task") == b"TEST report"
    assert _purge_all(test, wfe_run) == (1, shared)
    assert not (shared / "test-task").exists()
    assert _read(prod, wfe_run, "prod-task") == b"PROD report"


def test_a_read_that_sqlite_cannot_do_is_a_store_error_naming_the_file(tmp_path, wfe_run) -> None:
    """A worker waits out a StoreError (a lock held too long, a file server away);
    sqlite3's own error ended it with a traceback."""
    folder = tmp_path / "store"
    # The folder goes away before the first read opens its connection.
    error = wfe_run(store_error_with_its_folder_gone(folder, lambda store: store.count_tasks()))
    assert str(folder / "wfe.db") in str(error)


def test_a_store_whose_file_cannot_be_opened_for_writing_refuses_writes(tmp_path, wfe_run) -> None:
    """The writer thread's connection failing to open failed the thread, and every
    write then waited for ever."""
    folder = tmp_path / "store"

    async def write(store: SQLiteStore) -> None:
        await asyncio.wait_for(store.outbox_register("results"), 30)

    # The folder goes away before the first write opens its connection.
    error = wfe_run(store_error_with_its_folder_gone(folder, write))
    assert str(folder / "wfe.db") in str(error)


def test_a_store_file_deleted_before_its_first_write_is_not_made_anew(tmp_path, wfe_run) -> None:
    from wfcore.errors import StoreError

    path = tmp_path / "odd name #1 %.db"

    async def scenario() -> None:
        store = SQLiteStore(path)
        await store.open()
        try:
            await store.count_tasks()  # a name URIs would mangle opens
            path.unlink()
            with pytest.raises(StoreError):
                await asyncio.wait_for(store.outbox_register("results"), 30)
        finally:
            await store.close()

    wfe_run(scenario())
    assert not path.exists()


def test_a_store_made_from_a_relative_path_opens_it_from_the_working_folder(
    tmp_path, wfe_run, monkeypatch
) -> None:
    """Its threads open the file by URI, which a relative path cannot be: every write
    waited for ever on a writer thread that had died."""
    monkeypatch.chdir(tmp_path)

    async def scenario() -> Task | None:
        store = SQLiteStore("jobs.db")
        await store.open()
        try:
            await asyncio.wait_for(store.insert_task(Task(id="t1", data=1)), 30)
            return await store.get_task("t1")
        finally:
            await store.close()

    assert wfe_run(scenario()).data == 1
    assert (tmp_path / "jobs.db").is_file()


def test_a_url_given_as_a_stores_path_is_refused_naming_from_url(tmp_path) -> None:
    from wfcore.errors import StoreError

    with pytest.raises(StoreError, match=r"takes a file's path, not a URL.*from_url"):
        SQLiteStore(f"sqlite://{tmp_path / 'x.db'}")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_write_right_after_the_file_is_deleted_or_replaced_is_refused(
    tmp_path, wfe_run, how
) -> None:
    """Reads look at the file once a second; a write acknowledged in that second
    went to a file nobody could open again."""
    from wfcore.stores.sqlite import StoreFileLostError

    path = tmp_path / "wfe.db"

    async def scenario() -> None:
        store = SQLiteStore(path)
        await store.open()
        try:
            await store.insert_task(Task(id="before", data=1))
            assert await store.get_task("before") is not None
            for name in ("wfe.db", "wfe.db-wal", "wfe.db-shm"):
                (tmp_path / name).unlink(missing_ok=True)
            if how == "replaced":
                other = SQLiteStore(path)
                await other.open()
                await other.close()
            with pytest.raises(StoreFileLostError, match=f"was {how}"):
                await store.insert_task(Task(id="after", data=2))
        finally:
            await store.close()

    wfe_run(scenario())
    saved = list(tmp_path.glob("wfe.db.saved-*"))
    assert len(saved) == 1  # what the process saw of the lost file, "before" in it
    conn = sqlite3.connect(saved[0])
    try:
        assert [r[0] for r in conn.execute("SELECT id FROM tasks")] == ["before"]
    finally:
        conn.close()

"""A SQLite store open in a process keeps its locks while the process opens other
stores: closing any descriptor of a file drops every POSIX lock the process holds
on it, SQLite's included. Without its shared lock on the database file, the next
process to close the store last takes the file for its own and deletes the WAL
that the first still writes to: what the first writes after that is seen by no
other process, and is lost or corrupts the file."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from wfcore import ECSWorkflowEngine, InvalidTaskError, Phase, SQLiteStore, Task, TaskStatus
from wfcore.testing import run_sync

# Another process opens the store, counts its tasks, closes it (last, since the
# test's own process holds no lock once its locks were dropped).
_COUNT = """
import asyncio, sys
from wfcore import SQLiteStore

async def main():
    store = SQLiteStore(sys.argv[1])
    await store.open()
    try:
        print(sum((await store.count_tasks()).values()))
    finally:
        await store.close()

asyncio.run(main())
"""


def _count_elsewhere(db: Path) -> int:
    done = subprocess.run(
        [sys.executable, "-c", _COUNT, str(db)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


@pytest.mark.parametrize("other", ["the same file", "a copy beside it"])
def test_opening_another_store_keeps_the_locks_of_one_open(tmp_path: Path, other: str):
    db = tmp_path / "wfe.db"
    run_sync(_make(db))
    copy = tmp_path / "copy.db"
    # A copy records the original's artifacts folder: opening it looks at the
    # file that folder's marker names, the original.
    shutil.copy(db, copy)
    second_path = db if other == "the same file" else copy

    async def scenario() -> None:
        store = SQLiteStore(db)
        await store.open()
        try:
            await store.insert_task(Task(data={"n": 1}, workflow_name="w"))
            second = SQLiteStore(second_path)
            await second.open()
            await second.close()
            assert _count_elsewhere(db) == 1
            await store.insert_task(Task(data={"n": 2}, workflow_name="w"))
            # Written while the store is open: another process sees it at once.
            assert _count_elsewhere(db) == 2
        finally:
            await store.close()

    run_sync(scenario())
    assert _count_elsewhere(db) == 2


def _engine(db: Path) -> ECSWorkflowEngine:
    """An engine on the store ``db`` with workflow "w", whose tasks wait for a person."""
    engine = ECSWorkflowEngine(store=f"sqlite://{db}", load_plugins=False)
    engine.register_workflow("w", [Phase("ask", assigned_to="human")])
    return engine


async def _make(db: Path) -> None:
    store = SQLiteStore(db)
    await store.open()
    await store.close()


def test_stores_opening_at_once_in_one_process_keep_their_locks(tmp_path: Path):
    """Two engines on one new store, opened at once (an app's engine and its
    dashboard's): one read the file's header while the other had it open."""

    async def scenario(db: Path) -> None:
        first, second = _engine(db), _engine(db)
        try:
            await asyncio.gather(first.get_store(), second.get_store())
            assert _count_elsewhere(db) == 0
            await first.submit_task({"n": 1}, "w")
            assert _count_elsewhere(db) == 1
        finally:
            await first.aclose()
            await second.aclose()

    # The race was lost in one open of three or so: five new stores.
    for attempt in range(5):
        run_sync(scenario(tmp_path / f"store{attempt}" / "wfe.db"))


def test_a_hard_link_to_the_store_in_out_is_skipped(tmp_path: Path):
    db = tmp_path / "wfe.db"
    link = "import os, sys; os.link(sys.argv[1], 'out/snapshot.db')"
    engine = _engine(db)
    engine.register_workflow("snap", [Phase("snap", command=[sys.executable, "-c", link, str(db)])])

    async def scenario() -> Task:
        try:
            task = await engine.submit_task({}, "snap")
            await engine.run_until_idle()
            assert _count_elsewhere(db) == 1
            await engine.submit_task({"n": 2}, "w")
            assert _count_elsewhere(db) == 2  # this process's write, seen at once
            done = await engine.get_task(task.id)
            assert done is not None
            return done
        finally:
            await engine.aclose()

    task = run_sync(scenario())
    assert task.status is TaskStatus.COMPLETED, task.error
    assert task.artifacts == []
    [skipped] = [e for e in task.history if e["event"] == "artifacts_skipped"]
    assert skipped["files"] == {"out/snapshot.db": "the store's database file, open in this worker"}


def test_the_live_store_is_refused_as_a_submitted_file(tmp_path: Path):
    db = tmp_path / "wfe.db"

    async def scenario() -> None:
        engine = _engine(db)
        try:
            await engine.submit_task({"n": 1}, "w")
            with pytest.raises(InvalidTaskError) as refused:
                await engine.submit_task({"n": 2}, "w", artifacts={"db": db})
            assert str(refused.value) == (
                f"artifacts: artifact 'db': {str(db)!r} is the database of a store open "
                "in this process: submit a backup of it instead"
            )
            await engine.submit_task({"n": 3}, "w")
            assert _count_elsewhere(db) == 2
        finally:
            await engine.aclose()

    run_sync(scenario())


def test_one_store_opened_by_two_engines_at_once_opens_once(tmp_path: Path):
    """Both opens went through: two writer threads and two kept connections, one
    of each never closed."""
    store = SQLiteStore(tmp_path / "wfe.db")
    first = ECSWorkflowEngine(store=store, load_plugins=False)
    second = ECSWorkflowEngine(store=store, load_plugins=False)

    def writers() -> int:
        return sum(t.name == "wfcore-sqlite-writer" for t in threading.enumerate())

    async def scenario() -> None:
        before = writers()
        await asyncio.gather(first.get_store(), second.get_store())
        assert writers() == before + 1
        await store.close()
        assert writers() == before

    run_sync(scenario())

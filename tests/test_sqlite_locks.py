"""A SQLite store open in a process keeps its locks while the process opens other
stores: closing any descriptor of a file drops every POSIX lock the process holds
on it, SQLite's included. Without its shared lock on the database file, the next
process to close the store last takes the file for its own and deletes the WAL
that the first still writes to: what the first writes after that is seen by no
other process, and is lost or corrupts the file."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from wfcore import SQLiteStore, Task
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


async def _make(db: Path) -> None:
    store = SQLiteStore(db)
    await store.open()
    await store.close()

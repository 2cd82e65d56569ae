"""A damaged SQLite store file: every command says so in one line, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from core_util import damage_tasks_table, submit_with_app


def test_commands_on_a_damaged_store_say_so_in_one_line(wfe, tmp_path: Path) -> None:
    submit_with_app("split_app:engine", "left", [None] * 3, env=wfe.env, cwd=tmp_path)
    damage_tasks_table(tmp_path / "wfe.db")
    for command in (
        ["tasks"],
        ["status"],
        ["metrics"],
        ["purge", "--older-than", "0s", "--dry-run"],
    ):
        result = wfe(*command, check=False)
        assert result.returncode == 1, (command, result.stderr)
        assert "Traceback" not in result.stderr
        db = tmp_path / "wfe.db"
        # purge --dry-run may first make its index: a write.
        doing = "write to" if command[0] == "purge" else "read"
        assert result.stderr == (
            f"Error: cannot {doing} {db}: database disk image is malformed (the file is"
            f" damaged: check it with sqlite3 {db} 'PRAGMA integrity_check' and restore it"
            " from a backup)\n"
        ), command


def test_a_damaged_store_is_a_store_error_naming_the_file(tmp_path: Path, wfe_run) -> None:
    """A StoreError, which a worker waits out and /healthz reports; sqlite3's own
    DatabaseError went up raw, and a worker's health said ok."""
    from wfcore import StoreError, Task
    from wfcore.stores.sqlite import SQLiteStore

    db = tmp_path / "wfe.db"

    async def fill() -> None:
        store = SQLiteStore(db)
        await store.open()
        await store.insert_tasks([Task(data=i) for i in range(3)])
        await store.close()

    wfe_run(fill())
    damage_tasks_table(db)

    async def read() -> None:
        store = SQLiteStore(db)
        store.upgrade = False
        await store.open()
        try:
            with pytest.raises(StoreError, match=r"malformed \(the file is damaged: check it"):
                await store.count_tasks()
            with pytest.raises(StoreError, match=f"cannot write to {db}: .*malformed"):
                await store.insert_task(Task(data=4))
        finally:
            await store.close()

    wfe_run(read())

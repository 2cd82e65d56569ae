"""A damaged SQLite store file: every command says so in one line, never a traceback."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def _damage_tasks_table(db: Path) -> None:
    """Overwrite the first page of the tasks table and of each of its indexes, as a
    stale ``-wal`` file replayed onto a restored copy can: the schema still reads,
    the tasks do not."""
    with sqlite3.connect(db) as conn:
        roots = conn.execute(
            "SELECT rootpage FROM sqlite_master WHERE tbl_name = 'tasks' AND rootpage > 0"
        ).fetchall()
        (size,) = conn.execute("PRAGMA page_size").fetchone()
    conn.close()
    with db.open("r+b") as file:
        for (root,) in roots:
            file.seek((root - 1) * size)
            file.write(b"\xff" * size)


def test_commands_on_a_damaged_store_say_so_in_one_line(wfe, tmp_path: Path) -> None:
    for _ in range(3):
        wfe("submit", "left", "--app", "split_app:engine")
    _damage_tasks_table(tmp_path / "wfe.db")
    for command in (
        ["tasks"],
        ["status"],
        ["metrics"],
        ["purge", "--older-than", "0s", "--dry-run"],
    ):
        result = wfe(*command, check=False)
        assert result.returncode == 1, (command, result.stderr)
        assert "Traceback" not in result.stderr
        assert result.stderr == (
            "Error: the store's database failed: database disk image is malformed (the file"
            " is damaged: check it with sqlite3 FILE 'PRAGMA integrity_check' and restore it"
            " from a backup)\n"
        ), command

"""A failing ``wfe submit`` that made a new store removes it again (a mistyped
--store must not look right to later commands), but never once another process
has stored something in it or has it open: their tasks and their store stay."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from wfcore import ECSWorkflowEngine


@pytest.mark.parametrize("meanwhile", ["stored", "open", "opened"])
def test_a_failed_submit_leaves_a_store_another_process_uses(
    wfe, tmp_path: Path, meanwhile: str
) -> None:
    db = tmp_path / "new" / "wfe.db"
    env = {**wfe.env, "WFE_MEANWHILE": meanwhile}
    refused = wfe(
        "submit",
        "nosuch",
        "--app",
        "meanwhile_app:engine",
        "--store",
        f"sqlite://{db}",
        check=False,
        env=env,
    )
    assert refused.returncode == 2
    assert "Error: unknown workflow 'nosuch'" in refused.stderr
    assert "none was left there" not in refused.stderr
    assert f"wfe: created a new store at {db}" in refused.stderr
    assert db.exists()
    assert (asyncio.run(_stored(db, "kept-1")) is not None) == (meanwhile == "stored")
    # The store is as the other process keeps it: in WAL mode.
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_a_failed_submit_removes_the_store_it_made_when_nobody_uses_it(wfe, tmp_path: Path) -> None:
    db = tmp_path / "typo" / "wfe.db"
    refused = wfe("submit", "nosuch", "--store", f"sqlite://{db}", check=False)
    assert refused.returncode == 2
    assert f"wfe: there is no store at {db}; none was left there" in refused.stderr
    assert not (tmp_path / "typo").exists()


async def _stored(db: Path, task_id: str) -> object:
    engine = ECSWorkflowEngine(store=f"sqlite://{db}", load_plugins=False)
    try:
        return await engine.get_task(task_id)
    finally:
        await engine.aclose()

"""A command phase gets the task's artifacts from the store's own artifact folder: a
store restored in another folder (or a copy of it) gives its commands its files, as
read_artifact does, not those at the paths where they were first written."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from wfcore import ECSWorkflowEngine, Phase, Task, TaskStatus


def _engine(factory, path: Path) -> ECSWorkflowEngine:
    engine = factory(store=f"sqlite://{path}")

    async def make(task: Task) -> None:
        await engine.add_artifact_text(task, "notes/x.txt", "written in the first folder")

    engine.register_handler("make", make)
    engine.register_workflow(
        "w",
        [
            Phase("make", assigned_to="functional"),
            Phase("ask", assigned_to="human"),
            Phase("use", command=["cat", "artifacts/notes/x.txt"]),
        ],
    )
    return engine


def _copy_store(source: Path, target: Path) -> None:
    """As the README's backup says: SQLite's backup, then the artifact folder."""
    target.parent.mkdir()
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    src.close()
    dst.close()
    shutil.copytree(f"{source}-artifacts", f"{target}-artifacts")


def _restored_elsewhere(wfe_engine_factory, wfe_run, tmp_path: Path) -> Path:
    """Task t1 run to its human phase on a store in first/, which is then restored
    to restored/ and lost (the old machine's disk is gone); the restored file."""
    first = tmp_path / "first" / "wfe.db"
    first.parent.mkdir()
    engine = _engine(wfe_engine_factory, first)

    async def start() -> None:
        await engine.submit_task({}, "w", task_id="t1")
        await engine.run_until_idle()
        await engine.aclose()

    wfe_run(start())
    restored = tmp_path / "restored" / "wfe.db"
    _copy_store(first, restored)
    shutil.rmtree(first.parent)
    return restored


def test_a_store_restored_elsewhere_gives_commands_its_artifacts(
    wfe_engine_factory, wfe_run, tmp_path
):
    restored = _restored_elsewhere(wfe_engine_factory, wfe_run, tmp_path)

    engine = _engine(wfe_engine_factory, restored)

    async def carry_on() -> Task:
        await engine.resume("t1", {"ok": True})
        await engine.run_until_idle()
        task = await engine.get_task("t1")
        assert task is not None
        return task

    task = wfe_run(carry_on())
    assert task.status is TaskStatus.COMPLETED, task.error
    assert task.output == "written in the first folder"


def test_an_artifact_without_its_file_fails_the_attempt_naming_it(
    wfe_engine_factory, wfe_run, tmp_path
):
    engine = _engine(wfe_engine_factory, tmp_path / "wfe.db")

    async def scenario() -> Task:
        await engine.submit_task({}, "w", task_id="t1")
        await engine.run_until_idle()
        (tmp_path / "wfe.db-artifacts" / "t1" / "notes" / "x.txt").unlink()
        await engine.resume("t1", {"ok": True})
        await engine.run_until_idle()
        task = await engine.get_task("t1")
        assert task is not None
        return task

    task = wfe_run(scenario())
    assert task.status is TaskStatus.FAILED
    assert task.error == (
        "ArtifactError: cannot give the command the task's artifacts: task 't1' lists the "
        f"artifact 'notes/x.txt', but its file is not in {tmp_path / 'wfe.db-artifacts' / 't1'}"
        ": it was deleted or moved after the task stored it (a store copied or restored "
        "without its artifacts folder, say)"
    )


def test_wfe_show_names_an_artifacts_file_where_the_restored_store_keeps_it(
    wfe_engine_factory, wfe_run, tmp_path
):
    import os
    import subprocess
    import sys

    restored = _restored_elsewhere(wfe_engine_factory, wfe_run, tmp_path)
    shown = subprocess.run(
        [sys.executable, "-m", "wfcore.cli", "show", "t1", "--store", f"sqlite://{restored}"],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, WFE_LOAD_PLUGINS=""),
    )
    assert shown.returncode == 0, shown.stderr
    [line] = [line for line in shown.stdout.splitlines() if line.startswith("artifact  ")]
    where = tmp_path / "restored" / "wfe.db-artifacts" / "t1" / "notes" / "x.txt"
    assert line == f"artifact  notes/x.txt (27 bytes, text/plain) {where}"
    assert where.read_text() == "written in the first folder"

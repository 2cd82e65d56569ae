"""A purge killed (SIGKILL) between deleting a batch of tasks and removing their
artifact folders leaves its mark, and the next purge removes the folders no task
owns that nothing changed in since: not those of submissions going on."""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import wfcore._purged
from wfcore import ECSWorkflowEngine, Phase, Task

# A purge that dies as soon as a batch of tasks is deleted from the store.
_KILLED_PURGE = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from wfcore import ECSWorkflowEngine, SQLiteStore

    deleting = SQLiteStore.delete_finished

    async def killed(self, *args, **kwargs):
        await deleting(self, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)

    SQLiteStore.delete_finished = killed

    async def main():
        engine = ECSWorkflowEngine(sys.argv[1], load_plugins=False)
        await engine.purge(0)

    asyncio.run(main())
    """
)


def _engine(url: str) -> ECSWorkflowEngine:
    engine = ECSWorkflowEngine(url, load_plugins=False)

    async def report(task: Task) -> None:
        await engine.add_artifact_text(task, "report.txt", f"report of {task.id}")

    engine.register_handler("report", report)
    engine.register_workflow("w", [Phase("report", assigned_to="functional")])
    return engine


def test_the_next_purge_removes_the_folders_a_killed_purge_left(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'wfe.db'}"
    ids = [f"order-{n}" for n in range(3)]

    async def run_tasks() -> Path:
        engine = _engine(url)
        for task_id in ids:
            await engine.submit_task({}, "w", task_id=task_id)
        await engine.run_until_idle()
        root = (await engine.get_store()).artifacts_dir
        await engine.aclose()
        return root

    root = asyncio.run(run_tasks())
    assert all((root / task_id / "report.txt").is_file() for task_id in ids)

    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_PURGE, url], capture_output=True, text=True, timeout=60
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    # A submission going on since: its files are written before its task is stored.
    (root / "order-new").mkdir()
    (root / "order-new" / ".tmp-scan.pdf").write_bytes(b"being written")

    async def purge_again() -> tuple[list[Task | None], int]:
        engine = _engine(url)
        gone = [await engine.get_task(task_id) for task_id in ids]
        left = [task_id for task_id in ids if (root / task_id).exists()]
        assert left == ids  # the tasks are deleted, their folders still there
        deleted = await engine.purge(0)
        await engine.aclose()
        return gone, deleted

    gone, deleted = asyncio.run(purge_again())
    assert gone == [None, None, None] and deleted == 0
    folders = sorted(p.name for p in root.iterdir() if not p.name.startswith(".wfcore-store"))
    assert folders == ["order-new"]
    assert list(root.glob(".wfcore-store-purging-*")) == []


def test_a_purge_that_cannot_mark_its_folder_still_purges(
    tmp_path: Path, monkeypatch, caplog
) -> None:
    """On a full disk, which purging is often meant to relieve."""
    url = f"sqlite://{tmp_path / 'wfe.db'}"

    def full(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    async def scenario() -> tuple[int, Path]:
        engine = _engine(url)
        await engine.submit_task({}, "w", task_id="order-1")
        await engine.run_until_idle()
        monkeypatch.setattr(wfcore._purged.os, "replace", full)
        deleted = await engine.purge(0)
        root = (await engine.get_store()).artifacts_dir
        await engine.aclose()
        return deleted, root

    with caplog.at_level(logging.WARNING, logger="wfcore"):
        deleted, root = asyncio.run(scenario())
    assert deleted == 1 and not (root / "order-1").exists()
    assert [p.name for p in root.iterdir() if p.name.startswith(".wfcore-store-")] == []
    assert "cannot mark" in caplog.text and "No space left on device" in caplog.text

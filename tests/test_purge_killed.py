"""A purge killed (SIGKILL) between deleting a batch of tasks and removing their
artifact folders leaves a journal naming them, and the next purge removes those
folders, which no task owns any more."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from wfcore import ECSWorkflowEngine, Phase, Task

# A purge that dies just as it would remove the folders of the tasks it deleted.
_KILLED_PURGE = textwrap.dedent(
    """
    import asyncio, os, shutil, signal, sys
    from wfcore import ECSWorkflowEngine

    def killed(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    shutil.rmtree = killed

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
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".wfcore-store")) == []
    assert list(root.glob(".wfcore-store-purged-*")) == []

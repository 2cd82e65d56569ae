"""A task folder without a task, which a submission killed while it stored the
task's files leaves, keeps a new submission of that id from storing its files in
it: refused at once, naming the folder, when nothing in it changed for a minute."""

from __future__ import annotations

import os
import time

import pytest

from wfcore import Phase, StoreError


def test_a_folder_a_killed_submission_left_is_named_at_once(make_engine, wfe_run) -> None:
    engine = make_engine()
    engine.register_workflow("w", [Phase("p", assigned_to="human")])

    async def scenario() -> None:
        root = (await engine.get_store()).artifacts_dir
        folder = root / "order-7"
        folder.mkdir(parents=True)
        (folder / ".tmp-scan.pdf").write_bytes(b"half a file")
        long_ago = time.time() - 600
        for path in (folder / ".tmp-scan.pdf", folder):
            os.utime(path, (long_ago, long_ago))

        with pytest.raises(StoreError) as refused:
            await engine.submit_task({}, "w", task_id="order-7", artifacts={"scan.pdf": b"%PDF"})
        said = str(refused.value)
        assert said.startswith(
            "task 'order-7': its artifact folder exists but no such task is stored "
            "(nothing in it changed for 6"
        )
        assert said.endswith(
            " s: left by a submission of this id that failed (its process killed, say), "
            "or by a purge killed while it deleted the task); "
            f"once no submission of it goes on, remove {folder} and submit it again"
        )
        assert await engine.get_task("order-7") is None
        assert sorted(p.name for p in folder.iterdir()) == [".tmp-scan.pdf"]

        # Removed, the id is free again.
        (folder / ".tmp-scan.pdf").unlink()
        folder.rmdir()
        task = await engine.submit_task({}, "w", task_id="order-7", artifacts={"scan.pdf": b"%PDF"})
        assert [a.name for a in task.artifacts] == ["scan.pdf"]

    wfe_run(scenario())

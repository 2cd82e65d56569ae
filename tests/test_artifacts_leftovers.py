"""What a worker killed mid-phase leaves in its task's artifact folder, and the rerun.

A phase's artifact files go in place as it writes them, and its task's metadata
names them only when the phase ends; a worker killed in between (SIGKILL) leaves
them unlisted, with the hidden ``.tmp-*`` file of one it was still writing. The
worker that takes the task over deletes them before the phase runs again, so the
rerun can lay out its files as it likes.
"""

from __future__ import annotations

import asyncio
import signal
import textwrap
from pathlib import Path

from core_util import background_wfe, wait_until, with_pythonpath

from wfcore import ECSWorkflowEngine, Phase, Task, TaskStatus
from wfcore.artifacts import COPY_CHUNK

# The first run writes "a", "plots/x.png" and half of "big.bin", and is killed; the
# rerun (a taken-over task) lays its files out the other way round: "a" is a folder
# and "plots" a file.
_APP = textwrap.dedent(
    """
    import asyncio
    import os
    import threading
    from pathlib import Path

    from wfcore import ECSWorkflowEngine, Phase, Task
    from wfcore.artifacts import COPY_CHUNK, copy_artifact

    DIR = Path(os.environ["LEFTOVER_DIR"])
    engine = ECSWorkflowEngine(load_plugins=False, lease_seconds=1.0, poll_interval=0.05)


    def feed(fd: int) -> None:
        # More than one chunk, and never the end: the copy writes one chunk and
        # waits for the next, its temporary file half written.
        os.write(fd, b"x" * (COPY_CHUNK + 10))


    async def make(task: Task) -> None:
        if any(e["event"] == "taken_over" for e in task.history):
            await engine.add_artifact_text(task, "a/b", "rerun")
            await engine.add_artifact_text(task, "plots", "rerun")
            return
        await engine.add_artifact_text(task, "a", "first")
        await engine.add_artifact_bytes(task, "plots/x.png", b"png")
        root = (await engine.get_store()).artifacts_dir
        read_fd, write_fd = os.pipe()
        threading.Thread(target=feed, args=(write_fd,), daemon=True).start()

        def copy() -> None:
            with os.fdopen(read_fd, "rb") as source:
                copy_artifact(root, task.id, "big.bin", source, "make")

        threading.Thread(target=copy, daemon=True).start()
        (DIR / "copying").touch()
        await asyncio.Event().wait()  # killed here


    engine.register_handler("make", make)
    engine.register_workflow("leftovers", [Phase("make", max_attempts=1)])
    """
)


def _files(folder: Path) -> dict[str, int]:
    return {
        str(path.relative_to(folder)): path.stat().st_size
        for path in folder.rglob("*")
        if path.is_file()
    }


def test_the_worker_taking_over_a_killed_phase_deletes_its_unlisted_files(
    wfe, wfe_run, tmp_path: Path
) -> None:
    (tmp_path / "leftover_app.py").write_text(_APP)
    env = with_pythonpath(wfe.env, tmp_path, LEFTOVER_DIR=str(tmp_path))
    url = wfe.env["WFE_STORE"]
    engine = ECSWorkflowEngine(store=url, load_plugins=False)
    engine.register_workflow("leftovers", [Phase("make", max_attempts=1)])
    task = wfe_run(engine.submit_task(None, "leftovers", task_id="t1"))
    folder = tmp_path / "wfe.db-artifacts" / "t1"

    def half_written() -> bool:
        files = _files(folder) if (tmp_path / "copying").exists() else {}
        return any(n.startswith(".tmp-") and s >= COPY_CHUNK for n, s in files.items())

    args = ("worker", "leftover_app:engine")
    with background_wfe(*args, cwd=tmp_path, env=env, log=tmp_path / "first.log") as first:
        wait_until(half_written, 20, "the first run to be writing big.bin")
        first.send_signal(signal.SIGKILL)
        assert first.wait(10) == -signal.SIGKILL
    left = _files(folder)
    [tmp] = [name for name in left if name.startswith(".tmp-")]
    assert left == {"a": 5, "plots/x.png": 3, tmp: COPY_CHUNK}, left
    # Listings go by the task's metadata, which names none of them.
    shown = wfe("show", "t1").stdout
    assert "artifact" not in shown and ".tmp-" not in shown, shown

    log = tmp_path / "second.log"
    with background_wfe(*args, "--until-idle", cwd=tmp_path, env=env, log=log) as second:
        assert second.wait(30) == 0, log.read_text()

    done = wfe_run(engine.get_task(task.id))
    assert done.status is TaskStatus.COMPLETED, done.error
    assert sorted(a.name for a in done.artifacts) == ["a/b", "plots"]
    assert _files(folder) == {"a/b": 5, "plots": 5}
    assert [e["event"] for e in done.history].count("taken_over") == 1


def test_only_unlisted_files_go(tmp_path: Path) -> None:
    from wfcore.artifacts import remove_unlisted_files

    folder = tmp_path / "t1"
    for name in ("kept.txt", "deep/kept.bin", "gone.txt", "deep/er/gone", ".tmp-abc", "x/.tmp-1"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(name)
    (folder / "empty").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f").write_text("not the task's")
    (folder / "link").symlink_to(outside)

    removed = remove_unlisted_files(tmp_path, "t1", ["kept.txt", "deep/kept.bin", "missing"])

    assert sorted(removed) == [".tmp-abc", "deep/er/gone", "gone.txt", "x/.tmp-1"]
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) == [
        "deep",
        "deep/kept.bin",
        "kept.txt",
        "link",
    ]
    assert (outside / "f").read_text() == "not the task's"
    assert remove_unlisted_files(tmp_path, "no-folder", []) == []


def test_a_task_folder_that_is_a_link_is_left_alone(tmp_path: Path) -> None:
    # Put there by hand (a folder moved to another disk, say): what it leads to is
    # not the task's to clean, as purge leaves it too.
    from wfcore.artifacts import remove_unlisted_files

    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "sub").mkdir(parents=True)
    (elsewhere / "sub" / "f").write_text("someone's")
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "t1").symlink_to(elsewhere)

    assert remove_unlisted_files(tmp_path / "root", "t1", []) == []
    assert (elsewhere / "sub" / "f").read_text() == "someone's"


def test_a_task_retried_after_a_cancel_mid_phase_can_lay_out_its_files_anew(
    tmp_path: Path,
) -> None:
    # Cancelled as its phase ran, a task's attempt is not rolled back (the task
    # changed under it): the file "a" it wrote stays, unlisted. Retried, the task
    # must still be able to write "a/b".
    asyncio.run(_retried_after_cancel(tmp_path))


async def _retried_after_cancel(tmp_path: Path) -> None:
    engine = ECSWorkflowEngine(f"sqlite://{tmp_path / 'wfe.db'}", load_plugins=False)
    written = asyncio.Event()

    async def make(task: Task) -> None:
        if any(event["event"] == "retried" for event in task.history):
            await engine.add_artifact_text(task, "a/b", "rerun")
            return
        await engine.add_artifact_text(task, "a", "first")
        written.set()
        await asyncio.Event().wait()  # until cancelled

    engine.register_handler("make", make)
    engine.register_workflow("files", [Phase("make", assigned_to="functional")])
    running = asyncio.create_task(engine.run())
    try:
        task = await engine.submit_task({}, workflow_name="files")
        await asyncio.wait_for(written.wait(), 30)
        await engine.cancel(task.id)
        root = (await engine.get_store()).artifacts_dir
        assert (root / task.id / "a").is_file()  # left by the cancelled phase
    finally:
        engine.stop()
        await running
    await engine.retry(task.id)
    # Something else happens to it before a worker takes it: the retry still counts.
    await engine.set_priority(task.id, 5)
    await engine.run_until_idle()
    done = await engine.wait_for_task(task.id, timeout=30)
    await engine.aclose()
    assert done.status is TaskStatus.COMPLETED, done.error
    assert [art.name for art in done.artifacts] == ["a/b"]
    assert (root / task.id / "a" / "b").read_text() == "rerun"

"""Artifacts pushed at their edges: task ids and names the file system takes badly."""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from wfcore import Phase, Task
from wfcore.artifacts import StagedArtifact, write_artifact
from wfcore.errors import ArtifactError, InvalidTaskError, TaskStateError, UnknownTaskError
from wfcore.stores.sqlite import SQLiteStore


def _engine(factory: Any) -> Any:
    engine = factory()
    engine.register_handler("look", lambda task: None)
    engine.register_workflow("w", [Phase("look", assigned_to="human")])
    return engine


@pytest.mark.parametrize("task_id", [".wfcore-store", ".wfcore-store.123.tmp"])
def test_a_task_id_naming_the_stores_marker_file_gets_no_artifact_folder(
    wfe_engine_factory, wfe_run, wfe_store_url, tmp_path, task_id: str
):
    # A store whose artifacts folder is there, and so marked as the database's.
    first = _engine(wfe_engine_factory)
    wfe_run(first.submit_task({}, "w", task_id="first", artifacts={"a.txt": b"A"}))
    wfe_run(first.aclose())
    engine = _engine(wfe_engine_factory)
    folder = wfe_run(engine.get_store()).artifacts_dir
    marker = folder / ".wfcore-store"
    before = marker.read_bytes()

    with pytest.raises(InvalidTaskError, match=r"cannot have artifacts: its folder would take"):
        wfe_run(engine.submit_task({}, "w", task_id=task_id, artifacts={"x": b"1"}))
    assert wfe_run(engine.get_task(task_id)) is None  # nothing stored
    wfe_run(engine.submit_task({}, "w", task_id=task_id))
    with pytest.raises(ArtifactError, match=r"does not start with '\.wfcore-store'"):
        wfe_run(engine.add_artifact_bytes(task_id, "x", b"1"))
    wfe_run(engine.cancel(task_id))
    wfe_run(engine.purge(0))

    assert marker.read_bytes() == before
    assert wfe_run(engine.read_artifact("first", "a.txt")) == b"A"


def test_a_first_task_named_like_the_marker_leaves_the_folder_free_for_it(
    wfe_engine_factory, wfe_run
):
    # The folder is made by the first task with files; the marker, at the next open.
    engine = _engine(wfe_engine_factory)
    with pytest.raises(InvalidTaskError, match=r"cannot have artifacts"):
        wfe_run(engine.submit_task({}, "w", task_id=".wfcore-store", artifacts={"x": b"1"}))
    wfe_run(engine.submit_task({}, "w", task_id="first", artifacts={"a.txt": b"A"}))
    wfe_run(engine.aclose())
    again = _engine(wfe_engine_factory)
    folder = wfe_run(again.get_store()).artifacts_dir
    assert (folder / ".wfcore-store").is_file()


def test_a_name_too_deep_or_too_long_for_a_path_is_an_artifact_error(wfe_engine_factory, wfe_run):
    engine = _engine(wfe_engine_factory)
    wfe_run(engine.submit_task({}, "w", task_id="t"))
    deepest = "/".join(["d"] * 100)
    wfe_run(engine.add_artifact_bytes("t", deepest, b"deep"))
    assert wfe_run(engine.read_artifact("t", deepest)) == b"deep"

    # Not Python's recursion limit as the folders are made (RecursionError).
    too_deep = "/".join(["e"] * 1200)
    with pytest.raises(ArtifactError, match=r"at most 100 parts between slashes, not 1200$"):
        wfe_run(engine.add_artifact_bytes("t", too_deep, b"x"))
    with pytest.raises(InvalidTaskError, match=r"^artifacts: .*at most 100 parts"):
        wfe_run(engine.submit_task({}, "w", task_id="u", artifacts={too_deep: b"x"}))
    # Not OSError: [Errno 36] File name too long, naming no artifact.
    too_long = "/".join(["f" * 240] * 20)
    with pytest.raises(ArtifactError, match=r"\(4819 bytes\) is too long for a path in "):
        wfe_run(engine.add_artifact_bytes("t", too_long, b"x"))
    with pytest.raises(InvalidTaskError, match=r"too long for a path"):
        wfe_run(engine.submit_task({}, "w", task_id="v", artifacts={too_long: b"x"}))
    assert [t.id for t in wfe_run(engine.list_tasks())] == ["t"]
    assert [a.name for a in wfe_run(engine.get_task("t")).artifacts] == [deepest]


def test_a_name_leading_out_through_a_symbolic_link_is_refused_as_reading_it_would_be(
    wfe_engine_factory, wfe_run, tmp_path
):
    engine = _engine(wfe_engine_factory)
    wfe_run(engine.submit_task({}, "w", task_id="t", artifacts={"plots/a.png": b"A"}))
    folder = wfe_run(engine.get_store()).artifacts_dir / "t"
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.rmtree(folder / "plots")
    (folder / "plots").symlink_to(outside)

    # Not a file written in the linked folder, which could not be read back.
    with pytest.raises(ArtifactError, match=r"'plots' in .* is a symbolic link to .*outside"):
        wfe_run(engine.add_artifact_bytes("t", "plots/b/c.png", b"B"))
    assert list(outside.iterdir()) == []
    assert [a.name for a in wfe_run(engine.get_task("t")).artifacts] == ["plots/a.png"]

    # A task folder that is itself a link (moved to another disk, say) is read through,
    # so it is written through too.
    wfe_run(engine.submit_task({}, "w", task_id="moved", artifacts={"x.txt": b"X"}))
    elsewhere = tmp_path / "elsewhere"
    shutil.move(folder.parent / "moved", elsewhere)
    (folder.parent / "moved").symlink_to(elsewhere)
    wfe_run(engine.add_artifact_bytes("moved", "y/z.txt", b"Z"))
    assert wfe_run(engine.read_artifact("moved", "y/z.txt")) == b"Z"
    assert (elsewhere / "y" / "z.txt").read_bytes() == b"Z"


_FULL_DISK = """
import asyncio, resource, signal, sys
from wfcore import ECSWorkflowEngine, Phase

async def main():
    engine = ECSWorkflowEngine(store=sys.argv[1], load_plugins=False)
    engine.register_handler("look", lambda task: None)
    engine.register_workflow("w", [Phase("look", assigned_to="human")])
    await engine.submit_task({}, "w", task_id="t", artifacts={"a.txt": b"kept"})
    # No file may grow past 1 MB from here, as on a disk that is full.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, hard))
    try:
        await engine.add_artifact_bytes("t", "a.txt", b"x" * (2 << 20))
    except OSError as exc:
        print(type(exc).__name__, exc)
    print((await engine.read_artifact("t", "a.txt")).decode())
    await engine.aclose()

asyncio.run(main())
"""


def test_a_file_that_cannot_be_written_names_the_artifact_s_path(wfe_store_url, tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", _FULL_DISK, wfe_store_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    # Not "OSError [Errno 27] File too large", naming no file.
    error, kept = result.stdout.splitlines()
    assert error == f"OSError [Errno 27] File too large: '{tmp_path}/wfe.db-artifacts/t/a.txt'"
    assert kept == "kept"  # the stored file is left as it was
    assert [p.name for p in (tmp_path / "wfe.db-artifacts" / "t").iterdir()] == ["a.txt"]


def test_reading_an_artifact_through_a_task_kept_from_before_its_purge_says_it_is_gone(
    wfe_engine_factory, wfe_run
):
    engine = _engine(wfe_engine_factory)
    kept = wfe_run(engine.submit_task({}, "w", task_id="t", artifacts={"a.txt": b"A"}))
    assert wfe_run(engine.read_artifact(kept, "a.txt")) == b"A"
    wfe_run(engine.cancel("t"))
    assert wfe_run(engine.purge(0)) == 1
    # Not "task 't' lists the artifact 'a.txt', but its file is not in ...: it
    # was deleted or moved after the task stored it (a store copied or restored ...)".
    for call in (engine.read_artifact, engine.artifact_path):
        with pytest.raises(UnknownTaskError, match=r"^unknown task 't'$"):
            wfe_run(call(kept, "a.txt"))
        with pytest.raises(UnknownTaskError):
            wfe_run(call("t", "a.txt"))


class _OtherProcessFirst(SQLiteStore):
    """A real SQLite store that, just before this process first stores a task, lets
    ``other`` run to its end: what another process does at that moment (an upload of
    the same file name, a worker's claim) and wins the race with this one."""

    def __init__(self, path: Path, other: Callable[[], Awaitable[None]]) -> None:
        super().__init__(path)
        self._other: Callable[[], Awaitable[None]] | None = other

    async def update_task(self, task: Task, *, keep_lease: bool = False) -> bool:
        other, self._other = self._other, None
        if other is not None:
            await other()
        return await super().update_task(task, keep_lease=keep_lease)


def test_two_uploads_of_one_name_at_once_leave_the_metadata_of_the_file_kept(
    wfe_engine_factory, wfe_run, tmp_path
):
    other = _engine(wfe_engine_factory)  # another process's engine, on the same file
    wfe_run(other.submit_task({}, "w", task_id="t"))

    async def other_upload() -> None:
        await other.add_artifact_bytes("t", "scan.pdf", b"second")

    store = _OtherProcessFirst(tmp_path / "wfe.db", other_upload)
    first = _engine(lambda: wfe_engine_factory(store=store))
    wfe_run(first.add_artifact_bytes("t", "scan.pdf", b"first"))
    wfe_run(store.close())

    task = wfe_run(other.get_task("t"))
    (scan,) = task.artifacts
    kept = wfe_run(other.read_artifact(task, "scan.pdf"))
    assert kept == b"second"  # written last
    # Not the first upload's metadata (size 5, its sha256) for the second's file.
    assert (scan.size, scan.sha256) == (len(kept), hashlib.sha256(kept).hexdigest())
    assert [e["event"] for e in task.history].count("artifact_added") == 2


def test_a_purged_task_s_folder_that_cannot_be_deleted_is_said_naming_it(
    wfe_engine_factory, wfe_run, tmp_path, caplog
):
    engine = _engine(wfe_engine_factory)
    wfe_run(engine.submit_task({}, "w", task_id="moved", artifacts={"x.txt": b"X"}))
    folder = wfe_run(engine.get_store()).artifacts_dir / "moved"
    elsewhere = tmp_path / "other-disk"
    shutil.move(folder, elsewhere)
    folder.symlink_to(elsewhere)  # moved to another disk, say, and linked
    wfe_run(engine.cancel("moved"))
    with caplog.at_level(logging.WARNING, logger="wfcore"):
        assert wfe_run(engine.purge(0)) == 1
    # Not silence, with the files of a task no longer stored left behind.
    said = [r.getMessage() for r in caplog.records]
    assert said == [
        f"task moved: could not delete its artifact files in {folder} (Cannot call rmtree "
        "on a symbolic link): delete them by hand"
    ], said
    assert (elsewhere / "x.txt").read_bytes() == b"X"


def test_a_file_replaced_by_the_same_bytes_counts_as_not_replaced(tmp_path):
    # What an add checks before storing its metadata: by the file's identity, then, if
    # that changed (another writer, or a network share whose inode numbers change),
    # by its bytes.
    staged = StagedArtifact(tmp_path, "t", "a.txt", b"same")
    path = tmp_path / "t" / "a.txt"
    assert staged.place() and staged.place()
    write_artifact(tmp_path, "t", "a.txt", b"same")  # another file, the same bytes
    assert staged.place()
    write_artifact(tmp_path, "t", "a.txt", b"other")
    assert not staged.place()
    path.unlink()
    assert staged.place()  # cannot tell: as written


@pytest.mark.parametrize("name", ["scan.pdf", "new.txt"])
def test_an_upload_that_a_claim_overtakes_leaves_the_files_as_they_were(
    wfe_engine_factory, wfe_run, tmp_path, name: str
):
    worker = wfe_engine_factory()  # another process's worker, on the same file
    worker.register_handler("read", lambda task: None)
    worker.register_workflow("w", [Phase("read", assigned_to="functional")])
    wfe_run(worker.submit_task({}, "w", task_id="t", artifacts={"scan.pdf": b"original"}))

    async def claim() -> None:
        other = await worker.get_store()
        assert [t.id for t in await other.claim("other-worker", 1, 60)] == ["t"]

    store = _OtherProcessFirst(tmp_path / "wfe.db", claim)
    uploader = _engine(lambda: wfe_engine_factory(store=store))
    with pytest.raises(TaskStateError):
        wfe_run(uploader.add_artifact_bytes("t", name, b"uploaded"))
    wfe_run(store.close())

    # The refused upload's file has not replaced scan.pdf (nor is it left unlisted
    # as new.txt) under the phase that now runs.
    folder = tmp_path / "wfe.db-artifacts" / "t"
    assert sorted(p.name for p in folder.iterdir()) == ["scan.pdf"]
    assert (folder / "scan.pdf").read_bytes() == b"original"
    (scan,) = wfe_run(worker.get_task("t")).artifacts
    assert scan.sha256 == hashlib.sha256(b"original").hexdigest()


def test_an_upload_that_cannot_put_back_what_it_replaced_says_so_and_raises_nothing(
    tmp_path, caplog
):
    # undo runs as an add fails: its own error must not hide the add's.
    write_artifact(tmp_path, "t", "scan.pdf", b"original")
    staged = StagedArtifact(tmp_path, "t", "scan.pdf", b"uploaded")
    assert staged.place()
    for kept in (tmp_path / "t").glob("*.kept"):
        kept.unlink()  # gone, say, by a hand tidying the folder
    with caplog.at_level(logging.WARNING, logger="wfcore"):
        staged.undo()
    (said,) = [r.getMessage() for r in caplog.records]
    assert said.startswith(f"artifact {tmp_path}/t/scan.pdf: could not put back the file")

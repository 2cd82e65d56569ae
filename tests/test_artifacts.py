"""Artifacts: files a phase produces, their metadata, and reading them later."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from core_util import HeldPhase

from wfcore import ECSWorkflowEngine, Phase, Task, TaskStatus
from wfcore.errors import ArtifactError, InvalidTaskError, TaskStateError, UnknownTaskError


def test_handlers_add_text_and_bytes_artifacts_with_metadata(make_engine, wfe_run):
    engine = make_engine()
    blob = bytes(range(256)) * 4
    returned = {}

    async def produce(task: Task) -> None:
        returned["txt"] = await engine.add_artifact_text(task, "summary.txt", "héllo\n")
        returned["json"] = await engine.add_artifact_text(
            task, "data/rows.json", json.dumps([1, 2])
        )
        returned["bin"] = await engine.add_artifact_bytes(task, "raw.weird", blob)

    engine.register_handler("produce", produce)
    engine.register_workflow("w", [Phase("produce")])

    async def scenario():
        task = await engine.submit_task(None, "w")
        await engine.run_until_idle()
        task = await engine.get_task(task.id)
        contents = {a.name: await engine.read_artifact(task, a.name) for a in task.artifacts}
        by_id = await engine.read_artifact(task.id, "summary.txt")
        return task, contents, by_id

    task, contents, by_id = wfe_run(scenario())
    assert task.status is TaskStatus.COMPLETED
    by_name = {a.name: a for a in task.artifacts}
    assert set(by_name) == {"summary.txt", "data/rows.json", "raw.weird"}
    text = "héllo\n".encode()
    assert contents == {"summary.txt": text, "data/rows.json": b"[1, 2]", "raw.weird": blob}
    assert by_id == text
    summary = by_name["summary.txt"]
    assert summary == returned["txt"]
    assert summary.size == len(text)
    assert summary.sha256 == hashlib.sha256(text).hexdigest()
    assert summary.media_type == "text/plain"
    assert summary.phase == "produce"
    assert Path(summary.path).read_bytes() == text
    assert by_name["data/rows.json"].media_type == "application/json"
    assert by_name["raw.weird"].media_type == "application/octet-stream"
    assert by_name["raw.weird"].size == len(blob)


def test_a_later_phase_reads_an_earlier_phases_artifact(make_engine, wfe_run):
    engine = make_engine()

    async def write(task: Task) -> None:
        await engine.add_artifact_text(task, "draft.md", "first draft")

    async def read(task: Task) -> None:
        assert [a.name for a in task.artifacts] == ["draft.md"]
        task.output = (await engine.read_artifact(task, "draft.md")).decode().upper()

    engine.register_handler("write", write)
    engine.register_handler("read", read)
    engine.register_workflow("w", [Phase("write"), Phase("read")])

    async def scenario():
        task = await engine.submit_task(None, "w")
        await engine.run_until_idle()
        return await engine.get_task(task.id)

    assert wfe_run(scenario()).output == "FIRST DRAFT"


def test_writing_an_artifact_again_replaces_it(make_engine, wfe_run):
    engine = make_engine()

    async def first(task: Task) -> None:
        await engine.add_artifact_text(task, "state.txt", "v1")

    async def second(task: Task) -> None:
        await engine.add_artifact_text(task, "state.txt", "version two")

    engine.register_handler("first", first)
    engine.register_handler("second", second)
    engine.register_workflow("w", [Phase("first"), Phase("second")])

    async def scenario():
        task = await engine.submit_task(None, "w")
        await engine.run_until_idle()
        task = await engine.get_task(task.id)
        return task, await engine.read_artifact(task, "state.txt")

    task, content = wfe_run(scenario())
    assert [(a.name, a.size, a.phase) for a in task.artifacts] == [
        ("state.txt", len("version two"), "second")
    ]
    assert content == b"version two"


def test_artifacts_of_different_tasks_do_not_collide(make_engine, wfe_run):
    engine = make_engine()

    async def write(task: Task) -> None:
        await engine.add_artifact_text(task, "result.txt", f"result of {task.data}")

    engine.register_handler("write", write)
    engine.register_workflow("w", [Phase("write")])

    async def scenario():
        ids = [(await engine.submit_task(i, "w")).id for i in range(3)]
        await engine.run_until_idle()
        return [await engine.read_artifact(i, "result.txt") for i in ids]

    assert wfe_run(scenario()) == [b"result of 0", b"result of 1", b"result of 2"]


def test_artifacts_survive_a_restart(wfe_engine_factory, wfe_run, tmp_path):
    first = wfe_engine_factory()

    async def write(task: Task) -> None:
        await first.add_artifact_bytes(task, "model.bin", b"\x01\x02\x03")

    first.register_handler("write", write)
    first.register_workflow("w", [Phase("write"), Phase("check", assigned_to="human")])

    async def before():
        task = await first.submit_task(None, "w")
        await first.run_until_idle()
        return task.id

    task_id = wfe_run(before())
    wfe_run(first.aclose())
    second: ECSWorkflowEngine = wfe_engine_factory()

    async def after():
        task = await second.get_task(task_id)
        return task, await second.read_artifact(task, "model.bin")

    task, data = wfe_run(after())
    assert data == b"\x01\x02\x03"
    assert task.artifacts[0].sha256 == hashlib.sha256(b"\x01\x02\x03").hexdigest()
    # The files sit in a folder beside the database.
    assert Path(task.artifacts[0].path).is_relative_to(tmp_path)


def _artifact_engine(url: str) -> ECSWorkflowEngine:
    engine = ECSWorkflowEngine(url, load_plugins=False)

    async def report(task: Task) -> None:
        await engine.add_artifact_text(task, "report.txt", task.data)

    engine.register_handler("report", report)
    engine.register_workflow("w", [Phase("report", assigned_to="functional")])
    return engine


async def _report(engine: ECSWorkflowEngine, text: str) -> bytes:
    task = await engine.submit_task(text, "w", task_id="same-id")
    await engine.run_until_idle()
    return await engine.read_artifact(task.id, "report.txt")


def test_stores_whose_file_names_share_a_stem_keep_their_artifacts_apart(tmp_path, wfe_run):
    """jobs.db and jobs.sqlite side by side, the same task id in each."""
    prod = _artifact_engine(f"sqlite://{tmp_path / 'jobs.db'}")
    test = _artifact_engine(f"sqlite://{tmp_path / 'jobs.sqlite'}")

    async def scenario():
        await _report(prod, "PROD report")
        await _report(test, "TEST report")
        await test.purge(0)
        return await prod.read_artifact("same-id", "report.txt")

    try:
        assert wfe_run(scenario()) == b"PROD report"
    finally:
        wfe_run(prod.aclose())
        wfe_run(test.aclose())
    assert (tmp_path / "jobs.db-artifacts" / "same-id" / "report.txt").is_file()
    assert not (tmp_path / "jobs-artifacts").exists()


def test_a_store_that_recorded_no_artifacts_folder_keeps_the_one_named_after_its_stem(
    tmp_path, wfe_run
):
    path = tmp_path / "wfe.db"
    first = _artifact_engine(f"sqlite://{path}")
    wfe_run(_report(first, "made before"))
    wfe_run(first.aclose())
    # What a database made before the folder's name was recorded looks like.
    (tmp_path / "wfe.db-artifacts").rename(tmp_path / "wfe-artifacts")
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM wfe_meta WHERE key = 'artifacts_dir'")
    conn.commit()
    conn.close()

    again = _artifact_engine(f"sqlite://{path}")
    try:
        assert wfe_run(again.read_artifact("same-id", "report.txt")) == b"made before"
        store = wfe_run(again.get_store())
        assert store.artifacts_dir == tmp_path / "wfe-artifacts"
    finally:
        wfe_run(again.aclose())


def test_an_artifact_added_to_a_waiting_task_is_stored_for_its_next_phase(make_engine, wfe_run):
    # A person's upload, say: added while the task waits, read by the phase after.
    engine = make_engine()
    seen = {}

    async def read(task: Task) -> None:
        seen["names"] = [a.name for a in task.artifacts]
        seen["text"] = (await engine.read_artifact(task, "upload.txt")).decode()

    engine.register_handler("read", read)
    engine.register_workflow(
        "w", [Phase("ask", assigned_to="human"), Phase("read", assigned_to="functional")]
    )

    async def scenario():
        task = await engine.submit_task(None, "w")
        await engine.run_until_idle()
        waiting = await engine.get_task(task.id)
        art = await engine.add_artifact_text(waiting, "upload.txt", "the signed form")
        by_id = await engine.add_artifact_text(task.id, "note.txt", "by id")
        stored = await engine.get_task(task.id)
        await engine.resume(task.id, {"ok": True})
        await engine.run_until_idle()
        return waiting, art, by_id, stored, await engine.get_task(task.id)

    waiting, art, by_id, stored, done = wfe_run(scenario())
    assert art.phase == "ask" and by_id.name == "note.txt"
    # Stored at once, with an event; the Task given is brought up to date.
    assert [a.name for a in stored.artifacts] == ["upload.txt", "note.txt"]
    assert [e["event"] for e in stored.history][-2:] == ["artifact_added", "artifact_added"]
    assert [a.name for a in waiting.artifacts] == ["upload.txt"]
    assert waiting.version == stored.version - 1
    assert done.status is TaskStatus.COMPLETED
    assert seen == {"names": ["upload.txt", "note.txt"], "text": "the signed form"}


def test_adding_an_artifact_to_a_task_running_elsewhere_is_refused(make_engine, wfe_run):
    engine = make_engine()
    held = HeldPhase(engine)

    async def scenario():
        task = await engine.submit_task(None, "w")
        runner = asyncio.create_task(engine.run_until_idle())
        await asyncio.wait_for(held.started.wait(), 10)
        # The same id, but not the phase's own Task object: another caller.
        with pytest.raises(TaskStateError, match="is running, and its phase stores"):
            await engine.add_artifact_text(task.id, "late.txt", "x")
        held.release.set()
        await runner
        with pytest.raises(UnknownTaskError):
            await engine.add_artifact_text("no-such-task", "a.txt", "x")
        return await engine.get_task(task.id)

    task = wfe_run(scenario())
    assert task.status is TaskStatus.COMPLETED and task.artifacts == []


def test_a_file_the_task_does_not_list_is_not_one_of_its_artifacts(make_engine, wfe_run):
    """A killed attempt can leave a file in the task's folder that its stored task
    never listed: reading it as an artifact is refused, by task and by id."""
    engine = make_engine()

    async def write(task: Task) -> None:
        await engine.add_artifact_text(task, "kept.txt", "listed")

    engine.register_handler("write", write)
    engine.register_workflow("w", [Phase("write", assigned_to="functional")])

    async def scenario():
        task = await engine.submit_task({}, "w")
        await engine.run_until_idle()
        done = await engine.get_task(task.id)
        orphan = Path(done.artifacts[0].path).parent / "orphan.txt"
        orphan.write_text("left by a killed attempt")
        refused = []
        for which in (done, task.id):
            with pytest.raises(ArtifactError) as caught:
                await engine.read_artifact(which, "orphan.txt")
            refused.append(str(caught.value))
        return refused, await engine.read_artifact(task.id, "kept.txt")

    refused, kept = wfe_run(scenario())
    assert all("has no artifact 'orphan.txt'" in message for message in refused)
    assert kept == b"listed"


def test_a_task_submitted_with_files_starts_with_them(make_engine, wfe_run, tmp_path):
    """An invoice arriving as a file: the first phase (a real command) reads it, with
    no race against a worker that claims the task at once."""
    scan = tmp_path / "scan.pdf"
    scan.write_bytes(b"%PDF-1.7 invoice 42")
    engine = make_engine()
    engine.register_workflow(
        "intake",
        [
            Phase(
                "extract",
                assigned_to="functional",
                command=["cat", "artifacts/invoice.pdf", "artifacts/notes/from.txt"],
            )
        ],
    )

    async def scenario():
        worker = asyncio.create_task(engine.run())  # claims as soon as the task is stored
        try:
            task = await engine.submit_task(
                {"from": "ACME"},
                "intake",
                artifacts={"invoice.pdf": scan, "notes/from.txt": b" from ACME"},
            )
            return task, await engine.wait_for_task(task.id, timeout=30)
        finally:
            engine.stop()
            await worker

    submitted, done = wfe_run(scenario())
    assert done.status is TaskStatus.COMPLETED, done.error
    assert done.output == "%PDF-1.7 invoice 42 from ACME"
    [invoice, notes] = submitted.artifacts
    assert (invoice.name, invoice.size, invoice.phase) == ("invoice.pdf", 19, None)
    assert invoice.sha256 == hashlib.sha256(scan.read_bytes()).hexdigest()
    assert invoice.media_type == "application/pdf"
    assert notes.name == "notes/from.txt"
    assert done.history[0]["artifacts"] == ["invoice.pdf", "notes/from.txt"]


@pytest.mark.parametrize(
    "files, said",
    [
        ({"a.txt": "text"}, "artifact 'a.txt': a str is ambiguous"),
        ({"../a.txt": b"x"}, "artifact name '../a.txt' may not have"),
        ({"a": b"1", "a/b": b"2"}, "artifact name 'a/b' needs 'a' as a folder"),
        ({"a.txt": 42}, "artifact 'a.txt': give bytes or a pathlib.Path, not int"),
        (["a.txt"], "artifacts must be a dict of artifact names"),
        ("missing", "does not exist"),
        ("folder", "is not a regular file"),
        ("name too long", "cannot be looked at: File name too long"),
    ],
)
def test_submitted_files_that_cannot_be_stored_are_refused_and_nothing_is(
    make_engine, wfe_run, tmp_path, files, said
):
    engine = make_engine()
    engine.register_workflow("w", [Phase("p", assigned_to="human")])
    if files == "missing":
        files = {"a.txt": tmp_path / "nope.pdf"}
    elif files == "folder":
        files = {"a.txt": tmp_path}
    elif files == "name too long":
        files = {"a.txt": tmp_path / ("x" * 300)}

    async def scenario():
        with pytest.raises(InvalidTaskError) as refused:
            await engine.submit_task({}, "w", task_id="t1", artifacts=files)
        store = await engine.get_store()
        return str(refused.value), await engine.list_tasks(), store.artifacts_dir

    message, stored, folder = wfe_run(scenario())
    assert message.startswith("artifacts: ") and said in message, message
    assert stored == [] and not (folder / "t1").exists()


def test_resubmitting_a_task_id_keeps_the_files_it_was_stored_with(make_engine, wfe_run):
    engine = make_engine()
    engine.register_workflow("w", [Phase("p", assigned_to="human")])

    async def scenario():
        first = await engine.submit_task({}, "w", task_id="t1", artifacts={"a.txt": b"first"})
        again = await engine.submit_task({}, "w", task_id="t1", artifacts={"a.txt": b"again"})
        return first, again, await engine.read_artifact("t1", "a.txt")

    first, again, data = wfe_run(scenario())
    assert data == b"first"
    assert again.artifacts == first.artifacts


def test_submit_tasks_with_files_puts_a_bad_requests_error_in_its_place(make_engine, wfe_run):
    engine = make_engine()
    engine.register_workflow("w", [Phase("p", assigned_to="human")])

    async def scenario():
        results = await engine.submit_tasks(
            [
                {"data": 1, "workflow_name": "w", "artifacts": {"a": b"1"}},
                {"data": 2, "workflow_name": "w", "artifacts": {"b": "not bytes"}},
            ],
            return_exceptions=True,
        )
        return results, await engine.read_artifact(results[0].id, "a")

    (good, bad), data = wfe_run(scenario())
    assert isinstance(good, Task) and data == b"1"
    assert isinstance(bad, InvalidTaskError)


_SUBMIT_WITH_FILE = """
import asyncio, json, pathlib, sys, time
from wfcore import ECSWorkflowEngine, Phase

async def main(store, source, me, other, rounds):
    engine = ECSWorkflowEngine(store=store, load_plugins=False)
    engine.register_workflow("files", [Phase("first", assigned_to="human")])
    folder = pathlib.Path(source).parent
    said = []
    for round_ in range(int(rounds)):
        # Each round's id at the same moment from both processes: each says it is
        # ready, and waits for the other.
        (folder / f"ready-{round_}-{me}").touch()
        deadline = time.monotonic() + 20
        while not (folder / f"ready-{round_}-{other}").exists():
            if time.monotonic() > deadline:
                sys.exit(f"the other process never got to round {round_}")
            time.sleep(0.001)
        task = await engine.submit_task(
            {}, "files", task_id=f"same-{round_}", artifacts={"f.bin": pathlib.Path(source)}
        )
        said.append(task.artifacts[0].sha256)
    print(json.dumps(said))
    await engine.aclose()

asyncio.run(main(*sys.argv[1:]))
"""


def test_two_processes_submitting_one_id_with_files_agree_on_one(wfe_store_url, tmp_path):
    """Idempotent submission with files, at the same moment from two processes: one
    submission's files are stored, the same the task lists, for both."""
    import subprocess
    import sys

    big, small = tmp_path / "big.bin", tmp_path / "small.bin"
    big.write_bytes(b"b" * 20_000_000)
    small.write_bytes(b"small")
    script = tmp_path / "submit.py"
    script.write_text(_SUBMIT_WITH_FILE)
    rounds = 4  # a race: the more rounds, the surer a failure shows
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), wfe_store_url, str(source), me, other, str(rounds)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for source, me, other in ((big, "big", "small"), (small, "small", "big"))
    ]
    said = [json.loads(proc.communicate(timeout=60)[0]) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0]
    for round_ in range(rounds):
        artifact, data = asyncio.run(_stored_file(wfe_store_url, f"same-{round_}"))
        # Both were given the stored task.
        assert [by_process[round_] for by_process in said] == [artifact.sha256] * 2
        assert hashlib.sha256(data).hexdigest() == artifact.sha256  # the file is that one
        assert data in (big.read_bytes(), small.read_bytes())


async def _stored_file(store_url: str, task_id: str):
    engine = ECSWorkflowEngine(store=store_url, load_plugins=False)
    try:
        task = await engine.get_task(task_id)
        return task.artifacts[0], await engine.read_artifact(task, "f.bin")
    finally:
        await engine.aclose()


def test_a_memory_store_nobody_closes_leaves_no_folder_behind(tmp_path):
    # The README's example: asyncio.run(main()) with a memory:// engine, never closed.
    script = """
import asyncio
from wfcore import ECSWorkflowEngine, Phase, Task

async def main():
    engine = ECSWorkflowEngine(store="memory://")

    async def write(task: Task) -> None:
        await engine.add_artifact_text(task, "note.txt", "kept until exit")

    engine.register_handler("write", write)
    engine.register_workflow("w", [Phase("write")])
    task = await engine.submit_task(None, "w")
    await engine.run_until_idle()
    task = await engine.get_task(task.id)
    print(open(task.artifacts[0].path).read())

asyncio.run(main())
"""
    temp = tmp_path / "temp"
    temp.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "TMPDIR": str(temp)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "kept until exit\n"
    assert list(temp.iterdir()) == []

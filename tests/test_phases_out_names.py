"""A command phase whose out/ holds a file that cannot become an artifact (a name with
a control character, say): the attempt fails naming the file under out/, and the
files it had copied already go, so that a rerun can write other files in their place."""

from __future__ import annotations

import os
import sys
import tempfile
import textwrap

from core_util import run_task

from wfcore import Phase, Task, TaskStatus

# First attempt: out/a and out/"b<newline>c" (refused). Second: out/a/x, with "a" a
# folder this time, which only works if the first attempt's "a" is gone.
COMMAND = [
    sys.executable,
    "-c",
    textwrap.dedent(
        """
        import json, os, sys
        attempt = json.load(sys.stdin)["attempts"]
        if attempt == 1:
            open("out/a", "w").write("first")
            open("out/b\\nc", "w").write("refused")
        else:
            os.makedirs("out/a")
            open("out/a/x", "w").write("second")
        print(json.dumps({"attempt": attempt}))
        """
    ),
]


def test_a_refused_name_fails_the_attempt_and_takes_its_copies_away(make_engine, wfe_run):
    engine = make_engine(retry_delay=0.01)
    engine.register_workflow(
        "w", [Phase("run", assigned_to="functional", command=COMMAND, max_attempts=2)]
    )

    async def scenario() -> tuple[Task, list[str]]:
        stored = await run_task(engine, {}, "w")
        folder = (await engine.get_store()).artifacts_dir / stored.id
        files = sorted(
            os.path.relpath(os.path.join(where, name), folder)
            for where, _, names in os.walk(folder)
            for name in names
        )
        return stored, files

    task, files = wfe_run(scenario())
    assert task.status is TaskStatus.COMPLETED, task.error
    assert task.output == {"attempt": 2}
    assert [art.name for art in task.artifacts] == ["a/x"]
    assert files == ["a/x"]
    failed = [event for event in task.history if event["event"] == "attempt_failed"]
    assert len(failed) == 1
    assert failed[0]["error"] == (
        "ArtifactError: 'out/b\\nc' cannot become an artifact: "
        "artifact name 'b\\nc' may not contain control characters"
    )


def test_a_refused_name_keeps_an_artifact_it_replaced(make_engine, wfe_run):
    """A file copied over an artifact of an earlier phase keeps its new bytes, as
    after any failed attempt (the stored sha256 tells which it is)."""
    engine = make_engine()
    first = [sys.executable, "-c", "open('out/report.txt', 'w').write('v1')"]
    second = [
        sys.executable,
        "-c",
        "open('out/report.txt', 'w').write('v2'); open('out/zz\\tname', 'w').write('x')",
    ]
    engine.register_workflow(
        "w",
        [
            Phase("one", assigned_to="functional", command=first),
            Phase("two", assigned_to="functional", command=second),
        ],
    )

    async def scenario() -> tuple[Task, bytes]:
        task = await engine.submit_task({}, "w")
        await engine.run_until_idle()
        stored = await engine.get_task(task.id)
        assert stored is not None
        return stored, await engine.read_artifact(stored, "report.txt")

    task, data = wfe_run(scenario())
    assert task.status is TaskStatus.FAILED
    assert task.error is not None and task.error.startswith("ArtifactError: 'out/zz\\tname'")
    assert [art.name for art in task.artifacts] == ["report.txt"]
    assert data == b"v2"


def test_a_file_in_the_place_of_out_is_said_to_be_no_folder(make_engine, wfe_run):
    engine = make_engine()
    command = [sys.executable, "-c", "import os; os.rmdir('out'); open('out', 'w').write('x')"]
    engine.register_workflow("w", [Phase("run", assigned_to="functional", command=command)])

    async def scenario() -> Task:
        task = await engine.submit_task({}, "w")
        await engine.run_until_idle()
        stored = await engine.get_task(task.id)
        assert stored is not None
        return stored

    task = wfe_run(scenario())
    assert task.status is TaskStatus.COMPLETED, task.error
    (skipped,) = [event for event in task.history if event["event"] == "artifacts_skipped"]
    # It said "file", in a warning about what was no regular file.
    assert skipped["files"] == {"out": "file, not a folder"}


def test_a_timeout_while_out_is_collected_leaves_no_file_behind(make_engine, wfe_run):
    """The copying thread used to go on after the attempt had timed out, and wrote a
    file the failed task does not name (after the removal of its files): here 256 MB."""
    engine = make_engine()
    # The command ends at once; copying its sparse 256 MB file (written out in full,
    # and flushed to disk) takes longer than what is left of the timeout.
    command = ["sh", "-c", "truncate -s 256M out/big.bin"]
    engine.register_workflow(
        "w", [Phase("run", assigned_to="functional", command=command, timeout=0.2)]
    )

    async def scenario() -> tuple[Task, list[str]]:
        stored = await run_task(engine, {}, "w")
        folder = (await engine.get_store()).artifacts_dir / stored.id
        return stored, sorted(os.listdir(folder)) if folder.exists() else []

    task, files = wfe_run(scenario())
    assert task.status is TaskStatus.FAILED
    assert task.error == "TimeoutError: phase 'run' timed out after 0.2s"
    assert task.artifacts == []
    assert files == []  # neither big.bin nor its temporary file, then or later


def test_a_timeout_while_artifacts_are_mounted_leaves_no_work_folder(
    make_engine, wfe_run, tmp_path, monkeypatch
):
    """The thread copying the task's artifacts into the command's work folder used to
    go on after a timeout, and made the folder again (for the next artifact) after
    its removal: a copy of every artifact left in the temporary folder for good."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(work))
    engine = make_engine()
    engine.register_workflow(
        "w", [Phase("run", assigned_to="functional", command=["true"], timeout=0.3)]
    )

    async def scenario() -> Task:
        task = await engine.submit_task(
            {}, "w", artifacts={"a/big.bin": b"small for now", "b/notes.txt": b"notes"}
        )
        # 2 GB, sparse, in the store's folder: far more than copying can do in 0.3 s,
        # cheap to make. (The stored size and sha256 no longer match: not looked at.)
        big = (await engine.get_store()).artifacts_dir / task.id / "a" / "big.bin"
        os.truncate(big, 2 * 1024**3)
        await engine.run_until_idle()
        stored = await engine.get_task(task.id)
        assert stored is not None
        return stored

    # wfe_run ends with asyncio.run, which waits for every thread of the loop's
    # executor: a copy that went on has finished by the time it returns.
    task = wfe_run(scenario())
    assert task.status is TaskStatus.FAILED
    assert task.error == "TimeoutError: phase 'run' timed out after 0.3s"
    # (memory:// keeps its artifacts in a folder there too.)
    assert [name for name in os.listdir(work) if name.startswith("wfe-")] == []

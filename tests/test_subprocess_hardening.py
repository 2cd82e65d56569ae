"""Subprocess phases against hostile input: links in out/, huge out/ files, and the
environment a command of a workflow defined at run time gets."""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import os
import sys
import tarfile
import tempfile
import textwrap
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from wfcore import DEFINE_WORKFLOW, Phase, Task, TaskStatus


def py(code: str, *args: str) -> list[str]:
    """argv running a Python snippet with this interpreter."""
    return [sys.executable, "-c", textwrap.dedent(code), *args]


def archive(members: list[tuple[str, bytes | str]]) -> bytes:
    """A tar archive: bytes are a file's contents, a str the target of a symbolic link."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, content in members:
            info = tarfile.TarInfo(name)
            if isinstance(content, str):
                info.type, info.linkname = tarfile.SYMTYPE, content
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def test_links_a_program_unpacks_into_out_are_skipped_not_followed(
    make_engine, wfe_run, tmp_path, monkeypatch, caplog
):
    """tar unpacking a user's archive into out/ is a benign program making links
    the user chose: collecting follows none of them, neither to the worker's own
    environment nor to its files, and the history and the log say what was left."""
    monkeypatch.setenv("WORKER_SECRET", "s3cr3t-in-the-worker")
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "key.txt").write_text("TOP SECRET")
    upload = archive(
        [
            ("readme.txt", b"a real file"),
            ("environ.txt", "/proc/self/environ"),
            ("passwd.txt", "/etc/passwd"),
            ("docs/key.txt", str(secrets / "key.txt")),
            ("folder", str(secrets)),
        ]
    )
    engine = make_engine()

    async def receive(task: Task) -> None:  # the app stores the user's upload
        await engine.add_artifact_bytes(task, "upload.tar", upload)

    engine.register_handler("receive", receive)
    engine.register_workflow(
        "w",
        [
            Phase("receive", assigned_to="functional"),
            Phase(
                "extract",
                assigned_to="functional",
                command=["tar", "-xf", "artifacts/upload.tar", "-C", "out"],
            ),
        ],
    )

    async def scenario():
        task = await engine.submit_task(None, "w")
        await engine.run_until_idle()
        task = await engine.get_task(task.id)
        return task, {a.name: await engine.read_artifact(task, a.name) for a in task.artifacts}

    with caplog.at_level(logging.WARNING, logger="wfcore"):
        task, contents = wfe_run(scenario())
    assert task.status is TaskStatus.COMPLETED, task.error
    assert set(contents) == {"upload.tar", "readme.txt"}
    assert contents["readme.txt"] == b"a real file"
    (skipped,) = [e for e in task.history if e["event"] == "artifacts_skipped"]
    assert skipped["phase"] == "extract"
    assert skipped["count"] == 4
    assert skipped["files"] == {
        "out/docs/key.txt": "symbolic link",
        "out/environ.txt": "symbolic link",
        "out/folder": "symbolic link",
        "out/passwd.txt": "symbolic link",
    }
    (warning,) = [r for r in caplog.records if "not collected as artifacts" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    assert task.id in warning.getMessage()
    assert "'out/environ.txt' (symbolic link)" in warning.getMessage()


def test_out_itself_replaced_by_a_link_is_not_followed(make_engine, wfe_run, tmp_path):
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "key.txt").write_text("TOP SECRET")
    engine = make_engine()
    command = py(
        """
        import os, shutil, sys
        shutil.rmtree("out")
        os.symlink(sys.argv[1], "out")
        """,
        str(secrets),
    )
    engine.register_workflow("w", [Phase("c", assigned_to="functional", command=command)])

    async def scenario():
        task = await engine.submit_task(None, "w")
        await engine.run_until_idle()
        return await engine.get_task(task.id)

    task = wfe_run(scenario())
    assert task.status is TaskStatus.COMPLETED, task.error
    assert task.artifacts == []
    (skipped,) = [e for e in task.history if e["event"] == "artifacts_skipped"]
    assert skipped["files"] == {"out": "symbolic link"}


def test_a_hard_link_in_out_is_collected_as_a_copy(make_engine, wfe_run, tmp_path):
    """A hard link names a file the command could read itself: it is an ordinary
    file, copied, so the artifact does not change when the original does."""
    original = tmp_path / "shared.txt"
    original.write_text("version 1")
    engine = make_engine()
    command = ["ln", str(original), "out/shared.txt"]
    engine.register_workflow("w", [Phase("c", assigned_to="functional", command=command)])

    async def scenario():
        task = await engine.submit_task(None, "w")
        await engine.run_until_idle()
        task = await engine.get_task(task.id)
        original.write_text("version 2, changed later")
        return task, await engine.read_artifact(task, "shared.txt")

    task, content = wfe_run(scenario())
    assert task.status is TaskStatus.COMPLETED, task.error
    assert content == b"version 1"


def test_a_huge_out_file_is_copied_in_chunks_off_the_event_loop(
    wfe_engine_factory, wfe_store_url, wfe_run
):
    """A sparse file costs the command nothing to make, whatever its size: it is
    copied without being held in memory, and the event loop goes on meanwhile."""
    size = 256 * 1024 * 1024
    tail = b"the end"
    engine = wfe_engine_factory(store=wfe_store_url)
    command = py(
        """
        import sys
        with open("out/big.bin", "wb") as f:
            f.truncate(int(sys.argv[1]))
            f.seek(int(sys.argv[1]) - len(sys.argv[2]))
            f.write(sys.argv[2].encode())
        """,
        str(size),
        tail.decode(),
    )
    engine.register_workflow(
        "w", [Phase("c", assigned_to="functional", command=command, timeout=600)]
    )

    async def scenario():
        gaps: list[float] = []
        done = asyncio.Event()

        async def tick() -> None:
            last = time.monotonic()
            while not done.is_set():
                await asyncio.sleep(0.01)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        ticker = asyncio.ensure_future(tick())
        task = await engine.submit_task(None, "w")
        await engine.run_until_idle()
        done.set()
        await ticker
        return await engine.get_task(task.id), max(gaps)

    tracemalloc.start()
    try:
        task, longest_gap = wfe_run(scenario())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert task.status is TaskStatus.COMPLETED, task.error
    (art,) = task.artifacts
    expected = hashlib.sha256()
    zeros = bytes(1024 * 1024)
    for _ in range(size // len(zeros) - 1):
        expected.update(zeros)
    expected.update(bytes(len(zeros) - len(tail)) + tail)
    assert (art.name, art.size, art.sha256) == ("big.bin", size, expected.hexdigest())
    stored = hashlib.sha256()
    with open(art.path, "rb") as f:
        while chunk := f.read(1024 * 1024):
            stored.update(chunk)
    assert stored.hexdigest() == art.sha256
    assert peak < 32 * 1024 * 1024, f"peak {peak:,} bytes of Python memory for a {size:,} file"
    # Responsiveness, not speed: the copy never holds the loop for long.
    assert longest_gap < 0.5, f"the event loop stalled for {longest_gap:.2f}s"


ENV_KEYS = ["PATH", "HOME", "LANG", "LC_TIME", "TZ", "TMPDIR"]
SECRETS = {
    "OPENAI_API_KEY": "sk-live-123",
    "WFE_UI_TOKEN": "dashboard-token-abc",
    "WFE_STORE": "sqlite:////somewhere/secret.db",
    "KAFKA_SASL_PASSWORD": "kafka-pass",
}
PRINT_ENV = py("import json, os; print(json.dumps(dict(os.environ)))")


def env_for_commands(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith("LC_"):
            monkeypatch.delenv(key)
    # A UTF-8 locale: else the child Python would set LC_CTYPE in its own environment.
    monkeypatch.setenv("LANG", "C.UTF-8")
    monkeypatch.setenv("LC_TIME", "C.UTF-8")
    monkeypatch.setenv("TZ", "Europe/Paris")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("TMPDIR", tempfile.gettempdir())
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)


def test_a_command_of_a_workflow_defined_at_run_time_gets_a_minimal_environment(
    make_engine, wfe_run, monkeypatch, tmp_path
):
    """Whoever defines the workflow chooses an allowed program's arguments too
    (``jq -n env``): the worker's secrets stay out of its environment."""
    engine = make_engine(allowed_commands=[sys.executable])
    env_for_commands(monkeypatch, tmp_path)
    spec: dict[str, Any] = {
        "name": "theirs",
        "phases": [
            {"target_classification": "peek", "assigned_to": "functional", "command": PRINT_ENV}
        ],
    }

    async def scenario():
        task = await engine.submit_task(spec, None, classification=DEFINE_WORKFLOW)
        await engine.run_until_idle()
        return await engine.get_task(task.id)

    task = wfe_run(scenario())
    assert task.status is TaskStatus.COMPLETED, task.error
    seen = task.output
    expected = {key: os.environ[key] for key in ENV_KEYS}
    expected |= {"WFE_TASK_ID": task.id, "WFE_PHASE": "peek"}
    # The guard shell that runs the command sets PWD, to the work folder.
    assert seen.pop("PWD").startswith(tempfile.gettempdir())
    assert seen == expected


def test_a_command_of_a_workflow_registered_in_code_gets_the_whole_environment(
    make_engine, wfe_run, monkeypatch, tmp_path
):
    """Its author chose the command: it keeps what the worker has, as before."""
    engine = make_engine()
    env_for_commands(monkeypatch, tmp_path)
    engine.register_workflow("own", [Phase("peek", assigned_to="functional", command=PRINT_ENV)])

    async def scenario():
        task = await engine.submit_task(None, "own")
        await engine.run_until_idle()
        return await engine.get_task(task.id)

    task = wfe_run(scenario())
    assert task.status is TaskStatus.COMPLETED, task.error
    for key, value in {**SECRETS, **{key: os.environ[key] for key in ENV_KEYS}}.items():
        assert task.output[key] == value
    assert task.output["WFE_TASK_ID"] == task.id
    assert task.output["WFE_PHASE"] == "peek"

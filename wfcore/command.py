"""Subprocess phases: run a phase's ``command`` in a fresh work folder.

The command (an argv list, never run through a shell) gets:

* its working directory, a new temporary folder, holding ``artifacts/<name>``: a
  copy of every artifact the task has so far;
* the task as JSON on stdin: ``id``, ``workflow_name``, ``classification``,
  ``data``, ``context``, ``outputs``, ``attempts`` and ``artifacts`` (names);
* the environment variables ``WFE_TASK_ID`` and ``WFE_PHASE``.

Its stdout becomes the phase output (parsed when it is JSON, else the text;
nothing printed means None), every file it writes under ``out/`` becomes an
artifact keeping its relative path, and a non-zero exit fails the attempt with
the tail of stderr. On timeout or cancellation the whole process group is killed.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import CommandError
from .model import Phase, Task

if TYPE_CHECKING:
    from .engine import ECSWorkflowEngine

__all__ = ["run_command"]

_STDERR_TAIL = 2000


async def run_command(task: Task, phase: Phase, engine: ECSWorkflowEngine) -> None:
    """Run ``phase.command`` for ``task``; set its output and collect its artifacts."""
    assert phase.command
    workdir = Path(tempfile.mkdtemp(prefix=f"wfe-{task.id[:12]}-"))
    try:
        await asyncio.to_thread(_mount_artifacts, task, workdir)
        (workdir / "out").mkdir()
        stdout, stderr, returncode = await _run(
            phase.command, workdir, _stdin_for(task), task, phase
        )
        if returncode != 0:
            tail = stderr.decode("utf-8", "replace")[-_STDERR_TAIL:].strip()
            raise CommandError(
                f"command {phase.command[0]!r} exited with status {returncode}"
                + (f": {tail}" if tail else ""),
                returncode,
                tail,
            )
        task.output = _parse_output(stdout)
        for path in sorted((workdir / "out").rglob("*")):
            if path.is_file():
                name = path.relative_to(workdir / "out").as_posix()
                await engine.add_artifact_bytes(task, name, path.read_bytes())
    finally:
        await asyncio.to_thread(shutil.rmtree, workdir, True)


async def _run(
    argv: list[str], workdir: Path, stdin: bytes, task: Task, phase: Phase
) -> tuple[bytes, bytes, int]:
    env = dict(os.environ, WFE_TASK_ID=task.id, WFE_PHASE=phase.target_classification)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=workdir,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
    except OSError as exc:
        raise CommandError(f"cannot start command {argv[0]!r}: {exc}", None, "") from None
    try:
        stdout, stderr = await proc.communicate(stdin)
    except BaseException:
        # Timeout or cancellation: the command and everything it started go.
        _kill_group(proc.pid)
        await proc.wait()
        raise
    return stdout, stderr, proc.returncode if proc.returncode is not None else -1


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _mount_artifacts(task: Task, workdir: Path) -> None:
    folder = workdir / "artifacts"
    folder.mkdir()
    for art in task.artifacts:
        if art.path and Path(art.path).is_file():
            target = folder / art.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(art.path, target)


def _stdin_for(task: Task) -> bytes:
    doc = {
        "id": task.id,
        "workflow_name": task.workflow_name,
        "classification": task.classification,
        "data": task.data,
        "context": task.context,
        "outputs": task.outputs,
        "attempts": task.attempts,
        "artifacts": [a.name for a in task.artifacts],
    }
    return json.dumps(doc).encode()


def _parse_output(stdout: bytes) -> Any:
    text = stdout.decode("utf-8", "replace").strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text

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
the tail of stderr. On timeout or cancellation the whole process group is killed,
and so it is when the worker process dies (even by SIGKILL): the command runs
under a small ``/bin/sh`` guard that holds the read end of a pipe whose only write
end the worker holds, and kills the group when that pipe closes. A worker that
takes the task over then never runs the command beside an orphaned earlier run.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import AdapterError, CommandError
from .model import Phase, Task
from .wire import json_problem

if TYPE_CHECKING:
    from .engine import ECSWorkflowEngine

__all__ = ["run_command"]

_STDERR_TAIL = 2000


async def run_command(task: Task, phase: Phase, engine: ECSWorkflowEngine) -> None:
    """Run ``phase.command`` for ``task``; set its output and collect its artifacts."""
    assert phase.command
    refused = engine.command_refused(task.workflow_name, phase.command)
    if refused is not None:
        raise AdapterError(f"phase {phase.target_classification!r}: {refused}")
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
                f"command {phase.command[0]!r} {_exit_text(returncode)}"
                + (f": {tail}" if tail else ""),
                returncode,
                tail,
            )
        output = _parse_output(stdout)
        for path in sorted((workdir / "out").rglob("*")):
            if path.is_file():
                name = path.relative_to(workdir / "out").as_posix()
                await engine.add_artifact_bytes(task, name, path.read_bytes())
        task.output = output  # only once every artifact is in: else the attempt failed
    finally:
        await asyncio.to_thread(shutil.rmtree, workdir, True)


# The guard: $1 is the pipe's descriptor; a watcher waits for EOF on it (the
# worker died, or is done) and then kills the whole process group. The command
# runs in the foreground with the phase's stdin; its arguments are "$@", never
# parsed by the shell. (It inherits a read end of the pipe, which is harmless:
# only the worker's write end keeps the pipe open.) The watcher is reaped before
# the guard exits, so it cannot outlive a command that finished and kill what the
# command left running.
_GUARD = (
    '(read _ < "/dev/fd/$1"; kill -9 0) </dev/null & watcher=$!\n'
    "shift\n"
    '"$@"\n'
    "status=$?\n"
    "kill $watcher 2>/dev/null; wait $watcher 2>/dev/null\n"
    "exit $status\n"
)


async def _run(
    argv: list[str], workdir: Path, stdin: bytes, task: Task, phase: Phase
) -> tuple[bytes, bytes, int]:
    env = dict(os.environ, WFE_TASK_ID=task.id, WFE_PHASE=phase.target_classification)
    _check_program(argv[0], env)
    alive_read, alive_write = os.pipe()
    try:
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh",
            "-c",
            _GUARD,
            "wfe-command-guard",
            str(alive_read),
            *argv,
            cwd=workdir,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,
            pass_fds=(alive_read,),
        )
    except OSError as exc:
        os.close(alive_write)
        raise CommandError(f"cannot start command {argv[0]!r}: {exc}", None, "") from None
    finally:
        os.close(alive_read)
    try:
        stdout, stderr = await proc.communicate(stdin)
    except BaseException:
        # Timeout or cancellation: the command and everything it started go.
        _kill_group(proc.pid)
        await proc.wait()
        raise
    finally:
        os.close(alive_write)
    return stdout, stderr, proc.returncode if proc.returncode is not None else -1


def _exit_text(returncode: int) -> str:
    """How the command ended. Under the guard shell a signal shows as 128 + N,
    which a command can also exit with on its own: the signal is named as likely."""
    if returncode < 0:
        return f"was killed by {_signal_name(-returncode)}"
    if 128 < returncode < 128 + signal.NSIG:
        return f"exited with status {returncode} ({_signal_name(returncode - 128)}, likely)"
    return f"exited with status {returncode}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _check_program(program: str, env: Mapping[str, str]) -> None:
    """Refuse a command that cannot start, as exec would (the guard shell would only
    exit with status 127)."""
    if "/" not in program:
        if shutil.which(program, path=env.get("PATH", os.defpath)) is not None:
            return
        problem = "no such file on PATH"
    elif os.path.isfile(program) and os.access(program, os.X_OK):
        return
    else:
        problem = "not an executable file" if os.path.exists(program) else "no such file"
    raise CommandError(f"cannot start command {program!r}: {problem}", None, "")


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
        value = json.loads(text, parse_constant=_not_json)
    except ValueError:
        return text
    # Python reads some text that JSON does not allow (1e999 as infinity, an escaped
    # lone surrogate): such output is text, like any other that is not JSON.
    return text if json_problem(value) is not None else value


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")

"""Subprocess phases: run a phase's ``command`` in a fresh work folder.

The command (an argv list, never run through a shell) gets:

* its working directory, a new temporary folder, holding ``artifacts/<name>``: a
  copy of every artifact the task has so far;
* the task as JSON on stdin: ``id``, ``workflow_name``, ``classification``,
  ``data``, ``context``, ``outputs``, ``attempts`` and ``artifacts`` (names);
* the environment variables ``WFE_TASK_ID`` and ``WFE_PHASE``.

A workflow registered in code gives its commands the worker's whole environment;
one defined at run time (whose commands and arguments come from a submitter) only
PATH, HOME, LANG, LC_*, TZ and TMPDIR besides those two.

Its stdout becomes the phase output (parsed when it is JSON, else the text;
nothing printed means None), every regular file it writes under ``out/`` becomes
an artifact keeping its relative path (copied in a thread, in chunks; symbolic
links and other special files are skipped, named in an ``artifacts_skipped``
history event and a warning), and a non-zero exit fails the attempt with
the tail of stderr. Stdout is limited to :data:`MAX_STDOUT` bytes (more fails the
attempt: large results belong in ``out/``).

The command runs in a session of its own, whose process groups are killed when
the command exits (whatever it left running in the background goes too, also in
a group of its own, as GNU timeout makes), on timeout or cancellation, and when
the worker process dies, even by SIGKILL: the command runs under a small
``/bin/sh`` guard that holds the read end of a pipe whose only write end the
worker holds, and kills them when that pipe closes. (A session's groups are
found in /proc: elsewhere than on Linux only the command's own group is killed.) A worker that
takes the task over then never runs the command beside an orphaned earlier run.
Work folders are named after the worker's host and process, so that a worker
starting up removes those of dead workers on its host (:func:`remove_stale_workdirs`).
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import stat
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from . import _held_files
from ._processes import pid_alive
from .artifacts import COPY_CHUNK, copy_artifact, listed_artifact
from .errors import AdapterError, ArtifactError, CommandError, PermanentError
from .model import Artifact, Phase, Task
from .wire import json_problem

if TYPE_CHECKING:
    from .engine import ECSWorkflowEngine

__all__ = ["MAX_STDOUT", "remove_stale_workdirs", "run_command"]

logger = logging.getLogger("wfcore")

#: The most a command may write to stdout, in bytes; more fails the attempt.
MAX_STDOUT = 16 * 1024 * 1024

_STDERR_TAIL = 2000
# Read from stderr, only the end is kept: what failed is usually said last.
_STDERR_KEEP = 64 * 1024


async def run_command(task: Task, phase: Phase, engine: ECSWorkflowEngine) -> None:
    """Run ``phase.command`` for ``task``; set its output and collect its artifacts."""
    assert phase.command
    refused = engine.command_refused(task.workflow_name, phase.command)
    if refused is not None:
        raise AdapterError(f"phase {phase.target_classification!r}: {refused}")
    store = await engine.get_store()
    workdir = Path(tempfile.mkdtemp(prefix=f"{_workdir_prefix(os.getpid())}{task.id[:12]}-"))
    try:
        await _mount(task, store.artifacts_dir, workdir)
        (workdir / "out").mkdir()
        env = _command_env(task, phase, full=engine.registered_in_code(task.workflow_name))
        stdout, stderr, returncode = await _run(phase.command, workdir, _stdin_for(task), env)
        if returncode != 0:
            raise _exit_error(phase, returncode, stderr, workdir)
        output = _parse_output(stdout)
        if engine._worker.runs_phase_of(task):
            await engine._worker.check_lease(task)
        collected, skipped = await _collect(workdir / "out", store.artifacts_dir, task)
        # As engine.add_artifact_bytes does inside a running phase: the artifacts are
        # stored with the task when the phase ends.
        names = {art.name for art in collected}
        task.artifacts = [a for a in task.artifacts if a.name not in names] + collected
        if skipped:
            _report_skipped(task, phase, skipped)
        task.output = output  # only once every artifact is in: else the attempt failed
    finally:
        await asyncio.to_thread(shutil.rmtree, workdir, True)


async def _mount(task: Task, root: Path, workdir: Path) -> None:
    """Copy the task's artifacts into the work folder (see :func:`_mount_artifacts`),
    in a thread that a timeout or cancel stops at its next chunk, and waits for:
    else it would go on copying, and make the work folder again after its removal."""
    stop = threading.Event()
    mounting = asyncio.ensure_future(asyncio.to_thread(_mount_artifacts, task, root, workdir, stop))
    try:
        await asyncio.shield(mounting)
    except asyncio.CancelledError:
        stop.set()
        await asyncio.wait([mounting])
        if not mounting.cancelled():
            mounting.exception()  # _Stopped, most likely: expected, not to be logged
        raise


async def _collect(out: Path, root: Path, task: Task) -> tuple[list[Artifact], dict[str, str]]:
    """Collect ``out`` as the task's artifacts (see :func:`_collect_out`).

    In a thread: a large file takes a while to copy, and the loop has other work. A
    timeout or cancel meanwhile stops the copying at its next chunk, and what was
    copied goes, before the attempt ends: else the thread would go on writing files
    the failed attempt does not name, after their removal, beside a rerun's.
    """
    existing = {art.name for art in task.artifacts}
    stop = threading.Event()
    collecting = asyncio.ensure_future(
        asyncio.to_thread(_collect_out, out, root, task.id, task.classification, existing, stop)
    )
    try:
        return await asyncio.shield(collecting)
    except asyncio.CancelledError:
        stop.set()
        await asyncio.wait([collecting])
        if not collecting.cancelled() and collecting.exception() is None:
            collected, _ = collecting.result()  # done all the same: not this attempt's now
            copies = [art for art in collected if art.name not in existing]
            await asyncio.to_thread(_remove_copies, root, task.id, copies)
        raise


class _Stopped(Exception):
    """The attempt ended (timed out, cancelled) while its out/ files were copied."""


class _StoppableReader:
    """A file whose reading raises :class:`_Stopped` once ``stop`` is set."""

    def __init__(self, source: BinaryIO, stop: threading.Event) -> None:
        self._source = source
        self._stop = stop

    def read(self, size: int = -1) -> bytes:
        if self._stop.is_set():
            raise _Stopped()
        return self._source.read(size)


# The guard: $1 is the pipe's descriptor; a watcher waits for EOF on it (the
# worker died, or is done) and then kills every other process group of the guard's
# session ($$: the guard leads it), as _kill_session does, and last its own. The
# command runs in the foreground with the phase's stdin; its arguments are "$@",
# never parsed by the shell. (It inherits a read end of the pipe, which is
# harmless: only the worker's write end keeps the pipe open.) The watcher holds
# none of the command's pipes, so it never keeps the worker reading; it is reaped
# before the guard exits, which the worker waits for to kill what the command left
# running. In /proc/PID/stat, the fields after the name's ") " are state, parent,
# process group and session.
_GUARD = (
    '(read _ < "/dev/fd/$1"\n'
    " for s in /proc/[0-9]*/stat; do\n"
    '  read -r l < "$s" && set -- ${l##*) } && [ "$4" = "$$" ] && [ "$3" != "$$" ] &&'
    ' kill -9 "-$3"\n'
    " done\n"
    " kill -9 0) </dev/null >/dev/null 2>&1 & watcher=$!\n"
    "shift\n"
    '"$@"\n'
    "status=$?\n"
    "kill $watcher 2>/dev/null; wait $watcher 2>/dev/null\n"
    "exit $status\n"
)


class _GuardProtocol(asyncio.subprocess.SubprocessStreamProtocol):
    """Also tells when the guard itself has exited: the command's pipes may stay
    open after that, held by what it left running in the background."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=2**16, loop=loop)
        self.exited: asyncio.Future[None] = loop.create_future()

    def process_exited(self) -> None:
        super().process_exited()
        if not self.exited.done():
            self.exited.set_result(None)


# What a command of a workflow defined at run time gets from the worker's
# environment: enough to find programs, and for them to behave as usual.
_MINIMAL_ENV = ("PATH", "HOME", "LANG", "TZ", "TMPDIR")


def _command_env(task: Task, phase: Phase, *, full: bool) -> dict[str, str]:
    """The command's environment. A workflow registered in code gets the worker's
    whole environment: its author chose its commands. One defined at run time was
    written by whoever could submit a task, who also chooses the arguments of an
    allowed program (``jq -n env``): it gets none of the worker's secrets (API keys,
    tokens, the store's URL), only the variables of :data:`_MINIMAL_ENV` and LC_*."""
    if full:
        env = dict(os.environ)
    else:
        env = {
            key: value
            for key, value in os.environ.items()
            if key in _MINIMAL_ENV or key.startswith("LC_")
        }
    env["WFE_TASK_ID"] = task.id
    env["WFE_PHASE"] = phase.target_classification
    return env


async def _run(
    argv: list[str], workdir: Path, stdin: bytes, env: dict[str, str]
) -> tuple[bytes, bytes, int]:
    _check_arguments(argv)
    _check_program(argv[0], env, workdir)
    loop = asyncio.get_running_loop()
    alive_read, alive_write = os.pipe()
    try:
        transport, protocol = await loop.subprocess_exec(
            lambda: _GuardProtocol(loop),
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
    except BaseException as exc:
        # Also on a timeout or cancel while the guard starts: the closed pipe makes
        # its watcher kill whatever did start, or asyncio would wait on it for ever.
        os.close(alive_write)
        if isinstance(exc, OSError):
            raise CommandError(f"cannot start command {argv[0]!r}: {exc}", None, "") from None
        raise
    finally:
        os.close(alive_read)
    proc = asyncio.subprocess.Process(transport, protocol, loop)
    try:
        stdout, stderr = await _communicate(proc, transport, protocol, stdin)
    except BaseException:
        # Timeout, cancellation or too much output: the command and everything
        # it started go. Its pipes are closed here, as nothing reads them any more
        # (a full one would be paused, and never seen to close).
        _kill_group(proc.pid)
        _close_pipes(transport)
        await proc.wait()
        raise
    finally:
        os.close(alive_write)
    return stdout, stderr, proc.returncode if proc.returncode is not None else -1


# How long the command's pipes are read after it exited and its process group was
# killed: only a process that left the group (setsid) can still hold them then.
_AFTER_EXIT = 1.0


async def _communicate(
    proc: asyncio.subprocess.Process,
    transport: asyncio.SubprocessTransport,
    protocol: _GuardProtocol,
    stdin: bytes,
) -> tuple[bytes, bytes]:
    """Feed stdin and read stdout and stderr until the command has exited; then
    kill what it left running, whose open pipes would keep the reading waiting."""
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    feeding = asyncio.ensure_future(_feed(proc.stdin, stdin))
    reading_out = asyncio.ensure_future(_read_at_most(proc.stdout, MAX_STDOUT))
    reading_err = asyncio.ensure_future(_read_tail(proc.stderr, _STDERR_KEEP))
    helpers = (feeding, reading_out, reading_err)
    try:
        first: list[asyncio.Future[Any]] = [reading_out, protocol.exited]
        await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
        if reading_out.done():
            reading_out.result()  # too much output raises here, before the exit
        await protocol.exited
        _kill_group(proc.pid)
        _, late = await asyncio.wait([reading_out, reading_err, feeding], timeout=_AFTER_EXIT)
        if late:
            _close_pipes(transport)  # the readers end with what they have
        stdout, stderr, _ = await asyncio.gather(reading_out, reading_err, feeding)
        await proc.wait()
        return stdout, stderr
    finally:
        for helper in helpers:
            helper.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)


def _close_pipes(transport: asyncio.SubprocessTransport) -> None:
    for fd in (0, 1, 2):
        pipe = transport.get_pipe_transport(fd)
        if pipe is not None:
            pipe.close()


async def _feed(pipe: asyncio.StreamWriter, data: bytes) -> None:
    try:
        pipe.write(data)
        await pipe.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the command did not read all of it: its business
    finally:
        pipe.close()


async def _read_at_most(pipe: asyncio.StreamReader, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await pipe.read(2**16):
        size += len(chunk)
        if size > limit:
            raise CommandError(
                f"the command wrote more than {limit:,} bytes to stdout; "
                "write large results to files under out/ (they become artifacts)",
                None,
                "",
            )
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_tail(pipe: asyncio.StreamReader, keep: int) -> bytes:
    tail = b""
    while chunk := await pipe.read(2**16):
        tail = (tail + chunk)[-keep:]
    return tail


def _workdir_prefix(pid: int) -> str:
    """``wfe-<host>-<pid>-``: whose work folders these are, for the sweep after a crash."""
    return f"{_host_prefix()}{pid}-"


def _host_prefix() -> str:
    """``wfe-<host>-``, the host a hash of its name (which may hold any character)."""
    return f"wfe-{hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]}-"


def remove_stale_workdirs() -> int:
    """Remove the work folders left by dead worker processes of this host (killed
    while a command ran); return how many."""
    # One sweep at a time: a worker sweeps as it starts and again when it frees a
    # dead worker's leases, and two sweeps at once would each count the same folders.
    with _sweeping:
        return _remove_stale_workdirs()


_sweeping = threading.Lock()


def _remove_stale_workdirs() -> int:
    mine = _host_prefix()
    removed = 0
    try:
        entries = list(os.scandir(tempfile.gettempdir()))
    except OSError:
        return 0
    for entry in entries:
        if not entry.name.startswith(mine):
            continue
        pid_text = entry.name[len(mine) :].partition("-")[0]
        if not pid_text.isdigit() or pid_alive(int(pid_text)):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed += 1
    if removed:
        logger.info("removed %d command work folder(s) of dead workers", removed)
    return removed


def _exit_error(phase: Phase, returncode: int, stderr: bytes, workdir: Path) -> Exception:
    """The error a non-zero exit fails the attempt with: a CommandError, or a
    PermanentError (the task fails at once) for one of the phase's
    ``permanent_exit_codes``."""
    assert phase.command
    tail = stderr.decode("utf-8", "replace")[-_STDERR_TAIL:].strip()
    said = f"command {phase.command[0]!r} {_exit_text(returncode)}" + _path_hint(
        phase.command, workdir
    )
    error = CommandError(said + (f": {tail}" if tail else ""), returncode, tail)
    if returncode not in (phase.permanent_exit_codes or ()):
        return error
    permanent = PermanentError(
        f"{said}, one of the phase's permanent_exit_codes, so it is not tried again"
        + (f": {tail}" if tail else "")
    )
    permanent.__cause__ = error
    return permanent


def _path_hint(argv: list[str], workdir: Path) -> str:
    """A hint for a command given a relative path to a file of the worker's folder
    (``["python3", "extract.py"]`` beside the app): it runs in a work folder of its
    own, where there is no such file."""
    try:
        here = Path.cwd()
    except OSError:  # the worker's folder was deleted under it (a release replaced)
        return ""
    for argument in argv[1:]:
        if not argument or argument.startswith("-") or os.path.isabs(argument):
            continue
        try:
            there = os.path.lexists(here / argument) and not os.path.lexists(workdir / argument)
        except (OSError, ValueError):  # a name too long for a path, say
            continue
        if there:
            return (
                f" (its argument {argument!r} is a file of the worker's folder {here}, "
                "but the command runs in a work folder of its own: give its absolute path)"
            )
    return ""


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


def _check_arguments(argv: list[str]) -> None:
    """Refuse an argument no program can be given (the operating system takes each
    as a C string, which ends at a NUL), naming it, rather than failing with
    Python's bare ``ValueError: embedded null byte``."""
    for index, argument in enumerate(argv):
        if "\x00" in argument:
            raise CommandError(
                f"cannot start command {argv[0]!r}: its argument {index} ({argument!r}) "
                "holds a NUL character, which no program can be given",
                None,
                "",
            )


def _check_program(program: str, env: Mapping[str, str], workdir: Path) -> None:
    """Refuse a command that cannot start, as exec would (the guard shell would only
    exit with status 127). A relative path is relative to the work folder, where
    the command runs."""
    if "/" not in program:
        if shutil.which(program, path=env.get("PATH", os.defpath)) is not None:
            return
        problem = "no such file on PATH"
    else:
        path = os.path.join(workdir, program)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return
        problem = "not an executable file" if os.path.exists(path) else "no such file"
        if not os.path.isabs(program):
            problem += " (a relative path is looked up in the phase's work folder)"
    raise CommandError(f"cannot start command {program!r}: {problem}", None, "")


def _kill_group(pid: int) -> None:
    """Kill the guard's process group (the command, and what it left running), then,
    in a thread, every other group of the guard's session: what the command ran in
    a group of its own (GNU timeout, make, a shell with job control) goes too."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    # A few ms for a few hundred processes: not on the event loop.
    asyncio.get_running_loop().run_in_executor(None, _kill_session, pid)


def _kill_session(sid: int) -> None:
    """SIGKILL every process group of session ``sid``, found in /proc (Linux; elsewhere
    only the command's own group is killed). Looked for again while some are found:
    one may have started another group as the first look went by."""
    for _ in range(3):
        try:
            names = os.listdir("/proc")
        except OSError:
            return
        groups = set()
        for name in names:
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat", "rb") as fh:
                    stat = fh.read()
                # After the name, in parentheses it may itself hold: state, parent,
                # process group, session. A zombie (Z) is dead already.
                fields = stat[stat.rindex(b")") + 2 :].split()
                if int(fields[3]) == sid and fields[0] != b"Z":
                    groups.add(int(fields[2]))
            except (OSError, ValueError, IndexError):
                continue  # gone meanwhile
        if not groups:
            return
        for group in groups:
            try:
                os.killpg(group, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def _mount_artifacts(task: Task, root: Path, workdir: Path, stop: threading.Event) -> None:
    """Copy the task's artifacts into ``artifacts/``, from the store's artifact
    folder (as ``read_artifact`` reads them), not from the path each one was written
    to: a store restored elsewhere, or a copy beside the live one, has its files in
    its own folder. A file that is not there fails the attempt, naming it, rather
    than leaving the command to fail on a missing file."""
    folder = workdir / "artifacts"
    folder.mkdir()
    for art in task.artifacts:
        try:
            source = listed_artifact(root, task.id, art.name)
        except ArtifactError as exc:
            raise ArtifactError(f"cannot give the command the task's artifacts: {exc}") from None
        target = folder / art.name
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(source, "rb") as reading, open(target, "wb") as writing:
            while chunk := reading.read(COPY_CHUNK):
                if stop.is_set():
                    raise _Stopped()
                writing.write(chunk)


def _collect_out(
    out: Path,
    root: Path,
    task_id: str,
    phase: str | None,
    existing: set[str],
    stop: threading.Event,
) -> tuple[list[Artifact], dict[str, str]]:
    """Copy the regular files under ``out`` as the task's artifacts (named by their
    path below it, in name order); return them, and what was skipped (its path in
    the work folder, and what it is).

    A file that cannot become an artifact (its name has a control character, say)
    fails the attempt, naming it; the files already copied then go, but for those
    that replaced one of the ``existing`` artifacts (as any failed attempt's new
    files go, so that a rerun can write them again).

    Only regular files are taken, and no symbolic link is followed: the worker
    reads what it collects, so a link (made by tar unpacking a user's archive, say)
    to /proc/self/environ or /etc/passwd would hand the worker's environment or
    files to whoever made it. Links, pipes, sockets and devices are skipped. Each
    folder and file is opened with O_NOFOLLOW relative to its folder's descriptor,
    so a link swapped in after the check is not followed either, and with
    O_NONBLOCK, so a pipe swapped in cannot block the open.
    """
    skipped: dict[str, str] = {}
    collected: list[Artifact] = []
    try:
        folder_fd = _open_entry(str(out), None, directory=True)
    except FileNotFoundError:
        return collected, skipped  # the command removed it: nothing to collect
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        # The command put something else in the folder's place: none of it is read.
        mode = os.lstat(out).st_mode
        skipped["out"] = "file, not a folder" if stat.S_ISREG(mode) else _file_kind(mode)
        return collected, skipped
    try:
        _collect_folder(folder_fd, "", root, task_id, phase, collected, skipped, stop)
    except BaseException as exc:
        _remove_copies(root, task_id, [art for art in collected if art.name not in existing])
        if isinstance(exc, RecursionError):
            raise CommandError(
                "the folders under out/ nest too deeply to collect", None, ""
            ) from None
        raise
    finally:
        os.close(folder_fd)
    collected.sort(key=lambda art: art.name)
    return collected, skipped


def _open_entry(name: str, folder_fd: int | None, *, directory: bool) -> int:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
    return os.open(name, flags | os.O_DIRECTORY if directory else flags, dir_fd=folder_fd)


def _collect_folder(
    folder_fd: int,
    prefix: str,
    root: Path,
    task_id: str,
    phase: str | None,
    collected: list[Artifact],
    skipped: dict[str, str],
    stop: threading.Event,
) -> None:
    with os.scandir(folder_fd) as entries:
        names = sorted(entry.name for entry in entries)
    for entry in names:
        name = f"{prefix}{entry}"
        try:
            info = os.stat(entry, dir_fd=folder_fd, follow_symlinks=False)
            if not (stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode)):
                skipped[f"out/{name}"] = _file_kind(info.st_mode)
                continue
            if _held_files.is_held(info):
                # A hard link to the store's database: reading it here would drop
                # this worker's locks on the store (see wfcore._held_files).
                skipped[f"out/{name}"] = "the store's database file, open in this worker"
                continue
            fd = _open_entry(entry, folder_fd, directory=stat.S_ISDIR(info.st_mode))
        except FileNotFoundError:
            continue  # gone since the folder was listed
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            # Replaced since the stat, by a link (ELOOP) or a file in a folder's place.
            skipped[f"out/{name}"] = (
                "symbolic link" if exc.errno == errno.ELOOP else "changed while collected"
            )
            continue
        if stat.S_ISDIR(info.st_mode):
            try:
                _collect_folder(fd, f"{name}/", root, task_id, phase, collected, skipped, stop)
            finally:
                os.close(fd)
            continue
        with open(fd, "rb") as source:
            info = os.fstat(source.fileno())
            if not stat.S_ISREG(info.st_mode):
                skipped[f"out/{name}"] = _file_kind(info.st_mode)
                continue
            # A hard link is copied like any file: unlike a symbolic link it names a
            # file of the same file system that the command could read itself, and
            # the copy does not change when that file does. At most the size the
            # file had when opened is copied: what a process left behind (setsid)
            # still writes to it cannot make the copy endless.
            try:
                reader = cast(BinaryIO, _StoppableReader(source, stop))
                art = copy_artifact(root, task_id, name, reader, phase, limit=info.st_size)
            except ArtifactError as exc:
                shown = "out/" + (name if len(name) <= 80 else f"{name[:60]}...")
                raise ArtifactError(f"{shown!r} cannot become an artifact: {exc}") from None
            collected.append(art)


def _remove_copies(root: Path, task_id: str, copies: list[Artifact]) -> None:
    """Delete the files of artifacts an attempt that failed copied, and the folders
    that leaves empty in the task's artifact folder."""
    base = root / task_id
    for art in copies:
        if not art.path:
            continue
        path = Path(art.path)
        path.unlink(missing_ok=True)
        parent = path.parent
        while parent != base and base in parent.parents:
            try:
                parent.rmdir()  # only when empty
            except OSError:
                break
            parent = parent.parent


def _file_kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "symbolic link"
    if stat.S_ISFIFO(mode):
        return "named pipe"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    if stat.S_ISREG(mode):
        return "file"
    return "special file"


# How many skipped files the history event and the log line name (the count is whole).
_SKIPPED_SHOWN = 20


def _report_skipped(task: Task, phase: Phase, skipped: dict[str, str]) -> None:
    """Say what under out/ did not become an artifact: in the task's history, where
    whoever misses a file looks, and in the worker's log."""
    shown = dict(sorted(skipped.items())[:_SKIPPED_SHOWN])
    # A name in another encoding cannot be stored as JSON: shown with escapes.
    shown = {_printable(path): kind for path, kind in shown.items()}
    task.record(
        "artifacts_skipped",
        phase=phase.target_classification,
        files=shown,
        count=len(skipped),
    )
    listed = ", ".join(f"{path!r} ({kind})" for path, kind in shown.items())
    more = f" and {len(skipped) - len(shown)} more" if len(skipped) > len(shown) else ""
    logger.warning(
        "task %s phase %r: not collected as artifacts: %s%s",
        task.id,
        phase.target_classification,
        listed,
        more,
    )


def _printable(path: str) -> str:
    return os.fsencode(path).decode("utf-8", "backslashreplace")


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
    except (ValueError, RecursionError):
        # Nested deeper than Python's recursion limit: text too (a deep value that
        # parses is refused by json_problem below).
        return text
    # Python reads some text that JSON does not allow (1e999 as infinity, an escaped
    # lone surrogate): such output is text, like any other that is not JSON.
    return text if json_problem(value) is not None else value


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")

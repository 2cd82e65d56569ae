"""Run ``python -m wfcore.cli`` commands in processes forked from a warmed-up interpreter.

Most of a short ``wfe`` command's time is Python importing wfcore and its
dependencies, and the test suite runs about a thousand of them. A fork server
imports ``wfcore.cli`` once; each command then runs in a process forked from it,
with the test's arguments, environment, working folder and standard streams, and
ends through the interpreter's usual exit (atexit handlers, non-daemon threads
joined, an uncaught exception printed with exit status 1), so its exit status,
output and files are what the test would get from ``python -m wfcore.cli``.

What a fork cannot reproduce, a command runs as a new interpreter instead: an
environment whose ``PYTHON*`` or locale variables differ from the server's (they
act as Python starts), or no fork server (not Linux, or ``WFE_TEST_FORKS=0``).

Started as ``python cli_forks.py SOCKET`` it is the server: one connection per
command (a Unix socket of whole messages: the request arrives in one piece), the
command's stdin, stdout and stderr passed along with it (SCM_RIGHTS),
its exit status sent back when it ends; a client that hangs up (a timeout, an
interrupted test) has its command killed.
"""

from __future__ import annotations

import contextlib
import json
import locale
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# Variables read as the interpreter starts (or by the locale it sets up then): a
# command whose environment differs from the server's in one of them is run anew.
_STARTUP_PREFIXES = ("PYTHON", "LC_")
_STARTUP_NAMES = {"LANG", "LANGUAGE"}


def wfe_argv(args: Sequence[str]) -> list[str]:
    """The command line of ``wfe ARGS`` as the tests run it."""
    return [sys.executable, "-m", "wfcore.cli", *args]


def run_fresh(args: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """``wfe ARGS`` in a new interpreter: ``subprocess.run`` with its output
    captured as text, and ``kwargs`` (cwd, env, input, timeout...)."""
    return subprocess.run(wfe_argv(args), capture_output=True, text=True, **kwargs)


def _startup_env(env: Mapping[str, str]) -> dict[str, str]:
    return {
        name: value
        for name, value in env.items()
        if name.startswith(_STARTUP_PREFIXES) or name in _STARTUP_NAMES
    }


class ForkServer:
    """A running fork server for commands whose environment starts like ``env``."""

    def __init__(self, folder: Path, env: Mapping[str, str]) -> None:
        self.env = dict(env)
        self.path = str(folder / "forks.sock")
        with open(folder / "forks.log", "wb") as log:
            self._proc = subprocess.Popen(
                [sys.executable, __file__, self.path],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        deadline = time.monotonic() + 60
        while not os.path.exists(self.path):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the fork server did not start: see {folder / 'forks.log'}")
            time.sleep(0.01)

    @property
    def pid(self) -> int:
        """The server's process id: each command's parent."""
        return self._proc.pid

    def close(self) -> None:
        self._proc.kill()
        self._proc.wait()

    def fits(self, env: Mapping[str, str]) -> bool:
        """Whether a command with ``env`` can run as a fork of this server."""
        return self._proc.poll() is None and _startup_env(env) == _startup_env(self.env)

    def run(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: str | os.PathLike[str],
        input: str | None = None,
        timeout: float | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """:func:`run_fresh`, in a fork."""
        argv = wfe_argv(args)
        request = json.dumps({"args": list(args), "env": dict(env), "cwd": os.fspath(cwd)})
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        with (
            _stdin(input) as stdin,
            socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as conn,
            open(out_r, "rb", buffering=0) as out,
            open(err_r, "rb", buffering=0) as err,
        ):
            try:
                conn.connect(self.path)
                socket.send_fds(conn, [request.encode()], [stdin.fileno(), out_w, err_w])
            finally:
                os.close(out_w)
                os.close(err_w)
            read, ended = _read_until_closed([out, err, conn], timeout)
        stdout, stderr = _text(read[out]), _text(read[err])
        if not ended:
            # Hanging up has the server kill the command, as subprocess.run would.
            raise subprocess.TimeoutExpired(argv, timeout or 0, stdout, stderr)
        if not read[conn]:
            raise RuntimeError("the fork server ended while a command ran")
        return subprocess.CompletedProcess(argv, int(read[conn]), stdout, stderr)


def _stdin(input: str | None) -> Any:
    if input is None:
        return open(os.devnull, "rb")
    file = tempfile.TemporaryFile()
    file.write(input.encode())
    file.seek(0)
    return file


def _read_until_closed(streams: list[Any], timeout: float | None) -> tuple[dict[Any, bytes], bool]:
    """Each stream's bytes up to its end, and True; or, when ``timeout`` passes
    first, what came until then, and False."""
    chunks: dict[Any, list[bytes]] = {stream: [] for stream in streams}
    deadline = None if timeout is None else time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        for stream in streams:
            selector.register(stream, selectors.EVENT_READ)
        while selector.get_map():
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready = selector.select(left)
            if not ready:
                break
            for key, _ in ready:
                stream = key.fileobj
                if isinstance(stream, socket.socket):
                    chunk = stream.recv(65536)
                else:
                    chunk = stream.read(65536)
                if chunk:
                    chunks[stream].append(chunk)
                else:
                    selector.unregister(stream)
        ended = not selector.get_map()
    return {stream: b"".join(parts) for stream, parts in chunks.items()}, ended


def _text(data: bytes) -> str:
    """What ``subprocess.run(text=True)`` makes of a stream's bytes."""
    text = data.decode(locale.getpreferredencoding(False))
    return text.replace("\r\n", "\n").replace("\r", "\n")


# The server --------------------------------------------------------------------------


def _serve(path: str) -> dict[str, Any]:
    """Accept commands until killed; return (in the forked process only) the request
    that process is to run."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path + ".new")
    listener.listen(64)
    # Clients wait for the path to appear: only once it can be connected to.
    os.rename(path + ".new", path)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, None)
    running: dict[int, tuple[int, socket.socket]] = {}  # pidfd -> (pid, connection)
    hung_up: set[Any] = set()
    while True:
        for key, _ in selector.select():
            if key.fileobj is listener:
                conn, _ = listener.accept()
                message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
                request = json.loads(message)
                pid = os.fork()
                if pid == 0:
                    _leave_server(selector, listener, running, conn)
                    _take_streams(fds)
                    return request
                for fd in fds:
                    os.close(fd)
                pidfd = os.pidfd_open(pid)
                running[pidfd] = (pid, conn)
                selector.register(pidfd, selectors.EVENT_READ, "exit")
                selector.register(conn, selectors.EVENT_READ, pid)
            elif key.data == "exit":
                pidfd = key.fd
                pid, conn = running.pop(pidfd)
                selector.unregister(pidfd)
                if conn in hung_up:
                    hung_up.discard(conn)
                else:
                    selector.unregister(conn)
                os.close(pidfd)
                _, status = os.waitpid(pid, 0)
                code = os.waitstatus_to_exitcode(status)
                try:
                    conn.sendall(str(code).encode())
                except OSError:
                    pass  # the client is gone
                conn.close()
            else:
                # The client hung up before its command ended: kill the command.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(key.data, signal.SIGKILL)
                selector.unregister(key.fileobj)
                hung_up.add(key.fileobj)


def _leave_server(
    selector: selectors.BaseSelector,
    listener: socket.socket,
    running: dict[int, tuple[int, socket.socket]],
    conn: socket.socket,
) -> None:
    """Close, in a forked command, everything of the server's it inherited."""
    selector.close()
    listener.close()
    conn.close()
    for pidfd, (_, other) in running.items():
        os.close(pidfd)
        other.close()


def _take_streams(fds: list[int]) -> None:
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)


def _become(request: dict[str, Any]) -> None:
    """Make this forked process look like ``python -m wfcore.cli ARGS`` started in
    the request's folder with its environment."""
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    time.tzset()
    tempfile.tempdir = None  # found again from TMPDIR
    sys.path[0] = os.getcwd()  # as -m puts it
    sys.argv = [sys.argv[0], *request["args"]]


if __name__ == "__main__":
    import wfcore.cli  # noqa: F401 - what every command would import first

    _request = _serve(sys.argv[1])
    # Only a forked command gets here.
    import runpy

    _become(_request)
    del _request
    runpy.run_module("wfcore.cli", run_name="__main__", alter_sys=True)

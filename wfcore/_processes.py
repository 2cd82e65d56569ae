"""Processes of this host: whether one is still there (for leases and work folders
of workers that died), and a child that ends with its parent."""

from __future__ import annotations

import functools
import os
import signal
import socket
import sys
from collections.abc import Callable

__all__ = ["end_with_parent", "ending_with_parent", "pid_alive", "worker_died_here"]


def end_with_parent(signum: signal.Signals = signal.SIGTERM) -> bool:
    """Have Linux send this process ``signum`` when its parent dies, killed or not
    (``PR_SET_PDEATHSIG``). False where that cannot be asked for: not Linux, or no
    ``prctl``."""
    prctl = _prctl()
    if prctl is None:
        return False
    prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0)
    return True


def ending_with_parent(signum: signal.Signals = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` for :class:`subprocess.Popen`: the child is sent ``signum``
    when this process dies (or the thread that starts the child ends), killed or
    not; None where that cannot be asked for.

    ``prctl`` is looked up here, in the parent: the child, forked from a process
    that may have other threads, must do no more than the call before its exec
    (a lookup takes the dynamic loader's lock, which another thread may have held
    at the fork, for good in the child)."""
    prctl = _prctl()
    if prctl is None:
        return None
    number = int(signum)

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, number, 0, 0, 0)

    return preexec


_PR_SET_PDEATHSIG = 1


@functools.cache
def _prctl() -> Callable[..., int] | None:
    """libc's ``prctl``, or None: not Linux, or not found."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return prctl


def pid_alive(pid: int) -> bool:
    """True if a process with this id exists (one of another user's counts too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def worker_died_here(worker_id: str) -> bool:
    """True for a worker id (``host/pid/...``, as engines make them) of this host
    whose process is gone; False for other hosts' workers, which cannot be checked."""
    host, _, rest = worker_id.partition("/")
    pid = rest.partition("/")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    return not pid_alive(int(pid))

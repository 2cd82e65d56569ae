"""Processes of this host: whether one is still there (for leases and work folders
of workers that died), and a child that ends with its parent."""

from __future__ import annotations

import os
import signal
import socket
import sys

__all__ = ["end_with_parent", "pid_alive", "worker_died_here"]


def end_with_parent(signum: signal.Signals = signal.SIGTERM) -> bool:
    """Have Linux send this process ``signum`` when its parent dies, killed or not
    (``PR_SET_PDEATHSIG``; kept across exec, so a ``preexec_fn`` too). False where
    that cannot be asked for: not Linux, or no ``prctl``."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    pr_set_pdeathsig = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signum), 0, 0, 0)
    except (OSError, AttributeError):
        return False
    return True


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

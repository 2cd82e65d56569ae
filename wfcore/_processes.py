"""Whether a process of this host is still there (for leases and work folders of
workers that died)."""

from __future__ import annotations

import os
import socket

__all__ = ["pid_alive", "worker_died_here"]


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

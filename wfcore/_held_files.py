"""The database files this process's SQLite stores have open, which nothing else in
the process may open.

POSIX locks belong to a process and a file: closing any descriptor of a file drops
every lock the process holds on it, the locks of SQLite's connections included.
SQLite never closes its own descriptors while it holds locks; but a file wfcore
opens and closes itself (to read a header, to copy a command's output or a
submitted file) drops them silently. Another process closing the store last then
takes the file for its own and deletes the WAL this process still writes to: what
it writes from then on is seen by no other process, and overwrites theirs when it
closes. So a store records its file here while it is open (:func:`hold`), and
code that reads files which may be one asks :func:`is_held` first.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

__all__ = ["hold", "is_held", "opening", "release"]

#: (device, inode) of each file held, and by how many stores.
_held: dict[tuple[int, int], int] = {}
_lock = threading.Lock()
_opening = threading.Lock()


@contextlib.contextmanager
def opening() -> Iterator[None]:
    """Held while a store opens its file, until it has recorded it with
    :func:`hold`: stores opening at once in one process (two engines on one file,
    an app's engine and its dashboard's) would otherwise each read a file the
    other has open but has not recorded yet."""
    with _opening:
        yield


def hold(identity: tuple[int, int]) -> None:
    """Record the file ``identity`` (device, inode) as open, until :func:`release`."""
    with _lock:
        _held[identity] = _held.get(identity, 0) + 1


def release(identity: tuple[int, int]) -> None:
    """Undo one :func:`hold` of the file."""
    with _lock:
        left = _held.pop(identity, 1) - 1
        if left:
            _held[identity] = left


def is_held(info: os.stat_result | tuple[int, int]) -> bool:
    """Whether a store of this process has the file open (``info``: its stat, or
    its device and inode)."""
    identity = (info.st_dev, info.st_ino) if isinstance(info, os.stat_result) else info
    with _lock:
        return identity in _held

"""The artifact folders of purged tasks, removed even when a purge is killed.

A purge deletes a batch of tasks from the store, then their folders. Killed
between the two, it would leave folders no task owns: nothing would ever delete
them, and a task given one of those ids later would find the old files in its
folder. So while it runs, a purge leaves a mark in the artifacts folder (its
host, process and start), removed when it ends. The next purge that finds the
mark of one whose process is gone removes the folders that no stored task owns
and that nothing changed in since that purge began: the folders of the tasks it
deleted, which were finished before it began, and not those of submissions since,
which write their files before their task is stored.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from ._processes import pid_alive
from .artifacts import STORE_MARKER, remove_artifact_dirs

__all__ = ["begin_purge", "end_purge", "finish_interrupted_purges"]

logger = logging.getLogger("wfcore")

# Starts as the store's marker does, a name no task's folder may take.
_MARK_PREFIX = f"{STORE_MARKER}-purging-"
# A mark left by another host, whose process cannot be checked from here, is taken
# for an interrupted purge's after this long.
_OTHER_HOST_AFTER = 86400.0


def begin_purge(root: Path) -> Path | None:
    """Mark ``root`` as being purged; the mark's path, or None when there is no
    folder to remove (no artifacts folder) or the mark cannot be written (a full
    disk, which purging is often meant to relieve: the purge goes on without)."""
    if not root.is_dir():
        return None
    mark = root / f"{_MARK_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}.json"
    written = mark.with_name(mark.name + ".tmp")
    doc = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
    try:
        written.write_text(json.dumps(doc), encoding="utf-8")
        os.replace(written, mark)
    except OSError as exc:
        written.unlink(missing_ok=True)
        logger.warning(
            "cannot mark %s as being purged (%s): if this purge is killed, the artifact "
            "folders of the tasks it deleted may stay",
            root,
            exc.strerror or exc,
        )
        return None
    return mark


def end_purge(mark: Path | None) -> None:
    """Remove the mark of a purge that ended."""
    if mark is not None:
        mark.unlink(missing_ok=True)


async def finish_interrupted_purges(root: Path, is_stored: Callable[[str], Awaitable[bool]]) -> int:
    """After a purge that was killed, remove the folders no stored task owns
    (``is_stored``) and nothing changed in since it began; return how many."""
    marks = await asyncio.to_thread(_interrupted, root)
    if not marks:
        return 0
    since = min(started for _, started in marks)
    candidates = await asyncio.to_thread(_task_folders, root)
    removed = 0
    for task_id in candidates:
        if await is_stored(task_id):
            continue
        if await asyncio.to_thread(_changed_since, root / task_id, since):
            continue  # a submission's, or a task's stored since: not that purge's
        await asyncio.to_thread(remove_artifact_dirs, root, [task_id])
        removed += 1
    for mark, _ in marks:
        mark.unlink(missing_ok=True)
    logger.info(
        "a purge was killed before it removed the artifact folders of the tasks it "
        "deleted: removed %d folder(s) no task owns",
        removed,
    )
    return removed


def _interrupted(root: Path) -> list[tuple[Path, float]]:
    """The marks in ``root`` of purges that did not end, and when each began."""
    found = []
    try:
        paths = sorted(root.glob(f"{_MARK_PREFIX}*.json"))
    except OSError:
        return []
    for path in paths:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            host, pid, started = doc["host"], doc["pid"], float(doc["started"])
        except FileNotFoundError:
            continue  # that purge ended meanwhile
        except (OSError, ValueError, TypeError, KeyError) as exc:
            logger.warning("cannot read the purge mark %s (%s): delete it by hand", path, exc)
            continue
        if host == socket.gethostname():
            if isinstance(pid, int) and pid_alive(pid):
                continue  # a purge going on now
        elif time.time() - started < _OTHER_HOST_AFTER:
            continue
        found.append((path, started))
    return found


def _task_folders(root: Path) -> list[str]:
    """The names in ``root`` that may be a task's folder."""
    with os.scandir(root) as entries:
        return [e.name for e in entries if not e.name.startswith(STORE_MARKER)]


def _changed_since(folder: Path, since: float) -> bool:
    """Whether anything in ``folder`` (itself, or what it holds) changed at or
    after ``since``; True when that cannot be told."""
    try:
        paths = [folder, *folder.rglob("*")] if folder.is_dir() else [folder]
        return any(path.lstat().st_mtime >= since for path in paths)
    except OSError:
        return True

"""The artifact folders of purged tasks, removed even when a purge is killed.

A purge deletes a batch of tasks from the store, then their folders. Killed
between the two, it would leave folders no task owns: nothing would ever delete
them, and a task given one of those ids later would find the old files in its
folder. So before it removes them, it writes their ids to a journal file beside
them, which it deletes once they are gone; the next purge finishes what a
journal left by a killed one names.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from .artifacts import STORE_MARKER, remove_artifact_dirs, task_artifact_dir
from .errors import ArtifactError

__all__ = ["finish_interrupted_purges", "remove_purged_folders"]

logger = logging.getLogger("wfcore")

# Starts as the store's marker does, a name no task's folder may take.
_JOURNAL_PREFIX = f"{STORE_MARKER}-purged-"


def _journal_of_purged(root: Path, task_ids: list[str]) -> Path | None:
    """Write the ids of the purged tasks that have a folder to a journal in
    ``root``, and return its path (None: no folder to remove, no journal)."""
    with_folders = [i for i in task_ids if _has_folder(root, i)]
    if not with_folders:
        return None
    journal = root / f"{_JOURNAL_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}.json"
    written = journal.with_name(journal.name + ".tmp")
    written.write_text(json.dumps(with_folders), encoding="utf-8")
    os.replace(written, journal)  # whole, or not there
    return journal


def remove_purged_folders(root: Path, task_ids: list[str]) -> None:
    """Remove the folders of tasks a purge has just deleted from the store, through
    a journal (see the module's docstring)."""
    journal = _journal_of_purged(root, task_ids)
    if journal is None:
        return
    remove_artifact_dirs(root, task_ids)
    journal.unlink(missing_ok=True)


async def finish_interrupted_purges(root: Path, is_stored: Callable[[str], Awaitable[bool]]) -> int:
    """Remove the folders that the journals of killed purges name, but of a task
    stored again since under the same id (``is_stored``), whose folder is its
    own now; return how many folders were removed."""
    journals = await asyncio.to_thread(_journals, root)
    removed = 0
    for journal, task_ids in journals:
        gone = [task_id for task_id in task_ids if not await is_stored(task_id)]
        await asyncio.to_thread(remove_artifact_dirs, root, gone)
        removed += len(gone)
        journal.unlink(missing_ok=True)
    if removed:
        logger.info("removed the artifact folders of %d task(s) a killed purge deleted", removed)
    return removed


def _journals(root: Path) -> list[tuple[Path, list[str]]]:
    """The journals in ``root`` and the ids each names; one that cannot be read is
    said and left in place."""
    found = []
    try:
        paths = sorted(root.glob(f"{_JOURNAL_PREFIX}*.json"))
    except OSError:
        return []
    for path in paths:
        try:
            task_ids = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(task_ids, list) or not all(isinstance(i, str) for i in task_ids):
                raise ValueError("not a list of task ids")
        except FileNotFoundError:
            continue  # finished meanwhile by the purge that wrote it, or another
        except (OSError, ValueError) as exc:
            logger.warning("cannot read the purge journal %s (%s): delete it by hand", path, exc)
            continue
        found.append((path, task_ids))
    return found


def _has_folder(root: Path, task_id: str) -> bool:
    try:
        return os.path.lexists(task_artifact_dir(root, task_id))
    except (ArtifactError, OSError, ValueError):
        return False  # an id that cannot name a folder never had one

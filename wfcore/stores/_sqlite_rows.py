"""How a task is laid out in a row of the SQLite store's ``tasks`` table.

Status and version are columns the store owns. The task's history is a JSON
array in its own column, and everything else is one JSON document. Encoding is
most of what a write costs, and history grows with every phase, so
:class:`TaskRows` remembers the encoded history of the tasks this process is
driving and encodes only the entries added since: history is append-only.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any

from ..model import Task, TaskStatus
from ..wire import dumps, task_body, task_from_dict
from .base import UNREADABLE_ERROR

__all__ = ["ROW_COLUMNS", "TaskRows"]

logger = logging.getLogger("wfcore")

#: The columns a task is read back from, in the order ``TaskRows.decode`` takes them.
ROW_COLUMNS = "doc, status, version, history, created_at, updated_at, id"

# What a damaged row (edited by hand, written by a broken tool) raises on decoding:
# anything, from bad JSON to nesting too deep for the parser.
_DAMAGE = Exception

# Enough for every task a busy worker drives at once; beyond it the memory is
# dropped and the next write of each task encodes its whole history once.
_MAX_REMEMBERED = 50_000


class TaskRows:
    """Encodes tasks into row values and decodes rows into tasks."""

    def __init__(self) -> None:
        # task id -> (stored version, entries encoded, the entries' JSON text
        # without the enclosing brackets)
        self._history: dict[str, tuple[int, int, str]] = {}

    def encode(self, task: Task) -> tuple[str, str, tuple[int, str]]:
        """``(doc, history, memo)``; pass ``memo`` to :meth:`remember` once written."""
        # Status, version, history and the times have columns of their own (the
        # times as REAL timestamps, cheaper than ISO text both ways).
        doc = task_body(task, sparse=True)
        entries = task.history
        known = self._history.get(task.id)
        # The memo is valid only for the version it was stored at: a task at that
        # version has exactly those entries, maybe followed by new ones.
        if known is not None and known[0] == task.version and known[1] <= len(entries):
            _, count, text = known
            if count < len(entries):
                added = dumps(entries[count:])[1:-1]
                text = f"{text},{added}" if text else added
        else:
            text = dumps(entries)[1:-1]
        return dumps(doc), f"[{text}]", (len(entries), text)

    def remember(self, task: Task, memo: tuple[int, str]) -> None:
        """Keep the encoded history of a task stored at ``task.version``."""
        if len(self._history) >= _MAX_REMEMBERED:
            self._history.clear()
        self._history[task.id] = (task.version, *memo)

    def forget(self, task_id: str) -> None:
        """Drop what is remembered of a task this process no longer drives."""
        self._history.pop(task_id, None)

    def decode(self, row: tuple[Any, ...], *, remember: bool = False) -> Task:
        """A task from ``ROW_COLUMNS``; with ``remember``, keep its encoded history.

        A row that cannot be read comes back as a FAILED stand-in saying why, its
        stored text in ``context["unreadable_doc"]``: one damaged row must not make
        every listing fail.
        """
        try:
            return self._decode(row, remember)
        except _DAMAGE as exc:
            return _stand_in(row, exc)

    def decode_claimed(self, rows: list[tuple[Any, ...]]) -> tuple[list[Task], list[str]]:
        """The claimed rows' tasks, and the ids of those that cannot be read."""
        tasks: list[Task] = []
        unreadable: list[str] = []
        for row in rows:
            try:
                tasks.append(self._decode(row, True))
            except _DAMAGE as exc:
                logger.error("task %r: its stored row cannot be read: %s", row[-1], _why(exc))
                unreadable.append(row[-1])
        return tasks, unreadable

    def _decode(self, row: tuple[Any, ...], remember: bool) -> Task:
        doc, status, version, history, created_at, updated_at, _ = row
        fields = json.loads(doc)
        fields["status"] = status
        fields["version"] = version
        # Rows written before history had a column keep it in the document.
        if history is not None:
            fields["history"] = json.loads(history)
        task = task_from_dict(fields)
        task.created_at = datetime.fromtimestamp(created_at, timezone.utc)
        task.updated_at = datetime.fromtimestamp(updated_at, timezone.utc)
        if remember and history is not None:
            self.remember(task, (len(task.history), history[1:-1]))
        return task


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


def _stand_in(row: tuple[Any, ...], exc: BaseException) -> Task:
    doc, _status, version, history, created_at, updated_at, task_id = row
    context = {"unreadable_doc": doc if isinstance(doc, str) else repr(doc)}
    where = "context['unreadable_doc']"
    if isinstance(history, str) and not _is_json(history):
        # The document may be fine and the history what is damaged: show that too.
        context["unreadable_history"] = history
        where = "context['unreadable_doc'] and context['unreadable_history']"
    task = Task(
        data=None,
        workflow_name=None,
        id=str(task_id),
        status=TaskStatus.FAILED,
        error=f"{UNREADABLE_ERROR} ({_why(exc)}); its stored text is in {where}",
        context=context,
        version=int(version) if isinstance(version, int) else 0,
    )
    for name, value in (("created_at", created_at), ("updated_at", updated_at)):
        try:
            setattr(task, name, datetime.fromtimestamp(value, timezone.utc))
        except (TypeError, ValueError, OverflowError, OSError):
            pass  # damaged too: the stand-in keeps the time it was made
    return task


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return False
    return True

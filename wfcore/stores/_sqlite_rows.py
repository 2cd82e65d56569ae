"""How a task is laid out in a row of the SQLite store's ``tasks`` table.

Status and version are columns the store owns. The task's history is JSON text
in two places, and everything else is one JSON document. Encoding is most of
what a write costs, and history grows with every phase, so :class:`TaskRows`
remembers the encoded history of the tasks this process is driving and encodes
only the entries added since: history is append-only.

A write also rewrites the whole ``history`` column, so a task that loops through
thousands of phases would make every write slower than the last. Once the
column's entries pass :data:`PART_SIZE` characters they move, as they are, into
a row of ``history_parts`` that is never written again; the column starts over.
A task's history is its parts in order, then its column.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from datetime import datetime, timezone
from typing import Any

from ..model import Task, TaskStatus
from ..wire import dumps, task_body, task_from_dict
from .base import UNREADABLE_ERROR

__all__ = ["PART_SIZE", "ROW_COLUMNS", "HistoryWrite", "TaskRows", "row_columns"]

logger = logging.getLogger("wfcore")

#: Characters of encoded entries the ``history`` column holds before they move to
#: a part: far more than a workflow of a few phases writes (a few hundred per
#: phase), so most tasks never have a part; small enough that a write of a long
#: loop costs what one of a short task does.
PART_SIZE = 16_384


def row_columns(table: str = "", *, with_parts: bool = True) -> str:
    """The columns a task is read back from, in the order ``TaskRows.decode`` takes
    them; ``table`` qualifies them for a join with a table of the same names.
    ``with_parts=False`` for a store of schema 4, which has no ``history_parts``."""
    t = f"{table}." if table else ""
    # The entries of the task's parts joined into one text, in order (that of the
    # primary key, which a lookup by task id walks), or NULL when it has none.
    earlier = (
        "(SELECT group_concat(substr(entries, 2, length(entries) - 2), ',') "
        f"FROM history_parts WHERE task_id = {table or 'tasks'}.id)"
        if with_parts
        else "NULL"
    )
    return (
        f"{t}doc, {t}status, {t}version, {t}history, {earlier}, {t}created_at, {t}updated_at, {t}id"
    )


ROW_COLUMNS = row_columns()

# What a damaged row (edited by hand, written by a broken tool) raises on decoding:
# anything, from bad JSON to nesting too deep for the parser.
_DAMAGE = Exception

# Enough for every task a busy worker drives at once; beyond it the memory is
# dropped and the next write of each task encodes its whole history once.
_MAX_REMEMBERED = 50_000

# A task's stored history: (entries in all, entries in its parts, the column's
# entries as JSON text without the brackets); remembered with the version it was
# stored at.
_Written = tuple[int, int, str]
_Memo = tuple[int, int, int, str]


class HistoryWrite:
    """What an update writes of a task's history, worked out in the write's
    transaction: :meth:`column` before the task's row is updated, :meth:`finish`
    once it is (the update may find the row changed, and then writes nothing)."""

    def __init__(self, task_id: str, entries: list[dict[str, Any]], known: _Written | None) -> None:
        self._task_id = task_id
        self._entries = entries
        self._known = known
        self._drop_parts = False
        # The new part's entries (JSON text) and how many there are.
        self._part: tuple[str, int] | None = None
        #: What to remember once written.
        self.memo: _Written = (0, 0, "")

    def column(self, conn: sqlite3.Connection) -> str:
        """The ``history`` column's new text; may read the task's parts."""
        count = len(self._entries)
        self._drop_parts = False
        if self._known is not None:
            known_count, in_parts, text = self._known
            if known_count < count:
                added = dumps(self._entries[known_count:])[1:-1]
                text = f"{text},{added}" if text else added
        else:
            # Not remembered (read by get_task, say): the parts on record tell
            # where the column's entries start.
            [(in_parts,)] = conn.execute(
                "SELECT coalesce(sum(count), 0) FROM history_parts WHERE task_id = ?",
                (self._task_id,),
            )
            if in_parts > count:  # the history was replaced, not added to
                self._drop_parts, in_parts = True, 0
            text = dumps(self._entries[in_parts:])[1:-1]
        self._part = None
        if len(text) > PART_SIZE:
            self._part = (f"[{text}]", count - in_parts)
            in_parts, text = count, ""
        self.memo = (count, in_parts, text)
        return f"[{text}]"

    def finish(self, conn: sqlite3.Connection) -> None:
        """Write the task's parts, once its row is updated."""
        if self._drop_parts:
            conn.execute("DELETE FROM history_parts WHERE task_id = ?", (self._task_id,))
        if self._part is not None:
            conn.execute(
                "INSERT INTO history_parts (task_id, part, count, entries) VALUES (?1, "
                "(SELECT coalesce(max(part), 0) + 1 FROM history_parts WHERE task_id = ?1), "
                "?2, ?3)",
                (self._task_id, self._part[1], self._part[0]),
            )


class TaskRows:
    """Encodes tasks into row values and decodes rows into tasks."""

    def __init__(self) -> None:
        self._history: dict[str, _Memo] = {}

    def encode(self, task: Task) -> tuple[str, HistoryWrite]:
        """The document of a stored task, and what to write of its history; once
        written, pass the latter's ``memo`` to :meth:`remember`."""
        memo = self._history.get(task.id)
        # The memo is valid only for the version it was stored at: a task at that
        # version has exactly those entries, maybe followed by new ones.
        known = None
        if memo is not None and memo[0] == task.version and memo[1] <= len(task.history):
            known = memo[1:]
        return self._doc(task), HistoryWrite(task.id, task.history, known)

    def encode_new(self, task: Task) -> tuple[str, str]:
        """The document and ``history`` column of a task to insert."""
        return self._doc(task), dumps(task.history)

    @staticmethod
    def _doc(task: Task) -> str:
        # Status, version, history and the times have columns of their own (the
        # times as REAL timestamps, cheaper than ISO text both ways).
        return dumps(task_body(task, sparse=True))

    def remember(self, task: Task, written: _Written) -> None:
        """Keep the encoded history of a task stored at ``task.version``."""
        if len(self._history) >= _MAX_REMEMBERED:
            self._history.clear()
        self._history[task.id] = (task.version, *written)

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
        doc, status, version, history, earlier, created_at, updated_at, task_id = row
        fields = json.loads(doc)
        if not isinstance(fields, dict):
            raise TypeError(f"the document is a JSON {type(fields).__name__}, not an object")
        # The row's id is the task's: every claim, lease and write goes by it. A
        # document naming another (a row copied in SQL to make a second task)
        # would have each write go to that other task, or nowhere, and the task
        # be claimed and run again at every lease's end.
        fields["id"] = task_id
        fields["status"] = status
        fields["version"] = version
        in_parts: list[Any] = [] if earlier is None else json.loads(f"[{earlier}]")
        # Rows written before history had a column keep it in the document.
        if history is not None:
            fields["history"] = in_parts + json.loads(history)
        task = task_from_dict(fields)
        task.created_at = datetime.fromtimestamp(created_at, timezone.utc)
        task.updated_at = datetime.fromtimestamp(updated_at, timezone.utc)
        if remember and history is not None:
            self.remember(task, (len(task.history), len(in_parts), history[1:-1]))
        return task


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


def _stand_in(row: tuple[Any, ...], exc: BaseException) -> Task:
    doc, _status, version, history, earlier, created_at, updated_at, task_id = row
    context = {"unreadable_doc": doc if isinstance(doc, str) else repr(doc)}
    where = "context['unreadable_doc']"
    # The document may be fine and the history what is damaged: show that too
    # (its column's text, else the entries of its parts as they were joined).
    if isinstance(history, str) and not _is_json(history):
        context["unreadable_history"] = history
    elif isinstance(earlier, str) and not _is_json(f"[{earlier}]"):
        context["unreadable_history"] = earlier
    if "unreadable_history" in context:
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

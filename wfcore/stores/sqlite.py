"""The embedded SQLite store: WAL mode, leases, and group commit of concurrent writes.

URL: ``sqlite:///abs/path/wfe.db``; ``?durability=full`` makes every commit
survive power loss (``synchronous=FULL``); the default (``normal``) survives a
killed process. ``?timeout=SECONDS`` (default 30): how long a write, or an open
that must change the file, waits for another process's write lock before it
fails with "database is locked" (:class:`~wfcore.stores.base.StoreBusyError`).

Artifacts live beside the database file, in the folder it records (``<file
name>-artifacts/``; older stores ``<stem>-artifacts/``), which a marker file in it
names the database of: a copy of the file placed beside it uses a folder of its own.

All writes go to one writer thread, which commits the writes of many concurrent
tasks in one transaction (group commit: :mod:`wfcore.stores._sqlite_writer`). The
tables, and the upgrades of an older database, are in
:mod:`wfcore.stores._sqlite_schema`; how a task is laid out in its row, in
:mod:`wfcore.stores._sqlite_rows`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from .. import _held_files
from ..artifacts import STORE_MARKER
from ..errors import StoreError, WorkflowError
from ..hookspecs import hookimpl
from ..model import Task, TaskStatus, WorkflowSpec, utcnow_iso
from ..wire import workflow_from_dict, workflow_to_dict
from ._sqlite_rows import ROW_COLUMNS, TaskRows, row_columns
from ._sqlite_schema import APPLICATION_ID, SCHEMA_VERSION, Opening, plan_opening
from ._sqlite_writer import FileLost, Writer, begin_immediate, locked
from .base import (
    SUMMARY_PREVIEW,
    Store,
    StoreBusyError,
    check_consumer_name,
    ready_at,
    summarized,
    utc_from_timestamp,
)

__all__ = ["APPLICATION_ID", "SCHEMA_VERSION", "SQLiteStore", "StoreFileLostError"]

logger = logging.getLogger("wfcore")

# Seconds a write waits for another process's write lock (the URL's ?timeout=),
# by default and at most.
_BUSY_TIMEOUT = 30.0
_MAX_BUSY_TIMEOUT = 86400.0
# What a WAL grown past it (by a purge, a burst of work) is cut back to when it next
# starts over; without a limit it keeps its largest size while any connection is open.
# Above what ordinary batches need, so that they never pay for truncating it.
_WAL_SIZE_LIMIT = 16 * 1024 * 1024
_FINISHED = tuple(s.value for s in TaskStatus if s.is_finished)
_UNFINISHED = tuple(s.value for s in TaskStatus if not s.is_finished)
_ACTIVE = (TaskStatus.PENDING.value, TaskStatus.IN_PROGRESS.value)
_T = TypeVar("_T")

# The slots of phases with max_concurrency, and the tasks in line for one: a row
# per task that holds a slot (running = 1) or waits (0). Made at first use, so a
# store of any schema gains it without an upgrade, and a wfcore that does not know
# it reads and writes the store as before. A row counts while its task's lease is
# the one that asked and has not expired; others are deleted as they are met.
_PHASE_SLOTS_TABLE = (
    "CREATE TABLE IF NOT EXISTS phase_slots (task_id TEXT PRIMARY KEY, "
    "workflow TEXT NOT NULL, phase TEXT NOT NULL, owner TEXT NOT NULL, "
    "priority INTEGER NOT NULL, since REAL NOT NULL, running INTEGER NOT NULL)"
)
# A phase's rows: task id, priority, since, running, whether it counts.
_PHASE_SLOT_HOLDERS = (
    "SELECT s.task_id, s.priority, s.since, s.running, "
    "coalesce(t.lease_owner = s.owner AND t.lease_expires > ?, 0) "
    "FROM phase_slots s LEFT JOIN tasks t ON t.id = s.task_id "
    "WHERE s.workflow = ? AND s.phase = ?"
)

# A task's row for a summary (Store.list_task_summaries): the columns TaskRows
# decodes, without the big fields of the document and without the history's
# earlier parts; then the output's JSON type, the start of its value (one
# character more than a summary keeps, to tell a value that is longer), and the
# start of the error. A row whose document is not JSON is read whole: decoding it
# makes the stand-in that says so.
_SUMMARY_COLUMNS = (
    "CASE WHEN json_valid(doc) THEN json_remove(doc, '$.data', '$.context', '$.outputs', "
    "'$.reply', '$.traceback', '$.output', '$.error', '$.children', '$.waiting_for') "
    "ELSE doc END, "
    "status, version, history, NULL, created_at, updated_at, id, "
    "CASE WHEN json_valid(doc) THEN json_type(doc, '$.output') END, "
    "CASE WHEN json_valid(doc) THEN substr(json_extract(doc, '$.output'), 1, ?) END, "
    "CASE WHEN json_valid(doc) THEN substr(json_extract(doc, '$.error'), 1, ?) END"
)


def _summary(task: Task, output_type: str | None, output: Any, error: str | None) -> Task:
    """A task decoded from ``_SUMMARY_COLUMNS``, as ``summarized`` makes one."""
    if task.error is None and error is not None:  # not a stand-in for a damaged row
        task.error = error
    if output_type in ("object", "array"):
        task.output = json.loads(output) if len(output) <= SUMMARY_PREVIEW else output
    elif output_type in ("true", "false"):
        task.output = output_type == "true"
    elif output_type == "integer":
        task.output = int(output)  # substr() made it text
    elif output_type == "real":
        task.output = float(output)
    elif output_type == "text":
        task.output = output
    return summarized(task)


_INSERT = (
    "INSERT INTO tasks (id, status, workflow_name, classification, priority, ready_at, "
    "version, created_at, updated_at, doc, history) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (id) DO NOTHING"
)


_UPDATE_KEEPING_LEASE = (
    "UPDATE tasks SET status = ?, workflow_name = ?, classification = ?, priority = ?, "
    "ready_at = lease_expires, version = version + 1, updated_at = ?, doc = ?, history = ? "
    "WHERE id = ? AND version = ?"
)
_UPDATE_RELEASING_LEASE = (
    "UPDATE tasks SET status = ?, workflow_name = ?, classification = ?, priority = ?, "
    "ready_at = ?, lease_owner = NULL, lease_expires = NULL, "
    "version = version + 1, updated_at = ?, doc = ?, history = ? "
    "WHERE id = ? AND version = ?"
)


# What a claim sets. The right-hand sides see the row as it was, so a lease still
# on record (its worker died or lost it) adds a taken_over event to the history in
# the claim's own write: a second loss before the next write keeps the first. (Rows
# of schema 1, whose history is still in their document, get none.)
_CLAIM = (
    "status = CASE WHEN status = 'pending' THEN 'in_progress' ELSE status END, "
    "history = CASE WHEN lease_owner IS NULL OR history IS NULL OR NOT json_valid(history) "
    "THEN history "
    "ELSE json_insert(history, '$[#]', json_object('at', :at, 'event', 'taken_over', "
    "'phase', classification, 'previous_worker', lease_owner, 'worker', :owner)) END, "
    "lease_owner = :owner, lease_expires = :expires, ready_at = :expires, "
    "version = version + 1"
)


_STATUS_VALUES = frozenset(s.value for s in TaskStatus)
_UNREADABLE = "StoreError: the stored task could not be read, so it was failed (see the log)"

# ROW_COLUMNS in a join with another table that has some of their names (version).
_TASK_ROW_COLUMNS = row_columns("tasks")


def _ready_rows(
    conn: sqlite3.Connection, now: float, limit: int, workflow: str | None = None
) -> list[tuple[int, float, int]]:
    """Up to ``limit`` ready tasks (of ``workflow``, if given) as (priority, ready
    time, rowid): the highest priority first, and in each the oldest ready first.

    One index range per priority in use, from the highest down, found by seeking
    the index rather than reading it: a claim reads only the rows it takes, whatever
    the number of tasks of a higher priority that are not ready yet (delayed, or
    running under a lease).
    """
    head: tuple[str, ...] = ()
    if workflow is None:
        index, where = "tasks_ready_priority", ""
    else:
        index, where, head = "tasks_ready_workflow_priority", "workflow_name = ? AND ", (workflow,)
    source = f"FROM tasks INDEXED BY {index} WHERE {where}ready_at IS NOT NULL"
    found: list[tuple[int, float, int]] = []
    priority = conn.execute(f"SELECT max(priority) {source}", head).fetchone()[0]
    while priority is not None:
        found += conn.execute(
            f"SELECT priority, ready_at, rowid {source} AND priority = ? AND ready_at <= ? "
            "ORDER BY ready_at, rowid LIMIT ?",
            (*head, priority, now, limit - len(found)),
        ).fetchall()
        if len(found) >= limit:
            break  # no seek for a next priority the claim has no room for
        priority = conn.execute(
            f"SELECT max(priority) {source} AND priority < ?", (*head, priority)
        ).fetchone()[0]
    return found


def _claim_rows(
    conn: sqlite3.Connection, rowids: list[int], owner: str, now: float, lease_seconds: float
) -> list[tuple[Any, ...]]:
    """Lease the tasks at ``rowids`` to ``owner``; their rows, in that order."""
    if not rowids:
        return []
    rows = conn.execute(
        f"UPDATE tasks SET {_CLAIM} WHERE rowid IN "
        f"(SELECT value FROM json_each(:rowids)) RETURNING rowid, {ROW_COLUMNS}",
        _claim_params(owner, now, lease_seconds, rowids=json.dumps(rowids)),
    ).fetchall()
    # RETURNING gives no order: the claim's order is the order they run in.
    where = {rowid: i for i, rowid in enumerate(rowids)}
    return [row[1:] for row in sorted(rows, key=lambda row: where[row[0]])]


def _claim_params(owner: str, now: float, lease_seconds: float, **more: Any) -> dict[str, Any]:
    return {"owner": owner, "now": now, "expires": now + lease_seconds, "at": utcnow_iso(), **more}


class SQLiteStore(Store):
    """Tasks and workflows in one SQLite file, shared safely by several processes."""

    def __init__(
        self, path: str | Path, durability: str = "normal", timeout: float = _BUSY_TIMEOUT
    ) -> None:
        # In any case, as the URL's ?durability= takes it.
        given, durability = durability, durability.lower() if isinstance(durability, str) else ""
        if durability not in ("normal", "full"):
            raise StoreError(f"durability must be 'normal' or 'full', not {given!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise TypeError(f"timeout must be a number of seconds, not {timeout!r}")
        if not 0 <= timeout <= _MAX_BUSY_TIMEOUT:  # NaN too
            raise StoreError(f"timeout must be 0 to {_MAX_BUSY_TIMEOUT:g} seconds, not {timeout!r}")
        if "://" in str(path):
            raise StoreError(
                f"SQLiteStore takes a file's path, not a URL ({str(path)!r}): "
                "use SQLiteStore.from_url(url), or the engine's store=URL"
            )
        if not str(path):
            raise StoreError("SQLiteStore needs a database file's path, not an empty one")
        if "?" in str(path):
            # The store's url (which wfe commands and workers take) would read what
            # follows as options, naming another file: /srv/wfe.db?durability=full
            # as /srv/wfe.db.
            raise StoreError(
                f"SQLiteStore path {str(path)!r} has a '?', which a sqlite:// URL reads as "
                "the start of its options: options go in arguments, "
                "SQLiteStore(path, durability='full', timeout=5)"
            )
        # Absolute from here on: the threads' connections open it by file: URI,
        # and a later chdir of the process must not move the store.
        self.path = Path(path).absolute()
        self.durability = durability
        #: Seconds a write waits for another process's write lock before it fails.
        self.timeout = float(timeout)
        params = ["durability=full"] if durability == "full" else []
        if self.timeout != _BUSY_TIMEOUT:
            params.append(f"timeout={self.timeout:g}")
        self.url = f"sqlite://{self.path}" + (f"?{'&'.join(params)}" if params else "")
        # Settled when the store opens: the database records its folder's name.
        self.artifacts_dir = self.path.parent / f"{self.path.name}-artifacts"
        self._writer: Writer | None = None
        self._reader: ThreadPoolExecutor | None = None
        # The connection that opened the file, kept open until the store closes
        # (see _prepare).
        self._pin: sqlite3.Connection | None = None
        self._open_lock = asyncio.Lock()
        self._pinned: tuple[int, int] = (0, 0)  # the file _pin is open on
        self._local = threading.local()
        self._rows = TaskRows()
        #: False: a store one schema behind (written by the previous release) is
        #: read as it is, not upgraded, so that the workers of that release go on
        #: using it; writing tasks to it then raises StoreError. For programs that
        #: only read a store, as the wfe commands that list and show tasks do.
        self.upgrade = True
        # The columns a task is read from; without history_parts on a store read
        # as it is (see upgrade).
        self._columns, self._joined_columns = ROW_COLUMNS, _TASK_ROW_COLUMNS
        self._read_as_is: int | None = None  # the schema of a store read as it is
        self._delayed_index = False  # made (if need be) by the first count_delayed
        self._finished_index = False  # made (if need be) by the first count_finished
        self._slots_table = False  # made (if need be) by the first take_phase_slot
        # The file opened (st_dev, st_ino), looked at again now and then: a file
        # deleted or replaced under the open store must not go unnoticed.
        self._file_id: tuple[int, int] | None = None
        self._file_checked = 0.0
        self._file_lost: str | None = None  # why the store cannot be used any more
        # Set by close(), or an open given up on: waits for the write lock end.
        self._closing = threading.Event()

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        """Build a store from ``sqlite:///abs/path.db[?durability=full][&timeout=SECONDS]``."""
        parts = urlsplit(url)
        if parts.scheme != "sqlite":
            raise StoreError(f"not a sqlite URL: {url!r}")
        if "#" in url:
            # urlsplit would drop it and all after it: another file, silently.
            raise StoreError(
                f"sqlite URL {url!r} has a '#', which would end the file's path there: "
                "a store whose path has one opens only as SQLiteStore(path)"
            )
        # sqlite:////abs (SQLAlchemy's spelling) means the same file as sqlite:///abs.
        path = "/" + parts.path.lstrip("/") if parts.path.startswith("/") else parts.path
        if parts.netloc or not path or not path.startswith("/") or path == "/":
            raise StoreError(f"sqlite URL must be sqlite:///absolute/path/to/file.db, got {url!r}")
        params = parse_qs(parts.query, keep_blank_values=True)  # "timeout=" is refused too
        unknown = sorted(set(params) - {"durability", "timeout"})
        if unknown:
            raise StoreError(
                f"unknown sqlite URL parameter {unknown[0]!r} (known: durability, timeout)"
            )
        durability = params.get("durability", ["normal"])[-1].lower()
        timeout = _BUSY_TIMEOUT
        if "timeout" in params:
            given = params["timeout"][-1]
            try:
                timeout = float(given)
            except ValueError:
                timeout = math.nan
            if not 0 <= timeout <= _MAX_BUSY_TIMEOUT:  # NaN too
                raise StoreError(
                    f"sqlite URL parameter timeout must be 0 to {_MAX_BUSY_TIMEOUT:g} "
                    f"seconds, not {given!r}"
                )
        return cls(path, durability=durability, timeout=timeout)

    # -- connections -----------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        # mode=rw: never create the file (open() has made it): one deleted meanwhile
        # is an error, not a new empty store.
        conn = sqlite3.connect(
            f"{self.path.as_uri()}?mode=rw",
            timeout=self.timeout,
            isolation_level=None,
            check_same_thread=False,
            uri=True,
        )
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={'FULL' if self.durability == 'full' else 'NORMAL'}")
            conn.execute(f"PRAGMA busy_timeout={round(self.timeout * 1000)}")
            conn.execute(f"PRAGMA journal_size_limit={_WAL_SIZE_LIMIT}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _read_conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    def _not_open(self) -> StoreNotOpenError:
        return StoreNotOpenError(
            f"the store {self.path} is not open (never opened, or closed): await store.open() first"
        )

    async def _read(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        if self._reader is None:
            raise self._not_open()
        await self._check_file()
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._reader, lambda: fn(self._read_conn()))
        except sqlite3.DatabaseError as exc:
            if not _store_trouble(exc):
                raise
            # A lock held too long, a temporary file on a full disk, a file server
            # away: the store's trouble, which a worker waits out.
            raise self._failed("read", exc) from exc

    async def _write(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        if self._writer is None:
            raise self._not_open()
        await self._check_file()
        try:
            result: _T = await self._writer.submit(fn)
            return result
        except FileLost:
            self._file_checked = 0.0  # look now: it says what became of the file
            await self._check_file()
            raise StoreFileLostError(
                f"the store file {self.path} was deleted or replaced: the write was not made"
            ) from None
        except sqlite3.DatabaseError as exc:
            if not _store_trouble(exc):
                raise
            # A read-only file or folder, a full disk, a lock held too long, a
            # damaged file: the store, not the task, is the problem.
            raise self._failed("write to", exc) from exc

    def _failed(self, doing: str, exc: sqlite3.Error) -> StoreError:
        if doing != "read" and _disk_full(exc):
            return StoreError(
                f"cannot {doing} {self.path}: the disk holding it is full ({exc}); free space there"
            )
        if type(exc) is sqlite3.DatabaseError:
            return StoreError(
                f"cannot {doing} {self.path}: {exc} (the file is damaged: check it with "
                f"sqlite3 {self.path} 'PRAGMA integrity_check' and restore it from a backup)"
            )
        return _store_error(exc)(
            f"cannot {doing} {self.path}: {exc}{_why_locked(exc, self.timeout)}"
        )

    # -- open / close ----------------------------------------------------------------

    @property
    def location(self) -> str:
        """The database file."""
        return str(self.path)

    async def exists(self) -> bool:
        """Whether the database is there: its file, holding anything. Opening the
        store makes a missing file, and makes the database in an empty one (left by
        a ``touch`` or a failed copy), which is no store yet either."""
        try:
            return self.path.stat().st_size > 0
        except FileNotFoundError:
            return False
        except OSError:
            return True  # there, but unreadable: opening it says why

    async def open(self) -> None:
        async with self._open_lock:  # one store given to two engines, opened by both
            if self._writer is None:
                await self._open()

    async def _open(self) -> None:
        self._closing.clear()
        for attempt in range(1, _OPEN_TRIES + 1):
            try:
                self._file_id = await asyncio.to_thread(self._prepare_alone)
                break
            except asyncio.CancelledError:
                # Whoever opened it stopped waiting (a worker told to stop while
                # another process holds the write lock): the open's thread stops
                # waiting too, rather than keep this process from exiting until the
                # timeout.
                self._closing.set()
                raise
            except _Vanished as exc:
                # Deleted or replaced as this process opened it: by a failed `wfe
                # submit` removing the new store it made, say. Opened again, it is
                # the file now at the path (made anew if there is none).
                if attempt == _OPEN_TRIES and exc.args and not self.path.exists():
                    # Never there: SQLite could not make it, each time.
                    raise StoreError(
                        f"cannot create {self.path}: {exc.args[0]}{self._not_made()}"
                    ) from None
                if attempt == _OPEN_TRIES:
                    raise StoreError(
                        f"cannot use {self.path}: it was deleted or replaced as this process "
                        f"opened it, {_OPEN_TRIES} times in a row"
                    ) from None
        self._file_checked = time.monotonic()
        self._file_lost = None
        self._writer = Writer(self._connect, self.timeout, self._closing, self._file_is_ours)
        self._writer.start()
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="wfcore-sqlite-reader")

    def _file_is_ours(self) -> bool:
        """Whether the file at the store's path is still the one it opened (False
        once it was deleted or replaced; True when it cannot be looked at now)."""
        try:
            return self._file_id is None or _file_id(self.path) == self._file_id
        except FileNotFoundError:
            return False
        except OSError:
            return True  # a file server away, say: SQLite will say what it finds

    async def _check_file(self) -> None:
        """Raise :class:`StoreFileLostError` once the file at the store's path is no
        longer the one this store opened (looked at once a second at most).

        A file deleted (``rm wfe.db``) or replaced (``mv other.db wfe.db``) under
        an open store stays open in this process: its reads would show tasks nobody
        else sees, and its writes would vanish with it. From then on every read and
        write is refused; what this process saw of the old file is first saved
        beside the path (``wfe.db.saved-<UTC time>``), the one copy of it left.
        """
        if self._file_lost is not None:
            raise StoreFileLostError(self._file_lost)
        now = time.monotonic()
        if self._file_id is None or now - self._file_checked < _FILE_CHECK_EVERY:
            return
        self._file_checked = now
        try:
            current = _file_id(self.path)
        except FileNotFoundError:
            what = "deleted"
        except OSError:
            return  # it cannot be looked at now (a file server away): SQLite will say
        else:
            if current == self._file_id:
                return
            what = "replaced by another file"
        self._file_lost = f"the store file {self.path} was {what} while this process had it open"
        saved = await self._save_lost_file()
        self._file_lost += (
            f"; what this process saw of it is saved in {saved}"
            if isinstance(saved, Path)
            else f"; what this process saw of it could not be saved ({saved})"
        )
        logger.error(
            "%s: this process uses the store no more, as its writes would be lost with "
            "that file; start it again to open the store at %s",
            self._file_lost,
            self.path,
        )
        raise StoreFileLostError(self._file_lost)

    async def _save_lost_file(self) -> Path | str:
        """Copy the database as this process still sees it (through the reader's
        open connection, which the lost file's pages and WAL are still reached by)
        to a new file beside the path; return it, or why that failed."""
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        target = self.path.with_name(f"{self.path.name}.saved-{stamp}")
        number = 1
        while target.exists():
            number += 1
            target = self.path.with_name(f"{self.path.name}.saved-{stamp}-{number}")

        def save() -> None:
            source = getattr(self._local, "conn", None)
            if source is None:
                # A new connection would open (or create) whatever is at the path now.
                raise StoreError("nothing of it was read yet")
            copy = sqlite3.connect(target)
            try:
                source.backup(copy)
            finally:
                copy.close()

        assert self._reader is not None
        try:
            await asyncio.get_running_loop().run_in_executor(self._reader, save)
        except (sqlite3.Error, OSError, StoreError) as exc:
            return str(exc)
        return target

    def _prepare_alone(self) -> tuple[int, int]:
        """:meth:`_prepare`, while no other store of this process opens its file."""
        with _held_files.opening():
            return self._prepare()

    def _prepare(self) -> tuple[int, int]:
        """Create the database, or check that an existing one is ours and not newer;
        return the file's identity (device, inode).

        Raises :class:`_Vanished` when the file was deleted or replaced meanwhile.
        """
        if self.path.is_dir():
            raise StoreError(f"{self.path} is a folder, not a database file")
        try:
            # Not a file of another kind is told by SQLite, not by reading its header
            # here: closing any descriptor of a file drops every lock this process
            # holds on it, those of another store open on it included.
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:
            # A file where a folder of the path must be: mkdir's "File exists"
            # would name it without saying what is wrong with it.
            blocking = next((p for p in self.path.parents if p.is_file()), exc.filename)
            raise StoreError(
                f"cannot use {self.path}: {blocking} is a file, not a folder"
            ) from None
        except FileNotFoundError:
            raise _Vanished from None  # its folder or itself removed as it was looked at
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            raise StoreError(f"cannot use {self.path}: {exc.strerror or exc}{where}") from None
        opened: tuple[int, int] | None = None
        try:
            # WAL only for a file we create: switching rewrites the header of a
            # file that may turn out not to be ours (ours already are WAL).
            fresh = not self.path.exists() or self.path.stat().st_size == 0
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
            opened = _file_id_or_none(self.path)
            # Processes creating the file at once: the switch does not wait on a
            # busy lock, so it is retried.
            for attempt in range(500 if fresh else 0):
                try:
                    conn.execute("PRAGMA journal_mode=WAL")
                    break
                except sqlite3.OperationalError:
                    if attempt == 499:
                        raise
                    time.sleep(0.01)
        except sqlite3.DatabaseError as exc:
            if opened is None or _file_id_or_none(self.path) != opened:
                raise _Vanished(str(exc)) from None
            raise _store_error(exc)(f"cannot open {self.path}: {exc}{self._unwritable()}") from None
        try:
            # Read what the file needs first, without the write lock: another
            # process's long write (a purge, a backlog's submission) holds it, and a
            # command opening an up-to-date store must not wait for that. A file
            # refused (not ours, newer) is refused here, unchanged.
            conn.execute("BEGIN")
            opening = plan_opening(conn, self.path, self.artifacts_dir.name, self.upgrade)
            if opening.steps:
                conn.execute("ROLLBACK")
                begin_immediate(conn, self.timeout, self._closing)
                # Read again under the lock: another process may have done some meanwhile.
                opening = plan_opening(conn, self.path, self.artifacts_dir.name, self.upgrade)
                for sql, params in opening.steps:
                    conn.execute(sql, params)
                conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            if _file_id_or_none(self.path) != opened:
                raise _Vanished from None  # SQLite refuses writes to a file deleted
            if _not_a_database(exc):
                raise StoreError(
                    f"{self.path} is not a SQLite database; refusing to use it"
                ) from None
            raise _store_error(exc)(
                f"cannot use {self.path}: {exc}{_why_locked(exc, self.timeout)}{self._unwritable()}"
            ) from None
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.close()
        if opened is None:
            raise _Vanished  # deleted as it was connected to
        self._settle_opening(opening)
        self._pin_file(opened)
        return opened

    def _pin_file(self, opened: tuple[int, int]) -> None:
        """Open the connection kept until the store closes (``_pin``), on the file
        ``opened``, or raise :class:`_Vanished`.

        A failed ``wfe submit`` removes the new store it made only while no other
        connection is open on it (see ``cli._base._remove_store_file``), and this
        process's reading and writing connections come and go. Opened after the
        artifacts folder is settled: that may read a database file beside this
        one, and closing any descriptor of a file drops every SQLite lock this
        process holds on it.
        """
        try:
            pin = self._connect()  # as the reading and writing ones are
            try:
                # A first read opens the WAL index, whose shared lock it holds from
                # then on: other processes see the store open.
                pin.execute("SELECT count(*) FROM sqlite_master").fetchone()
            except BaseException:
                pin.close()
                raise
        except sqlite3.DatabaseError as exc:
            if _file_id_or_none(self.path) != opened:
                raise _Vanished from None
            raise _store_error(exc)(f"cannot use {self.path}: {exc}") from None
        if _file_id_or_none(self.path) != opened:
            pin.close()
            raise _Vanished
        self._pin = pin
        self._pinned = opened
        _held_files.hold(opened)

    def _settle_opening(self, opening: Opening) -> None:
        """Take in what opening the file found: a store read as it is, an upgrade
        to say, the artifacts folder it records."""
        if opening.read_as_is is not None:
            # The previous release's workers may still use it: it is read as it is.
            self._read_as_is = opening.read_as_is
            self._columns = row_columns(with_parts=False)
            self._joined_columns = row_columns("tasks", with_parts=False)
        if opening.upgraded_from is not None:
            # Whoever opens it (wfe status too) upgrades it, once: said, as the
            # older wfcore of other workers on the store refuses it from now on.
            logger.warning(
                "upgraded the store %s from schema %d to %d: a wfcore that knows "
                "schema %d at most (an older release) refuses to open it from now on",
                self.path,
                opening.upgraded_from,
                SCHEMA_VERSION,
                SCHEMA_VERSION - 1,
            )
        self._settle_artifacts_dir(opening.folder, opening.store_id)

    def _check_upgraded(self) -> None:
        """Refuse to write tasks to a store read as it is (see ``upgrade``)."""
        if self._read_as_is is not None:
            raise StoreError(
                f"the store {self.path} is at schema {self._read_as_is}, opened to be read "
                "as it is (the workers of the release before may use it): a command that "
                "writes tasks (wfe worker, wfe submit) upgrades it"
            )

    def _settle_artifacts_dir(self, folder: str, store_id: str) -> None:
        """Use the artifacts folder the database records, unless it belongs to
        another database beside this one: this file is then a copy of it (a backup
        placed beside the live store, which shares its records and so its folder's
        name). A copy that used that folder would delete the live store's files
        when purged, or overwrite them. It gets a folder of its own instead,
        ``<its file name>-artifacts``, and says so.

        The folder's owner is named by a marker file in it (:data:`STORE_MARKER`: the
        database's file name and the store id it records, which copies share),
        written by the owner when it opens. See :func:`_other_owner`."""
        recorded = self.path.parent / folder
        owner, mark = _other_owner(recorded, self.path, store_id)
        if owner is None:
            self.artifacts_dir = recorded
            if mark:
                _mark_folder(recorded, self.path.name, store_id)
            return
        self.artifacts_dir = self.path.parent / f"{self.path.name}-artifacts"
        logger.warning(
            "%s is a copy of %s beside it: the artifacts folder %s is that store's, so "
            "this one keeps its artifact files in %s and never deletes or overwrites "
            "the other's (copy the folder there to read this copy's artifacts)",
            self.path,
            owner.name,
            recorded,
            self.artifacts_dir,
        )

    def _not_made(self) -> str:
        """Why SQLite may not have made the file, said beside its own words."""
        if self.path.is_symlink():
            return f"; it is a symbolic link to {os.readlink(self.path)}, which does not exist"
        return self._unwritable()

    def _unwritable(self) -> str:
        """Why SQLite may not write here, when this user cannot: said beside its own
        words, which name neither the file nor the folder at fault."""
        if self.path.exists() and not os.access(self.path, os.W_OK):
            return f"; this user cannot write to {self.path}, which even reading needs"
        if not os.access(self.path.parent, os.W_OK | os.X_OK):
            return (
                f"; this user cannot write to the folder {self.path.parent}, where SQLite "
                f"keeps {self.path.name}-wal and {self.path.name}-shm even to read"
            )
        return ""

    async def close(self) -> None:
        # A write waiting for another process's lock gives up: closing does not wait
        # for that process (up to the timeout), only for writes already under way.
        self._closing.set()
        writer, self._writer = self._writer, None
        reader, self._reader = self._reader, None
        if writer is not None:
            await asyncio.to_thread(writer.close)
        if reader is not None:
            reader.submit(self._close_reader).result()
            reader.shutdown(wait=True)
        pin, self._pin = self._pin, None
        if pin is not None:
            # The last connection: closing it checkpoints the WAL into the file.
            await asyncio.to_thread(pin.close)
            _held_files.release(self._pinned)

    def _close_reader(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    async def compact(self) -> tuple[int, int]:
        """Give the space of deleted tasks back to the file system: ``VACUUM``.

        SQLite keeps the pages that deleted rows free for later rows, so a purge
        leaves the file as large as before. VACUUM rewrites the database without
        them (rowids, and so the order of tasks, are kept: the tasks table has an
        index, and VACUUM copies the rows of such tables as they are), then the
        WAL is checkpointed and cut to nothing. Workers may go on meanwhile: they
        read as usual, but their writes wait for the write lock VACUUM holds for its
        whole run (a write waiting longer than the URL's timeout, 30 s, fails). It
        rewrites every page still in use, and needs free disk space of about twice
        that (a temporary copy, then the WAL).

        Returns ``(bytes before, bytes after)``: the database file and its WAL.
        """
        if self._writer is None:
            raise self._not_open()

        def vacuum() -> tuple[int, int]:
            before = self._size_on_disk()
            # A connection of its own: VACUUM cannot run inside the writer's
            # transactions, and it waits for the write lock as other processes do.
            conn = self._connect()
            try:
                conn.execute("VACUUM")
                # The rewritten pages went through the WAL: copy them back now and
                # empty it (this waits for readers of older snapshots to finish).
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                conn.close()
            return before, self._size_on_disk()

        try:
            return await asyncio.to_thread(vacuum)
        except sqlite3.DatabaseError as exc:
            if not _store_trouble(exc):
                raise
            raise self._failed("compact", exc) from exc

    def _size_on_disk(self) -> int:
        """Bytes of the database file and its WAL."""
        wal = self.path.with_name(self.path.name + "-wal")
        return sum(p.stat().st_size for p in (self.path, wal) if p.exists())

    @property
    def commits(self) -> int:
        """How many write transactions this store has committed (for benchmarks)."""
        return self._writer.commits if self._writer is not None else 0

    # -- workflows -------------------------------------------------------------------

    async def save_workflow(self, spec: WorkflowSpec) -> None:
        doc = json.dumps(workflow_to_dict(spec))

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO workflows (name, doc, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET doc = excluded.doc, "
                "updated_at = excluded.updated_at",
                (spec.name, doc, time.time()),
            )

        await self._write(write)

    async def add_workflow(self, spec: WorkflowSpec) -> WorkflowSpec:
        doc = json.dumps(workflow_to_dict(spec))

        def write(conn: sqlite3.Connection) -> str:
            conn.execute(
                "INSERT INTO workflows (name, doc, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO NOTHING",
                (spec.name, doc, time.time()),
            )
            stored: str = conn.execute(
                "SELECT doc FROM workflows WHERE name = ?", (spec.name,)
            ).fetchone()[0]
            return stored

        stored = await self._write(write)
        return spec if stored == doc else workflow_from_dict(json.loads(stored))

    async def load_workflows(self) -> list[WorkflowSpec]:
        rows = await self._read(
            lambda c: c.execute("SELECT doc FROM workflows ORDER BY name").fetchall()
        )
        return [spec for (doc,) in rows if (spec := _stored_workflow(doc)) is not None]

    async def load_workflow(self, name: str) -> WorkflowSpec | None:
        row = await self._read(
            lambda c: c.execute("SELECT doc FROM workflows WHERE name = ?", (name,)).fetchone()
        )
        return None if row is None else _stored_workflow(row[0])

    # -- tasks -----------------------------------------------------------------------

    async def insert_task(self, task: Task) -> tuple[Task, bool]:
        [result] = await self.insert_tasks([task])
        return result

    async def insert_tasks(self, tasks: Sequence[Task]) -> list[tuple[Task, bool]]:
        self._check_upgraded()
        rows = [self._insert_row(task) for task in tasks]

        def write(conn: sqlite3.Connection) -> list[tuple[Any, ...] | None]:
            existing: list[tuple[Any, ...] | None] = []
            for row in rows:
                cur = conn.execute(_INSERT, row)
                if cur.rowcount == 1:
                    existing.append(None)
                else:
                    existing.append(
                        conn.execute(
                            f"SELECT {self._columns} FROM tasks WHERE id = ?", (row[0],)
                        ).fetchone()
                    )
            return existing

        found = await self._write(write) if rows else []
        return [
            (task, True) if row is None else (self._rows.decode(row), False)
            for task, row in zip(tasks, found, strict=True)
        ]

    def _insert_row(self, task: Task) -> tuple[Any, ...]:
        created = task.created_at.timestamp()
        doc, history = self._rows.encode_new(task)
        return (
            task.id,
            task.status.value,
            task.workflow_name,
            task.classification,
            task.priority,
            ready_at(task, created),
            task.version,
            created,
            created,
            doc,
            history,
        )

    async def get_task(self, task_id: str) -> Task | None:
        row = await self._read(
            lambda c: c.execute(
                f"SELECT {self._columns} FROM tasks WHERE id = ?", (task_id,)
            ).fetchone()
        )
        return None if row is None else self._rows.decode(row)

    async def task_ids_starting_with(self, prefix: str, limit: int = 10) -> list[str]:
        # The ids from the prefix on, in the primary key's order (SQLite compares
        # text as UTF-8 bytes, which sort as their code points do): those that
        # start with it come first, and together.
        rows = await self._read(
            lambda c: c.execute(
                "SELECT id FROM tasks WHERE id >= ? ORDER BY id LIMIT ?",
                (prefix, min(max(int(limit), 0), 2**62)),
            ).fetchall()
        )
        return [task_id for (task_id,) in rows if task_id.startswith(prefix)]

    async def list_tasks(
        self,
        status: TaskStatus | Sequence[TaskStatus] | None = None,
        workflow_name: str | None = None,
        limit: int = 100,
        offset: int = 0,
        oldest_first: bool = False,
        priority_first: bool = False,
        phase: str | None = None,
    ) -> list[Task]:
        sql, params = self._page(
            self._columns, status, workflow_name, phase, limit, offset, oldest_first, priority_first
        )
        rows = await self._read(lambda c: c.execute(sql, params).fetchall())
        return [self._rows.decode(r) for r in rows]

    async def list_task_summaries(
        self,
        status: TaskStatus | Sequence[TaskStatus] | None = None,
        workflow_name: str | None = None,
        limit: int = 100,
        offset: int = 0,
        oldest_first: bool = False,
        priority_first: bool = False,
        phase: str | None = None,
    ) -> list[Task]:
        # The big fields are left in the file: SQLite cuts the output and the error,
        # and the history's earlier parts are not read.
        sql, params = self._page(
            _SUMMARY_COLUMNS,
            status,
            workflow_name,
            phase,
            limit,
            offset,
            oldest_first,
            priority_first,
        )
        params = [SUMMARY_PREVIEW + 1, SUMMARY_PREVIEW, *params]
        rows = await self._read(lambda c: c.execute(sql, params).fetchall())
        return [_summary(self._rows.decode(r[:8]), *r[8:]) for r in rows]

    def _page(
        self,
        columns: str,
        status: TaskStatus | Sequence[TaskStatus] | None,
        workflow_name: str | None,
        phase: str | None,
        limit: int,
        offset: int,
        oldest_first: bool,
        priority_first: bool,
    ) -> tuple[str, list[str | int]]:
        """The query for a page of tasks, and its parameters."""
        where: list[str] = []
        params: list[str | int] = []
        if status is not None:
            statuses = [status] if isinstance(status, (str, TaskStatus)) else list(status)
            where.append(f"status IN ({', '.join('?' * len(statuses))})")
            params += [TaskStatus.parse(s).value for s in statuses]
        named, values = _named(workflow_name, phase)
        where += named
        params += values
        # The page's rowids first, then its rows: where the rowids must be sorted
        # (several statuses), the sort holds integers read from an index, not every
        # matching task's document.
        order = "rowid " + ("ASC" if oldest_first else "DESC")
        if priority_first:
            order = "priority DESC, " + order
        page = "SELECT rowid FROM tasks"
        if where:
            page += " WHERE " + " AND ".join(where)
        page += f" ORDER BY {order} LIMIT ? OFFSET ?"
        sql = f"SELECT {columns} FROM tasks WHERE rowid IN ({page}) ORDER BY {order}"
        # SQLite's integers end at 2**63; a negative limit would mean "all".
        params += [min(max(int(limit), 0), 2**62), min(max(int(offset), 0), 2**62)]
        return sql, params

    async def count_tasks(
        self, workflow_name: str | None = None, phase: str | None = None
    ) -> dict[TaskStatus, int]:
        where, params = _named(workflow_name, phase)
        sql = "SELECT status, count(*) FROM tasks"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " GROUP BY status"
        rows = await self._read(lambda c: c.execute(sql, params).fetchall())
        counts: dict[TaskStatus, int] = {}
        for status, n in rows:
            _add_count(counts, status, n)
        return counts

    async def count_all_by_workflow(self) -> dict[str | None, dict[TaskStatus, int]]:
        # One pass over the tasks_workflow_phase index, in its order: no sort.
        rows = await self._read(
            lambda c: c.execute(
                "SELECT workflow_name, status, count(*) FROM tasks GROUP BY workflow_name, status"
            ).fetchall()
        )
        counts: dict[str | None, dict[TaskStatus, int]] = {}
        for name, status, n in rows:
            _add_count(counts.setdefault(name, {}), status, n)
        return counts

    async def count_due(self, *, workflows: Sequence[str] | None = None) -> int:
        only, names = _of_workflows(workflows)
        where = f"(status = 'in_progress' OR (status = 'pending' AND ready_at <= ?)){only}"
        params: list[Any] = [time.time(), *names]
        row = await self._read(
            lambda c: c.execute(f"SELECT count(*) FROM tasks WHERE {where}", params).fetchone()
        )
        return int(row[0])

    async def count_delayed(
        self, *, workflows: Sequence[str] | None = None
    ) -> tuple[int, datetime | None]:
        # Pending tasks' ready_at is their run_after (or when they were last released).
        if not self._delayed_index:
            self._delayed_index = await self._read(_has_delayed_index)
        if not self._delayed_index:
            try:
                await self._write(_ensure_delayed_index)
                self._delayed_index = True
            except StoreError:
                # A store this process may only read (wfe metrics run by a scraper
                # that may not write it): counted without the index this time.
                pass
        only, names = _of_workflows(workflows)
        where = f"status = 'pending' AND ready_at > ?{only}"
        params: list[Any] = [time.time(), *names]
        indexed = "INDEXED BY tasks_pending_ready " if self._delayed_index else ""

        def read(conn: sqlite3.Connection) -> tuple[int, float | None]:
            # Two statements in one snapshot: count(*) alone reads only the index,
            # and min() alone stops at its first entry; asked together, neither.
            sql = f"FROM tasks {indexed}WHERE {where}"
            conn.execute("BEGIN")
            try:
                count = conn.execute(f"SELECT count(*) {sql}", params).fetchone()[0]
                first = conn.execute(f"SELECT min(ready_at) {sql}", params).fetchone()[0]
            finally:
                conn.execute("COMMIT")
            return int(count), first

        count, first = await self._read(read)
        return count, None if first is None or not count else utc_from_timestamp(first)

    async def count_by_phase(self, workflow_name: str) -> dict[str, int]:
        # The statuses wanted, not those left out: each is a range of the
        # tasks_workflow_phase index, read alone. (NOT IN would read every entry of
        # the workflow, finished or not, or with statistics gathered, every row.)
        marks = ", ".join("?" * len(_UNFINISHED))
        rows = await self._read(
            lambda c: c.execute(
                "SELECT classification, count(*) FROM tasks WHERE workflow_name = ? "
                f"AND status IN ({marks}) AND classification IS NOT NULL "
                "GROUP BY classification",
                (workflow_name, *_UNFINISHED),
            ).fetchall()
        )
        return dict(rows)

    async def count_all_by_phase(self) -> dict[str, dict[str, int]]:
        # For each stored workflow, the ranges count_by_phase reads (tasks of a
        # workflow not stored are left out, as the default leaves them).
        marks = ", ".join("?" * len(_UNFINISHED))
        rows = await self._read(
            lambda c: c.execute(
                "SELECT workflow_name, classification, count(*) FROM tasks "
                "WHERE workflow_name IN (SELECT name FROM workflows) "
                f"AND status IN ({marks}) AND classification IS NOT NULL "
                "GROUP BY workflow_name, classification",
                _UNFINISHED,
            ).fetchall()
        )
        counts: dict[str, dict[str, int]] = {}
        for name, phase, n in rows:
            counts.setdefault(name, {})[phase] = n
        return counts

    async def update_task(self, task: Task, *, keep_lease: bool = False) -> bool:
        self._check_upgraded()
        now = time.time()
        task.updated_at = utc_from_timestamp(now)
        doc, history = self._rows.encode(task)
        finished = task.status.is_finished
        head: tuple[Any, ...] = (
            task.status.value,
            task.workflow_name,
            task.classification,
            task.priority,
        )
        if keep_lease:  # ready again when the lease runs out, as set by claim
            sql = _UPDATE_KEEPING_LEASE
        else:
            sql, head = _UPDATE_RELEASING_LEASE, (*head, ready_at(task, now))

        def write(conn: sqlite3.Connection) -> bool:
            # Only the write that makes a task finished records it for the outbox:
            # one of a task finished already (an artifact added to it) would publish
            # its result again.
            was = None
            if finished:
                was = conn.execute("SELECT status FROM tasks WHERE id = ?", (task.id,)).fetchone()
            params = (*head, now, doc, history.column(conn), task.id, task.version)
            if conn.execute(sql, params).rowcount != 1:
                return False
            history.finish(conn)
            if was is not None and was[0] not in _FINISHED:
                # The consumers are read in the same transaction, not remembered:
                # one may have registered through another process since this opened.
                # A row not yet acknowledged (an earlier finish, before a retry)
                # now stands for this finish: acknowledging the earlier one keeps it.
                conn.execute(
                    "INSERT INTO outbox (consumer, task_id, version) "
                    "SELECT consumer, ?, ? FROM outbox_consumers WHERE true "
                    "ON CONFLICT (consumer, task_id) DO UPDATE SET version = excluded.version",
                    (task.id, task.version + 1),
                )
            return True

        ok = await self._write(write)
        if ok:
            task.version += 1
            if keep_lease:
                self._rows.remember(task, history.memo)
            else:
                self._rows.forget(task.id)
        return ok

    async def claim(
        self,
        owner: str,
        limit: int,
        lease_seconds: float,
        *,
        workflows: Sequence[str] | None = None,
    ) -> list[Task]:
        self._check_upgraded()
        # Up to ``limit``: SQLite would read a negative LIMIT as no limit at all, and
        # lease every ready task to this owner.
        limit = max(int(limit), 0)
        if limit == 0:
            return []
        if workflows is not None:
            return await self._claim_of(owner, limit, lease_seconds, list(workflows))

        def write(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            now = time.time()
            chosen = _ready_rows(conn, now, int(limit))
            return _claim_rows(conn, [rowid for *_, rowid in chosen], owner, now, lease_seconds)

        return await self._claimed(await self._write(write))

    async def _claimed(self, rows: list[tuple[Any, ...]]) -> list[Task]:
        """Decode claimed rows; fail for good those that cannot be read, which would
        otherwise come back at every claim (their stored text stays as it is)."""
        tasks, unreadable = self._rows.decode_claimed(rows)
        if unreadable:
            # Where the document is still JSON (a bad status, say), it gets the reason
            # too, or the task would read as failed without one.
            await self._write(
                lambda c: c.executemany(
                    "UPDATE tasks SET status = 'failed', ready_at = NULL, lease_owner = NULL, "
                    "lease_expires = NULL, version = version + 1, doc = CASE "
                    "WHEN json_valid(doc) AND json_type(doc) = 'object' "
                    "THEN json_set(doc, '$.error', ?) ELSE doc END WHERE id = ?",
                    [(_UNREADABLE, task_id) for task_id in unreadable],
                )
            )
        return tasks

    async def _claim_of(
        self, owner: str, limit: int, lease_seconds: float, workflows: list[str]
    ) -> list[Task]:
        """``claim`` restricted to some workflows.

        Each workflow's ready tasks come from an index on (workflow, priority, ready
        time), made when the first such claim is made: stores whose workers all run
        every workflow don't pay for keeping it. Merging per-workflow lists keeps a
        claim quick whatever the backlog of the workflows not asked for.
        """

        def write(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            conn.execute(
                "CREATE INDEX IF NOT EXISTS tasks_ready_workflow_priority "
                "ON tasks (workflow_name, priority, ready_at) WHERE ready_at IS NOT NULL"
            )
            now = time.time()
            candidates = []
            for name in dict.fromkeys(workflows):
                candidates += _ready_rows(conn, now, int(limit), workflow=name)
            # Highest priority first; within one, the oldest ready first.
            candidates.sort(key=lambda row: (-row[0], row[1], row[2]))
            chosen = [rowid for *_, rowid in candidates[: int(limit)]]
            return _claim_rows(conn, chosen, owner, now, lease_seconds)

        return await self._claimed(await self._write(write))

    async def renew(self, owner: str, task_ids: Sequence[str], lease_seconds: float) -> set[str]:
        ids = list(task_ids)

        def write(conn: sqlite3.Connection) -> set[str]:
            expires = time.time() + lease_seconds
            held: set[str] = set()
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                rows = conn.execute(
                    "UPDATE tasks SET lease_expires = ?, ready_at = ? WHERE lease_owner = ? "
                    f"AND id IN ({', '.join('?' * len(chunk))}) RETURNING id",
                    (expires, expires, owner, *chunk),
                ).fetchall()
                held.update(r[0] for r in rows)
            return held

        return await self._write(write)

    async def note_phases(self, owner: str, phases: Mapping[str, str]) -> None:
        rows = [(phase, task_id, owner) for task_id, phase in phases.items()]
        if not rows:
            return

        def write(conn: sqlite3.Connection) -> None:
            # The document too, which get_task reads; a damaged one is left as it is.
            conn.executemany(
                "UPDATE tasks SET classification = ?1, "
                "doc = json_set(doc, '$.classification', ?1) "
                "WHERE id = ?2 AND lease_owner = ?3 AND status = 'in_progress' "
                "AND classification IS NULL AND json_valid(doc)",
                rows,
            )

        await self._write(write)

    async def release_dead_leases(self, owners: Sequence[str]) -> int:
        owners = list(owners)

        def write(conn: sqlite3.Connection) -> int:
            now = time.time()
            cur = conn.execute(
                "UPDATE tasks SET lease_expires = ?, ready_at = ? "
                f"WHERE lease_owner IN ({', '.join('?' * len(owners))})",
                (now, now, *owners),
            )
            return cur.rowcount

        return await self._write(write) if owners else 0

    async def lease_owners(self) -> list[str]:
        rows = await self._read(
            lambda c: c.execute(
                "SELECT DISTINCT lease_owner FROM tasks WHERE lease_owner IS NOT NULL"
            ).fetchall()
        )
        return [r[0] for r in rows]

    async def lease_of(self, task_id: str) -> tuple[str, datetime] | None:
        row = await self._read(
            lambda c: c.execute(
                "SELECT lease_owner, lease_expires FROM tasks WHERE id = ? "
                "AND lease_owner IS NOT NULL AND lease_expires IS NOT NULL",
                (task_id,),
            ).fetchone()
        )
        return None if row is None else (row[0], utc_from_timestamp(row[1]))

    # -- phase slots, shared by every process on the file ----------------------------

    shares_phase_slots = True
    #: Seconds after which a task waiting for a phase slot lines up: of one
    #: priority, those that have waited longer go first, in the order they asked;
    #: the others take a freed slot as they ask (a worker's tasks ask again at once
    #: when it frees one, another process's only after a pause).
    phase_slot_line_after = 1.0

    async def take_phase_slot(
        self, task_id: str, owner: str, workflow: str, phase: str, limit: int, priority: int
    ) -> bool | None:
        await self._make_slots_table()

        def write(conn: sqlite3.Connection) -> bool | None:
            now = time.time()
            # A task whose lease this owner no longer holds (cancelled, or taken
            # over, while it waited in line) gets no slot: its phase must not start,
            # and a slot it held would not count, letting one task too many run.
            held = conn.execute(
                "SELECT 1 FROM tasks WHERE id = ? AND lease_owner = ? AND lease_expires > ?",
                (task_id, owner, now),
            ).fetchone()
            if held is None:
                conn.execute(
                    "DELETE FROM phase_slots WHERE task_id = ? AND owner = ?", (task_id, owner)
                )
                return None
            rows = conn.execute(_PHASE_SLOT_HOLDERS, (now, workflow, phase)).fetchall()
            stale = [(row[0],) for row in rows if not row[4] and row[0] != task_id]
            if stale:
                conn.executemany("DELETE FROM phase_slots WHERE task_id = ?", stale)
            # Asking again keeps the task's place in line (or its slot), unless the
            # place was another lease's: a run that took the task over starts anew.
            mine = next((row for row in rows if row[0] == task_id and row[4]), None)
            since = now if mine is None else mine[2]
            others = [row for row in rows if row[4] and row[0] != task_id]
            running = sum(1 for row in others if row[3])
            # Of one priority, only a task that has waited a while goes first: one
            # that has just asked must not leave a freed slot unused until another
            # process asks again, while one that keeps losing is served in turn.
            lined_up = min(since, now - self.phase_slot_line_after)
            ahead = sum(
                1
                for row in others
                if not row[3] and (row[1] > priority or (row[1] == priority and row[2] < lined_up))
            )
            granted = (mine is not None and bool(mine[3])) or running + ahead < limit
            conn.execute(
                "INSERT OR REPLACE INTO phase_slots "
                "(task_id, workflow, phase, owner, priority, since, running) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (task_id, workflow, phase, owner, priority, since, int(granted)),
            )
            return granted

        return await self._write(write)

    async def release_phase_slot(self, task_id: str) -> None:
        await self._make_slots_table()
        await self._write(
            lambda conn: conn.execute("DELETE FROM phase_slots WHERE task_id = ?", (task_id,))
        )

    async def _make_slots_table(self) -> None:
        """Make the phase_slots table if it is not there, once per store object."""
        if not self._slots_table:
            await self._write(lambda conn: conn.execute(_PHASE_SLOTS_TABLE))
            self._slots_table = True

    async def has_active_tasks(self, *, workflows: Sequence[str] | None = None) -> bool:
        params: tuple[str, ...] = _ACTIVE
        if workflows is None:
            sql = "SELECT 1 FROM tasks WHERE status IN (?, ?) LIMIT 1"
        else:
            names = list(workflows)
            sql = (
                "SELECT 1 FROM tasks WHERE status IN (?, ?) "
                f"AND workflow_name IN ({', '.join('?' * len(names))}) LIMIT 1"
            )
            params = (*_ACTIVE, *names)
        row = await self._read(lambda c: c.execute(sql, params).fetchone())
        return row is not None

    # -- clearing out finished tasks ---------------------------------------------------

    def _finished_where(
        self, before: float, statuses: Sequence[TaskStatus], workflow_name: str | None
    ) -> tuple[str, tuple[Any, ...]]:
        wanted = [TaskStatus.parse(s).value for s in statuses]
        if not wanted or any(s not in _FINISHED for s in wanted):
            raise StoreError("only finished tasks (completed, failed, cancelled) are deleted")
        # The first term is written as the tasks_finished index's condition, with
        # literals, so that SQLite can use that index (for deletes, oldest first).
        sql = (
            f"status IN ({', '.join(repr(s) for s in _FINISHED)}) "
            f"AND status IN ({', '.join('?' * len(wanted))}) AND updated_at < ? "
            "AND id NOT IN (SELECT task_id FROM outbox) "
            # Nor a child whose parent has not finished: it reads its children's
            # results when the last one finishes, however long that takes.
            "AND NOT EXISTS (SELECT 1 FROM tasks AS parent WHERE parent.id = "
            "(CASE WHEN json_valid(tasks.doc) THEN json_extract(tasks.doc, '$.parent_id') END) "
            f"AND parent.status NOT IN ({', '.join(repr(s) for s in _FINISHED)}))"
        )
        params: tuple[Any, ...] = (*wanted, before)
        if workflow_name is not None:
            sql += " AND workflow_name = ?"
            params += (workflow_name,)
        return sql, params

    async def delete_finished(
        self,
        before: float,
        statuses: Sequence[TaskStatus],
        *,
        workflow_name: str | None = None,
        limit: int = 1000,
    ) -> list[str]:
        self._check_upgraded()
        where, params = self._finished_where(before, statuses, workflow_name)

        def write(conn: sqlite3.Connection) -> list[str]:
            _ensure_finished_index(conn)
            rows = conn.execute(
                "DELETE FROM tasks WHERE rowid IN (SELECT rowid FROM tasks INDEXED BY "
                f"tasks_finished WHERE {where} ORDER BY updated_at LIMIT ?) RETURNING id",
                (*params, max(int(limit), 0)),  # a negative LIMIT would be none at all
            ).fetchall()
            conn.executemany("DELETE FROM history_parts WHERE task_id = ?", rows)
            return [r[0] for r in rows]

        deleted = await self._write(write)
        for task_id in deleted:
            self._rows.forget(task_id)
        return deleted

    async def count_finished(
        self,
        before: float,
        statuses: Sequence[TaskStatus],
        *,
        workflow_name: str | None = None,
    ) -> int:
        where, params = self._finished_where(before, statuses, workflow_name)
        # The index delete_finished reads, made here too if no purge has made it: a
        # dry run then reads the tasks old enough, not every finished one.
        if not self._finished_index:
            await self._write(_ensure_finished_index)
            self._finished_index = True
        row = await self._read(
            lambda c: c.execute(
                f"SELECT count(*) FROM tasks INDEXED BY tasks_finished WHERE {where}", params
            ).fetchone()
        )
        return int(row[0])

    # -- outbox ----------------------------------------------------------------------

    async def outbox_register(self, consumer: str) -> None:
        check_consumer_name(consumer)
        await self._write(
            lambda c: c.execute(
                "INSERT OR IGNORE INTO outbox_consumers (consumer) VALUES (?)", (consumer,)
            )
        )

    async def outbox_pending(self, consumer: str, limit: int = 100) -> list[Task]:
        rows = await self._read(
            lambda c: c.execute(
                # A task retried since it finished is not due for publishing until it
                # finishes again: its row must not fill the page meanwhile.
                f"SELECT {self._joined_columns} FROM outbox "
                "JOIN tasks ON tasks.id = outbox.task_id "
                "WHERE outbox.consumer = ? "
                f"AND tasks.status IN ({', '.join('?' * len(_FINISHED))}) "
                "ORDER BY outbox.seq LIMIT ?",
                (consumer, *_FINISHED, max(int(limit), 0)),  # a negative LIMIT: no limit
            ).fetchall()
        )
        return [self._rows.decode(r) for r in rows]

    async def outbox_ack(
        self, consumer: str, task_ids: Sequence[str], *, versions: Sequence[int] | None = None
    ) -> None:
        ids = list(task_ids)
        params: list[tuple[str, str]] | list[tuple[str, str, int]]
        if versions is None:
            sql, params = (
                "DELETE FROM outbox WHERE consumer = ? AND task_id = ?",
                [(consumer, i) for i in ids],
            )
        else:
            sql = (
                "DELETE FROM outbox WHERE consumer = ? AND task_id = ? "
                "AND (version IS NULL OR version <= ?)"
            )
            params = [(consumer, i, v) for i, v in zip(ids, versions, strict=True)]
        await self._write(lambda c: c.executemany(sql, params))

    async def outbox_consumers(self) -> dict[str, int]:
        rows = await self._read(
            lambda c: c.execute(
                "SELECT consumer, (SELECT count(*) FROM outbox WHERE outbox.consumer = "
                "outbox_consumers.consumer) FROM outbox_consumers ORDER BY consumer"
            ).fetchall()
        )
        return {consumer: int(count) for consumer, count in rows}

    async def outbox_unregister(self, consumer: str) -> int | None:
        def unregister(c: sqlite3.Connection) -> int | None:
            gone = c.execute("DELETE FROM outbox_consumers WHERE consumer = ?", (consumer,))
            if not gone.rowcount:
                return None
            return c.execute("DELETE FROM outbox WHERE consumer = ?", (consumer,)).rowcount

        return await self._write(unregister)


class StoreFileLostError(StoreError):
    """The store's file was deleted or replaced while this process had it open: this
    process cannot use the store again (a new one, started again, opens the path
    anew): ``lasting``, so a worker stops rather than try again."""

    lasting = True


class StoreNotOpenError(StoreError):
    """The store was used before it was opened or after it was closed."""

    lasting = True


# How often (seconds, at most) reads and writes look whether the file is still there.
_FILE_CHECK_EVERY = 1.0


# SQLite's result code SQLITE_FULL ("database or disk is full").
_SQLITE_FULL = 13


def _store_trouble(exc: sqlite3.Error) -> bool:
    """Whether SQLite's error is the store's trouble, not the calling code's: an
    OperationalError (a lock held too long, a full disk, a file server away), or a
    plain DatabaseError ("database disk image is malformed": a damaged file). Its
    subclasses (an IntegrityError, a ProgrammingError) are the code's, and go on."""
    return isinstance(exc, sqlite3.OperationalError) or type(exc) is sqlite3.DatabaseError


def _store_error(exc: sqlite3.Error) -> type[StoreError]:
    """The StoreError to raise for ``exc``: StoreBusyError for a lock held too long."""
    return StoreBusyError if locked(exc) else StoreError


def _why_locked(exc: sqlite3.Error, timeout: float = _BUSY_TIMEOUT) -> str:
    """Why SQLite said "database is locked", which names no cause."""
    if not locked(exc):
        return ""
    return (
        f" (another process has held its write lock for over {timeout:g} s: a long purge, "
        "compaction or upgrade, or a program stuck in a transaction; it can be used "
        "again once that ends)"
    )


def _disk_full(exc: sqlite3.Error) -> bool:
    # sqlite_errorcode is there from Python 3.11 on; before, SQLite's words tell.
    code = getattr(exc, "sqlite_errorcode", None)
    return code == _SQLITE_FULL if code is not None else "database or disk is full" in str(exc)


def _file_id(path: Path) -> tuple[int, int]:
    info = os.stat(path)
    return info.st_dev, info.st_ino


def _file_id_or_none(path: Path) -> tuple[int, int] | None:
    """The file's identity, or None when there is no file there now."""
    try:
        return _file_id(path)
    except FileNotFoundError:
        return None


class _Vanished(Exception):
    """The database file was deleted or replaced while the store opened it."""


#: How many times an open starts again after its file vanished under it.
_OPEN_TRIES = 5


def _other_owner(folder: Path, db: Path, store_id: str) -> tuple[Path | None, bool]:
    """Which other database beside ``db`` owns the artifacts ``folder`` ``db``
    records, if one does; and whether ``db``, owning it, should mark it as its own.

    - A folder marked with ``db``'s file name is its own (also when the file was
      replaced by a restored backup: the name is what the folder goes with).
    - A folder marked with another file's name is that file's while that file is
      there: ``db`` is a copy of it (the same store id), or a store made before
      markers that recorded that folder. Stores made before each named its own
      folder, whose names share a stem (``jobs.db`` and ``jobs.sqlite``, both
      ``jobs-artifacts``), keep sharing it as they did.
    - A folder marked with a file's name that is gone is ``db``'s: the store was
      renamed, or restored under another name.
    - An unmarked folder (made before markers, or not made yet) is ``db``'s unless
      its name is ``<another file>-artifacts`` and that file is beside it: the
      folder name the database records, copied with it.
    """
    marker = _read_marker(folder)
    if marker is None:
        named_after = folder.name.removesuffix("-artifacts")
        if named_after == folder.name or _same_file(db.parent / named_after, db):
            return None, True
        other = _named_database(db.parent, named_after)
        return (other, False) if other is not None else (None, True)
    name, marked_id = marker
    if name == db.name:
        return None, False
    other = _named_database(db.parent, name)
    if other is None or _same_file(other, db):
        return None, True
    if marked_id != store_id and folder.name == f"{db.stem}-artifacts" and other.stem == db.stem:
        return None, False  # the older layout's sharing: left as it was
    return other, False


def _not_a_database(exc: sqlite3.Error) -> bool:
    """Whether SQLite refused a file as not a database (``SQLITE_NOTADB``)."""
    code = getattr(exc, "sqlite_errorcode", None)  # from Python 3.11 on
    return code == 26 if code is not None else "file is not a database" in str(exc)


def _named_database(folder: Path, name: str) -> Path | None:
    """``folder/name`` if it is a SQLite file, else None."""
    if not name or "/" in name or name in (".", ".."):
        return None
    path = folder / name
    try:
        if _held_files.is_held(_file_id(path)):
            return path  # a store of this process has it open: not to be read
    except OSError:
        return None
    try:
        with open(path, "rb") as fh:
            return path if fh.read(16) == b"SQLite format 3\x00" else None
    except OSError:
        return None


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _read_marker(folder: Path) -> tuple[str, str] | None:
    """(database file name, store id) from the folder's marker; None without one."""
    try:
        doc = json.loads((folder / STORE_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict):
        return None
    name, store_id = doc.get("database"), doc.get("store_id")
    if not isinstance(name, str) or not isinstance(store_id, str):
        return None
    return name, store_id


def _mark_folder(folder: Path, name: str, store_id: str) -> None:
    """Mark an existing artifacts folder as the database ``name``'s (atomically).
    A folder not made yet is marked at a later open: a store whose tasks have no
    files gets no folder."""
    if not folder.is_dir() or _read_marker(folder) == (name, store_id):
        return
    text = json.dumps({"database": name, "store_id": store_id}) + "\n"
    temporary = folder / f"{STORE_MARKER}.{os.getpid()}.tmp"
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, folder / STORE_MARKER)
    except OSError as exc:
        # Unmarked, it is still used as before: only copies beside are told apart less.
        logger.debug("cannot mark the artifacts folder %s: %s", folder, exc)
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)


def _add_count(counts: dict[TaskStatus, int], status: str, n: int) -> None:
    # A status that is none (a damaged row) reads as FAILED, as its task does.
    known = TaskStatus(status if status in _STATUS_VALUES else TaskStatus.FAILED.value)
    counts[known] = counts.get(known, 0) + n


def _stored_workflow(doc: str) -> WorkflowSpec | None:
    """A stored workflow's definition, or None (and a warning) for one no longer valid."""
    try:
        return workflow_from_dict(json.loads(doc))
    except WorkflowError as exc:
        # Stored by an older wfcore that checked less: the rest stay usable.
        logger.warning("stored workflow ignored, it is no longer valid: %s", exc)
        return None


def _ensure_finished_index(conn: sqlite3.Connection) -> None:
    """Index finished tasks by when they last changed, from the first purge on:
    stores never purged don't pay for keeping it."""
    conn.execute(
        "CREATE INDEX IF NOT EXISTS tasks_finished ON tasks (updated_at) "
        f"WHERE status IN ({', '.join(repr(s) for s in _FINISHED)})"
    )


def _of_workflows(workflows: Sequence[str] | None) -> tuple[str, list[str]]:
    """A query's ``AND workflow_name IN (...)`` clause and its parameters ("" and
    none when ``workflows`` is None: every workflow)."""
    if workflows is None:
        return "", []
    names = list(dict.fromkeys(workflows))
    return f" AND workflow_name IN ({', '.join('?' * len(names))})", names


def _has_delayed_index(conn: sqlite3.Connection) -> bool:
    found = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'tasks_pending_ready'"
    ).fetchone()
    return found is not None


def _ensure_delayed_index(conn: sqlite3.Connection) -> None:
    """Index pending tasks by when they are due, from the first count_delayed on
    (worker progress asks it): counting the delayed ones then reads only their
    index entries, and the next one due is the first entry past now."""
    conn.execute(
        "CREATE INDEX IF NOT EXISTS tasks_pending_ready ON tasks (ready_at) "
        "WHERE status = 'pending'"
    )


@hookimpl(trylast=True)
def wfe_open_store(url: str) -> Store | None:
    if url.startswith("sqlite:"):
        return SQLiteStore.from_url(url)
    return None


def _named(workflow_name: str | None, phase: str | None) -> tuple[list[str], list[str]]:
    """The conditions (and their parameters) of a listing or count narrowed to one
    workflow and one phase, each when given."""
    pairs = [("workflow_name", workflow_name), ("classification", phase)]
    return (
        [f"{column} = ?" for column, value in pairs if value is not None],
        [value for _, value in pairs if value is not None],
    )

"""Group commit: the one thread that writes to a SQLite store's file.

Every write of the store goes to this thread's queue. It takes every write queued
since its last commit (up to :data:`MAX_BATCH`) and applies them in one
transaction, then wakes the waiting coroutines, each in its own event loop: many
tasks finishing phases at once cost one commit. If one write in a batch fails, the
batch is rolled back and each write retried in its own transaction, so only the
failing one sees an error.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import StoreError

__all__ = ["MAX_BATCH", "FileLost", "Writer", "begin_immediate", "locked"]

#: The most writes one transaction takes.
MAX_BATCH = 5000


class Writer(threading.Thread):
    """The thread that owns the write connection and commits writes in batches."""

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        timeout: float,
        closing: threading.Event,
        file_is_ours: Callable[[], bool],
    ) -> None:
        super().__init__(name="wfcore-sqlite-writer", daemon=True)
        self._connect = connect
        self._timeout = timeout
        self._closing = closing
        self._file_is_ours = file_is_ours
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.commits = 0

    def submit(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put((fn, args, loop, future))
        return future

    def close(self) -> None:
        self._queue.put(None)
        self.join()

    def run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    return
                batch = [item]
                stop = False
                while len(batch) < MAX_BATCH:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        stop = True
                        break
                    batch.append(more)
                if conn is None:
                    # Opened for the first batch, and again after it could not be
                    # (its folder away, say): the batch fails with why, rather than
                    # the thread, which every later write would wait for.
                    try:
                        conn = self._connect()
                    except Exception as exc:
                        self._settle_all(batch, exc)
                        if stop:
                            return
                        continue
                self._apply(conn, batch)
                if stop:
                    return
        finally:
            if conn is not None:
                conn.close()

    def _settle_all(self, batch: list[Any], exc: BaseException) -> None:
        for _, _, loop, future in batch:
            try:
                loop.call_soon_threadsafe(_settle, [(future, False, exc)])
            except RuntimeError:
                pass  # the loop closed; nobody waits for this result

    def _apply(self, conn: sqlite3.Connection, batch: list[Any]) -> None:
        try:
            results = self._transaction(conn, batch)
        except Exception:
            # One write failed: redo each in its own transaction so that only the
            # failing one reports an error.
            results = []
            for item in batch:
                try:
                    results.extend(self._transaction(conn, [item]))
                except Exception as exc:
                    results.append((False, exc))
        by_loop: dict[Any, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for (_, _, loop, future), (ok, value) in zip(batch, results, strict=True):
            by_loop.setdefault(loop, []).append((future, ok, value))
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, items)
            except RuntimeError:
                pass  # the loop closed; nobody waits for these results

    def _transaction(self, conn: sqlite3.Connection, batch: list[Any]) -> list[tuple[bool, Any]]:
        begin_immediate(conn, self._timeout, self._closing)
        try:
            results = [(True, fn(conn, *args)) for fn, args, _, _ in batch]
            # A file deleted or replaced under the open store would take the writes
            # with it, after they were acknowledged: looked at before every commit,
            # not only once a second as reads are.
            if not self._file_is_ours():
                raise FileLost()
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self.commits += 1
        return results


def _settle(items: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in items:
        if future.done():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


class FileLost(Exception):
    """The writer found the store's file deleted or replaced before a commit."""


def locked(exc: sqlite3.Error) -> bool:
    """Whether SQLite gave up waiting for another connection's lock on the file
    (SQLITE_BUSY), not one of its own "locked" errors within one connection (a
    table locked by an unfinished statement), which another process does not cause."""
    return "database is locked" in str(exc)


# How often a wait for another process's write lock looks whether the store closed.
_LOCK_WAIT_SLICE = 0.1


def begin_immediate(conn: sqlite3.Connection, timeout: float, closing: threading.Event) -> None:
    """``BEGIN IMMEDIATE``: take the write lock, waiting up to ``timeout`` seconds
    for another process to let it go, as the busy timeout would, but in slices, so
    that ``closing`` set (the store closed, its open given up) ends the wait within
    one: SQLite's own wait cannot be interrupted. Once closing, it does not wait."""
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = 0.0 if closing.is_set() else deadline - time.monotonic()
            wait = max(0.0, min(left, _LOCK_WAIT_SLICE))
            conn.execute(f"PRAGMA busy_timeout={round(wait * 1000)}")
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if not locked(exc) or time.monotonic() >= deadline:
                    raise
                if closing.is_set():
                    raise StoreError(
                        "the store was closed while waiting for another process's write lock"
                    ) from None
    finally:
        conn.execute(f"PRAGMA busy_timeout={round(timeout * 1000)}")

"""Running two openers of a store at once: each in a thread and event loop of its
own, or one in a forked process, sending back its result through a pipe."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import multiprocessing
import multiprocessing.connection
import multiprocessing.context
import os
import pickle
import threading
import traceback
import warnings
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

_Ready = Callable[[], Awaitable[None]]


async def _meet(barrier: threading.Barrier, timeout: float) -> None:
    """Wait, without blocking the event loop, until every party reaches ``barrier``."""
    await asyncio.to_thread(barrier.wait, timeout)


def _start_in_threads(
    count: int,
    timeout: float,
    work: Callable[[int, _Ready], Awaitable[Any]],
    barrier: threading.Barrier | None = None,
) -> list[concurrent.futures.Future[Any]]:
    """Start ``work(n, ready)`` for each n below ``count``, each in a thread and event
    loop of its own; return the futures of their results.

    ``await ready()`` waits until every party of ``barrier`` (by default, these
    ``count``) has called it: each does its slow preparation first, so that what
    comes after runs truly at the same time. The threads are daemons: one stuck in
    a store call does not keep a failed test waiting for it.
    """
    gate = barrier or threading.Barrier(count)
    ready = functools.partial(_meet, gate, timeout)
    futures: list[concurrent.futures.Future[Any]] = [
        concurrent.futures.Future() for _ in range(count)
    ]

    def run(n: int) -> None:
        try:
            futures[n].set_result(asyncio.run(asyncio.wait_for(work(n, ready), timeout)))
        except BaseException as exc:  # the caller raises it
            futures[n].set_exception(exc)
            gate.abort()  # after: the others' broken barrier is not the first error

    for n in range(count):
        threading.Thread(target=run, args=(n,), name=f"store-contract-{n}", daemon=True).start()
    return futures


def _fork_context() -> multiprocessing.context.BaseContext | None:
    """The ``fork`` start method, where the system has one (not on Windows)."""
    if not hasattr(os, "fork"):
        return None
    try:
        return multiprocessing.get_context("fork")
    except ValueError:
        return None


# Seconds a forked opener may take beyond the test's timeout (its own wait_for
# fires first) to send what it got, before it is killed.
_CHILD_GRACE = 10.0


class _RemoteTraceback(Exception):
    """The traceback of an error raised in a forked opener, as text: the cause of
    the error raised here in its stead."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


class _ChildFailed(Exception):
    """An error of a forked opener that could not be sent here as it was."""


def _run_in_child(
    work: Callable[[_Ready], Awaitable[Any]],
    barrier: threading.Barrier,
    timeout: float,
    send: multiprocessing.connection.Connection,
) -> None:
    """In a forked process: ``await work(ready)`` in an event loop of its own, and
    send back ``("result", value)`` or ``("error", exception or None, traceback)``."""
    outcome: tuple[Any, ...]
    failed = False
    try:
        ready = functools.partial(_meet, barrier, timeout)
        outcome = ("result", asyncio.run(asyncio.wait_for(work(ready), timeout)))
    except BaseException as exc:  # sent to the parent, which raises it
        failed = True
        text = "".join(traceback.format_exception(exc))
        try:
            sent: BaseException | None = pickle.loads(pickle.dumps(exc))
        except Exception:
            sent = None
        outcome = ("error", sent, text)
    try:
        send.send(outcome)
    except Exception as exc:  # a result that does not pickle
        failed = True
        text = "".join(traceback.format_exception(exc))
        send.send(("error", None, f"sending the result back failed:\n{text}"))
    finally:
        send.close()
        if failed:
            # After sending: the other opener's broken barrier is not the first error.
            barrier.abort()
    # The process ends with os._exit (multiprocessing's way): pytest's atexit
    # handlers and the parent's finalizers do not run here.


class _ForkedOpener:
    """``work(ready)`` run in a forked process; :attr:`result` gets what it returned
    or raised, as a thread's future would (an error with the child's traceback as
    its cause)."""

    def __init__(
        self,
        context: multiprocessing.context.BaseContext,
        timeout: float,
        work: Callable[[_Ready], Awaitable[Any]],
        barrier: threading.Barrier,
    ) -> None:
        self.result: concurrent.futures.Future[Any] = concurrent.futures.Future()
        receive, send = context.Pipe(duplex=False)
        self._process = context.Process(  # type: ignore[attr-defined]
            target=_run_in_child,
            args=(work, barrier, timeout, send),
            name="store-contract-1",
            daemon=True,
        )
        with warnings.catch_warnings():
            # Python 3.12 warns of forking while threads run (pytest-xdist's, say):
            # the child uses nothing of theirs, only the objects it is handed.
            warnings.filterwarnings(
                "ignore", message=r".*fork\(\) may lead to deadlocks", category=DeprecationWarning
            )
            self._process.start()
        send.close()  # the child's copy is the only one left: its end is an EOF here
        threading.Thread(
            target=self._collect,
            args=(receive, barrier, timeout + _CHILD_GRACE),
            name="store-contract-collect",
            daemon=True,
        ).start()

    def _collect(
        self,
        receive: multiprocessing.connection.Connection,
        barrier: threading.Barrier,
        timeout: float,
    ) -> None:
        __tracebackhide__ = True  # the child's traceback, its cause, says where
        try:
            self.result.set_result(self._receive(receive, timeout))
        except BaseException as exc:
            self.result.set_exception(exc)
            barrier.abort()
        finally:
            receive.close()

    def _receive(self, receive: multiprocessing.connection.Connection, timeout: float) -> Any:
        __tracebackhide__ = True
        if not receive.poll(timeout):
            self._process.kill()
            raise TimeoutError(
                f"the second store's process (a fork of this one) gave no result in "
                f"{timeout:g} s, and was killed: a store call never returned"
            )
        try:
            outcome = receive.recv()
        except EOFError:
            self._process.join(_CHILD_GRACE)
            raise _ChildFailed(
                "the second store's process (a fork of this one) ended without a result "
                f"(exit code {self._process.exitcode}): the store ended it, or crashed it"
            ) from None
        if outcome[0] == "result":
            return outcome[1]
        _, error, text = outcome
        if error is None:
            error = _ChildFailed(
                "the second store's process (a fork of this one) failed; its traceback:\n" + text
            )
        else:
            error.__cause__ = _RemoteTraceback(
                f"\n(in the second store's process, a fork of this one)\n{text}"
            )
        raise error

    def stop(self) -> None:
        """Wait a little for the process to end, then kill it."""
        self._process.join(_CHILD_GRACE)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()


def _results(futures: Sequence[concurrent.futures.Future[Any]]) -> list[Any]:
    """The futures' results; the first error as soon as one fails."""
    done, pending = concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_EXCEPTION)
    errors = [error for future in done if (error := future.exception()) is not None]
    if pending and all(isinstance(error, threading.BrokenBarrierError) for error in errors):
        # The party that broke the barrier may be a forked opener, whose own error
        # comes over a pipe a moment after the others see the barrier broken.
        done, _ = concurrent.futures.wait(
            pending, _CHILD_GRACE, return_when=concurrent.futures.FIRST_EXCEPTION
        )
        errors += [error for future in done if (error := future.exception()) is not None]
    # A broken barrier is what the first real error caused in the others.
    errors.sort(key=lambda error: isinstance(error, threading.BrokenBarrierError))
    if errors:
        raise errors[0]
    return [future.result() for future in futures]

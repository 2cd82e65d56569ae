"""The threads plain (sync) handlers and tools run in: daemon threads of their own.

A thread cannot be stopped, and a handler blocked for good (a call without a
timeout, a stuck lock) would otherwise hold its process open after the worker has
handed its task back: ``asyncio.run`` waits for every thread of the loop's default
executor, and Python waits at exit for every executor thread. These threads are
daemons outside any executor, so a stopped worker exits, and the task's next run
starts from what was stored, as after a kill. Like the default executor, at most
``min(32, CPUs + 4)`` run at once; further calls wait for a free thread. Being
apart from that executor, they also leave it free for the engine's own file work.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from ._wakeup import call_in

__all__ = ["run_blocking"]

T = TypeVar("T")

_Job = tuple[
    asyncio.AbstractEventLoop,
    "asyncio.Future[Any]",
    contextvars.Context,
    Callable[..., Any],
    tuple[Any, ...],
    dict[str, Any],
]


class _DaemonThreads:
    def __init__(self, size: int) -> None:
        self._size = size
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0  # threads waiting for a job, and not promised one yet

    def submit(self, job: _Job) -> None:
        self._jobs.put(job)
        with self._lock:
            if self._idle:
                self._idle -= 1  # that thread takes this job (or one before it)
                return
            if self._threads >= self._size:
                return  # waits for the first thread to finish what it runs
            self._threads += 1
            number = self._threads
        threading.Thread(target=self._work, name=f"wfe-handler-{number}", daemon=True).start()

    def _work(self) -> None:
        while True:
            loop, future, context, function, args, kwargs = self._jobs.get()
            try:
                _settle(loop, future, context.run(function, *args, **kwargs), None)
            except BaseException as exc:  # SystemExit too: the phase fails, not the thread
                _settle(loop, future, None, _for_future(exc, function))
            del loop, future, context, function, args, kwargs  # not kept while idle
            with self._lock:
                self._idle += 1


def _for_future(exc: BaseException, function: Callable[..., Any]) -> BaseException:
    """The exception to raise in the awaiting coroutine. A StopIteration (a next()
    on an empty iterator) cannot be set on a future, and the await would wait for
    ever: it becomes a RuntimeError, as a coroutine's own StopIteration does. So does
    a KeyboardInterrupt: Ctrl-C reaches the main thread only, so one raised here is
    the function's own, and must fail its call, not end the worker as Ctrl-C would."""
    if not isinstance(exc, (StopIteration, KeyboardInterrupt)):
        return exc
    name = getattr(function, "__qualname__", None) or object.__repr__(function)
    try:
        said = str(exc)
    except Exception:  # nothing may escape here: the await would never end
        said = ""
    kind = type(exc).__name__
    error = RuntimeError(f"{name} raised {kind}" + (f": {said}" if said else ""))
    error.__cause__ = exc
    return error


def _settle(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Any],
    result: Any,
    exc: BaseException | None,
) -> None:
    def settle() -> None:
        if future.done():  # cancelled: the phase timed out or stopped meanwhile
            return
        if exc is None:
            future.set_result(result)
        else:
            future.set_exception(exc)

    call_in(loop, settle)  # nothing, when the loop has closed: nobody waits any more


_threads = _DaemonThreads(min(32, (os.cpu_count() or 1) + 4))


async def run_blocking(function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Call a blocking ``function`` in a daemon thread and await its result, with the
    caller's context (contextvars), as ``asyncio.to_thread`` does. Cancelling the
    await leaves the call running; what it returns then is dropped, and it does not
    keep the process from exiting."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    _threads.submit((loop, future, contextvars.copy_context(), function, args, kwargs))
    return await future

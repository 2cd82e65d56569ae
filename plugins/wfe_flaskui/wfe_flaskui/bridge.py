"""The bridge between Flask's threads and the asyncio engine: one loop in one background thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from wfcore import ECSWorkflowEngine, WorkflowError
from wfcore.stores.base import shown_url

__all__ = ["BridgeError", "BridgeTimeout", "EngineBridge"]

logger = logging.getLogger("wfe_flaskui")

T = TypeVar("T")


class BridgeError(RuntimeError):
    """The engine's loop is not running, or a call to it timed out."""


class BridgeTimeout(BridgeError):
    """A call to the engine timed out. What it started may still finish: a store write
    already handed to the store's writer thread is done whatever becomes of the call."""


class EngineBridge:
    """Own an engine on a private event loop and let synchronous code call it.

    The engine, its store and (optionally) its worker loop all live on one asyncio
    loop in a daemon thread, because a store is bound to the loop that opened it.
    Request handlers, which run in Werkzeug's threads, submit coroutines to that
    loop with :meth:`call` and block until the result arrives.

    :param engine: the engine to own; nothing else may drive it.
    :param run_worker: also run ``engine.run()`` on the loop, so this process
        claims and runs tasks (the one-process set-up).
    :param timeout: default seconds a :meth:`call` waits for its result.
    """

    def __init__(
        self, engine: ECSWorkflowEngine, *, run_worker: bool = False, timeout: float = 30.0
    ) -> None:
        self.engine = engine
        self.run_worker = run_worker
        self.timeout = timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._worker: concurrent.futures.Future[None] | None = None
        self._background: list[concurrent.futures.Future[Any]] = []
        self._lock = threading.Lock()
        self._stopped = False
        #: Called (on the loop's thread) with the error the worker loop stopped with;
        #: None logs it.
        self.on_worker_error: Callable[[BaseException], None] | None = None

    @property
    def started(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._loop is not None and not self._stopped

    @property
    def worker_running(self) -> bool:
        """True while this bridge runs the engine's worker loop."""
        return self._worker is not None and not self._worker.done()

    def start(self) -> EngineBridge:
        """Start the loop thread, open the store and (if asked) the worker; idempotent.

        Raises whatever opening the store raises (an unknown scheme, a database
        that is not ours), after shutting the loop down again; a later call tries
        again.
        """
        with self._lock:
            if self._loop is not None:
                if self._stopped:
                    raise BridgeError("this bridge was stopped; make a new one")
                return self
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run_loop() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            thread = threading.Thread(target=run_loop, name="wfe-flaskui-loop", daemon=True)
            thread.start()
            ready.wait()
            self._loop, self._thread = loop, thread
        try:
            try:
                self.call(self.engine.get_store())
            except BridgeTimeout as exc:
                # Opening writes to the store (its schema, its workers' table): another
                # process holding its write lock holds the open up, as it would a change.
                raise BridgeError(
                    f"the store {shown_url(self.engine.store_url)} did not open: {exc}; "
                    "another process may hold its write lock (a long purge, compaction "
                    "or upgrade, or a program stuck in a transaction): try again once "
                    "that ends"
                ) from None
        except BaseException:
            self._halt_loop()
            # Not stopped for good: the next start tries again, and says again why
            # the store cannot be opened, until it can (its folder mounted, say).
            with self._lock:
                self._loop, self._thread, self._stopped = None, None, False
            raise
        if self.run_worker:
            self._worker = asyncio.run_coroutine_threadsafe(self.engine.run(), loop)
            self._worker.add_done_callback(self._worker_ended)
        return self

    def call(
        self,
        work: Coroutine[Any, Any, T] | Callable[[ECSWorkflowEngine], Awaitable[T]],
        timeout: float | None = None,
    ) -> T:
        """Run a coroutine (or ``fn(engine)`` returning one) on the loop; return its result.

        Exceptions raised by the coroutine are raised here. On timeout the
        coroutine is cancelled and BridgeTimeout is raised.
        """
        loop = self._loop
        if loop is None or self._stopped:
            if asyncio.iscoroutine(work):
                work.close()
            raise BridgeError("the dashboard's engine is not running")
        coro = work if asyncio.iscoroutine(work) else work(self.engine)
        future = asyncio.run_coroutine_threadsafe(_as_coroutine(coro), loop)
        wait = self.timeout if timeout is None else timeout
        try:
            return future.result(wait)
        except concurrent.futures.TimeoutError:
            if future.done():
                raise  # the coroutine's own TimeoutError (the same class since Python 3.11)
            future.cancel()
            raise BridgeTimeout(f"the engine did not answer within {wait:g}s") from None
        except concurrent.futures.CancelledError:
            # stop() cancels what still runs on the loop (a request long-polling a
            # task, say): the request gets a 503 saying so, not a 500.
            raise BridgeError(
                "the dashboard stopped while this request waited for its engine"
            ) from None

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        """Run a long-lived coroutine on the loop (cancelled by :meth:`stop`)."""
        if self._loop is None or self._stopped:
            coro.close()
            raise BridgeError("the dashboard's engine is not running")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        self._background.append(future)
        return future

    def stop(self, timeout: float | None = None) -> None:
        """Stop the worker (running phases get the engine's shutdown_timeout), close
        the store, and end the loop thread. Safe to call twice."""
        with self._lock:
            if self._loop is None or self._stopped:
                return
            loop = self._loop
        wait = (self.engine.shutdown_timeout + 5.0) if timeout is None else timeout
        try:
            for future in self._background:
                future.cancel()
            if self._worker is not None and not self._worker.done():
                loop.call_soon_threadsafe(self.engine.stop)
                try:
                    self._worker.result(wait)
                except Exception:  # already reported by _worker_ended
                    pass
            try:
                self.call(self.engine.aclose(), timeout=wait)
            except Exception:
                logger.exception("closing the dashboard's store failed")
        finally:
            self._halt_loop()

    def _worker_ended(self, future: concurrent.futures.Future[None]) -> None:
        if future.cancelled():
            return
        exc = future.exception()
        if exc is None:
            return
        if self.on_worker_error is not None:
            self.on_worker_error(exc)
        elif isinstance(exc, WorkflowError):  # says what is wrong (a plugin refusing the start)
            logger.error("the dashboard's worker stopped: %s", exc)
        else:
            logger.error("the dashboard's worker stopped with an error", exc_info=exc)

    def _halt_loop(self) -> None:
        loop, thread = self._loop, self._thread
        self._stopped = True
        if loop is None:
            return

        async def drain() -> None:
            pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            loop.stop()

        loop.call_soon_threadsafe(lambda: loop.create_task(drain()))
        if thread is not None:
            thread.join(10)
        if not loop.is_running():
            loop.close()


async def _as_coroutine(awaitable: Awaitable[T]) -> T:
    return await awaitable

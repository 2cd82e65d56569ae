"""Reaching a coroutine that waits in one event loop from code running in another.

An engine may be used from several event loops at once: a worker runs in one
thread's loop while a web app's threads submit, cancel and wait in theirs.
asyncio's objects are not thread-safe: an ``asyncio.Event`` set from another
thread wakes its waiter only when that loop next wakes for another reason (here,
the next poll), and a task cancelled from another thread may never notice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

__all__ = ["call_in", "running_loop", "wake"]


def call_in(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any) -> None:
    """Call ``fn(*args)`` now when running in ``loop``, else soon, in ``loop``'s thread."""
    if running_loop() is loop:
        fn(*args)
        return
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:
        pass  # the loop is closed: nothing runs or waits there any more


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running in this thread, or None."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def wake(event: asyncio.Event, loop: asyncio.AbstractEventLoop) -> None:
    """Set ``event``, which belongs to ``loop``, from whatever thread or loop runs now."""
    call_in(loop, event.set)

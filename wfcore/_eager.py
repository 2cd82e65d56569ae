"""Start a coroutine as an asyncio task, running its first step at once where Python can.

Most phases never suspend on the memory store, and on SQLite they first suspend
only when their result is written; scheduling each task's first step through the
event loop costs more than running the phase. Python 3.12 can run that first step
right away inside the new task (``eager_start``), with the task already current,
so ``asyncio.current_task()``, ``asyncio.timeout`` and libraries built on them
(anyio, httpx) behave exactly as in any task. Older Pythons schedule it as usual:
running it outside its task would break them.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from typing import Any

__all__ = ["start_task"]

_EAGER_START = sys.version_info >= (3, 12)


def start_task(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    """An asyncio task running ``coro``; on 3.12+ it may already be done."""
    loop = asyncio.get_running_loop()
    if _EAGER_START:  # pragma: no cover (3.12+)
        return asyncio.Task(coro, loop=loop, eager_start=True)  # type: ignore[call-arg]
    return loop.create_task(coro)

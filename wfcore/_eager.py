"""Start a coroutine at once, and make an asyncio task of it only if it suspends.

Most phases never suspend on the memory store, and on SQLite they first suspend
only when their result is written; creating an asyncio task for each of them up
front costs more than running the phase. ``start_eagerly`` runs the coroutine's
first step right away (in its own copy of the context, as a task would) and wraps
only the rest in a task. Python 3.12's ``asyncio.eager_task_factory`` does the
same for a whole loop; this does it for the engine's drivers alone, on 3.10 too.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
from collections.abc import Coroutine, Generator
from typing import Any

__all__ = ["start_eagerly"]

_TASKS_TAKE_CONTEXT = sys.version_info >= (3, 11)


def start_eagerly(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
    """Run ``coro`` until it first suspends; None if it finished, else its task.

    Exceptions from the first step propagate to the caller; later ones end up in
    the task, as usual.
    """
    context = contextvars.copy_context()
    try:
        awaited = context.run(coro.send, None)
    except StopIteration:
        return None
    rest = _carry_on(_Rest(coro, awaited))
    if _TASKS_TAKE_CONTEXT:
        return asyncio.get_running_loop().create_task(rest, context=context)
    return asyncio.get_running_loop().create_task(rest)  # pragma: no cover (3.10)


async def _carry_on(rest: _Rest) -> None:
    await rest


class _Rest:
    """An awaitable that goes on with a coroutine suspended on ``awaited``.

    It hands what the coroutine yielded (a future, or None for a bare yield) to
    the task driving it, then relays what the task sends or throws, exactly as
    ``await coro`` would have from the start.
    """

    __slots__ = ("_awaited", "_coro")

    def __init__(self, coro: Coroutine[Any, Any, None], awaited: Any) -> None:
        self._coro = coro
        self._awaited = awaited

    def __await__(self) -> Generator[Any, Any, None]:
        coro, awaited = self._coro, self._awaited
        self._awaited = None
        while True:
            try:
                value = yield awaited
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # cancellation, or an error from a future
                try:
                    awaited = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    awaited = coro.send(value)
                except StopIteration as stop:
                    return stop.value

"""Phase slots: how many tasks may run one phase at once in a worker.

A phase with ``max_concurrency`` (a subprocess that takes a core, an agent behind a
rate limit) runs for at most that many of the worker's tasks at a time; the others
wait for a slot, the highest priority first and of one priority first come first
served, holding their claim and lease meanwhile.
A stop ends every wait at once: a task still waiting has not started its phase, so
it goes back to the store as it was.

These are one worker's slots. On a store that shares them across processes
(``Store.shares_phase_slots``), a task holding one of these asks the store for one
of its slots too (``Worker._take_shared_slot``).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools

__all__ = ["PhaseSlots", "Slot", "SlotsClosed"]


class SlotsClosed(Exception):
    """The worker stops: a task waiting for a slot does not start its phase."""


class Slot:
    """A slot held; :meth:`release` gives it to the next waiting task (once)."""

    __slots__ = ("_key", "_limit", "_slots", "shared", "waited")

    def __init__(self, slots: PhaseSlots, key: tuple[str, str], limit: int, waited: float):
        self._slots: PhaseSlots | None = slots
        self._key = key
        self._limit = limit
        #: Seconds the task waited for it.
        self.waited = waited
        #: Whether the task holds a slot of the store's too (one every worker on
        #: the store shares), to release with this one.
        self.shared = False

    def release(self) -> None:
        slots, self._slots = self._slots, None
        if slots is not None:
            slots._give(self._key, self._limit)


class PhaseSlots:
    """The slots of every limited phase, by (workflow, phase)."""

    def __init__(self) -> None:
        self._running: dict[tuple[str, str], int] = {}
        # Waiting tasks by (-priority, arrival, future): a heap per phase.
        self._waiting: dict[tuple[str, str], list[tuple[int, int, asyncio.Future[None]]]] = {}
        self._arrivals = itertools.count()
        self._closed = False

    def open(self) -> None:
        """Take waiting tasks again (a worker serves anew after a stop)."""
        self._closed = False

    def close(self) -> None:
        """End every wait with :class:`SlotsClosed`, and refuse new ones."""
        self._closed = True
        for queue in self._waiting.values():
            while queue:
                _, _, future = heapq.heappop(queue)
                if not future.done():
                    future.set_exception(SlotsClosed())

    def waiting(self) -> dict[tuple[str, str], int]:
        """How many tasks wait for a slot, by (workflow, phase) of every phase that
        has been limited in this worker (0 when none waits now)."""
        return {key: len(queue) for key, queue in self._waiting.items()}

    async def take(self, workflow: str, phase: str, limit: int, priority: int = 0) -> Slot:
        """A slot of the phase, once fewer than ``limit`` tasks hold one and no task
        of a higher ``priority``, or of the same one that came earlier, waits."""
        if self._closed:
            raise SlotsClosed()
        key = (workflow, phase)
        queue = self._waiting.setdefault(key, [])
        if self._running.get(key, 0) < limit and not queue:
            self._running[key] = self._running.get(key, 0) + 1
            return Slot(self, key, limit, 0.0)
        loop = asyncio.get_running_loop()
        started = loop.time()
        future: asyncio.Future[None] = loop.create_future()
        entry = (-priority, next(self._arrivals), future)
        heapq.heappush(queue, entry)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._give(key, limit)  # handed over as this task was cancelled: pass it on
            elif entry in queue:
                queue.remove(entry)
                heapq.heapify(queue)
            raise
        return Slot(self, key, limit, loop.time() - started)

    def outranked(self, workflow: str, phase: str, priority: int) -> bool:
        """Whether a task of a higher ``priority`` than this waits for a slot of the
        phase."""
        queue = self._waiting.get((workflow, phase))
        return any(-rank > priority and not future.done() for rank, _, future in queue or ())

    def _give(self, key: tuple[str, str], limit: int) -> None:
        """A slot comes back: it goes to the first waiting task, or is free again.
        Its holder counts as running from here on, so no task can overtake it."""
        self._running[key] -= 1
        queue = self._waiting.get(key)
        while queue and self._running[key] < limit:
            _, _, future = heapq.heappop(queue)
            if not future.done():
                self._running[key] += 1
                future.set_result(None)

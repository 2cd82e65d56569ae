"""Who runs the tasks, as ``wfe show`` and ``wfe status`` tell it: the worker holding a
task's lease and until when, whether that worker's process is gone, the workers
holding tasks now, and pending tasks no worker has taken for a while.

A worker id is ``host/pid/...``: a worker of this host whose process is gone is known
dead; one of another host cannot be checked from here.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone

import attrs

from wfcore import ECSWorkflowEngine, Task, TaskStatus
from wfcore._processes import worker_died_here

from .display import _duration, _short_time

__all__ = ["UNCLAIMED_AFTER", "Holder", "busy_workers", "holder_of", "holders", "unclaimed"]

#: How long a due pending task waits for a worker before its page says none took it.
UNCLAIMED_AFTER = 60.0


@attrs.frozen
class Holder:
    """A worker holding a lease: on a task, or on some task (``expires`` None)."""

    owner: str
    expires: datetime | None
    dead: bool
    #: The worker this dashboard runs itself.
    mine: bool = False

    def expired(self, now: datetime) -> bool:
        """True once the lease has run out (the next claim takes the task over)."""
        return self.expires is not None and self.expires <= now

    def note(self, now: datetime) -> str:
        """What becomes of the task, in the words ``wfe show`` uses."""
        if self.dead:
            return "dead: its process is gone, and the next claim takes the task over"
        if self.expires is None:
            return ""
        until = _short_time(self.expires)
        if self.expired(now):
            return f"its lease ran out at {until}: the next claim takes the task over"
        return f"lease until {until}, renewed while it runs"


async def holder_of(engine: ECSWorkflowEngine, task: Task) -> Holder | None:
    """The worker holding ``task``'s lease, or None (nobody, or a store that cannot tell)."""
    store = await engine.get_store()
    lease = await store.lease_of(task.id)
    if lease is None:
        return None
    owner, expires = lease
    return Holder(owner, expires, worker_died_here(owner), owner == _own_worker(engine))


async def holders(engine: ECSWorkflowEngine, tasks: Iterable[Task]) -> dict[str, Holder]:
    """The holders of the running tasks among ``tasks`` (one page of the list)."""
    found = {}
    for task in tasks:
        if task.status is TaskStatus.IN_PROGRESS:
            holder = await holder_of(engine, task)
            if holder is not None:
                found[task.id] = holder
    return found


async def busy_workers(engine: ECSWorkflowEngine) -> list[Holder]:
    """The workers holding a task now (``wfe status``'s busy workers), dead ones marked."""
    store = await engine.get_store()
    mine = _own_worker(engine)
    return [
        Holder(owner, None, worker_died_here(owner), owner == mine)
        for owner in sorted(await store.lease_owners())
    ]


def _own_worker(engine: ECSWorkflowEngine) -> str | None:
    return getattr(engine, "worker_id", None)


def unclaimed(task: Task, now: datetime | None = None) -> str | None:
    """For a pending task due for :data:`UNCLAIMED_AFTER` seconds or more, how long
    no worker has taken it (``3 min 5 s``); else None.

    It is due since it was last changed (submitted, released, retried), or since
    its ``run_after`` when that came later.
    """
    if task.status is not TaskStatus.PENDING:
        return None
    now = now or datetime.now(timezone.utc)
    since = task.updated_at
    if task.run_after is not None and task.run_after > since:
        since = task.run_after
    waited = (now - since).total_seconds()
    return _duration(waited) if waited >= UNCLAIMED_AFTER else None

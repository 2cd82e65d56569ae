"""Schedules: a task submitted to a workflow at fixed times, by whichever worker runs.

A schedule's times (its slots) are ``start + k * every`` for whole ``k``. Every
worker that has the schedule submits the task of each slot that comes while it runs,
under an id made of the schedule's name and the slot's time. Submitting an id the
store has already stored changes nothing, so several workers, restarts and
takeovers never make a slot run twice, and a slot that came while no worker ran is
still submitted by the first worker to start within ``grace`` of it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import attrs

from .errors import InvalidTaskError, InvalidWorkflowError
from .model import TaskType, WorkflowSpec, _task_type, check_priority, copy_json
from .wire import MAX_TASK_ID_BYTES, json_problem

if TYPE_CHECKING:
    from .model import TaskStatus
    from .stores.base import Store

__all__ = ["EPOCH", "LatestRun", "Schedule", "latest_runs"]

#: Where a schedule's slots are counted from unless it says otherwise.
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# Ids and history show slot times to the second: a shorter period would give two
# slots one id.
_MIN_EVERY = 1.0
_MAX_EVERY = 366 * 86400.0
# A slot's task id is the name, then "@" and the slot's time: what the name may
# take of a task id's bytes.
_MAX_NAME_BYTES = MAX_TASK_ID_BYTES - len("@1970-01-01T00:00:00Z")


def _as_seconds(value: Any) -> Any:
    """A timedelta as seconds; anything else as given, for the checks to judge."""
    return value.total_seconds() if isinstance(value, timedelta) else value


def _seconds(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidWorkflowError(f"{what}: must be seconds or a timedelta, not {value!r}")
    return float(value)


@attrs.frozen
class Schedule:
    """Submit a task to ``workflow_name`` every ``every`` seconds, at the slots
    ``start + k * every`` (``start``: a timezone-aware datetime, by default
    1970-01-01 UTC, so an hourly schedule runs on the hour). ``data``,
    ``classification``, ``assigned_to`` and ``priority`` are the task's, as in
    ``submit_task``.
    A slot is submitted by a worker running when it comes, or by the first to start
    within ``grace`` seconds after it (by default the smaller of ``every`` and an
    hour); later, it is skipped."""

    name: str
    workflow_name: str
    every: float = attrs.field(converter=_as_seconds)
    start: datetime = EPOCH
    data: Any = None
    classification: str | None = None
    assigned_to: TaskType = attrs.field(default=TaskType.AGENTIC, converter=_task_type)
    grace: float | None = attrs.field(default=None, converter=_as_seconds)
    priority: int = 0

    def __attrs_post_init__(self) -> None:
        name = self.name
        if not isinstance(name, str) or not name.strip() or name != name.strip():
            raise InvalidWorkflowError(
                f"schedule name {name!r}: must be non-empty text, without blanks at its ends"
            )
        if len(name) > 100 or not name.isprintable() or "/" in name or "\\" in name:
            raise InvalidWorkflowError(
                f"schedule name {name!r}: at most 100 printable characters, no '/' or '\\' "
                "(it is part of each task's id)"
            )
        size = len(name.encode("utf-8"))
        if size > _MAX_NAME_BYTES:
            # 100 characters of another alphabet than Latin take more bytes than a
            # task id has: every slot's submission would be refused, and logged.
            raise InvalidWorkflowError(
                f"schedule name {name!r}: at most {_MAX_NAME_BYTES} bytes in UTF-8, not "
                f"{size} (it is part of each task's id, of at most {MAX_TASK_ID_BYTES}): "
                "shorten it"
            )
        if not isinstance(self.workflow_name, str) or not self.workflow_name:
            raise InvalidWorkflowError(f"schedule {name!r}: workflow_name must be a name")
        if self.classification is not None and (
            not isinstance(self.classification, str) or not self.classification
        ):
            # Here at once, rather than refused by submit_task at every slot.
            raise InvalidWorkflowError(
                f"schedule {name!r}: classification must be a phase's name or None, "
                f"not {self.classification!r}"
            )
        every = _seconds(self.every, f"schedule {name!r}: every")
        if not _MIN_EVERY <= every <= _MAX_EVERY or every != int(every):
            raise InvalidWorkflowError(
                f"schedule {name!r}: every must be whole seconds, from 1 second to 366 days, "
                f"not {every:,.10g} s" + (f" ({every / 86400:,.10g} days)" if every > 86400 else "")
            )
        object.__setattr__(self, "every", every)
        if not isinstance(self.start, datetime) or self.start.tzinfo is None:
            raise InvalidWorkflowError(
                f"schedule {name!r}: start must be a timezone-aware datetime, "
                f"e.g. datetime(2026, 1, 1, 2, 0, tzinfo=timezone.utc), not {self.start!r}"
            )
        try:
            # Slots are reckoned in UTC, and a worker needs the one after the start.
            (self.start.astimezone(timezone.utc) + timedelta(seconds=every)).astimezone(
                self.start.tzinfo
            )
        except OverflowError:
            raise InvalidWorkflowError(
                f"schedule {name!r}: start {self.start.isoformat()} leaves no slot within "
                "the years 1 to 9999 (in UTC)"
            ) from None
        grace = (
            min(every, 3600.0)
            if self.grace is None
            else _seconds(self.grace, f"schedule {name!r}: grace")
        )
        if grace <= 0:
            raise InvalidWorkflowError(
                f"schedule {name!r}: grace must be more than 0 seconds, not {grace:g}"
            )
        object.__setattr__(self, "grace", grace)
        check_priority(self.priority, f"schedule {name!r}: priority")
        # The check submit_task makes, here at once rather than at every slot.
        problem = json_problem(self.data)
        if problem is not None:
            raise InvalidTaskError(f"schedule {name!r}: data must be JSON-serializable: {problem}")
        # Its own copy: the caller's dict, changed after registering, is not every
        # later slot's data.
        object.__setattr__(self, "data", copy_json(self.data))

    @property
    def period(self) -> str:
        """``every`` in words, in the largest unit that divides it: "day", "6 hours"."""
        count, unit = int(self.every), "second"
        for name, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
            if count % size == 0:
                count, unit = count // size, name
                break
        return unit if count == 1 else f"{count} {unit}s"

    # The arithmetic is done in UTC: Python adds a timedelta to an aware datetime
    # on its wall clock, so a start in a zone with summer time (ZoneInfo) would move
    # the slots by its offset change, not keep the period fixed. Slots are shown in
    # the start's time zone.

    def _slot(self, steps: int) -> datetime:
        start = self.start.astimezone(timezone.utc)
        return (start + timedelta(seconds=steps * self.every)).astimezone(self.start.tzinfo)

    def _steps(self, now: datetime) -> int:
        elapsed = now.astimezone(timezone.utc) - self.start.astimezone(timezone.utc)
        return math.floor(elapsed.total_seconds() / self.every)

    def latest_slot(self, now: datetime) -> datetime:
        """The last slot at or before ``now`` (the start itself may be later)."""
        return self._slot(self._steps(now))

    def next_slot(self, now: datetime) -> datetime:
        """The first slot after ``now`` (the start, while it is still to come)."""
        return self._slot(max(0, self._steps(now) + 1))

    def due(self, now: datetime, since: datetime | None = None) -> datetime | None:
        """The slot to submit at ``now``: the latest one, if it is not before the start
        and came no more than ``grace`` ago, or after ``since`` (when a running worker
        last looked: a slot that came while it ran is not skipped for the time the
        worker took to look again); else None."""
        steps = self._steps(now)
        slot = self._slot(steps)
        assert self.grace is not None
        late = now.astimezone(timezone.utc) - slot.astimezone(timezone.utc)
        if steps < 0:
            return None
        if late.total_seconds() > self.grace and (since is None or slot <= since):
            return None
        return slot

    def phase_problem(self, spec: WorkflowSpec) -> str | None:
        """Why no task of this schedule can start in its workflow ``spec`` at the
        phase it names (``classification``), or None."""
        if self.classification is None:
            return None
        if spec.phase(self.classification) is None:
            return f"workflow {spec.name!r} has no phase {self.classification!r}"
        if spec.start_phases is not None and self.classification not in spec.start_phases:
            return (
                f"workflow {spec.name!r} lets no task start at {self.classification!r} "
                "(start_phases)"
            )
        return None

    def task_id(self, slot: datetime) -> str:
        """The id of the slot's task: ``<name>@<slot in UTC>``, to the second."""
        return f"{self.name}@{slot.astimezone(timezone.utc):%Y-%m-%dT%H:%M:%SZ}"


@attrs.frozen
class LatestRun:
    """A schedule's latest slot, and how its task stands: ``status`` is None when the
    store has no such task (no worker ran within ``grace`` of the slot, or the task
    was purged since)."""

    slot: datetime
    task_id: str
    status: TaskStatus | None


async def latest_runs(
    store: Store, schedules: Iterable[Schedule], now: datetime
) -> dict[str, LatestRun]:
    """The latest run of each schedule whose start has come, by name: whether last
    night's report ran, and how it ended. One read of a task by its id a schedule."""
    found: dict[str, LatestRun] = {}
    for schedule in schedules:
        slot = schedule.latest_slot(now)
        if slot < schedule.start:
            continue  # its first slot is still to come
        task_id = schedule.task_id(slot)
        task = await store.get_task(task_id)
        found[schedule.name] = LatestRun(slot, task_id, None if task is None else task.status)
    return found

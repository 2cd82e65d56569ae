"""Starting tasks later: reading a start time from the API and the submit form, and
saying when a pending task will start.

A task submitted with ``run_after`` stays PENDING and unclaimed until then; so does a
retry waiting out its backoff. Both are shown with the time and how far off it is.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs

from wfcore import Task, TaskStatus

__all__ = ["StartNote", "api_start", "form_start", "start_note", "until"]

#: The furthest start accepted: the engine refuses delays beyond 100 years.
MAX_DELAY = timedelta(days=100 * 365)
#: A delay typed in the form: a number and a unit, as ``wfe submit --delay`` takes them.
_DELAY = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_ISO_EXAMPLE = "2026-12-01T09:00:00Z"


class StartError(ValueError):
    """A start time that cannot be read; the message says what is expected."""


def parse_time(text: str, now: datetime, expected: str | None = None) -> datetime:
    """An ISO 8601 time with a UTC offset, as an aware UTC datetime.

    A time without an offset is refused: it would mean a different moment on
    every machine (and the browser's, the dashboard's and the workers' may differ).
    A time already past is taken (the task starts at once), as the engine takes it.
    ``expected`` replaces the message for text that is no ISO 8601 time at all.
    """
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        reason = str(exc)
        if reason.startswith("Invalid isoformat string"):
            raise StartError(
                expected or f"{text[:60]!r} is not an ISO 8601 time (e.g. {_ISO_EXAMPLE})"
            ) from None
        # Written as one, but a part of it is out of range (February 30, hour 25):
        # saying it is no ISO 8601 time would send the person looking elsewhere.
        if "offset" in reason:
            reason = "a UTC offset must be less than 24 hours"
        raise StartError(f"{text[:60]!r} is not a real time: {reason}") from None
    if when.tzinfo is None:
        raise StartError(
            f"{text[:60]!r} has no UTC offset; add one (Z for UTC, or e.g. +01:00), "
            f"as in {_ISO_EXAMPLE}"
        )
    try:
        when = when.astimezone(timezone.utc)
    except OverflowError:  # year 1 or 9999 shifted by its offset leaves datetime's range
        raise StartError(f"{text[:60]!r} is out of range") from None
    if when - now > MAX_DELAY:
        raise StartError(f"{text[:60]!r} is more than 100 years from now")
    return when


def _after(seconds: float, now: datetime, shown: str) -> datetime:
    # Compared before any conversion: a JSON integer may be too large for a float.
    if not 0 <= seconds <= MAX_DELAY.total_seconds():  # also refuses NaN and infinity
        raise StartError(f"a delay of {shown} is not 0 to 100 years")
    return now + timedelta(seconds=float(seconds))


def api_start(value: Any, now: datetime) -> datetime | None:
    """The API's ``run_after``: None, an ISO 8601 time string with a UTC offset, or a
    number of seconds from now. Raises StartError naming the field otherwise."""
    if value is None:
        return None
    expected = (
        f'"run_after" must be an ISO 8601 time with a UTC offset (e.g. "{_ISO_EXAMPLE}") '
        "or a number of seconds from now"
    )
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        kind = "a boolean" if isinstance(value, bool) else f"a JSON {_json_kind(value)}"
        raise StartError(f"{expected}, not {kind}")
    try:
        if isinstance(value, str):
            return parse_time(value, now)
        return _after(value, now, f"{str(value)[:40]} seconds")
    except StartError as exc:
        raise StartError(f"{expected}: {exc}") from None


def form_start(text: str, now: datetime) -> datetime | None:
    """The submit form's "Start later": empty (now), a delay such as ``10m``, ``2h``,
    ``1d`` (units s, m, h, d, w), or an ISO 8601 time with a UTC offset."""
    text = text.strip()
    if not text:
        return None
    delay = _DELAY.fullmatch(text)
    if delay is not None:
        amount = float(delay[1])
        return _after(amount * _UNITS[delay[2].lower()], now, repr(text))
    return parse_time(
        text,
        now,
        expected=(
            f"{text[:60]!r} is neither a delay (a number and a unit s, m, h, d or w, "
            f"e.g. 10m, 2h, 1d) nor an ISO 8601 time with a UTC offset (e.g. {_ISO_EXAMPLE})"
        ),
    )


def _json_kind(value: Any) -> str:
    kinds: dict[type, str] = {dict: "object", list: "array"}
    return kinds.get(type(value), type(value).__name__)


@attrs.frozen
class StartNote:
    """When a pending task starts: ``kind`` is "start" (submitted to start later) or
    "retry" (waiting out a retry's backoff); ``until`` is how far off, as text."""

    kind: str
    at: datetime
    until: str

    @property
    def label(self) -> str:
        return "retry at" if self.kind == "retry" else "starts at"


def start_note(task: Task, now: datetime) -> StartNote | None:
    """The note for a pending task that may not start yet, else None.

    A retry has a ``retry_scheduled`` event after its last ``phase_started``; any
    other pending task with a future ``run_after`` was submitted to start later.
    """
    if task.status is not TaskStatus.PENDING or task.run_after is None or task.run_after <= now:
        return None
    kind = "start"
    for entry in reversed(task.history):
        event = entry.get("event")
        if event == "retry_scheduled":
            kind = "retry"
            break
        if event == "phase_started":
            break
    return StartNote(kind, task.run_after, until((task.run_after - now).total_seconds()))


def until(seconds: float) -> str:
    """How far off a start is, in the largest units that fit: ``in 40 s``, ``in 5 min``,
    ``in 2 h 30 min``, ``in 3 d 4 h``."""
    if round(seconds) < 60:
        return f"in {max(1, round(seconds))} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"in {minutes} min"
    if minutes < 24 * 60:
        hours, minutes = divmod(minutes, 60)
        return f"in {hours} h" + (f" {minutes} min" if minutes else "")
    days, hours = divmod(round(seconds / 3600), 24)
    return f"in {days} d" + (f" {hours} h" if hours else "")

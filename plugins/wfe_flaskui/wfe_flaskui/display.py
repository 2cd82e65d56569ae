"""How the pages show things: JSON (cut for pages that refresh themselves), times,
durations, sizes, status labels, a task's history as a timeline, and HTML ids; and
the ``wfe_*`` template filters that apply them.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any

from flask import Blueprint
from markupsafe import Markup, escape

from wfcore import Task, WorkflowSpec
from wfcore.stores.base import SUMMARY_PREVIEW

from . import ops
from .later import StartNote, start_note

__all__ = [
    "HISTORY_SHOWN",
    "JSON_SHOWN",
    "add_filters",
    "cut_filter",
    "duration_filter",
    "html_id_filter",
    "json_preview_filter",
    "links_filter",
    "note_filter",
    "pretty_filter",
    "short_id",
    "short_id_filter",
    "size_filter",
    "start_note_filter",
    "status_filter",
    "time_filter",
]


def add_filters(bp: Blueprint) -> None:
    """Give the app's templates the ``wfe_*`` filters below."""
    bp.add_app_template_filter(pretty_filter, "wfe_pretty")
    bp.add_app_template_filter(note_filter, "wfe_note")
    bp.add_app_template_filter(short_id_filter, "wfe_short_id")
    bp.add_app_template_filter(cut_filter, "wfe_cut")
    bp.add_app_template_filter(json_preview_filter, "wfe_json_preview")
    bp.add_app_template_filter(time_filter, "wfe_time")
    bp.add_app_template_filter(status_filter, "wfe_status")
    bp.add_app_template_filter(start_note_filter, "wfe_start_note")
    bp.add_app_template_filter(duration_filter, "wfe_duration")
    bp.add_app_template_filter(html_id_filter, "wfe_html_id")
    bp.add_app_template_filter(size_filter, "wfe_size")
    bp.add_app_template_filter(links_filter, "wfe_links")


#: A web address in text: http or https only (no javascript:, data: or other schemes),
#: up to a blank, a quote or an angle bracket.
_URL = re.compile(r"https?://[^\s<>\"'`]+", re.IGNORECASE)
#: What ends a sentence rather than an address: "see https://x.org/a." links x.org/a.
_TRAILING = ".,;:!?'\""
_CLOSERS = {")": "(", "]": "[", "}": "{"}


def links_filter(value: Any) -> Markup:
    """Text (instructions, an agent's question) with its http(s) addresses as links.

    Everything is escaped: only the links are markup, and their address is the
    escaped text itself, so nothing typed can add attributes or other schemes.
    """
    text = "" if value is None else str(value)
    parts: list[Markup] = []
    last = 0
    for found in _URL.finditer(text):
        url = _trim_url(found.group())
        if len(url) <= len("https://"):
            continue
        parts.append(escape(text[last : found.start()]))
        parts.append(
            Markup(
                '<a href="{0}" rel="noopener noreferrer nofollow" target="_blank">{0}</a>'
            ).format(url)
        )
        last = found.start() + len(url)
    parts.append(escape(text[last:]))
    return Markup("").join(parts)


def _trim_url(url: str) -> str:
    """``url`` without the punctuation that ends the sentence around it; a closing
    bracket stays when the address opened one (``.../Foo_(bar)``)."""
    while url:
        end = url[-1]
        if end in _TRAILING or (end in _CLOSERS and url.count(_CLOSERS[end]) < url.count(end)):
            url = url[:-1]
        else:
            break
    return url


def pretty_filter(value: Any) -> str:
    return _pretty(value)


def short_id_filter(value: Any) -> str:
    return short_id(str(value))


def cut_filter(value: Any, limit: int | None = None) -> dict[str, Any]:
    """Text (an error message, a traceback) cut to ``limit`` characters (None:
    :data:`JSON_SHOWN`): ``{"text", "cut", "total"}``."""
    text = str(value)
    limit = JSON_SHOWN if limit is None else limit
    return {"text": text[:limit], "cut": len(text) > limit, "total": len(text)}


def note_filter(value: Any) -> str:
    if isinstance(value, str) and len(value) >= SUMMARY_PREVIEW:
        # A listed task's output as its summary cut it: the start of its JSON text
        # (or of a long string), shown as it is rather than quoted again.
        line = " ".join(value[: NOTE_SHOWN * 2].split())
        return line[: NOTE_SHOWN - 3].rstrip() + "..."
    return _note_text(value)


def json_preview_filter(value: Any) -> dict[str, Any]:
    return _json_preview(value)


def time_filter(value: Any, relative: bool = True) -> Markup:
    """A time as a ``<time>`` element, which the pages' script shows as how long ago
    (or how soon) it is. With ``relative=False`` it keeps its date and time: for a
    time a sentence names as a moment ("starts at ...", "from ..."), often beside how
    far off it is already."""
    if value is None:
        return Markup("")
    kind = "wfe-time" if relative else "wfe-time-at"
    return Markup('<time datetime="{}" class="{}">{}</time>').format(
        _iso(value), kind, _short_time(value)
    )


def status_filter(value: Any) -> str:
    text = getattr(value, "value", value)
    return _STATUS_LABELS.get(str(text), str(text).replace("_", " "))


def start_note_filter(task: Task) -> StartNote | None:
    return start_note(task, datetime.now(timezone.utc))


def duration_filter(value: Any) -> str:
    return _duration(value)


def html_id_filter(value: Any) -> str:
    return _html_id(str(value))


def size_filter(value: int) -> str:
    return _size(value)


def _pretty(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)


#: The most characters of one JSON value (task data, an output) a page shows: open
#: pages fetch themselves again every few seconds, so a 1 MB task would cost 1 MB each
#: time. The API's task URL has the whole.
JSON_SHOWN = 16 * 1024

#: The most characters of a task's output the task list's Note column shows.
NOTE_SHOWN = 90


def _pretty_start(value: Any, limit: int) -> tuple[str, bool]:
    """The first ``limit`` characters of ``value`` as pretty JSON, and whether there
    was more. Only that start is written out: a list page of tasks whose outputs are
    megabytes would otherwise write each whole, every few seconds, to show a line."""
    if isinstance(value, str):
        return value[:limit], len(value) > limit
    encoder = json.JSONEncoder(indent=2, ensure_ascii=False, default=str)
    parts: list[str] = []
    written = 0
    # iterencode hands the JSON over piece by piece, so the rest is never made.
    for part in encoder.iterencode(value):
        parts.append(part)
        written += len(part)
        if written > limit:
            return "".join(parts)[:limit], True
    return "".join(parts), False


def _json_size(value: Any) -> int:
    """How many characters ``value`` is as compact JSON (C-fast, unlike indenting)."""
    if isinstance(value, str):
        return len(value)
    return len(json.dumps(value, ensure_ascii=False, default=str))


def _json_preview(value: Any, limit: int = JSON_SHOWN) -> dict[str, Any]:
    """``value`` as pretty JSON, cut to ``limit`` characters (at a line end when one
    is near): ``{"text", "cut", "total"}``, ``total`` the characters of the whole as
    compact JSON (counted only when it is cut)."""
    text, cut = _pretty_start(value, limit)
    if not cut:
        return {"text": text, "cut": False, "total": len(text)}
    end = text.rfind("\n", limit // 2, limit)
    return {"text": text[: end if end > 0 else limit], "cut": True, "total": _json_size(value)}


def _note_text(value: Any, limit: int = NOTE_SHOWN) -> str:
    """The start of ``value`` as JSON on one line, ending in ``...`` when cut: the
    task list's note on a finished task's output."""
    text, cut = _pretty_start(value, limit * 2)
    line = " ".join(text.split())
    if cut or len(line) > limit:
        return line[: limit - 3].rstrip() + "..."
    return line


#: An id wfcore made up for a task (``uuid4().hex``): its first 8 digits tell it apart.
_MADE_UP_ID = re.compile(r"[0-9a-f]{32}")

#: The most characters of an id that pages show: ids chosen by a client may be long.
ID_SHOWN = 48


def short_id(task_id: str) -> str:
    """How pages name a task: the first 8 digits of an id wfcore made up, else the
    whole id. Ids chosen by a client or a schedule (``order-1234``,
    ``nightly@2026-11-27T02:00:00Z``) share their start with many others, so their
    first 8 characters would name them all alike; past :data:`ID_SHOWN` characters
    they end in an ellipsis (the link and the title have the whole)."""
    if _MADE_UP_ID.fullmatch(task_id):
        return task_id[:8]
    if len(task_id) > ID_SHOWN:
        return task_id[: ID_SHOWN - 1] + "…"
    return task_id


def _iso(value: datetime | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return value.astimezone(timezone.utc).isoformat()


def _short_time(value: datetime | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        text = value
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            return text
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


_STATUS_LABELS = {
    "pending": "Pending",
    "in_progress": "In progress",
    "waiting_human": "Waiting: person",
    "waiting_agent": "Waiting: agent",
    "waiting_io": "Waiting: I/O",
    "completed": "Completed",
    "failed": "Failed",
    "cancelled": "Cancelled",
}

_EVENT_LABELS = {
    "submitted": "Submitted",
    "classified": "Classified",
    "phase_started": "Phase started",
    "phase_finished": "Phase finished",
    "routed": "Moved on",
    "suspended": "Waiting",
    "resumed": "Answered",
    "attempt_failed": "Attempt failed",
    "retry_scheduled": "Retry scheduled",
    "failed": "Failed",
    "completed": "Completed",
    "cancelled": "Cancelled",
    "released": "Handed back",
    "deadline_passed": "Deadline passed",
    "workflow_defined": "Workflow defined",
    "retried": "Retried",
    "children_finished": "Children finished",
}
_WAITING_LABELS = {
    "waiting_human": "Waiting for a person",
    "waiting_agent": "Waiting for an agent",
    "waiting_io": "Waiting for I/O",
}
_ANSWERED_BY = {
    "waiting_human": "answered by a person",
    "waiting_agent": "answered by an agent",
    "waiting_io": "answered by I/O",
}
_SHOWN_KEYS = {
    "at",
    "event",
    "phase",
    "worker",
    "task_type",
    "seconds",
    "status",
    "attempt",
    "by",
}


#: The most history events a task's page shows (its newest), unless asked for all
#: (``?history=all``): the page fetches itself again every few seconds, and a task
#: that loops through a phase 20,000 times has 40,000 events.
HISTORY_SHOWN = 200


def _timeline(task: Task, last: int | None = None) -> list[dict[str, Any]]:
    """History entries shaped for the timeline: label, phase, who (and ``by``, the
    person who answered, cancelled or retried, when recorded), duration, the rest.

    ``last``: only the newest ``last`` entries become items (None: all). Their offsets
    still count from the history's first event, and a wait that began before them
    still shows how long it lasted: the earlier entries are read for that, but not
    shaped, which is where the time goes.
    """
    history = task.history
    start = 0 if last is None else max(0, len(history) - last)
    items = []
    waiting_since: datetime | None = None
    waiting_for = ""
    first: datetime | None = None
    for index, entry in enumerate(history):
        event = str(entry.get("event", ""))
        if index < start and first is not None and event not in _WAIT_EVENTS:
            continue  # before the cut, only the first time and the waits matter
        at = entry.get("at")
        try:
            when = datetime.fromisoformat(at) if isinstance(at, str) else None
        except ValueError:
            when = None
        first = first or when
        duration = _duration(entry.get("seconds"))
        if event == "suspended":
            waiting_since = when
            waiting_for = str(entry.get("status") or "")
        elif event in _WAIT_ENDS and waiting_since and when:
            duration = "waited " + _duration((when - waiting_since).total_seconds())
            waiting_since = None
        if index < start:
            continue
        who = [str(entry[k]) for k in ("task_type", "worker") if entry.get(k)]
        by = entry.get("by")
        if by:
            who.append(f"by {by}")
        elif event == "resumed" and not who:
            who = [_ANSWERED_BY.get(waiting_for, "answered")]
        details = {
            k: v if k in _TIME_DETAILS else _detail_text(v)
            for k, v in entry.items()
            if k not in _SHOWN_KEYS and v is not None
        }
        label = _EVENT_LABELS.get(event, event.replace("_", " ").capitalize())
        if entry.get("attempt"):
            label += f" (attempt {entry['attempt']})"
        if event == "suspended" and entry.get("status"):
            label = _WAITING_LABELS.get(str(entry["status"]), label)
        items.append(
            {
                "event": event,
                "label": label,
                "at": at,
                "clock": when.astimezone(timezone.utc).strftime("%H:%M:%S.%f")[:-3] if when else "",
                # The first event is where offsets start: it has none of its own.
                "offset": "+" + _duration((when - first).total_seconds())
                if when and first and index > 0
                else "",
                "phase": entry.get("phase"),
                "who": " · ".join(who),
                "by": str(by) if by else None,
                "duration": duration,
                "details": details,
            }
        )
    return items


#: Details of an event that are times, which the timeline shows as times.
_TIME_DETAILS = ("deadline", "run_after", "until")

#: The most characters of one detail of an event the timeline shows: an error
#: message may hold a whole response body, and each failed attempt repeats it.
DETAIL_SHOWN = 1000


def _detail_text(value: Any) -> str:
    """A detail of an event as the timeline shows it: text as it is, anything else
    as JSON; past :data:`DETAIL_SHOWN` characters cut, ending in an ellipsis."""
    if isinstance(value, str):
        text, cut = value[:DETAIL_SHOWN], len(value) > DETAIL_SHOWN
    else:
        encoder = json.JSONEncoder(ensure_ascii=False, sort_keys=True, default=str)
        parts: list[str] = []
        written = 0
        cut = False
        for part in encoder.iterencode(value):
            parts.append(part)
            written += len(part)
            if written > DETAIL_SHOWN:
                cut = True
                break
        text = "".join(parts)[:DETAIL_SHOWN]
    return text + "…" if cut else text


#: Events that end a wait (``suspended`` begins one): the timeline says how long it was.
_WAIT_ENDS = ("resumed", "deadline_passed", "cancelled", "children_finished")
_WAIT_EVENTS = ("suspended", *_WAIT_ENDS)


def _waiting_since(task: Task) -> str | None:
    """When a waiting task's wait began (its last ``suspended`` event); None for a task
    that is not waiting, without reading its history, which may be long."""
    if not task.status.is_waiting:
        return None
    for entry in reversed(task.history):
        if entry.get("event") == "suspended":
            at = entry.get("at")
            return at if isinstance(at, str) else None
    return None


def _overdue(task: Task) -> bool:
    # A task waiting for its children has only a time to check on them, not a deadline.
    return (
        task.deadline is not None
        and task.waiting_for is None
        and task.deadline < datetime.now(timezone.utc)
    )


def _effective_type(task: Task, specs: dict[str, WorkflowSpec]) -> str:
    """Who runs the task's current phase: the phase's type, else the task's own."""
    phase = ops.phase_of(task, specs)
    if phase is not None and phase.assigned_to is not None:
        return phase.assigned_to.value
    return task.assigned_to.value


_ID_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-")


def _html_id(text: str) -> str:
    """``text`` made fit for part of an HTML id (and a CSS ``#selector``).

    Task ids, workflow names and property names may hold spaces, quotes or any
    other character. Letters, digits and ``-`` are kept, ``_`` is doubled and
    anything else becomes ``_<hex code point>_``: different texts always give
    different ids, and a plain one (a uuid hex) stays as it is.
    """
    parts = []
    for ch in text:
        if ch in _ID_SAFE:
            parts.append(ch)
        elif ch == "_":
            parts.append("__")
        else:
            parts.append(f"_{ord(ch):x}_")
    return "".join(parts)

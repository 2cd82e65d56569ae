"""The task list's query arguments, as the page (``/``) and the API (``/api/tasks``)
both read them: a status filter and bounded integers such as a page or a limit.
"""

from __future__ import annotations

import re

from flask import request

from wfcore import TaskStatus

from .errors import _BadInput

__all__: list[str] = []


def _parse_statuses(values: list[str]) -> list[TaskStatus]:
    found: list[TaskStatus] = []
    for value in values:
        for part in value.split(","):
            part = part.strip()
            if not part or part.lower() == "all":
                continue
            if part.lower() == "waiting":
                found.extend(s for s in TaskStatus if s.is_waiting)
            else:
                found.append(TaskStatus.parse(part))
    return list(dict.fromkeys(found))


_WHOLE = re.compile(r"\s*[+-]?[0-9]+\s*")


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    """An integer query argument: ``default`` when absent, 400 below ``low``.

    Above ``high`` it is taken as ``high``: a cap on how much one request returns,
    which the answer reports, rather than a mistake.
    """
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    # int() also reads other scripts' digits and 1_000, which no link of ours has.
    if not _WHOLE.fullmatch(raw):
        raise _BadInput(f"{name} must be an integer")
    try:
        value = int(raw)
    except ValueError:  # more digits than Python turns into a number
        value = high if not raw.lstrip().startswith("-") else low - 1
    if value < low:
        raise _BadInput(f"{name} must be at least {low}")
    return min(high, value)

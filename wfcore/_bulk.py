"""Which tasks a change of many applies to (retry_tasks, cancel_tasks, purge): their
statuses, as the caller gives them, and the ids of those that match the filters."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from .model import TaskStatus
from .stores.base import phase_filter
from .wire import is_unicode_text

if TYPE_CHECKING:
    from .engine import ECSWorkflowEngine

__all__ = [
    "BULK_PAGE",
    "check_workflow_filter",
    "ids_matching",
    "names_can_match",
    "statuses_among",
]

#: Tasks listed a page at a time by retry_tasks and cancel_tasks.
BULK_PAGE = 500


def parse_statuses(statuses: object, argument: str = "statuses") -> list[TaskStatus]:
    """``statuses`` (one, or several; ``"waiting"`` for the three waiting ones) as
    TaskStatus values, each once; ValueError for an unknown one, TypeError naming
    ``argument`` for what is no status at all."""
    if isinstance(statuses, (str, TaskStatus)):
        statuses = [statuses]
    elif not isinstance(statuses, Iterable) or isinstance(statuses, (bytes, Mapping)):
        raise TypeError(
            f"{argument} must be a status, or a list of them, not {type(statuses).__name__}"
        )
    wanted: list[TaskStatus] = []
    for status in statuses:
        if isinstance(status, str) and status.strip().lower() == "waiting":
            wanted += [s for s in TaskStatus if s.is_waiting]
        else:
            wanted.append(TaskStatus.parse(status))
    return list(dict.fromkeys(wanted))


def statuses_among(
    statuses: Iterable[TaskStatus | str], allowed: tuple[TaskStatus, ...], only: str
) -> list[TaskStatus]:
    """``statuses`` as :func:`parse_statuses` reads them, each one of ``allowed``;
    ValueError saying ``only`` (what the operation takes) for none or another."""
    wanted = parse_statuses(statuses)
    if not wanted:
        raise ValueError(f"no status given: {only}")
    others = [s.value for s in wanted if s not in allowed]
    if others:
        raise ValueError(f"{only}, not {', '.join(others)}")
    return wanted


def check_workflow_filter(workflow_name: object) -> None:
    """A ``workflow_name`` argument that narrows an operation: a name, or None."""
    if workflow_name is not None and not isinstance(workflow_name, str):
        raise TypeError(f"workflow_name must be a name or None, not {workflow_name!r}")


def names_can_match(workflow_name: object, phase: object) -> bool:
    """Check the ``workflow_name`` and ``phase`` arguments that narrow an operation
    (a name, or None: TypeError else); False when one is no Unicode text, which no
    stored workflow or phase can have, so that nothing matches."""
    check_workflow_filter(workflow_name)
    if phase is not None and not isinstance(phase, str):
        raise TypeError(f"phase must be a name or None, not {phase!r}")
    return all(
        not isinstance(text, str) or is_unicode_text(text) for text in (workflow_name, phase)
    )


async def ids_matching(
    engine: ECSWorkflowEngine,
    wanted: list[TaskStatus],
    workflow_name: str | None,
    phase: str | None,
    error_contains: str | None = None,
) -> list[str]:
    """The ids of the tasks a change of many applies to, newest first, each once: of
    these statuses, and of the workflow, at the phase and with the text in the first
    1,000 characters of their error when given."""
    if not names_can_match(workflow_name, phase):
        return []
    store = await engine.get_store()
    by_phase = phase_filter(store, phase)
    # Every page read before anything changes: a change moves tasks out of the
    # statuses listed, and would shift the pages under the offset.
    found: dict[str, None] = {}
    offset = 0
    while True:
        page = await store.list_task_summaries(
            status=wanted,
            workflow_name=workflow_name,
            limit=BULK_PAGE,
            offset=offset,
            **by_phase,
        )
        for task in page:
            if error_contains is None or error_contains in (task.error or ""):
                found.setdefault(task.id)
        if len(page) < BULK_PAGE:
            break
        offset += BULK_PAGE
    return list(found)

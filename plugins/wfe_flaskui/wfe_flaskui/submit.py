"""Submitting tasks: the submit page, and the one way both it and the JSON API hand a new
task over, to the store or (with Kafka) to the tasks topic.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from flask import Blueprint, flash, redirect, request, url_for

from wfcore import (
    DEFINE_WORKFLOW,
    InvalidTaskError,
    StoreError,
    Task,
    TaskType,
    UnknownWorkflowError,
)
from wfcore.model import MAX_PRIORITY, MIN_PRIORITY, priority_problem

from . import ops
from .bridge import BridgeTimeout
from .display import _short_time, short_id
from .errors import store_failed
from .forms import parse_json_text
from .later import StartError, form_start, start_note
from .views import render, route

if TYPE_CHECKING:
    from .app import Dashboard

__all__ = [
    "DEFINE_REFUSED",
    "PriorityError",
    "add_submit",
    "already_submitted",
    "api_priority",
    "do_submit",
    "form_priority",
    "submit",
]

#: Why a define_workflow task is refused by a dashboard not set to take them.
DEFINE_REFUSED = (
    "this dashboard does not take define_workflow tasks: a workflow defined at run "
    "time stays in the store, and in every menu, for good, and nothing here removes it. "
    "Submit it with `wfe submit` or from code, or start the dashboard with "
    "--allow-define (WFE_UI_ALLOW_DEFINE=1, Dashboard(allow_define=True))"
)


class _KafkaDown(RuntimeError):
    """Kafka did not take a submitted task."""


class PriorityError(ValueError):
    """A priority that cannot be read; the message says what is expected."""


#: What the submit form's Priority takes: a whole number, written plainly (no 1e3,
#: 1_000 or digits of other scripts, which Python's int() would also read).
_WHOLE = re.compile(r"[+-]?[0-9]+")
_RANGE = f"from {MIN_PRIORITY} to {MAX_PRIORITY}"


def form_priority(text: str) -> int:
    """The submit form's "Priority": empty is 0, else a whole number from
    MIN_PRIORITY to MAX_PRIORITY."""
    text = text.strip()
    if not text:
        return 0
    if not _WHOLE.fullmatch(text):
        raise PriorityError(
            f"{text[:40]!r} is not a whole number in digits (such as 10 or -5); a priority "
            f"is one {_RANGE} (higher runs first; empty means 0)"
        )
    # Past 4,300 digits int() refuses the text; past a few, no priority is meant.
    if len(text.lstrip("+-").lstrip("0")) > 6:
        raise PriorityError(f"{text[:20]}... is out of range; a priority is {_RANGE}")
    value = int(text)
    if priority_problem(value) is not None:
        raise PriorityError(f"{value} is out of range; a priority is {_RANGE}")
    return value


def api_priority(value: Any) -> int:
    """The API's ``"priority"``: null or absent is 0, else an integer from
    MIN_PRIORITY to MAX_PRIORITY. Raises PriorityError naming the field."""
    if value is None:
        return 0
    if priority_problem(value) is None:
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        raise PriorityError(f'"priority" must be {_RANGE}, not {value}')
    raise PriorityError(f'"priority" must be an integer {_RANGE}, not {json.dumps(value)[:40]}')


def add_submit(bp: Blueprint, dash: Dashboard) -> None:
    """Serve the submit page at ``bp``'s ``/submit``."""
    route(bp, dash, "/submit", submit, ["GET", "POST"])


def submit(dash: Dashboard) -> Any:
    specs = dash.call(ops.workflows)
    values = {
        "workflow": request.values.get("workflow", ""),
        "data": request.form.get("data", "{\n  \n}"),
        "classification": request.form.get("classification", ""),
        "assigned_to": request.form.get("assigned_to", ""),
        "start_later": request.form.get("start_later", ""),
        "priority": request.form.get("priority", ""),
        "task_id": _form_task_id(request.form.get("task_id")),
    }
    errors: dict[str, str] = {}
    if request.method == "POST" and already_submitted(dash, values["task_id"]):
        # The same form sent again (a double click, a resent POST): show its task.
        flash(f"Task {short_id(values['task_id'])} was already submitted; here it is.", "ok")
        return redirect(url_for(".task", task_id=values["task_id"])), 303
    if request.method == "POST":
        data: Any = None
        if values["classification"].strip() == DEFINE_WORKFLOW and not dash.allow_define:
            errors["classification"] = DEFINE_REFUSED
        if not values["workflow"]:
            errors["workflow"] = "choose a workflow"
        elif values["workflow"] not in specs:
            errors["workflow"] = f"unknown workflow {values['workflow']!r}"
        try:
            data = parse_json_text(values["data"])
        except ValueError as exc:
            errors["data"] = f"not valid JSON: {exc}"
        assigned = values["assigned_to"] or TaskType.AGENTIC.value
        try:
            TaskType.parse(assigned)
        except InvalidTaskError as exc:
            errors["assigned_to"] = str(exc)
        run_after: datetime | None = None
        try:
            run_after = form_start(values["start_later"], datetime.now(timezone.utc))
        except StartError as exc:
            errors["start_later"] = str(exc)
        priority = 0
        try:
            priority = form_priority(values["priority"])
        except PriorityError as exc:
            errors["priority"] = str(exc)
        if not errors:
            try:
                created, published = do_submit(
                    dash,
                    values["workflow"],
                    data,
                    values["classification"] or None,
                    assigned,
                    values["task_id"],
                    run_after,
                    priority,
                )
            except UnknownWorkflowError as exc:
                errors["workflow"] = str(exc)
            except InvalidTaskError as exc:
                message = str(exc)
                if message.startswith("priority"):
                    field = "priority"
                elif "classification" in message:
                    field = "classification"
                else:
                    field = "data"
                errors[field] = message
            except _KafkaDown as exc:
                errors["form"] = str(exc)
            except BridgeTimeout as exc:
                errors["form"] = (
                    f"{exc}; the task may still be stored, as {values['task_id']}. "
                    "Sending this form again is safe: it carries that id, and a known "
                    "id is never submitted twice."
                )
            except StoreError as exc:
                # The write failed (a full disk, say), so nothing was stored; the
                # page keeps what was typed for when the store works again.
                errors["form"] = (
                    f"The store did not take the task: {store_failed(exc)}. Nothing was "
                    "submitted; send this form again once the store works."
                )
            else:
                if published is not None:
                    pick_up = (
                        f"a worker will start it at {_short_time(run_after)}"
                        if run_after is not None
                        else "a worker will pick it up"
                    )
                    flash(
                        f"Task {short_id(published['id'])} published to Kafka topic "
                        f"{published['topic']}; {pick_up}.",
                        "ok",
                    )
                    return redirect(url_for(".task", task_id=published["id"])), 303
                assert created is not None
                note = start_note(created, datetime.now(timezone.utc))
                when = f"; it {note.label} {_short_time(note.at)}" if note else ""
                flash(
                    f"Task {short_id(created.id)} submitted to {created.workflow_name}{when}.",
                    "ok",
                )
                return redirect(url_for(".task", task_id=created.id)), 303
    page = render(
        dash,
        "submit.html",
        specs=specs,
        values=values,
        errors=errors,
        task_types=[t.value for t in TaskType],
        min_priority=MIN_PRIORITY,
        max_priority=MAX_PRIORITY,
    )
    status = (503 if "form" in errors else 400) if errors else 200
    if errors.get("classification") == DEFINE_REFUSED:
        status = 403
    return page, status


def _form_task_id(given: str | None) -> str:
    """The id the submit form carries for its task, or a new one.

    Each form shown gets a fresh id and sends it back with the task, so sending
    the same form twice submits one task (``submit_task`` with a known id returns
    the stored task). Anything but an id this page made is replaced.
    """
    if given and len(given) == 32 and all(c in "0123456789abcdef" for c in given):
        return given
    return uuid.uuid4().hex


def already_submitted(dash: Dashboard, task_id: str) -> bool:
    """True when a task with this id is in the store, or this dashboard published it."""
    if dash.kafka is not None and dash.kafka.published(task_id) is not None:
        return True
    return dash.call(lambda engine: engine.get_task(task_id)) is not None


def do_submit(
    dash: Dashboard,
    workflow: str | None,
    data: Any,
    classification: str | None,
    assigned: str,
    task_id: str | None = None,
    run_after: datetime | None = None,
    priority: int = 0,
) -> tuple[Task | None, dict[str, Any] | None]:
    """Store the task, or (with Kafka) publish it: ``(task, None)`` or ``(None, record)``.

    With Kafka, a priority other than 0 is refused (InvalidTaskError) unless
    wfe_kafka's task messages carry one: a worker would run the task at 0.
    """
    if dash.kafka is None:
        created = dash.call(
            lambda engine: engine.submit_task(
                data,
                workflow,
                classification=classification,
                assigned_to=assigned,
                task_id=task_id,
                run_after=run_after,
                priority=priority,
            )
        )
        return created, None
    specs = dash.call(ops.workflows)
    ops.check_submission(specs, workflow, data, classification, assigned, task_id)
    if priority and not _kafka_carries_priority():
        raise InvalidTaskError(
            f"priority {priority} cannot go with this task: tasks are published to Kafka, "
            "and the installed wfe_kafka's task messages have no priority field, so a "
            "worker would run it at 0. Leave the priority empty (0)"
        )
    try:
        record = dash.kafka.publish(
            workflow,
            data,
            classification,
            TaskType.parse(assigned).value,
            task_id,
            run_after,
            priority,
        )
    except Exception as exc:
        if not _kafka_trouble(exc):
            raise  # a fault of the dashboard's own, not Kafka being down
        raise _KafkaDown(
            f"could not publish the task to Kafka ({dash.kafka_brokers}): {exc}"
        ) from exc
    return None, record


def _kafka_carries_priority() -> bool:
    """Whether the installed wfe_kafka's task messages have a ``priority`` field."""
    from wfe_kafka.messages import TASK_FIELDS  # installed whenever the dashboard has Kafka

    return "priority" in TASK_FIELDS


def _kafka_trouble(exc: BaseException) -> bool:
    """Kafka unreachable or refusing the message: kafka-python's errors, a timeout
    waiting for its acknowledgement, a network error."""
    from kafka.errors import KafkaError  # installed whenever the dashboard has Kafka

    return isinstance(exc, (KafkaError, TimeoutError, OSError))

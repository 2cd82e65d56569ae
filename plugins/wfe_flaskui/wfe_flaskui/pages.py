"""The dashboard's pages that show tasks and workflows: the task list, a task's page (and
its artifacts), the inbox and the workflow graphs.

Each page can also answer with just the region that refreshes itself, when the page's
script asks for it; the forms that change a task are in :mod:`wfe_flaskui.actions`,
the submit page in :mod:`wfe_flaskui.submit`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, redirect, request, send_file, url_for

from wfcore import (
    ArtifactError,
    ECSWorkflowEngine,
    InvalidTaskError,
    Task,
    TaskStatus,
    WorkflowSpec,
)
from wfcore.model import MAX_PRIORITY, MIN_PRIORITY
from wfcore.stores.base import ids_started_by
from wfcore.wire import task_from_dict

from . import ops, workers
from .display import (
    _STATUS_LABELS,
    HISTORY_SHOWN,
    _effective_type,
    _overdue,
    _timeline,
    _waiting_since,
)
from .errors import _BadInput, _error
from .forms import AnswerForm, answer_form
from .graph import TYPE_COLOURS, workflow_svg
from .query import _int_arg, _parse_statuses
from .views import partial, render, route

if TYPE_CHECKING:
    from .app import Dashboard

__all__ = [
    "add_pages",
    "answer_form_for",
    "artifact",
    "inbox",
    "kafka_task",
    "task",
    "task_context",
    "tasks",
    "workflows",
]

_STATUS_ORDER = [
    TaskStatus.PENDING,
    TaskStatus.IN_PROGRESS,
    TaskStatus.WAITING_HUMAN,
    TaskStatus.WAITING_AGENT,
    TaskStatus.WAITING_IO,
    TaskStatus.COMPLETED,
    TaskStatus.FAILED,
    TaskStatus.CANCELLED,
]
#: Marks the region a refreshing task page gets when its task is no longer stored.
_GONE_HEADER = "X-WFE-Gone"


def add_pages(bp: Blueprint, dash: Dashboard) -> None:
    """Serve the pages below from ``bp``."""
    route(bp, dash, "/", tasks)
    route(bp, dash, "/tasks/<task_id>", task)
    route(bp, dash, "/tasks/<task_id>/artifacts/<path:name>", artifact)
    route(bp, dash, "/inbox", inbox)
    route(bp, dash, "/workflows", workflows)


# -- the task list -------------------------------------------------------------------


def tasks(dash: Dashboard) -> Any:
    try:
        statuses = _parse_statuses(request.args.getlist("status"))
    except InvalidTaskError as exc:
        return _error(dash, 400, str(exc))
    workflow = request.args.get("workflow") or None
    phase = request.args.get("phase") or None
    page = _int_arg("page", 1, 1, 1_000_000)
    size = dash.page_size
    # The workflow filter is in the whole page only, not in the region it refreshes.
    whole_page = not partial()

    async def load(engine: ECSWorkflowEngine) -> Any:
        found = await ops.list_page(
            engine, statuses, workflow, size, (page - 1) * size, phase=phase
        )
        # Who runs what: the running tasks' holders on this page (a few lookups by
        # id) and the busy workers (an indexed query), for a page that refreshes.
        running = await workers.holders(engine, found.tasks)
        specs = await ops.workflows_of(engine, found.tasks)
        names = list(await ops.workflows(engine)) if whole_page else []
        return found, specs, names, running, await workers.busy_workers(engine)

    found, specs, names, running, busy = dash.call(load)
    now = datetime.now(timezone.utc)
    status_value = _status_filter(statuses)
    pages = max(1, -(-found.total // size))

    def page_url(number: int) -> str:
        args: dict[str, Any] = {
            "status": status_value,
            "workflow": workflow or "",
            "phase": phase or "",
            "page": number,
        }
        return url_for(".tasks", **{k: v for k, v in args.items() if v not in ("", None)})

    context = {
        "page": found,
        "page_number": page,
        "pages": pages,
        "page_url": page_url,
        "status_value": status_value,
        "status_label": ", ".join(_STATUS_LABELS[s.value] for s in statuses),
        "workflow": workflow,
        "phase": phase,
        "workflows": names,
        "status_order": _STATUS_ORDER,
        "count_total": sum(found.counts.values()),
        "specs": specs,
        "kafka_results": dash.kafka.recent() if dash.kafka is not None else [],
        "types": {t.id: _effective_type(t, specs) for t in found.tasks},
        "holders": running,
        "busy_workers": busy,
        "now": now,
        "unclaimed": {t.id: workers.unclaimed(t, now) for t in found.tasks},
    }
    if partial():
        return render(dash, "_tasks_region.html", **context)
    return render(dash, "tasks.html", **context)


async def _only_id_started_by(engine: ECSWorkflowEngine, start: str) -> str | None:
    """The one id wfcore made up that ``start`` begins (see ``ids_started_by``), or
    None for none or several."""
    found = await ids_started_by(await engine.get_store(), start, 2)
    return found[0] if len(found) == 1 else None


def _status_filter(statuses: list[TaskStatus]) -> str:
    """The status filter as the task list's dropdown and links spell it.

    ``?status=Completed`` and ``?status=COMPLETED`` filter like ``completed``, so
    they must select the same option and carry the same value into the page's
    links: one spelling per filter, whatever the URL said.
    """
    if not statuses:
        return ""
    if set(statuses) == set(ops.WAITING):
        return "waiting"
    return ",".join(s.value for s in statuses)


# -- a task's page -------------------------------------------------------------------


def task(
    dash: Dashboard,
    task_id: str,
    form: AnswerForm | None = None,
    status: int = 200,
    refused: dict[str, Any] | None = None,
    priority_form: dict[str, str] | None = None,
) -> Any:
    history = _history_arg()

    async def load(engine: ECSWorkflowEngine) -> Any:
        found = await engine.get_task(task_id)
        if found is None:
            return None
        specs = await ops.workflows_of(engine, [found])
        texts = [art.name for art in found.artifacts if _is_text(art.media_type, art.name)]
        previews = {}
        for name in texts[-PREVIEWS_SHOWN:]:
            previews[name] = await ops.artifact_preview(engine, found, name, dash.preview_bytes)
        # The status of each child it names (a few lookups by id, as a page refreshes).
        children = {}
        for kid in found.children[:CHILDREN_SHOWN]:
            child = await engine.get_task(kid)
            if child is not None:
                children[kid] = child.status
        holder = await workers.holder_of(engine, found)
        return found, specs, previews, len(texts), holder, children

    loaded = dash.call(load)
    if loaded is None:
        shown = kafka_task(dash, task_id)
        if shown is not None:
            return shown
        # The start of an id, as the lists show it (typed, or pasted from a terminal).
        full = None if partial() else dash.call(lambda engine: _only_id_started_by(engine, task_id))
        if full is not None:
            return redirect(url_for(".task", task_id=full), 302)
        if partial():
            # An open page of a task deleted since (wfe purge) says so in place
            # of the task it still shows.
            gone = Response(render(dash, "_task_gone.html", task_id=task_id), 404)
            gone.headers[_GONE_HEADER] = "1"
            return gone
        return _error(dash, 404, f"no task {task_id!r}")
    found, specs, previews, texts, holder, children = loaded
    context = task_context(found, specs, history)
    context["child_statuses"] = children
    context["previews"] = previews
    context["previews_left_out"] = texts - len(previews)
    context["holder"] = holder
    context["refused"] = refused
    # A priority typed in the page's Priority form that was refused, and why.
    context["priority_form"] = priority_form
    if found.status.is_waiting:
        context["form"] = form or answer_form_for(found, context["phase"])
    if partial():
        return render(dash, "_task_region.html", **context)
    return render(dash, "task.html", **context), status


def _history_arg() -> int | None:
    """How many of a task's newest history events its page shows: ``?history=all``
    shows every one (None), no argument the last :data:`HISTORY_SHOWN`."""
    value = request.args.get("history", "")
    if value == "all":
        return None
    if value:
        raise _BadInput(
            f"history must be 'all' (every event) or left out (the last {HISTORY_SHOWN}), "
            f"not {value[:40]!r}"
        )
    return HISTORY_SHOWN


def task_context(
    task: Task, specs: dict[str, WorkflowSpec], history: int | None = HISTORY_SHOWN
) -> dict[str, Any]:
    """What the task region shows of ``task``. ``history``: how many of its newest
    events the timeline shows (None: all of them; 0: no timeline, as inbox cards)."""
    phase = ops.phase_of(task, specs)
    spec = specs.get(task.workflow_name or "")
    order = spec.classifications if spec else []
    outputs = sorted(
        task.outputs.items(),
        key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order),
    )
    now = datetime.now(timezone.utc)
    timeline = _timeline(task, last=history) if history != 0 else []
    return {
        "task": task,
        "phase": phase,
        "spec": spec,
        "outputs": outputs,
        "timeline": timeline,
        # The events left out of the timeline, before those it shows.
        "history_earlier": len(task.history) - len(timeline) if history != 0 else 0,
        "history_all": history is None,
        "history_shown": HISTORY_SHOWN,
        "waiting_since": _waiting_since(task),
        "overdue": _overdue(task),
        "now": now,
        "unclaimed": workers.unclaimed(task, now),
        # A task whose priority can be changed: one that waits, queued or for an answer.
        "reprioritize": task.status is TaskStatus.PENDING or task.status.is_waiting,
        "min_priority": MIN_PRIORITY,
        "max_priority": MAX_PRIORITY,
    }


def answer_form_for(task: Task, phase: Any) -> AnswerForm:
    schema = phase.input_schema if phase is not None and not task.resume_in_phase else None
    return answer_form(schema)


def kafka_task(dash: Dashboard, task_id: str) -> Any:
    """A task this store does not hold but Kafka knows: a result, or a published task."""
    if dash.kafka is None:
        return None
    result = dash.kafka.result(task_id)
    if result is not None:
        try:
            found = task_from_dict(result)
        except InvalidTaskError:
            found = None
        if found is not None:
            shown = found
            specs = dash.call(lambda e: ops.workflows_of(e, [shown]))
            context = task_context(found, specs, _history_arg())
            context.update(previews={}, remote=True)
            name = "_task_region.html" if partial() else "task.html"
            return render(dash, name, **context)
    published = dash.kafka.published(task_id)
    if published is not None:
        context = {"record": published, "topic": published["topic"]}
        name = "_published_region.html" if partial() else "published.html"
        return render(dash, name, **context)
    return None


_TEXT_TYPES = ("application/json", "application/xml", "application/yaml", "application/x-yaml")
_TEXT_SUFFIXES = (".txt", ".md", ".csv", ".json", ".log", ".yaml", ".yml", ".xml", ".tsv", ".py")


#: The most text artifacts a task's page shows inline (its newest), each up to the
#: dashboard's ``preview_bytes``: the page fetches itself again every few seconds,
#: and a task may hold hundreds of them (a log for each round of a loop).
PREVIEWS_SHOWN = 8

#: The most children a task's page names (each with its status); the task as JSON
#: lists them all.
CHILDREN_SHOWN = 20


def _is_text(media_type: str | None, name: str) -> bool:
    if media_type and (media_type.startswith("text/") or media_type in _TEXT_TYPES):
        return True
    return name.lower().endswith(_TEXT_SUFFIXES)


def artifact(dash: Dashboard, task_id: str, name: str) -> Any:
    async def locate(engine: ECSWorkflowEngine) -> Any:
        found = await engine.get_task(task_id)
        if found is None or found.artifact(name) is None:
            return None
        try:
            return found.artifact(name), await engine.artifact_path(found, name)
        except ArtifactError:
            return found.artifact(name), None  # listed, but its file is not there

    try:
        located = dash.call(locate)
    except (ArtifactError, InvalidTaskError):
        located = None
    if located is None:
        return _error(dash, 404, f"task {task_id!r} has no artifact {name!r}")
    art, path = located
    if path is None:
        # Its page lists it, so "no artifact" would contradict what the person sees.
        return _error(
            dash,
            404,
            f"task {task_id!r} lists the artifact {name!r}, but its file is not in the "
            "store's artifact folder: it was deleted or moved after the task stored it",
        )
    response = send_file(
        path,
        mimetype=art.media_type or "application/octet-stream",
        as_attachment=True,
        download_name=name.rsplit("/", 1)[-1],
        max_age=0,
    )
    # Downloaded files never run as a page of this site.
    response.headers["Content-Security-Policy"] = "sandbox; default-src 'none'"
    return response


# -- the inbox -----------------------------------------------------------------------


def inbox(
    dash: Dashboard,
    forms: dict[str, AnswerForm] | None = None,
    status: int = 200,
    refused: dict[str, Any] | None = None,
) -> Any:
    show_all = request.args.get("all") == "1"
    wanted = ops.WAITING if show_all else (TaskStatus.WAITING_HUMAN,)

    async def load(engine: ECSWorkflowEngine) -> Any:
        # Only the oldest few: every open inbox refetches this every few seconds.
        shown = await ops.waiting_tasks(engine, wanted, dash.inbox_size)
        return shown, await ops.workflows_of(engine, shown[0])

    (waiting, total), specs = dash.call(load)
    cards = []
    for item in waiting:
        # A card has no timeline: the task's page shows it.
        context = task_context(item, specs, history=0)
        given = (forms or {}).get(item.id)
        context["form"] = given or answer_form_for(item, context["phase"])
        cards.append(context)
    context = {
        "cards": cards,
        "total": total,
        "full_list": url_for(".tasks", status="waiting" if show_all else "waiting_human"),
        "show_all": show_all,
        "forms_have_errors": any(f.has_errors for f in (forms or {}).values()),
        "refused": refused,
    }
    if partial():
        return render(dash, "_inbox_region.html", **context)
    return render(dash, "inbox.html", **context), status


# -- the workflows -------------------------------------------------------------------


# Workflows (each a graph) per page of /workflows: a store may hold thousands.
_WORKFLOWS_PER_PAGE = 20


def workflows(dash: Dashboard) -> Any:
    page = _int_arg("page", 1, 1, 1_000_000)

    async def load(engine: ECSWorkflowEngine) -> Any:
        specs = list((await ops.workflows(engine)).values())
        store = await engine.get_store()
        # Two counting queries for the page, however many workflows are stored.
        by_phase = await store.count_all_by_phase()
        by_status = await store.count_all_by_workflow()
        start = (page - 1) * _WORKFLOWS_PER_PAGE
        shown = specs[start : start + _WORKFLOWS_PER_PAGE]
        rows = [(s, by_phase.get(s.name, {}), by_status.get(s.name, {})) for s in shown]
        return rows, len(specs), await ops.schedules_by_workflow(engine)

    rows, total, schedules = dash.call(load)
    pages = max(1, -(-total // _WORKFLOWS_PER_PAGE))
    cards = []
    for index, (spec, by_phase, by_status) in enumerate(rows):
        unfinished = sum(n for status, n in by_status.items() if not status.is_finished)
        # Tasks submitted without a phase are in none in the store until their
        # worker stores the one it chose (once it has run a second, or as the
        # phase ends); counted apart, the phases and the total agree. (Two
        # reads: a task moving between them can make them differ for a moment.)
        unplaced = max(0, unfinished - sum(by_phase.values()))
        cards.append(
            {
                "spec": spec,
                "svg": workflow_svg(spec, by_phase, link=_phase_link(spec), uid=f"wf{index}"),
                "by_phase": by_phase,
                "by_status": by_status,
                "active": unfinished,
                "unplaced": unplaced,
                "schedules": schedules.get(spec.name, []),
            }
        )
    legend = [
        (t.value if t is not None else "task's own type", fill, stroke)
        for t, (fill, stroke) in TYPE_COLOURS.items()
    ]
    context = {
        "cards": cards,
        "legend": legend,
        "status_order": _STATUS_ORDER,
        "page_number": page,
        "pages": pages,
        "total": total,
    }
    if partial():
        return render(dash, "_workflows_region.html", **context)
    return render(dash, "workflows.html", **context)


def _phase_link(spec: WorkflowSpec) -> Callable[[str], str]:
    """A graph's link for each phase: the list of the workflow's tasks at it."""
    return lambda phase: url_for(".tasks", workflow=spec.name, phase=phase)

"""The dashboard's JSON API under ``/api``: list, submit, read, resume, cancel and retry
tasks, change the priority of one that waits, upload a file to one, the workflows, the
recent Kafka results, and the CSRF token for the calls that change something; and
``/metrics`` for Prometheus.

Tasks travel in wfcore's wire format (in a listing without their payloads, which
may be megabytes a task, unless ``?full=1``); every error is ``{"error": message}``,
with the status code :func:`api_errors` gives its cause.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import attrs
from flask import Blueprint, Response, jsonify, request, url_for

from wfcore import (
    DEFINE_WORKFLOW,
    Artifact,
    ArtifactError,
    ECSWorkflowEngine,
    InvalidOutputError,
    InvalidTaskError,
    StoreError,
    Task,
    TaskStateError,
    TaskType,
    UnknownTaskError,
    UnknownWorkflowError,
    WorkflowError,
)
from wfcore.metrics import CONTENT_TYPE, render_metrics
from wfcore.wire import task_to_dict, workflow_to_dict

from . import ops, security
from .bridge import BridgeTimeout
from .errors import _BadInput, _error, store_failed
from .forms import parse_json_text
from .later import StartError, api_start
from .query import _int_arg, _parse_statuses
from .submit import DEFINE_REFUSED, PriorityError, _KafkaDown, api_priority, do_submit
from .views import acting_user, route

if TYPE_CHECKING:
    from .app import Dashboard

__all__ = [
    "add_api",
    "api_cancel",
    "api_csrf",
    "api_errors",
    "api_kafka_results",
    "api_metrics",
    "api_resume",
    "api_retry",
    "api_set_priority",
    "api_submit",
    "api_task",
    "api_tasks",
    "api_upload",
    "api_workflows",
    "body_json",
]

#: The fields of a POST /api/tasks body.
_SUBMIT_FIELDS = frozenset(
    {
        "workflow",
        "workflow_name",
        "data",
        "classification",
        "assigned_to",
        "id",
        "run_after",
        "priority",
    }
)


#: The fields of a POST /api/tasks/<id>/resume body.
_RESUME_FIELDS = frozenset({"output", "phase", "version"})


def add_api(bp: Blueprint, dash: Dashboard) -> None:
    """Serve the API below from ``bp``; its endpoints' names start with ``api_``."""
    route(bp, dash, "/api/csrf", api_csrf)
    route(bp, dash, "/api/tasks", api_tasks, ["GET"])
    route(bp, dash, "/api/tasks", api_submit, ["POST"])
    route(bp, dash, "/api/tasks/<task_id>", api_task)
    route(bp, dash, "/api/tasks/<task_id>/resume", api_resume, ["POST"])
    route(bp, dash, "/api/tasks/<task_id>/cancel", api_cancel, ["POST"])
    route(bp, dash, "/api/tasks/<task_id>/retry", api_retry, ["POST"])
    route(bp, dash, "/api/tasks/<task_id>/priority", api_set_priority, ["POST"])
    route(bp, dash, "/api/tasks/<task_id>/artifacts", api_upload, ["POST"])
    route(bp, dash, "/api/workflows", api_workflows)
    route(bp, dash, "/api/kafka/results", api_kafka_results)
    # Where Prometheus looks by default; named api_ for the API's JSON errors and 401s.
    route(bp, dash, "/metrics", api_metrics)


def body_json() -> Any:
    raw = request.get_data(cache=True)
    if not raw.strip():
        raise _BadInput("the request body must be a JSON object")
    try:
        return parse_json_text(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise _BadInput(f"the request body is not valid JSON: {exc}") from None


def api_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Answer the errors an API view raises as JSON: 400 bad input, 404 unknown task,
    409 wrong state, 503 Kafka down or a store that fails (its file deleted, a full
    disk): the request was fine, and may work again once the store does."""

    def wrapper(dash: Dashboard, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(dash, *args, **kwargs)
        except _BadInput as exc:
            return _error(dash, 400, str(exc), exc.errors)
        except InvalidOutputError as exc:
            return _error(dash, 400, getattr(exc, "summary", None) or str(exc), exc.errors)
        except (InvalidTaskError, UnknownWorkflowError, ArtifactError) as exc:
            return _error(dash, 400, str(exc))
        except UnknownTaskError as exc:
            return _error(dash, 404, str(exc))
        except TaskStateError as exc:
            return _error(dash, 409, str(exc))
        except StoreError as exc:
            return _error(dash, 503, store_failed(exc))
        except WorkflowError as exc:
            return _error(dash, 400, str(exc))
        except _KafkaDown as exc:
            return _error(dash, 503, str(exc))

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


def _api_task(task: Task) -> dict[str, Any]:
    """A task in the JSON API: wfcore's wire format, with the ``version`` a client
    passes back to resume so that an answer to an earlier round is refused.

    Artifacts go without their ``path``, as in Kafka's result messages: a file
    name on the dashboard's host, of no use to a client (which downloads them from
    ``/tasks/<id>/artifacts/<name>``) and telling it about the host's layout.
    """
    doc = task_to_dict(task, internal=True)
    for artifact in doc["artifacts"]:
        artifact.pop("path", None)
    return doc


#: What a task listing (``GET /api/tasks``) leaves out of each task unless asked for
#: whole tasks (``?full=1``): what handlers, agents and people put there, which may
#: be megabytes a task, and its history, which grows with every phase.
LISTING_LEFT_OUT = ("data", "context", "output", "outputs", "reply", "traceback", "history")


def _api_task_summary(task: Task) -> dict[str, Any]:
    """A task in a listing: :func:`_api_task` without :data:`LISTING_LEFT_OUT`.

    The left-out fields are emptied before the task is turned into JSON, so that
    they are never converted only to be dropped.
    """
    light = attrs.evolve(
        task,
        data=None,
        context={},
        output=None,
        outputs={},
        reply=None,
        traceback=None,
        history=[],
    )
    doc = _api_task(light)
    for name in LISTING_LEFT_OUT:
        doc.pop(name, None)
    return doc


def _kafka_view(record: dict[str, Any]) -> dict[str, Any]:
    return {k: record[k] for k in ("topic", "partition", "offset", "at")}


def api_csrf(dash: Dashboard) -> Any:
    """The session's CSRF token, for the X-CSRF-Token header of later calls."""
    return jsonify({"csrf_token": security.csrf_token(), "header": security.CSRF_HEADER})


@api_errors
def api_tasks(dash: Dashboard) -> Any:
    statuses = _parse_statuses(request.args.getlist("status"))
    workflow = request.args.get("workflow") or None
    phase = request.args.get("phase") or None
    limit = _int_arg("limit", 50, 1, 500)
    offset = _int_arg("offset", 0, 0, 10**9)
    order = request.args.get("order") or "newest"
    if order not in ("newest", "oldest"):
        raise _BadInput(f"order must be newest or oldest, not {order!r}")
    oldest = order == "oldest"
    full = _full_arg()
    found = dash.call(
        lambda e: ops.list_page(
            e, statuses, workflow, limit, offset, oldest, summaries=not full, phase=phase
        )
    )
    answer: dict[str, Any] = {
        "tasks": [(_api_task if full else _api_task_summary)(t) for t in found.tasks],
        "total": found.total,
        "limit": limit,
        "offset": offset,
        "counts": {s.value: n for s, n in found.counts.items()},
    }
    if not full:
        # Says what the tasks lack, so that a missing field is not read as empty.
        answer["left_out"] = list(LISTING_LEFT_OUT)
    return jsonify(answer)


def _full_arg() -> bool:
    """``?full=1``: list whole tasks; ``0`` or none, tasks without their payloads."""
    value = request.args.get("full", "").strip().lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise _BadInput(
        f"full must be 1 (whole tasks) or 0 (tasks without {', '.join(LISTING_LEFT_OUT)}), "
        f"not {value[:40]!r}"
    )


@api_errors
def api_submit(dash: Dashboard) -> Any:
    doc = body_json()
    if not isinstance(doc, dict):
        raise _BadInput("the request body must be a JSON object")
    unknown = sorted(set(doc) - _SUBMIT_FIELDS)
    if unknown:
        raise _BadInput(f"unknown field {unknown[0]!r}")
    if "workflow" in doc and "workflow_name" in doc and doc["workflow"] != doc["workflow_name"]:
        raise _BadInput('"workflow" and "workflow_name" name different workflows; give one')
    workflow = doc.get("workflow", doc.get("workflow_name"))
    defining = doc.get("classification") == DEFINE_WORKFLOW
    if defining and not dash.allow_define:
        return _error(dash, 403, DEFINE_REFUSED)
    if not (isinstance(workflow, str) and workflow) and not (defining and workflow is None):
        raise _BadInput('"workflow" must name a registered workflow')
    given = doc.get("id")
    if given is not None and not (isinstance(given, str) and given):
        raise _BadInput(f'"id" must be a non-empty string, not {json.dumps(given)[:40]}')
    try:
        # A delay counts from now, when the request came, however long the store takes.
        run_after = api_start(doc.get("run_after"), datetime.now(timezone.utc))
    except StartError as exc:
        raise _BadInput(str(exc)) from None
    try:
        priority = api_priority(doc.get("priority"))
    except PriorityError as exc:
        raise _BadInput(str(exc)) from None
    existed = given is not None and dash.call(lambda e: e.get_task(given)) is not None
    # The id is chosen here, not by the engine, so that an answer lost to a
    # timeout can still name the task its write may yet create.
    task_id = given if given is not None else uuid.uuid4().hex
    try:
        created, published = do_submit(
            dash,
            workflow,
            doc.get("data"),
            doc.get("classification"),
            doc.get("assigned_to") or TaskType.AGENTIC.value,
            task_id,
            run_after,
            priority,
        )
    except BridgeTimeout as exc:
        where = url_for(".api_task", task_id=task_id)
        message = (
            f"{exc}; the task may still be stored, as {task_id}: check GET {where}, "
            f'or send the request again with "id": "{task_id}" '
            "(a known id is never submitted twice)"
        )
        return jsonify({"error": message, "id": task_id}), 503
    if published is not None:
        body = {"id": published["id"], "status": "published", "kafka": _kafka_view(published)}
        accepted = jsonify(body)
        accepted.status_code = 202
        accepted.headers["Location"] = url_for(".api_task", task_id=published["id"])
        return accepted
    assert created is not None
    response = jsonify(_api_task(created))
    response.status_code = 200 if existed else 201
    response.headers["Location"] = url_for(".api_task", task_id=created.id)
    return response


#: The longest ``?wait=`` an API request may hold its connection for, in seconds.
MAX_WAIT = 30.0


@api_errors
def api_task(dash: Dashboard, task_id: str) -> Any:
    wait = _wait_arg()
    if wait:
        found = dash.call(lambda e: _settled(e, task_id, wait), timeout=wait + dash.bridge.timeout)
    else:
        found = dash.call(lambda e: e.get_task(task_id))
    if found is not None:
        return jsonify(_api_task(found))
    if dash.kafka is not None:
        result = dash.kafka.result(task_id)
        if result is not None:
            return jsonify({**result, "source": "kafka"})
        published = dash.kafka.published(task_id)
        if published is not None:
            return jsonify({"id": task_id, "status": "published", "kafka": _kafka_view(published)})
    raise UnknownTaskError(task_id)


def _wait_arg() -> float:
    """``?wait=SECONDS``: 0 when absent; more than MAX_WAIT is taken as MAX_WAIT."""
    raw = request.args.get("wait")
    if raw is None or raw == "":
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        raise _BadInput("wait must be a number of seconds") from None
    if not value >= 0:  # also refuses NaN
        raise _BadInput("wait must be a number of seconds, 0 or more")
    return min(value, MAX_WAIT)


async def _settled(engine: ECSWorkflowEngine, task_id: str, wait: float) -> Task | None:
    """The task once it is finished or waits, else as it is after ``wait`` seconds;
    None if there is no such task."""
    try:
        return await engine.wait_for_task(task_id, timeout=wait, waiting=True)
    except TimeoutError:
        return await engine.get_task(task_id)
    except UnknownTaskError:
        return None


@api_errors
def api_resume(dash: Dashboard, task_id: str) -> Any:
    doc = body_json()
    if not isinstance(doc, dict) or "output" not in doc:
        raise _BadInput('the request body must be a JSON object with an "output" field')
    # A misspelt "phase" or "version" would otherwise drop the check it asks for, and
    # an answer meant for one round could be taken for the next.
    unknown = sorted(set(doc) - _RESUME_FIELDS)
    if unknown:
        raise _BadInput(f"unknown field {unknown[0]!r} (an answer takes: output, phase, version)")
    # The phase the answer is for: refused (409) once the task has moved past it.
    asked = doc.get("phase")
    if asked is not None and not (isinstance(asked, str) and asked):
        raise _BadInput(f'"phase" must be the name of a phase, not {json.dumps(asked)[:40]}')
    # The task's version when the question was read: refused (409) once it changed.
    read = doc.get("version")
    if read is not None and (isinstance(read, bool) or not isinstance(read, int)):
        raise _BadInput(f'"version" must be a whole number, not {json.dumps(read)[:40]}')
    by = acting_user()
    try:
        resumed = dash.call(
            lambda e: e.resume(task_id, doc["output"], phase=asked, version=read, by=by)
        )
    except BridgeTimeout as exc:
        again = (
            'sending it again with the same "version" is safe: an answer to a round '
            "already answered is refused with 409"
            if read is not None
            else 'send "version" (from the task\'s JSON) with an answer you may send twice'
        )
        return _queued(task_id, "answer", exc, again)
    return jsonify(_api_task(resumed))


@api_errors
def api_cancel(dash: Dashboard, task_id: str) -> Any:
    # Read here, in the request: the call runs on the engine's loop, in another thread.
    by = acting_user()
    try:
        cancelled = dash.call(lambda e: e.cancel(task_id, by=by))
    except BridgeTimeout as exc:
        return _queued(task_id, "cancel", exc, "once applied, a cancel sent again gets 409")
    return jsonify(_api_task(cancelled))


@api_errors
def api_retry(dash: Dashboard, task_id: str) -> Any:
    by = acting_user()
    try:
        retried = dash.call(lambda e: e.retry(task_id, by=by))
    except BridgeTimeout as exc:
        return _queued(task_id, "retry", exc, "once applied, a retry sent again gets 409")
    return jsonify(_api_task(retried))


@api_errors
def api_set_priority(dash: Dashboard, task_id: str) -> Any:
    """``{"priority": n}``: the task's new priority (null is 0), for a PENDING or
    waiting task; 409 for a running or finished one."""
    doc = body_json()
    if not isinstance(doc, dict) or "priority" not in doc:
        raise _BadInput('the request body must be a JSON object with a "priority" field')
    unknown = sorted(set(doc) - {"priority"})
    if unknown:
        raise _BadInput(f"unknown field {unknown[0]!r}")
    try:
        priority = api_priority(doc["priority"])
    except PriorityError as exc:
        raise _BadInput(str(exc)) from None
    by = acting_user()
    try:
        changed = dash.call(lambda e: e.set_priority(task_id, priority, by=by))
    except BridgeTimeout as exc:
        return _queued(
            task_id, "priority change", exc, "sending it again is safe: it sets the same priority"
        )
    return jsonify(_api_task(changed))


@api_errors
def api_upload(dash: Dashboard, task_id: str) -> Any:
    """Store a file sent as multipart/form-data (field ``file``, optional ``name``) as an
    artifact of the task: 201 and the task (its new ``version`` included), with the
    file's download URL in ``Location``. The engine refuses a running task (409: its
    phase stores its own artifacts) and a bad name (400)."""
    upload = request.files.get("file")
    if upload is None:
        if "file" in request.form:
            raise _BadInput(
                'the "file" field holds text, not a file: send it as a file part, with '
                "a file name (curl -F file=@PATH)"
            )
        raise _BadInput(
            'send the file as multipart/form-data, in a field named "file" (curl -F '
            f"file=@PATH); this request has none (it is {request.mimetype or 'without a type'})"
        )
    name = request.form.get("name") or upload.filename or ""
    if not name:
        raise _BadInput('the file has no name: give one in a "name" field')
    data = upload.read()
    by = acting_user()

    async def store(engine: ECSWorkflowEngine) -> tuple[Artifact, Task | None]:
        artifact = await engine.add_artifact_bytes(task_id, name, data, by=by)
        return artifact, await engine.get_task(task_id)

    try:
        artifact, task = dash.call(store)
    except BridgeTimeout as exc:
        return _queued(
            task_id, "upload", exc, "sending it again is safe: a file of the same name replaces it"
        )
    if task is None:  # deleted (wfe purge) just after
        raise UnknownTaskError(task_id)
    response = jsonify(_api_task(task))
    response.status_code = 201
    response.headers["Location"] = url_for(".artifact", task_id=task_id, name=artifact.name)
    return response


def _queued(task_id: str, what: str, exc: BridgeTimeout, again: str) -> Any:
    """503 for a change the store did not take in time (another process holding its
    write lock, say): it was handed to the store and may still be made, as a
    submission's write may (see :func:`api_submit`)."""
    where = url_for(".api_task", task_id=task_id)
    message = (
        f"{exc}; the {what} was queued and may still be applied: check GET {where} "
        f"before sending it again ({again})"
    )
    return jsonify({"error": message, "id": task_id}), 503


@api_errors
def api_workflows(dash: Dashboard) -> Any:
    async def load(engine: ECSWorkflowEngine) -> list[dict[str, Any]]:
        store = await engine.get_store()
        by_phase = await store.count_all_by_phase()  # one query, not one per workflow
        schedules = await ops.schedules_by_workflow(engine)
        docs = []
        for spec in (await ops.workflows(engine)).values():
            doc = workflow_to_dict(spec)
            doc["tasks_by_phase"] = by_phase.get(spec.name, {})
            doc["schedules"] = schedules.get(spec.name, [])
            docs.append(doc)
        return docs

    return jsonify({"workflows": dash.call(load)})


@api_errors
def api_kafka_results(dash: Dashboard) -> Any:
    if dash.kafka is None:
        return _error(dash, 404, "Kafka is not configured (set KAFKA_BROKERS, install wfe_kafka)")
    return jsonify({"results": dash.kafka.recent()})


@api_errors
def api_metrics(dash: Dashboard) -> Any:
    """The store's queue (and the dashboard's worker, when it runs one) for Prometheus."""

    async def render(engine: ECSWorkflowEngine) -> str:
        # An engine that runs no worker here counts nothing: its counters stay out.
        return await render_metrics(engine, engine_metrics=dash.bridge.run_worker or engine.running)

    return Response(dash.call(render), content_type=CONTENT_TYPE)

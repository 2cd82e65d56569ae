"""The dashboard: the Dashboard object, its Flask blueprint (pages and JSON API), create_app."""

from __future__ import annotations

import atexit
import json
import os
import secrets
import threading
import unicodedata
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, TypeVar
from urllib.parse import quote, urlencode, urlsplit

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)
from flask.blueprints import BlueprintSetupState
from markupsafe import Markup
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from wfcore import (
    DEFINE_WORKFLOW,
    ArtifactError,
    ECSWorkflowEngine,
    InvalidOutputError,
    InvalidTaskError,
    Task,
    TaskStateError,
    TaskStatus,
    TaskType,
    UnknownTaskError,
    UnknownWorkflowError,
    WorkflowError,
    WorkflowSpec,
)
from wfcore.wire import task_from_dict, task_to_dict, workflow_to_dict

from . import ops, security
from .bridge import BridgeError, BridgeTimeout, EngineBridge
from .forms import AnswerForm, answer_form, parse_answer, parse_json_text, typed_values
from .graph import TYPE_COLOURS, workflow_svg
from .later import StartError, StartNote, api_start, form_start, start_note

__all__ = ["Dashboard", "create_app"]

T = TypeVar("T")

#: Default request body limit (bytes); larger bodies get 413.
DEFAULT_MAX_BODY = 1024 * 1024
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
#: The fields of a POST /api/tasks body.
_SUBMIT_FIELDS = frozenset(
    {"workflow", "workflow_name", "data", "classification", "assigned_to", "id", "run_after"}
)
_PARTIAL_HEADER = "X-WFE-Partial"
#: Marks the region a refreshing task page gets when its task is no longer stored.
_GONE_HEADER = "X-WFE-Gone"


class Dashboard:
    """The web dashboard for one engine: a Flask blueprint plus the engine's loop.

    :param engine: the engine whose store to show. None builds
        ``ECSWorkflowEngine(store=store)``.
    :param store: a store URL when ``engine`` is None (None: ``WFE_STORE`` or the
        default ``.wfe/wfe.db``).
    :param run_worker: also run the engine's worker in this process.
    :param token: an access token every request must present; None reads
        ``WFE_UI_TOKEN``, ``""`` (or only blanks) turns the check off.
    :param max_body: the largest request body accepted, in bytes (else 413).
    :param page_size: tasks per page in the task list.
    :param inbox_size: the most tasks the inbox shows (the oldest); the rest are
        counted and linked to in the task list.
    :param refresh_seconds: how often open pages refresh themselves.
    :param preview_bytes: how much of a text artifact is shown inline.
    :param kafka_brokers: Kafka bootstrap servers; None reads ``KAFKA_BROKERS``.
        With brokers and ``wfe_kafka`` installed, submitted tasks are also
        published to Kafka and results from the results topic are shown.
    :param name: the blueprint's name (endpoints are ``<name>.tasks`` etc.).

    Mount it in any Flask app::

        dashboard = Dashboard(store="sqlite:////srv/wfe/wfe.db")
        app.register_blueprint(dashboard.blueprint, url_prefix="/workflows")

    The engine starts with the first request (or :meth:`start`) and stops at
    interpreter exit (or :meth:`stop`).
    """

    def __init__(
        self,
        engine: ECSWorkflowEngine | None = None,
        *,
        store: str | None = None,
        run_worker: bool = False,
        token: str | None = None,
        max_body: int = DEFAULT_MAX_BODY,
        page_size: int = 25,
        inbox_size: int = 100,
        refresh_seconds: float = 2.0,
        preview_bytes: int = 64 * 1024,
        kafka_brokers: str | None = None,
        name: str = "wfe",
    ) -> None:
        self.engine = engine if engine is not None else ECSWorkflowEngine(store=store)
        self.bridge = EngineBridge(self.engine, run_worker=run_worker)
        # Blanks around a token are not part of it (clients strip them from headers),
        # and a token of blanks alone is none.
        self.token = (os.environ.get("WFE_UI_TOKEN", "") if token is None else token).strip()
        self.max_body = max_body
        self.page_size = page_size
        self.inbox_size = inbox_size
        self.refresh_seconds = refresh_seconds
        self.preview_bytes = preview_bytes
        self.kafka_brokers = (
            os.environ.get("KAFKA_BROKERS", "") if kafka_brokers is None else kafka_brokers
        )
        self.kafka: Any = None
        self._start_lock = threading.Lock()
        self._atexit = False
        self.blueprint = _make_blueprint(self, name)

    @property
    def store_url(self) -> str:
        """The URL of the store the dashboard shows."""
        return self.engine.store_url

    def start(self) -> Dashboard:
        """Open the store (and start the worker, and Kafka, when configured); idempotent."""
        with self._start_lock:
            if self.bridge.started:
                return self
            self.bridge.start()
            if not self._atexit:
                atexit.register(self.stop)
                self._atexit = True
            if self.kafka_brokers:
                from .kafka import start_kafka

                self.kafka = start_kafka(self, self.kafka_brokers)
        return self

    def stop(self) -> None:
        """Stop the worker (if any), Kafka and the engine's loop; safe to call twice."""
        if self._atexit:
            atexit.unregister(self.stop)
            self._atexit = False
        if self.kafka is not None:
            self.kafka.stop()
            self.kafka = None
        self.bridge.stop()

    def __enter__(self) -> Dashboard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def call(self, work: Any, timeout: float | None = None) -> Any:
        """Run a coroutine (or ``fn(engine)``) on the engine's loop and return its result."""
        if not self.bridge.started:
            self.start()
        return self.bridge.call(work, timeout)


def create_app(
    dashboard: Dashboard | ECSWorkflowEngine | str | None = None,
    *,
    run_worker: bool = False,
    token: str | None = None,
    secret_key: str | None = None,
    max_body: int = DEFAULT_MAX_BODY,
    start: bool = True,
) -> Flask:
    """A Flask app serving the dashboard at ``/``.

    :param dashboard: a Dashboard, an engine, or a store URL (None: the default store).
    :param run_worker: run the engine's worker in this process too (ignored when a
        Dashboard is given).
    :param token: the access token (see :class:`Dashboard`).
    :param secret_key: signs the session cookie; None reads ``WFE_UI_SECRET``, else a
        random key for this process.
    :param start: open the store now, so that a bad store URL fails here.

    ``app.extensions["wfe_flaskui"]`` is the Dashboard; call its ``stop()`` when done.
    """
    if not isinstance(dashboard, Dashboard):
        if isinstance(dashboard, ECSWorkflowEngine):
            dashboard = Dashboard(dashboard, run_worker=run_worker, token=token, max_body=max_body)
        else:
            dashboard = Dashboard(
                store=dashboard, run_worker=run_worker, token=token, max_body=max_body
            )
    app = Flask("wfe_flaskui", static_folder=None)
    app.config.update(
        SECRET_KEY=secret_key or os.environ.get("WFE_UI_SECRET") or secrets.token_hex(32),
        MAX_CONTENT_LENGTH=dashboard.max_body,
        SESSION_COOKIE_NAME="wfe_session",
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_HTTPONLY=True,
    )
    app.register_blueprint(dashboard.blueprint)
    app.extensions["wfe_flaskui"] = dashboard
    if start:
        dashboard.start()
    return app


# -- presentation helpers ----------------------------------------------------------------


def _pretty(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)


#: The most characters of one JSON value (task data, an output) a page shows: open
#: pages fetch themselves again every few seconds, so a 1 MB task would cost 1 MB each
#: time. The API's task URL has the whole.
JSON_SHOWN = 16 * 1024


def _json_preview(value: Any, limit: int = JSON_SHOWN) -> dict[str, Any]:
    """``value`` as pretty JSON, cut to ``limit`` characters (at a line end when one
    is near): ``{"text", "cut", "total"}``."""
    text = _pretty(value)
    if len(text) <= limit:
        return {"text": text, "cut": False, "total": len(text)}
    end = text.rfind("\n", limit // 2, limit)
    return {"text": text[: end if end > 0 else limit], "cut": True, "total": len(text)}


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


def _link_to(url: str) -> Callable[[str], str]:
    """A graph's link for every phase: the same URL."""
    return lambda _phase: url


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
_SHOWN_KEYS = {"at", "event", "phase", "worker", "task_type", "seconds", "status", "attempt"}


def _timeline(task: Task) -> list[dict[str, Any]]:
    """History entries shaped for the timeline: label, phase, who, duration, the rest."""
    items = []
    waiting_since: datetime | None = None
    waiting_for = ""
    first: datetime | None = None
    for entry in task.history:
        event = str(entry.get("event", ""))
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
        elif event in ("resumed", "deadline_passed", "cancelled") and waiting_since and when:
            duration = "waited " + _duration((when - waiting_since).total_seconds())
            waiting_since = None
        who = [str(entry[k]) for k in ("task_type", "worker") if entry.get(k)]
        if event == "resumed" and not who:
            who = [_ANSWERED_BY.get(waiting_for, "answered")]
        details = {k: v for k, v in entry.items() if k not in _SHOWN_KEYS and v is not None}
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
                "offset": "+" + _duration((when - first).total_seconds()) if when and first else "",
                "phase": entry.get("phase"),
                "who": " · ".join(who),
                "duration": duration,
                "details": details,
            }
        )
    return items


def _effective_type(task: Task, specs: dict[str, WorkflowSpec]) -> str:
    """Who runs the task's current phase: the phase's type, else the task's own."""
    phase = ops.phase_of(task, specs)
    if phase is not None and phase.assigned_to is not None:
        return phase.assigned_to.value
    return task.assigned_to.value


def _api_task(task: Task) -> dict[str, Any]:
    """A task in the JSON API: wfcore's wire format, with the ``version`` a client
    passes back to resume so that an answer to an earlier round is refused."""
    return task_to_dict(task, internal=True)


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


def _waiting_since(task: Task) -> str | None:
    for entry in reversed(task.history):
        if entry.get("event") == "suspended":
            at = entry.get("at")
            return at if isinstance(at, str) else None
    return None


def _overdue(task: Task) -> bool:
    return task.deadline is not None and task.deadline < datetime.now(timezone.utc)


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


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    """An integer query argument: ``default`` when absent, 400 below ``low``.

    Above ``high`` it is taken as ``high``: a cap on how much one request returns,
    which the answer reports, rather than a mistake.
    """
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _BadInput(f"{name} must be an integer") from None
    if value < low:
        raise _BadInput(f"{name} must be at least {low}")
    return min(high, value)


class _KafkaDown(RuntimeError):
    """Kafka did not take a submitted task."""


def _kafka_view(record: dict[str, Any]) -> dict[str, Any]:
    return {k: record[k] for k in ("topic", "partition", "offset", "at")}


class _BadInput(ValueError):
    def __init__(self, message: str, errors: list[str] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


def _without_token() -> str:
    """The request's path (quoted again) and query, minus a ``token`` argument."""
    args = [(k, v) for k, v in request.args.items(multi=True) if k != "token"]
    # request.path is decoded: a %0A in it would be a newline in a Location header.
    return quote(request.path, safe="/") + (f"?{urlencode(args)}" if args else "")


def _form_task_id(given: str | None) -> str:
    """The id the submit form carries for its task, or a new one.

    Each form shown gets a fresh id and sends it back with the task, so sending
    the same form twice submits one task (``submit_task`` with a known id returns
    the stored task). Anything but an id this page made is replaced.
    """
    if given and len(given) == 32 and all(c in "0123456789abcdef" for c in given):
        return given
    return uuid.uuid4().hex


def _safe_next(target: str | None, fallback: str) -> str:
    """``target`` when it is a path on this site, else ``fallback``.

    Browsers drop tabs and newlines inside a URL and read ``\\`` as ``/``, so
    ``/<tab>/evil.com`` would take them to ``//evil.com``, another site. Only a
    plain path is followed: one leading ``/``, no scheme or host, no backslash,
    whitespace or control character.
    """
    if not target or not target.startswith("/") or target.startswith("//"):
        return fallback
    if "\\" in target or any(ch.isspace() or unicodedata.category(ch)[0] == "C" for ch in target):
        return fallback
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return fallback
    return target


def _refuse_large_body(limit: int) -> None:
    """Abort with 413 when the request body is over ``limit`` bytes, however it is sent.

    A body with a Content-Length is judged by it before anything is read. One
    without (``Transfer-Encoding: chunked``) is read here, at most ``limit + 1``
    bytes: Werkzeug's stream, capped at ``max_content_length``, stops at the cap
    and hands back what it has without complaint, so the views would take the
    first ``limit`` bytes for the whole body. What was read is cached for
    ``request.form``, ``get_data`` and ``get_json``.
    """
    # A multipart field may then be as large as the whole body, not Flask's 500 kB.
    request.max_form_memory_size = limit
    if request.content_length is not None and request.content_length > limit:
        abort(413)
    unsized = request.content_length is None and request.method not in ("GET", "HEAD", "OPTIONS")
    # One byte over the limit tells a body that is too large from one that just fits.
    request.max_content_length = limit + 1 if unsized else limit
    if unsized and len(request.get_data(cache=True)) > limit:
        abort(413)


def _answer_api_routing_errors_in_json(state: BlueprintSetupState) -> None:
    """Make a URL under the blueprint's ``/api`` that has no route (404), or none for its
    method (405), answer in JSON like every other API error.

    Flask looks for the handler of a routing error before it knows the blueprint, so
    only a handler on the app sees these. It keeps to the API's URLs and passes any
    other to the handler the app had before: one for that error, else one for any
    HTTPException, else Flask's own page. (A handler the app registers for 404 or 405
    after the blueprint replaces this one.)
    """
    root = (state.url_prefix or "").rstrip("/") + "/api"
    for exc_class in (NotFound, MethodNotAllowed):
        previous = state.app.error_handler_spec[None][exc_class.code].get(exc_class)
        state.app.register_error_handler(exc_class, _api_routing_error(root, previous))


def _api_routing_error(root: str, previous: Callable[[Any], Any] | None) -> Callable[[Any], Any]:
    def handle(exc: HTTPException) -> Any:
        if request.path != root and not request.path.startswith(root + "/"):
            fallback = previous or _generic_handler(exc)
            return fallback(exc) if fallback is not None else exc
        allowed = sorted(getattr(exc, "valid_methods", None) or [])
        if isinstance(exc, MethodNotAllowed):
            message = (
                f"{request.method} is not allowed on {request.path} (allowed: {', '.join(allowed)})"
            )
        else:
            message = f"no API endpoint {request.path}"
        response = jsonify({"error": message})
        response.status_code = exc.code or 500
        if allowed:
            response.headers["Allow"] = ", ".join(allowed)
        response.headers["Cache-Control"] = "no-store"
        return security.add_security_headers(response)

    return handle


def _generic_handler(exc: HTTPException) -> Callable[[Any], Any] | None:
    """The app's handler registered for a class of errors (not a code) that covers ``exc``."""
    by_class = current_app.error_handler_spec[None][None]
    for cls in type(exc).__mro__:
        if cls in by_class:
            return by_class[cls]
    return None


# -- the blueprint -----------------------------------------------------------------------


def _make_blueprint(dash: Dashboard, name: str) -> Blueprint:
    bp = Blueprint(
        name,
        __name__,
        template_folder="templates",
        static_folder="static",
        static_url_path="/_wfe_static",
    )
    bp.record(_answer_api_routing_errors_in_json)

    def call(work: Callable[[ECSWorkflowEngine], Any]) -> Any:
        return dash.call(work)

    def is_api() -> bool:
        return (request.endpoint or "").partition(".")[2].startswith("api_")

    # -- guards ------------------------------------------------------------------

    @bp.before_request
    def guard() -> Any:
        # The header as sent: Werkzeug's request.host is empty for a bare "::1".
        host = request.headers.get("Host") or request.host
        if not dash.token and not security.host_is_loopback(host):
            return wrong_host(host)
        _refuse_large_body(dash.max_body)
        local = (request.endpoint or "").partition(".")[2]
        via_header = False
        if dash.token and local not in ("static", "login"):
            given, how = security.token_from_request()
            if how == "header":
                if not security.token_matches(given, dash.token):
                    return _unauthorized(given)
                via_header = True
            elif how == "query":
                if not security.token_matches(given, dash.token):
                    return _unauthorized(given)
                security.remember_login(dash.token)
                return redirect(_without_token())
            elif not security.session_logged_in(dash.token):
                return _unauthorized()
        if request.method not in ("GET", "HEAD", "OPTIONS") and not via_header:
            if not security.csrf_ok():
                return _error(403, "CSRF token missing or invalid; reload the page and try again")
        return None

    def wrong_host(host: str) -> Any:
        """400 for a request addressed to a name other than this machine's.

        Without a token only this machine may use the dashboard; a request naming
        another host comes from a page of that site whose name was made to resolve
        here (DNS rebinding). The answer is plain: no page, no session, no CSRF token.
        """
        message = (
            "this dashboard has no access token, so it answers only requests addressed "
            f"to 127.0.0.1, localhost or [::1], not {host[:100]!r}"
        )
        if is_api():
            return jsonify({"error": message}), 400
        return Response(message, 400, mimetype="text/plain")

    def _unauthorized(given: str | None = None) -> Any:
        """401 for the API (and posts), the login page for a browser; ``given`` is a
        token the request presented that does not match."""
        if is_api() or request.method != "GET":
            if given:
                return _error(401, "the access token is not valid")
            return _error(401, "an access token is required (Authorization: Bearer <token>)")
        return redirect(url_for(".login", next=_without_token()))

    @bp.after_request
    def headers(response: Response) -> Response:
        if not (request.endpoint or "").endswith(".static"):
            response.headers.setdefault("Cache-Control", "no-store")
        if partial() and "wfe_inbox" in g:
            # A page refreshing one region updates the inbox badge from this.
            response.headers["X-WFE-Inbox"] = str(g.wfe_inbox)
        return security.add_security_headers(response)

    def _error(status: int, message: str, errors: list[str] | None = None) -> Any:
        if is_api():
            body: dict[str, Any] = {"error": message}
            if errors:
                body["errors"] = errors
            return jsonify(body), status
        # Someone without the token sees no navigation and no store path.
        page = render(
            "error.html", status=status, message=message, errors=errors or [], bare=status == 401
        )
        return page, status

    @bp.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        messages = {
            413: f"the request body is larger than {_size(dash.max_body)}",
            404: "not found",
        }
        return _error(exc.code or 500, messages.get(exc.code or 0, exc.description or str(exc)))

    @bp.errorhandler(BridgeError)
    def bridge_error(exc: BridgeError) -> Any:
        return _error(503, str(exc))

    @bp.errorhandler(_BadInput)
    def bad_input(exc: _BadInput) -> Any:
        # A page's bad query argument (?page=abc) is the client's mistake, not a 500.
        return _error(400, str(exc), exc.errors)

    # -- rendering ---------------------------------------------------------------

    def nav_counts() -> dict[str, int]:
        async def counts(engine: ECSWorkflowEngine) -> dict[TaskStatus, int]:
            store = await engine.get_store()
            return await store.count_tasks()

        try:
            found = call(counts)
        except Exception:  # the navigation must not turn an error page into another error
            return {"inbox": 0}
        return {"inbox": found.get(TaskStatus.WAITING_HUMAN, 0)}

    def render(template: str, **context: Any) -> str:
        context.setdefault("nav", nav_counts() if dash.bridge.started else {"inbox": 0})
        g.wfe_inbox = context["nav"]["inbox"]
        return render_template(
            f"wfe_flaskui/{template}",
            csrf_token=security.csrf_token(),
            refresh_ms=int(dash.refresh_seconds * 1000),
            store_url=dash.store_url,
            worker_running=dash.bridge.worker_running,
            kafka=dash.kafka,
            token_required=bool(dash.token),
            **context,
        )

    def partial() -> bool:
        return request.headers.get(_PARTIAL_HEADER) == "1"

    @bp.app_template_filter("wfe_pretty")
    def pretty_filter(value: Any) -> str:
        return _pretty(value)

    @bp.app_template_filter("wfe_json_preview")
    def json_preview_filter(value: Any) -> dict[str, Any]:
        return _json_preview(value)

    @bp.app_template_filter("wfe_time")
    def time_filter(value: Any) -> Markup:
        if value is None:
            return Markup("")
        return Markup('<time datetime="{}" class="wfe-time">{}</time>').format(
            _iso(value), _short_time(value)
        )

    @bp.app_template_filter("wfe_status")
    def status_filter(value: Any) -> str:
        text = getattr(value, "value", value)
        return _STATUS_LABELS.get(str(text), str(text).replace("_", " "))

    @bp.app_template_filter("wfe_start_note")
    def start_note_filter(task: Task) -> StartNote | None:
        return start_note(task, datetime.now(timezone.utc))

    @bp.app_template_filter("wfe_duration")
    def duration_filter(value: Any) -> str:
        return _duration(value)

    @bp.app_template_filter("wfe_html_id")
    def html_id_filter(value: Any) -> str:
        return _html_id(str(value))

    @bp.app_template_filter("wfe_size")
    def size_filter(value: int) -> str:
        return _size(value)

    # -- pages -------------------------------------------------------------------

    @bp.route("/")
    def tasks() -> Any:
        try:
            statuses = _parse_statuses(request.args.getlist("status"))
        except InvalidTaskError as exc:
            return _error(400, str(exc))
        workflow = request.args.get("workflow") or None
        page = _int_arg("page", 1, 1, 1_000_000)
        size = dash.page_size

        async def load(engine: ECSWorkflowEngine) -> tuple[ops.TaskPage, dict[str, WorkflowSpec]]:
            found = await ops.list_page(engine, statuses, workflow, size, (page - 1) * size)
            return found, await ops.workflows(engine)

        found, specs = call(load)
        status_value = _status_filter(statuses)
        pages = max(1, -(-found.total // size))

        def page_url(number: int) -> str:
            args: dict[str, Any] = {
                "status": status_value,
                "workflow": workflow or "",
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
            "workflows": list(specs),
            "status_order": _STATUS_ORDER,
            "count_total": sum(found.counts.values()),
            "specs": specs,
            "kafka_results": dash.kafka.recent() if dash.kafka is not None else [],
            "types": {t.id: _effective_type(t, specs) for t in found.tasks},
        }
        if partial():
            return render("_tasks_region.html", **context)
        return render("tasks.html", **context)

    def task_context(task: Task, specs: dict[str, WorkflowSpec]) -> dict[str, Any]:
        phase = ops.phase_of(task, specs)
        spec = specs.get(task.workflow_name or "")
        order = spec.classifications if spec else []
        outputs = sorted(
            task.outputs.items(),
            key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order),
        )
        return {
            "task": task,
            "phase": phase,
            "spec": spec,
            "outputs": outputs,
            "timeline": _timeline(task),
            "waiting_since": _waiting_since(task),
            "overdue": _overdue(task),
        }

    def answer_form_for(task: Task, phase: Any) -> AnswerForm:
        schema = phase.input_schema if phase is not None and not task.resume_in_phase else None
        return answer_form(schema)

    @bp.route("/tasks/<task_id>")
    def task(
        task_id: str,
        form: AnswerForm | None = None,
        status: int = 200,
        refused: dict[str, Any] | None = None,
    ) -> Any:
        async def load(engine: ECSWorkflowEngine) -> Any:
            found = await engine.get_task(task_id)
            if found is None:
                return None
            specs = await ops.workflows(engine)
            previews = {}
            for art in found.artifacts:
                if _is_text(art.media_type, art.name):
                    previews[art.name] = await ops.artifact_preview(
                        engine, found, art.name, dash.preview_bytes
                    )
            return found, specs, previews

        loaded = call(load)
        if loaded is None:
            shown = kafka_task(task_id)
            if shown is not None:
                return shown
            if partial():
                # An open page of a task deleted since (wfe purge) says so in place
                # of the task it still shows.
                gone = Response(render("_task_gone.html", task_id=task_id), 404)
                gone.headers[_GONE_HEADER] = "1"
                return gone
            return _error(404, f"no task {task_id!r}")
        found, specs, previews = loaded
        context = task_context(found, specs)
        context["previews"] = previews
        context["refused"] = refused
        if found.status.is_waiting:
            context["form"] = form or answer_form_for(found, context["phase"])
        if partial():
            return render("_task_region.html", **context)
        return render("task.html", **context), status

    def kafka_task(task_id: str) -> Any:
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
                context = task_context(found, call(ops.workflows))
                context.update(previews={}, remote=True)
                name = "_task_region.html" if partial() else "task.html"
                return render(name, **context)
        published = dash.kafka.published(task_id)
        if published is not None:
            context = {"record": published, "topic": published["topic"]}
            name = "_published_region.html" if partial() else "published.html"
            return render(name, **context)
        return None

    @bp.route("/tasks/<task_id>/answer", methods=["POST"])
    def answer(task_id: str) -> Any:
        back = request.form.get("next") or "task"
        # The phase whose question the form showed, and the task's version then: the
        # task may have left it since, or come back to it (a loop) with a new question.
        asked = request.form.get("phase") or None
        read = request.form.get("version")
        if read is not None and not read.isdigit():
            return _error(400, f"the form's version must be a whole number, not {read[:20]!r}")
        version = int(read) if read is not None else None

        async def load(engine: ECSWorkflowEngine) -> Any:
            found = await engine.get_task(task_id)
            return found, await ops.workflows(engine)

        found, specs = call(load)
        if found is None:
            return _error(404, f"no task {task_id!r}")
        if (asked is not None and found.classification != asked) or (
            version is not None and found.version != version
        ):
            return answer_refused(found, specs, asked or found.classification or "", back)
        if not found.status.is_waiting:
            flash(f"Task {task_id[:8]} is {found.status.value}, no longer waiting.", "error")
            return redirect(url_for(".task", task_id=task_id)), 303
        phase = ops.phase_of(found, specs)
        schema = phase.input_schema if phase is not None and not found.resume_in_phase else None
        value, form = parse_answer(schema, request.form)
        if not form.has_errors:
            try:
                resumed = call(
                    lambda engine: engine.resume(task_id, value, phase=asked, version=version)
                )
            except InvalidOutputError as exc:
                form.error = "; ".join(exc.errors) or str(exc)
            except TaskStateError as exc:
                # Someone else's answer (or a deadline) moved the task on since it was loaded.
                now = call(lambda engine: engine.get_task(task_id))
                if now is not None and (
                    (asked is not None and now.classification != asked)
                    or (version is not None and now.version != version)
                ):
                    return answer_refused(now, specs, asked or now.classification or "", back)
                flash(str(exc), "error")
                return redirect(url_for(".task", task_id=task_id)), 303
            else:
                where = (
                    f"moved on to {resumed.classification}"
                    if resumed.status is TaskStatus.PENDING and not resumed.resume_in_phase
                    else resumed.status.value
                )
                flash(f"Answer recorded for task {task_id[:8]}: {where}.", "ok")
                if back == "inbox":
                    return redirect(url_for(".inbox")), 303
                return redirect(url_for(".task", task_id=task_id)), 303
        if back == "inbox":
            return inbox(forms={task_id: form}, status=400)
        return task(task_id, form=form, status=400)

    def answer_refused(now: Task, specs: dict[str, WorkflowSpec], asked: str, back: str) -> Any:
        """409: the answer was for a phase the task has left. The page now shown has
        the new question's form (if any), and what the person typed is shown back."""
        spec = specs.get(now.workflow_name or "")
        old = spec.phase(asked) if spec is not None else None
        if now.classification == asked:
            moved = (
                f"has been answered since you opened it and is back at phase {asked!r} "
                f"({_STATUS_LABELS[now.status.value].lower()}) with a new round of it"
            )
        else:
            moved = (
                f"has moved on from phase {asked!r} to {now.classification!r} "
                f"({_STATUS_LABELS[now.status.value].lower()}) since you opened it"
            )
        refused = {
            "message": f"Task {now.id[:8]} {moved}; your answer was not recorded.",
            "asked": asked,
            "typed": typed_values(old.input_schema if old is not None else None, request.form),
        }
        if back == "inbox":
            return inbox(refused=refused, status=409)
        return task(now.id, refused=refused, status=409)

    def change_task(task_id: str, change: Any, done: str, back: str) -> Any:
        """Apply ``change(engine)`` to a task from a form; flash how it went."""
        try:
            call(change)
        except UnknownTaskError as exc:
            return _error(404, str(exc))
        except TaskStateError as exc:
            flash(str(exc), "error")
        else:
            flash(f"Task {task_id[:8]} {done}.", "ok")
        return redirect(back)

    @bp.route("/tasks/<task_id>/cancel", methods=["POST"])
    def cancel(task_id: str) -> Any:
        back = _safe_next(request.form.get("next_url"), url_for(".task", task_id=task_id))
        return change_task(task_id, lambda engine: engine.cancel(task_id), "cancelled", back)

    @bp.route("/tasks/<task_id>/retry", methods=["POST"])
    def retry(task_id: str) -> Any:
        back = url_for(".task", task_id=task_id)
        return change_task(task_id, lambda engine: engine.retry(task_id), "queued again", back)

    @bp.route("/tasks/<task_id>/artifacts/<path:name>")
    def artifact(task_id: str, name: str) -> Any:
        async def locate(engine: ECSWorkflowEngine) -> Any:
            found = await engine.get_task(task_id)
            if found is None or found.artifact(name) is None:
                return None
            return found.artifact(name), await engine.artifact_path(found, name)

        try:
            located = call(locate)
        except (ArtifactError, InvalidTaskError):
            located = None
        if located is None:
            return _error(404, f"task {task_id!r} has no artifact {name!r}")
        art, path = located
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

    @bp.route("/inbox")
    def inbox(
        forms: dict[str, AnswerForm] | None = None,
        status: int = 200,
        refused: dict[str, Any] | None = None,
    ) -> Any:
        show_all = request.args.get("all") == "1"
        wanted = ops.WAITING if show_all else (TaskStatus.WAITING_HUMAN,)

        async def load(engine: ECSWorkflowEngine) -> Any:
            # Only the oldest few: every open inbox refetches this every few seconds.
            shown = await ops.waiting_tasks(engine, wanted, dash.inbox_size)
            return shown, await ops.workflows(engine)

        (waiting, total), specs = call(load)
        cards = []
        for item in waiting:
            context = task_context(item, specs)
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
            return render("_inbox_region.html", **context)
        return render("inbox.html", **context), status

    @bp.route("/submit", methods=["GET", "POST"])
    def submit() -> Any:
        specs = call(ops.workflows)
        values = {
            "workflow": request.values.get("workflow", ""),
            "data": request.form.get("data", "{\n  \n}"),
            "classification": request.form.get("classification", ""),
            "assigned_to": request.form.get("assigned_to", ""),
            "start_later": request.form.get("start_later", ""),
            "task_id": _form_task_id(request.form.get("task_id")),
        }
        errors: dict[str, str] = {}
        if request.method == "POST" and already_submitted(values["task_id"]):
            # The same form sent again (a double click, a resent POST): show its task.
            flash(f"Task {values['task_id'][:8]} was already submitted; here it is.", "ok")
            return redirect(url_for(".task", task_id=values["task_id"])), 303
        if request.method == "POST":
            data: Any = None
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
            if not errors:
                try:
                    created, published = do_submit(
                        values["workflow"],
                        data,
                        values["classification"] or None,
                        assigned,
                        values["task_id"],
                        run_after,
                    )
                except UnknownWorkflowError as exc:
                    errors["workflow"] = str(exc)
                except InvalidTaskError as exc:
                    message = str(exc)
                    field = "classification" if "classification" in message else "data"
                    errors[field] = message
                except _KafkaDown as exc:
                    errors["form"] = str(exc)
                except BridgeTimeout as exc:
                    errors["form"] = (
                        f"{exc}; the task may still be stored, as {values['task_id']}. "
                        "Sending this form again is safe: it carries that id, and a known "
                        "id is never submitted twice."
                    )
                else:
                    if published is not None:
                        pick_up = (
                            f"a worker will start it at {_short_time(run_after)}"
                            if run_after is not None
                            else "a worker will pick it up"
                        )
                        flash(
                            f"Task {published['id'][:8]} published to Kafka topic "
                            f"{published['topic']}; {pick_up}.",
                            "ok",
                        )
                        return redirect(url_for(".task", task_id=published["id"])), 303
                    assert created is not None
                    note = start_note(created, datetime.now(timezone.utc))
                    when = f"; it {note.label} {_short_time(note.at)}" if note else ""
                    flash(
                        f"Task {created.id[:8]} submitted to {created.workflow_name}{when}.",
                        "ok",
                    )
                    return redirect(url_for(".task", task_id=created.id)), 303
        page = render(
            "submit.html",
            specs=specs,
            values=values,
            errors=errors,
            task_types=[t.value for t in TaskType],
        )
        status = (503 if "form" in errors else 400) if errors else 200
        return page, status

    def already_submitted(task_id: str) -> bool:
        """True when a task with this id is in the store, or this dashboard published it."""
        if dash.kafka is not None and dash.kafka.published(task_id) is not None:
            return True
        return call(lambda engine: engine.get_task(task_id)) is not None

    def do_submit(
        workflow: str | None,
        data: Any,
        classification: str | None,
        assigned: str,
        task_id: str | None = None,
        run_after: datetime | None = None,
    ) -> tuple[Task | None, dict[str, Any] | None]:
        """Store the task, or (with Kafka) publish it: ``(task, None)`` or ``(None, record)``."""
        if dash.kafka is None:
            created = call(
                lambda engine: engine.submit_task(
                    data,
                    workflow,
                    classification=classification,
                    assigned_to=assigned,
                    task_id=task_id,
                    run_after=run_after,
                )
            )
            return created, None
        specs = call(ops.workflows)
        ops.check_submission(specs, workflow, data, classification, assigned, task_id)
        try:
            record = dash.kafka.publish(
                workflow, data, classification, TaskType.parse(assigned).value, task_id, run_after
            )
        except Exception as exc:
            raise _KafkaDown(
                f"could not publish the task to Kafka ({dash.kafka_brokers}): {exc}"
            ) from exc
        return None, record

    @bp.route("/workflows")
    def workflows() -> Any:
        async def load(engine: ECSWorkflowEngine) -> Any:
            specs = await ops.workflows(engine)
            store = await engine.get_store()
            rows = []
            for spec in specs.values():
                by_phase = await store.count_by_phase(spec.name)
                by_status = await store.count_tasks(spec.name)
                rows.append((spec, by_phase, by_status))
            return rows

        rows = call(load)
        cards = []
        for index, (spec, by_phase, by_status) in enumerate(rows):
            link_base = url_for(".tasks", workflow=spec.name)
            unfinished = sum(n for status, n in by_status.items() if not status.is_finished)
            # Tasks submitted without a phase are in none in the store until their
            # first phase ends; counted apart, the phases and the total agree. (Two
            # reads: a task moving between them can make them differ for a moment.)
            unplaced = max(0, unfinished - sum(by_phase.values()))
            cards.append(
                {
                    "spec": spec,
                    "svg": workflow_svg(spec, by_phase, link=_link_to(link_base), uid=f"wf{index}"),
                    "by_phase": by_phase,
                    "by_status": by_status,
                    "active": unfinished,
                    "unplaced": unplaced,
                }
            )
        legend = [
            (t.value if t is not None else "task's own type", fill, stroke)
            for t, (fill, stroke) in TYPE_COLOURS.items()
        ]
        context = {"cards": cards, "legend": legend, "status_order": _STATUS_ORDER}
        if partial():
            return render("_workflows_region.html", **context)
        return render("workflows.html", **context)

    @bp.route("/login", methods=["GET", "POST"])
    def login() -> Any:
        target = _safe_next(request.values.get("next"), url_for(".tasks"))
        error = None
        if not dash.token:
            return redirect(target)
        if request.method == "POST":
            # A pasted token often brings a blank along; blanks are never part of one.
            if security.token_matches((request.form.get("token") or "").strip(), dash.token):
                security.remember_login(dash.token)
                return redirect(target, 303)
            error = "That token is not right."
        page = render("login.html", next=target, error=error, nav={"inbox": 0}, bare=True)
        return page, (401 if error else 200)

    @bp.route("/logout", methods=["POST"])
    def logout() -> Any:
        security.forget_login()
        return redirect(url_for(".login"), 303)

    # -- JSON API ----------------------------------------------------------------

    def body_json() -> Any:
        raw = request.get_data(cache=True)
        if not raw.strip():
            raise _BadInput("the request body must be a JSON object")
        try:
            return parse_json_text(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise _BadInput(f"the request body is not valid JSON: {exc}") from None

    def api_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except _BadInput as exc:
                return _error(400, str(exc), exc.errors)
            except InvalidOutputError as exc:
                return _error(400, getattr(exc, "summary", None) or str(exc), exc.errors)
            except (InvalidTaskError, UnknownWorkflowError, ArtifactError) as exc:
                return _error(400, str(exc))
            except UnknownTaskError as exc:
                return _error(404, str(exc))
            except TaskStateError as exc:
                return _error(409, str(exc))
            except WorkflowError as exc:
                return _error(400, str(exc))
            except _KafkaDown as exc:
                return _error(503, str(exc))

        wrapper.__name__ = fn.__name__
        wrapper.__doc__ = fn.__doc__
        return wrapper

    @bp.route("/api/csrf")
    def api_csrf() -> Any:
        """The session's CSRF token, for the X-CSRF-Token header of later calls."""
        return jsonify({"csrf_token": security.csrf_token(), "header": security.CSRF_HEADER})

    @bp.route("/api/tasks", methods=["GET"])
    @api_errors
    def api_tasks() -> Any:
        statuses = _parse_statuses(request.args.getlist("status"))
        workflow = request.args.get("workflow") or None
        limit = _int_arg("limit", 50, 1, 500)
        offset = _int_arg("offset", 0, 0, 10**9)
        order = request.args.get("order") or "newest"
        if order not in ("newest", "oldest"):
            raise _BadInput(f"order must be newest or oldest, not {order!r}")
        oldest = order == "oldest"
        found = call(lambda e: ops.list_page(e, statuses, workflow, limit, offset, oldest))
        return jsonify(
            {
                "tasks": [_api_task(t) for t in found.tasks],
                "total": found.total,
                "limit": limit,
                "offset": offset,
                "counts": {s.value: n for s, n in found.counts.items()},
            }
        )

    @bp.route("/api/tasks", methods=["POST"])
    @api_errors
    def api_submit() -> Any:
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
        existed = given is not None and call(lambda e: e.get_task(given)) is not None
        # The id is chosen here, not by the engine, so that an answer lost to a
        # timeout can still name the task its write may yet create.
        task_id = given if given is not None else uuid.uuid4().hex
        try:
            created, published = do_submit(
                workflow,
                doc.get("data"),
                doc.get("classification"),
                doc.get("assigned_to") or TaskType.AGENTIC.value,
                task_id,
                run_after,
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

    @bp.route("/api/tasks/<task_id>")
    @api_errors
    def api_task(task_id: str) -> Any:
        found = call(lambda e: e.get_task(task_id))
        if found is not None:
            return jsonify(_api_task(found))
        if dash.kafka is not None:
            result = dash.kafka.result(task_id)
            if result is not None:
                return jsonify({**result, "source": "kafka"})
            published = dash.kafka.published(task_id)
            if published is not None:
                return jsonify(
                    {"id": task_id, "status": "published", "kafka": _kafka_view(published)}
                )
        raise UnknownTaskError(task_id)

    @bp.route("/api/tasks/<task_id>/resume", methods=["POST"])
    @api_errors
    def api_resume(task_id: str) -> Any:
        doc = body_json()
        if not isinstance(doc, dict) or "output" not in doc:
            raise _BadInput('the request body must be a JSON object with an "output" field')
        # The phase the answer is for: refused (409) once the task has moved past it.
        asked = doc.get("phase")
        if asked is not None and not (isinstance(asked, str) and asked):
            raise _BadInput(f'"phase" must be the name of a phase, not {json.dumps(asked)[:40]}')
        # The task's version when the question was read: refused (409) once it changed.
        read = doc.get("version")
        if read is not None and (isinstance(read, bool) or not isinstance(read, int)):
            raise _BadInput(f'"version" must be a whole number, not {json.dumps(read)[:40]}')
        resumed = call(lambda e: e.resume(task_id, doc["output"], phase=asked, version=read))
        return jsonify(_api_task(resumed))

    @bp.route("/api/tasks/<task_id>/cancel", methods=["POST"])
    @api_errors
    def api_cancel(task_id: str) -> Any:
        return jsonify(_api_task(call(lambda e: e.cancel(task_id))))

    @bp.route("/api/tasks/<task_id>/retry", methods=["POST"])
    @api_errors
    def api_retry(task_id: str) -> Any:
        return jsonify(_api_task(call(lambda e: e.retry(task_id))))

    @bp.route("/api/workflows")
    @api_errors
    def api_workflows() -> Any:
        async def load(engine: ECSWorkflowEngine) -> list[dict[str, Any]]:
            store = await engine.get_store()
            docs = []
            for spec in (await ops.workflows(engine)).values():
                doc = workflow_to_dict(spec)
                doc["tasks_by_phase"] = await store.count_by_phase(spec.name)
                docs.append(doc)
            return docs

        return jsonify({"workflows": call(load)})

    @bp.route("/api/kafka/results")
    @api_errors
    def api_kafka_results() -> Any:
        if dash.kafka is None:
            return _error(404, "Kafka is not configured (set KAFKA_BROKERS, install wfe_kafka)")
        return jsonify({"results": dash.kafka.recent()})

    return bp


_TEXT_TYPES = ("application/json", "application/xml", "application/yaml", "application/x-yaml")
_TEXT_SUFFIXES = (".txt", ".md", ".csv", ".json", ".log", ".yaml", ".yml", ".xml", ".tsv", ".py")


def _is_text(media_type: str | None, name: str) -> bool:
    if media_type and (media_type.startswith("text/") or media_type in _TEXT_TYPES):
        return True
    return name.lower().endswith(_TEXT_SUFFIXES)

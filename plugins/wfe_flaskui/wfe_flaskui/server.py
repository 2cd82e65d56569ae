"""Running the dashboard as a server: the address check, the engine set-up, the serve loop."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_plus

from werkzeug.serving import WSGIRequestHandler, make_server

from wfcore import ECSWorkflowEngine, WorkflowError
from wfcore.plugins import report_header
from wfcore.stores.base import shown_url

from .app import DEFAULT_MAX_BODY, Dashboard, create_app
from .security import SHORT_TOKEN, is_loopback

__all__ = [
    "BothAppsError",
    "UnsafeBindError",
    "UnusableStoreError",
    "WorkerStopped",
    "build_dashboard",
    "check_bind",
    "serve",
]

logger = logging.getLogger("wfe_flaskui")


class UnsafeBindError(ValueError):
    """Listening beyond this machine was asked for without an access token."""


class UnusableStoreError(ValueError):
    """A store the dashboard could show nothing of: memory:// without --worker."""


class BothAppsError(ValueError):
    """``worker`` and ``app`` were both given: ``worker`` loads the app already."""


def check_bind(host: str, token: str | None) -> None:
    """Refuse a non-loopback address unless an access token of at least
    :data:`~wfe_flaskui.security.SHORT_TOKEN` characters is set.

    A token of blanks is none: it would let anyone in who sends a blank header. A
    short one is refused too: the backoff after wrong tokens counts per address, so
    an attacker with a few addresses guesses a token of a few characters soon enough.
    On a loopback address any token will do (it is only warned about).
    """
    if is_loopback(host):
        return
    # An empty host is every address of this machine, as 0.0.0.0 is.
    shown = host if host.strip() else f"{host!r} (every address of this machine)"
    token = (token or "").strip()
    if not token:
        raise UnsafeBindError(
            f"refusing to listen on {shown}: other machines could reach the dashboard. "
            "Set WFE_UI_TOKEN to an access token (every request must then present it), "
            "or listen on 127.0.0.1."
        )
    if len(token) < SHORT_TOKEN:
        raise UnsafeBindError(
            f"refusing to listen on {shown} with an access token (WFE_UI_TOKEN) only "
            f"{len(token)} characters long: other machines could guess it. Use "
            f"{SHORT_TOKEN} or more random characters, such as: "
            "python -c 'import secrets; print(secrets.token_urlsafe(24))', "
            "or listen on 127.0.0.1."
        )


def build_dashboard(
    store: str | None = None,
    worker: str | None = None,
    token: str | None = None,
    allow_define: bool | None = None,
    user_header: str | None = None,
    *,
    app: str | None = None,
    max_body: int = DEFAULT_MAX_BODY,
) -> Dashboard:
    """A Dashboard on ``store``; with ``worker`` (``MODULE:ATTR``) it runs that app's engine.

    With ``app`` (``MODULE:ATTR``) it uses that app's engine without running its
    worker: callbacks and hooks run in the process that makes a change, so the
    answers, cancels and retries given in the dashboard then run the app's
    (completion callbacks, its plugins' completed and cancelled hooks), as
    ``wfe resume --app`` does. Not both: ``worker`` loads the app already.

    An app that cannot be loaded is a click.BadParameter naming ``--worker`` (or
    ``--app``); ``worker`` and ``app`` together are a BothAppsError.
    """
    if worker and app:
        raise BothAppsError(
            "give --worker or --app, not both: --worker loads the app already (its "
            "callbacks and hooks run here too); --app is for a dashboard beside `wfe "
            "worker` processes, running none itself"
        )
    spec = worker or app
    if spec:
        from wfcore.cli import load_app

        engine = load_app(spec, param_hint="'--worker'" if worker else "'--app'")
        if store:
            engine.use_store(store)
    else:
        engine = ECSWorkflowEngine(store=store)
    return Dashboard(
        engine,
        run_worker=bool(worker),
        token=token,
        allow_define=allow_define,
        user_header=user_header,
        max_body=max_body,
    )


class WorkerStopped(WorkflowError):
    """The worker ``serve`` ran stopped with an error (a plugin refusing its start, say)."""


def serve(
    host: str = "127.0.0.1",
    port: int = 5000,
    store: str | None = None,
    worker: str | None = None,
    token: str | None = None,
    *,
    app: str | None = None,
    access_log: bool = False,
    allow_define: bool | None = None,
    user_header: str | None = None,
    max_body: int = DEFAULT_MAX_BODY,
    announce: Callable[[str], None] = print,
) -> None:
    """Serve the dashboard until Ctrl-C or SIGTERM, then stop its worker cleanly;
    after a Ctrl-C, the KeyboardInterrupt is raised again once it has stopped.

    :param worker: ``MODULE:ATTR`` of an app whose engine the dashboard uses and
        whose worker it runs (the one-process set-up).
    :param app: ``MODULE:ATTR`` of an app whose engine the dashboard uses without
        running its worker, beside ``wfe worker`` processes: the answers, cancels
        and retries given in the dashboard then run the app's completion callbacks
        and its plugins' hooks (see :func:`build_dashboard`). Not with ``worker``.
    :param token: the access token; None reads ``WFE_UI_TOKEN``. Required, of
        16 characters or more, when ``host`` is not a loopback address.
    :param allow_define: take define_workflow tasks (None: ``WFE_UI_ALLOW_DEFINE``).
    :param user_header: the header an authenticating proxy names each person in
        (None: ``WFE_UI_USER_HEADER``; see :class:`~wfe_flaskui.app.Dashboard`).
    :param max_body: the largest request body taken, in bytes (an answer with its
        file, an upload): larger ones get 413.
    :param announce: called with each line to show as the dashboard starts: a note
        about a store that did not exist (any store whose
        :meth:`~wfcore.stores.base.Store.exists` said so; with ``worker``, that a new
        one was created, as ``wfe worker`` says), the line saying where it listens,
        then (indented) what it does with Kafka and, with ``worker``, what plugins
        report for the engine (``wfe_report_header``). The line saying where it
        listens names the app (``worker`` or ``app``) whose callbacks run here.

    Raises WorkerStopped when the worker stops with an error (which stops the
    dashboard too: it was started to run one), KafkaSettingsError for Kafka
    settings that cannot work, UnsafeBindError, UnusableStoreError (memory://
    without ``worker``), BothAppsError, StoreError when the store cannot tell whether
    it exists (its storage cannot be reached), or OSError when it cannot listen.
    """
    token = (os.environ.get("WFE_UI_TOKEN", "") if token is None else token).strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]  # an IPv6 address as URLs write it ([::1]); sockets take ::1
    check_bind(host, token)
    dashboard = build_dashboard(
        store, worker, token, allow_define, user_header, app=app, max_body=max_body
    )
    if not worker and dashboard.store_url.startswith("memory:"):
        instead = "instead of --app " if app else ""
        raise UnusableStoreError(
            "memory:// lives in this one process: no worker could reach it, so the "
            f"dashboard would show an empty store for good. Give --worker MODULE:ATTR {instead}"
            "to run the engine here too, or use a store the workers share (sqlite:///path; "
            "--store or WFE_STORE)"
        )
    # Asked before the store is opened, since opening makes it (of any kind: the
    # plugin serving the URL answers, through Store.exists()).
    new_store = asyncio.run(dashboard.engine.store_to_create())
    logging.getLogger("werkzeug").setLevel(logging.INFO if access_log else logging.WARNING)
    failed: list[BaseException] = []
    serving: list[Any] = []
    lock = threading.Lock()

    def worker_failed(exc: BaseException) -> None:
        if not isinstance(exc, WorkflowError):
            logger.error("the dashboard's worker stopped with an error", exc_info=exc)
        with lock:
            failed.append(exc)
            running = list(serving)
        for server in running:
            threading.Thread(target=server.shutdown, daemon=True).start()

    dashboard.bridge.on_worker_error = worker_failed
    try:
        flask_app = create_app(dashboard)
    except BaseException:
        dashboard.stop()
        raise
    try:
        server = make_server(
            host, port, flask_app, threaded=True, request_handler=_RedactingRequestHandler
        )
    except BaseException:
        dashboard.stop()
        raise
    with lock:
        serving.append(server)
        if failed:  # before there was a server to stop
            threading.Thread(target=server.shutdown, daemon=True).start()
    previous = previous_int = None
    # Ctrl-C: werkzeug's serve_forever() swallows the KeyboardInterrupt, so it is
    # noted here and raised again once the dashboard has stopped.
    interrupted: list[int] = []
    if threading.current_thread() is threading.main_thread():

        def on_term(signum: int, frame: object) -> None:
            if signum == signal.SIGINT:
                interrupted.append(signum)
            threading.Thread(target=server.shutdown, daemon=True).start()

        previous = signal.signal(signal.SIGTERM, on_term)
        previous_int = signal.signal(signal.SIGINT, on_term)
    if new_store is not None:
        # A mistyped --store or WFE_STORE would otherwise show an empty dashboard
        # without a word. (It is not refused: a dashboard may start before its
        # workers.) Its own worker makes the store, as `wfe worker` would.
        announce(
            f"wfe: created a new store at {new_store.location}"
            if dashboard.bridge.run_worker
            else f"note: no store at {new_store.location} yet; the dashboard made an empty "
            "one (check --store and WFE_STORE if your workers use another)"
        )
    shown_host = f"[{host}]" if ":" in host else host
    if worker:
        mode = f"running the worker of {worker}"
    elif app:
        # Said, since without --app a change made here runs no app's callbacks.
        mode = f"no worker in this process; the callbacks and hooks of {app} run here"
    else:
        mode = "no worker in this process"
    if token:
        mode += "; token required"
    if dashboard.user_header:
        mode += f"; who you are from the {dashboard.user_header} header"
    announce(
        f"wfe dashboard on http://{shown_host}:{server.server_port}/ "
        f"(store {shown_url(dashboard.store_url)}; {mode})"
    )
    for line in _header(dashboard):
        announce(f"  {line}")
    if not is_loopback(host) and not flask_app.config["SESSION_COOKIE_SECURE"]:
        announce(
            "  note: the session cookie is not marked Secure; set WFE_UI_HTTPS=1 when "
            "browsers reach the dashboard over https (through a TLS proxy), as they should"
        )
    try:
        server.serve_forever()
    finally:
        server.server_close()
        announce(_stopping(dashboard))
        dashboard.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if previous_int is not None:
            signal.signal(signal.SIGINT, previous_int)
    if failed:
        raise WorkerStopped(f"the dashboard's worker stopped: {failed[0]}") from failed[0]
    if interrupted:
        raise KeyboardInterrupt


def _redact_token(target: str) -> str:
    """A request target (path and query, as sent) with the value of each ``token``
    query argument replaced by ``***``.

    The query is split as the dashboard reads it (on ``&``, names percent-decoded,
    so ``?%74oken=`` is caught too), not searched as text: a value may hold
    anything once decoded.
    """
    path, mark, query = target.partition("?")
    if not mark:
        return target
    parts = query.split("&")
    for i, part in enumerate(parts):
        name, equals, _value = part.partition("=")
        if equals and unquote_plus(name) == "token":
            parts[i] = f"{name}=***"
    return f"{path}?{'&'.join(parts)}"


#: ``token=`` followed by its value, in a log line's text: the net for lines that
#: quote the request line as it came (one the server could not read, say).
_TOKEN_TEXT = re.compile(r"([?&]token=)[^&\s]*", re.IGNORECASE)

#: The ANSI colour codes Werkzeug puts around some access log lines (redirects,
#: errors). wfe's log lines write control characters out (``\x1b[32m``), so they
#: would reach the terminal as text; the dashboard's lines go without them.
_ANSI_STYLE = re.compile(r"\x1b\[[0-9;]*m")


class _RedactingRequestHandler(WSGIRequestHandler):
    """Werkzeug's request handler, whose log lines (``--access-log``) never hold an
    access token: a link with ``?token=`` (as browsers are given to log in, and API
    clients may use) is logged with ``token=***``. Logs are kept, shipped and read by
    more people than the token is meant for. Nor colour codes (see ``_ANSI_STYLE``)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        target = getattr(self, "path", None)  # absent when the request line was bad
        if target is None:
            super().log_request(code, size)
            return
        self.path = _redact_token(target)
        try:
            super().log_request(code, size)
        finally:
            self.path = target

    def log(self, type: str, message: str, *args: Any) -> None:
        line = _ANSI_STYLE.sub("", message % args if args else message)
        super().log(type, "%s", _TOKEN_TEXT.sub(r"\1***", line))


def _stopping(dashboard: Dashboard) -> str:
    """The line ``wfe ui`` prints as it starts to stop, as ``wfe worker`` does: what
    becomes of the phases its worker is running."""
    engine = dashboard.engine
    running = engine.active_count if dashboard.bridge.worker_running else 0
    if not running:
        return "stopping the dashboard"
    return (
        f"stopping the dashboard: {running} running phase(s) get up to "
        f"{engine.shutdown_timeout:g}s to finish, then go back to the store"
    )


def _header(dashboard: Dashboard) -> list[str]:
    """What the dashboard does with Kafka, then, when it runs the engine's worker, what
    plugins report for that engine (as ``wfe worker`` prints them). Without a worker
    the engine never runs here, so what plugins would do for it is not said."""
    lines = []
    kafka = dashboard.kafka
    if kafka is not None:
        lines.append(f"dashboard: {kafka.summary}")
    if dashboard.bridge.run_worker:
        lines.extend(report_header(dashboard.engine))
    return lines

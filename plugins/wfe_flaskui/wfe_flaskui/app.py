"""The dashboard: the Dashboard object, its Flask blueprint, and create_app.

The blueprint is put together here from the parts that serve it: the access guard
and login (:mod:`~wfe_flaskui.access`), the pages (:mod:`~wfe_flaskui.pages`), the
forms that change a task (:mod:`~wfe_flaskui.actions`), the submit page
(:mod:`~wfe_flaskui.submit`), the JSON API (:mod:`~wfe_flaskui.api`), error answers
(:mod:`~wfe_flaskui.errors`) and the template filters (:mod:`~wfe_flaskui.display`).
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import secrets
import threading
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Flask
from flask.blueprints import BlueprintSetupState

from wfcore import ECSWorkflowEngine, WorkflowError

from . import views
from .access import add_access
from .actions import add_actions
from .api import add_api
from .bridge import EngineBridge
from .display import add_filters
from .errors import add_error_handlers
from .pages import add_pages
from .security import SHORT_TOKEN, TokenBackoff, header_name
from .submit import add_submit

__all__ = ["Dashboard", "create_app", "short_token_warning"]

logger = logging.getLogger("wfe_flaskui")


#: Default request body limit (bytes); larger bodies get 413.
DEFAULT_MAX_BODY = 1024 * 1024


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
    :param timeout: how long a request waits for the engine (a store write held up
        by another process's lock, say) before it answers 503, in seconds.
    :param allow_define: take ``define_workflow`` tasks (from the submit form and the
        API); None reads ``WFE_UI_ALLOW_DEFINE`` (``1``/``0``, default no). A workflow
        defined at run time stays in the store, and in every menu, for good.
    :param user: who the person behind a request is, for an app that mounts the
        dashboard behind its own login: a function of no arguments, called in each
        request, returning their name (``lambda: flask_login.current_user.name``) or
        None. Answers, cancels and retries record it in the task's history (``by``).
    :param user_header: the request header holding that name, set by an
        authenticating proxy in front of the dashboard (``X-Forwarded-User``); a
        request without it is refused (401), having bypassed the proxy. None reads
        ``WFE_UI_USER_HEADER``, ``""`` turns it off. Not with ``user``.

    Mount it in any Flask app::

        dashboard = Dashboard(store="sqlite:////srv/wfe/wfe.db")
        app.register_blueprint(dashboard.blueprint, url_prefix="/workflows")

    The engine starts with the first request (or :meth:`start`); with
    ``run_worker`` it starts as the blueprint is registered, so that the worker runs
    whether or not anyone opens the dashboard. It stops as the interpreter exits (or
    at :meth:`stop`), closing its store cleanly.
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
        timeout: float = 30.0,
        allow_define: bool | None = None,
        user: Callable[[], str | None] | None = None,
        user_header: str | None = None,
    ) -> None:
        _check_settings(
            timeout=timeout,
            max_body=max_body,
            page_size=page_size,
            inbox_size=inbox_size,
            refresh_seconds=refresh_seconds,
            preview_bytes=preview_bytes,
        )
        self.user = user
        self.user_header = _user_header(user_header)
        if user is not None and not callable(user):
            raise TypeError(f"user must be a function of no arguments, not {user!r:.60}")
        if user is not None and self.user_header:
            where = "user_header" if user_header else "WFE_UI_USER_HEADER"
            raise ValueError(
                f"give the dashboard user= or {where}, not both: each says who the person "
                "behind a request is"
            )
        self.engine = engine if engine is not None else ECSWorkflowEngine(store=store)
        self.bridge = EngineBridge(self.engine, run_worker=run_worker, timeout=float(timeout))
        # Blanks around a token are not part of it (clients strip them from headers),
        # and a token of blanks alone is none.
        self.token = (os.environ.get("WFE_UI_TOKEN", "") if token is None else token).strip()
        warning = short_token_warning(self.token)
        if warning:
            logger.warning("%s", warning)
        #: Wrong access tokens per client address, which shut it out for a while.
        self.backoff = TokenBackoff()
        self.allow_define = (
            _flag_from_env("WFE_UI_ALLOW_DEFINE") if allow_define is None else allow_define
        )
        self.max_body = max_body
        self.page_size = page_size
        self.inbox_size = inbox_size
        self.refresh_seconds = refresh_seconds
        self.preview_bytes = preview_bytes
        self._brokers_from_env = kafka_brokers is None
        self.kafka_brokers = (
            os.environ.get("KAFKA_BROKERS", "") if kafka_brokers is None else kafka_brokers
        )
        self.kafka: Any = None
        self._start_lock = threading.Lock()
        # Holds this dashboard for the exit hook while it runs (emptied by stop).
        self._at_exit: list[Dashboard] = []
        self.blueprint = _make_blueprint(self, name)

    @property
    def store_url(self) -> str:
        """The URL of the store the dashboard shows."""
        return self.engine.store_url

    def start(self) -> Dashboard:
        """Open the store (and start the worker, and Kafka, when configured); idempotent.

        Kafka settings that cannot work raise :class:`~wfe_flaskui.kafka.KafkaSettingsError`
        (a WorkflowError naming the setting) before anything starts; a store that
        cannot be opened raises what opening it raises. Either way nothing is left
        running.
        """
        with self._start_lock:
            if self.bridge.started:
                return self
            interface = None
            if self.kafka_brokers:
                from .kafka import kafka_interface

                interface = kafka_interface(self.kafka_brokers, self._brokers_from_env)
            self.bridge.start()
            try:
                self._stop_at_exit()
                if interface is not None:
                    from .kafka import KafkaLink

                    link = KafkaLink(self, interface)
                    link.start()
                    self.kafka = link
            except BaseException:
                self.stop()
                raise
        return self

    def stop(self) -> None:
        """Stop the worker (if any), Kafka and the engine's loop; safe to call twice."""
        self._at_exit.clear()
        if self.kafka is not None:
            self.kafka.stop()
            self.kafka = None
        self.bridge.stop()

    def _stop_at_exit(self) -> None:
        """Have the interpreter stop this dashboard as it exits, unless stop() came first.

        The hook runs with threading's exit hooks, as the main thread ends and
        before concurrent.futures shuts its thread pools down: closing the store
        hands work to the loop's default executor, which refuses it after that (so
        an ``atexit`` hook would be too late). Where Python has no such hook, atexit
        it is.
        """
        if self._at_exit:
            return
        self._at_exit.append(self)
        held = self._at_exit

        def stop_at_exit() -> None:
            for dashboard in list(held):
                dashboard.stop()

        register = getattr(threading, "_register_atexit", None)
        try:
            if register is None:
                raise RuntimeError("no threading exit hooks")
            register(stop_at_exit)
        except RuntimeError:  # none, or the interpreter is already exiting
            atexit.register(stop_at_exit)

    def __enter__(self) -> Dashboard:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def call(self, work: Any, timeout: float | None = None) -> Any:
        """Run a coroutine (or ``fn(engine)``) on the engine's loop and return its result."""
        if not self.bridge.started:
            self.start()
        return self.bridge.call(work, timeout)


def short_token_warning(token: str) -> str | None:
    """What to say about an access token too short to resist guessing (None: nothing)."""
    if not token or len(token) >= SHORT_TOKEN:
        return None
    return (
        f"the access token (WFE_UI_TOKEN) is only {len(token)} characters long; use "
        f"{SHORT_TOKEN} or more random ones, such as: "
        "python -c 'import secrets; print(secrets.token_urlsafe(24))'"
    )


def _check_settings(
    *,
    timeout: Any,
    max_body: Any,
    page_size: Any,
    inbox_size: Any,
    refresh_seconds: Any,
    preview_bytes: Any,
) -> None:
    """Refuse, naming it, a setting no page could work with: each would otherwise
    fail every request that uses it (a 500), or the first one."""
    for name, value in (("timeout", timeout), ("refresh_seconds", refresh_seconds)):
        if not (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and math.isfinite(value)
            and value > 0
        ):
            raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
    for name, value, least, what in (
        ("max_body", max_body, 1, "bytes"),
        ("page_size", page_size, 1, "tasks"),
        ("inbox_size", inbox_size, 1, "tasks"),
        ("preview_bytes", preview_bytes, 0, "bytes"),
    ):
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= least):
            raise ValueError(
                f"{name} must be a whole number of {what}, {least} or more, not {value!r}"
            )


def _user_header(given: str | None) -> str:
    """The header naming who sends a request ("" for none): ``given``, else
    ``WFE_UI_USER_HEADER``; blanks alone are none."""
    if given is not None:
        blank = isinstance(given, str) and not given.strip()
        return "" if blank else header_name(given, "user_header")
    value = os.environ.get("WFE_UI_USER_HEADER", "")
    if not value.strip():
        return ""
    try:
        return header_name(value, "WFE_UI_USER_HEADER")
    except ValueError as exc:
        raise WorkflowError(str(exc)) from None


def _flag_from_env(name: str) -> bool:
    """A yes/no setting from the environment: unset or empty is no."""
    value = os.environ.get(name, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise WorkflowError(f"{name} must be 1 or 0 (true or false), not {value!r}")


def create_app(
    dashboard: Dashboard | ECSWorkflowEngine | str | None = None,
    *,
    run_worker: bool = False,
    token: str | None = None,
    secret_key: str | None = None,
    max_body: int = DEFAULT_MAX_BODY,
    start: bool = True,
    https: bool | None = None,
) -> Flask:
    """A Flask app serving the dashboard at ``/``.

    :param dashboard: a Dashboard, an engine, or a store URL (None: the default store).
    :param run_worker: run the engine's worker in this process too (ignored when a
        Dashboard is given).
    :param token: the access token (see :class:`Dashboard`).
    :param secret_key: signs the session cookie; None reads ``WFE_UI_SECRET``, else a
        random key for this process.
    :param start: open the store now, so that a bad store URL fails here.
    :param https: browsers reach the dashboard over https (a TLS proxy in front), so
        the session cookie is marked ``Secure`` and never sent over plain http;
        None reads ``WFE_UI_HTTPS`` (``1``/``0``).

    ``app.extensions["wfe_flaskui"]`` is the Dashboard; call its ``stop()`` when done.
    """
    if not isinstance(dashboard, Dashboard):
        if isinstance(dashboard, ECSWorkflowEngine):
            dashboard = Dashboard(dashboard, run_worker=run_worker, token=token, max_body=max_body)
        else:
            dashboard = Dashboard(
                store=dashboard, run_worker=run_worker, token=token, max_body=max_body
            )
    secure = _flag_from_env("WFE_UI_HTTPS") if https is None else https
    app = Flask("wfe_flaskui", static_folder=None)
    app.config.update(
        SECRET_KEY=secret_key or os.environ.get("WFE_UI_SECRET") or secrets.token_hex(32),
        MAX_CONTENT_LENGTH=dashboard.max_body,
        SESSION_COOKIE_NAME="wfe_session",
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SECURE=secure,
    )
    # Started below (or, with start=False, at the first request), not as it registers.
    app.register_blueprint(dashboard.blueprint, wfe_start=False)
    app.extensions["wfe_flaskui"] = dashboard
    if start:
        dashboard.start()
    return app


def _start_on_register(dash: Dashboard, state: BlueprintSetupState) -> None:
    """Start a dashboard that runs its engine's worker as its blueprint is registered
    (``register_blueprint(..., wfe_start=False)`` leaves it to the caller): the worker
    has tasks to run, delayed tasks to start and deadlines to keep whether or not
    anyone opens the dashboard. Without a worker the store opens at the first request."""
    if dash.bridge.run_worker and state.options.get("wfe_start", True):
        dash.start()


def _make_blueprint(dash: Dashboard, name: str) -> Blueprint:
    """The dashboard's blueprint: its guard, pages, forms, API, error answers and filters."""
    bp = Blueprint(
        name,
        __name__,
        template_folder="templates",
        static_folder="static",
        static_url_path="/_wfe_static",
    )
    bp.record_once(lambda state: _start_on_register(dash, state))
    add_error_handlers(bp, dash)
    add_access(bp, dash)
    bp.after_request(views.headers)
    add_filters(bp)
    add_pages(bp, dash)
    add_actions(bp, dash)
    add_submit(bp, dash)
    add_api(bp, dash)
    return bp

"""What every view of the dashboard shares: its route, the page it renders (or just the
region a refreshing page asks for), and the headers every answer gets.

A view is a plain function whose first argument is the :class:`~wfe_flaskui.app.Dashboard`
it serves; :func:`route` binds it to that dashboard under a URL of the blueprint.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, g, render_template, request

from wfcore import ECSWorkflowEngine, TaskStatus
from wfcore.stores.base import shown_url

from . import security

if TYPE_CHECKING:
    from .app import Dashboard

__all__ = ["acting_user", "headers", "nav_counts", "partial", "render", "route"]

#: Sent by a page that refreshes one region of itself: the answer is that region only.
_PARTIAL_HEADER = "X-WFE-Partial"
#: Why such a refresh failed: the error message, as a JSON string.
_ERROR_HEADER = "X-WFE-Error"
#: The most of that message the header carries (a header is no place for a page).
_ERROR_SHOWN = 1000


def route(
    bp: Blueprint,
    dash: Dashboard,
    rule: str,
    view: Callable[..., Any],
    methods: list[str] | None = None,
) -> None:
    """Serve ``view(dash, **url_arguments)`` at ``rule``; the endpoint is the view's name."""

    @functools.wraps(view)
    def bound(**url_arguments: Any) -> Any:
        return view(dash, **url_arguments)

    bp.add_url_rule(rule, view.__name__, bound, methods=methods)


def partial() -> bool:
    """True when the page asks for just its refreshing region."""
    return request.headers.get(_PARTIAL_HEADER) == "1"


def acting_user() -> str | None:
    """Who sends the request, as the access guard found out (None: not known). Answers,
    cancels and retries pass it to the engine as ``by``."""
    name = g.get("wfe_user")
    return name if isinstance(name, str) else None


def render(dash: Dashboard, template: str, **context: Any) -> str:
    """A template with what the layout needs: navigation counts, CSRF token, settings."""
    context.setdefault("nav", nav_counts(dash) if dash.bridge.started else {"inbox": 0})
    g.wfe_inbox = context["nav"]["inbox"]
    # The bare layout (login, errors before it) tells nothing about Kafka either.
    kafka = None if context.get("bare") else dash.kafka
    trouble = kafka.trouble() if kafka is not None else None
    if kafka is not None:
        g.wfe_kafka = trouble or {}
    return render_template(
        f"wfe_flaskui/{template}",
        csrf_token=security.csrf_token(),
        refresh_ms=int(dash.refresh_seconds * 1000),
        # Every page shows it: a password in a database server's URL must not.
        store_url=shown_url(dash.store_url),
        worker_running=dash.bridge.worker_running,
        kafka=kafka,
        kafka_trouble=trouble,
        token_required=bool(dash.token),
        user_name=acting_user(),
        max_body=dash.max_body,
        **context,
    )


def nav_counts(dash: Dashboard) -> dict[str, int]:
    async def counts(engine: ECSWorkflowEngine) -> dict[TaskStatus, int]:
        store = await engine.get_store()
        return await store.count_tasks()

    try:
        found = dash.call(counts)
    except Exception:  # the navigation must not turn an error page into another error
        return {"inbox": 0}
    return {"inbox": found.get(TaskStatus.WAITING_HUMAN, 0)}


def headers(response: Response) -> Response:
    """Every answer of the blueprint: no caching (bar static files), the inbox count and
    Kafka's state for a refreshing region, and the security headers."""
    if not (request.endpoint or "").endswith(".static"):
        response.headers.setdefault("Cache-Control", "no-store")
    if partial() and "wfe_inbox" in g:
        # A page refreshing one region updates the inbox badge from this.
        response.headers["X-WFE-Inbox"] = str(g.wfe_inbox)
    if partial() and "wfe_kafka" in g:
        # ... and the Kafka chip from this: {} while Kafka answers, else its trouble
        # (JSON with non-ASCII escaped, as a header must be).
        response.headers["X-WFE-Kafka"] = json.dumps(g.wfe_kafka)
    if partial() and response.status_code >= 400 and "wfe_error" in g:
        # ... and, when the refresh failed, its notice says why (the store's words).
        response.headers[_ERROR_HEADER] = json.dumps(str(g.wfe_error)[:_ERROR_SHOWN])
    return security.add_security_headers(response)

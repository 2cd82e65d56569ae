"""How the dashboard answers an error: a page for a browser, and ``{"error": message}``
(plus ``"errors"``) for the JSON API.

The blueprint's handlers cover errors raised by its views; an API URL with no route
(404) or none for its method (405) is caught by a handler on the app instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flask import Blueprint, current_app, g, jsonify, request
from flask.blueprints import BlueprintSetupState
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from wfcore import StoreError

from . import security
from .bridge import BridgeError
from .display import _size
from .views import render

if TYPE_CHECKING:
    from .app import Dashboard

__all__ = ["add_error_handlers", "is_api", "store_failed"]

logger = logging.getLogger("wfe_flaskui")


class _BadInput(ValueError):
    def __init__(self, message: str, errors: list[str] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


def is_api() -> bool:
    """True when the request is for one of the API's endpoints (``api_...``)."""
    return (request.endpoint or "").partition(".")[2].startswith("api_")


def _error(dash: Dashboard, status: int, message: str, errors: list[str] | None = None) -> Any:
    # A page refreshing itself shows this in its notice (see views.headers).
    g.wfe_error = message
    if is_api():
        body: dict[str, Any] = {"error": message}
        if errors:
            body["errors"] = errors
        return jsonify(body), status
    # Someone without the token (an error before login, say) sees the bare layout of
    # the login page: no navigation, inbox count, store path or "Log out".
    bare = status == 401 or not security.signed_in(dash.token)
    extra: dict[str, Any] = {"nav": {"inbox": 0}} if bare else {}
    page = render(
        dash,
        "error.html",
        status=status,
        message=message,
        errors=errors or [],
        bare=bare,
        **extra,
    )
    return page, status


def add_error_handlers(bp: Blueprint, dash: Dashboard) -> None:
    """Answer the errors of ``bp``'s views, and the API's routing errors, as above."""
    bp.record(_answer_api_routing_errors_in_json)

    @bp.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        messages = {
            413: f"the request body is larger than {_size(dash.max_body)}",
            404: "not found",
        }
        return _error(
            dash, exc.code or 500, messages.get(exc.code or 0, exc.description or str(exc))
        )

    @bp.errorhandler(BridgeError)
    def bridge_error(exc: BridgeError) -> Any:
        return _error(dash, 503, str(exc))

    @bp.errorhandler(StoreError)
    def store_error(exc: StoreError) -> Any:
        return _error(dash, 503, store_failed(exc))

    @bp.errorhandler(_BadInput)
    def bad_input(exc: _BadInput) -> Any:
        # A page's bad query argument (?page=abc) is the client's mistake, not a 500.
        return _error(dash, 400, str(exc), exc.errors)


def store_failed(exc: StoreError) -> str:
    """Log that the store failed a request (a full disk, its file deleted, a database
    server away) and return what the person is told: its own words, which name the
    store and the trouble. The request was not at fault, so it is answered with 503
    (the same request may work once the store does), never as bad input or a crash."""
    logger.warning("the store failed %s %s: %s", request.method, request.path, exc)
    return str(exc)


def _answer_api_routing_errors_in_json(state: BlueprintSetupState) -> None:
    """Make a URL under the blueprint's ``/api`` that has no route (404), or none for its
    method (405), answer in JSON like every other API error.

    Flask looks for the handler of a routing error before it knows the blueprint, so
    only a handler on the app sees these. It keeps to the API's URLs and passes any
    other to the handler the app had before: one for that error, else one for any
    HTTPException, else Flask's own page: for a URL under the dashboard's prefix, with
    the security headers of every dashboard page. (A handler the app registers for
    404 or 405 after the blueprint replaces this one.)
    """
    prefix = (state.url_prefix or "").rstrip("/")
    for exc_class in (NotFound, MethodNotAllowed):
        previous = state.app.error_handler_spec[None][exc_class.code].get(exc_class)
        state.app.register_error_handler(exc_class, _api_routing_error(prefix, previous))


def _api_routing_error(prefix: str, previous: Callable[[Any], Any] | None) -> Callable[[Any], Any]:
    root = prefix + "/api"

    def handle(exc: HTTPException) -> Any:
        if request.path != root and not request.path.startswith(root + "/"):
            fallback = previous or _generic_handler(exc)
            if fallback is not None:
                return fallback(exc)
            if prefix and request.path != prefix and not request.path.startswith(prefix + "/"):
                return exc  # the app's own URL: not the dashboard's to answer
            # Flask's own page, with the headers of every dashboard page.
            response = exc.get_response()
            response.headers["Cache-Control"] = "no-store"
            return security.add_security_headers(response)
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

"""Who may use the dashboard: the guard every request passes (the ``Host`` check without
a token, the body limit, the access token, who the person is, CSRF), and the login and
logout pages.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from flask import (
    Blueprint,
    Response,
    current_app,
    g,
    jsonify,
    redirect,
    request,
    session,
    url_for,
)

from . import security
from .errors import _error, is_api
from .security import _refuse_large_body, _safe_next
from .views import partial, render, route

if TYPE_CHECKING:
    from .app import Dashboard

__all__ = [
    "NO_SECRET_KEY",
    "WRONG_TOKEN",
    "add_access",
    "guard",
    "login",
    "logout",
    "no_secret_key",
    "wrong_host",
]

#: What the login page says about a token that does not match (typed or in a link).
WRONG_TOKEN = "That token is not right."
#: Session key: a ``?token=`` link that did not match sent the browser to log in.
_WRONG_TOKEN_KEY = "wfe_wrong_token"
#: Why every request fails in an app without a secret key.
NO_SECRET_KEY = (
    "the Flask app serving this dashboard has no secret key, and the dashboard keeps "
    "its CSRF token (and a login) in the session, which needs one: set app.secret_key "
    "(or app.config['SECRET_KEY']) to a long random value"
)

logger = logging.getLogger("wfe_flaskui")


def add_access(bp: Blueprint, dash: Dashboard) -> None:
    """Guard every request to ``bp``, and serve ``/login`` and ``/logout``."""
    bp.before_request(lambda: guard(dash))
    route(bp, dash, "/login", login, ["GET", "POST"])
    route(bp, dash, "/logout", logout, ["POST"])


def guard(dash: Dashboard) -> Any:
    """Run before every request: None lets it through, anything else is the answer."""
    if not current_app.secret_key:
        return no_secret_key()
    # The header as sent: Werkzeug's request.host is empty for a bare "::1".
    host = request.headers.get("Host") or request.host
    if not dash.token and not security.host_is_loopback(host):
        return wrong_host(host)
    _refuse_large_body(dash.max_body)
    local = (request.endpoint or "").partition(".")[2]
    via_header = False
    if dash.token and local not in ("static", "login"):
        given, how = security.token_from_request()
        if how:
            shut_out = _shut_out(dash)
            if shut_out is not None:
                return shut_out
        if how == "header":
            if not security.token_matches(given, dash.token):
                return _unauthorized(dash, given)
            via_header = True
        elif how == "query":
            if not security.token_matches(given, dash.token):
                return _unauthorized(dash, given)
            if is_api():
                # An API client is answered, not sent to the URL without the token with
                # a session cookie it may not keep; the token in the URL counts as a
                # header would.
                via_header = True
            else:
                security.remember_login(dash.token)
                return redirect(_without_token())
        elif not security.session_logged_in(dash.token):
            return _unauthorized(dash)
    if local != "static":
        unknown = _identify(dash)
        if unknown is not None:
            return unknown
    if request.method not in ("GET", "HEAD", "OPTIONS") and not via_header:
        if not security.csrf_ok():
            return _error(dash, 403, _csrf_refusal(dash))
    return None


def _identify(dash: Dashboard) -> Any:
    """Find out who sends the request, for ``views.acting_user()`` (None: not known,
    or the dashboard is not told); the 401 answer when it cannot be found out.

    With ``user_header`` the authenticating proxy in front of the dashboard says it,
    and a request without that header reached the dashboard some other way: it is
    refused rather than served as nobody's.
    """
    g.wfe_user = None
    if dash.user_header:
        raw = request.headers.get(dash.user_header, "")
        if not raw.strip():
            return _error(
                dash,
                401,
                f"this dashboard expects the authenticating proxy in front of it to say "
                f"who you are in the {dash.user_header} header, and this request has "
                "none: it did not come through the proxy (open the dashboard at the "
                "proxy's address)",
            )
        source = f"the {dash.user_header} header"
        try:
            g.wfe_user = security.user_name(_header_text(raw), source)
        except ValueError as exc:
            return _error(dash, 401, str(exc))
    elif dash.user is not None:
        name = dash.user()
        if name is not None:
            try:
                g.wfe_user = security.user_name(name, "what the dashboard's user function returned")
            except ValueError as exc:
                return _error(dash, 401, str(exc))
    return None


def _header_text(raw: str) -> str:
    """A header's value as the proxy wrote it: WSGI hands header values over decoded
    as Latin-1, and a proxy sends a name with accents in UTF-8."""
    try:
        return raw.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return raw


def _csrf_refusal(dash: Dashboard) -> str:
    """Why a request that changes something was refused for want of a CSRF token, in
    words for whoever sent it: a person's page, or an API client."""
    if not is_api():
        return "CSRF token missing or invalid; reload the page and try again"
    fetch = (
        f"GET {url_for('.api_csrf')} (keeping the session cookie it sets) and send its "
        f"csrf_token in the {security.CSRF_HEADER} header"
    )
    if dash.token:
        return (
            "an API call that changes something needs either the access token "
            f"(Authorization: Bearer <token>) or, in a logged-in session, a CSRF token: {fetch}"
        )
    given = security.token_from_request()[1] == "header"
    return (
        "this dashboard has no access token"
        + (", so an Authorization or X-WFE-Token header counts for nothing" if given else "")
        + f"; an API call that changes something needs the CSRF token: {fetch}"
    )


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


def no_secret_key() -> Any:
    """500 saying what is missing, for every request of an app without a secret key
    (the error page would need the session too)."""
    if not current_app.extensions.get("wfe_flaskui_no_secret_logged"):
        current_app.extensions["wfe_flaskui_no_secret_logged"] = True
        logger.error("%s", NO_SECRET_KEY)
    if is_api():
        return jsonify({"error": NO_SECRET_KEY}), 500
    return Response(NO_SECRET_KEY, 500, mimetype="text/plain")


def _client() -> str:
    return request.remote_addr or ""


def _shut_out(dash: Dashboard) -> Any:
    """429 while the client's address is shut out for wrong tokens, else None."""
    wait = dash.backoff.wait(_client())
    if not wait:
        return None
    answer = _error(dash, 429, _too_many(wait))
    response = current_app.make_response(answer)
    response.headers["Retry-After"] = security.TokenBackoff.retry_after(wait)
    return response


def _too_many(wait: float) -> str:
    return (
        "too many wrong access tokens from this address; try again in "
        f"{security.TokenBackoff.retry_after(wait)} s"
    )


def _unauthorized(dash: Dashboard, given: str | None = None) -> Any:
    """401 for the API (and posts), the login page for a browser; ``given`` is a
    token the request presented that does not match (the login page then says so,
    and the client's address counts one more wrong token)."""
    if given:
        dash.backoff.failed(_client())
    if partial():
        # A live page refreshing itself: it tells the person to log in again.
        refused = Response("", 401)
        refused.headers["X-WFE-Login"] = url_for(".login")
        return refused
    if is_api() or request.method != "GET":
        if given:
            return _error(dash, 401, "the access token is not valid")
        return _error(dash, 401, "an access token is required (Authorization: Bearer <token>)")
    if given:
        session[_WRONG_TOKEN_KEY] = True
    return redirect(url_for(".login", next=_without_token()))


def _without_token() -> str:
    """The request's path (quoted again) and query, minus a ``token`` argument."""
    args = [(k, v) for k, v in request.args.items(multi=True) if k != "token"]
    # request.path is decoded: a %0A in it would be a newline in a Location header.
    return quote(request.path, safe="/") + (f"?{urlencode(args)}" if args else "")


def login(dash: Dashboard) -> Any:
    target = _safe_next(request.values.get("next"), url_for(".tasks"))
    error = None
    status = 200
    if not dash.token:
        return redirect(target)
    if session.pop(_WRONG_TOKEN_KEY, False):
        # A link's ?token= that did not match brought the browser here.
        error, status = WRONG_TOKEN, 401
    wait = 0.0
    if request.method == "POST":
        wait = dash.backoff.wait(_client())
        # A pasted token often brings a blank along; blanks are never part of one.
        given = (request.form.get("token") or "").strip()
        if wait:
            error, status = _too_many(wait).capitalize() + ".", 429
        elif security.token_matches(given, dash.token):
            security.remember_login(dash.token)
            return redirect(target, 303)
        else:
            dash.backoff.failed(_client())
            error, status = WRONG_TOKEN, 401
    page = render(dash, "login.html", next=target, error=error, nav={"inbox": 0}, bare=True)
    response = current_app.make_response((page, status))
    if wait:
        response.headers["Retry-After"] = security.TokenBackoff.retry_after(wait)
    return response


def logout(dash: Dashboard) -> Any:
    security.forget_login()
    return redirect(url_for(".login"), 303)

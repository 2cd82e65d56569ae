"""The dashboard's request guards: access token, CSRF tokens, body limit, safe redirects and
security headers."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import re
import secrets
import socket
import threading
import time
import unicodedata
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlsplit

from flask import abort, current_app, request, session
from werkzeug.wrappers import Response

from wfcore.model import MAX_ACTOR_CHARS, actor_name

__all__ = [
    "CSRF_FIELD",
    "CSRF_HEADER",
    "SHORT_TOKEN",
    "TokenBackoff",
    "csrf_ok",
    "csrf_token",
    "header_name",
    "host_is_loopback",
    "is_loopback",
    "signed_in",
    "token_from_request",
    "token_matches",
    "user_name",
]

#: The hidden form field that carries the CSRF token.
CSRF_FIELD = "csrf_token"
#: The header that carries the CSRF token on JSON API calls.
CSRF_HEADER = "X-CSRF-Token"
_CSRF_KEY = "wfe_csrf"
_AUTH_KEY = "wfe_auth"
#: An access token shorter than this is warned about when the dashboard starts, and
#: refused by ``wfe ui`` listening beyond this machine.
SHORT_TOKEN = 16

#: Served with every dashboard page: nothing loads from anywhere but the app.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (127.0.0.0/8, ::1, localhost),
    also written as the system takes it (``127.1``, ``0x7f.1``)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        return ipaddress.ip_address(socket.inet_aton(host.strip())).is_loopback
    except (OSError, ValueError):
        return False


def host_is_loopback(host: str) -> bool:
    """True when a request's ``Host`` names this machine: ``localhost`` or a loopback
    address (``127.0.0.1``, ``[::1]``, ``::1``), with or without a port.

    A page of another site can reach a loopback-only dashboard through DNS rebinding
    (its name made to resolve to 127.0.0.1), but its requests still carry that name.
    """
    name = host.strip().lower()
    port = ""
    if name.startswith("["):
        name, bracket, rest = name[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return False
        port = rest[1:]
    elif name.count(":") == 1:
        name, _, port = name.partition(":")
    if port and not (port.isascii() and port.isdigit()):
        return False
    return name != "" and is_loopback(name)


#: An HTTP header's name: a token of RFC 9110 (letters, digits and ``!#$%&'*+-.^_`|~``).
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")


#: Headers that cannot name the person sending a request, and why: recorded as who
#: acted, a credential would be shown in every task's history, and a header every
#: client sets itself names a browser or a host, not a person.
_NOT_A_USER_HEADER = {
    **dict.fromkeys(
        ("authorization", "proxy-authorization", "cookie", "x-csrf-token"),
        "it carries credentials, which would be recorded as who acted in the history of "
        "every task they change",
    ),
    **dict.fromkeys(
        (
            "host",
            "user-agent",
            "referer",
            "origin",
            "accept",
            "accept-encoding",
            "accept-language",
            "connection",
            "content-type",
            "content-length",
            "transfer-encoding",
        ),
        "every client sets it itself, to something other than a person's name",
    ),
}


def header_name(value: str, source: str) -> str:
    """``value`` (blanks stripped) when it can name the header an authenticating proxy
    names each person in, else ValueError naming ``source``, the setting it came from."""
    name = value.strip() if isinstance(value, str) else value
    if not (isinstance(name, str) and _HEADER_NAME.fullmatch(name)):
        raise ValueError(
            f"{source} must name an HTTP header, such as X-Forwarded-User, not {value!r}"
        )
    why = _NOT_A_USER_HEADER.get(name.lower())
    if why is not None:
        raise ValueError(
            f"{source} cannot be {name}: {why}. Give the header your authenticating "
            "proxy sets to each person's name, such as X-Forwarded-User"
        )
    return name


def user_name(value: object, source: str) -> str:
    """``value`` as the name the engine records as who acted (``by=``), blanks
    stripped; ValueError naming ``source``, where it came from, when it is none.

    The check is the engine's own, so that a name taken here is never refused when
    the answer, cancel or retry reaches the engine.
    """
    if not isinstance(value, str):
        shown = f"{value!r:.60}"
    else:
        try:
            return actor_name(value)
        except ValueError:
            shown = (
                repr(value) if len(value) <= 60 else f"{value[:60]!r}... ({len(value)} characters)"
            )
    raise ValueError(
        f"{source} is {shown}, not a name the dashboard can record as who acted "
        f"(1 to {MAX_ACTOR_CHARS} printable characters)"
    )


def csrf_token() -> str:
    """The session's CSRF token, made on first use."""
    token = session.get(_CSRF_KEY)
    if not isinstance(token, str) or len(token) < 32:
        token = secrets.token_urlsafe(32)
        session[_CSRF_KEY] = token
    return token


def csrf_ok() -> bool:
    """True when the request carries the session's CSRF token (form field or header)."""
    expected = session.get(_CSRF_KEY)
    if not isinstance(expected, str) or not expected:
        return False
    given = request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD) or ""
    return hmac.compare_digest(given.encode(), expected.encode())


def _digest(token: str) -> str:
    return hashlib.sha256(b"wfe-ui:" + token.encode()).hexdigest()


def token_matches(given: str | None, token: str) -> bool:
    """Compare a presented access token with the configured one in constant time."""
    return bool(given) and hmac.compare_digest(_digest(given or ""), _digest(token))


def token_from_request() -> tuple[str | None, str]:
    """The access token a request presents and how: ``"header"``, ``"query"`` or ``""``.

    ``Authorization: Bearer <token>`` and ``X-WFE-Token`` count as headers; a
    ``?token=`` query argument is how a browser first logs in.
    """
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip(), "header"
    header = request.headers.get("X-WFE-Token")
    if header:
        return header.strip(), "header"
    query = request.args.get("token")
    if query:
        return query, "query"
    return None, ""


def _login_mark(token: str) -> str:
    """What a logged-in session holds: an HMAC of the token keyed with the app's secret.

    Flask's session cookie is signed, not encrypted, so whoever holds a copy can read
    it. A bare hash of the token would let them try guesses offline; this one cannot
    be checked without the secret key as well. A changed token (or secret) logs
    every session out.
    """
    key = current_app.secret_key
    raw = key if isinstance(key, bytes) else str(key).encode()
    return hmac.new(raw, b"wfe-ui-login\0" + token.encode(), hashlib.sha256).hexdigest()


def remember_login(token: str) -> None:
    """Mark the session as logged in with ``token`` (see :func:`_login_mark`)."""
    session[_AUTH_KEY] = _login_mark(token)
    session.permanent = False


def session_logged_in(token: str) -> bool:
    """True when the session logged in with the current token."""
    saved = session.get(_AUTH_KEY)
    return isinstance(saved, str) and hmac.compare_digest(saved, _login_mark(token))


class TokenBackoff:
    """Slow down guessing of the access token, per client address.

    The first :attr:`free` wrong tokens from an address cost nothing (a person
    mistyping); each one after that shuts the address out for a while, doubling
    from :attr:`first` seconds up to :attr:`longest`, and while it is shut out every
    token it presents is refused (429) unchecked. An address with no wrong token for
    :attr:`forget` seconds starts afresh. A right token does not clear the count:
    behind a reverse proxy every client has the proxy's address, and the others'
    requests would otherwise keep clearing a guesser's count. (So there, one
    client's guessing shuts all of them out, for at most :attr:`longest` seconds
    at a time.)
    """

    free = 5
    first = 5.0
    longest = 60.0
    forget = 15 * 60.0
    #: The most addresses remembered; the oldest are forgotten beyond it.
    most = 10_000

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        # address -> (wrong tokens counted, time of the last, shut out until)
        self._seen: dict[str, tuple[int, float, float]] = {}

    def wait(self, address: str) -> float:
        """Seconds ``address`` is still shut out for (0: it may try a token)."""
        with self._lock:
            found = self._seen.get(address)
            left = 0.0 if found is None else found[2] - self.clock()
        return max(0.0, left)

    def failed(self, address: str) -> None:
        """Count a wrong token from ``address``."""
        now = self.clock()
        with self._lock:
            count, last, _ = self._seen.pop(address, (0, now, now))
            if now - last > self.forget:
                count = 0
            count += 1
            over = count - self.free
            until = now + min(self.longest, self.first * 2 ** (over - 1)) if over > 0 else now
            self._seen[address] = (count, now, until)  # re-inserted: the newest last
            while len(self._seen) > self.most:
                del self._seen[next(iter(self._seen))]

    @staticmethod
    def retry_after(seconds: float) -> str:
        """A ``Retry-After`` header's value: whole seconds, rounded up."""
        return str(max(1, math.ceil(seconds)))


def signed_in(token: str) -> bool:
    """True when the request may see the dashboard: there is no access token, or the
    request presents it in a header, or its session logged in with it."""
    if not token:
        return True
    given, how = token_from_request()
    if how == "header" and token_matches(given, token):
        return True
    return session_logged_in(token)


def forget_login() -> None:
    """Log the session out."""
    session.pop(_AUTH_KEY, None)


# Flask's own error pages are Werkzeug's responses; the views', Flask's.
_AnyResponse = TypeVar("_AnyResponse", bound=Response)


def add_security_headers(response: _AnyResponse) -> _AnyResponse:
    """Headers that keep pages from being framed, sniffed or loading foreign content."""
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "same-origin")
    return response


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

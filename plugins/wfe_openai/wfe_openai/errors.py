"""Why a chat completion failed: the reason an attempt fails with, naming the server and retries."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from wfcore import AdapterError, PermanentError, RetryLater, WorkflowError
from wfcore.errors import LONGEST_WAIT

from .records import _short

if TYPE_CHECKING:
    from openai import AsyncOpenAI


def _failure_reason(
    exc: Exception,
    client: AsyncOpenAI,
    where: str,
    options: Mapping[str, Any],
    timeout_origin: str,
    key_origin: str,
) -> str:
    """The reason for an error of ``chat.completions.create``, before masking credentials.

    ``exc`` is an ``openai.OpenAIError``, or a TypeError or ValueError; ``client`` is
    the client that made the request, ``where`` its server and ``options`` the
    arguments of the request; ``timeout_origin`` names where the request's timeout
    is set (``WFE_OPENAI_TIMEOUT``, say), for a request that timed out;
    ``key_origin`` where the key sent comes from, for a request the server refused
    as unauthorized.
    """
    import openai

    if isinstance(exc, openai.APIStatusError):
        return (
            f"chat completion failed with HTTP {exc.status_code}{_retried_text(exc, client)} "
            f"({where}): {_server_error_text(exc)}{_not_found_hint(exc, client)}"
            f"{_unauthorized_hint(exc, key_origin)}"
        )
    if isinstance(exc, openai.APITimeoutError):
        timeout = options.get("timeout", getattr(client, "timeout", None))
        if type(exc.__cause__).__name__ == "ConnectTimeout":
            # No connection at all (a server that is down, an address a firewall
            # drops): the wait for a reply never began.
            connect = getattr(timeout, "connect", timeout)
            within = f"{connect:g} s" if isinstance(connect, (int, float)) else "its limit"
            return (
                f"cannot reach the chat completions server ({where}): no connection "
                f"within {within}{_retried_text_of_connection(client)}"
            )
        limit = _timeout_text(timeout)
        return (
            f"chat completion timed out {_retries_text(client)} "
            f"({where}): no reply within {limit} per request ({timeout_origin})"
        )
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc
        if type(cause).__name__ == "DecodingError":
            # httpx's, for a body its Content-Encoding does not describe: the server
            # was reached, and answered with something that cannot be read.
            return (
                f"malformed response from {where}: its body cannot be decoded as its "
                f"Content-Encoding says ({cause}){_retried_text_of_connection(client)}"
            )
        if type(cause).__name__ == "RemoteProtocolError" and "complete message body" in str(cause):
            # A response begun and cut short (a proxy or server dropping the
            # connection mid-body): the server was reached.
            return (
                f"malformed response from {where}: its body ended early ({cause})"
                f"{_retried_text_of_connection(client)}"
            )
        return f"cannot reach the chat completions server ({where}): {cause}"
    if isinstance(exc, TypeError):
        # Raised before anything is sent: an option create() does not take.
        return f"invalid chat completion request: {exc}"
    return f"malformed response from {where}: {type(exc).__name__}: {exc}"


def _retried_text_of_connection(client: Any) -> str:
    """How often the SDK tried again a request whose response could not be read."""
    retries = getattr(client, "max_retries", None)
    return f", {_retries_text(client)}" if isinstance(retries, int) and retries else ""


def _retries_text(client: Any) -> str:
    """What the SDK did before it gave up: ``after 2 retries``, ``after 1 retry``,
    or ``and was not retried: max_retries is 0``."""
    retries = getattr(client, "max_retries", None)
    if retries == 0:
        return "and was not retried: max_retries is 0"
    if not isinstance(retries, int):
        return "after its retries"
    return f"after {retries} retr{'y' if retries == 1 else 'ies'}"


def _not_found_hint(exc: Any, client: Any) -> str:
    """For a 404 from a server whose URL does not end in /v1, the likely cause."""
    import openai

    if exc.status_code != 404 or isinstance(client, openai.AsyncAzureOpenAI):
        return ""  # Azure's URLs name a deployment, and end otherwise
    path = urlsplit(str(getattr(client, "base_url", ""))).path.rstrip("/")
    if path.endswith("/v1"):
        return ""
    return (
        " (the server URL does not end in /v1: OpenAI-compatible servers usually serve "
        "the API under it, e.g. http://localhost:8000/v1)"
    )


def _unauthorized_hint(exc: Any, key_origin: str) -> str:
    """For a 401, which setting holds the key the server refused (never the key)."""
    if exc.status_code != 401:
        return ""
    return f" (the key comes from {key_origin}: check that it is this server's key)"


def _retried_text(exc: Any, client: Any) -> str:
    """How the SDK retried the request that ended in this error response."""
    if _sdk_retried(exc, client):
        return f" {_retries_text(client)}"
    headers = _headers(exc)
    if headers.get("x-should-retry") == "false":
        return " and was not retried: the server said not to (x-should-retry: false)"
    wait = _retry_after_seconds(headers)
    if wait is not None and wait > 0:
        return f" and was not retried: the server asked to wait {wait:g} s (Retry-After)"
    return ""


def _sdk_retried(exc: Any, client: Any) -> bool:
    """Whether the SDK retried the request that ended in this error response."""
    # The SDK's own rule, where it has one: which responses it retries has changed
    # between its versions (how long a Retry-After it waits for, x-should-retry).
    should_retry = getattr(client, "_should_retry", None)
    try:
        if callable(should_retry):
            return bool(should_retry(getattr(exc, "response", None)))
    except Exception:
        pass
    status = exc.status_code
    return status in (408, 409, 429) or status >= 500


def _headers(exc: Any) -> Mapping[str, str]:
    return getattr(getattr(exc, "response", None), "headers", None) or {}


# Answers no attempt of the phase can change until someone changes a setting: a key
# refused or not allowed, a model or a URL that does not exist.
_PERMANENT_STATUSES = frozenset({401, 403, 404})


def _failure(exc: Exception, client: Any, reason: str) -> WorkflowError:
    """The error an attempt fails with, ``reason`` its message: PermanentError when
    no further attempt can succeed (an option create() does not take; HTTP 401, 403,
    404), RetryLater when the server asked for a wait the SDK did not make (a long
    Retry-After), else AdapterError, and the phase's max_attempts decide."""
    import openai

    if isinstance(exc, TypeError):
        return PermanentError(reason)
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code in _PERMANENT_STATUSES:
            return PermanentError(reason)
        headers = _headers(exc)
        wait = _retry_after_seconds(headers)
        if (
            wait is not None
            and wait > 0
            and headers.get("x-should-retry") != "false"
            and not _sdk_retried(exc, client)
        ):
            return RetryLater(reason, after=min(wait, LONGEST_WAIT))
    return AdapterError(reason)


def _retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The wait a response asks for, from ``retry-after-ms`` or ``retry-after``
    (seconds or an HTTP date); None when it asks for none or cannot be read."""
    import email.utils
    import time

    try:
        return float(headers["retry-after-ms"]) / 1000
    except (KeyError, TypeError, ValueError):
        pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    parsed = email.utils.parsedate_tz(value)
    if parsed is None:
        return None
    return float(email.utils.mktime_tz(parsed) - time.time())


def _server_error_text(exc: Any) -> str:
    """The server's own words from an error response, on one line."""
    return _short(_one_line(_server_words(exc)), 500)


def _server_words(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
    try:
        text = exc.response.text
    except Exception:
        text = ""
    return _html_page_text(text.strip() or str(body or getattr(exc, "message", "")))


def _html_page_text(text: str) -> str:
    """A body that is an HTML page (a proxy's or load balancer's error page: nginx's
    502, say) as its title, or as its text without the markup when it has none."""
    if not text.lstrip().lower().startswith(("<!doctype html", "<html")):
        return text
    title = re.search(r"<title[^>]*>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
    words = title.group(1) if title else re.sub(r"<[^>]*>", " ", text)
    return f"{html.unescape(words).strip()} (an HTML page)"


def _one_line(text: str) -> str:
    """Text with its line breaks and runs of spaces as single spaces: a task's error
    is one line, which `wfe tasks` and the logs show whole."""
    return " ".join(text.split())


def _timeout_text(timeout: Any) -> str:
    """A request timeout (seconds, or an httpx Timeout) as the wait for a reply."""
    # An httpx Timeout's read limit is what a slow reply runs into.
    seconds = getattr(timeout, "read", timeout)
    if isinstance(seconds, (int, float)):
        return f"{seconds:g} s"
    return "no set limit" if seconds is None else str(seconds)


def _no_message_reason(completion: Any, where: str) -> str:
    """Why a successful response holds no reply, in the server's own words if it has any."""
    error = getattr(completion, "error", None)  # a field the ChatCompletion type lacks
    if error:
        # A 200 with an error body, as some compatible servers and proxies send. The
        # SDK does not retry it, and neither does the adapter: what it means (an
        # overload, an unknown model) is the server's own, so the phase's
        # max_attempts decides.
        reason = _error_object_text(error)
        return f"chat completion failed ({where}): the server answered with an error: {reason}"
    if isinstance(completion, str) and completion.lstrip().startswith(("data:", "event:")):
        return (
            f"malformed response from {where}: the server sent a stream (server-sent "
            "events) to a request that did not ask for one; it begins "
            f"{_short(completion.lstrip(), 200)!r}"
        )
    return (
        f"malformed response from {where}: no choices[0].message in {_short(repr(completion), 300)}"
    )


def _error_object_text(error: Any) -> str:
    """An error object's message and code, as OpenAI-style ``{"error": {...}}`` bodies give them."""
    if not isinstance(error, dict):
        return _short(str(error), 500)
    text = _short(str(error.get("message") or json.dumps(error, default=str)), 500)
    code = error.get("code")
    return text if code is None or code == "" else f"{text} (code {code})"

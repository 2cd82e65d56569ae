"""Checks of the adapter's settings and of request options, made before anything is sent."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import jsonschema

from wfcore import AdapterError

from .records import _short
from .redaction import _masked_url

if TYPE_CHECKING:
    from openai import AsyncOpenAI

    from .request import AgentRequest

# Request options the adapter sets itself, or cannot work with, and why.
_RESERVED_OPTIONS = {
    "messages": "the adapter builds the messages itself (a handler can change request.messages)",
    "model": "the adapter sends its model= (a handler can set request.model)",
    "tools": "the adapter sends its tools (use tools= / add_tool, or request.tools in a handler)",
    "stream": (
        "streaming is not supported: the adapter needs each reply whole, to run its "
        "tool calls and check its output"
    ),
    "n": "the adapter continues one reply per call",
}

# The longest wait for a person's answer: the bound wfcore puts on a phase's timeout
# (a deadline this far ahead still fits in a datetime). A longer one would be refused
# by engine.suspend only after the model call that asked was paid for.
_MAX_ANSWER_TIMEOUT = 10 * 366 * 86400


def _check_settings(
    *,
    model: str,
    system_prompt: str | None,
    max_steps: int,
    client: AsyncOpenAI | None,
    api_key: str | None,
    base_url: str | None,
    max_retries: int | None,
    answer_timeout: float | None,
    phase_options: Mapping[str, Mapping[str, Any]] | None,
    max_item_chars: int,
    max_input_chars: int,
    request_options: Mapping[str, Any],
) -> None:
    """Refuse the arguments of an ``OpenAIAgentAdapter``, saying why, when they cannot work."""
    if not isinstance(model, str) or not model:
        raise ValueError("model must be a non-empty string")
    if not _is_count(max_steps, 1):
        raise ValueError("max_steps must be an integer >= 1")
    if max_retries is not None:
        _check_max_retries(max_retries, "max_retries")
    if answer_timeout is not None:
        _check_answer_timeout(answer_timeout, "answer_timeout")
    for name, value in (
        ("system_prompt", system_prompt),
        ("api_key", api_key),
        ("base_url", base_url),
    ):
        if value is not None and not isinstance(value, str):
            # The type only: a key given as bytes must not show in a traceback.
            raise TypeError(f"{name} must be a string or None, not {type(value).__name__}")
    if api_key:
        _check_api_key(api_key, "api_key=", ValueError)
    if base_url:
        _check_base_url(base_url, "base_url", ValueError)
    for name, count in (
        ("max_item_chars", max_item_chars),
        ("max_input_chars", max_input_chars),
    ):
        if not _is_count(count, 1):
            raise ValueError(f"{name} must be an integer >= 1, not {count!r}")
    _check_options(request_options, "request option")
    if phase_options is not None and not isinstance(phase_options, Mapping):
        raise TypeError(
            "phase_options must be a dict of classification -> options, such as "
            f"{{'review': {{'model': 'gpt-4o-mini'}}}}, not {phase_options!r}"
        )
    for name, options in (phase_options or {}).items():
        if not isinstance(name, str):
            raise TypeError(f"phase_options keys are classifications (strings), not {name!r}")
        what = f"phase_options[{name!r}]"
        if not isinstance(options, Mapping):
            raise TypeError(
                f"{what} must be a dict of options such as {{'model': 'gpt-4o-mini'}}, "
                f"not {options!r}"
            )
        _check_options(options, what)
    if client is not None:
        import openai

        if isinstance(client, openai.OpenAI):
            raise TypeError("client must be an async client: openai.AsyncOpenAI, not OpenAI")


def _check_api_key(key: str, source: str, error: type[Exception]) -> None:
    """Refuse a key no HTTP header can carry, saying why but never showing the key.

    Sent as it is, such a key fails in the HTTP library, whose error quotes the
    header with the key in it.
    """
    if not key.strip():
        problem = "is blank: it holds only whitespace"
    elif not key.isascii():
        problem = "holds a non-ASCII character"
    elif not all("!" <= char <= "~" for char in key):
        problem = "holds whitespace or a control character (a trailing newline from a file?)"
    else:
        return
    raise error(f"the API key ({source}) {problem}")


#: Variables the openai SDK reads and sends as HTTP headers of every request.
_HEADER_VARIABLES = ("OPENAI_ORG_ID", "OPENAI_PROJECT_ID")


def _check_header_variables(error: type[Exception]) -> None:
    """Refuse an ``OPENAI_ORG_ID`` or ``OPENAI_PROJECT_ID`` no HTTP header can carry.

    The SDK sends each as a header: the HTTP library would refuse the request, which
    the SDK retries and reports as a server that cannot be reached (or, for a
    non-ASCII character, as a malformed response). Neither is a secret, so the value
    is shown.
    """
    for name in _HEADER_VARIABLES:
        value = os.environ.get(name)
        if not value:
            continue  # unset or empty: none sent
        if not value.isascii():
            problem = "holds a non-ASCII character"
        elif not all("!" <= char <= "~" for char in value):
            problem = "holds whitespace or a control character (a trailing newline from a file?)"
        else:
            continue
        raise error(
            f"{name}={value!r} {problem}: the SDK sends it as an HTTP header, which cannot carry it"
        )


def _check_base_url(url: str, source: str, error: type[Exception]) -> None:
    """Refuse a server URL the SDK cannot send a request to.

    Otherwise each request fails only when sent, is retried as a connection error,
    and is reported as a server that cannot be reached (or, for a query string, as
    a 404 from a path the SDK mangled).
    """
    shown = _masked_url(url)
    if url != url.strip():
        raise error(
            f"{source} has whitespace at its start or end ({shown!r}); remove it "
            "(a trailing newline or space from a file?)"
        )
    reason = ""  # what is wrong, when the URL cannot be read
    try:
        parts = urlsplit(url)
        _ = parts.port  # a port that is not a number, or out of range, raises ValueError
    except ValueError as exc:
        # "Port out of range 0-65535", "Invalid IPv6 URL": the port is read after
        # any "user:password@", so no credential is in it.
        text = str(exc)
        reason = f" ({text[:1].lower()}{text[1:]})" if text else ""
        usable = False
    else:
        usable = (
            parts.scheme.lower() in ("http", "https")
            and bool(parts.hostname)
            # urlsplit drops tabs and newlines; httpx refuses them and spaces.
            and not any(char.isspace() or not char.isprintable() for char in url)
        )
    if not usable:
        raise error(f"{source} must be an http:// or https:// URL, got {shown!r}{reason}")
    root, endpoint, rest = url.rpartition("/chat/completions")
    if endpoint and not rest.strip("/"):
        # A URL pasted from a curl example: the SDK would post to
        # ".../chat/completions/chat/completions", a 404 that says nothing of why.
        raise error(
            f"{source} must be the API's root URL, not its chat completions endpoint "
            f"({shown!r}): the SDK adds /chat/completions itself; use {_masked_url(root)!r}"
        )
    if "?" in url:
        # The SDK appends the API path to the URL as text, after the query:
        # ".../v1?api-key=...chat/completions", a 404 that says nothing of why.
        raise error(
            f"{source} must not have a query string ({shown!r}): the SDK adds the API "
            "path after it. Pass query parameters with client=AsyncOpenAI(base_url=..., "
            "default_query={...})"
        )


def _check_options(options: Mapping[str, Any], what: str) -> None:
    bad = sorted(set(options) & set(_RESERVED_OPTIONS))
    if "model" in bad and what.startswith("phase_options"):
        bad.remove("model")
    if bad:
        raise TypeError(
            "; ".join(f"{what} {name} cannot be set: {_RESERVED_OPTIONS[name]}" for name in bad)
        )
    fmt = options.get("response_format")
    if fmt is not None and (not isinstance(fmt, Mapping) or "type" not in fmt):
        raise TypeError(f"{what} response_format must be a dict such as {{'type': 'json_object'}}")
    if fmt is not None:
        _check_json_schema_format(fmt, f"{what} response_format")
    steps = options.get("max_steps")
    if steps is not None and not _is_count(steps, 1):
        raise ValueError(f"{what} max_steps must be an integer >= 1")
    if options.get("max_retries") is not None:
        _check_max_retries(options["max_retries"], f"{what} max_retries")
    if options.get("answer_timeout") is not None:
        _check_answer_timeout(options["answer_timeout"], f"{what} answer_timeout")
    if "model" in options and not (isinstance(options["model"], str) and options["model"]):
        raise ValueError(f"{what} model must be a non-empty string, not {options['model']!r}")
    _check_extra_headers(options.get("extra_headers"), what)
    timeout = options.get("timeout")
    # A number must be a positive count of seconds; anything else but a string is
    # left to the SDK (an httpx.Timeout).
    if isinstance(timeout, (bool, str)) or (isinstance(timeout, (int, float)) and not timeout > 0):
        raise ValueError(
            f"{what} timeout must be a number of seconds > 0 (or an httpx.Timeout), not {timeout!r}"
        )


# The characters of an HTTP header name (RFC 9110 "token").
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _check_extra_headers(headers: Any, what: str) -> None:
    """Refuse ``extra_headers`` an HTTP request cannot carry, naming the header but
    never showing its value, which is often a credential (a proxy's key).

    Sent as they are, such headers fail in the HTTP library, whose error quotes the
    value; the SDK retries it and reports a server that cannot be reached (or, for
    a non-ASCII character, a malformed response), which stores the value with the
    task's error and history.
    """
    if headers is None:
        return
    if not isinstance(headers, Mapping):
        raise TypeError(
            f"{what} extra_headers must be a dict of header name -> value, such as "
            f"{{'X-Team': 'billing'}}, not {type(headers).__name__}"
        )
    for name, value in headers.items():
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise ValueError(
                f"{what} extra_headers: {name!r} is not an HTTP header name (letters, "
                "digits and !#$%&'*+-.^_`|~, no spaces or colons)"
            )
        if not isinstance(value, str):
            continue  # the SDK's Omit (no such header), say: the SDK's to judge
        problem = None
        if not value.isascii():
            problem = "holds a non-ASCII character"
        elif any((char < " " and char != "\t") or char == "\x7f" for char in value):
            problem = "holds a control character (a trailing newline from a file?)"
        elif value != value.strip(" \t"):
            problem = "has whitespace at its start or end (a trailing space from a file?)"
        if problem is not None:
            raise ValueError(
                f"{what} extra_headers[{name!r}] {problem}: an HTTP header cannot carry it "
                "(the value is not shown: it may be a credential)"
            )


def _check_json_schema_format(fmt: Mapping[str, Any], what: str) -> None:
    """Refuse a ``json_schema`` response format whose schema could not check a reply.

    Checked now, because the schema is first used on the model's reply, after the
    call has been paid for.
    """
    if fmt.get("type") != "json_schema":
        return
    spec = fmt.get("json_schema")
    if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
        raise TypeError(
            f"{what} json_schema must be a dict with a 'name' (and a 'schema'), "
            f"such as {{'name': 'answer', 'schema': {{'type': 'object'}}}}"
        )
    schema = spec.get("schema")
    if schema is None:
        return
    if not isinstance(schema, Mapping):
        raise TypeError(f"{what} json_schema schema must be a dict, not {schema!r}")
    try:
        # A copy: jsonschema's "object" is a dict, not any Mapping.
        jsonschema.validators.validator_for(schema).check_schema(dict(schema))
    except jsonschema.SchemaError as exc:
        raise ValueError(
            f"{what} json_schema schema is not a valid JSON Schema: {exc.message}"
        ) from None


def _check_request(request: AgentRequest) -> None:
    """Fail the attempt, saying why, when a handler left the request unusable."""
    fmt = request.response_format
    problem = None
    if not isinstance(request.model, str) or not request.model:
        problem = f"request.model must be a non-empty string, not {request.model!r}"
    elif not _is_count(request.max_steps, 1):
        problem = f"request.max_steps must be an integer >= 1, not {request.max_steps!r}"
    elif fmt is not None and (not isinstance(fmt, Mapping) or "type" not in fmt):
        problem = f"request.response_format must be None or a dict with a 'type', not {fmt!r}"
    elif not isinstance(request.options, dict):
        problem = f"request.options must be a dict of request options, not {request.options!r}"
    elif (
        not isinstance(request.messages, list)
        or not request.messages
        or not all(isinstance(m, Mapping) for m in request.messages)
    ):
        shown = _short(repr(request.messages), 200)
        problem = f"request.messages must be a list of message dicts, not {shown}"
    elif request.parse is not None and not callable(request.parse):
        problem = f"request.parse must be a function of the reply (or None), not {request.parse!r}"
    elif "answer_timeout" in request.options:
        # request.options go to the API, which does not know it; and the wait it
        # sets must be the same whether or not the handler runs (it does not when a
        # retried wait asks the same question again).
        problem = (
            "request.options answer_timeout cannot be set: it is the adapter's "
            "answer_timeout= or a phase_options entry"
        )
    else:
        try:
            if fmt is not None:
                _check_json_schema_format(fmt, "request.response_format")
            _check_options(request.options, "request.options")
        except (TypeError, ValueError) as exc:
            problem = str(exc)
        else:
            problem = _tools_problem(request)
    if problem is not None:
        raise AdapterError(f"the handler left the request unusable: {problem}")


def _tools_problem(request: AgentRequest) -> str | None:
    """What is wrong with ``request.tools``, or None; functions in it are made Tools.

    A handler may append a function, as ``tools=`` takes one; two tools of one name
    are refused, since the model could call only one of them.
    """
    from .tools import as_tool

    if not isinstance(request.tools, list):
        return f"request.tools must be a list of functions or Tool objects, not {request.tools!r}"
    try:
        tools = [as_tool(item) for item in request.tools]
    except (TypeError, ValueError) as exc:
        return f"request.tools: {exc}"
    names = [t.name for t in tools]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        return f"request.tools has more than one tool named {', '.join(map(repr, repeated))}"
    request.tools = tools
    return None


def _is_count(value: Any, low: int) -> bool:
    """True for an int (not a bool) of at least ``low``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _check_max_retries(value: Any, what: str) -> None:
    if not _is_count(value, 0):
        raise ValueError(f"{what} must be an integer >= 0, not {value!r}")


def _check_answer_timeout(value: Any, what: str) -> None:
    """Refuse a wait for a person's answer that is not a positive, finite number of seconds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{what} must be a number of seconds (or None: the phase's timeout), not {value!r}"
        )
    if not 0 < value <= _MAX_ANSWER_TIMEOUT:  # also refuses NaN and infinity
        raise ValueError(
            f"{what} must be a number of seconds > 0 and at most 10 years (as a phase's "
            f"timeout), not {value!r}"
        )

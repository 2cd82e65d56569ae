"""The phase output from the model's final reply: its text or JSON, then the handler's parse."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import jsonschema

from wfcore import AdapterError

from .records import _schema_error_text, _short

if TYPE_CHECKING:
    from .request import AgentRequest

_JSON_FORMATS = ("json_object", "json_schema")

#: Why an attempt fails whose reply the output token limit cut off.
_CUT_OFF = (
    "the reply was cut off by the output token limit (finish_reason=length; "
    "raise max_tokens or max_completion_tokens)"
)


async def _output(
    request: AgentRequest,
    message: Any,
    finish_reason: str | None,
    redact: Callable[[str], str],
) -> Any:
    """The phase output from the final reply: text, or the parsed JSON object.

    ``redact`` masks credentials in the error of a handler's ``parse``, which is the
    app's own text (from a library it calls, say).
    """
    refusal = getattr(message, "refusal", None)
    if refusal:
        # The model's own text, which can be as long as any reply.
        raise AdapterError(f"the model refused: {_short(str(refusal), 500)}")
    text = _content_text(message)
    if finish_reason == "length":
        # The end is missing, whatever the text looks like (JSON may even parse):
        # a failed attempt, so the phase's max_attempts or a retry applies.
        ending = f"it ends {text[-200:]!r}" if isinstance(text, str) and text else "no text"
        raise AdapterError(_CUT_OFF + f": {ending}")
    if finish_reason == "content_filter":
        # The server withheld some or all of the reply: what came is not the answer.
        raise AdapterError(
            "the reply was stopped by the server's content filter (finish_reason=content_filter)"
        )
    if text is not None and not isinstance(text, str):
        # A server that is not quite compatible: the content must be text (or parts).
        raise AdapterError(
            f"the reply's content is {type(text).__name__}, not text: "
            f"{_short(repr(text), 200)} (finish_reason={finish_reason})"
        )
    if not text or not text.strip():
        raise AdapterError(f"the model sent an empty reply (finish_reason={finish_reason})")
    value: Any = text
    fmt = request.response_format or {}
    schema = request.phase.input_schema if request.phase is not None else None
    if fmt.get("type") in _JSON_FORMATS:
        value = _parse_json_reply(text, fmt, schema, parsed=request.parse is not None)
    if request.parse is not None:
        try:
            value = request.parse(value)
            if inspect.isawaitable(value):
                value = await value
        except Exception as exc:
            raise AdapterError(
                redact(
                    f"the reply was rejected by the handler's parse: {type(exc).__name__}: {exc}"
                )
            ) from None
    if schema is not None:
        problems = _schema_problems(schema, value, "(output)")
        if problems:
            raise AdapterError(f"the output does not match the phase's input_schema: {problems}")
    return value


def _schema_problems(schema: Mapping[str, Any], value: Any, root: str) -> str:
    """What in ``value`` breaks ``schema`` (the first five problems), or ''."""
    validator = jsonschema.validators.validator_for(schema)(schema)
    problems = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
    return "; ".join(
        f"{'/'.join(str(p) for p in e.absolute_path) or root}: {_schema_error_text(e)}"
        for e in problems[:5]
    )


def _content_text(message: Any) -> Any:
    """The reply's text. Some compatible servers send it as a list of content parts
    (``[{"type": "text", "text": "..."}]``), whose text parts make the reply."""
    content = getattr(message, "content", None)
    if not isinstance(content, list):
        return content
    texts = []
    for part in content:
        # Parts arrive as dicts; an SDK that knew the form would give objects.
        fields = part if isinstance(part, dict) else getattr(part, "__dict__", {})
        if fields.get("type") == "text" and isinstance(fields.get("text"), str):
            texts.append(fields["text"])
    return "".join(texts)


def _parse_json_reply(
    text: str, fmt: Mapping[str, Any], input_schema: Mapping[str, Any] | None, parsed: bool
) -> Any:
    """The JSON reply, checked against the response format's schema.

    When that schema is the phase's ``input_schema`` (the response format the
    adapter asks for by default), a mismatch is named as the input_schema's: it
    is what the app set. ``parsed``: a handler's parse makes the output of the
    reply.
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AdapterError(
            f"the reply is not valid JSON: {exc.msg} at line {exc.lineno} column "
            f"{exc.colno}; the reply begins {_short(text, 200)!r}"
        ) from None
    spec = fmt.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, Mapping) else None
    if not isinstance(schema, Mapping):
        return value
    if input_schema is None or schema != input_schema:
        what, root = "the JSON reply does not match the response_format schema", "(reply)"
    elif parsed:
        what = "the JSON reply (before the handler's parse) does not match the phase's input_schema"
        root = "(reply)"
    else:
        what, root = "the output does not match the phase's input_schema", "(output)"
    problems = _schema_problems(schema, value, root)
    if problems:
        raise AdapterError(f"{what}: {problems}")
    return value

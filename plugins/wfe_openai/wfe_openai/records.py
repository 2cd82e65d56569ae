"""What a task keeps of its agent's work: each call and the token usage, short texts for history."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from wfcore import Task

if TYPE_CHECKING:
    from .request import AgentRequest

__all__ = ["CONTEXT_KEY"]

logger = logging.getLogger("wfe_openai")

#: Where the adapter keeps its state in ``task.context``.
CONTEXT_KEY = "openai"

_HISTORY_CHARS = 2000


def _account(
    task: Task,
    request: AgentRequest,
    step: int,
    completion: Any,
    message: Any,
    finish_reason: str | None,
    seconds: float,
) -> None:
    """Put the model and token counts of one call into ``task.context["openai"]``."""
    usage = getattr(completion, "usage", None)
    prompt_details = getattr(usage, "prompt_tokens_details", None)
    completion_details = getattr(usage, "completion_tokens_details", None)
    entry = {
        "phase": request.phase.target_classification if request.phase else None,
        "attempt": task.attempts,
        "step": step,
        "model": request.model,
        "response_model": getattr(completion, "model", None),
        "request_id": getattr(completion, "_request_id", None),
        "prompt_tokens": _count(usage, "prompt_tokens"),
        "completion_tokens": _count(usage, "completion_tokens"),
        "total_tokens": _count(usage, "total_tokens"),
        "cached_tokens": _count(prompt_details, "cached_tokens"),
        "reasoning_tokens": _count(completion_details, "reasoning_tokens"),
        "tool_calls": len(getattr(message, "tool_calls", None) or []),
        "finish_reason": finish_reason,
        "seconds": round(seconds, 3),
    }
    state = task.context.setdefault(CONTEXT_KEY, {})
    state.setdefault("calls", []).append(entry)
    # Where the call happened, for numbering the next call of the same attempt:
    # kept apart from ``calls``, which an app may trim.
    state["last_call"] = {
        "phase": entry["phase"],
        "attempt": entry["attempt"],
        "step": step,
        "events": len(task.history),
    }
    totals = state.setdefault("usage", {})
    by_model = totals.setdefault(request.model, {})
    for bucket in (totals, by_model):
        bucket["calls"] = bucket.get("calls", 0) + 1
        for key in (
            "prompt_tokens",
            "completion_tokens",
            "total_tokens",
            "cached_tokens",
            "reasoning_tokens",
        ):
            bucket[key] = bucket.get(key, 0) + (entry[key] or 0)
    logger.debug(
        "task %s: %s step %d: %s prompt + %s completion tokens, %d tool call(s)",
        task.id,
        request.model,
        step,
        entry["prompt_tokens"],
        entry["completion_tokens"],
        entry["tool_calls"],
    )


def _count(obj: Any, name: str) -> int | None:
    value = getattr(obj, name, None) if obj is not None else None
    # A server's true or false is no token count.
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _short(text: str, limit: int = _HISTORY_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more]"


# How much of the value a schema error quotes is shown.
_QUOTED_CHARS = 100


def _schema_error_text(error: Any) -> str:
    """A jsonschema error's message, with the value it quotes cut short.

    jsonschema quotes the whole value (``'...' is not of type 'object'``): a long
    reply or tool argument would fill the attempt's error, the task's history and
    the model's context, and crowd out the other problems.
    """
    message = str(error.message)
    quoted = repr(error.instance)
    if len(quoted) > _QUOTED_CHARS and quoted in message:
        message = message.replace(quoted, _short(quoted, _QUOTED_CHARS))
    return _short(message, 500)

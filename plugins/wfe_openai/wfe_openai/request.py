"""What the adapter sends for a phase (AgentRequest), and which handlers may shape it."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wfcore import Phase

from .human import ASK_HUMAN, HUMAN_TOOL
from .tools import Tool

__all__ = ["AgentRequest"]


@dataclass
class AgentRequest:
    """What the adapter is about to send for one phase; a handler may change any of it.

    A handler registered for the phase's classification as ``handler(task, request)``
    (sync or async) is called before the first model call of every run of the phase,
    including the run that continues after a person answered (``resumed`` is True
    then, and ``messages`` already ends with the answer).
    """

    #: The model to call.
    model: str
    #: The conversation so far: chat-completions message dicts.
    messages: list[dict[str, Any]]
    #: The tools the model may call (``ask_human`` included unless disabled); a
    #: function put in the list is made a :class:`Tool`, as ``tools=`` does.
    tools: list[Tool]
    #: ``{"type": "json_object"}`` or ``{"type": "json_schema", "json_schema": {...}}``
    #: makes the reply JSON: the output is the parsed object, and a reply that does not
    #: parse (or fails the schema) fails the attempt. None asks for plain text.
    response_format: dict[str, Any] | None
    #: Other ``chat.completions.create`` arguments (temperature, max_tokens, ...), and
    #: ``max_retries``, the SDK's retries of this phase's requests.
    options: dict[str, Any]
    #: How many model calls this run may make.
    max_steps: int
    #: True when this run continues a conversation after a person's answer.
    resumed: bool = False
    #: True when this run continues a conversation that a run interrupted by its
    #: worker's end (a crash, a stop) checkpointed after a round of tool results:
    #: ``messages`` end with those results, and those tools do not run again.
    continued: bool = False
    #: Turns the reply (the text, or the parsed JSON object) into the phase output;
    #: may be async; raising fails the attempt with the error as the reason.
    parse: Callable[[Any], Any] | None = None
    #: The phase being run.
    phase: Phase | None = field(default=None, repr=False)

    def add_tool(self, function: Callable[..., Any] | Tool, **kwargs: Any) -> Tool:
        """Offer one more tool for this request (see :class:`~wfe_openai.Tool`),
        replacing one of the same name; not the built-in ``ask_human`` while it is
        offered (take it out of ``tools`` first to offer your own)."""
        new = function if isinstance(function, Tool) else Tool(function, **kwargs)
        if new.name == ASK_HUMAN and any(t is HUMAN_TOOL for t in self.tools):
            raise ValueError(f"the tool name {ASK_HUMAN!r} is the built-in human escalation")
        self.tools = [t for t in self.tools if t.name != new.name] + [new]
        return new


def _shapes_request(handler: Callable[..., Any]) -> bool:
    """True for ``handler(task, request)``; False for a plain ``handler(task)``."""
    try:
        params = inspect.signature(handler).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = 0
    for p in params:
        if p.kind is p.VAR_POSITIONAL:
            return True
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            positional += 1
    return positional >= 2

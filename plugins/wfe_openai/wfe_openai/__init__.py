"""wfe_openai: run wfcore's agentic phases on an OpenAI (or OpenAI-compatible) chat model."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .adapter import ASK_HUMAN, AgentRequest, OpenAIAgentAdapter
    from .tools import Tool, ToolArgumentsError, tool

__all__ = [
    "ASK_HUMAN",
    "AgentRequest",
    "OpenAIAgentAdapter",
    "Tool",
    "ToolArgumentsError",
    "tool",
]

# Every wfe command with this plugin installed imports the package (its entry point
# is wfe_openai.plugin), and most never run an agent: the adapter and tools, with
# jsonschema, are imported when one of their names is first used.
_HOMES = {
    "ASK_HUMAN": ".adapter",
    "AgentRequest": ".adapter",
    "OpenAIAgentAdapter": ".adapter",
    "Tool": ".tools",
    "ToolArgumentsError": ".tools",
    "tool": ".tools",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

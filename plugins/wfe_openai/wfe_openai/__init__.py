"""wfe_openai: run wfcore's agentic phases on an OpenAI (or OpenAI-compatible) chat model."""

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

"""The wfcore plugin: with ``WFE_AGENT=openai``, a starting engine runs agentic phases on OpenAI.

Registered under the ``wfcore`` entry-point group. It changes nothing unless
``WFE_AGENT=openai`` is set, and then only for an engine whose agentic adapter is
still the built-in one (an adapter registered in code always wins). The model is
``WFE_OPENAI_MODEL`` (default ``gpt-4o``); the key and server come from
``OPENAI_API_KEY`` and ``OPENAI_BASE_URL``. Any other non-empty ``WFE_AGENT`` is
warned about, once per value, and changes nothing.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from wfcore import TaskType, hookimpl
from wfcore.adapters import AgenticAdapter

if TYPE_CHECKING:
    from wfcore import ECSWorkflowEngine

__all__ = ["ACCEPTED_AGENTS", "DEFAULT_MODEL", "wfe_engine_started"]

logger = logging.getLogger("wfe_openai")

#: The model used when ``WFE_OPENAI_MODEL`` is not set.
DEFAULT_MODEL = "gpt-4o"

#: The values of ``WFE_AGENT`` this plugin acts on.
ACCEPTED_AGENTS = ("openai",)

# WFE_AGENT values already warned about: every engine start would repeat it.
_warned: set[str] = set()


@hookimpl
def wfe_engine_started(engine: ECSWorkflowEngine) -> None:
    """Register an OpenAIAgentAdapter when ``WFE_AGENT=openai`` and none was chosen in code."""
    value = os.environ.get("WFE_AGENT", "").strip()
    if value.lower() not in ACCEPTED_AGENTS:
        if value and value not in _warned:
            # A mistyped value would otherwise leave the agents off without a word.
            _warned.add(value)
            logger.warning(
                "WFE_AGENT=%r is not a value wfe_openai knows (accepted: %s); "
                "agentic phases keep their adapter",
                value,
                ", ".join(ACCEPTED_AGENTS),
            )
        return
    current = engine.adapter_for(TaskType.AGENTIC)
    if current is not None and type(current) is not AgenticAdapter:
        return
    from .adapter import OpenAIAgentAdapter

    model = os.environ.get("WFE_OPENAI_MODEL", "").strip() or DEFAULT_MODEL
    engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter(model=model))
    logger.info("agentic phases run on OpenAI model %s (WFE_AGENT=openai)", model)

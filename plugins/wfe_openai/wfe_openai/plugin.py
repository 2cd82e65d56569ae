"""The wfcore plugin: with ``WFE_AGENT=openai``, a starting engine runs agentic phases on OpenAI.

Registered under the ``wfcore`` entry-point group. It changes nothing unless
``WFE_AGENT=openai`` is set, and then only for an engine whose agentic adapter is
still the built-in one (an adapter registered in code always wins). The model is
``WFE_OPENAI_MODEL`` (default ``gpt-4o``); the key and server come from
``OPENAI_API_KEY`` and ``OPENAI_BASE_URL``.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from wfcore import TaskType, hookimpl
from wfcore.adapters import AgenticAdapter

if TYPE_CHECKING:
    from wfcore import ECSWorkflowEngine

__all__ = ["DEFAULT_MODEL", "wfe_engine_started"]

logger = logging.getLogger("wfe_openai")

#: The model used when ``WFE_OPENAI_MODEL`` is not set.
DEFAULT_MODEL = "gpt-4o"


@hookimpl
def wfe_engine_started(engine: ECSWorkflowEngine) -> None:
    """Register an OpenAIAgentAdapter when ``WFE_AGENT=openai`` and none was chosen in code."""
    if os.environ.get("WFE_AGENT", "").strip().lower() != "openai":
        return
    current = engine.adapter_for(TaskType.AGENTIC)
    if current is not None and type(current) is not AgenticAdapter:
        return
    from .adapter import OpenAIAgentAdapter

    model = os.environ.get("WFE_OPENAI_MODEL", "").strip() or DEFAULT_MODEL
    engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter(model=model))
    logger.info("agentic phases run on OpenAI model %s (WFE_AGENT=openai)", model)

"""The wfcore plugin: with ``WFE_AGENT=openai``, a starting engine runs agentic phases on OpenAI.

Registered under the ``wfcore`` entry-point group. It changes nothing unless
``WFE_AGENT=openai`` is set, and then only for an engine whose agentic adapter is
still the built-in one (an adapter registered in code always wins). The model is
``WFE_OPENAI_MODEL`` (default ``gpt-4o``); the key and server come from
``OPENAI_API_KEY`` and ``OPENAI_BASE_URL``. Any other non-empty ``WFE_AGENT`` is
warned about, once per value, and changes nothing.

``wfe_report_header`` tells the operator of a ``wfe worker`` which model and server
its agentic phases run on, and warns when they are bound to fail: no key, or a key
or server URL the adapter refuses. The key itself is never shown.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING, Any

from wfcore import TaskType, hookimpl
from wfcore.adapters import AgenticAdapter

if TYPE_CHECKING:
    from wfcore import ECSWorkflowEngine

__all__ = ["ACCEPTED_AGENTS", "DEFAULT_MODEL", "wfe_engine_started", "wfe_report_header"]

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
    if not _agentic_adapter_is_builtin(engine):
        return
    from .adapter import OpenAIAgentAdapter

    model = _model()
    engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter(model=model))
    logger.info("agentic phases run on OpenAI model %s (WFE_AGENT=openai)", model)


@hookimpl
def wfe_report_header(engine: ECSWorkflowEngine) -> list[str] | None:
    """The model and server this engine's agentic phases run on, and a warning when the
    attempts are bound to fail (no key, or a key or URL the adapter refuses).

    Said for the adapter ``WFE_AGENT=openai`` registers when the engine starts, and for
    an ``OpenAIAgentAdapter`` already registered (in code, or by a start); nothing
    otherwise. Never shows the key.
    """
    adapter_module = sys.modules.get(f"{__package__}.adapter")
    current = engine.adapter_for(TaskType.AGENTIC)
    if adapter_module is not None and isinstance(current, adapter_module.OpenAIAgentAdapter):
        model, api_key, base_url = current.model, current._api_key, current._base_url
        client: Any = current._given_client
    elif os.environ.get("WFE_AGENT", "").strip().lower() in ACCEPTED_AGENTS:
        if not _agentic_adapter_is_builtin(engine):
            return None  # the app chose another adapter, which WFE_AGENT leaves alone
        model, api_key, base_url, client = _model(), None, None, None
    else:
        return None
    from .checks import _check_api_key, _check_base_url
    from .redaction import _masked_url

    problems: list[str] = []
    if client is not None:
        server = str(client.base_url)  # the client has its key: the SDK wants one
    else:
        env_url = os.environ.get("OPENAI_BASE_URL")
        server = base_url or (env_url or "").strip() or "api.openai.com"
        if not base_url and env_url is not None and env_url.strip():
            try:
                _check_base_url(env_url, "OPENAI_BASE_URL", ValueError)
            except ValueError as exc:
                problems.append(f"{exc}: agentic phases will fail")
        # The same rule as the adapter's when it builds its client: api_key=, else
        # the variable; empty is missing, and a local server needs some key too.
        key = api_key or os.environ.get("OPENAI_API_KEY")
        if not key:
            problems.append(
                "OPENAI_API_KEY is not set: agentic phases will fail (a local server "
                "that ignores keys still needs some value, e.g. OPENAI_API_KEY=none)"
            )
        elif not api_key:
            try:
                _check_api_key(key, "OPENAI_API_KEY", ValueError)
            except ValueError as exc:
                problems.append(f"{exc}: agentic phases will fail")
    return [
        f"agentic phases: OpenAI model {model} at {_masked_url(server)}",
        *(f"warning: {problem}" for problem in problems),
    ]


def _agentic_adapter_is_builtin(engine: ECSWorkflowEngine) -> bool:
    """True while no adapter was chosen for agentic phases (an app's own one wins)."""
    current = engine.adapter_for(TaskType.AGENTIC)
    return current is None or type(current) is AgenticAdapter


def _model() -> str:
    """The model ``WFE_AGENT=openai`` runs agents on."""
    return os.environ.get("WFE_OPENAI_MODEL", "").strip() or DEFAULT_MODEL

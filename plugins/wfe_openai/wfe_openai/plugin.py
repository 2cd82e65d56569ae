"""The wfcore plugin: with ``WFE_AGENT=openai``, a starting engine runs agentic phases on OpenAI.

Registered under the ``wfcore`` entry-point group. It changes nothing unless
``WFE_AGENT=openai`` is set, and then only for an engine whose agentic adapter is
still the built-in one (an adapter registered in code always wins). The model is
``WFE_OPENAI_MODEL`` (default ``gpt-4o``), the request timeout and retries
``WFE_OPENAI_TIMEOUT`` and ``WFE_OPENAI_MAX_RETRIES``; the key and server come from
``OPENAI_API_KEY`` and ``OPENAI_BASE_URL``. Any other non-empty ``WFE_AGENT`` is
warned about, once per value, and changes nothing. As an engine starts, the keys
of an ``OpenAIAgentAdapter``'s ``phase_options`` that name no phase of its
workflows are warned about (a typo would leave the options unused without a word).

``wfe_report_header`` tells the operator of a ``wfe worker`` which model and server
its agentic phases run on, and warns when they are bound to fail (no key, or a key
or server URL the adapter refuses) or go elsewhere than meant (``OPENAI_API_BASE``
set instead of ``OPENAI_BASE_URL``). The key itself is never shown.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from typing import TYPE_CHECKING, Any

from wfcore import PluginError, TaskType, hookimpl
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
# Adapter classes WFE_AGENT=openai was warned about leaving in place (likewise).
_warned_kept: set[str] = set()


@hookimpl
def wfe_engine_started(engine: ECSWorkflowEngine) -> None:
    """Register an OpenAIAgentAdapter when ``WFE_AGENT=openai`` and none was chosen in
    code; warn about ``phase_options`` keys that name no phase."""
    _warn_about_unused_phase_options(engine)
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
        _warn_about_kept_adapter(engine)
        return
    try:
        settings = _env_settings()
    except ValueError as exc:
        # Refuses the start: wfe worker exits with the message.
        raise PluginError(str(exc)) from None
    from .adapter import OpenAIAgentAdapter

    model = _model()
    adapter = OpenAIAgentAdapter(model=model, **settings)
    # The operator sets its timeout: a timed-out request's error names the variable.
    adapter._timeout_setting = "WFE_OPENAI_TIMEOUT"
    engine.register_adapter(TaskType.AGENTIC, adapter)
    logger.info("agentic phases run on OpenAI model %s (WFE_AGENT=openai)", model)


def _warn_about_kept_adapter(engine: ECSWorkflowEngine) -> None:
    """Warn, once per adapter class, that ``WFE_AGENT=openai`` leaves the agentic
    adapter the app (or another installed plugin) registered in place.

    The operator asked for OpenAI: without a word, the agentic phases would run on
    another adapter (one a plugin registers, say) and no request would reach the
    model. An ``OpenAIAgentAdapter`` is what was asked for: nothing to say.
    """
    current = engine.adapter_for(TaskType.AGENTIC)
    adapter_module = sys.modules.get(f"{__package__}.adapter")
    if adapter_module is not None and isinstance(current, adapter_module.OpenAIAgentAdapter):
        return
    kind = type(current)
    name = f"{kind.__module__}.{kind.__qualname__}"
    if name in _warned_kept:
        return
    _warned_kept.add(name)
    logger.warning(
        "WFE_AGENT=openai is ignored: agentic phases keep the adapter registered in "
        "code or by a plugin (%s); WFE_AGENT=openai replaces only the built-in one",
        name,
    )


def _env_settings() -> dict[str, Any]:
    """The adapter options ``WFE_OPENAI_TIMEOUT`` and ``WFE_OPENAI_MAX_RETRIES`` give
    (unset or empty: the SDK's defaults); ValueError naming a value that cannot work."""
    settings: dict[str, Any] = {}
    timeout = os.environ.get("WFE_OPENAI_TIMEOUT", "").strip()
    if timeout:
        try:
            seconds = float(timeout)
        except ValueError:
            seconds = math.nan
        if not (math.isfinite(seconds) and seconds > 0):
            raise ValueError(
                "WFE_OPENAI_TIMEOUT must be a number of seconds > 0 (the wait for each "
                f"reply), such as 120, not {timeout!r}"
            )
        settings["timeout"] = seconds
    retries = os.environ.get("WFE_OPENAI_MAX_RETRIES", "").strip()
    if retries:
        if not (retries.isascii() and retries.isdigit()):
            raise ValueError(
                "WFE_OPENAI_MAX_RETRIES must be a whole number >= 0 (the retries of a "
                f"failed request), such as 2, not {retries!r}"
            )
        settings["max_retries"] = int(retries)
    return settings


def _warn_about_unused_phase_options(engine: ECSWorkflowEngine) -> None:
    """Warn, once per adapter and key, about ``phase_options`` keys naming no phase of
    the engine's workflows."""
    adapter_module = sys.modules.get(f"{__package__}.adapter")
    adapter = engine.adapter_for(TaskType.AGENTIC)
    if adapter_module is None or not isinstance(adapter, adapter_module.OpenAIAgentAdapter):
        return
    phases = {p.target_classification for spec in engine.workflows.values() for p in spec.phases}
    if not phases:
        return  # workflows come later (defined at run time): nothing to compare with
    for key in sorted(set(adapter.phase_options) - phases - adapter._warned_phase_options):
        adapter._warned_phase_options.add(key)
        logger.warning(
            "phase_options[%r] names no phase of this engine's workflows (phases: %s); "
            "its options apply to no phase",
            key,
            ", ".join(sorted(phases)),
        )


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
    problems: list[str] = []
    if adapter_module is not None and isinstance(current, adapter_module.OpenAIAgentAdapter):
        model, api_key, base_url = current.model, current._api_key, current._base_url
        client: Any = current._given_client
        timeout = current.request_options.get("timeout")
        retries = current._max_retries
    elif os.environ.get("WFE_AGENT", "").strip().lower() in ACCEPTED_AGENTS:
        if not _agentic_adapter_is_builtin(engine):
            return None  # the app chose another adapter, which WFE_AGENT leaves alone
        model, api_key, base_url, client = _model(), None, None, None
        try:
            settings = _env_settings()
        except ValueError as exc:
            settings = {}
            problems.append(f"{exc}: the worker will not start")
        timeout, retries = settings.get("timeout"), settings.get("max_retries")
    else:
        return None
    from .checks import _check_api_key, _check_base_url, _check_header_variables
    from .client import _api_base_ignored
    from .redaction import _masked_url

    if client is not None:
        server = str(client.base_url)  # the client has its key: the SDK wants one
    else:
        ignored = None if base_url else _api_base_ignored()
        if ignored is not None:
            problems.append(ignored)
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
        try:
            _check_header_variables(ValueError)
        except ValueError as exc:
            problems.append(f"{exc}: agentic phases will fail")
    limits = []
    if isinstance(timeout, (int, float)):
        limits.append(f"timeout {timeout:g} s per request")
    if retries is not None:
        limits.append(f"max_retries {retries}")
    shown = f" ({', '.join(limits)})" if limits else ""
    return [
        f"agentic phases: OpenAI model {model} at {_masked_url(server)}{shown}",
        *(f"warning: {problem}" for problem in problems),
    ]


def _agentic_adapter_is_builtin(engine: ECSWorkflowEngine) -> bool:
    """True while no adapter was chosen for agentic phases (an app's own one wins)."""
    current = engine.adapter_for(TaskType.AGENTIC)
    return current is None or type(current) is AgenticAdapter


def _model() -> str:
    """The model ``WFE_AGENT=openai`` runs agents on."""
    return os.environ.get("WFE_OPENAI_MODEL", "").strip() or DEFAULT_MODEL

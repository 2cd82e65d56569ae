"""Auto-wiring: a worker whose environment names Kafka brokers consumes and publishes by itself.

Registered under the ``wfcore`` entry-point group. When ``KAFKA_BROKERS`` (or the
engine's ``settings``) is set, ``wfe_engine_started`` attaches a
:class:`~wfe_kafka.KafkaMQInterface` to the engine and starts consuming, and
``wfe_engine_stopping`` closes it. An engine that already has an interface
attached by hand is left alone. ``wfe_report_header`` tells the operator of a
``wfe worker`` what it is wired to (or what is wrong with the settings), from the
same settings and without connecting. Unconfigured, the hooks return at once and
kafka-python is never imported.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any, NoReturn

from wfcore import ECSWorkflowEngine, PluginError, hookimpl

from .settings import CLIENT_CONFIG_VAR, ENV_VARS, kafka_settings

if TYPE_CHECKING:
    from .interface import KafkaMQInterface

__all__ = ["interface_for"]


_WIRED: weakref.WeakKeyDictionary[ECSWorkflowEngine, KafkaMQInterface] = weakref.WeakKeyDictionary()


def interface_for(engine: ECSWorkflowEngine) -> KafkaMQInterface | None:
    """The interface auto-wiring attached to this running engine, or None."""
    return _WIRED.get(engine)


@hookimpl
async def wfe_engine_started(engine: ECSWorkflowEngine) -> None:
    try:
        settings = kafka_settings(engine)
    except ValueError as exc:
        _refuse(exc)
    if settings is None or engine in _WIRED:
        return
    from .interface import ATTACHED

    if engine in ATTACHED:
        return  # wired by hand (attach, consume_tasks or start) before it ran

    try:
        iface = _interface(settings)
    except ValueError as exc:
        _refuse(exc)
    _WIRED[engine] = iface
    await iface.start(engine)


@hookimpl
def wfe_report_header(engine: ECSWorkflowEngine) -> str | None:
    """What auto-wiring will do for this engine, from the settings it will use, without
    connecting; what is wrong with them when it cannot (the start then fails with it)."""
    try:
        settings = kafka_settings(engine)
        if settings is None:
            return None
        from .interface import ATTACHED

        wired = _WIRED.get(engine)
        if wired is None and engine in ATTACHED:
            return (
                f"kafka: {ATTACHED[engine]!r} attached in code; KAFKA_BROKERS and the "
                "WFE_KAFKA_* settings are not used"
            )
        iface = wired or _interface(settings)
    except ValueError as exc:
        return f"kafka: settings cannot be used: {_problem(exc)}"
    events = f"events to {iface.events_topic}; " if iface.events_topic else ""
    if iface.dead_letter_topic:
        dead_letters = f"dead letters to {iface.dead_letter_topic}"
    else:  # dead_letter_topic "" (in WFE_KAFKA_CLIENT_CONFIG)
        dead_letters = "bad messages only logged (no dead-letter topic)"
    return (
        f"kafka: consuming {iface.tasks_topic} (group {iface.group_id}) at "
        f"{','.join(iface.bootstrap_servers)}; results to {iface.results_topic}; "
        f"{events}{dead_letters}"
    )


def _interface(settings: dict[str, Any]) -> KafkaMQInterface:
    """The interface auto-wiring makes from its settings (nothing connects yet);
    ValueError when they cannot work."""
    from .interface import KafkaMQInterface

    return KafkaMQInterface(**settings)


def _problem(error: ValueError) -> str:
    """What is wrong with the settings, in one line naming the variable."""
    text = str(error)
    # The interface names its arguments; the person set environment variables.
    for variable, (argument, _convert) in ENV_VARS.items():
        if text.startswith((f"{argument}=", f"{argument}:")):
            text = variable + text[len(argument) :]
            break
    else:
        if "kafka-python setting" in text:
            text = f"{CLIENT_CONFIG_VAR}: {text}"
    return text


def _refuse(error: ValueError) -> NoReturn:
    """Refuse the engine's start, in one line naming the variable: a worker meant to
    serve Kafka must not quietly run without it."""
    raise PluginError(f"Kafka settings cannot be used: {_problem(error)}") from None


@hookimpl
async def wfe_engine_stopping(engine: ECSWorkflowEngine) -> None:
    iface = _WIRED.pop(engine, None)
    if iface is not None:
        await iface.close()

"""Auto-wiring: a worker whose environment names Kafka brokers consumes and publishes by itself.

Registered under the ``wfcore`` entry-point group. When ``KAFKA_BROKERS`` (or the
engine's ``settings``) is set, ``wfe_engine_started`` attaches a
:class:`~wfe_kafka.KafkaMQInterface` to the engine and starts consuming, and
``wfe_engine_stopping`` closes it. An engine that already has an interface
attached by hand is left alone. Unconfigured, both hooks return at once and
kafka-python is never imported.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, NoReturn

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
    from .interface import ATTACHED, KafkaMQInterface

    if engine in ATTACHED:
        return  # wired by hand (attach, consume_tasks or start) before it ran

    try:
        iface = KafkaMQInterface(**settings)
    except ValueError as exc:
        _refuse(exc)
    _WIRED[engine] = iface
    await iface.start(engine)


def _refuse(error: ValueError) -> NoReturn:
    """Refuse the engine's start, in one line naming the variable: a worker meant to
    serve Kafka must not quietly run without it."""
    text = str(error)
    # The interface names its arguments; the person set environment variables.
    for variable, (argument, _convert) in ENV_VARS.items():
        if text.startswith((f"{argument}=", f"{argument}:")):
            text = variable + text[len(argument) :]
            break
    else:
        if "kafka-python setting" in text:
            text = f"{CLIENT_CONFIG_VAR}: {text}"
    raise PluginError(f"Kafka settings cannot be used: {text}") from None


@hookimpl
async def wfe_engine_stopping(engine: ECSWorkflowEngine) -> None:
    iface = _WIRED.pop(engine, None)
    if iface is not None:
        await iface.close()

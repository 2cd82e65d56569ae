"""Auto-wiring: a worker whose environment names Kafka brokers consumes and publishes by itself.

Registered under the ``wfcore`` entry-point group. When ``KAFKA_BROKERS`` (or the
engine's ``settings``) is set, ``wfe_engine_started`` attaches a
:class:`~wfe_kafka.KafkaMQInterface` to the engine and starts consuming, and
``wfe_engine_stopping`` closes it. An engine that already has an interface
attached by hand is left alone. Unconfigured, both hooks return at once and
kafka-python is never imported.
"""

from __future__ import annotations

import logging
import weakref
from typing import TYPE_CHECKING

from wfcore import ECSWorkflowEngine, hookimpl

from .settings import ENV_VARS, kafka_settings

if TYPE_CHECKING:
    from .interface import KafkaMQInterface

__all__ = ["interface_for"]

logger = logging.getLogger("wfe_kafka")

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
        return
    if settings is None or engine in _WIRED:
        return
    from .interface import ATTACHED, KafkaMQInterface

    if engine in ATTACHED:
        return  # wired by hand (attach, consume_tasks or start) before it ran

    try:
        iface = KafkaMQInterface(**settings)
    except ValueError as exc:
        _refuse(exc)
        return
    _WIRED[engine] = iface
    await iface.start(engine)


def _refuse(error: ValueError) -> None:
    """Say, in one line naming the variable, why Kafka is not wired."""
    text = str(error)
    # The interface names its arguments; the person set environment variables.
    for variable, (argument, _convert) in ENV_VARS.items():
        if text.startswith((f"{argument}=", f"{argument}:")):
            text = variable + text[len(argument) :]
            break
    logger.error("Kafka is not started, this worker runs without it: %s", text)


@hookimpl
async def wfe_engine_stopping(engine: ECSWorkflowEngine) -> None:
    iface = _WIRED.pop(engine, None)
    if iface is not None:
        await iface.close()

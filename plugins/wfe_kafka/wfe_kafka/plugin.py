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

import asyncio
import logging
import re
import weakref
from typing import TYPE_CHECKING, Any, NoReturn

from wfcore import ECSWorkflowEngine, PluginError, hookimpl

from .settings import (
    CLIENT_CONFIG_VAR,
    ENV_VARS,
    _merged,
    kafka_off_reason,
    kafka_settings,
    misnamed_brokers,
)

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
    if settings is None:
        misnamed = misnamed_brokers(_merged(engine))
        off = kafka_off_reason(_merged(engine))
        if misnamed is not None:
            logger.warning(
                "%s is set but KAFKA_BROKERS is not: wfe_kafka reads only KAFKA_BROKERS, "
                "so this worker does not consume from Kafka",
                misnamed,
            )
        elif off is not None:
            logger.warning("%s: this worker does not consume from Kafka", off)
        return
    if engine in _WIRED:
        return
    from .interface import ATTACHED, volatile_store_problem

    if engine in ATTACHED:
        return  # wired by hand (attach, consume_tasks or start) before it ran

    try:
        iface = _interface(settings)
    except ValueError as exc:
        _refuse(exc)
    store = await engine.get_store()
    if not store.durable and not iface.allow_volatile_store:
        _refuse(ValueError(volatile_store_problem(store.url)))
    _WIRED[engine] = iface
    await iface.start(engine)
    consumer = iface._consumer_task
    if consumer is not None:
        consumer.add_done_callback(lambda task: _consumer_ended(engine, iface, task))


def _consumer_ended(
    engine: ECSWorkflowEngine, iface: KafkaMQInterface, task: asyncio.Task[None]
) -> None:
    """Stop the engine when its auto-wired consumer stops for good while it runs:
    kafka-python refused a setting (or the consumer thread died). A worker meant to
    serve Kafka must not go on looking healthy with its store's tasks alone."""
    if _WIRED.get(engine) is not iface or not engine.running or task.cancelled():
        return
    error = task.exception()
    if error is None:
        return  # stopped on purpose (close)
    logger.error("the Kafka consumer stopped for good (%s); stopping the worker", error)
    stopped = PluginError(f"plugin 'wfe_kafka': the Kafka consumer stopped for good ({error})")
    engine.stop(error=stopped)


@hookimpl
def wfe_report_header(engine: ECSWorkflowEngine) -> str | None:
    """What auto-wiring will do for this engine, from the settings it will use, without
    connecting; what is wrong with them when it cannot (the start then fails with it)."""
    try:
        settings = kafka_settings(engine)
        if settings is None:
            off = kafka_off_reason(_merged(engine))
            return None if off is None else f"kafka: off: {off}"
        from .interface import ATTACHED, volatile_store_problem

        wired = _WIRED.get(engine)
        if wired is None and engine in ATTACHED:
            return (
                f"kafka: {ATTACHED[engine]!r} attached in code; KAFKA_BROKERS and the "
                "WFE_KAFKA_* settings are not used"
            )
        iface = wired or _interface(settings)
        # The store is not open yet: its URL tells the built-in memory store.
        if wired is None and engine.store_url.startswith("memory:"):
            if not iface.allow_volatile_store:
                raise ValueError(volatile_store_problem(engine.store_url))
    except ValueError as exc:
        return f"kafka: settings cannot be used: {_problem(exc)}"
    events = f"events to {iface.events_topic}; " if iface.events_topic else ""
    if iface.dead_letter_topic:
        dead_letters = f"dead letters to {iface.dead_letter_topic}"
    else:  # dead_letter_topic "" (WFE_KAFKA_DLQ_TOPIC=none)
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
    return _problem_text(error)


# An interface argument named in a message: not part of a longer word or variable.
_ARGUMENT = re.compile(
    r"(?<![A-Za-z0-9_])(" + "|".join(a for a, _c in ENV_VARS.values()) + r")(?![A-Za-z0-9_])"
)
_VARIABLES = {argument: variable for variable, (argument, _convert) in ENV_VARS.items()}


# Interface arguments without a variable of their own: set in WFE_KAFKA_CLIENT_CONFIG.
_CLIENT_CONFIG_ARGUMENTS = (
    "max_poll_records",
    "close_timeout",
    "outbox_consumer",
    "producer_config",
    "consumer_config",
)


def _problem_text(error: BaseException) -> str:
    text = str(error)
    if text.startswith(CLIENT_CONFIG_VAR) or text.startswith("WFE_KAFKA_"):
        return text  # names the variable already
    if text.startswith(_CLIENT_CONFIG_ARGUMENTS):
        return f"{CLIENT_CONFIG_VAR}: {text}"
    # The interface names its arguments; the person set environment variables.
    named = _ARGUMENT.sub(lambda m: _VARIABLES[m.group(1)], text)
    if named == text and "kafka-python setting" in text:
        named = f"{CLIENT_CONFIG_VAR}: {text}"
    return named


def _refuse(error: ValueError) -> NoReturn:
    """Refuse the engine's start, in one line naming the variable: a worker meant to
    serve Kafka must not quietly run without it."""
    raise PluginError(f"Kafka settings cannot be used: {_problem(error)}") from None


@hookimpl
async def wfe_engine_stopping(engine: ECSWorkflowEngine) -> None:
    iface = _WIRED.pop(engine, None)
    if iface is not None:
        await iface.close()

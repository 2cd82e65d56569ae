"""Configuration from the environment (or an engine's ``settings`` mapping) for auto-wiring."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from .validation import SECONDS, WHOLE_NUMBER

__all__ = ["ENV_VARS", "kafka_settings", "settings_from"]

#: Setting name -> (KafkaMQInterface argument, converter).
ENV_VARS: dict[str, tuple[str, Any]] = {
    "KAFKA_BROKERS": ("bootstrap_servers", str),
    "WFE_KAFKA_TASKS_TOPIC": ("tasks_topic", str),
    "WFE_KAFKA_RESULTS_TOPIC": ("results_topic", str),
    "WFE_KAFKA_GROUP": ("group_id", str),
    "WFE_KAFKA_DLQ_TOPIC": ("dead_letter_topic", str),
    "WFE_KAFKA_EVENTS_TOPIC": ("events_topic", str),
    "WFE_KAFKA_MAX_PENDING": ("max_pending", int),
    "WFE_KAFKA_OUTBOX_GRACE": ("outbox_grace", float),
}

# What a number setting must be, in the words the interface refuses a bad value
# with: text that is not a number at all reads the same as one out of range.
_EXPECTED = {int: WHOLE_NUMBER, float: SECONDS}

#: A JSON object of extra kafka-python settings (SASL/SSL, timeouts, ...).
CLIENT_CONFIG_VAR = "WFE_KAFKA_CLIENT_CONFIG"


def settings_from(source: Mapping[str, str]) -> dict[str, Any] | None:
    """KafkaMQInterface arguments from a mapping of the variables above; None
    when ``KAFKA_BROKERS`` is unset or empty (Kafka is off)."""
    if not str(source.get("KAFKA_BROKERS") or "").strip():
        return None
    settings: dict[str, Any] = {}
    for name, (argument, convert) in ENV_VARS.items():
        value = source.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        if convert in _EXPECTED and not isinstance(value, str):
            # A number in an engine's settings: the interface checks it as it is
            # (int() would turn 2.5 into 2 and True into 1 without a word).
            settings[argument] = value
            continue
        try:
            settings[argument] = convert(value)
        except ValueError:
            raise ValueError(f"{name}={value!r}: expected {_EXPECTED[convert]}") from None
    raw = source.get(CLIENT_CONFIG_VAR)
    if raw:
        try:
            extra = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError as exc:
            raise ValueError(f"{CLIENT_CONFIG_VAR} is not valid JSON: {exc}") from None
        if not isinstance(extra, Mapping):
            raise ValueError(f"{CLIENT_CONFIG_VAR} must be a JSON object, got {raw!r}")
        settings.update(extra)
    return settings


def kafka_settings(engine: Any = None) -> dict[str, Any] | None:
    """Settings for an engine: its ``settings`` mapping (if it has one) over the
    environment. None when Kafka is not configured."""
    merged: dict[str, Any] = dict(os.environ)
    own = getattr(engine, "settings", None)
    if isinstance(own, Mapping):
        merged.update({k: v for k, v in own.items() if v is not None})
    return settings_from(merged)

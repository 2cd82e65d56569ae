"""Configuration from the environment (or an engine's ``settings`` mapping) for auto-wiring."""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Mapping
from typing import Any

from .validation import FLAG, SECONDS, WHOLE_NUMBER

__all__ = ["ENV_VARS", "kafka_off_reason", "kafka_settings", "misnamed_brokers", "settings_from"]


def _flag(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


def _dead_letter_topic(text: str) -> str:
    # "none": no dead-letter topic (bad messages are only logged). An empty value
    # is no setting at all, as for every variable: a template that leaves it
    # empty must not turn dead letters off.
    return "" if text.strip().lower() == "none" else text


#: Setting name -> (KafkaMQInterface argument, converter).
ENV_VARS: dict[str, tuple[str, Any]] = {
    "KAFKA_BROKERS": ("bootstrap_servers", str),
    "WFE_KAFKA_TASKS_TOPIC": ("tasks_topic", str),
    "WFE_KAFKA_RESULTS_TOPIC": ("results_topic", str),
    "WFE_KAFKA_GROUP": ("group_id", str),
    "WFE_KAFKA_DLQ_TOPIC": ("dead_letter_topic", _dead_letter_topic),
    "WFE_KAFKA_EVENTS_TOPIC": ("events_topic", str),
    "WFE_KAFKA_MAX_PENDING": ("max_pending", int),
    "WFE_KAFKA_OUTBOX_GRACE": ("outbox_grace", float),
    "WFE_KAFKA_ALLOW_VOLATILE_STORE": ("allow_volatile_store", _flag),
}

# What a number or flag setting must be, in the words the interface refuses a bad
# value with: text that is not a number at all reads the same as one out of range.
_EXPECTED = {int: WHOLE_NUMBER, float: SECONDS, _flag: FLAG}

#: A JSON object of extra kafka-python settings (SASL/SSL, timeouts, ...).
CLIENT_CONFIG_VAR = "WFE_KAFKA_CLIENT_CONFIG"

# WFE_KAFKA_* names that are not worker settings: those of the test broker's
# script (broker/kafka_broker.py) and of the tests.
_OTHER_VARS = ("WFE_KAFKA_BOOTSTRAP", "WFE_KAFKA_CACHE")

# Names people reach for instead of KAFKA_BROKERS (other tools' conventions).
_BROKERS_MISNAMED = ("KAFKA_BROKER", "KAFKA_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVER")


def settings_from(source: Mapping[str, str]) -> dict[str, Any] | None:
    """KafkaMQInterface arguments from a mapping of the variables above; None
    when ``KAFKA_BROKERS`` is unset or empty (Kafka is off).

    A ``WFE_KAFKA_*`` name that is none of them is refused (ValueError, with the
    name it most resembles): a misspelt ``WFE_KAFKA_TASK_TOPIC`` would otherwise
    leave the worker consuming the default topic without a word.
    """
    if not str(source.get("KAFKA_BROKERS") or "").strip():
        return None
    known = {*ENV_VARS, CLIENT_CONFIG_VAR, *_OTHER_VARS}
    for name in sorted(source):
        if isinstance(name, str) and name.startswith("WFE_KAFKA_") and name not in known:
            raise ValueError(f"{name} is not a wfe_kafka setting{_did_you_mean(name)}")
    settings: dict[str, Any] = {}
    for name, (argument, convert) in ENV_VARS.items():
        value = source.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        if convert in _EXPECTED and not isinstance(value, str):
            # A number (or flag) in an engine's settings: the interface checks it as
            # it is (int() would turn 2.5 into 2 and True into 1 without a word).
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
        # An argument that has a variable of its own is set there: here it would
        # win over that variable, and a refusal would name the variable instead.
        variables = {argument: name for name, (argument, _convert) in ENV_VARS.items()}
        for key in extra:
            if key in variables:
                raise ValueError(
                    f"{CLIENT_CONFIG_VAR}: {key!r} is set with {variables[key]}, not here"
                )
        settings.update(extra)
    return settings


# Names meant for a setting that similarity alone does not find.
_MEANT = {
    "BROKERS": "KAFKA_BROKERS",
    "BROKER": "KAFKA_BROKERS",
    "BOOTSTRAP_SERVERS": "KAFKA_BROKERS",
    "DLQ": "WFE_KAFKA_DLQ_TOPIC",
    "DEAD_LETTER_TOPIC": "WFE_KAFKA_DLQ_TOPIC",
    "DEAD_LETTERS_TOPIC": "WFE_KAFKA_DLQ_TOPIC",
    "GROUP_ID": "WFE_KAFKA_GROUP",
    "CONSUMER_GROUP": "WFE_KAFKA_GROUP",
}


def _did_you_mean(name: str) -> str:
    """`` (did you mean WFE_KAFKA_...?)`` for a WFE_KAFKA_* name that is no setting."""
    rest = name[len("WFE_KAFKA_") :]
    if rest in _MEANT:
        return f" (did you mean {_MEANT[rest]}?)"
    # Compared without the prefix they all share, which would make any name look
    # like one of them.
    ours = {
        v[len("WFE_KAFKA_") :]: v for v in [*ENV_VARS, CLIENT_CONFIG_VAR] if v != "KAFKA_BROKERS"
    }
    close = difflib.get_close_matches(rest, list(ours), n=1)
    return f" (did you mean {ours[close[0]]}?)" if close else ""


def misnamed_brokers(source: Mapping[str, str]) -> str | None:
    """The variable that looks meant for ``KAFKA_BROKERS`` when that is unset and a
    name other tools use (``KAFKA_BOOTSTRAP_SERVERS``, ``KAFKA_BROKER``) is set."""
    if str(source.get("KAFKA_BROKERS") or "").strip():
        return None
    for name in _BROKERS_MISNAMED:
        if str(source.get(name) or "").strip():
            return name
    return None


def kafka_off_reason(source: Mapping[str, Any]) -> str | None:
    """Why a worker configured for Kafka runs without it, when it looks meant to
    use it: a name other tools use for the brokers (see :func:`misnamed_brokers`),
    ``KAFKA_BROKERS`` set but empty (a deployment's unresolved placeholder, say), or
    unset while ``WFE_KAFKA_*`` settings are given. None when Kafka is on, or off
    with nothing pointing at it."""
    misnamed = misnamed_brokers(source)
    if misnamed is not None:
        return f"{misnamed} is set, but wfe_kafka reads KAFKA_BROKERS"
    brokers = source.get("KAFKA_BROKERS")
    if str(brokers or "").strip():
        return None
    if brokers is not None:
        return "KAFKA_BROKERS is set but empty"
    for name in sorted(source):
        if name in (*ENV_VARS, CLIENT_CONFIG_VAR) and str(source.get(name) or "").strip():
            return f"{name} is set, but KAFKA_BROKERS is not"
    return None


def _merged(engine: Any) -> dict[str, Any]:
    merged: dict[str, Any] = dict(os.environ)
    own = getattr(engine, "settings", None)
    if isinstance(own, Mapping):
        merged.update({k: v for k, v in own.items() if v is not None})
    return merged


def kafka_settings(engine: Any = None) -> dict[str, Any] | None:
    """Settings for an engine: its ``settings`` mapping (if it has one) over the
    environment. None when Kafka is not configured."""
    return settings_from(_merged(engine))

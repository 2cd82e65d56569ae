"""Checks of a KafkaMQInterface's arguments and kafka-python settings.

Everything is checked when the interface is made, with a message naming the
argument or setting: kafka-python would only fail later, on the consumer's
thread, where a setting that can never work looks like Kafka being unreachable.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

#: What a count (``max_pending``, ``max_poll_records``) and ``outbox_grace`` must be,
#: in the words of every message refusing one, however it was given.
WHOLE_NUMBER = "a whole number, at least 1"
SECONDS = "a finite number of seconds, at least 0"
FLAG = "true or false (1 or 0)"


def _check_arguments(
    *,
    bootstrap_servers: str | Sequence[str],
    tasks_topic: str,
    results_topic: str,
    group_id: str,
    dead_letter_topic: str | None,
    events_topic: str | None,
    max_pending: int,
    max_poll_records: int,
    outbox_grace: float,
    close_timeout: float,
    allow_volatile_store: bool,
    outbox_consumer: str | None,
    producer_config: Mapping[str, Any] | None,
    consumer_config: Mapping[str, Any] | None,
    client_config: Mapping[str, Any],
) -> list[str]:
    """Refuse the arguments of a KafkaMQInterface that cannot work; return the
    brokers as a list (``bootstrap_servers`` may be a comma-separated string)."""
    for argument, count in (
        ("max_pending", max_pending),
        ("max_poll_records", max_poll_records),
    ):
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"{argument}={count!r}: expected {WHOLE_NUMBER}")
    # close_timeout is only used when the interface stops: a bad one would fail
    # the stop, long after the worker started.
    for argument, seconds in (("outbox_grace", outbox_grace), ("close_timeout", close_timeout)):
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, (int, float))
            or not math.isfinite(seconds)
            or seconds < 0
        ):
            raise ValueError(f"{argument}={seconds!r}: expected {SECONDS}")
    if not isinstance(allow_volatile_store, bool):
        raise ValueError(f"allow_volatile_store={allow_volatile_store!r}: expected {FLAG}")
    if outbox_consumer is not None and not isinstance(outbox_consumer, str):
        raise ValueError(f"outbox_consumer={outbox_consumer!r}: expected a string")
    for argument, settings in (
        ("producer_config", producer_config),
        ("consumer_config", consumer_config),
    ):
        if settings is not None and not isinstance(settings, Mapping):
            raise ValueError(
                f"{argument}={settings!r}: expected a mapping of kafka-python settings"
            )
    if isinstance(bootstrap_servers, str):
        bootstrap_servers = [s.strip() for s in bootstrap_servers.split(",") if s.strip()]
    # Checked here, once, with a message naming the setting: kafka-python would
    # only fail later, on the consumer's thread, and the consumer would retry
    # a setting that can never work for as long as the worker runs.
    _check_servers(bootstrap_servers)
    for argument, topic in (
        ("tasks_topic", tasks_topic),
        ("results_topic", results_topic),
        ("dead_letter_topic", dead_letter_topic or "-"),  # "" or None: no check
        ("events_topic", events_topic or "-"),
    ):
        _check_topic(argument, topic)
    others: tuple[tuple[str, str | None, str], ...] = (
        ("results_topic", results_topic, "results"),
        ("events_topic", events_topic, "lifecycle events"),
        ("dead_letter_topic", dead_letter_topic, "dead letters"),
    )
    for argument, other, what in others:
        if other == tasks_topic:
            # Each would come back as a task message: events and results (they
            # have a workflow_name) as new tasks that send more, dead letters as
            # bad messages dead-lettered again, for ever.
            raise ValueError(
                f"{argument}={other!r} is the tasks topic too (tasks_topic={tasks_topic!r}): "
                f"the workers would consume their own {what} as task messages, without end"
            )
    if not isinstance(group_id, str) or not group_id:
        raise ValueError(f"group_id must be a non-empty string, got {group_id!r}")
    _check_client_config(client_config, producer_config or {}, consumer_config or {})
    return list(bootstrap_servers)


# Settings of one client that the interface has an argument for: set in
# producer_config or consumer_config, they would win over that argument where the
# interface (its start-up line, its checks) still uses the argument's value.
_OWN_ARGUMENTS = {"bootstrap_servers": "KAFKA_BROKERS", "group_id": "WFE_KAFKA_GROUP"}


_TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]{1,249}")


def _check_topic(argument: str, topic: object) -> None:
    """Refuse a name Kafka would refuse as a topic (its own rule: ASCII letters,
    digits, '.', '_' and '-', at most 249 characters, not '.' or '..')."""
    if not isinstance(topic, str) or not _TOPIC_NAME.fullmatch(topic) or topic in (".", ".."):
        raise ValueError(
            f"{argument}={topic!r} is not a valid Kafka topic name (1 to 249 ASCII "
            "letters, digits, '.', '_' or '-'; not '.' or '..')"
        )


def _check_servers(servers: Sequence[str]) -> None:
    from kafka.cluster import get_ip_port_afi

    if not servers:
        raise ValueError("bootstrap_servers: no broker given (expected host:port,...)")
    for server in servers:
        try:
            # kafka-python's own parser, after the protocol prefix it ignores.
            host, port, _family = get_ip_port_afi(re.sub("^.*://", "", server))
        except ValueError:  # no port number where one should be, an unclosed [
            host, port = "", 0
        if not host or any(c.isspace() for c in server):
            raise ValueError(f"bootstrap_servers: {server!r} is not host:port")
        if not 0 < port < 65536:
            raise ValueError(
                f"bootstrap_servers: {server!r} is not host:port (the port must be 1-65535)"
            )


def _check_client_config(
    client: Mapping[str, Any], producer: Mapping[str, Any], consumer: Mapping[str, Any]
) -> None:
    """Refuse settings no kafka-python client knows: a misspelled setting (say,
    ``sasl_plain_pasword``) would otherwise be dropped without a word."""
    from kafka import KafkaConsumer, KafkaProducer

    known = {**KafkaProducer.DEFAULT_CONFIG, **KafkaConsumer.DEFAULT_CONFIG}
    for key in client:
        if key not in known:
            raise ValueError(
                f"unknown kafka-python setting {key!r} (not a KafkaProducer or "
                "KafkaConsumer setting)"
            )
    for argument, settings, cls in (
        ("producer_config", producer, KafkaProducer),
        ("consumer_config", consumer, KafkaConsumer),
    ):
        for key in settings:
            if key not in cls.DEFAULT_CONFIG:
                raise ValueError(f"{argument}: unknown {cls.__name__} setting {key!r}")
            if key in _OWN_ARGUMENTS:
                raise ValueError(
                    f"{argument}: {key!r} is set with the interface's own argument "
                    f"({key}=..., {_OWN_ARGUMENTS[key]}), not here"
                )
    # The values too: kafka-python checks some only when a client connects, on
    # the consumer's thread, where a bad one looked like Kafka being unreachable.
    for settings, cls in ((client, None), (producer, KafkaProducer), (consumer, KafkaConsumer)):
        for key, value in settings.items():
            _check_value(key, value, (cls.DEFAULT_CONFIG if cls else known).get(key))
    for settings in ({**client, **producer}, {**client, **consumer}):
        _check_security(settings)
        _check_files(settings)


# Settings naming a file kafka-python reads when it connects (on its IO thread,
# where a missing one only shows as "No such file or directory", again and again).
_FILE_SETTINGS = ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_crlfile")


def _check_files(settings: Mapping[str, Any]) -> None:
    for key in _FILE_SETTINGS:
        path = settings.get(key)
        if path is None:
            continue
        if not isinstance(path, (str, os.PathLike)) or not str(path):
            raise ValueError(f"kafka-python setting {key}={path!r}: expected a file name")
        if not os.path.exists(path):
            raise ValueError(f"kafka-python setting {key}={str(path)!r}: no such file")
        if not os.path.isfile(path):
            raise ValueError(f"kafka-python setting {key}={str(path)!r}: not a file")
        if not os.access(path, os.R_OK):
            raise ValueError(
                f"kafka-python setting {key}={str(path)!r}: cannot be read by this user"
            )


def _check_consumer(
    settings: Mapping[str, Any], given: Mapping[str, Any], own_defaults: Mapping[str, Any]
) -> None:
    """Refuse a consumer's timeouts that kafka-python refuses only when it makes the
    consumer, on its thread, where the consumer then stops for good.

    ``settings``: what the consumer is made with; ``given``: the settings passed to
    the interface; ``own_defaults``: wfe_kafka's defaults (to say where a value
    nobody gave comes from).
    """
    from kafka import KafkaConsumer

    settings = {**KafkaConsumer.DEFAULT_CONFIG, **settings}

    def named(key: str) -> str:
        if key in given:
            whose = ""
        elif key in own_defaults:
            whose = " (wfe_kafka's default)"
        else:
            whose = " (kafka-python's default)"
        return f"{key}={settings[key]!r}{whose}"

    session, heartbeat = settings["session_timeout_ms"], settings["heartbeat_interval_ms"]
    if _number(session) and _number(heartbeat) and not heartbeat < session:
        raise ValueError(
            f"kafka-python setting {named('session_timeout_ms')} must be more than "
            f"{named('heartbeat_interval_ms')}: set heartbeat_interval_ms too, to about a "
            "third of the session timeout"
        )
    waits = [settings[k] for k in _WAITS_IN_ORDER]
    if all(_number(w) for w in waits) and not waits[0] < waits[1] < waits[2]:
        raise ValueError(
            "kafka-python settings "
            + " < ".join(named(k) for k in _WAITS_IN_ORDER)
            + " do not hold: each must be less than the next"
        )


_WAITS_IN_ORDER = ("fetch_max_wait_ms", "request_timeout_ms", "connections_max_idle_ms")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
# Settings whose kafka-python default's type is not the only one it takes.
_ANY_TYPE = {"acks", "bootstrap_servers", "api_version"}


def _check_value(key: str, value: Any, default: Any) -> None:
    """Refuse a value whose type cannot be right for the setting: one of the
    default's type (a number for a number, true/false for a flag, a string)."""
    if key in _ANY_TYPE or default is None:
        return
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"kafka-python setting {key}={value!r}: expected true or false")
    elif isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ValueError(f"kafka-python setting {key}={value!r}: expected a number >= 0")
    elif isinstance(default, str):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"kafka-python setting {key}={value!r}: expected a string")


def _check_security(settings: Mapping[str, Any]) -> None:
    """Refuse security settings that cannot work together (one client's view)."""
    from kafka.net.sasl import SASL_MECHANISMS

    protocol = settings.get("security_protocol", "PLAINTEXT")
    if protocol not in _SECURITY_PROTOCOLS:
        raise ValueError(
            f"kafka-python setting security_protocol={protocol!r}: expected one of "
            + ", ".join(_SECURITY_PROTOCOLS)
        )
    mechanism = settings.get("sasl_mechanism")
    if not protocol.startswith("SASL_"):
        if mechanism is not None:
            raise ValueError(
                f"kafka-python setting sasl_mechanism={mechanism!r} has no effect with "
                f"security_protocol={protocol!r} (use SASL_PLAINTEXT or SASL_SSL)"
            )
        return
    if mechanism not in SASL_MECHANISMS:
        raise ValueError(
            f"kafka-python setting sasl_mechanism={mechanism!r}: expected one of "
            + ", ".join(sorted(SASL_MECHANISMS))
            + f" with security_protocol={protocol!r}"
        )
    assert isinstance(mechanism, str)  # a key of SASL_MECHANISMS: a mechanism's name
    if mechanism == "PLAIN" or mechanism.startswith("SCRAM-"):
        for companion in ("sasl_plain_username", "sasl_plain_password"):
            if not settings.get(companion):
                raise ValueError(
                    f"kafka-python setting sasl_mechanism={mechanism!r} needs {companion}"
                )
    elif mechanism == "OAUTHBEARER" and settings.get("sasl_oauth_token_provider") is None:
        raise ValueError(
            "kafka-python setting sasl_mechanism='OAUTHBEARER' needs sasl_oauth_token_provider"
        )

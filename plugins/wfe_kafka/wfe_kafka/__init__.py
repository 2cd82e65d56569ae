"""wfe_kafka: Kafka ingest, results, lifecycle events and scale-out for wfcore workers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .messages import FORMAT_VERSION, BadMessage, parse_task_message, task_message
from .settings import kafka_settings

if TYPE_CHECKING:
    from .interface import KafkaMQInterface

__all__ = [
    "FORMAT_VERSION",
    "BadMessage",
    "KafkaMQInterface",
    "kafka_settings",
    "parse_task_message",
    "task_message",
]


def __getattr__(name: str) -> Any:
    # The interface pulls in kafka-python; load it only when asked for, so that
    # an installed but unconfigured plugin costs nothing.
    if name == "KafkaMQInterface":
        from .interface import KafkaMQInterface

        return KafkaMQInterface
    raise AttributeError(f"module 'wfe_kafka' has no attribute {name!r}")

"""Helpers for the wfe_kafka tests: produce, read topics, offsets, polling with a
deadline, and ``wfe worker`` processes on the test app."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

# Short session timeouts: a killed worker's partitions move within seconds.
FAST_GROUP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}

#: The folder of the test app whose engine the worker processes serve
#: (``apps/wfe_kafka_app.py``, ``wfe_kafka_app:make_engine``).
APPS_DIR = Path(__file__).resolve().parent / "apps"


def worker_env(**env: str) -> dict[str, str]:
    """The test's environment without Kafka settings of its own (it keeps
    WFE_KAFKA_BOOTSTRAP, the test run's broker), with wfe_kafka loaded, plus ``env``."""
    mine = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("KAFKA_", "WFE_KAFKA_")) or k == "WFE_KAFKA_BOOTSTRAP"
    }
    return {**mine, "WFE_LOAD_PLUGINS": "wfe_kafka", **env}


def worker_command(store: str, *options: str) -> list[str]:
    """``wfe worker`` serving the test app's engine on ``store``, with ``options``
    (run it in APPS_DIR, where the app is imported from)."""
    return [
        sys.executable,
        "-m",
        "wfcore.cli",
        "worker",
        "wfe_kafka_app:make_engine",
        "--store",
        store,
        *options,
    ]


def start_worker(
    store: str, log: Path, env: Mapping[str, str], *options: str
) -> subprocess.Popen[bytes]:
    """Start :func:`worker_command` with ``env`` as its whole environment (see
    :func:`worker_env`), its output and errors going to the file ``log``."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            worker_command(store, *options),
            cwd=APPS_DIR,
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``condition`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def task_json(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def produce(
    bootstrap: str,
    topic: str,
    messages: Iterable[tuple[bytes | None, bytes | None] | tuple[bytes | None, bytes | None, Any]],
    partition: int | None = None,
    **config: Any,
) -> list[Any]:
    """Send ``(key, value)`` or ``(key, value, headers)`` messages with acks=all (and
    ``config``, further KafkaProducer settings); return their RecordMetadata."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, **config)
    try:
        futures = [
            producer.send(
                topic,
                key=key,
                value=value,
                headers=headers[0] if headers else None,
                partition=partition,
            )
            for key, value, *headers in messages
        ]
        producer.flush(timeout=30)
        return [f.get(timeout=30) for f in futures]
    finally:
        producer.close(timeout=10)


class TopicReader:
    """Reads a whole topic from the beginning (no group), accumulating records."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.records: list[Any] = []
        self._consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        partitions = wait_until(
            lambda: self._consumer.partitions_for_topic(topic), 30, f"metadata of {topic}"
        )
        self._consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
        self._consumer.seek_to_beginning()

    def poll(self) -> list[Any]:
        for batch in self._consumer.poll(timeout_ms=100).values():
            self.records.extend(batch)
        return self.records

    def wait_for(self, count: int, timeout: float = 60.0) -> list[Any]:
        """Read until at least ``count`` records arrived."""
        try:
            return wait_until(
                lambda: len(self.poll()) >= count and self.records,
                timeout,
                f"{count} records in {self.topic}",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc} (have {len(self.records)})") from None

    def values(self) -> list[Any]:
        return [json.loads(r.value) for r in self.records]

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> TopicReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def committed(bootstrap: str, group: str, topic: str, partitions: Sequence[int]) -> dict[int, int]:
    """The group's committed offset per partition (-1 or missing: none)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offsets = admin.list_group_offsets({group: [TopicPartition(topic, p) for p in partitions]})[
            group
        ]
        return {tp.partition: meta.offset for tp, meta in offsets.items()}
    finally:
        admin.close()


def group_state(bootstrap: str, group: str) -> tuple[str | None, int]:
    """The group's state and member count, as the broker reports them."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        info = admin.describe_groups([group])[group]
    except Exception:
        return None, 0
    finally:
        admin.close()
    return info.get("group_state"), len(info.get("members") or [])

"""Rebalances kafka-python 3.0.12 starts and would not finish, against the real broker."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from kafka import KafkaAdminClient, KafkaConsumer
from kafka.admin import NewPartitions
from wfe_kafka.consumer import _STABLE, _group_state, _poll


def test_a_paused_consumer_gets_the_partitions_added_to_its_topic(
    kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    """A worker paused by backpressure polls for 0 ms and waits outside kafka-python.
    Partitions added to its topic start a rebalance at such a poll; it ended while
    the consumer waited, and kafka-python never applied it: the consumer stayed
    rebalancing with no partitions (about 15 s, until the worker made a new one)."""
    topic = kafka_topic(partitions=2)
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"wfe-paused-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        metadata_max_age_ms=500,  # new partitions seen at once
    )
    try:
        consumer.topics()  # the topic's partitions known before the group is joined
        _wait_for(lambda: _held(consumer) == 2, consumer, "the first 2 partitions")
        admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        try:
            admin.create_partitions({topic: NewPartitions(total_count=6)})
        finally:
            admin.close()
        _wait_for(lambda: _held(consumer) == 6, consumer, "the 6 partitions")
    finally:
        consumer.close(autocommit=False)


def _held(consumer: KafkaConsumer) -> int:
    return len(consumer.assignment())


def _wait_for(condition: Callable[[], bool], consumer: KafkaConsumer, what: str) -> None:
    """Poll as the worker's consumer loop does while paused (0 ms while the group is
    stable, else 200 ms, a rest between polls) until ``condition`` holds."""
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, f"the consumer never held {what}"
        consumer.pause(*consumer.assignment())
        _poll(consumer, 0 if _group_state(consumer) == _STABLE else 200, max_records=1)
        time.sleep(0.2)  # the worker waits for room outside kafka-python

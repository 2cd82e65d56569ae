"""Checks that the test broker is a working Kafka for kafka-python 3.x clients.

* A produce/consume round trip with ``acks="all"`` over a 3-partition topic.
* A consumer group: two ``KafkaConsumer`` threads in one group share a
  6-partition topic and together see every message exactly once, committing
  their offsets.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

TopicFactory = Callable[..., str]


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll *condition* until it is true; fail with *what* after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def produce(
    bootstrap: str, topic: str, messages: Sequence[tuple[int | None, str, str]]
) -> list[Any]:
    """Send ``(partition, key, value)`` messages with ``acks="all"``; return their metadata."""
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=5,
    )
    try:
        futures = [
            producer.send(topic, key=key.encode(), value=value.encode(), partition=partition)
            for partition, key, value in messages
        ]
        producer.flush(timeout=30)
        return [future.get(timeout=30) for future in futures]
    finally:
        producer.close(timeout=10)


def test_produce_and_consume_100_messages(kafka_bootstrap: str, kafka_topic: TopicFactory) -> None:
    """100 keyed messages sent with acks=all to 3 partitions all come back, once each."""
    topic = kafka_topic(partitions=3, prefix="roundtrip")
    sent = [(None, f"key-{i}", f"value-{i}") for i in range(100)]
    metadata = produce(kafka_bootstrap, topic, sent)

    written = {
        (m.partition, m.offset): value for m, (_, _, value) in zip(metadata, sent, strict=True)
    }
    assert len(written) == 100
    assert {m.partition for m in metadata} == {0, 1, 2}

    consumer = KafkaConsumer(
        bootstrap_servers=kafka_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    received: list[tuple[int, int, str, str]] = []
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(3)])
        deadline = time.monotonic() + 60
        while len(received) < 100 and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                received.extend(
                    (r.partition, r.offset, r.key.decode(), r.value.decode()) for r in records
                )
    finally:
        consumer.close()

    assert len(received) == 100, f"received {len(received)} of 100 messages"
    assert {(p, o): v for p, o, _, v in received} == written
    assert sorted(k for _, _, k, _ in received) == sorted(k for _, k, _ in sent)


class GroupMember(threading.Thread):
    """A thread running one ``KafkaConsumer`` of a consumer group until told to stop.

    It records its current assignment and every record it receives, and
    commits synchronously after each non-empty poll.
    """

    def __init__(self, name: str, bootstrap: str, topic: str, group_id: str) -> None:
        """Prepare a member; the consumer is created in the thread itself."""
        super().__init__(name=name, daemon=True)
        self.bootstrap = bootstrap
        self.topic = topic
        self.group_id = group_id
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.assigned: frozenset[int] = frozenset()
        self.records: list[tuple[int, int, str]] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        """Poll, record and commit until :attr:`stopping` is set."""
        try:
            consumer = KafkaConsumer(
                self.topic,
                bootstrap_servers=self.bootstrap,
                group_id=self.group_id,
                client_id=self.name,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                session_timeout_ms=10000,
                heartbeat_interval_ms=1000,
                max_poll_records=25,
            )
        except BaseException as exc:
            self.error = exc
            return
        try:
            while not self.stopping.is_set():
                batch = consumer.poll(timeout_ms=100)
                got = [
                    (r.partition, r.offset, r.value.decode()) for rs in batch.values() for r in rs
                ]
                if got:
                    consumer.commit()
                with self.lock:
                    self.assigned = frozenset(tp.partition for tp in consumer.assignment())
                    self.records.extend(got)
        except BaseException as exc:
            self.error = exc
        finally:
            consumer.close()

    def snapshot(self) -> tuple[frozenset[int], list[tuple[int, int, str]]]:
        """Return the current assignment and a copy of the records received so far."""
        with self.lock:
            return self.assigned, list(self.records)


def group_is_stable(admin: KafkaAdminClient, group_id: str, members: int) -> bool:
    """Return True when the broker reports *group_id* Stable with *members* members."""
    try:
        info = admin.describe_groups([group_id])[group_id]
    except Exception:
        return False
    state = info.get("group_state") or info.get("state")
    return state == "Stable" and len(info.get("members") or []) == members


def test_consumer_group_splits_partitions(kafka_bootstrap: str, kafka_topic: TopicFactory) -> None:
    """Two consumers of one group split 6 partitions and see 120 messages exactly once."""
    partitions = 6
    total = 120
    topic = kafka_topic(partitions=partitions, prefix="group")
    group_id = f"wfe-group-{uuid.uuid4().hex[:12]}"
    members = [GroupMember(f"member-{i}", kafka_bootstrap, topic, group_id) for i in range(2)]
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="wfe-test-admin")

    def check_errors() -> None:
        for member in members:
            if member.error is not None:
                raise AssertionError(f"{member.name} failed: {member.error!r}") from member.error

    def balanced() -> bool:
        check_errors()
        a, b = (m.snapshot()[0] for m in members)
        return bool(a) and bool(b) and not (a & b) and (a | b) == set(range(partitions))

    try:
        for member in members:
            member.start()
        wait_until(
            lambda: balanced() and group_is_stable(admin, group_id, 2),
            timeout=60,
            what="both consumers to share the 6 partitions in a stable group",
        )
        assignments = [m.snapshot()[0] for m in members]

        sent = [(i % partitions, f"key-{i}", f"msg-{i}") for i in range(total)]
        produce(kafka_bootstrap, topic, sent)

        def received_count() -> int:
            check_errors()
            return sum(len(m.snapshot()[1]) for m in members)

        wait_until(lambda: received_count() >= total, timeout=60, what=f"{total} messages")

        end = {TopicPartition(topic, p): total // partitions for p in range(partitions)}

        def committed() -> dict[TopicPartition, int]:
            offsets = admin.list_group_offsets({group_id: list(end)})[group_id]
            return {tp: meta.offset for tp, meta in offsets.items()}

        wait_until(lambda: committed() == end, timeout=30, what="all offsets to be committed")
        assert [m.snapshot()[0] for m in members] == assignments, "unexpected rebalance"
    finally:
        for member in members:
            member.stopping.set()
        for member in members:
            member.join(timeout=30)
        admin.close()
    check_errors()

    per_member = [m.snapshot() for m in members]
    everything = [rec for _, records in per_member for rec in records]
    assert len(everything) == total, "some messages were received more than once"
    assert sorted(value for _, _, value in everything) == sorted(v for _, _, v in sent)
    assert len({(p, o) for p, o, _ in everything}) == total
    for assigned, records in per_member:
        assert records, "a group member received nothing"
        assert {p for p, _, _ in records} == set(assigned)


def test_each_checkout_records_its_detached_broker_apart(tmp_path: Path) -> None:
    """``start`` and ``stop`` without ``--state`` in one clone neither answer with
    nor stop the broker another clone started (the state file was one per user)."""
    script = Path(__file__).resolve().parent.parent / "broker" / "kafka_broker.py"
    copies = []
    for clone in ("a", "b"):
        folder = tmp_path / clone / "plugins" / "wfe_kafka" / "broker"
        folder.mkdir(parents=True)
        shutil.copy(script, folder / "kafka_broker.py")
        copies.append(folder / "kafka_broker.py")
    env = dict(os.environ, WFE_KAFKA_CACHE=str(tmp_path / "cache"))

    def stop(copy: Path) -> str:
        done = subprocess.run(
            [sys.executable, str(copy), "stop"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stderr.strip()

    said_a, said_b = stop(copies[0]), stop(copies[1])
    assert said_a.startswith("no broker recorded in ") and said_b.startswith("no broker recorded")
    state_a = Path(said_a.removeprefix("no broker recorded in "))
    state_b = Path(said_b.removeprefix("no broker recorded in "))
    assert state_a != state_b
    assert state_a.parent == state_b.parent == tmp_path / "cache" / "brokers"
    assert state_a.name.startswith("a-") and state_b.name.startswith("b-")
    # A broker recorded by clone a stays recorded when clone b stops "its" broker.
    state_a.parent.mkdir(parents=True)
    state_a.write_text(
        json.dumps({"pid": 2**22 + 1, "workdir": str(tmp_path / "w"), "bootstrap": "x:1"})
    )
    stop(copies[1])
    assert state_a.is_file()


@pytest.mark.parametrize("timeout", ["0", "-1", "nan", "soon"])
def test_start_refuses_a_timeout_that_is_not_above_zero(tmp_path: Path, timeout: str) -> None:
    """``start --timeout 0`` started a broker's JVM only to give up on it at once,
    printing a page of its log."""
    script = Path(__file__).resolve().parent.parent / "broker" / "kafka_broker.py"
    state = tmp_path / "broker.json"
    done = subprocess.run(
        [sys.executable, str(script), "start", "--state", str(state), "--timeout", timeout],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines()[-1] == (
        f"kafka_broker.py start: error: argument --timeout: expected a number of seconds "
        f"above 0, got {timeout!r}"
    )
    assert not state.exists()


_KILLED_STARTER = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("broker_under_test", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
broker = module.KafkaBroker().start()
print(broker.pid, broker.workdir, flush=True)
time.sleep(600)
"""


def test_a_broker_ends_with_the_process_that_started_it_even_killed(
    kafka_bootstrap: str,  # the jars are there, or the test skips as the others do
) -> None:
    """A benchmark or test run killed (a timeout's SIGKILL) never runs its atexit
    stop: its broker's JVM was left running, with its heap, for good."""
    script = Path(__file__).resolve().parent.parent / "broker" / "kafka_broker.py"
    starter = subprocess.Popen(
        [sys.executable, "-c", _KILLED_STARTER, str(script)], stdout=subprocess.PIPE, text=True
    )
    assert starter.stdout is not None
    pid_text, _, workdir = starter.stdout.readline().strip().partition(" ")
    jvm = int(pid_text)
    try:
        starter.kill()
        starter.wait(timeout=30)
        wait_until(lambda: not _running(jvm), 60, "the broker's JVM to end")
    finally:
        if _running(jvm):
            os.kill(jvm, 9)
        shutil.rmtree(workdir, ignore_errors=True)


def _running(pid: int) -> bool:
    """Whether the process is there and not a zombie waiting for its parent."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False

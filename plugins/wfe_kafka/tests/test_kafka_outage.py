"""A broker that goes away under a running ``wfe worker``, and comes back.

A broker of this module's own (``KafkaBroker.down()`` stops its JVM and ``up()``
starts it again at the same address, with its topics), so that the other tests
keep theirs; real worker processes wired to it by the environment.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka.errors import (
    Cancelled,
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    RequestTimedOutError,
    UnknownMemberIdError,
)
from wfe_kafka import KafkaMQInterface
from wfe_kafka.clients import _ClosingConsumer, _ConnectionErrors, _MissingTopicErrors
from wfe_kafka_util import TopicReader, produce, start_worker, wait_until, worker_env

from wfcore import ECSWorkflowEngine, TaskStatus


@pytest.fixture(scope="module")
def broker(broker_tools: Any, kafka_bootstrap: str) -> Iterator[Any]:
    """A broker for this module alone (``kafka_bootstrap``: skipped, or failed in CI,
    where no broker can run)."""
    own = broker_tools.KafkaBroker().start()
    try:
        yield own
    finally:
        own.stop()


@pytest.fixture
def up_broker(broker: Any) -> Any:
    """The module's broker, running."""
    if not broker.is_running():
        broker.up()
    return broker


@pytest.fixture(scope="module")
def broker_tools() -> Any:
    """``broker/kafka_broker.py`` as conftest loaded it (module scope, for the
    module's broker)."""
    return sys.modules["wfe_kafka_test_broker"]


class Worker:
    """``wfe worker`` on a SQLite store of its own, wired to Kafka by ``env``,
    logging to a file."""

    def __init__(self, tmp: Path, bootstrap: str, tasks: str, results: str, **env: str) -> None:
        self.store = f"sqlite://{tmp}/worker.db"
        self.log = tmp / "worker.log"
        env = {
            "KAFKA_BROKERS": bootstrap,
            "WFE_KAFKA_TASKS_TOPIC": tasks,
            "WFE_KAFKA_RESULTS_TOPIC": results,
            "WFE_KAFKA_GROUP": f"outage-{uuid.uuid4().hex[:8]}",
            **env,
        }
        self.proc = start_worker(
            self.store, self.log, worker_env(**env), "--shutdown-timeout", "1", "-q"
        )

    def lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()

    def said(self, text: str) -> list[str]:
        return [line for line in self.lines() if text in line]

    def wait_said(self, text: str, what: str, timeout: float = 60) -> None:
        def seen() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"the worker exited with {self.proc.returncode}:\n{self}")
            return bool(self.said(text))

        try:
            wait_until(seen, timeout, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the worker's log:\n{self}") from None

    def stop(self, timeout: float) -> int:
        """SIGTERM; its exit code, or an AssertionError when it has not exited
        within ``timeout`` seconds (then it is killed)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"the worker did not exit within {timeout:.0f} s of SIGTERM:\n{self}"
            ) from None

    def __str__(self) -> str:
        return "\n".join(self.lines()[-40:])

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        # A test that failed before its stop leaves no process behind.
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def kafka_python_lines(worker: Worker) -> list[str]:
    """The log lines of kafka-python's own loggers (``... LEVEL kafka.x: ...``)."""
    return [
        line for line in worker.lines() if re.search(r" (DEBUG|INFO|WARNING|ERROR) kafka\.", line)
    ]


def task_status(store_url: str, task_id: str) -> TaskStatus | None:
    async def read() -> TaskStatus | None:
        engine = ECSWorkflowEngine(store_url, load_plugins=False)
        try:
            task = await engine.get_task(task_id)
            return None if task is None else task.status
        finally:
            await engine.aclose()

    return asyncio.run(read())


def test_a_stop_does_not_wait_for_a_consumer_stuck_in_kafka_python(
    wfe_engine_factory: Any, wfe_run: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Making a consumer waits bootstrap_timeout_ms (here 12 s) for a broker that
    is not there, and stopping waited for it: consume_tasks() returns
    close_timeout + 5 s after the stop at most, without the thread, and says so."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there
    kafka = KafkaMQInterface(
        f"127.0.0.1:{port}", consumer_config={"bootstrap_timeout_ms": 12_000}, close_timeout=0.5
    )
    engine = wfe_engine_factory()
    # Its connection attempts; wfe_kafka's warnings pass at the root's level.
    caplog.set_level(logging.INFO, logger="kafka.net.manager")

    def said(text: str) -> bool:
        return any(text in r.getMessage() for r in caplog.records)

    async def scenario() -> None:
        consumer = asyncio.create_task(kafka.consume_tasks(engine))
        deadline = time.monotonic() + 30
        while not said("Attempting bootstrap"):
            assert time.monotonic() < deadline, "the consumer never tried to connect"
            await asyncio.sleep(0.05)
        kafka.stop_consuming()
        try:
            await asyncio.wait_for(asyncio.shield(consumer), 9)
        except asyncio.TimeoutError:
            raise AssertionError("consume_tasks() waited for the connection attempt") from None
        await kafka.close()

    wfe_run(scenario())
    assert said(
        "the Kafka consumer did not stop within 6 s (is Kafka reachable?); going on without it"
    )
    # The thread left behind ends with its attempt, saying nothing more.
    wait_until(
        lambda: not [t for t in threading.enumerate() if t.name == "wfe-kafka-consumer"],
        30,
        "the consumer thread to end",
    )
    assert not said("trying again"), [r.getMessage() for r in caplog.records]


def test_a_worker_says_once_that_kafka_is_gone_and_once_that_it_is_back(
    up_broker: Any, tmp_path: Path
) -> None:
    """kafka-python logs every failed connection and retry, several lines a second
    while a broker is away, and the worker itself said nothing."""
    broker = up_broker
    tasks, results = f"o-tasks-{uuid.uuid4().hex[:8]}", f"o-results-{uuid.uuid4().hex[:8]}"
    for topic in (tasks, results, f"{tasks}.dlq"):
        broker.create_topic(topic)

    def task(n: int) -> tuple[bytes, bytes]:
        return f"t-{n}".encode(), json.dumps(
            {"id": f"t-{n}", "workflow_name": "scale", "data": {"n": n}}
        ).encode()

    # Back in the group soon after the broker: kafka-python's reconnections back off
    # up to 30 s by default, and with a 10 s group session the restarted broker could
    # drop the worker from its group before it was back; kafka-python then said so
    # ("member_id was not recognized"), a line about the group, not the connection.
    # A longer session alone would keep a worker it drops (another way) out of the
    # group, and task 2 unread, for that long.
    session = json.dumps(
        {
            "reconnect_backoff_max_ms": 1_000,
            "session_timeout_ms": 30_000,
            "heartbeat_interval_ms": 2_000,
        }
    )
    with Worker(
        tmp_path, broker.bootstrap, tasks, results, WFE_KAFKA_CLIENT_CONFIG=session
    ) as worker:
        with TopicReader(broker.bootstrap, results) as reader:
            produce(broker.bootstrap, tasks, [task(1)])
            reader.wait_for(1)
        before = len(kafka_python_lines(worker))
        broker.down()
        worker.wait_said(f"cannot reach Kafka at {broker.bootstrap} (", "the outage in the log")
        broker.up()
        worker.wait_said(f"Kafka at {broker.bootstrap} can be reached again", "the all-clear")
        with TopicReader(broker.bootstrap, results) as reader:
            produce(broker.bootstrap, tasks, [task(2)])
            reader.wait_for(2)
        code = worker.stop(timeout=60)
    assert code == 0, str(worker)
    [lost] = worker.said("cannot reach Kafka at")
    assert lost.endswith(
        "): the connection is lost; no task messages until it is back (kafka-python's "
        "connection errors are left out of the log meanwhile)"
    ), lost
    assert len(worker.said("can be reached again")) == 1, str(worker)
    # At most one of kafka-python's connection errors for the whole outage.
    assert len(kafka_python_lines(worker)) - before <= 1, str(worker)


def test_a_worker_stopped_while_kafka_hangs_exits_without_kafka_python_s_traceback(
    up_broker: Any, tmp_path: Path
) -> None:
    """A broker that hangs (frozen: its connections stay open, unanswered) as a task
    finishes: the result's send waits on the producer's thread for the metadata of
    the results topic, which no send had needed before, so the stop cannot close the
    producer there. kafka-python's own exit handler then closed it: it waited a
    second more and printed a KafkaTimeoutError traceback after the worker's last
    line. The result stays in the outbox, as the worker says."""
    broker = up_broker
    tag = uuid.uuid4().hex[:8]
    tasks, results, events = f"o-tasks-{tag}", f"o-results-{tag}", f"o-events-{tag}"
    for topic in (tasks, results, events, f"{tasks}.dlq"):
        broker.create_topic(topic)
    release = tmp_path / "release"
    message = json.dumps({"id": "held", "workflow_name": "scale", "data": {"n": 1}}).encode()
    with Worker(
        tmp_path,
        broker.bootstrap,
        tasks,
        results,
        WFE_KAFKA_EVENTS_TOPIC=events,
        WFE_KAFKA_CLIENT_CONFIG=json.dumps({"close_timeout": 1}),
        APP_RELEASE_FILE=str(release),
    ) as worker:
        with TopicReader(broker.bootstrap, events) as reader:
            produce(broker.bootstrap, tasks, [(b"held", message)])
            # The producer is made and knows the events topic, not the results topic.
            wait_until(
                lambda: any(json.loads(r.value)["event"] == "phase_started" for r in reader.poll()),
                60,
                "the task's phase_started event",
            )
        os.kill(broker.pid, signal.SIGSTOP)
        try:
            release.touch()
            wait_until(
                lambda: task_status(worker.store, "held") is TaskStatus.COMPLETED,
                60,
                "the task completed in the store",
            )
            code = worker.stop(timeout=60)
        finally:
            os.kill(broker.pid, signal.SIGCONT)
    assert code == 0, str(worker)
    text = worker.log.read_text()
    assert "Traceback" not in text, str(worker)
    assert worker.said("1 result(s) stay in the outbox"), str(worker)


def test_a_consumer_rests_while_kafka_python_spins_for_a_broker_that_hangs(
    up_broker: Any, wfe_engine_factory: Any, wfe_run: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A broker that hangs (frozen: its connections open, unanswered) leaves the
    group's heartbeat overdue, and kafka-python's poll then loops without waiting:
    the worker used most of a core (about 55% measured) until the request timed out
    (30 s), and again after each reconnection to a broker still hung. The consumer
    rests after such a poll, saying so at DEBUG."""
    broker = up_broker
    tasks = f"o-tasks-{uuid.uuid4().hex[:8]}"
    broker.create_topic(tasks)
    kafka = KafkaMQInterface(
        broker.bootstrap,
        tasks_topic=tasks,
        results_topic=f"{tasks}.results",
        group_id=f"spin-{uuid.uuid4().hex[:8]}",
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        close_timeout=0.5,
    )
    engine = wfe_engine_factory()
    caplog.set_level(logging.DEBUG, logger="wfe_kafka")

    def said(text: str) -> bool:
        return any(text in r.getMessage() for r in caplog.records)

    async def scenario() -> None:
        consumer = asyncio.create_task(kafka.consume_tasks(engine))
        try:
            await until_async(lambda: kafka.assignment, "the consumer's partition")
            os.kill(broker.pid, signal.SIGSTOP)
            try:
                await until_async(lambda: said("resting"), "the consumer resting")
            finally:
                os.kill(broker.pid, signal.SIGCONT)
        finally:
            kafka.stop_consuming()
            await consumer
            await kafka.close()

    wfe_run(scenario())
    [rest] = [r.getMessage() for r in caplog.records if "resting" in r.getMessage()][:1]
    assert "returned no message (a broker that does not answer?); resting 1 s" in rest, rest


def test_sigterm_ends_a_worker_while_kafka_is_down_and_a_topic_is_missing(
    up_broker: Any, tmp_path: Path
) -> None:
    """kafka-python's topics() waits without end while no broker can be reached:
    the consumer thread, looking for the missing dead-letter topic, never stopped,
    and neither did the worker. Its task goes back to the store as usual.

    The last of the module's tests on its broker: it leaves the broker down, and a
    test after it would wait seconds for it to start again."""
    broker = up_broker
    tasks, results = f"o-tasks-{uuid.uuid4().hex[:8]}", f"o-results-{uuid.uuid4().hex[:8]}"
    for topic in (tasks, results):
        broker.create_topic(topic)
    # <tasks>.dlq is never made: the consumer looks for it, here at every turn.
    with Worker(
        tmp_path,
        broker.bootstrap,
        tasks,
        results,
        APP_WORK_SECONDS="3600",
        APP_TOPICS_RECHECK="0.1",
    ) as worker:
        produce(
            broker.bootstrap,
            tasks,
            [
                (
                    b"long",
                    json.dumps({"id": "long", "workflow_name": "scale", "data": {"n": 1}}).encode(),
                )
            ],
        )
        wait_until(
            lambda: task_status(worker.store, "long") is TaskStatus.IN_PROGRESS,
            60,
            "the task running in the worker",
        )
        broker.down()
        worker.wait_said(f"cannot reach Kafka at {broker.bootstrap} (", "the outage in the log")
        code = worker.stop(timeout=30)
    assert code == 0, str(worker)
    assert "Traceback" not in worker.log.read_text(), str(worker)
    # The consumer stopped by itself: it was not left behind (see the next test).
    assert not worker.said("did not stop within"), str(worker)
    # Handed back for another worker, as at any stop.
    assert task_status(worker.store, "long") is TaskStatus.PENDING


async def until_async(condition: Any, what: str, timeout: float = 30) -> None:
    """Await ``condition()`` being truthy, polling with a deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)


def test_kafka_python_connection_errors_are_kept_few_but_other_errors_shown() -> None:
    """The filter of kafka-python's loggers, record by record."""
    errors = _ConnectionErrors()
    refused = KafkaConnectionError("111 ECONNREFUSED")

    def record(
        msg: str, *args: Any, level: int = logging.ERROR, name: str = "kafka.net.manager"
    ) -> logging.LogRecord:
        return logging.LogRecord(name, level, __file__, 1, msg, args, None)

    # Outside an outage wfe_kafka reports, one connection error passes, then none for a while.
    assert errors.filter(record("Connection failed: %s", refused))
    assert not errors.filter(record("Connection failed: %s", refused))
    assert not errors.filter(
        record(
            "No node available for metadata refresh - backoff/retry",
            level=logging.WARNING,
            name="kafka.cluster",
        )
    )
    assert errors.last is refused
    # Other errors are shown, outage or not.
    errors.outage_began()
    assert errors.filter(record("%s: SaslHandshake failed: %s", "conn", "UnsupportedSaslMechanism"))
    assert errors.filter(
        record("Topic %s is not authorized for this client", "t", name="kafka.cluster")
    )
    assert not errors.filter(record("%s: socket disconnected", "conn", name="kafka.net.transport"))
    # kafka-python's log.exception() of a socket error: its traceback too.
    reset = logging.LogRecord(
        "kafka.net.transport",
        logging.ERROR,
        __file__,
        1,
        "%s: Error receiving network data closing socket",
        ("conn",),
        (ConnectionResetError, ConnectionResetError(104, "reset"), None),
    )
    assert not errors.filter(reset)
    # kafka-python's warning that its network loop was slow, which its clients give
    # several times in ten seconds while a broker hangs, advising to look for "a
    # tight sync loop inside a coroutine" that is not there.
    slow = (
        "Task <kafka.net.selector.Task object at 0x7f72> ran for 1.523s (>0.100s threshold). "
        "It is blocking the event loop -- likely a tight sync loop inside a coroutine. Other "
        "pollers will time out."
    )
    assert not errors.filter(record(slow, level=logging.WARNING, name="kafka.net.selector"))
    # Its warning that a broker's host name does not resolve, formatted before it is
    # logged, at every connection attempt (several a second) while the name is unknown.
    dns = "DNS lookup failed for kafka1:9092, gaierror(-2, 'Name or service not known')"
    assert not errors.filter(record(dns, level=logging.WARNING, name="kafka.net.inet"))
    # Its warning of a metadata answer from a broker shutting down, as a restart begins.
    no_brokers = "No broker metadata found in MetadataResponse -- ignoring."
    assert not errors.filter(record(no_brokers, level=logging.WARNING, name="kafka.cluster"))
    assert errors.left_out == 7


def test_kafka_python_s_missing_topic_errors_are_said_once_per_topic() -> None:
    """The filter of kafka.cluster, record by record: kafka-python logs the same
    error ten times a second while it waits for a topic."""
    topics = _MissingTopicErrors()

    def record(msg: str, *args: Any) -> logging.LogRecord:
        return logging.LogRecord("kafka.cluster", logging.ERROR, __file__, 1, msg, args, None)

    missing = "Topic %s not found in cluster metadata"
    assert topics.filter(record(missing, "orders.results"))
    assert not topics.filter(record(missing, "orders.results"))
    assert topics.filter(record(missing, "orders.tasks.dlq"))  # each topic once
    assert not topics.filter(record(missing, "orders.tasks.dlq"))
    assert topics.filter(record("Topic %s is not authorized for this client", "orders.results"))
    assert topics.left_out == 2


def test_only_the_refresh_a_consumer_s_close_cancels_is_kept_from_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The filter around a consumer's close, record by record: kafka-python's
    errors for the metadata refresh and the heartbeat the close cancelled, and
    nothing else."""
    closing = _ClosingConsumer(frozenset({threading.get_ident()}))

    def refresh_failed(error: BaseException, thread: int | None = None) -> logging.LogRecord:
        record = logging.LogRecord(
            "kafka.cluster",
            logging.ERROR,
            __file__,
            1,
            "Metadata refresh: failed %s",
            (error,),
            None,
        )
        if thread is not None:
            record.thread = thread
        return record

    caplog.set_level(logging.INFO, logger="kafka.cluster")
    cancelled = refresh_failed(Cancelled())
    assert not closing.filter(cancelled)
    # A refresh that failed otherwise, or the cancelled one of another client's
    # thread, is an error as before.
    timed_out = refresh_failed(RequestTimedOutError())
    assert closing.filter(timed_out) and timed_out.levelno == logging.ERROR
    elsewhere = refresh_failed(Cancelled(), thread=threading.get_ident() + 1)
    assert closing.filter(elsewhere) and elsewhere.levelno == logging.ERROR

    # The coordinator's error for a heartbeat the close cancelled (still unanswered
    # by a broker that hangs) is left out too; for one that failed otherwise, not.
    def heartbeat_failed(error: BaseException) -> logging.LogRecord:
        message = "Error sending %s to node %s [%s]"
        args = ("HeartbeatRequest", "coordinator-1", error)
        return logging.LogRecord(
            "kafka.coordinator", logging.ERROR, __file__, 1, message, args, None
        )

    assert not closing.filter(heartbeat_failed(Cancelled()))
    heartbeat_timed_out = heartbeat_failed(RequestTimedOutError())
    assert closing.filter(heartbeat_timed_out) and heartbeat_timed_out.levelno == logging.ERROR

    # The group refusing the last commit (the member dropped from it while Kafka was
    # away): wfe_kafka says that commit failed itself, so kafka-python's warning is
    # left out, not said twice.
    commit_failed = logging.LogRecord(
        "kafka.coordinator",
        logging.WARNING,
        __file__,
        1,
        "OffsetCommit for group %s failed: %s",
        ("wfe-workers", UnknownMemberIdError("wfe-workers")),
        None,
    )
    assert not closing.filter(commit_failed)
    # A leave the group refuses for a member whose session had already ended (a
    # consumer made anew after a rebalance it never completed): the leave is done.
    member = "LeaveGroup request for member %s / group instance %s failed with error: %s"
    gone, refused = (
        logging.LogRecord(
            "kafka.coordinator", logging.ERROR, __file__, 1, member, ("m-1", None, error), None
        )
        for error in (UnknownMemberIdError(), GroupAuthorizationFailedError())
    )
    assert not closing.filter(gone)
    assert closing.filter(refused) and refused.levelno == logging.ERROR
    # With kafka-python's logger at DEBUG it shows, at DEBUG.
    caplog.set_level(logging.DEBUG, logger="kafka.cluster")
    cancelled = refresh_failed(Cancelled())
    assert closing.filter(cancelled) and cancelled.levelname == "DEBUG"


def test_the_refresh_loop_stopped_by_a_consumer_s_close_is_kept_from_the_log() -> None:
    """kafka-python's refresh loop, waiting for its next refresh as the close stops
    its network selector, logs "NetworkSelector closed!" at ERROR: left out too,
    while the loop's other errors stay errors."""
    closing = _ClosingConsumer(frozenset({threading.get_ident()}))

    def loop_failed(error: BaseException) -> logging.LogRecord:
        message = "Metadata refresh loop error: %s"
        return logging.LogRecord(
            "kafka.cluster", logging.ERROR, __file__, 1, message, (error,), None
        )

    assert not closing.filter(loop_failed(RuntimeError("NetworkSelector closed!")))
    other = loop_failed(RuntimeError("something else broke"))
    assert closing.filter(other) and other.levelno == logging.ERROR

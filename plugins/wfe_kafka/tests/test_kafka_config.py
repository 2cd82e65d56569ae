"""Misconfiguration as a worker meets it: the command line, a broker that is not there."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from wfe_kafka import KafkaMQInterface
from wfe_kafka_util import APPS_DIR, produce, worker_command, worker_env

from wfcore import ECSWorkflowEngine, Phase, Task


async def _echo(task: Task) -> None:
    task.output = task.data


def echo_engine(make: Callable[..., ECSWorkflowEngine]) -> ECSWorkflowEngine:
    """An engine from ``make`` with the workflow "echo": one functional phase whose
    output is the task's data."""
    engine = make()
    engine.register_handler("echo", _echo)
    engine.register_workflow("echo", [Phase("echo", assigned_to="functional")])
    return engine


async def until(condition: Callable[[], Any], what: str, timeout: float = 60.0) -> None:
    """Await ``condition()`` inside the event loop, polling, for ``timeout`` s at most."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def own_broker(kafka_bootstrap: str) -> Iterator[Any]:
    """A broker of this module's own, which does not create topics on first use (as
    in most deployments), for the tests that freeze it or need topics missing; the
    others keep the run's broker. Each test uses topic names of its own on it.
    (``kafka_bootstrap``: skipped, or failed in CI, where no broker can run.)"""
    kafka_broker = sys.modules["wfe_kafka_test_broker"]
    broker = kafka_broker.KafkaBroker(properties={"auto.create.topics.enable": "false"}).start()
    try:
        yield broker
    finally:
        broker.stop()


def run_worker(
    tmp_path: Path,
    quiet: bool = True,
    store: str | None = None,
    until_idle: bool = True,
    **env: str,
) -> subprocess.CompletedProcess[str]:
    """``wfe worker --until-idle`` on an empty store, wired to Kafka by ``env``."""
    return subprocess.run(
        worker_command(
            store or f"sqlite://{tmp_path}/worker.db",
            *(["--until-idle"] if until_idle else []),
            *(["-q"] if quiet else []),
        ),
        cwd=APPS_DIR,
        env=worker_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_worker_names_the_variable_of_a_kafka_setting_it_cannot_use(tmp_path: Path) -> None:
    result = run_worker(
        tmp_path, KAFKA_BROKERS="127.0.0.1:9092", WFE_KAFKA_TASKS_TOPIC="orders tasks"
    )
    # The worker refuses to start rather than run without Kafka.
    assert result.returncode == 1, result.stderr
    assert (
        "Error: plugin 'wfe_kafka': Kafka settings cannot be used: "
        "WFE_KAFKA_TASKS_TOPIC='orders tasks' is not a valid Kafka topic name" in result.stderr
    )
    assert "Traceback" not in result.stderr

    result = run_worker(tmp_path, KAFKA_BROKERS="kafka1:9092,kafka2:90922")
    assert result.returncode == 1
    assert (
        "KAFKA_BROKERS: 'kafka2:90922' is not host:port (the port must be 1-65535)" in result.stderr
    )
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"WFE_KAFKA_MAX_PENDING": "0"}, "WFE_KAFKA_MAX_PENDING=0: expected a whole number"),
        # Not a number at all: the same words as a number out of range.
        (
            {"WFE_KAFKA_MAX_PENDING": "abc"},
            "WFE_KAFKA_MAX_PENDING='abc': expected a whole number, at least 1",
        ),
        ({"WFE_KAFKA_OUTBOX_GRACE": "nan"}, "WFE_KAFKA_OUTBOX_GRACE=nan: expected a finite"),
        (
            {"WFE_KAFKA_OUTBOX_GRACE": "5s"},
            "WFE_KAFKA_OUTBOX_GRACE='5s': expected a finite number of seconds, at least 0",
        ),
        (
            {"KAFKA_BROKERS": "127.0.0.1:0"},
            "KAFKA_BROKERS: '127.0.0.1:0' is not host:port (the port must be 1-65535)",
        ),
        (
            {"WFE_KAFKA_CLIENT_CONFIG": '{"session_timeout_ms": "abc"}'},
            "WFE_KAFKA_CLIENT_CONFIG: kafka-python setting session_timeout_ms='abc': "
            "expected a number >= 0",
        ),
        (
            {"WFE_KAFKA_CLIENT_CONFIG": '{"security_protocol": "SASL_PLAIN"}'},
            "WFE_KAFKA_CLIENT_CONFIG: kafka-python setting security_protocol='SASL_PLAIN'",
        ),
        # A misspelt variable used to be ignored: the worker consumed the default topic.
        (
            {"WFE_KAFKA_TASK_TOPIC": "orders.tasks"},
            "WFE_KAFKA_TASK_TOPIC is not a wfe_kafka setting (did you mean WFE_KAFKA_TASKS_TOPIC?)",
        ),
        # It used to win over WFE_KAFKA_TASKS_TOPIC without a word.
        (
            {"WFE_KAFKA_CLIENT_CONFIG": '{"tasks_topic": "sneaky"}'},
            "WFE_KAFKA_CLIENT_CONFIG: 'tasks_topic' is set with WFE_KAFKA_TASKS_TOPIC, not here",
        ),
        # A feedback loop: every event came back as a new task, which sent more events.
        (
            {"WFE_KAFKA_TASKS_TOPIC": "orders", "WFE_KAFKA_EVENTS_TOPIC": "orders"},
            "WFE_KAFKA_EVENTS_TOPIC='orders' is the tasks topic too "
            "(WFE_KAFKA_TASKS_TOPIC='orders')",
        ),
        # kafka-python refused it on the consumer's thread, and the worker ran on without Kafka.
        (
            {"WFE_KAFKA_CLIENT_CONFIG": '{"session_timeout_ms": 1000}'},
            "WFE_KAFKA_CLIENT_CONFIG: kafka-python setting session_timeout_ms=1000 must be "
            "more than heartbeat_interval_ms=2000 (wfe_kafka's default)",
        ),
        (
            {
                "WFE_KAFKA_CLIENT_CONFIG": '{"security_protocol": "SSL", '
                '"ssl_cafile": "/nonexistent.pem"}'
            },
            "WFE_KAFKA_CLIENT_CONFIG: kafka-python setting ssl_cafile='/nonexistent.pem': "
            "no such file",
        ),
        # Interface arguments set here are named with the variable too.
        (
            {"WFE_KAFKA_CLIENT_CONFIG": '{"max_poll_records": 0}'},
            "WFE_KAFKA_CLIENT_CONFIG: max_poll_records=0: expected a whole number, at least 1",
        ),
        # The worker ran, and failed with a traceback when it stopped.
        (
            {"WFE_KAFKA_CLIENT_CONFIG": '{"close_timeout": "abc"}'},
            "WFE_KAFKA_CLIENT_CONFIG: close_timeout='abc': expected a finite number of seconds",
        ),
        # A TypeError: the worker logged a traceback and ran on without Kafka.
        (
            {"WFE_KAFKA_CLIENT_CONFIG": '{"producer_config": 5}'},
            "WFE_KAFKA_CLIENT_CONFIG: producer_config=5: expected a mapping of kafka-python",
        ),
    ],
)
def test_a_worker_refuses_bad_values_naming_the_variable(
    tmp_path: Path, env: dict[str, str], problem: str
) -> None:
    """These once started a worker that failed later: the outbox sweep at every
    turn (nan), the consumer retrying a setting for ever as 'cannot reach Kafka'."""
    result = run_worker(tmp_path, quiet=False, **{"KAFKA_BROKERS": "127.0.0.1:9092", **env})
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    # Said under the start-up line first, then refused in the same words.
    start = next(i for i, line in enumerate(lines) if line.startswith("wfe worker "))
    assert lines[start + 1].startswith(f"  kafka: settings cannot be used: {problem}")
    assert f"Error: plugin 'wfe_kafka': Kafka settings cannot be used: {problem}" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_worker_says_which_topics_it_consumes_and_publishes_to(
    kafka_bootstrap: str, kafka_topic: Any, tmp_path: Path
) -> None:
    """An operator sees what a worker is wired to under its start-up line."""
    tasks, results, events = (
        kafka_topic(1, "tasks"),
        kafka_topic(1, "results"),
        kafka_topic(1, "ev"),
    )
    result = run_worker(
        tmp_path,
        quiet=False,
        KAFKA_BROKERS=kafka_bootstrap,
        WFE_KAFKA_TASKS_TOPIC=tasks,
        WFE_KAFKA_RESULTS_TOPIC=results,
        WFE_KAFKA_EVENTS_TOPIC=events,
        WFE_KAFKA_GROUP="header-test",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("wfe worker "))
    assert lines[start + 1] == (
        f"  kafka: consuming {tasks} (group header-test) at {kafka_bootstrap}; "
        f"results to {results}; events to {events}; dead letters to {tasks}.dlq"
    )
    # -q keeps it quiet, as it does the start-up line.
    quiet = run_worker(
        tmp_path,
        KAFKA_BROKERS=kafka_bootstrap,
        WFE_KAFKA_TASKS_TOPIC=tasks,
        WFE_KAFKA_RESULTS_TOPIC=results,
        WFE_KAFKA_GROUP="header-test",
    )
    assert quiet.returncode == 0, quiet.stderr
    assert "kafka:" not in quiet.stderr


def test_a_consumer_without_a_broker_says_so_and_stops_promptly(
    wfe_engine_factory: Any, wfe_run: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Kafka down: a warning naming the brokers within seconds (not after kafka-python's
    30 s), stop_consuming() is not held up by a connection attempt, and no attempt
    leaves kafka-python's network thread behind."""
    port = closed_port()
    client_id = f"wfe-test-{uuid.uuid4().hex[:8]}"
    kafka = KafkaMQInterface(f"127.0.0.1:{port}", consumer_config={"client_id": client_id})
    engine = wfe_engine_factory()
    caplog.set_level(logging.WARNING, logger="wfe_kafka")

    def warned() -> bool:
        return any(
            f"cannot reach Kafka at 127.0.0.1:{port}" in r.getMessage() for r in caplog.records
        )

    async def scenario() -> float:
        consumer = asyncio.create_task(kafka.consume_tasks(engine))
        await until(warned, "a warning that Kafka cannot be reached", timeout=15)
        await asyncio.sleep(0.7)  # into the next connection attempt
        started = time.monotonic()
        kafka.stop_consuming()
        await consumer
        await kafka.close()
        return time.monotonic() - started

    # What one connection attempt may take (bootstrap_timeout_ms, 5 s), not kafka-python's
    # 30 s: the bound is twice it, as a busy machine adds a second or more to it.
    assert wfe_run(scenario()) < 2 * 5.0

    def network_threads() -> list[str]:
        return [t.name for t in threading.enumerate() if client_id in t.name]

    deadline = time.monotonic() + 30  # a thread left behind runs on for good
    while network_threads():
        assert time.monotonic() < deadline, f"left running: {network_threads()}"
        time.sleep(0.05)


def test_a_kafka_outage_is_reported_and_stopping_during_one_is_prompt_and_quiet(
    own_broker: Any,
    wfe_engine_factory: Any,
    wfe_run: Any,
    caplog: pytest.LogCaptureFixture,
    broker_tools: Any,
) -> None:
    """The module's own broker, frozen with SIGSTOP (its connections hang as in a
    network outage): the worker warns with how many results wait, says when
    publishing resumes, and a close() during an outage takes close_timeout, not
    three times it, with one line and no traceback, and without kafka-python's
    error for the send the close cancelled."""
    kafka_broker = broker_tools
    broker = own_broker
    kafka_broker.create_topic(broker.bootstrap, "results", 1)
    engine = echo_engine(wfe_engine_factory)
    kafka = KafkaMQInterface(broker.bootstrap, results_topic="results", close_timeout=3.0)
    kafka.outage_warn_after = 1.0
    kafka.outage_warn_every = 60.0
    caplog.set_level(logging.WARNING, logger="wfe_kafka")

    def logged(text: str) -> bool:
        return any(text in r.getMessage() for r in caplog.records)

    async def scenario() -> float:
        await kafka.attach(engine)
        await engine.submit_task(0, "echo", task_id="before")
        await engine.run_until_idle()
        await until(lambda: kafka.stats["results_published"] == 1, "the first result")
        os.kill(broker.pid, signal.SIGSTOP)
        try:
            for i in range(3):
                await engine.submit_task(i, "echo", task_id=f"during-{i}")
            await engine.run_until_idle()
            await until(lambda: logged("3 result(s) wait in the outbox"), "the warning")
        finally:
            os.kill(broker.pid, signal.SIGCONT)
        await until(lambda: logged("publishing resumed"), "the all-clear")
        await until(lambda: kafka.stats["results_published"] == 4, "4 results")
        os.kill(broker.pid, signal.SIGSTOP)
        try:
            await engine.submit_task(9, "echo", task_id="at-stop")
            await engine.run_until_idle()
            started = time.monotonic()
            await kafka.close()
            took = time.monotonic() - started
            # The producer's sender fails the request the close cancelled
            # (kafka-python logged "Error sending produce request to node 1:
            # Cancelled" at ERROR) on its own thread, after close() returned.
            sender = kafka._producers["results"]._producer._sender
            await asyncio.to_thread(sender.join, 30)
            assert not sender.is_alive()
            return took
        finally:
            os.kill(broker.pid, signal.SIGCONT)

    took = wfe_run(scenario())
    # close_timeout (3 s), not three times it: the bound is twice it, as a busy machine
    # adds a second or more to it.
    assert took < 2 * 3.0
    stop_lines = [r for r in caplog.records if "published at the next start" in r.getMessage()]
    assert len(stop_lines) == 1
    assert "1 result(s) stay in the outbox" in stop_lines[0].getMessage()
    assert not [r for r in caplog.records if r.exc_info]
    assert not [r.getMessage() for r in caplog.records if r.name == "kafka.producer.sender"]


def test_a_worker_on_a_memory_store_does_not_consume_unless_allowed(
    kafka_bootstrap: str, kafka_topic: Any, tmp_path: Path
) -> None:
    """Offsets are committed once tasks are stored: in memory://, the tasks a
    worker holds when it stops (even with SIGTERM) would be lost for good."""
    tasks = kafka_topic(1, "tasks")
    env = {"KAFKA_BROKERS": kafka_bootstrap, "WFE_KAFKA_TASKS_TOPIC": tasks}
    refused = run_worker(tmp_path, quiet=False, store="memory://", **env)
    assert refused.returncode == 1, refused.stderr
    assert (
        "Error: plugin 'wfe_kafka': Kafka settings cannot be used: the store memory:// does "
        "not outlive this process" in refused.stderr
    )
    assert "or WFE_KAFKA_ALLOW_VOLATILE_STORE=True to accept that" in refused.stderr
    assert "Traceback" not in refused.stderr

    allowed = run_worker(
        tmp_path, quiet=False, store="memory://", WFE_KAFKA_ALLOW_VOLATILE_STORE="1", **env
    )
    assert allowed.returncode == 0, allowed.stderr
    assert f"consuming {tasks} into the store memory://, which does not outlive" in (allowed.stderr)


def test_a_worker_whose_consumer_stops_for_good_stops_too(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A setting kafka-python refuses only when it makes the consumer (here an
    isolation_level it does not know) used to leave the worker running, and healthy,
    on its store's tasks alone."""
    result = run_worker(
        tmp_path,
        until_idle=False,
        KAFKA_BROKERS=kafka_bootstrap,
        WFE_KAFKA_CLIENT_CONFIG='{"isolation_level": "bogus"}',
    )
    assert "the Kafka consumer stopped for good (Kafka settings cannot be used: kafka-python" in (
        result.stderr
    )
    assert "; stopping the worker" in result.stderr
    # Not a clean exit: a process manager restarts it, or an operator hears of it.
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines()[-1].startswith(
        "Error: plugin 'wfe_kafka': the Kafka consumer stopped for good"
    )


async def _consumer_stopped(kafka: KafkaMQInterface, engine: ECSWorkflowEngine) -> str:
    """Consume until the consumer stops for good (30 s at most); what it said."""
    with pytest.raises(Exception) as stopped:
        await asyncio.wait_for(kafka.consume_tasks(engine), 30)
    await kafka.close()
    return str(stopped.value)


def test_a_session_timeout_the_brokers_refuse_stops_the_consumer_in_one_line(
    kafka_bootstrap: str,
    kafka_topic: Callable[..., str],
    wfe_engine_factory: Any,
    wfe_run: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A session timeout below the brokers' group.min.session.timeout.ms (6 s by
    default) fails every attempt to join the group: the consumer retried it for as
    long as the worker ran, logging a traceback each time, and took no message."""
    tasks = kafka_topic()
    kafka = KafkaMQInterface(
        kafka_bootstrap,
        tasks_topic=tasks,
        results_topic=f"{tasks}.results",
        group_id=f"g-{uuid.uuid4().hex[:8]}",
        session_timeout_ms=5000,
        heartbeat_interval_ms=1000,
        close_timeout=1.0,
    )
    caplog.set_level(logging.WARNING, logger="wfe_kafka")
    reason = wfe_run(_consumer_stopped(kafka, wfe_engine_factory()))
    assert reason.startswith(
        "Kafka settings cannot be used: the brokers refused session_timeout_ms=5000 "
        "(InvalidSessionTimeoutError)"
    ), reason
    mine = [r for r in caplog.records if r.name == "wfe_kafka"]
    assert [r.getMessage() for r in mine] == [f"{reason}; the consumer stops"]
    assert not any(r.exc_info for r in mine)


def test_a_batch_in_a_codec_this_worker_lacks_stops_the_consumer_in_one_line(
    kafka_bootstrap: str,
    kafka_topic: Callable[..., str],
    wfe_engine_factory: Any,
    wfe_run: Any,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A zstd batch where zstandard is missing (installed without wfe_kafka's
    dependencies): every new consumer fails on it at the same offset. It restarted
    for ever, a traceback each time, storing nothing; now it stops, saying what to
    install."""
    tasks = kafka_topic()
    # Large enough to compress: kafka-python sends a batch compression does not
    # make smaller as it is.
    message = b'{"workflow_name": "w", "data": "' + b"x" * 2000 + b'"}'
    produce(kafka_bootstrap, tasks, [(None, message)], compression_type="zstd")
    import kafka.codec as codecs

    monkeypatch.setattr(codecs, "has_zstd", lambda: False)  # as without zstandard
    kafka = KafkaMQInterface(
        kafka_bootstrap,
        tasks_topic=tasks,
        results_topic=f"{tasks}.results",
        group_id=f"g-{uuid.uuid4().hex[:8]}",
        close_timeout=1.0,
    )
    caplog.set_level(logging.WARNING, logger="wfe_kafka")
    reason = wfe_run(_consumer_stopped(kafka, wfe_engine_factory()))
    assert reason == (
        "a batch of the tasks topic cannot be read: UnsupportedCodecError: Libraries for "
        "zstd compression codec not found; install lz4, python-snappy and zstandard "
        "(wfe_kafka's dependencies) for the codecs producers compress with"
    )
    mine = [r for r in caplog.records if r.name == "wfe_kafka"]
    assert [r.getMessage() for r in mine] == [f"{reason}; the consumer stops"]


def test_a_worker_with_kafka_bootstrap_servers_instead_of_kafka_brokers_says_so(
    tmp_path: Path,
) -> None:
    result = run_worker(tmp_path, quiet=False, KAFKA_BOOTSTRAP_SERVERS="k1:9092")
    assert result.returncode == 0, result.stderr
    assert "  kafka: off: KAFKA_BOOTSTRAP_SERVERS is set, but wfe_kafka reads KAFKA_BROKERS" in (
        result.stderr
    )
    assert (
        "KAFKA_BOOTSTRAP_SERVERS is set but KAFKA_BROKERS is not: wfe_kafka reads only "
        "KAFKA_BROKERS, so this worker does not consume from Kafka" in result.stderr
    )


@pytest.mark.parametrize(
    ("security", "error"),
    [
        ({"security_protocol": "SSL"}, "KafkaConnectionError: "),
        (
            {
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_mechanism": "PLAIN",
                "sasl_plain_username": "u",
                "sasl_plain_password": "p",
            },
            "IllegalSaslStateError",
        ),
    ],
)
def test_a_consumer_that_cannot_connect_says_why(
    kafka_bootstrap: str,
    wfe_engine_factory: Any,
    wfe_run: Any,
    caplog: pytest.LogCaptureFixture,
    security: dict[str, str],
    error: str,
) -> None:
    """SSL or SASL against a plaintext listener: kafka-python's own error only says it
    could not bootstrap; the warning gives the handshake's failure, and that the
    broker does not take this security protocol there."""
    # Each try to reach Kafka gives up after 1 s, not wfe_kafka's 5 s: the warning
    # comes as a try gives up.
    kafka = KafkaMQInterface(
        kafka_bootstrap,
        close_timeout=1.0,
        consumer_config={"bootstrap_timeout_ms": 1000},
        **security,
    )
    engine = wfe_engine_factory()
    caplog.set_level(logging.WARNING)
    # As an app that keeps kafka-python's own warnings out of its log.
    quiet = logging.getLogger("kafka")
    quiet.setLevel(logging.ERROR)

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if "cannot reach Kafka" in r.getMessage()]

    async def scenario() -> None:
        consumer = asyncio.create_task(kafka.consume_tasks(engine))
        await until(warnings, "a warning that Kafka cannot be reached", timeout=20)
        kafka.stop_consuming()
        await consumer
        await kafka.close()

    try:
        wfe_run(scenario())
    finally:
        quiet.setLevel(logging.NOTSET)
    first = warnings()[0]
    assert first.startswith(f"cannot reach Kafka at {kafka_bootstrap} ({error}")
    assert "Unable to bootstrap" not in first
    protocol = security["security_protocol"]
    assert (
        f"the broker does not take security_protocol {protocol} on this listener: check it, "
        "and the sasl_* and ssl_* settings"
    ) in first
    # The app's choice stands: kafka-python's warnings stayed out of its log.
    assert not [
        r for r in caplog.records if r.name.startswith("kafka") and r.levelno < logging.ERROR
    ]
    assert logging.getLogger("kafka.net.manager").level == logging.NOTSET


def not_found(records: list[logging.LogRecord]) -> list[str]:
    """The topics of kafka-python's ``Topic ... not found in cluster metadata`` lines."""
    return [
        str(r.args[0])
        for r in records
        if r.name == "kafka.cluster"
        and r.msg == "Topic %s not found in cluster metadata"
        and isinstance(r.args, tuple)
    ]


def test_topics_kafka_does_not_have_are_named_with_their_setting(
    own_broker: Any,
    wfe_engine_factory: Any,
    wfe_run: Any,
    caplog: pytest.LogCaptureFixture,
    broker_tools: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The module's own broker, which does not create topics on first use (as in most
    deployments): kafka-python only repeats that a topic is not in its metadata,
    and results waited as if Kafka were slow. It repeated it as an ERROR at every
    metadata update, ten lines a second for each missing topic: it says it once."""
    import wfe_kafka.consumer

    kafka_broker = broker_tools
    # The consumer's first look for the topics comes 0.5 s after it starts, not 5 s
    # (as the test app's APP_TOPICS_RECHECK does for worker processes).
    monkeypatch.setattr(wfe_kafka.consumer, "_TOPICS_FIRST_CHECK", 0.5)
    broker = own_broker
    kafka_broker.create_topic(broker.bootstrap, "tasks", 1)
    engine = echo_engine(wfe_engine_factory)
    kafka = KafkaMQInterface(
        broker.bootstrap,
        tasks_topic="tasks",
        results_topic="no.results",
        dead_letter_topic="no.dlq",
        events_topic="no.events",
        close_timeout=1.0,
        max_block_ms=1000,
    )
    kafka.outage_warn_after = 0.5
    kafka.outage_warn_every = 0.0
    caplog.set_level(logging.INFO, logger="wfe_kafka")

    def said(text: str, level: int = logging.INFO) -> bool:
        return any(text in r.getMessage() and r.levelno >= level for r in caplog.records)

    async def publishing() -> None:
        consumer = asyncio.create_task(kafka.consume_tasks(engine))
        try:
            await engine.submit_task({"n": 1}, "echo", task_id="t-1")
            await engine.run_until_idle()
            # The publisher's warning names the topic, not a broker that is slow.
            await until(
                lambda: said(
                    "; Kafka has no topic 'no.results' (results_topic, "
                    "WFE_KAFKA_RESULTS_TOPIC); 1 result(s) wait in the outbox",
                    logging.WARNING,
                ),
                "the results warning naming the topic",
            )
        finally:
            kafka.stop_consuming()
            await consumer
            await kafka.close()

    wfe_run(publishing())
    # One line per topic, naming its setting.
    assert said(
        "Kafka has no topic 'no.results' (results_topic, WFE_KAFKA_RESULTS_TOPIC) yet: "
        "results wait in the outbox until it exists"
    )
    assert said("Kafka has no topic 'no.dlq' (dead_letter_topic, WFE_KAFKA_DLQ_TOPIC) yet")
    assert said("Kafka has no topic 'no.events' (events_topic, WFE_KAFKA_EVENTS_TOPIC) yet")
    assert not said("Kafka has no topic 'tasks'")
    # The producer waited for 'no.results' for seconds, asking again and again.
    assert not_found(caplog.records).count("no.results") == 1, not_found(caplog.records)

    # A tasks topic that is not there is a warning: the worker gets nothing.
    caplog.clear()
    lonely = KafkaMQInterface(
        broker.bootstrap, tasks_topic="no.tasks", results_topic="tasks", close_timeout=1.0
    )

    async def consuming() -> None:
        consumer = asyncio.create_task(lonely.consume_tasks(engine))
        try:
            await until(lambda: said("Kafka has no topic 'no.tasks'"), "the line")
        finally:
            lonely.stop_consuming()
            await consumer
            await lonely.close()

    wfe_run(consuming())
    [line] = [r for r in caplog.records if "topic 'no.tasks'" in r.getMessage()]
    assert line.levelno == logging.WARNING
    assert not_found(caplog.records).count("no.tasks") <= 1, not_found(caplog.records)
    assert line.getMessage() == (
        "Kafka has no topic 'no.tasks' (tasks_topic, WFE_KAFKA_TASKS_TOPIC): this worker gets "
        "no task messages until it exists; create it"
    )


def test_a_publisher_without_a_consumer_says_a_missing_topic_once(
    own_broker: Any,
    wfe_engine_factory: Any,
    wfe_run: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An app that only publishes its results (``attach``, no ``consume_tasks``) to
    a topic Kafka does not have: kafka-python's ERROR at each metadata update, ten a
    second, reaches the log once, as it does while a consumer runs. (Without a
    consumer nothing kept it out; and a consumer's stop let the publisher's next
    line through before ``close``.)"""
    said_by_kafka: list[str] = []

    class _Counter(logging.Filter):
        # Added before wfe_kafka's own filter, so it sees every line kafka-python says.
        def filter(self, record: logging.LogRecord) -> bool:
            said_by_kafka.extend(not_found([record]))
            return True

    counter = _Counter()
    cluster = logging.getLogger("kafka.cluster")
    cluster.addFilter(counter)
    caplog.set_level(logging.INFO, logger="wfe_kafka")
    engine = echo_engine(wfe_engine_factory)
    kafka = KafkaMQInterface(
        own_broker.bootstrap,
        results_topic="only.published",
        close_timeout=1.0,
        max_block_ms=1000,
    )

    async def publishing() -> None:
        await kafka.attach(engine)
        try:
            await engine.submit_task({"n": 1}, "echo", task_id="t-1")
            await engine.run_until_idle()
            await until(
                lambda: said_by_kafka.count("only.published") >= 5,
                "kafka-python saying five times that the topic is missing",
            )
        finally:
            await kafka.close()

    try:
        wfe_run(publishing())
    finally:
        cluster.removeFilter(counter)
    assert not_found(caplog.records).count("only.published") == 1, not_found(caplog.records)


def test_a_batch_to_a_missing_topic_waits_for_its_metadata_once(
    own_broker: Any, wfe_run: Any
) -> None:
    """kafka-python waits up to max_block_ms for a topic's metadata at each send: a
    batch of results to a topic Kafka does not have held the producer's thread that
    long for every record (1,000 minutes for 1,000 results at the default 60 s).
    Once one timed out, the batch's other records to that topic fail with its error
    without waiting again; records to topics that exist are sent as usual."""
    from kafka.errors import KafkaTimeoutError
    from wfe_kafka.clients import _Producer

    broker_tools = sys.modules["wfe_kafka_test_broker"]
    broker_tools.create_topic(own_broker.bootstrap, "batch.here", 1)
    producer = _Producer({"bootstrap_servers": own_broker.bootstrap, "max_block_ms": 500})
    missing = [("batch.missing", f"k{i}".encode(), b"{}", None) for i in range(20)]
    present = [("batch.here", f"k{i}".encode(), b"{}", None) for i in range(3)]

    async def sending() -> list[Any]:
        try:
            return await producer.send_many([*missing[:10], *present, *missing[10:]])
        finally:
            await producer.close(5.0)

    outcomes = wfe_run(sending())
    failed = outcomes[:10] + outcomes[13:]
    assert all(isinstance(o, KafkaTimeoutError) for o in failed), failed
    # One wait: every record to the missing topic carries the error of the first.
    assert len({id(o) for o in failed}) == 1
    assert [o.topic for o in outcomes[10:13]] == ["batch.here"] * 3

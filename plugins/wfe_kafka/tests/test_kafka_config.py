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
from pathlib import Path
from typing import Any

import pytest
from wfe_kafka import KafkaMQInterface

APPS_DIR = Path(__file__).resolve().parent / "apps"


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_worker(tmp_path: Path, quiet: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
    """``wfe worker --until-idle`` on an empty store, wired to Kafka by ``env``."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "wfcore.cli",
            "worker",
            "wfe_kafka_app:make_engine",
            "--until-idle",
            *(["-q"] if quiet else []),
            "--store",
            f"sqlite://{tmp_path}/worker.db",
        ],
        cwd=APPS_DIR,
        env=dict(os.environ, WFE_LOAD_PLUGINS="wfe_kafka", **env),
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
        deadline = time.monotonic() + 15
        while not warned():
            assert time.monotonic() < deadline, "no warning that Kafka cannot be reached"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.7)  # into the next connection attempt
        started = time.monotonic()
        kafka.stop_consuming()
        await consumer
        await kafka.close()
        return time.monotonic() - started

    assert wfe_run(scenario()) < 6.0

    def network_threads() -> list[str]:
        return [t.name for t in threading.enumerate() if client_id in t.name]

    deadline = time.monotonic() + 5
    while network_threads():
        assert time.monotonic() < deadline, f"left running: {network_threads()}"
        time.sleep(0.05)


def test_a_kafka_outage_is_reported_and_stopping_during_one_is_prompt_and_quiet(
    kafka_bootstrap: str,
    wfe_engine_factory: Any,
    wfe_run: Any,
    caplog: pytest.LogCaptureFixture,
    broker_tools: Any,
) -> None:
    """A broker of its own, frozen with SIGSTOP (its connections hang as in a
    network outage): the worker warns with how many results wait, says when
    publishing resumes, and a close() during an outage takes close_timeout, not
    three times it, with one line and no traceback."""
    kafka_broker = broker_tools
    from wfcore import Phase, Task

    broker = kafka_broker.KafkaBroker().start()
    try:
        kafka_broker.create_topic(broker.bootstrap, "results", 1)
        engine = wfe_engine_factory()

        async def echo(task: Task) -> None:
            task.output = task.data

        engine.register_handler("echo", echo)
        engine.register_workflow("echo", [Phase("echo", assigned_to="functional")])
        kafka = KafkaMQInterface(broker.bootstrap, results_topic="results", close_timeout=3.0)
        kafka.outage_warn_after = 1.0
        kafka.outage_warn_every = 60.0
        caplog.set_level(logging.WARNING, logger="wfe_kafka")

        def logged(text: str) -> bool:
            return any(text in r.getMessage() for r in caplog.records)

        async def until(condition: Any, what: str) -> None:
            deadline = time.monotonic() + 60
            while not condition():
                assert time.monotonic() < deadline, f"timed out waiting for {what}"
                await asyncio.sleep(0.05)

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
                return time.monotonic() - started
            finally:
                os.kill(broker.pid, signal.SIGCONT)

        took = wfe_run(scenario())
    finally:
        broker.stop()
    assert took < 3.0 + 1.5
    stop_lines = [r for r in caplog.records if "published at the next start" in r.getMessage()]
    assert len(stop_lines) == 1
    assert "1 result(s) stay in the outbox" in stop_lines[0].getMessage()
    assert not [r for r in caplog.records if r.exc_info]

"""Scale-out: three ``wfe worker`` processes in one consumer group share a tasks topic.

Each worker is a real process started through the CLI and wired to Kafka by the
environment alone. Tasks are produced by a plain kafka-python producer; the
results topic is read back and every task id counted.
"""

from __future__ import annotations

import collections
import json
import signal
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wfe_kafka_util import (
    FAST_GROUP,
    TopicReader,
    group_state,
    produce,
    start_worker,
    wait_until,
    worker_env,
)

TASKS = 3000
PARTITIONS = 6


class Workers:
    """Worker processes of one consumer group, each logging to its own file."""

    def __init__(self, bootstrap: str, tasks: str, results: str, tmp: Path, **env: str) -> None:
        self.group = f"scale-{uuid.uuid4().hex[:8]}"
        self.tmp = tmp
        self.env = worker_env(
            KAFKA_BROKERS=bootstrap,
            WFE_KAFKA_TASKS_TOPIC=tasks,
            WFE_KAFKA_RESULTS_TOPIC=results,
            WFE_KAFKA_GROUP=self.group,
            WFE_KAFKA_CLIENT_CONFIG=json.dumps(FAST_GROUP),
            WFE_KAFKA_OUTBOX_GRACE="1",
            WFE_KAFKA_MAX_PENDING="150",
            **env,
        )
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, store_url: str) -> subprocess.Popen[bytes]:
        log = self.tmp / f"worker-{len(self.procs)}.log"
        proc = start_worker(store_url, log, self.env, "-q")
        self.procs.append(proc)
        return proc

    def wait_joined(self, bootstrap: str, members: int) -> None:
        state: list[Any] = []

        def joined() -> bool:
            self.check_alive()
            state[:] = [group_state(bootstrap, self.group)]
            return state[0] == ("Stable", members)

        try:
            wait_until(joined, 60, f"{members} workers in a stable group")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; group {state}; logs:\n{self.logs()}") from None

    def check_alive(self) -> bool:
        for proc in self.procs:
            if proc.poll() is not None and proc.returncode != -signal.SIGKILL:
                raise AssertionError(f"a worker exited with {proc.returncode}:\n{self.logs()}")
        return True

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in self.tmp.glob("*.log"))

    def stop(self) -> list[int | None]:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = []
        for proc in self.procs:
            try:
                codes.append(proc.wait(timeout=60))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes.append(proc.wait())
        return codes


def produce_tasks(bootstrap: str, topic: str) -> None:
    """3,000 tasks from a plain producer: half name their id, half let the worker derive it."""
    messages = []
    for i in range(TASKS):
        doc: dict[str, Any] = {"workflow_name": "scale", "data": {"n": i}}
        if i % 2:
            doc["id"] = f"task-{i}"
        messages.append((None, json.dumps(doc).encode()))
    produce(bootstrap, topic, messages)


def read_results(
    reader: TopicReader, workers: Workers, until: Callable[[dict[int, int]], bool] | None = None
) -> collections.Counter[int]:
    """Read results until every task number arrived; return how often each arrived."""
    seen: collections.Counter[int] = collections.Counter()
    done = 0

    def progress() -> bool:
        nonlocal done
        workers.check_alive()
        records = reader.poll()
        for record in records[done:]:
            doc = json.loads(record.value)
            assert doc["status"] == "completed", doc
            assert record.key.decode() == doc["id"]
            seen[doc["output"]["n"]] += 1
        done = len(records)
        if until is not None and until(seen):
            return True
        return len(seen) == TASKS

    wait_until(progress, 120, f"results for all {TASKS} tasks")
    return seen


def test_three_workers_split_the_topic_and_complete_every_task_once(
    kafka_bootstrap: str, kafka_topic: Callable[..., str], tmp_path: Path
) -> None:
    tasks, results = kafka_topic(PARTITIONS, "tasks"), kafka_topic(PARTITIONS, "results")
    workers = Workers(kafka_bootstrap, tasks, results, tmp_path, APP_WORK_SECONDS="0.002")
    try:
        for i in range(3):
            workers.start(f"sqlite://{tmp_path}/worker-{i}.db")  # a store each
        workers.wait_joined(kafka_bootstrap, 3)
        produce_tasks(kafka_bootstrap, tasks)
        with TopicReader(kafka_bootstrap, results) as reader:
            seen = read_results(reader, workers)
            by_worker = collections.Counter(
                json.loads(r.value)["output"]["worker"] for r in reader.records
            )
    finally:
        codes = workers.stop()
    assert codes == [0, 0, 0], workers.logs()
    assert len(seen) == TASKS
    assert [n for n, times in seen.items() if times > 1] == []  # none twice
    assert sum(seen.values()) == TASKS
    assert len(by_worker) == 3, f"not every worker took part: {by_worker}\n{workers.logs()}"


def test_a_worker_killed_mid_run_loses_no_task(
    kafka_bootstrap: str,
    kafka_topic: Callable[..., str],
    tmp_path: Path,
    record_property: Callable[[str, Any], None],
) -> None:
    tasks, results = kafka_topic(PARTITIONS, "tasks"), kafka_topic(PARTITIONS, "results")
    shared = f"sqlite://{tmp_path}/shared.db"
    workers = Workers(
        kafka_bootstrap, tasks, results, tmp_path, APP_WORK_SECONDS="0.05", APP_CONCURRENCY="20"
    )
    try:
        victim = workers.start(shared)
        for _ in range(2):
            workers.start(shared)
        workers.wait_joined(kafka_bootstrap, 3)
        produce_tasks(kafka_bootstrap, tasks)
        with TopicReader(kafka_bootstrap, results) as reader:
            read_results(reader, workers, until=lambda seen: len(seen) >= TASKS // 4)
            assert victim.poll() is None, "the worker to kill already exited"
            victim.send_signal(signal.SIGKILL)
            assert victim.wait(timeout=10) == -signal.SIGKILL
            seen = read_results(reader, workers)
        workers.wait_joined(kafka_bootstrap, 2)  # the survivors hold every partition
    finally:
        codes = workers.stop()
    assert codes[1:] == [0, 0], workers.logs()
    duplicates = sum(times - 1 for times in seen.values())
    record_property("duplicate_results", duplicates)
    print(f"\nSIGKILL, shared store: {TASKS} tasks, {duplicates} duplicate result(s)")
    assert len(seen) == TASKS  # every task ended up in the results topic
    # Only results the killed worker sent but had not yet marked as published
    # can come twice; it had at most its pending tasks plus a batch in hand.
    assert duplicates <= 150 + 500


def test_a_killed_worker_with_its_own_store_finishes_its_tasks_after_a_restart(
    kafka_bootstrap: str,
    kafka_topic: Callable[..., str],
    tmp_path: Path,
    record_property: Callable[[str, Any], None],
) -> None:
    tasks, results = kafka_topic(PARTITIONS, "tasks"), kafka_topic(PARTITIONS, "results")
    stores = [f"sqlite://{tmp_path}/worker-{i}.db" for i in range(3)]
    workers = Workers(
        kafka_bootstrap, tasks, results, tmp_path, APP_WORK_SECONDS="0.05", APP_CONCURRENCY="20"
    )
    try:
        victim = workers.start(stores[0])
        for store in stores[1:]:
            workers.start(store)
        workers.wait_joined(kafka_bootstrap, 3)
        produce_tasks(kafka_bootstrap, tasks)
        with TopicReader(kafka_bootstrap, results) as reader:
            read_results(reader, workers, until=lambda seen: len(seen) >= TASKS // 4)
            victim.send_signal(signal.SIGKILL)
            assert victim.wait(timeout=10) == -signal.SIGKILL
            # The survivors take its partitions; what it had stored waits in its store.
            workers.wait_joined(kafka_bootstrap, 2)
            workers.start(stores[0])  # the same worker comes back on its store
            seen = read_results(reader, workers)
    finally:
        codes = workers.stop()
    assert codes[1:] == [0, 0, 0], workers.logs()
    duplicates = sum(times - 1 for times in seen.values())
    record_property("duplicate_results", duplicates)
    print(f"\nSIGKILL, own stores, restart: {TASKS} tasks, {duplicates} duplicate result(s)")
    assert len(seen) == TASKS
    # Messages it had stored but not committed ran on a survivor too (case 3 in
    # the README): at most its pending tasks plus the batches in hand.
    assert duplicates <= 150 + 4 * 500

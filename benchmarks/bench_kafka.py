"""End-to-end Kafka throughput: tasks in through a topic, results out through another.

Three measurements in one run, on one broker, with the same N task messages:

* raw: a plain kafka-python producer sends the N messages (acks=all) to a
  6-partition topic while a plain KafkaConsumer in another process reads them
  back. This is the limit: what Kafka and kafka-python alone manage here.
* relay: the same N messages go to a tasks topic; one process with a plain
  KafkaConsumer (in a group, committing after each batch) and a KafkaProducer
  (acks=all) answers each with a result message the size of wfcore's; this
  process reads the results topic until it has N distinct ids. No engine: this
  is the most any single worker built on kafka-python can do here.
* end-to-end: the same again, with one ``wfe worker`` process (auto-wired
  through ``KAFKA_BROKERS``, SQLite store by default) in the relay's place: it
  consumes, runs a 1-phase workflow and publishes each result.

Each clock runs from the first message sent to the last one (or last result)
received, with the consumer already in its group. A first raw round, not
reported, warms up the broker. Prints the three rates, their ratios to raw and
the worker's peak memory and the CPU time the worker (and the relay) used per
task while the clock ran, all its threads together: a figure less noisy than the
rates on a shared machine, for comparing two versions of the worker.

    python benchmarks/bench_kafka.py                  # N=20000, starts a broker
    python benchmarks/bench_kafka.py -n 50000 --bootstrap 127.0.0.1:9092
    python benchmarks/bench_kafka.py --store memory   # the worker on memory://
    python benchmarks/bench_kafka.py --processes 2    # two worker processes, one SQLite file
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BROKER_PY = HERE.parent / "plugins" / "wfe_kafka" / "broker" / "kafka_broker.py"


def make_engine() -> Any:
    """The worker's app: a 1-phase workflow whose handler echoes the task data."""
    from wfcore import ECSWorkflowEngine, Phase, Task

    async def echo(task: Task) -> None:
        task.output = task.data

    engine = ECSWorkflowEngine(max_concurrency=200)
    engine.register_handler("echo", echo)
    engine.register_workflow("bench", [Phase("echo", assigned_to="functional")])
    return engine


def _broker_module() -> Any:
    spec = importlib.util.spec_from_file_location("wfe_kafka_bench_broker", BROKER_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _messages(n: int) -> list[tuple[bytes, bytes]]:
    return [
        (
            f"b{i}".encode(),
            json.dumps(
                {"id": f"b{i}", "workflow_name": "bench", "data": {"i": i}}, separators=(",", ":")
            ).encode(),
        )
        for i in range(n)
    ]


def _produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, batch_size=128 * 1024
    )
    try:
        for key, value in messages:
            producer.send(topic, key=key, value=value)
        producer.flush(timeout=120)
    finally:
        producer.close(timeout=10)


def _warm_producer(bootstrap: str, topics: list[str]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for topic in topics:
        producer.partitions_for(topic)
    producer.close(timeout=10)


def _group_ready(bootstrap: str, group: str, partitions: int, timeout: float = 60.0) -> None:
    """Wait until the group is Stable and its members hold all ``partitions`` of
    the topic: a first assignment made before the leader knew the topic's
    partitions is empty, and is redone a moment later."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                info = admin.describe_groups([group])[group]
            except Exception:
                info = {}
            held = sum(_held_partitions(m) for m in info.get("members") or [])
            if info.get("group_state") == "Stable" and held == partitions:
                return
            time.sleep(0.1)
    finally:
        admin.close()
    raise RuntimeError(
        f"consumer group {group} did not hold the topic's {partitions} partitions "
        f"within {timeout:.0f}s"
    )


def _held_partitions(member: dict[str, Any]) -> int:
    """How many partitions a member of a described group holds."""
    assignment = member.get("member_assignment") or {}
    topics = assignment.get("assigned_partitions", []) if isinstance(assignment, dict) else []
    return sum(len(t["partitions"] if isinstance(t, dict) else t[1]) for t in topics)


def _subscribed(topic: str, **settings: Any) -> Any:
    """A KafkaConsumer in a group, subscribed to ``topic``, that knows the topic's
    partitions before its first poll joins the group.

    Without them its first assignment is empty and it joins again once they
    arrive; kafka-python 3.0.x never applies that second assignment when the
    poll that started it times out before it completes (a poll of 200 ms, say):
    the consumer then fetches nothing, for good. wfe_kafka's consumer fetches the
    metadata first too, and starts afresh when its group never settles.
    """
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, enable_auto_commit=False, metrics_enabled=False, **settings)
    consumer.topics()  # a metadata update after subscribe(), which records the partitions
    return consumer


def raw_consumer(bootstrap: str, topic: str, group: str, count: int) -> None:
    """Subprocess: read ``count`` messages of ``topic`` in group ``group``, decode each."""
    consumer = _subscribed(
        topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest"
    )
    seen = 0
    while seen < count:
        for records in consumer.poll(timeout_ms=200).values():
            for record in records:
                json.loads(record.value)
            seen += sum(1 for _ in records)
            consumer.commit()
    print(f"done {time.time():.6f}", flush=True)
    consumer.close()


def relay(bootstrap: str, tasks: str, results: str, group: str) -> None:
    """Subprocess: answer every task message with a result message, without an engine.

    Reads like the wfe_kafka consumer (a group, offsets committed after the batch's
    results are acknowledged) and writes like its publisher (acks=all). Runs until
    killed.
    """
    from kafka import KafkaProducer

    consumer = _subscribed(
        tasks, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest"
    )
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, batch_size=128 * 1024
    )
    template = json.loads(_RESULT_TEMPLATE)
    while True:
        batches = consumer.poll(timeout_ms=200)
        for records in batches.values():
            for record in records:
                task = json.loads(record.value)
                result = dict(template, id=task["id"], data=task["data"], output=task["data"])
                producer.send(
                    results,
                    key=record.key,
                    value=json.dumps(result, separators=(",", ":")).encode(),
                )
        if batches:
            producer.flush()
            consumer.commit()


# A finished 1-phase task as wfe_kafka publishes it (about 900 bytes).
_RESULT_TEMPLATE = json.dumps(
    {
        "id": None,
        "data": None,
        "workflow_name": "bench",
        "classification": "echo",
        "assigned_to": "agentic",
        "context": {"kafka": {"topic": "bench-tasks", "partition": 0, "offset": 0}},
        "artifacts": [],
        "output": None,
        "outputs": {"echo": None},
        "error": None,
        "traceback": None,
        "attempts": 0,
        "next_classification": None,
        "waiting_reason": None,
        "deadline": None,
        "reply": None,
        "resume_in_phase": False,
        "run_after": None,
        "status": "completed",
        "history": [
            {"at": "2026-01-01T00:00:00.000+00:00", "event": "submitted", "workflow": "bench"},
            {
                "at": "2026-01-01T00:00:00.000+00:00",
                "event": "phase_started",
                "phase": "echo",
                "attempt": 1,
                "task_type": "functional",
                "worker": "host/12345/0123abcd",
            },
            {
                "at": "2026-01-01T00:00:00.000+00:00",
                "event": "phase_finished",
                "phase": "echo",
                "next": None,
                "seconds": 1.8e-05,
            },
            {"at": "2026-01-01T00:00:00.000+00:00", "event": "completed"},
        ],
        "created_at": "2026-01-01T00:00:00.000000+00:00",
        "updated_at": "2026-01-01T00:00:00.000000+00:00",
        "format": 1,
    }
)


def measure_raw(bootstrap: str, broker: Any, n: int, partitions: int) -> float:
    from wfcore._processes import ending_with_parent

    topic = broker.create_topic(bootstrap, f"bench-raw-{uuid.uuid4().hex[:8]}", partitions)
    group = f"bench-raw-{uuid.uuid4().hex[:8]}"
    messages = _messages(n)
    _warm_producer(bootstrap, [topic])
    proc = subprocess.Popen(
        [sys.executable, __file__, "--raw-consumer", bootstrap, topic, group, str(n)],
        stdout=subprocess.PIPE,
        text=True,
        # Ends with the benchmark (killed by a test's timeout, say): left behind, it
        # would poll a broker that is gone, at full CPU, for good. So does the worker.
        preexec_fn=ending_with_parent(),
    )
    try:
        _group_ready(bootstrap, group, partitions)
        start = time.time()
        _produce(bootstrap, topic, messages)
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        if not line or line[0] != "done":
            raise RuntimeError("the raw consumer failed")
        return n / (float(line[1]) - start)
    finally:
        proc.wait(timeout=30)
        broker.delete_topics(bootstrap, [topic])


def measure_end_to_end(
    bootstrap: str,
    broker: Any,
    n: int,
    partitions: int,
    concurrency: int,
    store: str | None,
    processes: int = 1,
) -> tuple[float, float, float]:
    """Tasks in, results out: ``wfe worker -p processes`` on ``store`` (``"sqlite"``
    or ``"memory"``), or the engine-less relay when ``store`` is None. Returns the
    rate, the worker's peak memory (MB) and its CPU time per task (µs) while the
    clock ran."""
    from kafka import KafkaConsumer, TopicPartition

    from wfcore._processes import ending_with_parent

    suffix = uuid.uuid4().hex[:8]
    tasks = broker.create_topic(bootstrap, f"bench-tasks-{suffix}", partitions)
    results = broker.create_topic(bootstrap, f"bench-results-{suffix}", partitions)
    group = f"bench-workers-{suffix}"
    messages = _messages(n)
    _warm_producer(bootstrap, [tasks])
    if store is None:
        command = [str(Path(__file__).resolve()), "--relay", bootstrap, tasks, results, group]
        env = dict(os.environ)
    else:
        tmp = tempfile.mkdtemp(prefix="wfe-bench-kafka-")
        url = f"sqlite://{tmp}/worker.db" if store == "sqlite" else "memory://"
        command = ["-m", "wfcore.cli", "worker", "bench_kafka:make_engine", "--store", url]
        command += ["--concurrency", str(concurrency), "--processes", str(processes), "-q"]
        env = dict(
            os.environ,
            KAFKA_BROKERS=bootstrap,
            WFE_KAFKA_TASKS_TOPIC=tasks,
            WFE_KAFKA_RESULTS_TOPIC=results,
            WFE_KAFKA_GROUP=group,
            WFE_LOAD_PLUGINS="wfe_kafka",
            # memory:// loses what it holds when the worker stops: fine for a benchmark.
            WFE_KAFKA_ALLOW_VOLATILE_STORE="1",
        )
    worker = subprocess.Popen(
        [sys.executable, *command], cwd=HERE, env=env, preexec_fn=ending_with_parent()
    )
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, metrics_enabled=False
    )
    try:
        _group_ready(bootstrap, group, partitions)
        consumer.assign([TopicPartition(results, p) for p in range(partitions)])
        consumer.seek_to_beginning()
        cpu_before = _cpu_seconds(worker.pid)
        start = time.time()
        _produce(bootstrap, tasks, messages)
        seen: set[str] = set()
        deadline = time.monotonic() + 600
        while len(seen) < n:
            if time.monotonic() > deadline or worker.poll() is not None:
                raise RuntimeError(f"only {len(seen)} of {n} results arrived")
            for records in consumer.poll(timeout_ms=200).values():
                for record in records:
                    seen.add(json.loads(record.value)["id"])
        elapsed = time.time() - start
        worker_cpu = _cpu_seconds(worker.pid) - cpu_before
        worker_rss = _peak_rss_mb(worker.pid)
    finally:
        consumer.close()
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
        broker.delete_topics(bootstrap, [tasks, results])
    return n / elapsed, worker_rss, worker_cpu / n * 1e6


def _cpu_seconds(pid: int) -> float:
    """The CPU time (user and system, all threads; Linux) used so far by a live
    process and the worker processes it supervises, in seconds; 0 where unknown."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # The fields after the command name, which is in parentheses and may hold spaces.
    fields = stat[stat.rfind(")") + 2 :].split()
    ticks = os.sysconf("SC_CLK_TCK")
    own = (int(fields[11]) + int(fields[12])) / ticks
    return own + sum(_cpu_seconds(int(child)) for child in children)


def _peak_rss_mb(pid: int) -> float:
    """The peak resident memory (Linux) of a live process or, when it supervises
    worker processes, of the largest of them, in MB; 0 where unknown."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    if children:
        return max(_peak_rss_mb(int(child)) for child in children)
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _at_least_one(text: str) -> int:
    """A count given on the command line: 0 or less would wait for ever (no message
    ever arrives) or fail deep inside Kafka's admin client."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number, at least 1, got {text!r}")
    return value


def _check_reachable(bootstrap: str, timeout: float = 5.0) -> None:
    """Exit with one line when no broker answers at ``bootstrap``, instead of a
    traceback from the first client the benchmark makes."""
    from kafka import KafkaAdminClient

    try:
        KafkaAdminClient(
            bootstrap_servers=bootstrap, bootstrap_timeout_ms=int(timeout * 1000)
        ).close()
    except Exception as exc:
        sys.exit(f"bench_kafka.py: cannot reach Kafka at {bootstrap} ({exc})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "-n", type=_at_least_one, default=20000, help="task messages per measurement"
    )
    parser.add_argument("--partitions", type=_at_least_one, default=6)
    parser.add_argument(
        "--concurrency", type=_at_least_one, default=200, help="the worker's concurrency"
    )
    parser.add_argument(
        "--bootstrap", default=os.environ.get("WFE_KAFKA_BOOTSTRAP"), help="use this broker"
    )
    parser.add_argument(
        "--store",
        choices=["sqlite", "memory"],
        default="sqlite",
        help="the worker's store (default sqlite: durable, as the delivery guarantees need)",
    )
    parser.add_argument(
        "--processes",
        type=_at_least_one,
        default=1,
        help="worker processes in the consumer group, sharing the SQLite file (default 1)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--raw-consumer", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--relay", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw_consumer:
        bootstrap, topic, group, count = args.raw_consumer
        raw_consumer(bootstrap, topic, group, int(count))
        return
    if args.relay:
        relay(*args.relay)
        return

    broker_mod = _broker_module()
    broker = None
    bootstrap = args.bootstrap
    if bootstrap:
        _check_reachable(bootstrap)
    else:
        broker = broker_mod.KafkaBroker()
        broker.start()
        bootstrap = broker.bootstrap
    try:
        # A fresh broker's JVM is still compiling its hot paths: warm it up first.
        measure_raw(bootstrap, broker_mod, args.n, args.partitions)
        raw = measure_raw(bootstrap, broker_mod, args.n, args.partitions)
        relayed, _, relay_cpu = measure_end_to_end(
            bootstrap, broker_mod, args.n, args.partitions, args.concurrency, None
        )
        e2e, rss, worker_cpu = measure_end_to_end(
            bootstrap,
            broker_mod,
            args.n,
            args.partitions,
            args.concurrency,
            args.store,
            args.processes,
        )
    finally:
        if broker is not None:
            broker.stop()
    result = {
        "n": args.n,
        "store": args.store,
        "processes": args.processes,
        "raw_msgs_per_s": round(raw),
        "relay_tasks_per_s": round(relayed),
        "end_to_end_tasks_per_s": round(e2e),
        "ratio": round(e2e / raw, 3),
        "relay_ratio": round(relayed / raw, 3),
        "worker_peak_rss_mb": round(rss),
        "worker_cpu_us_per_task": round(worker_cpu),
        "relay_cpu_us_per_task": round(relay_cpu),
    }
    if args.json:
        print(json.dumps(result))
    else:
        procs = f"{args.processes} worker{'s' if args.processes > 1 else ''}"
        worker = f"end to end ({procs}, {args.store})"
        print(
            f"raw kafka-python produce+consume {raw:>9,.0f} msgs/s\n"
            f"relay without an engine          {relayed:>9,.0f} tasks/s  "
            f"= {relayed / raw:.0%} of raw  (CPU {relay_cpu:.0f} µs per task)\n"
            f"{worker:<32} {e2e:>9,.0f} tasks/s  "
            f"= {e2e / raw:.0%} of raw, {e2e / relayed:.0%} of the relay  "
            f"(N={args.n}, worker peak RSS {rss:.0f} MB, CPU {worker_cpu:.0f} µs per task)"
        )


if __name__ == "__main__":
    main()

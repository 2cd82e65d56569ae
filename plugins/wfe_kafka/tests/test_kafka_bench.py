"""benchmarks/bench_kafka.py, which the README's Performance section runs, against
the tests' broker: it still runs and reports each rate (a few hundred messages; the
figures are not checked, as this machine's speed varies from hour to hour)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[3] / "benchmarks" / "bench_kafka.py"


def test_the_kafka_benchmark_reports_raw_relay_and_end_to_end(kafka_bootstrap: str) -> None:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    done = subprocess.run(
        [sys.executable, str(BENCH), "--bootstrap", kafka_bootstrap, "-n", "300", "--json"],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert (result["n"], result["store"], result["processes"]) == (300, "sqlite", 1)
    for rate in ("raw_msgs_per_s", "relay_tasks_per_s", "end_to_end_tasks_per_s"):
        assert result[rate] > 0, rate
    # The rates are printed rounded to whole numbers, the ratio from the exact ones.
    ratio = result["end_to_end_tasks_per_s"] / result["raw_msgs_per_s"]
    assert abs(result["ratio"] - ratio) < 0.01
    assert result["worker_peak_rss_mb"] > 0
    # The CPU time per task of the worker and of the relay (all their threads,
    # while the clock ran): a figure to compare versions by on a shared machine.
    assert result["worker_cpu_us_per_task"] > 0
    assert result["relay_cpu_us_per_task"] > 0


def test_the_kafka_benchmark_refuses_counts_below_one_and_a_broker_it_cannot_reach() -> None:
    """-n 0 waited a minute for a consumer group that never formed, then failed with
    a traceback; an unreachable --bootstrap failed with kafka-python's traceback."""
    for option in (["-n", "0"], ["--processes", "0"], ["--partitions", "-1"]):
        done = subprocess.run(
            [sys.executable, str(BENCH), *option], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 2, done.stderr
        assert done.stderr.splitlines()[-1] == (
            f"bench_kafka.py: error: argument {option[0]}: expected a whole number, "
            f"at least 1, got {option[1]!r}"
        )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{sock.getsockname()[1]}"  # nothing listens there
    done = subprocess.run(
        [sys.executable, str(BENCH), "--bootstrap", closed],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [
        f"bench_kafka.py: cannot reach Kafka at {closed} "
        f"(KafkaTimeoutError: Unable to bootstrap from {closed})"
    ]

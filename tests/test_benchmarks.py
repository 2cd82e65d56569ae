"""The benchmarks the README's Performance section runs: each still runs and reports
what the README reads from it (small sizes here; the figures are not checked, as
this machine's speed varies from hour to hour)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _bench(name: str, *args: str) -> list[dict[str, Any]]:
    """Run ``benchmarks/NAME`` with ``--json``; its JSON lines."""
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / name), *args, "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_the_throughput_benchmark_reports_each_store() -> None:
    results = _bench("bench_throughput.py", "-n", "300", "--store", "sqlite", "--store", "memory")
    assert [(r["store"], r["n"], r["workers"]) for r in results] == [
        ("sqlite", 300, 1),
        ("memory", 300, 1),
    ]
    for r in results:
        assert r["workflows_per_s"] > 0 and r["cpu_us_per_workflow"] > 0
        assert r["p50_ms"] <= r["p99_ms"]
        # Without --urgent-every no task is urgent: no latencies of urgent tasks.
        assert "urgent_p50_ms" not in r


def test_the_throughput_benchmark_reports_urgent_tasks_apart() -> None:
    """With --urgent-every, the tasks it submits at a higher priority get their own
    latencies (how long an urgent task waits behind a burst of others)."""
    [result] = _bench(
        "bench_throughput.py", "-n", "400", "--store", "memory", "--urgent-every", "20"
    )
    assert result["urgent_p50_ms"] <= result["urgent_p99_ms"]
    # A run without --urgent-every has none: test_the_throughput_benchmark_reports_each_store.


def test_the_throughput_benchmark_can_limit_the_second_phase() -> None:
    [result] = _bench("bench_throughput.py", "-n", "200", "--store", "sqlite", "--limit", "5")
    assert result["limit"] == 5
    assert result["workflows_per_s"] > 0


def test_the_backlog_benchmark_reports_a_cold_start(tmp_path: Path) -> None:
    [result] = _bench("bench_backlog.py", "-n", "2000", "--complete", "100", "--dir", str(tmp_path))
    assert result["n"] == 2000
    assert result["completed"] >= 100
    assert 0 < result["first_completion_s"] < 60
    assert result["peak_rss_mb"] > 0


def test_the_long_history_benchmark_reports_each_store() -> None:
    results = _bench("bench_long_history.py", "--rounds", "2000")
    assert [(r["store"], r["rounds"], r["events"]) for r in results] == [
        ("sqlite", 2000, 4004),
        ("memory", 2000, 4004),
    ]
    assert all(r["last_vs_first"] > 0 for r in results)

"""benchmarks/bench_kafka.py, which the README's Performance section runs, against
the tests' broker: it still runs and reports each rate (a few hundred messages; the
figures are not checked, as this machine's speed varies from hour to hour)."""

from __future__ import annotations

import json
import os
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

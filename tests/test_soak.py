"""The soak harness (benchmarks/soak.py) at a small size: workers SIGKILLed a few
times under its mixed workload, and every check it makes passes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SOAK = Path(__file__).resolve().parents[1] / "benchmarks" / "soak.py"


def test_the_soak_harness_kills_workers_and_finds_every_promise_kept(tmp_path: Path) -> None:
    # --seconds 5 with a kill every 0.75x to 2.25x of 1.5 s: at least two kills.
    # The harness itself waits for the tasks with a deadline (--drain-seconds).
    options = "--tasks 10 --workers 2 --seconds 5 --kill-every 1.5 --phase-seconds 0.3"
    options += " --drain-seconds 15 --seed 7"
    done = subprocess.run(
        [sys.executable, str(SOAK), *options.split(), "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK: no invariant violated" in done.stdout
    kills = re.search(r"'worker': (\d+)", done.stdout)
    assert kills is not None and int(kills.group(1)) >= 2, done.stdout
    assert re.search(r"tasks stored: \d+, by status: \{.*'completed': \d+", done.stdout)
    # The run's folder is removed without --keep, its processes ended.
    assert list(tmp_path.iterdir()) == []

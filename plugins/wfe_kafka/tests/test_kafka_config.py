"""Misconfiguration as a worker meets it: the command line, a broker that is not there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

APPS_DIR = Path(__file__).resolve().parent / "apps"


def run_worker(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``wfe worker --until-idle`` on an empty store, wired to Kafka by ``env``."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "wfcore.cli",
            "worker",
            "wfe_kafka_app:make_engine",
            "--until-idle",
            "-q",
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
    assert result.returncode == 0, result.stderr
    assert (
        "Kafka is not started, this worker runs without it: WFE_KAFKA_TASKS_TOPIC='orders tasks'"
        " is not a valid Kafka topic name" in result.stderr
    )
    assert "Traceback" not in result.stderr

    result = run_worker(tmp_path, KAFKA_BROKERS="kafka1:9092,kafka2:90922")
    assert "KAFKA_BROKERS: 'kafka2:90922' is not host:port" in result.stderr
    assert "Traceback" not in result.stderr

"""A worker started with stderr closed (2>&-, a launcher that closes it) works as
one whose stderr is a file: Python gives it no sys.stderr at all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from test_cli import APP


def _closed_stderr() -> None:
    os.close(2)


def test_a_worker_started_with_stderr_closed_runs_its_tasks(wfe, tmp_path: Path) -> None:
    task_id = wfe("submit", "review", "--app", APP, "--data", '{"n": 1}').stdout.strip()
    worker = subprocess.run(
        [sys.executable, "-m", "wfcore.cli", "worker", APP, "--until-idle"],
        cwd=tmp_path,
        env=wfe.env,
        stdout=subprocess.PIPE,
        stderr=None,
        preexec_fn=_closed_stderr,
        timeout=60,
    )
    assert worker.returncode == 0
    # The review app's first phase ran; the task waits for a person.
    assert json.loads(wfe("show", task_id, "--json").stdout)["status"] == "waiting_human"
    # A refused command line still exits 2, its error going nowhere.
    refused = subprocess.run(
        [sys.executable, "-m", "wfcore.cli", "tasks", "--status", "bogus"],
        cwd=tmp_path,
        env=wfe.env,
        stdout=subprocess.PIPE,
        preexec_fn=_closed_stderr,
        timeout=60,
    )
    assert refused.returncode == 2 and refused.stdout == b""

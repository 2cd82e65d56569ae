"""A worker stopped (SIGSTOP) past its lease while its phase runs wakes to find its
task taken over and completed by another worker: the files of the completed task
are the other worker's, the stale run's writes are refused."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from core_util import background_wfe, stored_task, wait_until

APP = """
import asyncio, os
from pathlib import Path
from wfcore import ECSWorkflowEngine, Phase

engine = ECSWorkflowEngine(lease_seconds=1, poll_interval=0.1)
marks = Path(os.environ["MARKS"])

async def write(task):
    role = os.environ["ROLE"]
    (marks / f"started-{role}").touch()
    if role == "paused":
        # Stopped in here, by the test; once woken, it writes again.
        while not (marks / "woken").exists():
            await asyncio.sleep(0.02)
    try:
        await engine.add_artifact_text(task, "report.txt", f"written by the {role} worker")
    except Exception as exc:
        (marks / f"refused-{role}").write_text(str(exc))
        raise
    task.output = role

engine.register_handler("write", write)
engine.register_workflow("w", [Phase("write", assigned_to="functional")])
"""


def test_a_worker_woken_past_its_lease_leaves_the_new_runs_files(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(APP)
    url = f"sqlite:///{tmp_path}/wfe.db"
    env = {
        **os.environ,
        "WFE_STORE": url,
        "MARKS": str(tmp_path),
        "PYTHONPATH": str(tmp_path),
        "WFE_LOAD_PLUGINS": "",
    }
    wfe = [sys.executable, "-m", "wfcore.cli"]
    subprocess.run(
        [*wfe, "submit", "w", "--id", "t1", "--app", "app:engine"],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
    )
    with background_wfe(
        "worker",
        "app:engine",
        "--quiet",
        cwd=tmp_path,
        env={**env, "ROLE": "paused"},
        log=tmp_path / "paused.log",
    ) as paused:
        wait_until(lambda: (tmp_path / "started-paused").exists(), what="the first run")
        paused.send_signal(signal.SIGSTOP)
        try:
            # Waits out the stopped worker's lease, takes the task over, completes it.
            subprocess.run(
                [*wfe, "worker", "app:engine", "--until-idle", "--quiet"],
                cwd=tmp_path,
                env={**env, "ROLE": "other"},
                check=True,
                capture_output=True,
                timeout=60,
            )
            (tmp_path / "woken").touch()
        finally:
            paused.send_signal(signal.SIGCONT)
        wait_until(lambda: (tmp_path / "refused-paused").exists(), what="the stale write")
        said = (tmp_path / "refused-paused").read_text()
        assert said.startswith("task 't1': this worker no longer holds it (its lease ran out")
        paused.send_signal(signal.SIGTERM)
        assert paused.wait(timeout=30) == 0

    task = stored_task(url, "t1")
    assert task.status.value == "completed" and task.output == "other"
    [art] = task.artifacts
    body = (tmp_path / "wfe.db-artifacts" / "t1" / "report.txt").read_bytes()
    assert body == b"written by the other worker"
    assert hashlib.sha256(body).hexdigest() == art.sha256

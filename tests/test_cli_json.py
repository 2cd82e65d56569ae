"""wfe's --json output: one shape of a task everywhere, with its version."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from test_cli import APP, _wait_for


def test_every_task_printed_as_json_has_its_version(wfe) -> None:
    submitted = json.loads(
        wfe("submit", "review", "--app", APP, "--data", '{"n": 1}', "--json").stdout
    )
    task_id = submitted["id"]
    listed = json.loads(wfe("tasks", "--json").stdout)
    shown = json.loads(wfe("show", task_id, "--json").stdout)
    assert submitted["version"] == listed[0]["version"] == shown["version"]
    assert set(submitted) == set(listed[0]) == set(shown)

    cancelled = json.loads(wfe("cancel", task_id, "--json").stdout)
    assert cancelled["status"] == "cancelled" and cancelled["version"] > shown["version"]
    retried = json.loads(wfe("retry", task_id, "--json").stdout)
    assert retried["status"] == "pending" and retried["version"] > cancelled["version"]
    assert wfe("cancel", task_id).stdout == f"{task_id} cancelled\n"


def test_status_json_marks_dead_workers(wfe, tmp_path) -> None:
    gate = tmp_path / "gate"
    task_id = wfe("submit", "review", "--app", APP, "--data", '{"n": 1, "wait": true}').stdout
    proc = subprocess.Popen(
        [sys.executable, "-m", "wfcore.cli", "worker", APP, "--quiet"],
        cwd=tmp_path,
        env=dict(wfe.env, CLI_APP_GATE=str(gate)),
    )
    try:
        _wait_for(lambda: (tmp_path / f"gate.pid.{task_id.strip()}").exists(), what="the phase")
        alive = json.loads(wfe("status", "--json").stdout)
        (worker,) = alive["busy_workers"]
        assert f"/{proc.pid}/" in worker
        assert alive["workers"] == [{"id": worker, "dead": False}]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        dead = json.loads(wfe("status", "--json").stdout)
        assert dead["busy_workers"] == [worker]
        assert dead["workers"] == [{"id": worker, "dead": True}]
    finally:
        if proc.poll() is None:
            proc.kill()

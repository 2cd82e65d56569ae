"""Running ``wfe worker`` as a service: stopped by a service manager, its log lines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from test_cli import _wait_for

from wfcore import Phase, TaskStatus

# An app whose command phase runs until the test lets it finish: it writes its
# process group to ``<gate>.pgid`` and waits for the gate file, or prints its
# output at once when the gate is there.
_COMMAND_APP = """\
import sys
from pathlib import Path

from wfcore import ECSWorkflowEngine, Phase

HERE = Path(__file__).resolve().parent
engine = ECSWorkflowEngine(poll_interval=0.05, retry_delay=0.05)
engine.register_workflow(
    "slow",
    [Phase("run", assigned_to="functional", max_attempts=3,
           command=[sys.executable, str(HERE / "slow_command.py"), str(HERE / "gate")])],
)
"""

_COMMAND = """\
import os
import sys
import time
from pathlib import Path

gate = Path(sys.argv[1])
if gate.exists():
    print('{"done": true}')
    sys.exit(0)
Path(f"{gate}.pgid").write_text(str(os.getpgrp()))
while not gate.exists():
    time.sleep(0.05)
print('{"done": true}')
"""


def _command_app(wfe, tmp_path: Path) -> dict[str, str]:
    (tmp_path / "command_app.py").write_text(_COMMAND_APP)
    (tmp_path / "slow_command.py").write_text(_COMMAND)
    return dict(wfe.env, PYTHONPATH=f"{tmp_path}{os.pathsep}{wfe.env['PYTHONPATH']}")


def _show(wfe, task_id: str, env: dict[str, str]) -> dict:
    return json.loads(wfe("show", task_id, "--json", env=env).stdout)


def test_a_service_stop_that_kills_the_command_too_hands_the_task_back(wfe, tmp_path) -> None:
    """systemd's default stop (KillMode=control-group) sends SIGTERM to the worker and
    to every process it started at once: the command phase dies of it before the
    worker can hand it back. That is the stop, not a failure of the phase."""
    env = _command_app(wfe, tmp_path)
    task_id = wfe("submit", "slow", "--app", "command_app:engine", env=env).stdout.strip()
    log = tmp_path / "worker.err"
    args = ["worker", "command_app:engine", "--shutdown-timeout", "600"]
    with open(log, "w") as err:
        worker = subprocess.Popen(
            [sys.executable, "-m", "wfcore.cli", *args],
            cwd=tmp_path,
            env=env,
            stderr=err,
        )
    try:
        pgid_file = tmp_path / "gate.pgid"
        pgid = int(_wait_for(lambda: pgid_file.exists() and pgid_file.read_text(), what="it"))
        # As systemd does: the main process first, then the rest of the control group.
        worker.send_signal(signal.SIGTERM)
        os.killpg(pgid, signal.SIGTERM)
        worker.wait(timeout=60)  # long before the 600 s the phase was given
    finally:
        if worker.poll() is None:
            worker.kill()
    said = log.read_text()
    assert worker.returncode == 0, said
    assert "its command was stopped by SIGTERM as this worker stops" in said, said
    task = _show(wfe, task_id, env)
    assert task["status"] == "pending", said
    assert task["attempts"] == 0 and task["error"] is None
    events = [e["event"] for e in task["history"]]
    assert events[-1] == "released" and "attempt_failed" not in events

    (tmp_path / "gate").write_text("open")
    wfe("worker", "command_app:engine", "--until-idle", "--quiet", env=env)
    task = _show(wfe, task_id, env)
    assert task["status"] == "completed" and task["output"] == {"done": True}
    events = [e["event"] for e in task["history"]]
    assert events.count("phase_started") == 2 and "attempt_failed" not in events


def test_a_command_killed_by_sigterm_while_its_worker_runs_on_fails_its_attempt(
    wfe_engine_factory, wfe_run
) -> None:
    """Only a stop makes a killed command a handed-back task: one killed by anyone
    else, the worker going on, is a failed attempt, with the signal in its error."""
    engine = wfe_engine_factory(poll_interval=0.02)
    command = ["/bin/sh", "-c", "kill -TERM $$"]
    engine.register_workflow("w", [Phase("run", assigned_to="functional", command=command)])

    async def scenario():
        task = await engine.submit_task(None, "w")
        await engine.run_until_idle()
        return await engine.get_task(task.id)

    done = wfe_run(scenario())
    assert done.status is TaskStatus.FAILED
    assert "exited with status 143 (SIGTERM, likely)" in done.error

"""wfe's exit statuses, Ctrl-C, and how worker processes stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from core_util import submit_with_app
from test_cli import APP, _wait_for


def _start(wfe, tmp_path: Path, name: str, *args: str, **env: str):
    """``wfe ARGS`` in the background, its stderr in a file (returned) to watch."""
    log = tmp_path / f"{name}.err"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "wfcore.cli", *args],
            cwd=tmp_path,
            env=dict(wfe.env, **env),
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    return proc, log


def _said(log: Path, text: str, what: str) -> str:
    return _wait_for(lambda: text in log.read_text() and log.read_text(), what=what)


def _gone(pid: int) -> bool:
    """Ended: no such process, or one nobody has reaped yet (a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


def test_help_lists_the_exit_statuses(wfe) -> None:
    out = wfe("--help").stdout
    assert "Exit status:" in out
    for line in ("0    success", "2    bad command line", "130  interrupted (Ctrl-C)"):
        assert line in out


def test_submit_of_names_the_store_does_not_know_is_bad_input(wfe) -> None:
    wfe("submit", "review", "--app", APP, "--data", '{"n": 1}')
    for args, said in [
        (("nope",), "Error: unknown workflow 'nope'"),
        (("review", "--assigned-to", "robot"), "Error: unknown assigned_to 'robot'"),
        (("review", "--classification", "x"), "Error: unknown classification 'x'"),
    ]:
        result = wfe("submit", *args, check=False)
        assert result.returncode == 2, args
        assert result.stderr.startswith(said) and result.stderr.count("\n") == 1, result.stderr
    # The task exists, but not in the state asked: the operation failed.
    assert (
        wfe("retry", json.loads(wfe("tasks", "--json").stdout)[0]["id"], check=False).returncode
        == 1
    )


def test_ctrl_c_on_wait_exits_130(wfe, tmp_path) -> None:
    task_id = wfe("submit", "review", "--app", APP, "--data", '{"n": 1}').stdout.strip()
    # The first event loop logs its start at DEBUG (the store's check, then the wait):
    # from then on the command is under way.
    proc, log = _start(wfe, tmp_path, "wait", "wait", task_id, WFE_LOG_LEVEL="DEBUG")
    try:
        _said(log, "Using selector", "the wait to start")
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    err = log.read_text()
    assert err.endswith("wfe: interrupted\n") and "Aborted" not in err and "Traceback" not in err


def _gated(wfe, tmp_path: Path, count: int) -> tuple[Path, list[str]]:
    gate = tmp_path / "gate"
    datas = [{"n": n, "wait": True} for n in range(count)]
    return gate, submit_with_app(APP, "review", datas, env=wfe.env, cwd=tmp_path)


def _running_pids(gate: Path, ids: list[str]) -> set[int] | None:
    files = [Path(f"{gate}.pid.{task_id}") for task_id in ids]
    if not all(f.exists() and f.read_text() for f in files):
        return None
    return {int(f.read_text()) for f in files}


def test_a_second_sigterm_hands_running_phases_back_at_once(wfe, tmp_path) -> None:
    gate, (task_id,) = _gated(wfe, tmp_path, 1)
    proc, log = _start(
        wfe, tmp_path, "worker", "worker", APP, "--shutdown-timeout", "600", CLI_APP_GATE=str(gate)
    )
    try:
        _wait_for(lambda: _running_pids(gate, [task_id]), what="the phase to start")
        proc.send_signal(signal.SIGTERM)
        _said(log, "stopping: 1 running phase(s) get up to 600s to finish", "the graceful stop")
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)  # long before the 600 s
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, log.read_text()
    assert "stopping now: 1 running phase(s) go back to the store\n" in log.read_text()
    task = json.loads(wfe("show", task_id, "--json").stdout)
    assert task["status"] == "pending" and task["history"][-1]["event"] == "released"
    assert "--shutdown-timeout SECONDS" in wfe("worker", "--help").stdout


def test_the_supervisor_names_a_worker_process_that_was_killed(wfe, tmp_path) -> None:
    gate, ids = _gated(wfe, tmp_path, 2)
    args = ("worker", APP, "-p", "2", "--concurrency", "1")
    proc, log = _start(wfe, tmp_path, "supervisor", *args, CLI_APP_GATE=str(gate))
    try:
        pids = _wait_for(lambda: _running_pids(gate, ids), what="both tasks to run")
        victim = min(pids)
        os.kill(victim, signal.SIGKILL)
        _said(log, f"wfe: worker process {victim} was killed by SIGKILL; 1 still running", "it")
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGKILL


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_worker_processes_stop_when_their_supervisor_is_killed(wfe, tmp_path) -> None:
    gate, ids = _gated(wfe, tmp_path, 2)
    args = ("worker", APP, "-p", "2", "--concurrency", "1")
    proc, _ = _start(wfe, tmp_path, "supervisor", *args, CLI_APP_GATE=str(gate))
    try:
        pids = _wait_for(lambda: _running_pids(gate, ids), what="both tasks to run")
        proc.kill()
        proc.wait(timeout=30)
        _wait_for(lambda: all(_gone(pid) for pid in pids), what="the workers to stop")
    finally:
        if proc.poll() is None:
            proc.kill()
    for task_id in ids:  # they stopped as on SIGTERM: their phases went back
        task = json.loads(wfe("show", task_id, "--json").stdout)
        assert task["status"] == "pending" and task["history"][-1]["event"] == "released"


@pytest.mark.parametrize(
    ("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 0)], ids=["ctrl-c", "sigterm"]
)
def test_a_worker_stopped_by_ctrl_c_exits_130_and_by_sigterm_0(wfe, tmp_path, sig, status) -> None:
    """130 as the exit statuses in wfe --help say for Ctrl-C; SIGTERM is how a
    service manager stops a worker, a clean exit."""
    proc, log = _start(wfe, tmp_path, "worker", "worker", APP)
    try:
        _said(log, "Ctrl-C to stop", "the worker to start")
        proc.send_signal(sig)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == status, log.read_text()
    assert "Traceback" not in log.read_text()


def test_worker_processes_interrupted_by_ctrl_c_exit_130_without_a_line_each(wfe, tmp_path) -> None:
    proc, log = _start(wfe, tmp_path, "supervisor", "worker", APP, "-p", "2")
    try:
        _wait_for(lambda: log.read_text().count("Ctrl-C to stop") == 2, what="both workers")
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    said = log.read_text()
    assert proc.returncode == 130, said
    assert "wfe: worker process" not in said and "Traceback" not in said, said

"""What the wfe commands log on stderr, and at which level."""

from __future__ import annotations

import re

APP = "failing_app:engine"
# 2026-11-26T09:29:25.903Z INFO wfcore: ...
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


def test_the_worker_logs_from_info_with_time_level_and_logger(wfe) -> None:
    task_id = wfe("submit", "retried", "--app", APP, "--data", '{"n": -1}').stdout.strip()
    lines = wfe("worker", APP, "--until-idle", "--quiet").stderr.splitlines()
    retried = rf"{STAMP} INFO wfcore: task {task_id}: phase 'check' attempt 1 of 2 failed"
    assert any(re.match(retried, line) for line in lines), lines
    failed = rf"{STAMP} WARNING wfcore: task {task_id}: failed in phase 'check'"
    assert any(re.match(failed, line) for line in lines), lines

    wfe("retry", task_id)
    quieter = wfe("--log-level", "warning", "worker", APP, "--until-idle", "--quiet").stderr
    assert " INFO " not in quieter and " WARNING wfcore: " in quieter
    env = dict(wfe.env, WFE_LOG_LEVEL="ERROR")
    wfe("retry", task_id, env=env)
    assert wfe("worker", APP, "--until-idle", "--quiet", env=env).stderr == ""


def test_other_commands_log_from_warning_and_trace_plugins_when_asked(wfe) -> None:
    wfe("submit", "retried", "--app", APP, "--data", '{"n": 1}')
    assert wfe("tasks").stderr == ""
    debug = wfe("tasks", env=dict(wfe.env, WFE_LOG_LEVEL="debug")).stderr
    assert re.search(rf"^{STAMP} DEBUG asyncio: Using selector", debug, re.M), debug
    traced = wfe("tasks", env=dict(wfe.env, WFE_TRACE_PLUGINS="1")).stderr
    assert re.search(
        rf"^{STAMP} DEBUG wfcore.plugins: wfe_open_store: calling wfcore.stores.sqlite$",
        traced,
        re.M,
    ), traced
    assert "asyncio" not in traced  # only the plugins' logger is at DEBUG
    bad = wfe("--log-level", "loud", "tasks", check=False)
    assert bad.returncode == 2 and "Invalid value for '--log-level'" in bad.stderr

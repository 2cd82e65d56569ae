"""Schedules pushed at their edges: names whose task ids would not fit."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from wfcore import InvalidWorkflowError, Phase, TaskStatus
from wfcore.wire import MAX_TASK_ID_BYTES

UTC = timezone.utc


def test_a_schedule_name_of_many_bytes_is_refused_not_left_to_fail_at_every_slot(
    wfe_engine_factory, wfe_run
):
    engine = wfe_engine_factory()
    engine.register_handler("a", lambda task: None)
    engine.register_workflow("w", [Phase("a", assigned_to="functional")])
    # 100 characters, but 200 bytes: with "@<slot>" a task id of 221 bytes.
    with pytest.raises(InvalidWorkflowError, match=r"at most 179 bytes in UTF-8, not 200"):
        engine.register_schedule("é" * 100, "w", every=3600)
    assert engine.schedules == {}

    # The longest name that fits makes ids that are stored, and its slot runs.
    start = datetime.now(UTC) - timedelta(seconds=5)
    engine.register_schedule("é" * 89 + "x", "w", every=3600, start=start)
    wfe_run(engine.run_until_idle())
    (task,) = wfe_run(engine.list_tasks())
    assert task.status is TaskStatus.COMPLETED
    assert len(task.id.encode("utf-8")) == MAX_TASK_ID_BYTES


_TWO_POOLS_APP = """
from datetime import datetime, timezone
from wfcore import ECSWorkflowEngine, Phase

engine = ECSWorkflowEngine()
engine.register_handler("a", lambda task: None)
engine.register_handler("b", lambda task: None)
engine.register_workflow("fast", [Phase("a", assigned_to="functional")])
engine.register_workflow("slow", [Phase("b", assigned_to="functional")])
start = datetime(2100, 1, 1, tzinfo=timezone.utc)
engine.register_schedule("nightly", "slow", every=86400, start=start)
"""


def test_a_worker_of_other_workflows_says_it_submits_the_schedule_s_tasks_only(
    wfe, tmp_path: Path
) -> None:
    (tmp_path / "pools_app.py").write_text(_TWO_POOLS_APP)
    env = {**wfe.env, "PYTHONPATH": str(tmp_path)}
    lines = {
        pools: wfe("worker", "pools_app:engine", *pools, "--until-idle", env=env).stderr
        for pools in (("-w", "fast"), ("-w", "slow"))
    }
    # Not the same line for both, as if the first ran the schedule's tasks too.
    assert (
        "  schedule nightly: a slow task every day, next at 2100-01-01 00:00:00 UTC; "
        "submitted here, run by workers of slow, not this one (--workflow: it runs fast)\n"
    ) in lines[("-w", "fast")]
    assert (
        "  schedule nightly: a slow task every day, next at 2100-01-01 00:00:00 UTC\n"
    ) in lines[("-w", "slow")]


def test_a_schedule_keeps_its_data_as_registered_whatever_the_caller_does_to_it_after(
    wfe_engine_factory, wfe_run
):
    engine = wfe_engine_factory()
    engine.register_handler("a", lambda task: None)
    engine.register_workflow("w", [Phase("a", assigned_to="functional")])
    data = {"report": "sales", "regions": ["north"]}
    start = datetime.now(UTC) - timedelta(seconds=5)
    schedule = engine.register_schedule("nightly", "w", every=3600, start=start, data=data)
    data["report"] = "changed"
    data["regions"].append("south")

    wfe_run(engine.run_until_idle())
    (task,) = wfe_run(engine.list_tasks())
    assert task.data == {"report": "sales", "regions": ["north"]}
    assert schedule.data == {"report": "sales", "regions": ["north"]}

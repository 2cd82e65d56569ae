"""Retrying many tasks at once: ``engine.retry_tasks`` and ``wfe retry --status``,
after an outage that failed every task that needed the service that was down."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from core_util import submit_with_app, wfe_at_once

import wfcore._bulk
from wfcore import ECSWorkflowEngine, Phase, Task, TaskStatus


def _outage_engine(make_engine) -> tuple[ECSWorkflowEngine, dict[str, bool]]:
    """Workflow ``w`` calls a service that is down until ``service["up"]``; data
    "bad" fails for good. Workflow ``other`` fails the same way."""
    engine = make_engine()
    service = {"up": False}

    async def call(task: Task) -> None:
        if task.data == "bad":
            raise ValueError("bad input")
        if not service["up"]:
            raise ConnectionError("the ledger is down")
        task.output = "booked"

    async def hold(task: Task) -> None:
        engine.suspend(task, reason="until cancelled")

    engine.register_handler("call", call)
    engine.register_handler("hold", hold)
    engine.register_workflow("w", [Phase("call")])
    engine.register_workflow("other", [Phase("call")])
    engine.register_workflow("held", [Phase("hold")])
    return engine, service


def test_retry_tasks_retries_the_failed_tasks_it_is_asked_for(make_engine, wfe_run, monkeypatch):
    monkeypatch.setattr(wfcore._bulk, "BULK_PAGE", 2)  # several pages of failed tasks
    engine, service = _outage_engine(make_engine)

    async def scenario() -> dict[str, object]:
        down = [(await engine.submit_task(n, "w")).id for n in range(3)]
        bad = (await engine.submit_task("bad", "w")).id
        other = (await engine.submit_task(9, "other")).id
        held = (await engine.submit_task(None, "held")).id
        await engine.run_until_idle()
        await engine.cancel(held)
        dry = await engine.retry_tasks(error_contains="ConnectionError", dry_run=True)
        unchanged = [(await engine.get_task(i)).status for i in down]  # type: ignore[union-attr]
        service["up"] = True
        retried = await engine.retry_tasks(
            workflow_name="w", error_contains="ConnectionError", by="ops"
        )
        await engine.run_until_idle()
        cancelled = await engine.retry_tasks(["cancelled"])
        again = await engine.retry_tasks(workflow_name="w")  # only "bad" is left
        tasks = {i: await engine.get_task(i) for i in [*down, bad, other, held]}
        return {
            "down": down, "bad": bad, "other": other, "held": held, "dry": dry,
            "unchanged": unchanged, "retried": retried, "cancelled": cancelled,
            "again": again, "tasks": tasks,
        }  # fmt: skip

    got = wfe_run(scenario())
    down, tasks = got["down"], got["tasks"]
    assert sorted(got["dry"]) == sorted([*down, got["other"]])
    assert got["unchanged"] == [TaskStatus.FAILED] * 3
    assert sorted(got["retried"]) == sorted(down)
    for task_id in down:
        task = tasks[task_id]
        assert task.status is TaskStatus.COMPLETED
        [event] = [e for e in task.history if e["event"] == "retried"]
        assert event["by"] == "ops"
        assert event["previous_error"] == "ConnectionError: the ledger is down"
    assert tasks[got["other"]].status is TaskStatus.FAILED  # another workflow
    assert got["cancelled"] == [got["held"]]
    assert tasks[got["held"]].status is TaskStatus.PENDING  # retried: queued again
    assert got["again"] == [got["bad"]]
    assert tasks[got["bad"]].status is TaskStatus.PENDING


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"statuses": ["completed"]}, ValueError, "not completed"),
        ({"statuses": []}, ValueError, "only failed and cancelled"),
        ({"workflow_name": 5}, TypeError, "workflow_name"),
        ({"error_contains": ""}, TypeError, "error_contains"),
    ],
)
def test_retry_tasks_refuses_what_it_cannot_retry(make_engine, wfe_run, kwargs, error, message):
    engine = make_engine()
    with pytest.raises(error, match=message):
        wfe_run(engine.retry_tasks(**kwargs))


_APP = """\
from wfcore import ECSWorkflowEngine, Phase

engine = ECSWorkflowEngine()


async def call(task):
    raise ConnectionError("the ledger is down") if task.data else ValueError("bad input")


engine.register_handler("call", call)
engine.register_workflow("w", [Phase("call", assigned_to="functional")])
"""


def test_wfe_retry_status_retries_every_task_the_options_choose(wfe, tmp_path: Path):
    (tmp_path / "outage_app.py").write_text(_APP)
    ids = submit_with_app("outage_app:engine", "w", [1, 1, 0], env=wfe.env, cwd=tmp_path)
    wfe("worker", "outage_app:engine", "--until-idle", "--quiet")
    down = sorted(ids[:2])
    dry = wfe("retry", "--status", "failed", "-w", "w", "--error", "ConnectionError", "--dry-run")
    assert sorted(dry.stdout.split()) == down
    assert dry.stderr == "would retry 2 failed task(s) (--dry-run)\n"
    done = wfe("retry", "--status", "failed", "--error", "ConnectionError", "--json")
    assert sorted(json.loads(done.stdout)) == down
    assert done.stderr == "retried 2 failed task(s)\n"
    listed = json.loads(wfe("tasks", "--status", "pending", "--json").stdout)
    assert sorted(t["id"] for t in listed) == down
    # The options that choose tasks need --status; ids and --status do not mix.
    refusals = [
        (("--workflow", "w"), "--workflow chooses tasks with --status; give --status too"),
        ((ids[2], "--status", "failed"), "give a task id or --status, not both"),
        ((), "give one task id, or --status failed (or cancelled) to retry every such task"),
        (("--status", "pending"), "pending tasks are never retried; only failed or cancelled"),
        (("--status", "failed", "-w", "ww"), "unknown workflow 'ww' (known: w)"),
    ]
    results = wfe_at_once(wfe, *[("retry", *args) for args, _ in refusals])
    for (_, said), refused in zip(refusals, results, strict=True):
        assert refused.returncode == 2, refused
        assert said in refused.stderr

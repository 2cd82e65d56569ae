"""How a schedule's latest run stands, where its schedules are listed: wfe workflows
--app, and the dashboard's workflows page and API (whether last night's report ran,
and how it ended)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from pathlib import Path

from wfcore import ECSWorkflowEngine, MemoryStore, Phase, Schedule, TaskStatus
from wfcore.schedules import LatestRun, latest_runs


def _starts() -> tuple[datetime, datetime]:
    """Two schedule starts whose latest slots came hours ago, past their grace (one
    hour), so that no worker submits them by itself: a daily one, 5 hours ago, and a
    weekly one, 3 days ago."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    return now - timedelta(days=2, hours=5), now - timedelta(days=3)


def test_latest_runs_reads_each_latest_slot_task() -> None:
    daily, weekly = _starts()
    schedules = [
        Schedule("nightly", "w", every=86400, start=daily),
        Schedule("weekly", "w", every=7 * 86400, start=weekly),
        Schedule("later", "w", every=3600, start=datetime(2100, 1, 1, tzinfo=timezone.utc)),
    ]

    async def read() -> dict[str, LatestRun]:
        engine = ECSWorkflowEngine(MemoryStore(), load_plugins=False)
        engine.register_workflow("w", [Phase("p")])
        await engine.submit_task({}, "w", task_id=schedules[0].task_id(daily + timedelta(days=2)))
        runs = await latest_runs(await engine.get_store(), schedules, datetime.now(timezone.utc))
        await engine.aclose()
        return runs

    runs = asyncio.run(read())
    slot = daily + timedelta(days=2)
    assert runs == {
        "nightly": LatestRun(slot, f"nightly@{slot:%Y-%m-%dT%H:%M:%SZ}", TaskStatus.PENDING),
        "weekly": LatestRun(weekly, f"weekly@{weekly:%Y-%m-%dT%H:%M:%SZ}", None),
    }  # "later" has had no slot yet


def test_wfe_workflows_says_how_each_schedules_latest_run_ended(wfe, tmp_path: Path) -> None:
    daily, weekly = _starts()
    (tmp_path / "sched_app.py").write_text(
        "from datetime import datetime\n"
        "from wfcore import ECSWorkflowEngine, Phase\n"
        "engine = ECSWorkflowEngine()\n"
        "engine.register_handler('report', lambda task: None)\n"
        "engine.register_workflow('reports', [Phase('report', assigned_to='functional')])\n"
        f"engine.register_schedule('nightly', 'reports', every=86400, "
        f"start=datetime.fromisoformat('{daily.isoformat()}'))\n"
        f"engine.register_schedule('weekly', 'reports', every=7 * 86400, "
        f"start=datetime.fromisoformat('{weekly.isoformat()}'))\n"
    )
    env = {**wfe.env, "PYTHONPATH": str(tmp_path)}
    slot = daily + timedelta(days=2)
    app = ("--app", "sched_app:engine")
    wfe("submit", "reports", "--id", f"nightly@{slot:%Y-%m-%dT%H:%M:%SZ}", *app, env=env)
    wfe("worker", "sched_app:engine", "--until-idle", "-q", env=env)

    lines = wfe("workflows", *app, env=env).stdout.splitlines()
    nightly = next(line for line in lines if line.startswith("schedule nightly:"))
    assert nightly.endswith(f"; last at {slot:%Y-%m-%d %H:%M:%S} UTC: completed"), nightly
    weekly_line = next(line for line in lines if line.startswith("schedule weekly:"))
    assert weekly_line.endswith(
        f"; last at {weekly:%Y-%m-%d %H:%M:%S} UTC: not in the store (no worker ran then "
        "or knew its workflow, or purged)"
    ), weekly_line

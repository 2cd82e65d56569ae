"""Schedules: a task submitted at fixed times by whichever workers run, once per slot."""

from __future__ import annotations

import itertools
import logging
import signal
import sqlite3
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from core_util import background, background_wfe, db_path, wait_for, wait_until, with_pythonpath

from wfcore import InvalidTaskError, InvalidWorkflowError, Phase, Task, TaskStatus
from wfcore.schedules import Schedule

UTC = timezone.utc


def _slot_of(task_id: str) -> datetime:
    return datetime.strptime(task_id.split("@", 1)[1], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _one_second_apart(slots: list[datetime]) -> bool:
    """True if the slots follow each other a second apart, none missing."""
    return all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(slots))


def test_slots_are_start_plus_whole_periods_and_name_the_task():
    nightly = Schedule(
        "nightly", "report", every=timedelta(days=1), start=datetime(2026, 1, 1, 2, tzinfo=UTC)
    )
    before = datetime(2026, 11, 27, 1, 59, tzinfo=UTC)
    assert nightly.due(before) is None  # yesterday's slot is 23 h ago, past the grace (1 h)
    assert nightly.next_slot(before) == datetime(2026, 11, 27, 2, tzinfo=UTC)
    after = datetime(2026, 11, 27, 2, 30, tzinfo=UTC)
    assert nightly.due(after) == datetime(2026, 11, 27, 2, tzinfo=UTC)
    assert nightly.task_id(nightly.due(after)) == "nightly@2026-11-27T02:00:00Z"
    assert nightly.due(datetime(2026, 11, 27, 3, 0, 1, tzinfo=UTC)) is None

    # An offset start: ids are in UTC all the same; slots before the start never come.
    paris = timezone(timedelta(hours=1))
    later = Schedule("at9", "report", every=3600, start=datetime(2030, 1, 1, 9, tzinfo=paris))
    now = datetime(2029, 12, 31, 23, 0, tzinfo=UTC)
    assert later.due(now) is None
    assert later.next_slot(now) == datetime(2030, 1, 1, 8, tzinfo=UTC)
    assert later.task_id(later.next_slot(now)) == "at9@2030-01-01T08:00:00Z"

    hourly = Schedule("hourly", "report", every=3600, grace=60)
    assert hourly.due(datetime(2026, 11, 27, 10, 0, 59, tzinfo=UTC)) == datetime(
        2026, 11, 27, 10, tzinfo=UTC
    )
    assert hourly.due(datetime(2026, 11, 27, 10, 1, 1, tzinfo=UTC)) is None


def test_a_running_worker_submits_and_runs_the_task_of_each_slot(make_engine, wfe_run):
    engine = make_engine()

    async def report(task: Task) -> None:
        task.output = {"for": task.context["slot"], "scope": task.data["scope"]}

    engine.register_handler("report", report)
    engine.register_workflow("w", [Phase("report")])
    engine.register_schedule("tick", "w", every=1, data={"scope": "all"}, priority=20)

    async def scenario() -> list[Task]:
        async with background(engine):
            return await wait_for(
                lambda: _completed(engine, 2), timeout=15, what="two slots' tasks to complete"
            )

    tasks = sorted(wfe_run(scenario()), key=lambda t: t.id)
    slots = [_slot_of(t.id) for t in tasks]
    assert _one_second_apart(slots)
    for task, slot in zip(tasks, slots, strict=True):
        assert task.id.startswith("tick@")
        assert task.data == {"scope": "all"} and task.priority == 20
        assert task.context == {"schedule": "tick", "slot": slot.isoformat()}
        assert task.output == {"for": slot.isoformat(), "scope": "all"}
        # Submitted at its slot, not before it.
        submitted = datetime.fromisoformat(task.history[0]["at"])
        assert slot <= submitted < slot + timedelta(seconds=1)


def test_a_running_worker_submits_every_slot_however_small_its_grace_or_long_its_poll(
    make_engine, wfe_run
):
    """The grace (for slots that came while no worker ran) was applied to a running
    worker too, which looks once per poll_interval: a grace shorter than that, or a
    poll_interval longer than the period, skipped slots, saying nothing."""
    slot = datetime(2026, 11, 27, 10, tzinfo=UTC)
    tight = Schedule("tight", "w", every=1, grace=0.05, start=slot)
    late = slot + timedelta(seconds=0.3)
    assert tight.due(late) is None  # a worker starting now: past the grace
    assert tight.due(late, since=slot - timedelta(seconds=0.1)) == slot  # came while it ran
    assert tight.due(late, since=slot) is None  # submitted at its last look, or not

    engine = make_engine(poll_interval=5)
    engine.register_handler("report", lambda task: None)
    engine.register_workflow("w", [Phase("report")])
    engine.register_schedule("tick", "w", every=1, grace=0.01)

    async def scenario() -> list[Task]:
        async with background(engine):
            return await wait_for(
                lambda: _completed(engine, 3), timeout=20, what="three slots' tasks"
            )

    slots = sorted(_slot_of(t.id) for t in wfe_run(scenario()))
    assert _one_second_apart(slots)


async def _completed(engine: Any, count: int) -> list[Task] | None:
    tasks = await engine.list_tasks(status=TaskStatus.COMPLETED, limit=100)
    return tasks if len(tasks) >= count else None


def test_a_slot_missed_while_no_worker_ran_is_submitted_once_within_its_grace(
    wfe_engine_factory, wfe_run
):
    runs: list[str] = []

    def make() -> Any:
        engine = wfe_engine_factory()

        async def report(task: Task) -> None:
            runs.append(task.id)

        engine.register_handler("report", report)
        engine.register_workflow("w", [Phase("report")])
        now = datetime.now(UTC)
        # Hourly from ten minutes ago: that slot is due, within the hour of grace.
        engine.register_schedule("recent", "w", every=3600, start=now - timedelta(minutes=10))
        # Daily from three hours ago: today's slot is past its hour of grace.
        engine.register_schedule("old", "w", every=86400, start=now - timedelta(hours=3))
        return engine

    async def two_starts() -> list[Task]:
        await make().run_until_idle()
        await make().run_until_idle()  # a restart within the slot submits nothing new
        return await wfe_engine_factory().list_tasks()

    tasks = wfe_run(two_starts())
    assert [t.id.split("@")[0] for t in tasks] == ["recent"]
    assert tasks[0].status is TaskStatus.COMPLETED
    assert runs == [tasks[0].id]


def test_two_worker_processes_submit_each_slot_once(tmp_path: Path, worker_env, wfe_store_url):
    runs = tmp_path / "runs.txt"
    (tmp_path / "sched_app.py").write_text(
        textwrap.dedent(
            f"""
            from wfcore import ECSWorkflowEngine, Phase

            def report(task):
                with open({str(runs)!r}, "a") as f:
                    f.write(task.id + "\\n")

            engine = ECSWorkflowEngine()
            engine.register_handler("report", report)
            engine.register_workflow("w", [Phase("report", assigned_to="functional")])
            engine.register_schedule("tick", "w", every=1, assigned_to="functional")
            """
        )
    )
    env = with_pythonpath(worker_env, tmp_path)
    db = db_path(wfe_store_url)

    def completed() -> int:
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                query = "SELECT count(*) FROM tasks WHERE status = 'completed'"
                return int(conn.execute(query).fetchone()[0])
        except sqlite3.OperationalError:  # the first worker is still making the store
            return 0

    args = ("worker", "sched_app:engine", "--quiet")
    with background_wfe(*args, cwd=tmp_path, env=env, log=tmp_path / "a.log") as first:
        with background_wfe(*args, cwd=tmp_path, env=env, log=tmp_path / "b.log") as second:
            wait_until(lambda: completed() >= 3, timeout=30, what="three slots' tasks to complete")
            for proc in (first, second):
                proc.send_signal(signal.SIGTERM)
            assert first.wait(20) == 0 and second.wait(20) == 0
    with sqlite3.connect(db) as conn:
        stored = sorted(row[0] for row in conn.execute("SELECT id FROM tasks"))
    ran = runs.read_text().split()
    assert sorted(ran) == stored  # each slot's task ran once, by one of the two
    assert _one_second_apart([_slot_of(task_id) for task_id in stored])


def test_a_schedule_of_an_unknown_workflow_is_said_at_start_and_at_each_slot(
    make_engine, wfe_run, caplog
):
    engine = make_engine()
    engine.register_handler("a", lambda task: None)
    engine.register_workflow("w", [Phase("a", assigned_to="functional")])
    engine.register_schedule(
        "typo", "wf", every=3600, start=datetime.now(UTC) - timedelta(seconds=5)
    )
    with caplog.at_level(logging.WARNING, logger="wfcore"):
        wfe_run(engine.run_until_idle())
    said = [r.getMessage() for r in caplog.records]
    assert any("schedule 'typo': workflow 'wf' is not known here" in m for m in said), said
    assert any(
        m.startswith("schedule 'typo': could not submit task typo@")
        and "unknown workflow 'wf'" in m
        for m in said
    ), said
    assert wfe_run(engine.list_tasks()) == []


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"every": 0}, InvalidWorkflowError, "every must be whole seconds, from 1 second"),
        ({"every": 0.5}, InvalidWorkflowError, "every must be whole seconds"),
        ({"every": 1.5}, InvalidWorkflowError, "every must be whole seconds"),
        ({"every": float("nan")}, InvalidWorkflowError, "every: must be seconds or a timedelta"),
        ({"every": "1h"}, InvalidWorkflowError, "every: must be seconds or a timedelta"),
        (
            {"every": timedelta(days=400)},
            InvalidWorkflowError,
            r"to 366 days, not 34,560,000 s \(400 days\)",
        ),
        ({"start": datetime(2026, 1, 1)}, InvalidWorkflowError, "start must be a timezone-aware"),
        # Accepted, they stopped the worker with an OverflowError at its first look.
        (
            {"start": datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5)))},
            InvalidWorkflowError,
            "start 9999-12-31T23:00:00-05:00 leaves no slot within the years 1 to 9999",
        ),
        (
            {"start": datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))},
            InvalidWorkflowError,
            "leaves no slot within the years 1 to 9999",
        ),
        ({"grace": 0}, InvalidWorkflowError, "grace must be more than 0 seconds, not 0$"),
        ({"grace": timedelta(seconds=-90)}, InvalidWorkflowError, "more than 0 seconds, not -90$"),
        ({"data": {"s": {1}}}, InvalidTaskError, "data must be JSON-serializable"),
        ({"data": "\udcff"}, InvalidTaskError, "data must be JSON-serializable: .*surrogate"),
        ({"assigned_to": "robot"}, InvalidTaskError, "^schedule 's': unknown assigned_to 'robot'"),
        ({"priority": 5000}, InvalidTaskError, "priority must be from -1000 to 1000, not 5000$"),
        ({"priority": "high"}, InvalidTaskError, "priority must be an integer from -1000"),
        ({"classification": 5}, InvalidWorkflowError, "classification must be a phase's name"),
        ({"classification": ""}, InvalidWorkflowError, "classification must be a phase's name"),
    ],
)
def test_a_bad_schedule_is_refused_naming_the_problem(
    make_engine, kwargs: dict[str, Any], error: type[Exception], message: str
):
    engine = make_engine()
    with pytest.raises(error, match=message):
        engine.register_schedule("s", "w", **{"every": 60, **kwargs})
    assert engine.schedules == {}


@pytest.mark.parametrize("name", ["", " s", "a/b", "x" * 101, "tab\there"])
def test_a_schedule_name_must_fit_in_a_task_id(make_engine, name: str):
    with pytest.raises(InvalidWorkflowError, match="schedule name"):
        make_engine().register_schedule(name, "w", every=60)


def test_a_schedule_name_is_registered_once(make_engine):
    engine = make_engine()
    first = engine.register_schedule("s", "w", every=60)
    with pytest.raises(InvalidWorkflowError, match="schedule 's' is registered already"):
        engine.register_schedule("s", "w", every=120)
    assert engine.schedules == {"s": first}


def test_wfe_workflows_shows_phase_limits_and_the_app_s_schedules(tmp_path: Path, wfe):
    (tmp_path / "limited_app.py").write_text(
        textwrap.dedent(
            """
            from datetime import datetime, timezone
            from wfcore import ECSWorkflowEngine, Phase

            engine = ECSWorkflowEngine()
            engine.register_workflow(
                "render",
                [Phase("frames", command=["true"], max_concurrency=2), Phase("publish")],
            )
            engine.register_schedule(
                "nightly", "render", every=86400, start=datetime(2100, 1, 1, 2, tzinfo=timezone.utc)
            )
            """
        )
    )
    env = with_pythonpath(wfe.env, tmp_path)
    # The worker stores the workflow; wfe workflows reads it, and the app's schedules.
    wfe("worker", "limited_app:engine", "--until-idle", "--quiet", env=env)
    lines = wfe("workflows", "--app", "limited_app:engine", env=env).stdout.splitlines()
    assert lines[1].split() == ["render", "frames", "functional,", "2", "at", "once", "publish"]
    assert lines[-1] == "schedule nightly: a render task every day, next at 2100-01-01 02:00:00 UTC"

"""Tasks submitted to start later (``run_after``)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from core_util import background, events, wait_for_status

from wfcore import ECSWorkflowEngine, InvalidTaskError, Phase, Task, TaskStatus


@pytest.fixture
def engine(make_engine) -> ECSWorkflowEngine:
    engine = make_engine(poll_interval=0.05)

    async def work(task: Task) -> None:
        task.output = "done"

    engine.register_handler("work", work)
    engine.register_workflow("main", [Phase("work", assigned_to="functional")])
    return engine


def _started_at(task: Task) -> datetime:
    [entry] = [e for e in task.history if e["event"] == "phase_started"]
    return datetime.fromisoformat(entry["at"])


def _submitted_run_after(task: Task) -> datetime:
    return datetime.fromisoformat(task.history[0]["run_after"])


def _ms(moment: datetime) -> datetime:
    """A time as precise as the history's (milliseconds)."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def test_a_delayed_task_waits_pending_until_its_time(engine, wfe_run):
    async def scenario():
        soon_at = datetime.now(timezone.utc) + timedelta(seconds=0.4)
        later = await engine.submit_task({}, "main", run_after=timedelta(hours=1))
        soon = await engine.submit_task({}, "main", run_after=soon_at)
        by_seconds = await engine.submit_task({}, "main", run_after=0.2)
        now = await engine.submit_task({}, "main")
        async with background(engine):
            ran = [
                await wait_for_status(engine, t.id, TaskStatus.COMPLETED)
                for t in (now, by_seconds, soon)
            ]
            still = await engine.get_task(later.id)
        return soon_at, later, ran, still

    soon_at, later, (now, by_seconds, soon), still = wfe_run(scenario())
    assert later.run_after is not None and later.history[0]["run_after"]
    # Never before its time; a task without one goes first.
    assert _submitted_run_after(soon) == soon_at
    assert _started_at(soon) >= _ms(soon_at)
    assert _started_at(by_seconds) >= _ms(_submitted_run_after(by_seconds))
    assert _started_at(now) < _started_at(by_seconds) < _started_at(soon)
    assert still.status is TaskStatus.PENDING and "phase_started" not in events(still)


def test_submit_tasks_takes_run_after_per_request(engine, wfe_run):
    async def scenario():
        return await engine.submit_tasks(
            [
                {"data": 1, "workflow_name": "main", "run_after": 3600},
                {"data": 2, "workflow_name": "main"},
            ]
        )

    delayed, plain = wfe_run(scenario())
    assert (
        timedelta(seconds=3599) < delayed.run_after - delayed.created_at < timedelta(seconds=3601)
    )
    assert plain.run_after is None


@pytest.mark.parametrize(
    ("run_after", "message"),
    [
        (datetime(2030, 1, 1), "run_after must be timezone-aware"),
        ("10m", "a datetime, a timedelta or a number of seconds, not str"),
        (True, "not bool"),
        (-5, "a delay of -5 seconds is not 0 to 100 years"),
        (float("nan"), "a delay of nan seconds is not 0 to 100 years"),
        (timedelta(days=-1), "is not 0 to 100 years"),
        (datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))), "after year 9999"),
        (datetime(2400, 1, 1, tzinfo=timezone.utc), "100 years away"),
        (datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))), "before year 1 or after"),
    ],
)
def test_a_bad_run_after_is_refused_and_nothing_is_stored(engine, wfe_run, run_after, message):
    async def scenario():
        with pytest.raises(InvalidTaskError, match=message):
            await engine.submit_task({}, "main", run_after=run_after)
        return await engine.list_tasks()

    assert wfe_run(scenario()) == []


def test_count_due_leaves_out_tasks_not_due_yet(engine, wfe_run):
    """The work at hand, for backpressure: a delayed backlog is none of it."""

    async def scenario():
        store = await engine.get_store()
        for _ in range(3):
            await engine.submit_task({}, "main", run_after=timedelta(hours=1))
        await engine.submit_task({}, "main")
        await engine.submit_task({}, "main")
        claimed = await store.claim("someone", 1, 30)
        return (
            len(claimed),
            await store.count_due(),
            await store.count_due(workflows=["main"]),
            await store.count_due(workflows=["other"]),
        )

    assert wfe_run(scenario()) == (1, 2, 2, 0)  # one running, one due, three later

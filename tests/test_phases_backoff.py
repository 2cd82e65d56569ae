"""The wait between attempts doubles up to a day: a phase with many attempts used to
fail for good at about its 39th, with 'EngineError: OverflowError: date value out of
range', its retry being due in the year 10000."""

from __future__ import annotations

from datetime import timedelta

from core_util import background, wait_for

from wfcore import Phase, Task, TaskStatus
from wfcore.model import utcnow
from wfcore.worker import _backoff


async def _retry_scheduled(engine, task_id: str) -> Task | None:
    task = await engine.get_task(task_id)
    return task if task is not None and task.attempts == 45 else None


def test_the_backoff_stops_doubling_at_a_day(make_engine, wfe_run):
    engine = make_engine(retry_delay=1.0)

    async def flaky(task: Task) -> None:
        raise RuntimeError("the service is down")

    engine.register_handler("call", flaky)
    engine.register_workflow("w", [Phase("call", assigned_to="functional", max_attempts=100)])

    async def scenario() -> Task:
        task = await engine.submit_task({}, "w", classification="call")
        # As stored after 44 failed attempts (the 45th would wait 2 ** 44 s).
        stored = await engine.get_task(task.id)
        assert stored is not None
        stored.attempts = 44
        assert await (await engine.get_store()).update_task(stored)
        async with background(engine):
            # The 45th attempt fails, and its retry is scheduled.
            return await wait_for(lambda: _retry_scheduled(engine, task.id), what="the retry")

    before = utcnow()
    task = wfe_run(scenario())
    assert task.status is TaskStatus.PENDING, task.error
    assert task.attempts == 45
    assert task.error == "RuntimeError: the service is down"
    scheduled = [e for e in task.history if e["event"] == "retry_scheduled"]
    assert scheduled[-1]["delay"] == 86400.0
    assert task.run_after is not None
    assert before + timedelta(days=1) <= task.run_after <= utcnow() + timedelta(days=1)


def test_a_retry_delay_longer_than_a_day_is_kept() -> None:
    assert [_backoff(1.0, n) for n in (1, 2, 3, 17, 18, 45, 10_000)] == [
        1.0,
        2.0,
        4.0,
        65536.0,
        86400.0,
        86400.0,
        86400.0,
    ]
    assert _backoff(2 * 86400.0, 1) == 2 * 86400.0
    assert _backoff(2 * 86400.0, 5) == 2 * 86400.0
    assert _backoff(0.0, 50) == 0.0
    # An engine's retry_delay of 1e20 s (accepted) waits a century, not for an error.
    assert _backoff(1e20, 1) == 100 * 365 * 86400.0

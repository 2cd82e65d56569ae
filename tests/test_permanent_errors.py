"""A phase that says how it failed: PermanentError fails the task without the retries
max_attempts allows; RetryLater sets the earliest time of the next attempt."""

from __future__ import annotations

import pickle
import time
from datetime import datetime, timezone

import pytest
from core_util import background, events, wait_for, wait_for_status

from wfcore import (
    ECSWorkflowEngine,
    PermanentError,
    Phase,
    RetryLater,
    Task,
    TaskStatus,
    WorkflowError,
)


async def _settle(engine: ECSWorkflowEngine, data: object = None) -> Task:
    task = await engine.submit_task(data, "w")
    await engine.run_until_idle()
    stored = await engine.get_task(task.id)
    assert stored is not None
    return stored


async def _event_recorded(engine: ECSWorkflowEngine, task_id: str, event: str) -> Task:
    async def probe() -> Task | None:
        task = await engine.get_task(task_id)
        return task if task is not None and event in events(task) else None

    return await wait_for(probe, what=f"task {task_id} to record {event}")


def test_a_permanent_error_fails_the_task_at_its_first_attempt(make_engine, wfe_run):
    engine = make_engine(retry_delay=0.01)
    calls: list[int] = []

    async def lookup(task: Task) -> None:
        calls.append(task.attempts)
        if not task.context.get("fixed"):
            raise PermanentError(f"customer {task.data['customer']!r} does not exist")
        task.output = "found"

    def lookup_sync(task: Task) -> None:  # a plain handler raises it in its thread
        raise PermanentError("no such account")

    engine.register_handler("lookup", lookup)
    engine.register_handler("sync", lookup_sync)
    engine.register_workflow("w", [Phase("lookup", max_attempts=5)])
    engine.register_workflow("s", [Phase("sync", max_attempts=5)])

    async def scenario() -> tuple[Task, Task, Task]:
        failed = await _settle(engine, {"customer": "c-9"})
        sync = await engine.submit_task(None, "s")
        await engine.run_until_idle()
        synced = await engine.get_task(sync.id)
        assert synced is not None
        # Fixed at its cause, the task goes back with retry, as any failed one does.
        await engine.retry(failed.id)
        store = await engine.get_store()
        again = await store.get_task(failed.id)
        assert again is not None
        again.context["fixed"] = True
        await store.update_task(again)
        await engine.run_until_idle()
        done = await engine.get_task(failed.id)
        assert done is not None
        return failed, synced, done

    failed, synced, done = wfe_run(scenario())
    assert failed.status is TaskStatus.FAILED
    assert failed.error == "PermanentError: customer 'c-9' does not exist"
    assert events(failed).count("attempt_failed") == 1
    assert "retry_scheduled" not in events(failed)
    assert calls[:1] == [1]
    assert synced.status is TaskStatus.FAILED
    assert synced.error == "PermanentError: no such account"
    assert events(synced).count("attempt_failed") == 1
    assert done.status is TaskStatus.COMPLETED and done.output == "found"


def test_retry_later_waits_at_least_as_long_as_it_asks(make_engine, wfe_run):
    engine = make_engine(retry_delay=0.01, poll_interval=0.05)

    async def rate_limited(task: Task) -> None:
        raise RetryLater("HTTP 429 from the billing API", after=3600)

    async def briefly(task: Task) -> None:
        raise RetryLater(after=0.2)

    engine.register_handler("call", rate_limited)
    engine.register_handler("brief", briefly)
    engine.register_workflow("w", [Phase("call", max_attempts=3)])
    engine.register_workflow("b", [Phase("brief", max_attempts=2)])

    async def scenario() -> tuple[Task, Task, float]:
        before = time.time()
        async with background(engine):
            waiting = await engine.submit_task(None, "w")
            brief = await engine.submit_task(None, "b")
            ended = await wait_for_status(engine, brief.id, TaskStatus.FAILED)
            stored = await _event_recorded(engine, waiting.id, "retry_scheduled")
        return stored, ended, before

    waiting, ended, before = wfe_run(scenario())
    # Not run again within the hour: the engine's own backoff (0.01 s) is shorter.
    assert waiting.status is TaskStatus.PENDING
    assert waiting.attempts == 1
    assert waiting.error == "RetryLater: HTTP 429 from the billing API"
    [scheduled] = [e for e in waiting.history if e["event"] == "retry_scheduled"]
    assert scheduled["delay"] == 3600
    assert waiting.run_after is not None
    wait = (waiting.run_after - datetime.fromtimestamp(before, timezone.utc)).total_seconds()
    assert 3600 <= wait < 3600 + 60
    # Its attempts still count: the last one fails the task; the second started
    # no sooner than asked.
    assert ended.error == "RetryLater: try again in 0.2s"
    assert events(ended).count("attempt_failed") == 2
    [short] = [e for e in ended.history if e["event"] == "retry_scheduled"]
    assert short["delay"] == 0.2
    first_failed, second_started = (
        datetime.fromisoformat(e["at"])
        for e in ended.history
        if e["event"] == "retry_scheduled" or (e["event"] == "phase_started" and e["attempt"] == 2)
    )
    assert (second_started - first_failed).total_seconds() >= 0.2


def test_the_engines_backoff_applies_when_it_is_longer(make_engine, wfe_run):
    engine = make_engine(retry_delay=120)

    async def soon(task: Task) -> None:
        raise RetryLater("busy", after=1)

    engine.register_handler("p", soon)
    engine.register_workflow("w", [Phase("p", max_attempts=2)])

    async def scenario() -> Task:
        async with background(engine):
            task = await engine.submit_task(None, "w")
            return await _event_recorded(engine, task.id, "retry_scheduled")

    task = wfe_run(scenario())
    [scheduled] = [e for e in task.history if e["event"] == "retry_scheduled"]
    assert scheduled["delay"] == 120


@pytest.mark.parametrize(
    ("after", "error", "message"),
    [
        ("60", TypeError, "after must be a number of seconds, not '60'"),
        (True, TypeError, "after must be a number of seconds, not True"),
        (-1, ValueError, "after must be 0 to 3153600000 seconds (100 years), not -1"),
        (float("nan"), ValueError, "not nan"),
        (float("inf"), ValueError, "not inf"),
    ],
)
def test_retry_later_refuses_a_wait_that_is_no_number_of_seconds(after, error, message):
    with pytest.raises(error) as raised:
        RetryLater("x", after=after)
    assert message in str(raised.value)


def test_both_are_workflow_errors_that_cross_processes_whole():
    for exc in (PermanentError("no such customer"), RetryLater("HTTP 429", after=30)):
        assert isinstance(exc, WorkflowError)
        back = pickle.loads(pickle.dumps(exc))
        assert type(back) is type(exc) and str(back) == str(exc)
    assert pickle.loads(pickle.dumps(RetryLater("HTTP 429", after=30))).after == 30.0

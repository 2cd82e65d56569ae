"""Task priority: workers take the ready tasks of the highest priority first."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from core_util import HeldPhase, wait_for

from wfcore import InvalidTaskError, Phase, Task, TaskStateError, TaskStatus, WorkflowError


def _recording_engine(make_engine: Any, ran: list[str]) -> Any:
    """An engine that runs one task at a time and records the order they ran in."""
    engine = make_engine(max_concurrency=1)

    async def work(task: Task) -> None:
        ran.append(task.data)
        task.output = task.data

    engine.register_handler("work", work)
    engine.register_workflow("jobs", [Phase("work", assigned_to="functional")])
    return engine


def test_a_worker_runs_the_highest_priority_first(make_engine, wfe_run) -> None:
    """Queued before the worker starts (a backlog), tasks run by priority, and those
    of one priority in the order they were submitted; a delayed task of the highest
    priority waits for its time."""
    ran: list[str] = []
    engine = _recording_engine(make_engine, ran)

    async def scenario() -> list[Task]:
        await engine.submit_task("low-1", "jobs", priority=-5)
        await engine.submit_task("normal-1", "jobs")
        await engine.submit_task("urgent-1", "jobs", priority=100)
        await engine.submit_task("later", "jobs", priority=1000, run_after=timedelta(hours=1))
        await engine.submit_tasks(
            [
                {"data": "normal-2", "workflow_name": "jobs", "priority": 0},
                {"data": "urgent-2", "workflow_name": "jobs", "priority": 100},
                {"data": "low-2", "workflow_name": "jobs", "priority": -5},
            ]
        )
        worker = asyncio.create_task(engine.run())
        await wait_for(lambda: len(ran) == 6, what="the six ready tasks to run")
        engine.stop()
        await worker
        return await engine.list_tasks()

    tasks = wfe_run(scenario())
    assert ran == ["urgent-1", "urgent-2", "normal-1", "normal-2", "low-1", "low-2"]
    pending = [t for t in tasks if t.status is TaskStatus.PENDING]
    assert [(t.data, t.priority) for t in pending] == [("later", 1000)]


def test_a_task_keeps_its_priority_through_its_life(make_engine, wfe_run) -> None:
    """The priority is stored with the task, said in its submitted event, kept by a
    retry; a task submitted again under its id keeps the first one's."""
    engine = make_engine()

    async def fail(task: Task) -> None:
        raise RuntimeError("not yet")

    engine.register_handler("flaky", fail)
    engine.register_workflow("w", [Phase("flaky", assigned_to="functional")])

    async def scenario() -> tuple[Task, Task, Task]:
        first = await engine.submit_task({}, "w", task_id="t-1", priority=7)
        again = await engine.submit_task({}, "w", task_id="t-1", priority=-7)
        await engine.run_until_idle()
        await engine.retry("t-1")
        return first, again, await engine.get_task("t-1")

    first, again, retried = wfe_run(scenario())
    assert first.priority == again.priority == 7
    assert first.history[0]["event"] == "submitted" and first.history[0]["priority"] == 7
    assert retried.status is TaskStatus.PENDING and retried.priority == 7


def test_a_priority_of_0_is_not_recorded(make_engine, wfe_run) -> None:
    engine = make_engine()
    engine.register_workflow("w", [Phase("p", assigned_to="human")])
    task = wfe_run(engine.submit_task({}, "w"))
    assert task.priority == 0 and "priority" not in task.history[0]


def test_a_phase_may_change_the_priority(make_engine, wfe_run) -> None:
    """A triage phase raising a task's priority: stored with the phase's result, it
    orders the task's next wait for a worker (here, after a person's answer)."""
    engine = make_engine()

    async def triage(task: Task) -> None:
        task.priority = 50 if task.data["severity"] == "critical" else -50

    engine.register_handler("triage", triage)
    engine.register_workflow(
        "tickets", [Phase("triage", assigned_to="functional"), Phase("answer", assigned_to="human")]
    )

    async def scenario() -> list[Task]:
        for severity in ("minor", "critical"):
            await engine.submit_task({"severity": severity}, "tickets")
        await engine.run_until_idle()
        return await engine.list_tasks()

    tasks = wfe_run(scenario())
    assert sorted((t.data["severity"], t.priority, t.status) for t in tasks) == [
        ("critical", 50, TaskStatus.WAITING_HUMAN),
        ("minor", -50, TaskStatus.WAITING_HUMAN),
    ]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("high", "must be an integer from -1000 to 1000, not 'high'"),
        (True, "must be an integer from -1000 to 1000, not True"),
        (2.5, "must be an integer from -1000 to 1000, not 2.5"),
        (1001, "must be from -1000 to 1000, not 1001"),
        (-(10**9), "must be from -1000 to 1000, not -1000000000"),
    ],
)
def test_a_bad_priority_is_refused_naming_it(make_engine, wfe_run, value, problem) -> None:
    engine = make_engine()
    engine.register_workflow("w", [Phase("p", assigned_to="human")])
    with pytest.raises(InvalidTaskError) as refused:
        wfe_run(engine.submit_task({}, "w", priority=value))
    assert str(refused.value) == f"priority {problem}"
    with pytest.raises(InvalidTaskError, match=r"^priority must"):
        wfe_run(engine.submit_tasks([{"data": {}, "workflow_name": "w", "priority": value}]))
    assert wfe_run(engine.list_tasks()) == []


def test_a_phase_that_sets_a_bad_priority_fails_its_attempt(make_engine, wfe_run) -> None:
    """The attempt fails, saying why, and the stored task keeps its priority."""
    engine = make_engine()

    async def bad(task: Task) -> None:
        task.priority = 10**6

    engine.register_handler("bad", bad)
    engine.register_workflow("w", [Phase("bad", assigned_to="functional")])

    async def scenario() -> Task:
        task = await engine.submit_task({}, "w", priority=3)
        await engine.run_until_idle()
        return await engine.get_task(task.id)

    task = wfe_run(scenario())
    assert task.status is TaskStatus.FAILED
    assert task.error == "InvalidTaskError: task.priority must be from -1000 to 1000, not 1000000"
    assert task.priority == 3


def test_set_priority_moves_a_queued_task_ahead(make_engine, wfe_run) -> None:
    ran: list[str] = []
    engine = _recording_engine(make_engine, ran)

    async def scenario() -> tuple[Task, Task]:
        tasks = await engine.submit_tasks(
            [{"data": f"job-{i}", "workflow_name": "jobs"} for i in range(4)]
        )
        bumped = await engine.set_priority(tasks[3].id, 50, by="alice")
        same = await engine.set_priority(tasks[3].id, 50)
        await engine.run_until_idle()
        return bumped, same

    bumped, same = wfe_run(scenario())
    assert ran == ["job-3", "job-0", "job-1", "job-2"]
    assert bumped.priority == 50
    assert bumped.history[-1] == {
        "at": bumped.history[-1]["at"],
        "event": "priority_changed",
        "previous": 0,
        "priority": 50,
        "by": "alice",
    }
    # The same priority again: nothing written, no second event.
    assert same.version == bumped.version
    assert [e["event"] for e in same.history].count("priority_changed") == 1


def test_set_priority_of_a_waiting_task_keeps_it_waiting(make_engine, wfe_run) -> None:
    engine = make_engine()
    engine.register_workflow("w", [Phase("approve", assigned_to="human", timeout=3600)])

    async def scenario() -> tuple[Task, Task]:
        task = await engine.submit_task({}, "w")
        await engine.run_until_idle()
        before = await engine.get_task(task.id)
        return before, await engine.set_priority(task.id, -20)

    before, after = wfe_run(scenario())
    assert after.status is TaskStatus.WAITING_HUMAN and after.priority == -20
    assert after.deadline == before.deadline


def test_set_priority_refuses_what_it_cannot_change(make_engine, wfe_run) -> None:
    """A running task (its phase may set the priority itself), a finished one, an
    unknown one and a bad priority are refused, each saying why."""
    engine = make_engine()
    held = HeldPhase(engine)

    async def scenario() -> list[str]:
        task = await engine.submit_task({}, "w")
        refusals = []
        worker = asyncio.create_task(engine.run_until_idle())
        await held.started.wait()
        for call in (
            lambda: engine.set_priority(task.id, 5),
            lambda: engine.set_priority("no-such-task", 5),
            lambda: engine.set_priority(task.id, 5000),
        ):
            with pytest.raises(WorkflowError) as refused:
                await call()
            refusals.append(f"{type(refused.value).__name__}: {refused.value}")
        held.release.set()
        await worker
        with pytest.raises(TaskStateError) as finished:
            await engine.set_priority(task.id, 5)
        refusals.append(str(finished.value))
        stored = await engine.get_task(task.id)
        assert stored.priority == 0 and stored.status is TaskStatus.COMPLETED
        return [r.replace(task.id, "ID") for r in refusals]

    assert wfe_run(scenario()) == [
        "TaskStateError: task 'ID' is IN_PROGRESS; only a PENDING or waiting task's "
        "priority can be changed (a worker holds it, running its phase or waiting for "
        "a slot of a phase with max_concurrency; its phase may set task.priority)",
        "UnknownTaskError: unknown task 'no-such-task'",
        "InvalidTaskError: priority must be from -1000 to 1000, not 5000",
        "task 'ID' is COMPLETED; only a PENDING or waiting task's priority can be changed",
    ]


def test_set_priority_refuses_a_task_waiting_for_a_phase_slot_saying_why(
    make_engine, wfe_run
) -> None:
    """A task a worker holds while it waits for a slot of a limited phase has not
    started its phase, yet is refused as held by a worker: the message says so,
    rather than calling it a running phase."""
    engine = make_engine(max_concurrency=2)
    gate = asyncio.Event()

    async def work(task: Task) -> None:
        await gate.wait()

    engine.register_handler("work", work)
    engine.register_workflow("w", [Phase("work", assigned_to="functional", max_concurrency=1)])

    async def scenario() -> str:
        await engine.submit_task("first", "w")
        second = await engine.submit_task("second", "w")
        worker = asyncio.create_task(engine.run_until_idle())
        await wait_for(lambda: engine.waiting_for_slots == 1, what="a task to wait for the slot")
        with pytest.raises(TaskStateError) as refused:
            await engine.set_priority(second.id, 50)
        gate.set()
        await worker
        return str(refused.value).replace(second.id, "ID")

    assert "waiting for a slot of a phase with max_concurrency" in wfe_run(scenario())


def test_a_cancelled_delayed_task_no_longer_has_a_start_time(make_engine, wfe_run) -> None:
    """Cancelling a delayed task clears run_after (it will not start then); its
    submitted event still says when it was to start, and a retry runs it now."""
    ran: list[str] = []
    engine = _recording_engine(make_engine, ran)

    async def scenario() -> tuple[Task, Task]:
        task = await engine.submit_task("later", "jobs", run_after=timedelta(hours=1))
        await engine.cancel(task.id)
        cancelled = await engine.get_task(task.id)
        await engine.retry(task.id)
        await engine.run_until_idle()
        return cancelled, await engine.get_task(task.id)

    cancelled, done = wfe_run(scenario())
    assert cancelled.status is TaskStatus.CANCELLED
    assert cancelled.run_after is None
    submitted = cancelled.history[0]
    assert submitted["event"] == "submitted" and "run_after" in submitted
    assert done.status is TaskStatus.COMPLETED and ran == ["later"]

"""engine.wait_for_task: waiting for a task to finish, here or in another process."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from core_util import background, wait_for_status

from wfcore import Phase, Task, TaskStatus
from wfcore.errors import UnknownTaskError


async def _double(task: Task) -> None:
    await asyncio.sleep(0.05)
    task.output = {"n": task.data["n"] * 2}


async def _boom(task: Task) -> None:
    raise RuntimeError("no good")


def _register(engine) -> None:
    engine.register_handler("double", _double)
    engine.register_handler("boom", _boom)
    engine.register_workflow("double", [Phase("double", assigned_to="functional")])
    engine.register_workflow("boom", [Phase("boom", assigned_to="functional")])
    engine.register_workflow(
        "ask",
        [
            Phase("double", assigned_to="functional"),
            Phase("approve", assigned_to="human", instructions="Approve the doubled number?"),
        ],
    )


def test_returns_the_finished_task_with_its_output(make_engine, wfe_run) -> None:
    engine = make_engine()
    _register(engine)

    async def scenario() -> tuple[Task, Task]:
        async with background(engine):
            done = await engine.submit_task({"n": 21}, "double")
            failed = await engine.submit_task({}, "boom")
            return (
                await engine.wait_for_task(done.id, timeout=30),
                await engine.wait_for_task(failed.id, timeout=30),
            )

    done, failed = wfe_run(scenario())
    assert done.status is TaskStatus.COMPLETED and done.output == {"n": 42}
    assert failed.status is TaskStatus.FAILED and "RuntimeError: no good" in failed.error


def test_this_engines_own_writes_end_the_wait_without_polling(make_engine, wfe_run) -> None:
    # The store is read every hour at most here: only the wake-up from the worker
    # (and from cancel) can end these waits within their timeouts.
    engine = make_engine(poll_interval=3600)
    _register(engine)

    async def scenario() -> tuple[Task, Task]:
        async with background(engine):
            task = await engine.submit_task({"n": 1}, "double")
            done = await engine.wait_for_task(task.id, timeout=30)
            asked = await engine.submit_task({"n": 2}, "ask")
            waiting = asyncio.ensure_future(engine.wait_for_task(asked.id, timeout=30))
            await wait_for_status(engine, asked.id, TaskStatus.WAITING_HUMAN)
            await engine.cancel(asked.id)
            return done, await waiting

    done, cancelled = wfe_run(scenario())
    assert done.status is TaskStatus.COMPLETED
    assert cancelled.status is TaskStatus.CANCELLED


def test_waiting_returns_once_a_person_is_asked(make_engine, wfe_run) -> None:
    engine = make_engine()
    _register(engine)

    async def scenario() -> tuple[Task, str, Task]:
        async with background(engine):
            task = await engine.submit_task({"n": 4}, "ask")
            asked = await engine.wait_for_task(task.id, waiting=True, timeout=30)
            try:
                await engine.wait_for_task(task.id, timeout=0.3)
            except TimeoutError as exc:
                timed_out = str(exc)
            await engine.resume(task.id, {"ok": True})
            return asked, timed_out, await engine.wait_for_task(task.id, timeout=30)

    asked, timed_out, done = wfe_run(scenario())
    assert asked.status is TaskStatus.WAITING_HUMAN
    assert asked.waiting_reason == "Approve the doubled number?"
    assert "is still waiting_human after 0.3s (in phase 'approve')" in timed_out
    assert done.status is TaskStatus.COMPLETED and done.outputs["approve"] == {"ok": True}


def test_sees_a_task_another_engine_runs(wfe_engine_factory, wfe_store_url, wfe_run) -> None:
    # Two engines on one SQLite file: the one waiting runs no worker, so only
    # reading the store tells it the other finished the task.
    worker = wfe_engine_factory(store=wfe_store_url)
    watcher = wfe_engine_factory(store=wfe_store_url)
    _register(worker)

    async def scenario() -> Task:
        task = await worker.submit_task({"n": 5}, "double")
        waiting = asyncio.ensure_future(watcher.wait_for_task(task.id, timeout=30))
        async with background(worker):
            return await waiting

    task = wfe_run(scenario())
    assert task.status is TaskStatus.COMPLETED and task.output == {"n": 10}


def test_bad_arguments_and_unknown_tasks(make_engine, wfe_run) -> None:
    engine = make_engine()
    _register(engine)

    async def scenario() -> None:
        with pytest.raises(UnknownTaskError, match="unknown task 'nope'"):
            await engine.wait_for_task("nope")
        task = await engine.submit_task({"n": 1}, "double")
        with pytest.raises(TimeoutError, match="is still pending after 0s"):
            await engine.wait_for_task(task.id, timeout=timedelta(0))
        for timeout in (-1, float("nan"), float("inf")):
            with pytest.raises(ValueError, match="timeout must be 0 to 100 years"):
                await engine.wait_for_task(task.id, timeout=timeout)
        with pytest.raises(TypeError, match="timeout must be a number of seconds"):
            await engine.wait_for_task(task.id, timeout="10")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="a task id is a string"):
            await engine.wait_for_task(7)  # type: ignore[arg-type]
        assert engine._waiters == {}  # nothing left behind by the waits that ended

    wfe_run(scenario())

"""A cancelled ``engine.run()`` (a TaskGroup whose other task failed, ``asyncio.run``
ending on Ctrl-C, a caller's ``wait_for``) stops as ``stop()`` does: running phases
end and hand their tasks back; cancelled again, they are handed back at once. Either
way the engine is left stopped and can run again."""

from __future__ import annotations

import asyncio

from core_util import wait_for

from wfcore import ECSWorkflowEngine, Phase, Task, TaskStatus


def _two_phase_engine(make_engine) -> tuple[ECSWorkflowEngine, dict[str, asyncio.Event], list]:
    engine = make_engine(poll_interval=0.02, shutdown_timeout=10)
    gates: dict[str, asyncio.Event] = {}
    ran: list[str] = []

    async def first(task: Task) -> None:
        ran.append("first")
        gates["started"].set()
        await gates["go"].wait()

    async def second(task: Task) -> None:
        ran.append("second")

    engine.register_handler("first", first)
    engine.register_handler("second", second)
    engine.register_workflow("w", [Phase("first"), Phase("second")])
    return engine, gates, ran


def test_a_cancelled_run_ends_the_running_phase_and_hands_the_task_back(make_engine, wfe_run):
    engine, gates, ran = _two_phase_engine(make_engine)

    async def scenario() -> Task:
        gates.update(started=asyncio.Event(), go=asyncio.Event())
        task = await engine.submit_task(None, "w")
        runner = asyncio.create_task(engine.run())
        await gates["started"].wait()
        asked = engine._worker.stops_asked
        runner.cancel()
        # The cancel has reached run(), which stops as stop() would, while the phase runs.
        await wait_for(lambda: engine._worker.stops_asked > asked, what="run() to stop")
        gates["go"].set()
        await asyncio.gather(runner, return_exceptions=True)
        assert runner.cancelled()
        assert not engine.running
        found = await engine.get_task(task.id)
        assert found is not None
        return found

    task = wfe_run(scenario())
    # As after stop(): the phase that ran finished, the next waits for a worker.
    assert ran == ["first"]
    assert task.status is TaskStatus.PENDING
    assert task.classification == "second"
    assert task.outputs == {"first": None}


def test_a_run_cancelled_twice_hands_back_at_once_and_can_run_again(make_engine, wfe_run):
    engine, gates, ran = _two_phase_engine(make_engine)

    async def scenario() -> tuple[Task, Task]:
        gates.update(started=asyncio.Event(), go=asyncio.Event())
        task = await engine.submit_task(None, "w")
        runner = asyncio.create_task(engine.run())
        await gates["started"].wait()
        runner.cancel()
        # Waiting no longer than a moment for it cancels it a second time.
        await asyncio.gather(asyncio.wait_for(runner, 0.1), return_exceptions=True)
        assert runner.done() and not engine.running
        handed_back = await engine.get_task(task.id)
        assert handed_back is not None
        gates["go"].set()
        await asyncio.wait_for(engine.run_until_idle(), 10)
        done = await wait_for(lambda: engine.get_task(task.id), what="the task")
        await asyncio.wait_for(engine.aclose(), 10)
        return handed_back, done

    handed_back, done = wfe_run(scenario())
    assert handed_back.status is TaskStatus.PENDING
    assert handed_back.classification == "first"
    assert done.status is TaskStatus.COMPLETED
    assert ran == ["first", "first", "second"]

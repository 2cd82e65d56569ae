"""One engine, several event loops at once: a worker in one thread's loop, and
callers (a web app's threads, say) submitting, waiting, cancelling and stopping
from theirs.

The engine polls every 60 s here and renews leases every 100 s, so only a wake-up
that crosses loops can make these tests pass within their deadlines. On SQLite:
the memory store is for one thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from wfcore import ECSWorkflowEngine, Phase, PluginError, Task, TaskStatus, hookimpl

SLOW_POLL = 60.0


class _WorkerThread:
    """``engine.run()`` in its own thread and event loop."""

    def __init__(self, engine: ECSWorkflowEngine) -> None:
        self.engine = engine
        self.error: BaseException | None = None
        self.started = threading.Event()
        self.thread = threading.Thread(target=self._main, daemon=True)
        self.thread.start()

    def _main(self) -> None:
        async def serve() -> None:
            await self.engine.get_store()
            self.started.set()
            await self.engine.run()

        try:
            asyncio.run(serve())
        except BaseException as exc:  # reported by the test
            self.error = exc
            self.started.set()

    def wait_started(self) -> None:
        assert self.started.wait(30), "the worker thread did not start"
        assert self.error is None, self.error
        deadline = threading.Event()
        for _ in range(3000):  # the run() call itself is a step after the store opens
            if self.engine.running:
                return
            deadline.wait(0.01)
        raise AssertionError("engine.run() did not start")


@pytest.fixture
def make_engine(
    wfe_engine_factory: Callable[..., ECSWorkflowEngine],
) -> Callable[..., ECSWorkflowEngine]:
    return wfe_engine_factory  # the temporary SQLite store


@pytest.fixture
def threaded(
    make_engine: Callable[..., ECSWorkflowEngine],
) -> Iterator[Callable[..., _WorkerThread]]:
    started: list[_WorkerThread] = []

    def start(engine: ECSWorkflowEngine) -> _WorkerThread:
        worker = _WorkerThread(engine)
        started.append(worker)
        worker.wait_started()
        return worker

    yield start
    for worker in started:
        worker.engine.stop(now=True)
        worker.thread.join(30)


def _engine(make_engine: Callable[..., ECSWorkflowEngine], **kwargs: Any) -> ECSWorkflowEngine:
    engine = make_engine(poll_interval=SLOW_POLL, lease_seconds=300, **kwargs)

    async def double(task: Task) -> None:
        task.output = task.data["n"] * 2

    async def ask(task: Task) -> None:
        engine.suspend(task, reason="approve?")

    engine.register_handler("double", double)
    engine.register_handler("ask", ask)
    engine.register_workflow("calc", [Phase("double", assigned_to="functional")])
    engine.register_workflow(
        "approval", [Phase("ask", assigned_to="human"), Phase("double", assigned_to="functional")]
    )
    return engine


def test_tasks_submitted_from_another_loop_run_and_their_waits_end(make_engine, threaded, wfe_run):
    engine = _engine(make_engine)
    threaded(engine)

    async def submit_and_wait() -> list[Task]:
        tasks = [await engine.submit_task({"n": n}, "calc") for n in range(5)]
        return [await engine.wait_for_task(t.id, timeout=20) for t in tasks]

    finished = wfe_run(submit_and_wait(), timeout=60)
    assert [t.status for t in finished] == [TaskStatus.COMPLETED] * 5
    assert [t.output for t in finished] == [0, 2, 4, 6, 8]


def test_resume_and_cancel_from_another_loop_reach_the_worker(make_engine, threaded, wfe_run):
    engine = _engine(make_engine)
    threaded(engine)

    async def scenario() -> tuple[Task, Task]:
        approved = await engine.submit_task({"n": 21}, "approval")
        dropped = await engine.submit_task({"n": 1}, "approval")
        for task in (approved, dropped):
            waiting = await engine.wait_for_task(task.id, timeout=20, waiting=True)
            assert waiting.status is TaskStatus.WAITING_HUMAN
        await engine.resume(approved.id, output="yes")
        await engine.cancel(dropped.id)
        return (
            await engine.wait_for_task(approved.id, timeout=20),
            await engine.wait_for_task(dropped.id, timeout=20),
        )

    approved, dropped = wfe_run(scenario(), timeout=60)
    assert (approved.status, approved.output) == (TaskStatus.COMPLETED, 42)
    assert dropped.status is TaskStatus.CANCELLED


def test_stop_from_another_thread_ends_run(make_engine, threaded):
    engine = _engine(make_engine)
    worker = threaded(engine)
    engine.stop()  # a plain call from this thread, which runs no loop at all
    worker.thread.join(20)
    assert not worker.thread.is_alive(), "run() did not return after stop()"
    assert worker.error is None
    assert not engine.running


def test_aclose_from_another_loop_waits_for_run_to_end(make_engine, threaded, wfe_run):
    engine = _engine(make_engine)
    worker = threaded(engine)
    wfe_run(engine.aclose(), timeout=20)
    assert not engine.running
    worker.thread.join(20)
    assert not worker.thread.is_alive()
    assert worker.error is None


def test_stop_with_an_error_makes_run_raise_it_once_stopped(make_engine, wfe_run):
    """How a plugin whose part of the work ended for good (a Kafka consumer, say)
    stops a worker so that it does not look healthy: run() raises its error."""
    engine = _engine(make_engine)
    stopped_hooks: list[bool] = []

    class Watcher:
        @hookimpl
        def wfe_engine_stopping(self, engine):
            stopped_hooks.append(True)

    engine.plugin_manager.register(Watcher())

    async def scenario() -> Task:
        task = await engine.submit_task({"n": 4}, "calc")
        running = asyncio.create_task(engine.run())
        done = await engine.wait_for_task(task.id, timeout=20)
        engine.stop(error=PluginError("plugin 'x': its consumer stopped for good"))
        engine.stop(error=PluginError("a later reason"))  # the first one wins
        with pytest.raises(PluginError, match="its consumer stopped for good"):
            await running
        assert not engine.running
        running_again = asyncio.create_task(engine.run_until_idle())
        await running_again  # the error was for that run only
        return done

    assert wfe_run(scenario(), timeout=60).output == 8
    assert stopped_hooks == [True, True]

"""Failures and cancellation: errors on the task, retries with backoff, cancel in any state."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

import pytest
from core_util import background, events, wait_for, wait_for_status

from wfcore import (
    ECSWorkflowEngine,
    InvalidTaskError,
    Phase,
    Task,
    TaskStateError,
    TaskStatus,
    UnknownTaskError,
    hookimpl,
)


class Failed:
    """Records wfe_task_failed and wfe_task_cancelled calls."""

    def __init__(self) -> None:
        self.failed: list[str] = []
        self.cancelled: list[str] = []

    @hookimpl
    def wfe_task_failed(self, task: Task) -> None:
        self.failed.append(task.id)

    @hookimpl
    def wfe_task_cancelled(self, task: Task) -> None:
        self.cancelled.append(task.id)


async def settle(engine: ECSWorkflowEngine, data: Any = None) -> Task:
    task = await engine.submit_task(data, "w")
    await engine.run_until_idle()
    return await engine.get_task(task.id)


def test_an_exception_fails_the_task_with_type_and_message(make_engine, wfe_run):
    watch = Failed()
    engine = make_engine(plugins=[watch])
    calls: list[int] = []

    async def broken(task: Task) -> None:
        calls.append(task.attempts)
        task.context["touched"] = True
        raise ValueError("the input has no header row")

    engine.register_handler("parse", broken)
    engine.register_workflow("w", [Phase("parse")])
    task = wfe_run(settle(engine))
    assert task.status is TaskStatus.FAILED
    assert task.error == "ValueError: the input has no header row"
    assert "ValueError" in task.traceback
    assert task.attempts == 1
    assert calls == [1]
    assert watch.failed == [task.id]
    assert events(task)[-1] == "failed"


def test_retries_with_exponential_backoff_then_succeeds(make_engine, wfe_run):
    engine = make_engine(retry_delay=0.1)
    calls: list[int] = []

    async def flaky(task: Task) -> None:
        calls.append(task.attempts)
        if task.attempts < 3:
            raise ConnectionError(f"try {task.attempts}")
        task.output = "finally"

    engine.register_handler("fetch", flaky)
    engine.register_workflow("w", [Phase("fetch", max_attempts=4)])
    task = wfe_run(settle(engine))
    assert task.status is TaskStatus.COMPLETED
    assert task.output == "finally"
    assert task.error is None
    assert calls == [1, 2, 3]
    delays = [e["delay"] for e in task.history if e["event"] == "retry_scheduled"]
    assert delays == pytest.approx([0.1, 0.2])
    # An attempt never starts before its backoff is over.
    failed_at = [
        datetime.fromisoformat(e["at"]) for e in task.history if e["event"] == "attempt_failed"
    ]
    started_at = [
        datetime.fromisoformat(e["at"]) for e in task.history if e["event"] == "phase_started"
    ]
    for fail, start, delay in zip(failed_at, started_at[1:], delays, strict=True):
        assert (start - fail).total_seconds() >= delay * 0.9


def test_gives_up_after_max_attempts(make_engine, wfe_run, caplog):
    caplog.set_level(logging.INFO, logger="wfcore")
    watch = Failed()
    engine = make_engine(plugins=[watch])
    calls: list[int] = []

    async def always(task: Task) -> None:
        calls.append(task.attempts)
        raise RuntimeError(f"attempt {task.attempts} failed")

    engine.register_handler("p", always)
    engine.register_workflow("w", [Phase("p", max_attempts=3)])
    task = wfe_run(settle(engine))
    assert task.status is TaskStatus.FAILED
    assert calls == [1, 2, 3]
    assert task.error == "RuntimeError: attempt 3 failed"
    assert events(task).count("attempt_failed") == 3
    assert watch.failed == [task.id]  # once, at the end
    # The log says what happened to the task, a line each time.
    assert [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "wfcore"] == [
        (
            "INFO",
            f"task {task.id}: phase 'p' attempt 1 of 3 failed, retrying in 0.05s: "
            "RuntimeError: attempt 1 failed",
        ),
        (
            "INFO",
            f"task {task.id}: phase 'p' attempt 2 of 3 failed, retrying in 0.1s: "
            "RuntimeError: attempt 2 failed",
        ),
        ("WARNING", f"task {task.id}: failed in phase 'p': RuntimeError: attempt 3 failed"),
    ]


def test_a_failure_later_in_the_workflow_keeps_earlier_outputs(make_engine, wfe_run):
    engine = make_engine()

    async def ok(task: Task) -> None:
        task.output = "fine"

    async def bad(task: Task) -> None:
        raise KeyError("missing")

    engine.register_handler("a", ok)
    engine.register_handler("b", bad)
    engine.register_workflow("w", [Phase("a"), Phase("b")])
    task = wfe_run(settle(engine))
    assert task.status is TaskStatus.FAILED
    assert task.classification == "b"
    assert task.outputs == {"a": "fine"}
    assert task.error.startswith("KeyError")


def test_cancel_a_running_task(make_engine, wfe_run):
    watch = Failed()
    engine = make_engine(plugins=[watch])
    started = asyncio.Event()
    interrupted: list[str] = []
    after_cancel: list[str] = []

    async def long(task: Task) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            interrupted.append(task.id)
            raise
        after_cancel.append(task.id)

    engine.register_handler("long", long)
    engine.register_handler("next", lambda task: after_cancel.append("next"))
    engine.register_workflow("w", [Phase("long"), Phase("next")])

    async def scenario():
        task = await engine.submit_task(None, "w")
        runner = asyncio.create_task(engine.run_until_idle())
        await asyncio.wait_for(started.wait(), 10)
        cancelled = await engine.cancel(task.id)
        await asyncio.wait_for(runner, 10)
        return cancelled, await engine.get_task(task.id)

    cancelled, stored = wfe_run(scenario())
    assert cancelled.status is TaskStatus.CANCELLED
    assert stored.status is TaskStatus.CANCELLED
    assert interrupted == [stored.id]
    assert after_cancel == []
    assert watch.cancelled == [stored.id]
    assert events(stored)[-1] == "cancelled"


def test_cancel_and_retry_from_elsewhere_interrupt_the_running_phase_first(make_engine, wfe_run):
    """The worker claims the retried task again before its lease renewal noticed the
    cancel: the stale run must stop, and the new one start only after it."""
    worker = make_engine()
    other = make_engine()  # another process, as far as the worker can tell
    runs: list[tuple[str, int]] = []

    async def phase(task: Task) -> None:
        n = sum(1 for what, _ in runs if what == "start") + 1
        runs.append(("start", n))
        try:
            if n == 1:
                await asyncio.sleep(60)  # until interrupted
            task.output = n
        except asyncio.CancelledError:
            runs.append(("interrupted", n))
            raise
        runs.append(("end", n))

    worker.register_handler("slow", phase)
    worker.register_workflow("w", [Phase("slow")])

    async def scenario():
        other.use_store(await worker.get_store())  # memory:// is shared as an object
        task = await worker.submit_task(None, "w")
        async with background(worker):
            await wait_for(lambda: runs, 10, "the first run")
            await other.cancel(task.id)
            await other.retry(task.id)
            return await wait_for_status(other, task.id, TaskStatus.COMPLETED)

    done = wfe_run(scenario())
    assert runs == [("start", 1), ("interrupted", 1), ("start", 2), ("end", 2)]
    assert done.output == 2
    assert events(done)[-3:] == ["phase_started", "phase_finished", "completed"]


def test_cancel_a_running_task_whose_handler_ignores_it_drops_its_late_write(make_engine, wfe_run):
    engine = make_engine()
    started = asyncio.Event()
    go_on = asyncio.Event()
    finished: list[str] = []

    async def stubborn(task: Task) -> None:
        started.set()
        while True:
            try:
                await go_on.wait()
                break
            except asyncio.CancelledError:
                continue  # refuses to stop
        task.output = "late result"
        finished.append(task.id)

    engine.register_handler("s", stubborn)
    engine.register_workflow("w", [Phase("s")])

    async def scenario():
        task = await engine.submit_task(None, "w")
        runner = asyncio.create_task(engine.run_until_idle())
        await asyncio.wait_for(started.wait(), 10)
        await engine.cancel(task.id)
        go_on.set()
        await wait_for(lambda: finished, 10, "the stubborn handler to return")
        await asyncio.wait_for(runner, 10)
        return await engine.get_task(task.id)

    stored = wfe_run(scenario())
    assert stored.status is TaskStatus.CANCELLED
    assert stored.output is None
    assert stored.outputs == {}


def test_a_write_dropped_for_a_change_made_elsewhere_says_which_change(
    wfe_engine_factory, wfe_run, caplog
):
    """The log line of a dropped write names the change that won (here a cancel from
    another process; a takeover, an answer or a child's join alike), rather than
    leaving an operator to guess between them."""
    caplog.set_level(logging.INFO, logger="wfcore")
    engine, elsewhere = wfe_engine_factory(), wfe_engine_factory()  # one SQLite file

    async def cancelled_meanwhile(task: Task) -> None:
        await elsewhere.cancel(task.id)  # wfe cancel, say, while the phase runs
        task.output = "late result"

    engine.register_handler("s", cancelled_meanwhile)
    engine.register_workflow("w", [Phase("s", assigned_to="functional")])

    async def scenario():
        task = await engine.submit_task(None, "w")
        await engine.run_until_idle()
        return await engine.get_task(task.id)

    stored = wfe_run(scenario())
    assert stored.status is TaskStatus.CANCELLED and stored.output is None
    said = [r.getMessage() for r in caplog.records if "write dropped" in r.getMessage()]
    assert said == [f"task {stored.id}: changed elsewhere meanwhile (cancelled); write dropped"]


def test_cancel_waiting_and_pending_tasks(make_engine, wfe_run):
    engine = make_engine()
    ran: list[str] = []

    async def ask(task: Task) -> None:
        ran.append(task.data)
        engine.suspend(task)

    engine.register_handler("ask", ask)
    engine.register_workflow("w", [Phase("ask")])

    async def scenario():
        waiting = await settle(engine, "waiting one")
        pending = await engine.submit_task("pending one", "w")
        await engine.cancel(waiting.id)
        await engine.cancel(pending.id)
        await engine.run_until_idle()
        with pytest.raises(TaskStateError):
            await engine.resume(waiting.id, "too late")
        with pytest.raises(TaskStateError):
            await engine.cancel(pending.id)
        return await engine.get_task(waiting.id), await engine.get_task(pending.id)

    waiting, pending = wfe_run(scenario())
    assert waiting.status is pending.status is TaskStatus.CANCELLED
    assert ran == ["waiting one"]  # the pending task never ran


def test_cancel_unknown_or_finished_task(make_engine, wfe_run):
    engine = make_engine()
    engine.register_handler("a", lambda task: None)
    engine.register_workflow("w", [Phase("a")])

    async def scenario():
        with pytest.raises(UnknownTaskError) as unknown:
            await engine.cancel("nope")
        done = await settle(engine)
        with pytest.raises(TaskStateError) as finished:
            await engine.cancel(done.id)
        return unknown.value, finished.value, await engine.get_task(done.id)

    unknown, finished, done = wfe_run(scenario())
    assert "nope" in str(unknown)
    assert "COMPLETED" in str(finished)
    assert done.status is TaskStatus.COMPLETED


def test_stop_hands_running_phases_back_to_the_store(wfe_engine_factory, wfe_run):
    first = wfe_engine_factory(shutdown_timeout=0.2)
    started = asyncio.Event()

    async def forever(task: Task) -> None:
        started.set()
        await asyncio.sleep(60)

    first.register_handler("p", forever)
    first.register_workflow("w", [Phase("p")])

    async def interrupted():
        async with background(first):
            task = await first.submit_task(None, "w")
            await asyncio.wait_for(started.wait(), 10)
        return await first.get_task(task.id)

    stopped = wfe_run(interrupted())
    assert stopped.status is TaskStatus.PENDING
    assert stopped.attempts == 0  # an interrupted attempt is not a failed one
    wfe_run(first.aclose())

    second = wfe_engine_factory()
    second.register_handler("p", lambda task: setattr(task, "output", "second run"))

    async def rerun():
        await second.run_until_idle()
        return await second.get_task(stopped.id)

    done = wfe_run(rerun())
    assert done.status is TaskStatus.COMPLETED
    assert done.output == "second run"


def test_stop_now_hands_running_phases_back_without_the_grace_time(wfe_engine_factory, wfe_run):
    engine = wfe_engine_factory(shutdown_timeout=600)
    started = asyncio.Event()

    async def forever(task: Task) -> None:
        started.set()
        await asyncio.sleep(600)

    engine.register_handler("p", forever)
    engine.register_workflow("w", [Phase("p")])

    async def interrupted():
        running = asyncio.create_task(engine.run())
        task = await engine.submit_task(None, "w")
        await asyncio.wait_for(started.wait(), 10)
        engine.stop()  # the phase would get 600 s...
        await asyncio.sleep(0)
        engine.stop(now=True)  # ...but goes back at once
        await running
        return await engine.get_task(task.id)

    # Well within the 600 s grace time, or wfe_run fails the test.
    stopped = wfe_run(interrupted(), timeout=30)
    assert stopped.status is TaskStatus.PENDING
    assert stopped.attempts == 0
    assert events(stopped)[-1] == "released"
    wfe_run(engine.aclose())


def test_engine_keeps_running_other_tasks_when_one_fails(make_engine, wfe_run):
    engine = make_engine()

    async def maybe(task: Task) -> None:
        if task.data % 3 == 0:
            raise ValueError(task.data)
        task.output = task.data

    engine.register_handler("m", maybe)
    engine.register_workflow("w", [Phase("m")])

    async def scenario():
        async with background(engine):
            ids = [(await engine.submit_task(i, "w")).id for i in range(9)]
            return [
                await wait_for_status(engine, i, TaskStatus.COMPLETED, TaskStatus.FAILED)
                for i in ids
            ]

    tasks = wfe_run(scenario())
    assert [t.status is TaskStatus.FAILED for t in tasks] == [i % 3 == 0 for i in range(9)]


def test_a_phase_leaving_non_json_values_fails_cleanly(make_engine, wfe_run):
    engine = make_engine()

    async def bad_output(task: Task) -> None:
        task.output = {"when": {1, 2}}

    async def bad_context(task: Task) -> None:
        task.context["handle"] = object()
        task.output = "fine otherwise"

    engine.register_handler("out", bad_output)
    engine.register_handler("ctx", bad_context)
    engine.register_workflow("w_out", [Phase("out")])
    engine.register_workflow("w_ctx", [Phase("ctx")])

    async def scenario():
        first = await engine.submit_task(None, "w_out")
        second = await engine.submit_task(None, "w_ctx")
        await engine.run_until_idle()
        return await engine.get_task(first.id), await engine.get_task(second.id)

    out, ctx = wfe_run(scenario())
    assert out.status is TaskStatus.FAILED
    assert "output" in out.error and "JSON" in out.error
    assert ctx.status is TaskStatus.FAILED
    assert "context" in ctx.error and "JSON" in ctx.error
    assert ctx.outputs == {}


def test_a_handler_putting_non_json_into_task_data_fails_the_task(wfe_engine_factory, wfe_run):
    from datetime import datetime as dt

    engine = wfe_engine_factory(lease_seconds=0.3)
    runs: list[int] = []

    async def stamp(task: Task) -> None:
        runs.append(1)
        task.data["processed_at"] = dt.now()  # a common slip: not JSON

    engine.register_handler("s", stamp)
    engine.register_workflow("w", [Phase("s")])

    async def scenario():
        task = await engine.submit_task({}, "w")
        await asyncio.wait_for(engine.run_until_idle(), 3)
        return await engine.get_task(task.id)

    task = wfe_run(scenario())
    assert task.status is TaskStatus.FAILED
    assert "task.data must be JSON-serializable" in task.error
    assert runs == [1]


def test_non_json_data_fails_the_phase_that_put_it_there(make_engine, wfe_run):
    """The attempt fails in the phase whose handler broke the data, so a retry runs
    that phase again rather than skipping it."""
    engine = make_engine()
    ran: list[str] = []

    async def first(task: Task) -> None:
        ran.append("first")
        task.data["handle"] = object()
        task.output = "first done"

    async def second(task: Task) -> None:
        ran.append("second")

    engine.register_handler("first", first)
    engine.register_handler("second", second)
    engine.register_workflow("w", [Phase("first"), Phase("second")])

    async def scenario():
        task = await engine.submit_task({"n": 1}, "w")
        await engine.run_until_idle()
        return await engine.get_task(task.id)

    task = wfe_run(scenario())
    assert task.status is TaskStatus.FAILED
    assert task.classification == "first"
    assert task.outputs == {}
    assert ran == ["first"]
    assert [e["event"] for e in task.history][-2:] == ["attempt_failed", "failed"]
    assert task.history[-1]["phase"] == "first"
    assert task.data["n"] == 1  # the printable rest of the data is kept


def test_a_phase_changing_the_task_id_fails_its_attempt(make_engine, wfe_run):
    engine = make_engine()

    async def rename(task: Task) -> None:
        task.id = "something-else"

    engine.register_handler("a", rename)
    engine.register_workflow("w", [Phase("a")])

    async def scenario():
        await engine.submit_task(None, "w", task_id="kept")
        await asyncio.wait_for(engine.run_until_idle(), 10)
        return await engine.get_task("kept"), await engine.get_task("something-else")

    task, other = wfe_run(scenario())
    assert task.status is TaskStatus.FAILED
    assert "must not change task.id" in task.error
    assert other is None


def test_retry_runs_a_failed_or_cancelled_task_again(make_engine, wfe_run):
    engine = make_engine()
    fixed = False
    calls: list[str] = []

    async def fragile(task: Task) -> None:
        calls.append(task.classification)
        if not fixed:
            raise ConnectionError("service down")
        task.output = "recovered"

    engine.register_handler("a", lambda task: setattr(task, "output", "a done"))
    engine.register_handler("b", fragile)
    engine.register_workflow("w", [Phase("a"), Phase("b", max_attempts=2)])
    engine.register_workflow("ask", [Phase("q", assigned_to="human")])

    async def scenario():
        nonlocal fixed
        failed = await settle(engine)
        fixed = True
        retried = await engine.retry(failed.id)
        await engine.run_until_idle()
        waiting = await engine.submit_task(None, "ask")
        await engine.run_until_idle()
        await engine.cancel(waiting.id)
        await engine.retry(waiting.id)
        await engine.run_until_idle()
        with pytest.raises(TaskStateError):
            await engine.retry(failed.id)  # completed now
        with pytest.raises(UnknownTaskError):
            await engine.retry("nope")
        return (
            failed,
            retried,
            await engine.get_task(failed.id),
            await engine.get_task(waiting.id),
        )

    failed, retried, done, waiting = wfe_run(scenario())
    assert failed.status is TaskStatus.FAILED
    assert retried.status is TaskStatus.PENDING and retried.error is None
    assert done.status is TaskStatus.COMPLETED
    assert done.outputs == {"a": "a done", "b": "recovered"}
    assert calls == ["b", "b", "b"]  # two failed attempts, one after the retry; a not rerun
    assert "retried" in events(done)
    assert waiting.status is TaskStatus.WAITING_HUMAN  # asks its question again


@pytest.mark.parametrize(
    ("misdeed", "message"),
    [
        ("output_of_outputs", None),  # fine: the output is the task's own copy
        ("context_cycle", "task.context must be JSON-serializable: Circular reference"),
        ("status_text", "a phase may not set task.status to 'completed'"),
        ("deadline_number", "a phase may not set task.deadline"),
        ("artifact_name", "a phase may not set task.artifacts"),
        ("outputs_none", "a phase may not set task.outputs"),
        ("attempts", "a phase may not set task.attempts"),
    ],
)
def test_a_phase_breaking_what_the_engine_keeps_fails_once(make_engine, wfe_run, misdeed, message):
    """Not stored as is (it could not be), nor run again and again: the attempt fails."""
    engine = make_engine()
    runs: list[str] = []

    async def first(task: Task) -> None:
        task.output = 1

    async def second(task: Task) -> None:
        runs.append(misdeed)
        if misdeed == "output_of_outputs":
            task.output = {"inputs": task.outputs}
        elif misdeed == "context_cycle":
            task.context["me"] = task.context
        elif misdeed == "status_text":
            task.status = "completed"
        elif misdeed == "deadline_number":
            task.deadline = 5
        elif misdeed == "artifact_name":
            task.artifacts.append("x.txt")
        elif misdeed == "outputs_none":
            task.outputs = None
        else:
            task.attempts = 7

    engine.register_handler("first", first)
    engine.register_handler("second", second)
    engine.register_workflow("w", [Phase("first"), Phase("second")])

    async def scenario():
        task = await engine.submit_task({}, "w")
        await engine.run_until_idle()
        return await engine.get_task(task.id)

    task = wfe_run(scenario())
    assert runs == [misdeed]
    if message is None:
        assert task.status is TaskStatus.COMPLETED, task.error
        assert task.outputs == {"first": 1, "second": {"inputs": {"first": 1}}}
    else:
        assert task.status is TaskStatus.FAILED
        assert message in task.error
        assert task.outputs == {"first": 1}


def test_a_classifier_that_raises_fails_the_task(make_engine, wfe_run, caplog):
    class Broken:
        @hookimpl
        def wfe_classify(self, task: Task) -> str:
            raise RuntimeError("no model today")

    engine = make_engine(plugins=[Broken()])
    engine.register_handler("a", lambda task: None)
    engine.register_workflow("w", [Phase("a")])

    async def scenario():
        task = await engine.submit_task({}, "w")
        await engine.run_until_idle()
        return await engine.get_task(task.id)

    task = wfe_run(scenario())
    assert task.status is TaskStatus.FAILED
    assert task.error == (
        "PluginError: plugin 'Broken' failed in wfe_classify: RuntimeError: no model today"
    )
    # Before its first phase: the log line says so, not "in phase None".
    failed = [r.getMessage() for r in caplog.records if "failed before" in r.getMessage()]
    assert failed == [f"task {task.id}: failed before its first phase: {task.error}"]


def test_checkpoint_outside_a_running_phase_or_with_bad_values_is_refused(make_engine, wfe_run):
    engine = make_engine()
    seen: dict[str, str] = {}

    async def step(task: Task) -> None:
        task.context["progress"] = object()
        try:
            await engine.checkpoint(task)
        except InvalidTaskError as exc:
            seen["bad value"] = str(exc)
        task.context["progress"] = 1
        await engine.checkpoint(task)
        task.output = "done"

    engine.register_handler("step", step)
    engine.register_workflow("w", [Phase("step", assigned_to="functional")])

    async def scenario():
        task = await engine.submit_task(None, "w")
        with pytest.raises(InvalidTaskError, match="called from inside that phase"):
            await engine.checkpoint(task)
        await engine.run_until_idle()
        return await engine.get_task(task.id)

    done = wfe_run(scenario())
    assert seen["bad value"].startswith("cannot checkpoint: task.context: ")
    assert done.status is TaskStatus.COMPLETED and done.context == {"progress": 1}
    assert [e["event"] for e in done.history].count("checkpoint") == 1


def test_checkpoint_works_under_a_phase_timeout_and_from_the_phases_own_tasks(make_engine, wfe_run):
    engine = make_engine()

    async def step(task: Task) -> None:
        async def part(n: int) -> None:
            task.context[f"part{n}"] = True
            await engine.checkpoint(task)

        await asyncio.gather(part(1), part(2))
        await engine.checkpoint(task)
        task.output = sorted(task.context)

    engine.register_handler("step", step)
    engine.register_workflow("w", [Phase("step", assigned_to="functional", timeout=30)])

    async def scenario():
        task = await engine.submit_task(None, "w")
        await engine.run_until_idle()
        return await engine.get_task(task.id)

    done = wfe_run(scenario())
    assert done.status is TaskStatus.COMPLETED, done.error
    assert done.output == ["part1", "part2"]
    # One event per attempt, however often it checkpoints.
    assert [e["event"] for e in done.history].count("checkpoint") == 1


def test_a_checkpoint_the_store_cannot_take_hands_the_task_back_uncounted(wfe_run):
    """The store, not the phase, failed: the attempt is not used up."""
    from wfcore.errors import StoreError
    from wfcore.stores.memory import MemoryStore

    class FailingOnce(MemoryStore):
        failures = 1

        async def update_task(self, task: Task, *, keep_lease: bool = False) -> bool:
            if keep_lease and self.failures:
                self.failures -= 1
                raise StoreError("database is locked")
            return await super().update_task(task, keep_lease=keep_lease)

    engine = ECSWorkflowEngine(FailingOnce(), load_plugins=False, poll_interval=0.02)
    runs: list[int] = []

    async def step(task: Task) -> None:
        runs.append(task.attempts)
        await engine.checkpoint(task)
        task.output = "done"

    engine.register_handler("step", step)
    engine.register_workflow("w", [Phase("step", assigned_to="functional", max_attempts=1)])

    async def scenario():
        task = await engine.submit_task(None, "w")
        await engine.run_until_idle()
        done = await engine.get_task(task.id)
        await engine.aclose()
        return done

    done = wfe_run(scenario())
    assert done.status is TaskStatus.COMPLETED, done.error
    assert runs == [1, 1]
    assert "released" in [e["event"] for e in done.history]


def test_a_phase_that_checkpoints_in_a_loop_still_times_out(make_engine, wfe_run):
    """A timeout cancelling a checkpoint mid-write must leave the task's version in
    step with the store, or its failure could not be stored."""
    engine = make_engine()

    async def busy(task: Task) -> None:
        n = 0
        while True:
            n += 1
            task.context["n"] = n
            await engine.checkpoint(task)

    engine.register_handler("busy", busy)
    engine.register_workflow(
        "w", [Phase("busy", assigned_to="functional", timeout=0.3, max_attempts=1)]
    )

    async def scenario():
        tasks = [await engine.submit_task(None, "w") for _ in range(3)]
        await engine.run_until_idle()
        return [await engine.get_task(t.id) for t in tasks]

    for done in wfe_run(scenario(), timeout=30):
        assert done.status is TaskStatus.FAILED
        assert "timed out after 0.3s" in done.error


def test_a_store_that_cannot_write_is_logged_in_one_line_and_the_task_goes_on(wfe_run, caplog):
    """A full disk fails every running task's write alike: a line each, no tracebacks;
    the task runs again once the store takes writes."""
    from wfcore.errors import StoreError
    from wfcore.stores.memory import MemoryStore

    class FullForAWhile(MemoryStore):
        refusals = 2  # the phase's result, then the hand-back

        async def update_task(self, task: Task, *, keep_lease: bool = False) -> bool:
            if self.refusals:
                self.refusals -= 1
                raise StoreError("cannot write to /data/wfe.db: database or disk is full")
            return await super().update_task(task, keep_lease=keep_lease)

    engine = ECSWorkflowEngine(
        FullForAWhile(), load_plugins=False, poll_interval=0.02, lease_seconds=0.3
    )
    runs: list[int] = []

    async def step(task: Task) -> None:
        runs.append(task.attempts)
        task.output = "done"

    engine.register_handler("step", step)
    engine.register_workflow("w", [Phase("step", assigned_to="functional")])
    caplog.set_level(logging.INFO, logger="wfcore")

    async def scenario():
        task = await engine.submit_task(None, "w")
        await engine.run_until_idle()
        return await engine.get_task(task.id)

    done = wfe_run(scenario())
    assert done.status is TaskStatus.COMPLETED
    assert runs == [1, 1]  # run again after its lease ran out, the attempt not counted
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == [
        f"task {done.id}: the store failed (cannot write to /data/wfe.db: database or disk "
        "is full); handing it back",
        f"task {done.id}: could not hand back either (cannot write to /data/wfe.db: "
        "database or disk is full)",
    ]
    assert not any(r.exc_info for r in errors)

"""Phases that fail in unusual ways: a CancelledError or another BaseException raised
by the phase itself, exceptions that cannot say what they are, and changes to task
fields only the engine sets. Each fails its attempt like any exception (retried as
max_attempts says), with an error naming it."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from wfcore import ECSWorkflowEngine, Phase, Task, TaskStatus

# The events of a task whose phase failed both its attempts (max_attempts=2).
_TWO_FAILED_ATTEMPTS = [
    "submitted",
    "phase_started",
    "attempt_failed",
    "retry_scheduled",
    "phase_started",
    "attempt_failed",
    "failed",
]


class AppAbort(BaseException):
    """An app's own BaseException subclass, as some libraries define."""


class StrRaises(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no message today")


class StrNotText(Exception):
    def __str__(self) -> str:
        return 42  # type: ignore[return-value]


def _raiser(exc: BaseException, sync: bool) -> Callable[[Task], Any]:
    if sync:

        def handler(task: Task) -> None:
            raise exc

        return handler

    async def async_handler(task: Task) -> None:
        raise exc

    return async_handler


async def _settle(engine: ECSWorkflowEngine) -> Task:
    task = await engine.submit_task({}, "w")
    # The deadline stands for "never": before the fix a handler's own CancelledError
    # handed the task back for ever, so run_until_idle never returned.
    await asyncio.wait_for(engine.run_until_idle(), 30)
    stored = await engine.get_task(task.id)
    assert stored is not None
    return stored


# Python 3.10 cannot tell a CancelledError a phase raises from a cancel.
needs_cancelling = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="Task.cancelling() is new in Python 3.11"
)


@pytest.mark.parametrize("timeout", [None, 30.0], ids=["no-timeout", "timeout"])
@pytest.mark.parametrize(
    ("exc", "sync", "error"),
    [
        pytest.param(
            asyncio.CancelledError(),
            False,
            "CancelledError: raised by the phase itself (nothing cancelled it)",
            marks=needs_cancelling,
            id="cancelled-async",
        ),
        pytest.param(
            asyncio.CancelledError(),
            True,
            "CancelledError: raised by the phase itself (nothing cancelled it)",
            marks=needs_cancelling,
            id="cancelled-sync",
        ),
        pytest.param(AppAbort("disk quota"), False, "AppAbort: disk quota", id="base-async"),
        pytest.param(AppAbort("disk quota"), True, "AppAbort: disk quota", id="base-sync"),
        pytest.param(GeneratorExit(), False, "GeneratorExit: ", id="generator-exit"),
        pytest.param(StrRaises(), False, "StrRaises: <str() failed>", id="str-raises"),
        pytest.param(StrNotText(), True, "StrNotText: <str() failed>", id="str-not-text"),
    ],
)
def test_a_phase_raising_it_fails_its_attempts(
    wfe_engine_factory, wfe_run, exc, sync, error, timeout
):
    engine = wfe_engine_factory(retry_delay=0.01)
    engine.register_handler("p", _raiser(exc, sync))
    engine.register_workflow(
        "w", [Phase("p", assigned_to="functional", max_attempts=2, timeout=timeout)]
    )
    task = wfe_run(_settle(engine))
    assert task.status is TaskStatus.FAILED
    assert task.error == error
    events = [event["event"] for event in task.history]
    # Two attempts, each counted; no lost worker, no hand-back.
    assert events == _TWO_FAILED_ATTEMPTS
    assert type(exc).__name__ in (task.traceback or "")


def test_a_system_exit_code_that_cannot_print_is_named(wfe_engine_factory, wfe_run):
    class Code:
        def __str__(self) -> str:
            raise ValueError("unprintable")

    engine = wfe_engine_factory()
    engine.register_handler("p", _raiser(SystemExit(Code()), False))
    engine.register_workflow("w", [Phase("p", assigned_to="functional")])
    task = wfe_run(_settle(engine))
    assert task.error == "SystemExit: <str() failed> (the phase called sys.exit)"


def test_cancelling_a_running_phase_still_cancels_it(wfe_engine_factory, wfe_run):
    """The other side: a real cancel is not taken for the phase's own CancelledError."""
    engine = wfe_engine_factory()
    started = asyncio.Event()

    async def slow(task: Task) -> None:
        started.set()
        await asyncio.sleep(60)

    engine.register_handler("p", slow)
    engine.register_workflow("w", [Phase("p", assigned_to="functional", max_attempts=3)])

    async def scenario() -> Task:
        task = await engine.submit_task({}, "w")
        runner = asyncio.ensure_future(engine.run())
        await asyncio.wait_for(started.wait(), 30)
        await engine.cancel(task.id)
        engine.stop()
        await asyncio.wait_for(runner, 30)
        stored = await engine.get_task(task.id)
        assert stored is not None
        return stored

    task = wfe_run(scenario())
    assert task.status is TaskStatus.CANCELLED
    assert "attempt_failed" not in [event["event"] for event in task.history]


def _later() -> datetime:
    return datetime.now(timezone.utc) + timedelta(days=1)


# What a handler does to a field only the engine sets, and the field the error names.
FIELD_CHANGES: dict[str, tuple[Callable[[Task], None], str]] = {
    "workflow_name": (lambda t: setattr(t, "workflow_name", "other"), "task.workflow_name"),
    "workflow_none": (lambda t: setattr(t, "workflow_name", None), "task.workflow_name"),
    "classification": (lambda t: setattr(t, "classification", "b"), "task.classification"),
    "version": (lambda t: setattr(t, "version", t.version + 5), "task.version"),
    "history_none": (lambda t: setattr(t, "history", None), "task.history"),
    "history_entry": (lambda t: t.history.append("junk"), "task.history"),
    "assigned_to": (lambda t: setattr(t, "assigned_to", "robot"), "task.assigned_to"),
    "created_at": (lambda t: setattr(t, "created_at", "yesterday"), "task.created_at"),
    "run_after_text": (lambda t: setattr(t, "run_after", "soon"), "task.run_after"),
    "run_after": (lambda t: setattr(t, "run_after", _later()), "task.run_after"),
}


@pytest.mark.parametrize("change", sorted(FIELD_CHANGES))
def test_a_phase_changing_a_field_of_the_engine_fails_its_attempt(make_engine, wfe_run, change):
    """Each used to end otherwise: a task moved to a workflow or phase no route
    leads to, a hot loop of hand-backs (history None), a write refused as stale
    until three lease expiries made it a WorkerLostError (version), or an engine
    error that handed the task back at the next phase, its first phase's output lost
    (assigned_to, run_after)."""
    mutate, field = FIELD_CHANGES[change]
    engine = make_engine(lease_seconds=5)
    ran: list[str] = []

    async def first(task: Task) -> None:
        ran.append("a")
        task.context["seen"] = True
        mutate(task)

    async def second(task: Task) -> None:
        ran.append("b")

    engine.register_handler("a", first)
    engine.register_handler("b", second)
    engine.register_handler("x", second)
    engine.register_workflow(
        "w",
        [
            Phase("a", assigned_to="functional", max_attempts=2),
            Phase("b", assigned_to="functional"),
        ],
    )
    engine.register_workflow("other", [Phase("x", assigned_to="functional")])
    task = wfe_run(_settle(engine))
    assert task.status is TaskStatus.FAILED
    assert task.error is not None
    assert task.error.startswith(f"InvalidTaskError: a phase may not set {field}")
    assert ran == ["a", "a"]
    assert (task.workflow_name, task.classification) == ("w", "a")
    assert task.context == {}  # the attempts' changes are not kept
    assert task.assigned_to.value == "agentic"
    # The retry's start, if any: not the value the phase set.
    assert task.run_after is None or task.run_after < _later() - timedelta(hours=1)
    assert [event["event"] for event in task.history] == _TWO_FAILED_ATTEMPTS


def test_a_phase_that_checkpoints_keeps_its_task_version_and_history(make_engine, wfe_run):
    """The other side: a checkpoint's new version and history are the engine's own."""
    engine = make_engine()

    async def step(task: Task) -> None:
        task.context["step"] = 1
        await engine.checkpoint(task)
        task.context["step"] = 2
        await engine.checkpoint(task)
        task.output = "done"

    engine.register_handler("a", step)
    engine.register_workflow("w", [Phase("a", assigned_to="functional")])
    task = wfe_run(_settle(engine))
    assert task.status is TaskStatus.COMPLETED, task.error
    assert task.context == {"step": 2}
    assert [event["event"] for event in task.history].count("checkpoint") == 1


def test_a_phase_setting_a_non_json_output_of_another_phase_fails_its_attempt(make_engine, wfe_run):
    """It used to complete on memory:// and fail for good on SQLite, in the next
    phase, with an error naming no field."""
    engine = make_engine()

    async def first(task: Task) -> None:
        task.outputs["b"] = {"when": object()}

    engine.register_handler("a", first)
    engine.register_handler("b", lambda task: None)
    engine.register_workflow(
        "w",
        [
            Phase("a", assigned_to="functional", max_attempts=2),
            Phase("b", assigned_to="functional"),
        ],
    )
    task = wfe_run(_settle(engine))
    assert task.status is TaskStatus.FAILED
    assert task.classification == "a"
    assert task.error == (
        "InvalidTaskError: task.outputs['b'] must be JSON-serializable: "
        "Object of type object is not JSON serializable"
    )
    assert task.outputs == {}
    assert [event["event"] for event in task.history].count("attempt_failed") == 2


def test_a_plain_handler_raising_stopiteration_fails_its_attempt(wfe_engine_factory, wfe_run):
    """A next() on an empty iterator in a plain handler: the exception cannot be set on
    the future the phase awaits, which used to wait for ever, the task running."""
    engine = wfe_engine_factory()

    def first_line(task: Task) -> None:
        task.output = next(iter(task.data["lines"]))

    engine.register_handler("p", first_line)
    engine.register_workflow("w", [Phase("p", assigned_to="functional")])

    async def scenario() -> Task:
        task = await engine.submit_task({"lines": []}, "w")
        await asyncio.wait_for(engine.run_until_idle(), 30)
        stored = await engine.get_task(task.id)
        assert stored is not None
        return stored

    task = wfe_run(scenario())
    assert task.status is TaskStatus.FAILED
    assert task.error == (
        "RuntimeError: test_a_plain_handler_raising_stopiteration_fails_its_attempt."
        "<locals>.first_line raised StopIteration"
    )
    assert "StopIteration" in (task.traceback or "")


def test_a_plain_handler_raising_keyboardinterrupt_fails_its_attempt(wfe_engine_factory, wfe_run):
    """Ctrl-C reaches the main thread only: a KeyboardInterrupt a plain handler raises
    in its thread is its own, and used to end the worker as if Ctrl-C were pressed."""
    engine = wfe_engine_factory()

    def interrupted(task: Task) -> None:
        raise KeyboardInterrupt("the library gave up")

    engine.register_handler("p", interrupted)
    engine.register_handler("q", lambda task: setattr(task, "output", "fine"))
    engine.register_workflow("w", [Phase("p", assigned_to="functional")])
    engine.register_workflow("other", [Phase("q", assigned_to="functional")])

    async def scenario() -> list[Task]:
        await engine.submit_tasks([{"data": 1, "workflow_name": n} for n in ("w", "other")])
        await asyncio.wait_for(engine.run_until_idle(), 30)
        return await engine.list_tasks()

    tasks = {t.workflow_name: t for t in wfe_run(scenario())}
    assert tasks["w"].status is TaskStatus.FAILED
    assert tasks["w"].error == (
        "RuntimeError: test_a_plain_handler_raising_keyboardinterrupt_fails_its_attempt."
        "<locals>.interrupted raised KeyboardInterrupt: the library gave up"
    )
    assert tasks["other"].status is TaskStatus.COMPLETED


def test_a_stop_hands_a_task_back_at_its_phase_whatever_the_phase_set(make_engine, wfe_run):
    """A phase that set task.classification (a mistake its end would refuse) and is
    then stopped used to go back to the store at that phase: its own work was skipped,
    and the next phase ran without its output."""
    engine = make_engine(shutdown_timeout=0.1)
    started = asyncio.Event()
    ran: list[str] = []

    async def first(task: Task) -> None:
        ran.append("a")
        if len(ran) == 1:
            task.classification = "b"
            started.set()
            await asyncio.sleep(60)
        task.output = "a done"

    async def second(task: Task) -> None:
        ran.append("b")
        task.output = {"saw": task.outputs.get("a")}

    engine.register_handler("a", first)
    engine.register_handler("b", second)
    engine.register_workflow(
        "w", [Phase("a", assigned_to="functional"), Phase("b", assigned_to="functional")]
    )

    async def scenario() -> tuple[Task, Task]:
        task = await engine.submit_task({}, "w", classification="a")
        runner = asyncio.ensure_future(engine.run())
        await asyncio.wait_for(started.wait(), 30)
        engine.stop()
        await asyncio.wait_for(runner, 30)
        handed_back = await engine.get_task(task.id)
        await engine.run_until_idle()
        done = await engine.get_task(task.id)
        assert handed_back is not None and done is not None
        return handed_back, done

    handed_back, done = wfe_run(scenario())
    assert (handed_back.status, handed_back.classification) == (TaskStatus.PENDING, "a")
    assert done.status is TaskStatus.COMPLETED, done.error
    assert done.outputs == {"a": "a done", "b": {"saw": "a done"}}
    assert ran == ["a", "a", "b"]

"""Lifecycle hooks: when each fires, sync and async implementations, failing plugins."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from typing import Any

import pytest

from wfcore import ECSWorkflowEngine, Phase, PluginError, Task, TaskStatus, hookimpl


class Recorder:
    """Implements every lifecycle hook, half of them async, and records the calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    @hookimpl
    def wfe_engine_started(self, engine: ECSWorkflowEngine) -> None:
        self.calls.append(("engine_started",))

    @hookimpl
    async def wfe_task_submitted(self, task: Task) -> None:
        await asyncio.sleep(0)
        self.calls.append(("submitted", task.status.value))

    @hookimpl
    def wfe_phase_started(self, task: Task, phase: Phase) -> None:
        self.calls.append(("phase_started", phase.target_classification, task.attempts))

    @hookimpl
    async def wfe_phase_finished(self, task: Task, phase: Phase, engine: ECSWorkflowEngine):
        self.calls.append(
            (
                "phase_finished",
                phase.target_classification,
                task.outputs.get(phase.target_classification),
            )
        )

    @hookimpl
    def wfe_task_suspended(self, task: Task) -> None:
        self.calls.append(("suspended", task.status.value, task.waiting_reason))

    @hookimpl
    async def wfe_task_resumed(self, task: Task) -> None:
        self.calls.append(("resumed", task.classification))

    @hookimpl
    def wfe_task_completed(self, task: Task) -> None:
        self.calls.append(("completed", task.output))

    @hookimpl
    async def wfe_task_failed(self, task: Task) -> None:
        self.calls.append(("failed", task.error))

    @hookimpl
    def wfe_task_cancelled(self, task: Task) -> None:
        self.calls.append(("cancelled", task.status.value))

    @hookimpl
    async def wfe_engine_stopping(self, engine: ECSWorkflowEngine) -> None:
        self.calls.append(("engine_stopping",))


def test_lifecycle_hooks_fire_in_order(make_engine, wfe_run):
    recorder = Recorder()
    engine = make_engine(plugins=[recorder])
    tries: list[int] = []

    async def flaky(task: Task) -> None:
        tries.append(task.attempts)
        if task.attempts == 1:
            raise RuntimeError("again")
        task.output = "drafted"

    engine.register_handler("draft", flaky)
    engine.register_handler("publish", lambda task: setattr(task, "output", "live"))
    engine.register_workflow(
        "w",
        [
            Phase("draft", max_attempts=2),
            Phase("approve", assigned_to="human", instructions="ok?"),
            Phase("publish"),
        ],
    )

    async def scenario():
        task = await engine.submit_task(None, "w")
        await engine.run_until_idle()
        await engine.resume(task.id, "yes")
        await engine.run_until_idle()

    wfe_run(scenario())
    assert recorder.calls == [
        ("submitted", "pending"),
        ("engine_started",),
        ("phase_started", "draft", 1),
        ("phase_started", "draft", 2),
        ("phase_finished", "draft", "drafted"),
        ("phase_started", "approve", 1),
        ("suspended", "waiting_human", "ok?"),
        ("engine_stopping",),
        ("resumed", "publish"),
        ("phase_finished", "approve", "yes"),
        ("engine_started",),
        ("phase_started", "publish", 1),
        ("phase_finished", "publish", "live"),
        ("completed", "live"),
        ("engine_stopping",),
    ]


def test_failed_and_cancelled_hooks(make_engine, wfe_run):
    recorder = Recorder()
    engine = make_engine(plugins=[recorder])

    async def boom(task: Task) -> None:
        raise LookupError("nothing here")

    engine.register_handler("a", boom)
    engine.register_workflow("w", [Phase("a")])

    async def scenario():
        await engine.submit_task(None, "w")
        await engine.run_until_idle()
        dropped = await engine.submit_task(None, "w")
        await engine.cancel(dropped.id)

    wfe_run(scenario())
    assert ("failed", "LookupError: nothing here") in recorder.calls
    assert recorder.calls[-1] == ("cancelled", "cancelled")


def test_attempt_failed_is_called_for_each_failed_attempt(make_engine, wfe_run):
    """A metrics plugin counts retries: PENDING when the phase runs again, FAILED
    after the last attempt, before wfe_task_failed."""
    seen: list[tuple[str, str, int, str]] = []

    class Watch:
        @hookimpl
        def wfe_attempt_failed(self, task: Task, phase: Phase) -> None:
            seen.append((task.data, task.status.value, task.attempts, phase.target_classification))

        @hookimpl
        def wfe_task_failed(self, task: Task) -> None:
            seen.append((task.data, "task_failed", task.attempts, task.classification or ""))

    engine = make_engine(plugins=[Watch()])
    tries: dict[str, int] = {}

    async def flaky(task: Task) -> None:
        tries[task.data] = tries.get(task.data, 0) + 1
        if task.data == "never" or tries[task.data] < 3:
            raise ConnectionError("try again")
        task.output = "ok"

    engine.register_handler("a", flaky)
    engine.register_workflow("w", [Phase("a", max_attempts=3)])

    async def scenario():
        for data in ("third time lucky", "never"):
            await engine.submit_task(data, "w")
            await engine.run_until_idle()

    wfe_run(scenario())
    assert seen == [
        ("third time lucky", "pending", 1, "a"),
        ("third time lucky", "pending", 2, "a"),
        ("never", "pending", 1, "a"),
        ("never", "pending", 2, "a"),
        ("never", "failed", 3, "a"),
        ("never", "task_failed", 3, "a"),
    ]


def test_completed_callbacks_run_once_per_task_with_the_task(make_engine, wfe_run):
    engine = make_engine()
    seen: list[tuple[str, str, Any]] = []

    async def on_done(task: Task) -> None:
        await asyncio.sleep(0)
        seen.append((task.id, task.status.value, task.output))

    engine.register_task_completed_hook(on_done)
    engine.register_handler("a", lambda task: setattr(task, "output", task.data + 1))
    engine.register_workflow("w", [Phase("a")])

    async def scenario():
        ids = [(await engine.submit_task(i, "w")).id for i in range(3)]
        await engine.run_until_idle()
        await engine.run_until_idle()  # a second pass completes nothing again
        return ids

    ids = wfe_run(scenario())
    assert sorted(seen) == sorted((i, "completed", n + 1) for n, i in enumerate(ids))


def test_a_blocking_plain_callback_does_not_stop_the_other_tasks(make_engine, wfe_run):
    """A webhook posted with a blocking client (requests, urllib) in a plain function:
    the worker goes on with its other tasks meanwhile."""
    engine = make_engine(max_concurrency=2)
    second_ran = threading.Event()
    waited: list[bool] = []

    def post_webhook(task: Task) -> None:  # blocks its thread until the other task ran
        if task.data == "first":
            waited.append(second_ran.wait(20))

    async def work(task: Task) -> None:
        if task.data == "second":
            second_ran.set()
        task.output = task.data

    engine.register_task_completed_hook(post_webhook)
    engine.register_handler("a", work)
    engine.register_workflow("w", [Phase("a")])

    async def run():
        await engine.submit_task("first", "w")
        worker = asyncio.create_task(engine.run_until_idle())
        # Queued once the first has completed, so that only a free loop runs it.
        while not engine.stats["completed"]:
            await asyncio.sleep(0.01)
        await engine.submit_task("second", "w")
        await worker

    wfe_run(run())
    assert waited == [True]


def test_completed_callback_after_resume_of_the_last_phase(make_engine, wfe_run):
    engine = make_engine()
    seen: list[Any] = []

    async def on_done(task: Task) -> None:
        seen.append(task.output)

    engine.register_task_completed_hook(on_done)
    engine.register_workflow("w", [Phase("sign", assigned_to="human")])

    async def scenario():
        task = await engine.submit_task(None, "w")
        await engine.run_until_idle()
        await engine.resume(task.id, "signed")

    wfe_run(scenario())
    assert seen == ["signed"]


class Broken:
    """A plugin whose lifecycle hooks all raise."""

    @hookimpl
    def wfe_phase_started(self, task: Task) -> None:
        task.context["broken-was-here"] = True
        raise RuntimeError("broken plugin (phase_started)")

    @hookimpl
    async def wfe_phase_finished(self, task: Task) -> None:
        raise RuntimeError("broken plugin (phase_finished)")

    @hookimpl
    def wfe_task_completed(self, task: Task) -> None:
        raise RuntimeError("broken plugin (completed)")

    @hookimpl
    def wfe_task_submitted(self, task: Task) -> None:
        raise RuntimeError("broken plugin (submitted)")


def test_a_failing_hook_is_logged_by_name_and_does_not_hurt_the_task(make_engine, wfe_run, caplog):
    recorder = Recorder()
    engine = make_engine(plugins=[Broken(), recorder])
    engine.register_handler("a", lambda task: setattr(task, "output", "fine"))
    engine.register_workflow("w", [Phase("a"), Phase("b", assigned_to="functional")])
    engine.register_handler("b", lambda task: setattr(task, "output", "also fine"))

    async def bad_callback(task: Task) -> None:
        raise ValueError("broken completed callback")

    engine.register_task_completed_hook(bad_callback)

    async def scenario():
        task = await engine.submit_task(None, "w")
        await engine.run_until_idle()
        return await engine.get_task(task.id)

    with caplog.at_level(logging.ERROR, logger="wfcore"):
        task = wfe_run(scenario())
    assert task.status is TaskStatus.COMPLETED
    assert task.outputs == {"a": "fine", "b": "also fine"}
    assert task.error is None
    # The others still ran.
    assert ("completed", "also fine") in recorder.calls
    assert ("submitted", "pending") in recorder.calls
    messages = [r.getMessage() for r in caplog.records]
    broken = [m for m in messages if "Broken" in m or "broken" in m.lower()]
    assert any("wfe_phase_started" in m for m in broken), messages
    assert any("wfe_task_completed" in m for m in broken), messages
    assert any("wfe_task_submitted" in m for m in broken), messages
    assert any("bad_callback" in m for m in messages), messages
    # Each failure message names the plugin (an object plugin by its class).
    assert all("Broken" in m for m in broken if "wfe_" in m)


class Exiter:
    """A plugin whose hook exits, as a command-line library does on bad input."""

    @hookimpl
    def wfe_phase_finished(self) -> None:
        raise SystemExit("plugin quit")


def test_a_hook_or_callback_that_exits_is_logged_and_the_worker_goes_on(
    make_engine, wfe_run, caplog
):
    engine = make_engine(plugins=[Exiter()])
    engine.register_handler("a", lambda task: setattr(task, "output", task.data))
    engine.register_workflow("w", [Phase("a")])
    engine.register_task_completed_hook(lambda task: sys.exit("callback quit"))

    async def scenario() -> list[Task]:
        await engine.submit_tasks([{"data": i, "workflow_name": "w"} for i in range(3)])
        await engine.run_until_idle()
        return await engine.list_tasks()

    with caplog.at_level(logging.ERROR, logger="wfcore"):
        tasks = wfe_run(scenario())
    assert [t.status for t in tasks] == [TaskStatus.COMPLETED] * 3
    messages = [r.getMessage() for r in caplog.records]
    assert sum("plugin 'Exiter' failed in wfe_phase_finished" in m for m in messages) == 3
    assert sum("completed hook" in m and "failed" in m for m in messages) == 3


class Refuser:
    """A plugin that finds itself misconfigured when the engine starts."""

    @hookimpl
    def wfe_engine_started(self) -> None:
        raise PluginError("WFE_EXAMPLE_URL is not a URL")


def test_a_plugin_can_refuse_the_start(make_engine, wfe_run):
    recorder = Recorder()
    # Registered first, so called last: the recorder has started by then.
    engine = make_engine(plugins=[Refuser(), recorder])
    engine.register_handler("a", lambda task: None)
    engine.register_workflow("w", [Phase("a")])

    async def scenario():
        task = await engine.submit_task({}, "w")
        with pytest.raises(PluginError, match="WFE_EXAMPLE_URL is not a URL") as refused:
            await engine.run_until_idle()
        return refused.value, await engine.get_task(task.id)

    refused, task = wfe_run(scenario())
    assert str(refused) == "plugin 'Refuser': WFE_EXAMPLE_URL is not a URL"
    assert task.status is TaskStatus.PENDING  # nothing ran
    # What the recorder started is stopped again.
    assert recorder.calls == [("submitted", "pending"), ("engine_started",), ("engine_stopping",)]
    assert not engine.running


def test_hook_implementations_may_take_fewer_arguments(make_engine, wfe_run):
    seen: list[str] = []

    class Minimal:
        @hookimpl
        def wfe_task_completed(self) -> None:
            seen.append("completed")

        @hookimpl
        def wfe_phase_finished(self, phase: Phase) -> None:
            seen.append(phase.target_classification)

    engine = make_engine(plugins=[Minimal()])
    engine.register_handler("a", lambda task: None)
    engine.register_workflow("w", [Phase("a")])

    async def scenario():
        await engine.submit_task(None, "w")
        await engine.run_until_idle()

    wfe_run(scenario())
    assert seen == ["a", "completed"]


def test_contribution_hooks_register_handlers_and_workflows(make_engine, wfe_run):
    class Contributes:
        @hookimpl
        def wfe_register_handlers(self, register) -> None:
            async def shout(task: Task) -> None:
                task.output = str(task.data).upper()

            register("shout", shout)

        @hookimpl
        def wfe_register_workflows(self, register) -> None:
            register("loud", [Phase("shout")])

    engine = make_engine(plugins=[Contributes()])
    assert engine.handler_for("shout") is not None
    assert "loud" in engine.workflows

    async def scenario():
        task = await engine.submit_task("hey", "loud")
        await engine.run_until_idle()
        return await engine.get_task(task.id)

    assert wfe_run(scenario()).output == "HEY"


@pytest.mark.parametrize("kind", ["handlers", "workflows"])
def test_duplicate_contributions_are_refused(make_engine, kind):
    from wfcore import PluginError

    def plugin(tag: str) -> object:
        class One:
            @hookimpl
            def wfe_register_handlers(self, register) -> None:
                if kind == "handlers":
                    register("same", lambda task: None)

            @hookimpl
            def wfe_register_workflows(self, register) -> None:
                if kind == "workflows":
                    register("same", [Phase("x")])

        One.__name__ = tag
        return One()

    with pytest.raises(PluginError) as caught:
        make_engine(plugins=[plugin("first"), plugin("second")])
    # The plugin registered last is called first.
    what = "handler for 'same'" if kind == "handlers" else "workflow 'same'"
    assert str(caught.value) == (
        f"plugin 'first' failed in wfe_register_{kind}: {what} registered twice "
        "(by plugin 'second' and plugin 'first')"
    )

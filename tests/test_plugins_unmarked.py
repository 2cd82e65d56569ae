"""A function named like a hook but left without @hookimpl is never called by pluggy;
registering its plugin warns, naming the plugin and the hook, instead of the hook
silently doing nothing."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from wfcore import Phase, Task, TaskStatus, hookimpl


class ForgotTheMark:
    """One hook marked, one not: the second is the mistake."""

    def __init__(self) -> None:
        self.failed: list[str] = []

    @hookimpl
    def wfe_task_submitted(self, task: Task) -> None:
        pass

    def wfe_task_failed(self, task: Task, engine: Any) -> None:
        self.failed.append(task.id)


class AllMarked:
    @hookimpl
    def wfe_task_failed(self, task: Task) -> None:
        pass

    def wfe_helper(self) -> None:
        """Named like a hook's prefix, but no hook: not warned about."""


def test_an_unmarked_hook_function_is_warned_about(
    wfe_engine_factory: Any, wfe_run: Any, caplog: pytest.LogCaptureFixture
) -> None:
    plugin = ForgotTheMark()
    with caplog.at_level(logging.WARNING, logger="wfcore.plugins"):
        engine = wfe_engine_factory(plugins=[plugin])
    said = [r.getMessage() for r in caplog.records if r.name == "wfcore.plugins"]
    assert said == [
        "plugin 'ForgotTheMark': wfe_task_failed is not marked @hookimpl, so it is never "
        "called (decorate it with @wfcore.hookimpl)"
    ]

    # What the warning says is so: the task fails and the function is not called.
    async def boom(task: Task) -> None:
        raise RuntimeError("boom")

    engine.register_handler("boom", boom)
    engine.register_workflow("w", [Phase("boom", assigned_to="functional", max_attempts=1)])

    async def scenario() -> Any:
        task = await engine.submit_task(None, "w")
        await engine.run_until_idle()
        return await engine.wait_for_task(task.id)

    assert wfe_run(scenario()).status is TaskStatus.FAILED
    assert plugin.failed == []


def test_marked_hooks_and_other_functions_are_not_warned_about(
    wfe_engine_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="wfcore.plugins"):
        wfe_engine_factory(plugins=[AllMarked()])
    assert [r.getMessage() for r in caplog.records if r.name == "wfcore.plugins"] == []

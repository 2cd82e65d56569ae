"""wfcore.current_engine(): the engine running a phase, for handlers that need it."""

from __future__ import annotations

import asyncio

import pytest

from wfcore import ECSWorkflowEngine, Phase, Task, TaskStatus, WorkflowError, current_engine


def test_a_handler_finds_the_engine_that_runs_it(make_engine, wfe_run):
    """In its coroutine, in a task it starts, and in a plain handler's thread."""
    engine = make_engine()

    async def report(task: Task) -> None:
        async def in_a_task() -> ECSWorkflowEngine:
            return current_engine()

        started = await asyncio.create_task(in_a_task())
        await current_engine().add_artifact_text(task, "report.txt", "ok")
        task.output = [started is engine, current_engine() is engine]

    def plain(task: Task) -> None:
        task.output = current_engine() is engine

    engine.register_handler("report", report)
    engine.register_handler("plain", plain)
    engine.register_workflow("w", [Phase("report", assigned_to="functional")])
    engine.register_workflow("p", [Phase("plain", assigned_to="functional")])

    async def scenario():
        tasks = [await engine.submit_task({}, "w"), await engine.submit_task({}, "p")]
        await engine.run_until_idle()
        return [await engine.wait_for_task(t.id) for t in tasks]

    report_task, plain_task = wfe_run(scenario())
    assert report_task.status is TaskStatus.COMPLETED, report_task.error
    assert report_task.output == [True, True]
    assert [a.name for a in report_task.artifacts] == ["report.txt"]
    assert plain_task.output is True
    with pytest.raises(WorkflowError, match="no phase runs here"):
        current_engine()


def test_a_handler_calling_a_module_level_engine_is_told_which_runs_it(
    wfe_engine_factory, wfe_run, tmp_path
):
    """The app's own engine (another store) called from a phase a test's engine runs."""
    app_engine = ECSWorkflowEngine(f"sqlite:///{tmp_path}/app.db", load_plugins=False)
    test_engine = wfe_engine_factory()

    async def report(task: Task) -> None:
        await app_engine.add_artifact_text(task, "report.txt", "ok")

    test_engine.register_handler("report", report)
    test_engine.register_workflow("w", [Phase("report", assigned_to="functional")])

    async def scenario():
        task = await test_engine.submit_task({}, "w")
        await test_engine.run_until_idle()
        await app_engine.aclose()
        return await test_engine.wait_for_task(task.id)

    failed = wfe_run(scenario())
    assert failed.status is TaskStatus.FAILED
    assert failed.error.startswith(
        f"InvalidTaskError: cannot add artifact 'report.txt' to task {failed.id!r} here; "
        f"its phase runs in another engine (store {test_engine.store_url}): call that one, "
        "e.g. wfcore.current_engine(), not a module-level engine"
    ), failed.error


def test_suspend_on_another_engine_says_which_runs_the_phase(wfe_engine_factory, wfe_run, tmp_path):
    app_engine = ECSWorkflowEngine(f"sqlite:///{tmp_path}/app.db", load_plugins=False)
    test_engine = wfe_engine_factory()

    async def ask(task: Task) -> None:
        app_engine.suspend(task, TaskStatus.WAITING_HUMAN, reason="ok?")

    test_engine.register_handler("ask", ask)
    test_engine.register_workflow("w", [Phase("ask", assigned_to="functional")])

    async def scenario():
        task = await test_engine.submit_task({}, "w")
        await test_engine.run_until_idle()
        return await test_engine.wait_for_task(task.id)

    failed = wfe_run(scenario())
    assert failed.error.startswith(
        "InvalidTaskError: suspend() is for a task whose phase this engine is running, called "
        "from inside that phase; its phase runs in another engine"
    ), failed.error

"""Who answered, cancelled or retried a task: ``by=`` in the history."""

from __future__ import annotations

import pytest

from wfcore import Phase, Task, TaskStatus


def _engine(make_engine):
    engine = make_engine()

    async def fail(task: Task) -> None:
        raise RuntimeError("no luck")

    engine.register_handler("fail", fail)
    engine.register_workflow("approve", [Phase("ask", assigned_to="human")])
    engine.register_workflow("flaky", [Phase("fail", assigned_to="functional")])
    return engine


def _events(task: Task, name: str) -> list[dict]:
    return [entry for entry in task.history if entry["event"] == name]


def test_resume_cancel_and_retry_record_who_did_it(make_engine, wfe_run):
    engine = _engine(make_engine)

    async def scenario() -> tuple[Task, Task]:
        answered = await engine.submit_task({}, "approve")
        dropped = await engine.submit_task({}, "flaky")
        await engine.run_until_idle()
        await engine.resume(answered.id, {"ok": True}, by=" alice ")
        await engine.retry(dropped.id, by="bob")
        await engine.cancel(dropped.id, by="carol")
        return await engine.get_task(answered.id), await engine.get_task(dropped.id)

    answered, dropped = wfe_run(scenario())
    assert answered.status is TaskStatus.COMPLETED
    assert _events(answered, "resumed")[0]["by"] == "alice"
    assert _events(dropped, "retried")[0]["by"] == "bob"
    assert _events(dropped, "cancelled")[0]["by"] == "carol"


def test_without_by_no_one_is_named(make_engine, wfe_run):
    engine = _engine(make_engine)

    async def scenario() -> Task:
        task = await engine.submit_task({}, "approve")
        await engine.run_until_idle()
        return await engine.resume(task.id, {"ok": True})

    assert "by" not in _events(wfe_run(scenario()), "resumed")[0]


@pytest.mark.parametrize(
    "by, error",
    [
        ("", ValueError),
        ("   ", ValueError),
        ("a\nb", ValueError),
        ("x" * 201, ValueError),
        (7, TypeError),
    ],
)
def test_a_bad_name_is_refused_and_nothing_changes(make_engine, wfe_run, by, error):
    engine = _engine(make_engine)

    async def scenario() -> Task:
        task = await engine.submit_task({}, "approve")
        await engine.run_until_idle()
        with pytest.raises(error, match="by must be"):
            await engine.resume(task.id, {"ok": True}, by=by)
        with pytest.raises(error, match="by must be"):
            await engine.cancel(task.id, by=by)
        return await engine.get_task(task.id)

    assert wfe_run(scenario()).status is TaskStatus.WAITING_HUMAN

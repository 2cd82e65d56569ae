"""Workers that run only some workflows (``only_workflows``, ``wfe worker --workflow``)."""

from __future__ import annotations

import pytest
from core_util import wait_for

from wfcore import ECSWorkflowEngine, Phase, Task, TaskStatus


def _engine(make_engine, name: str, only: list[str] | None, ran: list[tuple[str, str]]):
    engine = make_engine(only_workflows=only)

    async def handler(task: Task) -> None:
        ran.append((name, task.workflow_name))
        task.output = name

    for workflow in ("left", "right"):
        engine.register_handler(workflow, handler)
        engine.register_workflow(workflow, [Phase(workflow, assigned_to="functional")])
    return engine


def test_each_worker_runs_only_its_workflows(make_engine, wfe_run):
    ran: list[tuple[str, str]] = []
    lefty = _engine(make_engine, "lefty", ["left"], ran)
    righty = _engine(make_engine, "righty", ["right"], ran)

    async def scenario():
        # Both engines on one store (memory:// lives in the first engine's object).
        righty.use_store(await lefty.get_store())
        ids = [(await lefty.submit_task({}, w)).id for w in ("left", "right") * 3]
        # Idle as far as its own workflows go: the right tasks don't hold it up.
        await lefty.run_until_idle()
        after_lefty = [(await lefty.get_task(i)).status for i in ids]
        await righty.run_until_idle()
        return after_lefty, [await lefty.get_task(i) for i in ids]

    after_lefty, tasks = wfe_run(scenario())
    assert after_lefty == [TaskStatus.COMPLETED, TaskStatus.PENDING] * 3
    assert [t.status for t in tasks] == [TaskStatus.COMPLETED] * 6
    assert [t.output for t in tasks] == ["lefty", "righty"] * 3
    assert sorted(set(ran)) == [("lefty", "left"), ("righty", "right")]


def test_claims_of_some_workflows_come_oldest_first(make_engine, wfe_run):
    engine = make_engine()
    for workflow in ("x", "y", "z"):
        engine.register_workflow(workflow, [Phase("p")])

    async def scenario():
        ids = [(await engine.submit_task({"n": n}, w)).id for n, w in enumerate("xyzxyzx")]
        store = await engine.get_store()
        first = await store.claim("me", 3, 30, workflows=["z", "x"])
        rest = await store.claim("me", 10, 30, workflows=["z", "x"])
        others = await store.claim("me", 10, 30)
        return ids, first, rest, others

    ids, first, rest, others = wfe_run(scenario())
    x_and_z = [ids[n] for n in (0, 2, 3, 5, 6)]
    assert [t.id for t in first] == x_and_z[:3]
    assert [t.id for t in rest] == x_and_z[3:]
    assert [t.workflow_name for t in others] == ["y", "y"]
    assert {t.status for t in first + rest + others} == {TaskStatus.IN_PROGRESS}


def test_a_worker_of_some_workflows_takes_over_their_lost_tasks(make_engine, wfe_run):
    engine = make_engine()
    engine.register_workflow("x", [Phase("p")])

    async def scenario():
        task = await engine.submit_task({}, "x")
        store = await engine.get_store()
        await store.claim("host/1/ghost", 10, 0.05)
        again = await wait_for(
            lambda: store.claim("host/2/heir", 10, 30, workflows=["x"]), 10, "the lease to expire"
        )
        return task.id, again

    task_id, [again] = wfe_run(scenario())
    assert again.id == task_id
    assert again.history[-1]["event"] == "taken_over"
    assert again.history[-1]["previous_worker"] == "host/1/ghost"


@pytest.mark.parametrize(
    ("only", "error"),
    [("left", TypeError), ([], ValueError), ([""], ValueError), (["a", None], ValueError)],
)
def test_only_workflows_must_be_a_list_of_names(only, error):
    with pytest.raises(error, match="only_workflows"):
        ECSWorkflowEngine("memory://", only_workflows=only, load_plugins=False)

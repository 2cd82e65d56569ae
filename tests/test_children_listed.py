"""A task's children are those the engine added (submit_task(..., parent=task)): a
phase that puts other ids in task.children fails its attempt, and a listed task
whose parent is another is never taken for a child (cancel(children=True), the
children a CLI lists)."""

from __future__ import annotations

from wfcore import Phase, Task, TaskStatus, current_engine


def test_a_phase_that_lists_other_tasks_as_its_children_fails(make_engine, wfe_run) -> None:
    engine = make_engine()

    async def split(task: Task) -> None:
        await current_engine().submit_task({}, "other", parent=task)  # a real child
        task.children = [*task.children, "victim"]  # and one it did not submit

    engine.register_handler("split", split)
    engine.register_workflow("batch", [Phase("split", assigned_to="functional")])
    engine.register_workflow("other", [Phase("approve", assigned_to="human")])

    async def scenario() -> tuple[Task, Task]:
        await engine.submit_task({}, "other", task_id="victim")
        parent = await engine.submit_task({}, "batch", task_id="p")
        await engine.run_until_idle()
        await engine.cancel("p", children=True)  # failed: only its unfinished children
        return await engine.get_task(parent.id), await engine.get_task("victim")

    parent, victim = wfe_run(scenario())
    assert parent.status is TaskStatus.FAILED
    assert parent.error == (
        "InvalidTaskError: a phase may not set task.children "
        "(submit children with submit_task(..., parent=task))"
    )
    assert victim.status is TaskStatus.WAITING_HUMAN


def test_a_phase_may_copy_its_children_but_not_change_them_in_place(make_engine, wfe_run) -> None:
    engine = make_engine()

    async def copies(task: Task) -> None:
        await current_engine().submit_task({}, "other", parent=task)
        task.children = list(task.children)  # the same ids: nothing changed
        task.output = "ok"

    async def overwrites(task: Task) -> None:
        await current_engine().submit_task({}, "other", parent=task)
        task.children[0] = "victim"  # in place

    engine.register_handler("copies", copies)
    engine.register_handler("overwrites", overwrites)
    for name in ("copies", "overwrites"):
        engine.register_workflow(name, [Phase(name, assigned_to="functional")])
    engine.register_workflow("other", [Phase("approve", assigned_to="human")])

    async def scenario() -> list[Task]:
        await engine.submit_task({}, "other", task_id="victim")
        for name in ("copies", "overwrites"):
            await engine.submit_task({}, name, task_id=name)
        await engine.run_until_idle()
        return [await engine.get_task(i) for i in ("copies", "overwrites")]

    copied, overwritten = wfe_run(scenario())
    assert copied.status is TaskStatus.COMPLETED and copied.children == ["copies.1"]
    assert overwritten.status is TaskStatus.FAILED
    assert "a phase may not set task.children" in overwritten.error


def test_a_task_listed_by_hand_is_no_child_of_its_parent(make_engine, wfe_run) -> None:
    engine = make_engine()
    engine.register_workflow("other", [Phase("approve", assigned_to="human")])

    async def scenario() -> Task:
        await engine.submit_task({}, "other", task_id="victim")
        await engine.submit_task({}, "other", task_id="p")
        await engine.run_until_idle()
        # A list written to the store by something other than the engine.
        store = await engine.get_store()
        parent = await store.get_task("p")
        parent.children = ["victim"]
        assert await store.update_task(parent)
        await engine.cancel("p", children=True)
        return await engine.get_task("victim")

    victim = wfe_run(scenario())
    assert victim.status is TaskStatus.WAITING_HUMAN

"""A Task the engine hands out (submit_task, get_task, list_tasks, wait_for_task) is
the caller's own on every store: changing it, its history's events or its children
included, changes nothing stored. On SQLite this comes from reading the file; the
memory store copies."""

from __future__ import annotations

from wfcore import Phase, Task, TaskStatus, current_engine


def test_changing_a_task_handed_out_changes_nothing_stored(make_engine, wfe_run) -> None:
    engine = make_engine()

    async def split(task: Task) -> None:
        engine = current_engine()
        await engine.submit_task({}, "page", parent=task)
        engine.suspend(task, TaskStatus.WAITING_HUMAN, reason="check the pages")

    engine.register_handler("split", split)
    engine.register_workflow("batch", [Phase("split", assigned_to="functional")])
    engine.register_workflow("page", [Phase("read", assigned_to="human")])

    async def scenario() -> tuple[Task, list[Task]]:
        submitted = await engine.submit_task({}, "batch", task_id="p")
        submitted.history[0]["event"] = "changed"
        await engine.run_until_idle()
        for handed_out in [
            await engine.get_task("p"),
            (await engine.list_tasks(workflow_name="batch"))[0],
            (await engine.list_tasks(workflow_name="batch", summary=True))[0],
            await engine.wait_for_task("p", waiting=True),
        ]:
            handed_out.history[0]["event"] = "changed"
            handed_out.history[0]["at"] = None  # say, a datetime for display
            handed_out.history.append({"event": "added"})
            handed_out.children.append("other")
        await engine.submit_task({}, "page", task_id="other")
        await engine.cancel("p", children=True)
        return await engine.get_task("p"), [await engine.get_task(i) for i in ("p.1", "other")]

    parent, (child, other) = wfe_run(scenario())
    events = [event["event"] for event in parent.history]
    assert events[0] == "submitted" and "changed" not in events and "added" not in events
    assert all(isinstance(event["at"], str) for event in parent.history)
    assert parent.children == ["p.1"]
    assert child.status is TaskStatus.CANCELLED
    assert other.status is TaskStatus.PENDING

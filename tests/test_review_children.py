"""Review of child tasks: what a big fan-out costs, and edge cases of the join."""

from __future__ import annotations

from typing import Any

from wfcore import ECSWorkflowEngine, Phase, Task, TaskStatus


def _counting_reads(engine: ECSWorkflowEngine, store: Any) -> list[str]:
    """Record the id of every task ``store.get_task`` reads from now on."""
    read: list[str] = []
    get_task = store.get_task

    async def counted(task_id: str) -> Task | None:
        read.append(task_id)
        return await get_task(task_id)

    store.get_task = counted
    return read


def test_children_finishing_together_do_not_each_read_all_their_siblings(make_engine, wfe_run):
    # 300 children, run 100 at a time: the last hundred finish in one group commit,
    # and each used to read all 300 siblings (30,000 reads) to find the parent
    # already joined by the first of them.
    count = 300
    engine: ECSWorkflowEngine = make_engine(max_concurrency=100)

    async def split(task: Task) -> None:
        await engine.submit_tasks(
            [{"data": i, "workflow_name": "page", "parent": task} for i in range(count)]
        )
        engine.wait_for_children(task)

    async def read(task: Task) -> None:
        task.output = task.data

    async def merge(task: Task) -> None:
        task.output = sum(r["output"] for r in task.outputs["split"])

    engine.register_handler("split", split)
    engine.register_handler("read", read)
    engine.register_handler("merge", merge)
    engine.register_workflow("batch", [Phase("split"), Phase("merge")])
    engine.register_workflow("page", [Phase("read")])

    async def scenario() -> tuple[Task, list[str]]:
        parent = await engine.submit_task(None, "batch")
        read = _counting_reads(engine, await engine.get_store())
        await engine.run_until_idle()
        done = await engine.get_task(parent.id)
        assert done is not None
        return done, read

    parent, read = wfe_run(scenario())
    assert parent.status is TaskStatus.COMPLETED, parent.error
    assert parent.output == sum(range(count))
    children_read = sum(1 for task_id in read if task_id != parent.id)
    # The join reads each child once, and each child's report a few: not all of them.
    assert children_read < 6 * count, children_read

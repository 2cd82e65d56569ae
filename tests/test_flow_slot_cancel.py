"""A task cancelled elsewhere while it waits for a slot of a limited phase never
starts that phase, on a store that keeps no slots of its own (each worker counts
its own: here two engines on one memory store, as an app may share one)."""

from __future__ import annotations

import asyncio

from core_util import wait_for

from wfcore import ECSWorkflowEngine, Phase, Task, TaskStatus
from wfcore.stores.memory import MemoryStore


def test_a_task_cancelled_by_another_engine_while_it_waits_for_a_slot_never_starts(
    wfe_engine_factory, wfe_run
) -> None:
    store = MemoryStore()
    gate = asyncio.Event()
    ran: list[str] = []

    async def work(task: Task) -> None:
        ran.append(task.data)
        await gate.wait()
        task.output = task.data

    def engine() -> ECSWorkflowEngine:
        made = wfe_engine_factory(store=store, max_concurrency=3)
        made.register_handler("work", work)
        made.register_workflow("w", [Phase("work", assigned_to="functional", max_concurrency=1)])
        return made

    worker, other = engine(), engine()

    async def scenario() -> tuple[Task, Task, Task]:
        first = await worker.submit_task("first", "w")
        second = await worker.submit_task("second", "w")
        running = asyncio.create_task(worker.run())
        await wait_for(lambda: worker.waiting_for_slots == 1, what="the second to wait")
        await other.cancel(second.id)  # this engine does not run it: no interrupt
        third = await other.submit_task("third", "w")
        gate.set()  # the first ends; its slot frees
        await other.wait_for_task(third.id, timeout=10)
        await wait_for(lambda: worker.active_count == 0, what="the worker to let go of it")
        worker.stop()
        await running
        return (
            await other.get_task(first.id),
            await other.get_task(second.id),
            await other.get_task(third.id),
        )

    try:
        first, second, third = wfe_run(scenario())
    finally:
        wfe_run(store.close())
    assert ran == ["first", "third"], "the cancelled task's phase ran"
    assert (first.status, third.status) == (TaskStatus.COMPLETED, TaskStatus.COMPLETED)
    assert second.status is TaskStatus.CANCELLED
    assert [e["event"] for e in second.history] == ["submitted", "cancelled"]

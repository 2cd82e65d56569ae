"""A task submitted without a phase is classified by the worker that claims it. Once
that first phase has run a second, the worker stores the phase (Store.note_phases),
so that listings and counts by phase find the task before the phase ends."""

from __future__ import annotations

import asyncio
from typing import Any

from wfcore import ECSWorkflowEngine, MemoryStore, Phase, Store, Task, TaskStatus, hookimpl


class Router:
    """A wfe_classify plugin: the phase the task's data names, else the first."""

    @hookimpl
    def wfe_classify(self, task: Task, engine: ECSWorkflowEngine) -> str | None:
        return task.data.get("go")


def _held_engine(make: Any, **kwargs: Any) -> tuple[ECSWorkflowEngine, asyncio.Event]:
    """An engine whose phases run until the event returned is set."""
    engine = make(plugins=[Router()], lease_seconds=0.3, **kwargs)
    release = asyncio.Event()

    async def hold(task: Task) -> str:
        await release.wait()
        return "done"

    for name in ("gather", "write"):
        engine.register_handler(name, hold)
    engine.register_workflow(
        "research",
        [Phase("gather", assigned_to="functional"), Phase("write", assigned_to="functional")],
    )
    return engine, release


async def _until_finished(engine: ECSWorkflowEngine, ids: list[str]) -> list[Task]:
    while True:
        tasks = [await engine.get_task(i) for i in ids]
        if all(t.status.is_finished for t in tasks):
            return tasks
        await asyncio.sleep(0.02)


def test_a_running_first_phase_is_listed_and_counted_at_its_phase(make_engine, wfe_run) -> None:
    engine, release = _held_engine(make_engine)

    async def scenario() -> None:
        plain = await engine.submit_task({}, "research")
        routed = await engine.submit_task({"go": "write"}, "research")
        runner = asyncio.create_task(engine.run())
        try:
            # Until the worker has stored where each one runs (after a second).
            while [t.id for t in await engine.list_tasks(phase="gather")] != [plain.id] or [
                t.id for t in await engine.list_tasks(phase="write")
            ] != [routed.id]:
                await asyncio.sleep(0.02)
            store = await engine.get_store()
            assert await store.count_by_phase("research") == {"gather": 1, "write": 1}
            assert await store.count_tasks(phase="gather") == {TaskStatus.IN_PROGRESS: 1}
            release.set()
            done = await _until_finished(engine, [plain.id, routed.id])
        finally:
            engine.stop()
            await runner
        # The phases ran once each, as routed: noting the phase changed nothing else.
        assert [t.status for t in done] == [TaskStatus.COMPLETED] * 2
        assert list(done[0].outputs) == ["gather", "write"]
        assert list(done[1].outputs) == ["write"]
        [classified] = [e for e in done[1].history if e["event"] == "classified"]
        assert classified["classification"] == "write"

    wfe_run(scenario(), timeout=30)


class _NoNotes(MemoryStore):
    """A store that keeps Store.note_phases' default, which does nothing."""

    note_phases = Store.note_phases


def test_a_store_that_does_not_note_phases_runs_tasks_all_the_same(
    wfe_engine_factory, wfe_run
) -> None:
    engine, release = _held_engine(wfe_engine_factory, store=_NoNotes())

    async def scenario() -> None:
        task = await engine.submit_task({}, "research")
        runner = asyncio.create_task(engine.run())
        try:
            while (await engine.get_task(task.id)).status is not TaskStatus.IN_PROGRESS:
                await asyncio.sleep(0.02)
            # Once the worker has asked the store to note the phase, it is still at
            # no phase, and nothing failed.
            store = await engine.get_store()
            asked: list[dict[str, str]] = []
            note = store.note_phases

            async def counted(owner: str, phases: dict[str, str]) -> None:
                asked.append(dict(phases))
                await note(owner, phases)

            store.note_phases = counted  # type: ignore[method-assign]
            while not asked:
                await asyncio.sleep(0.02)
            assert asked == [{task.id: "gather"}]
            assert await engine.list_tasks(phase="gather") == []
            release.set()
            [done] = await _until_finished(engine, [task.id])
        finally:
            engine.stop()
            await runner
        assert done.status is TaskStatus.COMPLETED and list(done.outputs) == ["gather", "write"]

    wfe_run(scenario(), timeout=30)

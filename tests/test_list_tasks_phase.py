"""engine.list_tasks(phase=...): the tasks at one phase, on both built-in stores, and
a clear error from a store whose list_tasks takes no phase."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from wfcore import ECSWorkflowEngine, MemoryStore, Phase, StoreError, Task, TaskStatus


async def _engine_with_tasks(url: str) -> tuple[ECSWorkflowEngine, list[str]]:
    """Tasks of workflow 'w' at phases a, b, a, and one submitted without a phase."""
    engine = ECSWorkflowEngine(url, load_plugins=False)
    engine.register_workflow("w", [Phase("a"), Phase("b")])
    ids = []
    for phase in ("a", "b", "a", None):
        task = await engine.submit_task({}, workflow_name="w", classification=phase)
        ids.append(task.id)
    return engine, ids


@pytest.mark.parametrize("store", ["sqlite", "memory"])
def test_list_tasks_by_phase(store: str, tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'wfe.db'}" if store == "sqlite" else "memory://"
    asyncio.run(_lists_by_phase(url))


async def _lists_by_phase(url: str) -> None:
    engine, ids = await _engine_with_tasks(url)
    try:
        at_a = await engine.list_tasks(phase="a")
        assert [t.id for t in at_a] == [ids[2], ids[0]]
        summaries = await engine.list_tasks(phase="b", workflow_name="w", summary=True)
        assert [t.id for t in summaries] == [ids[1]]
        assert await engine.list_tasks("completed", phase="a") == []
        assert [t.id for t in await engine.list_tasks(phase="a", limit=1, offset=1)] == [ids[0]]
        # Not classified yet: at no phase, not even the first.
        assert len(await engine.list_tasks(workflow_name="w")) == 4
        assert await engine.list_tasks(phase="\udcff") == []  # no phase can have the name
        with pytest.raises(TypeError, match="phase must be a name or None, not 3"):
            await engine.list_tasks(phase=3)  # type: ignore[arg-type]
    finally:
        await engine.aclose()


class _ListsWithoutPhases(MemoryStore):
    """A store written against the contract before list_tasks took a phase."""

    async def list_tasks(  # type: ignore[override]
        self,
        status: TaskStatus | list[TaskStatus] | None = None,
        workflow_name: str | None = None,
        limit: int = 100,
        offset: int = 0,
        oldest_first: bool = False,
        priority_first: bool = False,
    ) -> list[Task]:
        return await super().list_tasks(
            status, workflow_name, limit, offset, oldest_first, priority_first
        )


def test_a_store_that_cannot_list_by_phase_says_so() -> None:
    asyncio.run(_cannot_list_by_phase())


async def _cannot_list_by_phase() -> None:
    engine = ECSWorkflowEngine(_ListsWithoutPhases(), load_plugins=False)
    engine.register_workflow("w", [Phase("a")])
    try:
        await engine.submit_task({}, workflow_name="w", classification="a")
        assert len(await engine.list_tasks(summary=True)) == 1  # without a phase, it lists
        with pytest.raises(StoreError) as caught:
            await engine.list_tasks(phase="a")
        assert str(caught.value) == (
            "the store _ListsWithoutPhases cannot list tasks by phase: its list_tasks() "
            "takes no 'phase' (see wfcore.Store.list_tasks)"
        )
    finally:
        await engine.aclose()


def test_retry_tasks_of_one_phase(tmp_path: Path) -> None:
    asyncio.run(_retries_one_phase(f"sqlite://{tmp_path / 'wfe.db'}"))


async def _retries_one_phase(url: str) -> None:
    engine = ECSWorkflowEngine(url, load_plugins=False)

    async def down(task: Task) -> None:
        raise ConnectionError("the ledger is down")

    engine.register_handler("a", down)
    engine.register_handler("b", down)
    engine.register_workflow("w", [Phase("a", assigned_to="functional"), Phase("b")])
    try:
        ids = [
            (await engine.submit_task({}, workflow_name="w", classification=phase)).id
            for phase in ("a", "b", "b")
        ]
        await engine.run_until_idle()
        assert await engine.retry_tasks(phase="b", dry_run=True) == [ids[2], ids[1]]
        assert await engine.retry_tasks(phase="nowhere") == []
        assert await engine.retry_tasks(phase="b", workflow_name="w") == [ids[2], ids[1]]
        statuses = {task.id: task.status for task in await engine.list_tasks()}
        assert statuses == {
            ids[0]: TaskStatus.FAILED,
            ids[1]: TaskStatus.PENDING,
            ids[2]: TaskStatus.PENDING,
        }
        with pytest.raises(TypeError, match="phase must be a name or None"):
            await engine.retry_tasks(phase=["b"])  # type: ignore[arg-type]
    finally:
        await engine.aclose()

"""The built-in stores used directly, as a program or a store plugin's author uses
them: a negative ``limit`` or ``offset`` means none, alike on both."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from wfcore import MemoryStore, SQLiteStore, Store, Task, TaskStatus
from wfcore.testing import run_sync


@pytest.fixture(params=["sqlite", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "sqlite":
        return SQLiteStore(tmp_path / "wfe.db")
    return MemoryStore()


def test_a_negative_limit_takes_nothing(store: Store):
    """On SQLite a negative LIMIT is no limit: claim(limit=-1) leased every ready
    task to one owner, and delete_finished deleted every finished one."""

    async def scenario() -> None:
        await store.open()
        try:
            await store.outbox_register("results")
            for i in range(3):
                await store.insert_task(Task(data=i, workflow_name="w", id=f"ready-{i}"))
            done, _ = await store.insert_task(Task(data=0, workflow_name="w", id="done"))
            done.status = TaskStatus.COMPLETED  # finished by a write: the outbox has it
            assert await store.update_task(done)
            later = time.time() + 60

            assert await store.claim("me", -1, 30) == []
            assert await store.list_tasks(limit=-1) == []
            assert await store.outbox_pending("results", limit=-1) == []
            assert await store.delete_finished(later, [TaskStatus.COMPLETED], limit=-1) == []
            # A negative offset is no offset.
            newest = [t.id for t in await store.list_tasks(limit=2, offset=-5)]
            assert newest == ["done", "ready-2"]

            assert [t.id for t in await store.outbox_pending("results", limit=10)] == ["done"]
            counts = await store.count_tasks()
            assert counts == {TaskStatus.PENDING: 3, TaskStatus.COMPLETED: 1}
            # The ready tasks are still there for a claim that asks for them.
            assert len(await store.claim("me", 10, 30)) == 3
        finally:
            await store.close()

    run_sync(scenario())

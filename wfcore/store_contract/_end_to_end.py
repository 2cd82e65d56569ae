"""The store contract's tests: the engine on it."""

from __future__ import annotations

import asyncio

from ..model import Phase, Task, TaskStatus
from ._support import (
    _ContractBase,
)


class _EndToEnd(_ContractBase):
    def test_an_engine_runs_workflows_on_it(self, store_url: str) -> None:
        """Tasks through a 2-phase workflow with a person in it, end to end."""
        engine = self.make_engine(store_url)

        async def double(task: Task) -> None:
            task.output = task.data["n"] * 2

        engine.register_handler("double", double)
        engine.register_workflow(
            "flow", [Phase("double", assigned_to="functional"), Phase("check", assigned_to="human")]
        )

        async def scenario() -> list[Task | None]:
            try:
                ids = [(await engine.submit_task({"n": n}, "flow")).id for n in range(20)]
                await engine.run_until_idle()
                for task_id in ids:
                    waiting = await engine.get_task(task_id)
                    assert waiting is not None
                    assert waiting.status is TaskStatus.WAITING_HUMAN, waiting.error
                    await engine.resume(task_id, output="ok")
                await engine.run_until_idle()
                return [await engine.get_task(task_id) for task_id in ids]
            finally:
                await engine.aclose()

        done = asyncio.run(asyncio.wait_for(scenario(), self.timeout))
        statuses = [t and t.status.value for t in done]
        assert statuses == ["completed"] * 20, (
            f"tasks run through a workflow by an engine on the store ended {statuses}"
        )
        assert [t and t.outputs for t in done] == [
            {"double": n * 2, "check": "ok"} for n in range(20)
        ], "tasks run by an engine on the store did not keep each phase's output"

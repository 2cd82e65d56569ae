"""The store contract's tests: workflows."""

from __future__ import annotations

from typing import Any

from ..model import Phase, WorkflowSpec
from ._support import (
    _ContractBase,
    _with_store,
)


class _Workflows(_ContractBase):
    @_with_store
    async def test_workflows_are_stored_and_the_first_of_a_name_wins(self, store: Any) -> None:
        """save_workflow replaces; add_workflow keeps the one stored first. Every
        field of the workflow and its phases comes back as saved."""
        # The engine that opened the store saved the workflows its plugins contribute
        # (a store plugin may bring workflows too): they are not this test's.
        contributed = {spec.name for spec in await store.load_workflows()}
        first = WorkflowSpec("flow", [Phase("a"), Phase("b", assigned_to="human")])
        await store.save_workflow(first)
        kept = await store.add_workflow(WorkflowSpec("flow", [Phase("other")]))
        assert kept == first, (
            f"add_workflow of a name stored already returned {kept}: it keeps and returns "
            "the workflow stored first under the name"
        )
        replaced = WorkflowSpec(
            "flow",
            [
                Phase(
                    "c",
                    next_classifications=["d", "e"],
                    assigned_to="human",
                    instructions="Check it",
                    input_schema={"type": "object", "required": ["ok"]},
                    timeout=30,
                    on_timeout={"goto": "e"},
                ),
                Phase(
                    "d",
                    command=["echo", "hi"],
                    max_attempts=3,
                    max_concurrency=2,
                    permanent_exit_codes=[2, 65],
                ),
                Phase("e", assigned_to="agentic", timeout=5.5, on_timeout="fail"),
            ],
            description="A flow with every phase field set",
            start_phases=["c", "d"],
        )
        await store.save_workflow(replaced)
        await store.save_workflow(WorkflowSpec("another", [Phase("x")]))
        stored = {
            spec.name: spec for spec in await store.load_workflows() if spec.name not in contributed
        }
        assert stored == {"flow": replaced, "another": WorkflowSpec("another", [Phase("x")])}, (
            f"load_workflows() gave {stored}, not the workflows as last saved, every field "
            "of each phase kept (wfcore.wire.workflow_to_dict and workflow_from_dict "
            "round-trip them)"
        )

    @_with_store
    async def test_one_workflow_is_read_by_its_name(self, store: Any) -> None:
        """load_workflow gives the workflow stored under a name, as last saved, and
        None for a name never stored."""
        first = WorkflowSpec("flow", [Phase("a")])
        await store.save_workflow(first)
        await store.save_workflow(WorkflowSpec("another", [Phase("x")]))
        got = await store.load_workflow("flow")
        assert got == first, f"load_workflow('flow') gave {got}, not the one saved: {first}"
        replaced = WorkflowSpec("flow", [Phase("b", assigned_to="human")])
        await store.save_workflow(replaced)
        got = await store.load_workflow("flow")
        assert got == replaced, (
            f"load_workflow('flow') gave {got} after save_workflow replaced it with {replaced}"
        )
        got = await store.load_workflow("no-such-flow")
        assert got is None, f"load_workflow of a name never saved gave {got}, not None"

"""A third-party wfcore plugin used by the tests: an agent adapter, a handler, a workflow."""

from __future__ import annotations

from typing import Any

from wfcore import ECSWorkflowEngine, Phase, Task, TaskType, hookimpl


class ShoutingAgent:
    """An agent adapter that answers by shouting the previous phase's output."""

    async def run(self, task: Task, phase: Phase, engine: ECSWorkflowEngine) -> None:
        task.output = str(task.outputs.get("prepare")).upper()


async def prepare(task: Task) -> None:
    task.output = f"prepared {task.data['text']}"


@hookimpl
def wfe_register_adapters(register: Any) -> None:
    register(TaskType.AGENTIC, ShoutingAgent())


@hookimpl
def wfe_register_handlers(register: Any) -> None:
    register("prepare", prepare)


@hookimpl
def wfe_register_workflows(register: Any) -> None:
    register("plugin-flow", [Phase("prepare", assigned_to="functional"), Phase("speak")])

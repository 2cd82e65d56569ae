"""An app for the CLI tests: a functional phase, then a human one with an input schema."""

import os
from pathlib import Path

from wfcore import ECSWorkflowEngine, Phase

engine = ECSWorkflowEngine(shutdown_timeout=0.5, poll_interval=0.05)


async def double(task):
    gate = os.environ.get("CLI_APP_GATE")
    if gate and task.data.get("wait"):
        # Block until the test creates the gate file: the phase is "running".
        import asyncio

        Path(gate + ".running").write_text(task.id)
        Path(f"{gate}.pid.{task.id}").write_text(str(os.getpid()))
        while not Path(gate).exists():
            await asyncio.sleep(0.02)
    task.output = {"n": task.data["n"] * 2}


engine.register_handler("double", double)
engine.register_workflow(
    "review",
    [
        Phase("double", assigned_to="functional"),
        Phase(
            "approve",
            assigned_to="human",
            instructions="Approve the doubled number?",
            input_schema={
                "type": "object",
                "required": ["ok"],
                "properties": {"ok": {"type": "boolean"}},
            },
        ),
    ],
)


def make_engine():
    """A factory, for `wfe worker tests.cli_apps.review_app:make_engine`-style use."""
    return engine

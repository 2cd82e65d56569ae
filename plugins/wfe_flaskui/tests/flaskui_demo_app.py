"""A demo wfcore app for the dashboard tests: a few workflows and their handlers."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wfcore import ECSWorkflowEngine, Phase, Task

APPROVAL_SCHEMA = {
    "type": "object",
    "properties": {
        "decision": {"type": "string", "enum": ["ship", "hold"], "title": "Decision"},
        "score": {"type": "integer", "minimum": 1, "maximum": 5, "description": "1 (poor) to 5"},
        "urgent": {"type": "boolean"},
        "comment": {"type": "string", "maxLength": 2000},
        "tags": {"type": "array", "items": {"type": "string", "enum": ["docs", "code", "ops"]}},
    },
    "required": ["decision", "score"],
}

#: Both phases of the sign_off workflow ask the same question of different people.
SIGN_OFF_SCHEMA = {
    "type": "object",
    "properties": {"approved": {"type": "boolean"}, "note": {"type": "string"}},
}

_failures: set[str] = set()


async def double(task: Task) -> None:
    task.output = {"n": task.data["n"] * 2}


async def report(engine: ECSWorkflowEngine, task: Task) -> None:
    n = task.outputs["double"]["n"]
    await engine.add_artifact_text(task, "report.txt", f"The answer is {n}.\n<b>not bold</b>\n")
    await engine.add_artifact_bytes(task, "blob.bin", bytes(range(256)))
    task.output = f"reported {n}"


async def draft(task: Task) -> None:
    task.output = {"text": f"Draft about {task.data.get('topic', 'nothing')}"}


async def publish(task: Task) -> None:
    task.output = {"published": task.outputs["approve"]["decision"] == "ship"}


async def flaky(task: Task) -> None:
    # Fails the first time each task runs in this process; a retry succeeds.
    if task.id not in _failures:
        _failures.add(task.id)
        raise RuntimeError("the flaky service is down")
    task.output = "worked on retry"


async def gate(task: Task) -> None:
    # Holds the phase until a test opens the gate by creating the file.
    path = Path(task.data["gate"])
    deadline = time.monotonic() + 60
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"nobody created {path}")
        await asyncio.sleep(0.02)
    task.output = {"opened": path.read_text()}


def make_engine(plugins: Sequence[Any] = ()) -> ECSWorkflowEngine:
    """The demo engine (on WFE_STORE, or whatever store the caller gives)."""
    engine = ECSWorkflowEngine(
        store=os.environ.get("WFE_STORE"),
        load_plugins=False,
        plugins=plugins,
        poll_interval=0.05,
        retry_delay=0.05,
        shutdown_timeout=2.0,
    )
    engine.register_handler("double", double)
    engine.register_handler("report", lambda task: report(engine, task))
    engine.register_handler("draft", draft)
    engine.register_handler("publish", publish)
    engine.register_handler("flaky", flaky)
    engine.register_handler("gate", gate)
    engine.register_handler("revise", lambda task: setattr(task, "output", "revised"))
    # The branching workflow is there to be drawn; handlers for the phases a worker
    # would run keep it from warning, as it starts, that nothing can run them.
    for name in ("triage", "fix", "reject", "done"):
        engine.register_handler(name, lambda task: setattr(task, "output", None))
    engine.register_workflow(
        "numbers",
        [
            Phase("double", assigned_to="functional"),
            Phase("report", assigned_to="agentic"),
        ],
        description="Doubles a number and writes a report.",
    )
    engine.register_workflow(
        "review",
        [
            Phase("draft", assigned_to="functional"),
            Phase(
                "approve",
                assigned_to="human",
                instructions="Read the draft and decide whether to ship it.",
                input_schema=APPROVAL_SCHEMA,
                timeout=3600,
            ),
            Phase("publish", assigned_to="functional"),
        ],
    )
    engine.register_workflow(
        "question",
        [Phase("ask", assigned_to="human", instructions="Answer in your own words.")],
    )
    engine.register_workflow(
        "sign_off",
        [
            Phase(
                "legal",
                assigned_to="human",
                instructions="Legal: approve?",
                input_schema=SIGN_OFF_SCHEMA,
            ),
            Phase(
                "finance",
                assigned_to="human",
                instructions="Finance: approve?",
                input_schema=SIGN_OFF_SCHEMA,
            ),
        ],
    )
    # A question asked again after each revision: review -> revise -> review ...
    engine.register_workflow(
        "rounds",
        [
            Phase(
                "review",
                assigned_to="human",
                instructions="Review this revision.",
                input_schema=SIGN_OFF_SCHEMA,
                next_classifications=["revise"],
            ),
            Phase("revise", assigned_to="functional", next_classifications=["review"]),
        ],
    )
    engine.register_workflow("flaky", [Phase("flaky", assigned_to="functional")])
    engine.register_workflow("gated", [Phase("gate", assigned_to="functional")])
    engine.register_workflow(
        "branching",
        [
            Phase("triage", assigned_to="agentic", next_classifications=["fix", "reject"]),
            Phase("fix", assigned_to="functional", next_classifications=["verify"]),
            Phase("reject", next_classifications=[]),
            Phase(
                "verify",
                assigned_to="human",
                next_classifications=["fix", "done"],
                timeout=60,
                on_timeout={"goto": "done"},
            ),
            Phase("done", assigned_to="functional"),
        ],
    )
    return engine

"""A document-review workflow that uses all three task types.

1. ``extract`` (functional, a subprocess): counts the words of the document and
   writes ``stats.json`` as an artifact.
2. ``draft`` (agentic): drafts a summary from the earlier output. Without an
   LLM configured, a plain handler plays the agent; with wfe_openai installed and
   ``WFE_AGENT=openai`` set, a model does.
3. ``approve`` (human): a person approves or rejects the draft; the answer is
   checked against a JSON Schema. Without an answer within a day, the task fails.
4. ``publish`` (functional, a handler): records the outcome and writes
   ``summary.md``.

Run a worker for it with ``wfe worker examples.demo_app:engine``.
"""

from __future__ import annotations

import sys

from wfcore import ECSWorkflowEngine, Phase, Task

engine = ECSWorkflowEngine()

_COUNT_WORDS = (
    "import json, sys, pathlib\n"
    "task = json.load(sys.stdin)\n"
    "words = task['data']['text'].split()\n"
    "stats = {'words': len(words), 'longest': max(words, key=len) if words else None}\n"
    "pathlib.Path('out/stats.json').write_text(json.dumps(stats))\n"
    "print(json.dumps(stats))\n"
)


async def draft(task: Task) -> None:
    stats = task.outputs["extract"]
    task.output = (
        f"{task.data['title']!r}: {stats['words']} words; its longest word is {stats['longest']!r}."
    )


async def publish(task: Task) -> None:
    decision = task.outputs["approve"]
    verdict = "approved" if decision["approved"] else "rejected"
    summary = f"# {task.data['title']}\n\n{task.outputs['draft']}\n\nReview: {verdict}"
    if decision.get("comment"):
        summary += f" ({decision['comment']})"
    await engine.add_artifact_text(task, "summary.md", summary + "\n")
    task.output = {"published": decision["approved"]}


engine.register_handler("draft", draft)
engine.register_handler("publish", publish)
engine.register_workflow(
    "review",
    [
        Phase("extract", assigned_to="functional", command=[sys.executable, "-c", _COUNT_WORDS]),
        Phase("draft", assigned_to="agentic"),
        Phase(
            "approve",
            assigned_to="human",
            instructions="Read the draft summary and approve or reject it.",
            input_schema={
                "type": "object",
                "properties": {
                    "approved": {"type": "boolean"},
                    "comment": {"type": "string"},
                },
                "required": ["approved"],
            },
            timeout=24 * 3600,
        ),
        Phase("publish", assigned_to="functional"),
    ],
)

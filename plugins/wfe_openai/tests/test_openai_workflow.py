"""A whole workflow: a subprocess phase, then an agent phase with a tool, then a person."""

from __future__ import annotations

import json
import sys
import textwrap
from typing import Any

from wfe_openai import OpenAIAgentAdapter

from wfcore import ECSWorkflowEngine, Phase, Task, TaskStatus, TaskType

EXTRACT = textwrap.dedent(
    """
    import json, sys
    task = json.load(sys.stdin)
    text = task["data"]["text"]
    with open("out/report.txt", "w") as fh:
        fh.write("REPORT\\n" + text.upper())
    print(json.dumps({"words": len(text.split())}))
    """
)


async def read_file(name: str, task: Task, engine: ECSWorkflowEngine) -> str:
    """Read one of the task's files.

    Args:
        name: the file name, as listed in the task.
    """
    return (await engine.read_artifact(task, name)).decode()


def test_functional_then_agent_then_human(openai_server, wfe_engine, wfe_run):
    openai_server.tool_calls(("read_file", {"name": "report.txt"}))
    openai_server.json_reply({"verdict": "publish", "reason": "short and clear"})
    wfe_engine.register_adapter(
        TaskType.AGENTIC,
        OpenAIAgentAdapter(
            model="gpt-4o",
            tools=[read_file],
            phase_options={"review": {"response_format": {"type": "json_object"}}},
        ),
    )
    wfe_engine.register_workflow(
        "publish",
        [
            Phase("extract", assigned_to="functional", command=[sys.executable, "-c", EXTRACT]),
            Phase(
                "review",
                assigned_to="agentic",
                instructions="Review the report. Answer with JSON: verdict, reason.",
            ),
            Phase(
                "approve",
                assigned_to="human",
                instructions="Publish the report?",
                input_schema={
                    "type": "object",
                    "properties": {"approved": {"type": "boolean"}},
                    "required": ["approved"],
                },
            ),
        ],
    )

    async def scenario() -> tuple[Any, Any]:
        task = await wfe_engine.submit_task({"text": "hello small world"}, "publish")
        await wfe_engine.run_until_idle()
        waiting = await wfe_engine.get_task(task.id)
        await wfe_engine.resume(task.id, {"approved": True})
        await wfe_engine.run_until_idle()
        return waiting, await wfe_engine.get_task(task.id)

    waiting, done = wfe_run(scenario())

    # The agent phase ran between the two and the task now waits for the person.
    assert waiting.status is TaskStatus.WAITING_HUMAN, waiting.error
    assert waiting.classification == "approve"
    assert waiting.waiting_reason == "Publish the report?"
    assert waiting.outputs["extract"] == {"words": 3}
    assert waiting.outputs["review"] == {"verdict": "publish", "reason": "short and clear"}
    # What the model was given: the earlier output and the file, then the tool result.
    first, second = openai_server.requests
    user = first["body"]["messages"][1]["content"]
    assert '"words": 3' in user
    assert "### report.txt (text/plain, 24 bytes, from phase extract)" in user
    assert "HELLO SMALL WORLD" in user
    assert first["body"]["messages"][0]["content"] == (
        "Review the report. Answer with JSON: verdict, reason."
    )
    assert second["body"]["response_format"] == {"type": "json_object"}
    assert second["body"]["messages"][-1]["content"] == "REPORT\nHELLO SMALL WORLD"
    # The person approved; the task completed with every phase's output.
    assert done.status is TaskStatus.COMPLETED, done.error
    assert done.outputs == {
        "extract": {"words": 3},
        "review": {"verdict": "publish", "reason": "short and clear"},
        "approve": {"approved": True},
    }
    events = [e["event"] for e in done.history]
    assert events.index("agent_tool_call") < events.index("suspended") < events.index("completed")
    assert json.dumps(done.context)  # the context stays plain JSON


def test_an_agent_sent_back_by_a_review_sees_its_previous_output(
    openai_server, wfe_engine, wfe_run
):
    openai_server.reply("A long first draft, far too long for anyone to read.")
    openai_server.reply("Short draft.")
    rounds: list[str] = []

    def review(task: Task) -> None:
        rounds.append(task.outputs["draft"])
        if len(rounds) == 1:
            task.output = {"feedback": "shorter please"}
            task.next_classification = "draft"
        else:
            task.output = {"feedback": "good"}
            task.next_classification = "publish"

    wfe_engine.register_handler("review", review)
    wfe_engine.register_handler("publish", lambda task: None)
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter())
    wfe_engine.register_workflow(
        "write",
        [
            Phase("draft", assigned_to="agentic", instructions="Write the text."),
            Phase("review", assigned_to="functional", next_classifications=["draft", "publish"]),
            Phase("publish", assigned_to="functional"),
        ],
    )

    async def scenario() -> Any:
        task = await wfe_engine.submit_task({"topic": "wfcore"}, "write")
        await wfe_engine.run_until_idle()
        return await wfe_engine.get_task(task.id)

    done = wfe_run(scenario())

    assert done.status is TaskStatus.COMPLETED, done.error
    assert rounds == ["A long first draft, far too long for anyone to read.", "Short draft."]
    first, second = (r["body"]["messages"][1]["content"] for r in openai_server.requests)
    assert "previous output" not in first
    assert "## Outputs of earlier phases\n### review\n" in second
    assert '"feedback": "shorter please"' in second
    assert (
        "## Your previous output for this phase\nPhase 'draft' ran before in this task; "
        "this is what it produced then.\n```\nA long first draft, far too long for anyone "
        "to read.\n```"
    ) in second

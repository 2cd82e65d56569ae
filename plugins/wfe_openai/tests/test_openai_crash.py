"""A worker killed mid-conversation: the next one goes on from the last round of tool results.

Real ``wfe worker`` processes on one SQLite file, the first killed with SIGKILL while
it waits for the model, against the scripted OpenAI-compatible server.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

from wfe_openai import OpenAIAgentAdapter

from wfcore import Phase, Task, TaskStatus, TaskType

APP = textwrap.dedent(
    """
    import os

    from wfcore import ECSWorkflowEngine, Phase, Task, TaskType
    from wfe_openai import OpenAIAgentAdapter


    def charge(amount: int, task: Task) -> str:
        \"\"\"Charge the customer's card (a side effect that must not happen twice).\"\"\"
        with open(os.environ["CHARGES"], "a") as fh:
            fh.write(f"{task.id} {amount}\\n")
        return f"charged {amount}"


    engine = ECSWorkflowEngine()
    engine.register_adapter("agentic", OpenAIAgentAdapter(model="m", tools=[charge]))
    engine.register_workflow("pay", [Phase("pay", assigned_to="agentic")])
    """
)


def _worker(tmp_path: Path, store_url: str, url: str, *options: str) -> subprocess.Popen[str]:
    wfe = shutil.which("wfe")
    command = [wfe] if wfe else [sys.executable, "-m", "wfcore.cli"]
    env = dict(
        os.environ,
        WFE_STORE=store_url,
        WFE_LOAD_PLUGINS="",
        PYTHONPATH=str(tmp_path),
        OPENAI_BASE_URL=url,
        CHARGES=str(tmp_path / "charges.log"),
    )
    env.pop("WFE_AGENT", None)
    return subprocess.Popen(
        [*command, "worker", "crashapp:engine", "--quiet", *options],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_killed_worker_leaves_a_conversation_the_next_one_continues(
    openai_server, tmp_path: Path, wfe_store_url: str, wfe_engine_factory, wfe_run
):
    (tmp_path / "crashapp.py").write_text(APP)
    client = wfe_engine_factory()
    client.register_workflow("pay", [Phase("pay", assigned_to="agentic")])
    task_id = wfe_run(client.submit_task({"order": "A-1"}, "pay")).id

    openai_server.tool_calls(("charge", {"amount": 10}))
    openai_server.tool_calls(("charge", {"amount": 20}))
    third_call = threading.Event()
    released = threading.Event()

    def hang(request: dict[str, Any]) -> Any:
        third_call.set()
        released.wait(60)  # the worker is killed meanwhile
        return 503, {"Content-Type": "text/plain"}, b"too late"

    openai_server.push(hang)
    openai_server.reply("Charged 30 in all.")

    first = _worker(tmp_path, wfe_store_url, openai_server.base_url)
    try:
        # Two rounds of tools ran and were checkpointed before the third call left.
        assert third_call.wait(60), first.stderr.read() if first.poll() is not None else ""
        first.send_signal(signal.SIGKILL)
        assert first.wait(10) == -signal.SIGKILL
    finally:
        released.set()
        if first.poll() is None:
            first.kill()
            first.wait(10)
    assert wfe_run(client.get_task(task_id)).status is TaskStatus.IN_PROGRESS

    second = _worker(tmp_path, wfe_store_url, openai_server.base_url, "--until-idle")
    _, err = second.communicate(timeout=60)
    assert second.returncode == 0, err

    done = wfe_run(client.get_task(task_id))
    assert done.status is TaskStatus.COMPLETED, done.error
    assert done.output == "Charged 30 in all."
    # Each charge happened once: the second worker ran no tool again.
    charges = (tmp_path / "charges.log").read_text().splitlines()
    assert charges == [f"{task_id} 10", f"{task_id} 20"]
    # It sent the conversation the dead worker had reached, tool results and all.
    assert len(openai_server.requests) == 4
    assert openai_server.messages(3) == openai_server.messages(2)
    assert [m["role"] for m in openai_server.messages(3)] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
        "tool",
    ]
    # The record holds both tool calls, once each, and the calls that were answered.
    events = [e["event"] for e in done.history]
    assert events.count("agent_tool_call") == 2
    assert events.count("taken_over") == 1
    [continued] = [e for e in done.history if e["event"] == "agent_continued"]
    assert continued["steps"] == 2
    calls = done.context["openai"]["calls"]
    assert [(c["attempt"], c["step"]) for c in calls] == [(1, 1), (1, 2), (1, 3)]
    assert done.context["openai"]["usage"]["calls"] == 3
    assert "progress" not in done.context["openai"]


def test_a_failed_attempt_starts_again_from_the_opening_messages(
    openai_server, wfe_engine, wfe_run, tmp_path: Path
):
    """A checkpointed conversation is for a worker that died, not for an attempt that
    failed: that one is tried again from its start, as documented."""
    charged: list[int] = []

    def charge(amount: int, task: Task) -> str:
        """Charge the card."""
        charged.append(amount)
        return f"charged {amount}"

    openai_server.tool_calls(("charge", {"amount": 10}))
    openai_server.error(400, "context length exceeded")
    openai_server.tool_calls(("charge", {"amount": 10}))
    openai_server.reply("Charged 10.")
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter(tools=[charge]))
    wfe_engine.register_workflow("pay", [Phase("pay", assigned_to="agentic", max_attempts=2)])

    async def scenario() -> Any:
        task = await wfe_engine.submit_task({}, "pay")
        await wfe_engine.run_until_idle()
        return await wfe_engine.get_task(task.id)

    done = wfe_run(scenario())

    assert done.status is TaskStatus.COMPLETED, done.error
    assert openai_server.messages(2) == openai_server.messages(0)
    assert charged == [10, 10]
    assert not [e for e in done.history if e["event"] == "agent_continued"]
    assert [(c["attempt"], c["step"]) for c in done.context["openai"]["calls"]] == [
        (1, 1),
        (2, 1),
        (2, 2),
    ]


def test_an_attempt_that_timed_out_starts_again_from_the_opening_messages(
    openai_server, wfe_engine, wfe_run
):
    """The phase's timeout cancels the run, which cannot clear what it checkpointed:
    the history tells the next attempt that the attempt ended."""
    import openai  # noqa: F401 - imported now: on a busy machine importing it takes a second

    charged: list[int] = []

    def charge(amount: int) -> str:
        """Charge the card."""
        charged.append(amount)
        return f"charged {amount}"

    openai_server.tool_calls(("charge", {"amount": 10}))
    openai_server.hang()
    openai_server.tool_calls(("charge", {"amount": 10}))
    openai_server.reply("Charged 10.")
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter(tools=[charge]))
    phase = Phase("pay", assigned_to="agentic", max_attempts=2, timeout=3)
    wfe_engine.register_workflow("pay", [phase])

    async def scenario() -> Any:
        task = await wfe_engine.submit_task({}, "pay")
        await wfe_engine.run_until_idle()
        return await wfe_engine.get_task(task.id)

    done = wfe_run(scenario())

    assert done.status is TaskStatus.COMPLETED, done.error
    [failed] = [e["error"] for e in done.history if e["event"] == "attempt_failed"]
    assert failed == "TimeoutError: phase 'pay' timed out after 3s"
    assert openai_server.messages(2) == openai_server.messages(0)
    assert charged == [10, 10]
    assert not [e for e in done.history if e["event"] == "agent_continued"]

"""A run interrupted mid-conversation: by a killed worker, the next one goes on from the
last round of tool results; by its phase's timeout or a cancel, it keeps the calls paid for.

Real ``wfe worker`` processes on one SQLite file, the first killed with SIGKILL while
it waits for the model or runs a tool, against the scripted OpenAI-compatible server.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

from wfe_openai import OpenAIAgentAdapter

from wfcore import Phase, Task, TaskStatus, TaskType

APP = textwrap.dedent(
    """
    import os
    import threading

    from wfcore import ECSWorkflowEngine, Phase, Task, TaskType
    from wfe_openai import OpenAIAgentAdapter


    def charge(amount: int, task: Task) -> str:
        \"\"\"Charge the customer's card (a side effect that must not happen twice).\"\"\"
        with open(os.environ["CHARGES"], "a") as fh:
            fh.write(f"{task.id} {amount}\\n")
        return f"charged {amount}"


    def ship(order: str) -> str:
        \"\"\"Ship the order; in a worker given SHIPPING, say so and never end.\"\"\"
        if os.environ.get("SHIPPING"):
            with open(os.environ["SHIPPING"], "w") as fh:
                fh.write(order)
            threading.Event().wait()
        return f"shipped {order}"


    engine = ECSWorkflowEngine()
    engine.register_adapter("agentic", OpenAIAgentAdapter(model="m", tools=[charge, ship]))
    engine.register_workflow("pay", [Phase("pay", assigned_to="agentic")])
    """
)


def _worker(
    tmp_path: Path, store_url: str, url: str, *options: str, **variables: str
) -> subprocess.Popen[str]:
    wfe = shutil.which("wfe")
    command = [wfe] if wfe else [sys.executable, "-m", "wfcore.cli"]
    env = dict(
        os.environ,
        WFE_STORE=store_url,
        WFE_LOAD_PLUGINS="",
        PYTHONPATH=str(tmp_path),
        OPENAI_BASE_URL=url,
        CHARGES=str(tmp_path / "charges.log"),
        **variables,
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


async def run_to_idle(engine: Any, workflow: str) -> Task:
    """Submit a task of ``workflow`` (data ``{}``), run the engine until it is idle,
    and return the task as stored."""
    task = await engine.submit_task({}, workflow)
    await engine.run_until_idle()
    return await engine.get_task(task.id)


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


def test_a_worker_killed_while_a_tool_runs_leaves_its_call_in_usage(
    openai_server, tmp_path: Path, wfe_store_url: str, wfe_engine_factory, wfe_run
):
    """The call that asked for the tool was paid for: it stays in usage, and the
    calls of the next worker are numbered on after it."""
    (tmp_path / "crashapp.py").write_text(APP)
    client = wfe_engine_factory()
    client.register_workflow("pay", [Phase("pay", assigned_to="agentic")])
    task_id = wfe_run(client.submit_task({"order": "A-1"}, "pay")).id

    openai_server.tool_calls(("charge", {"amount": 10}))
    openai_server.tool_calls(("ship", {"order": "A-1"}))
    openai_server.tool_calls(("ship", {"order": "A-1"}))
    openai_server.reply("Charged and shipped.")

    shipping = tmp_path / "shipping"
    first = _worker(tmp_path, wfe_store_url, openai_server.base_url, SHIPPING=str(shipping))
    try:
        deadline = time.monotonic() + 60
        while not shipping.exists():
            assert first.poll() is None, first.stderr.read() if first.stderr else ""
            assert time.monotonic() < deadline, "the first worker never ran the tool"
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        assert first.wait(10) == -signal.SIGKILL
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(10)

    second = _worker(tmp_path, wfe_store_url, openai_server.base_url, "--until-idle")
    _, err = second.communicate(timeout=60)
    assert second.returncode == 0, err

    done = wfe_run(client.get_task(task_id))
    assert done.status is TaskStatus.COMPLETED, done.error
    assert len(openai_server.requests) == 4
    # Went on from the round of the charge, which did not run again.
    assert openai_server.messages(2) == openai_server.messages(1)
    assert (tmp_path / "charges.log").read_text().splitlines() == [f"{task_id} 10"]
    calls = done.context["openai"]["calls"]
    assert [(c["attempt"], c["step"]) for c in calls] == [(1, 1), (1, 2), (1, 3), (1, 4)]
    assert done.context["openai"]["usage"]["calls"] == 4


def test_a_cancel_while_a_tool_runs_keeps_the_call_in_usage(openai_server, wfe_engine, wfe_run):
    openai_server.tool_calls(("wait", {}))

    async def scenario() -> Any:
        started = asyncio.Event()

        async def wait() -> str:
            """Wait for something that never comes."""
            started.set()
            await asyncio.Event().wait()
            return "never"

        wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter(tools=[wait]))
        wfe_engine.register_workflow("w", [Phase("p", assigned_to="agentic")])
        task = await wfe_engine.submit_task({}, "w")
        runner = asyncio.create_task(wfe_engine.run())
        await asyncio.wait_for(started.wait(), 30)
        await wfe_engine.cancel(task.id)
        wfe_engine.stop()
        await asyncio.wait_for(runner, 30)
        return await wfe_engine.get_task(task.id)

    cancelled = wfe_run(scenario())

    assert cancelled.status is TaskStatus.CANCELLED
    assert len(openai_server.requests) == 1
    assert [c["step"] for c in cancelled.context["openai"]["calls"]] == [1]
    assert cancelled.context["openai"]["usage"]["calls"] == 1


def test_a_call_of_an_attempt_ended_by_the_phase_timeout_stays_in_usage(
    openai_server, wfe_engine, wfe_run
):
    """The attempt times out after its last call, while the handler's parse of the
    reply runs: that call was paid for all the same."""
    import openai  # noqa: F401 - imported now: on a busy machine importing it takes a second

    openai_server.reply("slow")
    openai_server.reply("fast")

    async def parse(text: str) -> str:
        if text == "slow":
            await asyncio.Event().wait()  # until the phase's timeout cancels it
        return text

    def shape(task, request):
        request.parse = parse

    wfe_engine.register_handler("p", shape)
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter())
    phase = Phase("p", assigned_to="agentic", max_attempts=2, timeout=1)
    wfe_engine.register_workflow("w", [phase])

    done = wfe_run(run_to_idle(wfe_engine, "w"))

    assert done.status is TaskStatus.COMPLETED, done.error
    assert done.output == "fast"
    failed = [e["error"] for e in done.history if e["event"] == "attempt_failed"]
    assert failed == ["TimeoutError: phase 'p' timed out after 1s"]
    calls = done.context["openai"]["calls"]
    assert [(c["attempt"], c["step"]) for c in calls] == [(1, 1), (2, 1)]
    assert done.context["openai"]["usage"]["calls"] == 2


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

    done = wfe_run(run_to_idle(wfe_engine, "pay"))

    assert done.status is TaskStatus.COMPLETED, done.error
    assert openai_server.messages(2) == openai_server.messages(0)
    assert charged == [10, 10]
    assert not [e for e in done.history if e["event"] == "agent_continued"]
    assert [(c["attempt"], c["step"]) for c in done.context["openai"]["calls"]] == [
        (1, 1),
        (2, 1),
        (2, 2),
    ]


def test_a_failed_task_keeps_no_checkpointed_conversation(openai_server, wfe_engine, wfe_run):
    """The progress is for a worker taking over a run; wfcore stores a failed attempt
    as of its last checkpoint, which held it: a copy of the whole conversation."""

    def lookup(key: str) -> str:
        """Look a key up."""
        return "x" * 5000

    openai_server.tool_calls(("lookup", {"key": "a"}))
    openai_server.tool_calls(("lookup", {"key": "b"}))
    openai_server.error(400, "context length exceeded")
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter(tools=[lookup]))
    wfe_engine.register_workflow("look", [Phase("look", assigned_to="agentic", max_attempts=1)])

    done = wfe_run(run_to_idle(wfe_engine, "look"))

    assert done.status is TaskStatus.FAILED
    assert "context length exceeded" in done.error
    assert "progress" not in done.context["openai"]
    assert done.context["openai"]["usage"]["calls"] == 2


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

    done = wfe_run(run_to_idle(wfe_engine, "pay"))

    assert done.status is TaskStatus.COMPLETED, done.error
    [failed] = [e["error"] for e in done.history if e["event"] == "attempt_failed"]
    assert failed == "TimeoutError: phase 'pay' timed out after 3s"
    assert openai_server.messages(2) == openai_server.messages(0)
    assert charged == [10, 10]
    assert not [e for e in done.history if e["event"] == "agent_continued"]

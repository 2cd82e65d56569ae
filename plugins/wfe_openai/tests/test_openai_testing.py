"""wfe_openai.testing and the fake_openai fixture, used the way an app's tests use them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import wfe_openai.pytest_plugin
import wfe_openai.testing
from wfe_openai import OpenAIAgentAdapter
from wfe_openai.testing import FAKE_API_KEY, FakeOpenAI

from wfcore import ECSWorkflowEngine, Phase, Task, TaskStatus, TaskType


def lookup_order(order_id: str) -> dict[str, Any]:
    """Look up an order.

    Args:
        order_id: the order number, e.g. "A-1001".
    """
    return {"order_id": order_id, "status": "delivered", "days_since_delivery": 40}


REFUNDS = [
    Phase(
        "decide",
        assigned_to="agentic",
        instructions="Decide on the refund. Check the order with lookup_order.",
    )
]


def _decide_refund(engine: ECSWorkflowEngine, wfe_run: Any) -> Task:
    """Run a refund request for order A-1001 through ``REFUNDS`` until it ends."""
    engine.register_workflow("refunds", REFUNDS)

    async def scenario() -> Task:
        task = await engine.submit_task({"order_id": "A-1001"}, "refunds")
        await engine.run_until_idle()
        return await engine.wait_for_task(task.id)

    return wfe_run(scenario())


def test_the_model_calls_a_user_tool_then_replies(fake_openai, wfe_engine, wfe_run):
    [call_id] = fake_openai.tool_calls(("lookup_order", {"order_id": "A-1001"}))
    fake_openai.reply("No refund: delivered 40 days ago.")
    adapter = OpenAIAgentAdapter(
        model="gpt-4o-mini", tools=[lookup_order], base_url=fake_openai.base_url, api_key="test"
    )
    wfe_engine.register_adapter(TaskType.AGENTIC, adapter)
    done = _decide_refund(wfe_engine, wfe_run)

    assert done.status is TaskStatus.COMPLETED, done.error
    assert done.output == "No refund: delivered 40 days ago."
    # Two model calls: the tool call, then the answer after the tool's result.
    assert len(fake_openai.requests) == 2 and fake_openai.pending == 0
    first, second = fake_openai.requests
    assert first["path"] == "/v1/chat/completions"
    assert first["headers"]["authorization"] == "Bearer test"
    assert first["body"]["model"] == "gpt-4o-mini"
    tools = {t["function"]["name"]: t["function"] for t in first["body"]["tools"]}
    assert set(tools) == {"lookup_order", "ask_human"}
    assert tools["lookup_order"]["parameters"]["required"] == ["order_id"]
    assert [m["role"] for m in fake_openai.messages(0)] == ["system", "user"]
    assert "A-1001" in fake_openai.messages(0)[1]["content"]
    # The tool's result went back to the model as the answer to that call.
    assert [m["role"] for m in fake_openai.messages(1)] == ["system", "user", "assistant", "tool"]
    assert fake_openai.messages(1)[-1] == {
        "role": "tool",
        "tool_call_id": call_id,
        "content": json.dumps(lookup_order("A-1001")),
    }
    assert second["body"]["messages"][2]["tool_calls"][0]["id"] == call_id


def test_ask_human_then_resume(fake_openai, wfe_engine, wfe_run):
    call_id = fake_openai.ask_human("Delivered 40 days ago: refund anyway?")
    fake_openai.reply("Refunded as a goodwill gesture.")
    adapter = OpenAIAgentAdapter(
        tools=[lookup_order], base_url=fake_openai.base_url, api_key="test"
    )
    wfe_engine.register_adapter(TaskType.AGENTIC, adapter)
    wfe_engine.register_workflow("refunds", REFUNDS)

    async def until_waiting() -> Any:
        task = await wfe_engine.submit_task({"order_id": "A-1001"}, "refunds")
        await wfe_engine.run_until_idle()
        return await wfe_engine.wait_for_task(task.id, waiting=True)

    waiting = wfe_run(until_waiting())
    assert waiting.status is TaskStatus.WAITING_HUMAN, waiting.error
    assert waiting.waiting_reason == "Delivered 40 days ago: refund anyway?"
    assert len(fake_openai.requests) == 1

    async def answer() -> Any:
        await wfe_engine.resume(waiting.id, "Yes, refund it.")
        await wfe_engine.run_until_idle()
        return await wfe_engine.wait_for_task(waiting.id)

    done = wfe_run(answer())

    assert done.status is TaskStatus.COMPLETED, done.error
    assert done.output == "Refunded as a goodwill gesture."
    assert len(fake_openai.requests) == 2 and fake_openai.pending == 0
    # The person's answer reached the model as the result of its ask_human call.
    asked = fake_openai.messages(1)[-2]["tool_calls"][0]
    assert asked["id"] == call_id
    assert asked["function"]["name"] == "ask_human"
    assert json.loads(asked["function"]["arguments"]) == {
        "question": "Delivered 40 days ago: refund anyway?"
    }
    assert fake_openai.messages(1)[-1] == {
        "role": "tool",
        "tool_call_id": call_id,
        "content": "Yes, refund it.",
    }


def test_the_fixture_points_the_environment_at_the_server(fake_openai, wfe_engine, wfe_run):
    """An adapter built without base_url= talks to the fake, never to api.openai.com."""
    assert os.environ["OPENAI_BASE_URL"] == fake_openai.base_url
    assert os.environ["OPENAI_API_KEY"] == FAKE_API_KEY
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", fake_openai.base_url)
    fake_openai.json_reply({"refund": False})
    wfe_engine.register_adapter(
        TaskType.AGENTIC, OpenAIAgentAdapter(response_format={"type": "json_object"})
    )
    done = _decide_refund(wfe_engine, wfe_run)

    assert done.output == {"refund": False}, done.error
    assert fake_openai.requests[0]["headers"]["authorization"] == f"Bearer {FAKE_API_KEY}"


def test_a_request_with_no_reply_queued_fails_the_task_saying_so(fake_openai, wfe_engine, wfe_run):
    fake_openai.tool_calls(("lookup_order", {"order_id": "A-1001"}))  # and no reply after it
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter(tools=[lookup_order]))
    done = _decide_refund(wfe_engine, wfe_run)

    assert done.status is TaskStatus.FAILED
    assert "HTTP 418" in done.error
    assert "FakeOpenAI: no response queued for request 2" in done.error
    assert len(fake_openai.requests) == 2


def _post(url: str, body: dict[str, Any]) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url + "/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_the_context_manager_starts_and_stops_the_server():
    fake = FakeOpenAI()
    with pytest.raises(RuntimeError, match=r"not serving: use it as a context manager"):
        _ = fake.base_url

    with fake:
        url = fake.base_url
        fake.error(429, "Rate limit reached", retry_after="1")
        status, body = _post(url, {"model": "m", "messages": []})
        assert status == 429
        assert json.loads(body)["error"]["message"] == "Rate limit reached"

    assert fake.requests[0]["body"] == {"model": "m", "messages": []}
    with pytest.raises(urllib.error.URLError):
        _post(url, {"model": "m", "messages": []})
    fake.stop()  # idempotent
    with pytest.raises(RuntimeError, match="was stopped; start a new one"):
        fake.start()


def test_a_hung_request_is_answered_when_the_server_stops():
    fake = FakeOpenAI().start()
    fake.hang()
    answers: list[tuple[int, bytes]] = []
    client = threading.Thread(target=lambda: answers.append(_post(fake.base_url, {})))
    client.start()
    deadline = time.monotonic() + 30
    while not fake.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fake.requests, "the request never arrived"
    assert not answers  # still hanging

    fake.stop()
    client.join(30)

    assert answers == [(503, b"released as the server stopped")]


def test_a_server_stopped_mid_conversation_answers_no_more_requests(
    fake_openai, wfe_engine, wfe_run
):
    """The SDK keeps its connection open between calls: a stopped server must not
    answer on it, or a test of a server going away would see a reply instead."""

    def lookup_order(order_id: str) -> str:
        """Look up an order (and take the server down)."""
        fake_openai.stop()
        return "delivered"

    fake_openai.tool_calls(("lookup_order", {"order_id": "A-1001"}))
    fake_openai.reply("never sent")
    url = fake_openai.base_url
    adapter = OpenAIAgentAdapter(tools=[lookup_order], base_url=url, max_retries=0)
    wfe_engine.register_adapter(TaskType.AGENTIC, adapter)
    done = _decide_refund(wfe_engine, wfe_run)

    assert done.status is TaskStatus.FAILED
    assert done.error.startswith(f"AdapterError: cannot reach the chat completions server ({url}/)")
    assert len(fake_openai.requests) == 1
    assert fake_openai.pending == 1


def test_the_adapters_connections_close_as_each_event_loop_ends(fake_openai, wfe_engine, wfe_run):
    """Each wfe_run is an asyncio.run of its own: the client the adapter built for
    it is closed as it ends, without adapter.aclose(), so no connection (and no
    ResourceWarning) is left behind."""
    fake_openai.reply("first")
    fake_openai.reply("second")
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter())
    wfe_engine.register_workflow("refunds", REFUNDS)

    async def one() -> Task:
        task = await wfe_engine.submit_task({"order_id": "A-1001"}, "refunds")
        await wfe_engine.run_until_idle()
        assert fake_openai.open_connections == 1  # kept open between calls
        return await wfe_engine.wait_for_task(task.id)

    for expected in ("first", "second"):
        assert wfe_run(one()).output == expected
        deadline = time.monotonic() + 30
        while fake_openai.open_connections and time.monotonic() < deadline:
            time.sleep(0.01)
        assert fake_openai.open_connections == 0
    assert len(fake_openai.requests) == 2


@pytest.mark.parametrize(
    ("script", "error", "message"),
    [
        (lambda f: f.tool_calls(), ValueError, "at least one call"),
        (lambda f: f.tool_calls("add"), TypeError, r"a \(name, arguments\) pair"),
        (lambda f: f.error(200, "fine"), ValueError, "from 400 to 599, not 200; use raw"),
        (lambda f: f.reply({"refund": True}), TypeError, "not dict; use json_reply"),
        (lambda f: f.ask_human(" "), ValueError, "needs a question"),
        (lambda f: f.push("hello"), TypeError, r"a \(status, headers, body\) tuple"),
    ],
)
def test_a_script_that_cannot_be_served_is_refused_at_once(script, error, message):
    fake = FakeOpenAI()
    with pytest.raises(error, match=message):
        script(fake)
    assert fake.pending == 0


def _docstring_example(module: Any) -> str:
    """The code block after the first ``::`` of a module's docstring."""
    match = re.search(r"::\n\n(.*?)(?:\n(?=\S)|\Z)", module.__doc__, re.S)
    assert match, f"no example in {module.__name__}'s docstring"
    return textwrap.dedent(match.group(1))


def test_the_module_docstring_example_runs():
    namespace: dict[str, Any] = {}
    exec(_docstring_example(wfe_openai.testing), namespace)
    namespace["test_the_agent_adds"]()


PLUGIN_README = Path(__file__).resolve().parents[1] / "README.md"


def test_an_app_test_gets_the_fixture_from_the_installed_plugin(tmp_path: Path):
    """The fixture's examples (its docstring's, the plugin README's) as an app's test
    files in a project of its own: no conftest, only the installed package (pytest11)."""
    (tmp_path / "test_app.py").write_text(_docstring_example(wfe_openai.pytest_plugin))
    readme = re.search(r"```python\n(.*?)```", PLUGIN_README.read_text(), re.S)
    assert readme, "no example in the plugin's README"
    (tmp_path / "test_readme.py").write_text(readme.group(1))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "OPENAI_"))}

    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout

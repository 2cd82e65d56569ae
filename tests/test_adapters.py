"""Adapters: the built-in human, agentic and functional ones, and replacing them."""

from __future__ import annotations

from typing import Any

from core_util import events

from wfcore import (
    AdapterError,
    ECSWorkflowEngine,
    Phase,
    Task,
    TaskStatus,
    TaskType,
    hookimpl,
)


async def run_one(engine: ECSWorkflowEngine, data: Any = None, **submit: Any) -> Task:
    task = await engine.submit_task(data, "w", **submit)
    await engine.run_until_idle()
    return await engine.get_task(task.id)


def test_agentic_phase_runs_its_handler(make_engine, wfe_run):
    engine = make_engine()

    async def think(task: Task) -> None:
        task.output = {"answer": task.data["q"] * 2}

    engine.register_handler("think", think)
    engine.register_workflow("w", [Phase("think")])
    task = wfe_run(run_one(engine, {"q": 21}))
    assert task.status is TaskStatus.COMPLETED
    assert task.output == {"answer": 42}


def test_sync_handlers_work_too(make_engine, wfe_run):
    engine = make_engine()

    def plain(task: Task) -> None:
        task.output = "sync"

    engine.register_handler("p", plain)
    engine.register_workflow("w", [Phase("p", assigned_to="functional")])
    assert wfe_run(run_one(engine)).output == "sync"


def test_agentic_phase_without_handler_fails_with_a_clear_error(make_engine, wfe_run):
    engine = make_engine()
    engine.register_workflow("w", [Phase("think")])
    task = wfe_run(run_one(engine))
    assert task.status is TaskStatus.FAILED
    assert "think" in task.error
    assert "register_handler" in task.error
    assert "agent adapter" in task.error and "OpenAI" in task.error


def test_a_request_shaping_handler_without_an_agent_adapter_fails_saying_so(make_engine, wfe_run):
    """handler(task, request) shapes an agent adapter's request: the built-in adapter
    cannot call it, and says what to do rather than failing with a bare TypeError."""
    engine = make_engine()
    ran: list[str] = []

    async def analyze(task: Task, request: Any) -> None:
        ran.append(task.id)

    engine.register_handler("analyze", analyze)
    engine.register_workflow("w", [Phase("analyze", assigned_to="agentic")])
    task = wfe_run(run_one(engine))
    assert task.status is TaskStatus.FAILED
    assert task.error == (
        "AdapterError: the handler of agentic phase 'analyze' takes (task, request): it "
        "shapes the request of an agent adapter, and none is registered. Start the worker "
        "with WFE_AGENT=openai, or register one with engine.register_adapter('agentic', "
        "wfe_openai.OpenAIAgentAdapter(...))"
    )
    assert ran == []


def test_agentic_handlers_callable_with_the_task_alone_run(make_engine, wfe_run):
    """A second parameter with a default, *args, a bound method or a callable object
    taking the task: all plain handlers of the built-in adapter."""
    engine = make_engine()

    def defaulted(task: Task, request: Any = None) -> None:
        task.output = "defaulted"

    def star(task: Task, *rest: Any) -> None:
        task.output = "star"

    class Agent:
        def method(self, task: Task) -> None:
            task.output = "method"

        def __call__(self, task: Task) -> None:
            task.output = "object"

    handlers = {"a": defaulted, "b": star, "c": Agent().method, "d": Agent()}
    for name, handler in handlers.items():
        engine.register_handler(name, handler)
    engine.register_workflow(
        "w",
        [Phase(name, assigned_to="agentic") for name in handlers],
    )
    task = wfe_run(run_one(engine))
    assert task.status is TaskStatus.COMPLETED, task.error
    assert task.outputs == {"a": "defaulted", "b": "star", "c": "method", "d": "object"}


def test_functional_phase_without_handler_or_command_fails(make_engine, wfe_run):
    engine = make_engine()
    engine.register_workflow("w", [Phase("compute", assigned_to="functional")])
    task = wfe_run(run_one(engine))
    assert task.status is TaskStatus.FAILED
    assert "compute" in task.error and "command" in task.error


def test_human_phase_runs_its_handler_once_then_waits(make_engine, wfe_run):
    engine = make_engine()
    notified: list[str] = []
    after: list[Any] = []

    async def notify(task: Task) -> None:
        notified.append(task.id)
        task.context["notified"] = True

    async def use_answer(task: Task) -> None:
        after.append(task.outputs["approve"])
        task.output = "done"

    engine.register_handler("approve", notify)
    engine.register_handler("ship", use_answer)
    engine.register_workflow(
        "w", [Phase("approve", assigned_to="human", instructions="Approve?"), Phase("ship")]
    )

    async def scenario():
        waiting = await run_one(engine)
        resumed = await engine.resume(waiting.id, {"approved": True})
        await engine.run_until_idle()
        return waiting, resumed, await engine.get_task(waiting.id)

    waiting, resumed, done = wfe_run(scenario())
    assert waiting.status is TaskStatus.WAITING_HUMAN
    assert waiting.waiting_reason == "Approve?"
    assert waiting.context == {"notified": True}
    assert resumed.outputs["approve"] == {"approved": True}
    assert done.status is TaskStatus.COMPLETED
    assert done.output == "done"
    assert after == [{"approved": True}]
    assert len(notified) == 1  # resuming does not run the notify handler again


def test_human_phase_without_handler_just_waits(make_engine, wfe_run):
    engine = make_engine()
    engine.register_workflow("w", [Phase("review", instructions="Check the numbers")])

    async def scenario():
        waiting = await run_one(engine, assigned_to="human")
        await engine.resume(waiting.id, "ok")
        await engine.run_until_idle()
        return waiting, await engine.get_task(waiting.id)

    waiting, done = wfe_run(scenario())
    assert waiting.status is TaskStatus.WAITING_HUMAN
    assert waiting.waiting_reason == "Check the numbers"
    assert done.status is TaskStatus.COMPLETED
    assert done.output == "ok"


class EchoAdapter:
    """A custom adapter: answers every phase with a fixed tag."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.runs: list[str] = []

    async def run(self, task: Task, phase: Phase, engine: ECSWorkflowEngine) -> None:
        self.runs.append(phase.target_classification)
        task.output = {"by": self.tag, "phase": phase.target_classification}


def test_register_adapter_replaces_a_builtin(make_engine, wfe_run):
    engine = make_engine()
    by_enum = EchoAdapter("enum")
    engine.register_adapter(TaskType.FUNCTIONAL, by_enum)
    by_name = EchoAdapter("name")
    engine.register_adapter("agentic", by_name)
    assert engine.adapter_for("agentic") is by_name
    engine.register_workflow("w", [Phase("p"), Phase("q", assigned_to="functional")])
    task = wfe_run(run_one(engine))
    assert task.status is TaskStatus.COMPLETED
    assert task.outputs == {
        "p": {"by": "name", "phase": "p"},
        "q": {"by": "enum", "phase": "q"},
    }


def test_plugin_adapter_replaces_builtin_and_engine_registration_wins(make_engine, wfe_run):
    plugin_adapter = EchoAdapter("plugin")

    class AgentPlugin:
        @hookimpl
        def wfe_register_adapters(self, register):
            register("agentic", plugin_adapter)

    engine = make_engine(plugins=[AgentPlugin()])
    assert engine.adapter_for(TaskType.AGENTIC) is plugin_adapter
    engine.register_workflow("w", [Phase("p")])
    assert wfe_run(run_one(engine)).output == {"by": "plugin", "phase": "p"}

    other = make_engine(plugins=[AgentPlugin()])
    mine = EchoAdapter("mine")
    other.register_adapter("agentic", mine)
    other.register_workflow("w", [Phase("p")])
    assert wfe_run(run_one(other)).output == {"by": "mine", "phase": "p"}
    assert plugin_adapter.runs == ["p"]


class AskingAdapter:
    """An agent that asks a question, then continues its conversation on the reply."""

    def __init__(self) -> None:
        self.turns: list[Any] = []

    async def run(self, task: Task, phase: Phase, engine: ECSWorkflowEngine) -> None:
        self.turns.append(task.reply)
        history = task.context.setdefault("conversation", [])
        if task.reply is None:
            history.append("asked: which city?")
            engine.suspend(
                task, TaskStatus.WAITING_AGENT, reason="which city?", resume_in_phase=True
            )
            return
        history.append(f"heard: {task.reply}")
        task.output = {"city": task.reply, "turns": len(history)}


def test_resume_in_phase_runs_the_same_phase_again_with_the_reply(make_engine, wfe_run):
    engine = make_engine()
    agent = AskingAdapter()
    engine.register_adapter("agentic", agent)
    engine.register_workflow("w", [Phase("chat")])

    async def scenario():
        waiting = await run_one(engine)
        await engine.resume(waiting.id, "Lisbon")
        await engine.run_until_idle()
        return waiting, await engine.get_task(waiting.id)

    waiting, done = wfe_run(scenario())
    assert waiting.status is TaskStatus.WAITING_AGENT
    assert waiting.waiting_reason == "which city?"
    assert done.status is TaskStatus.COMPLETED
    assert agent.turns == [None, "Lisbon"]
    assert done.output == {"city": "Lisbon", "turns": 2}
    assert done.context["conversation"] == ["asked: which city?", "heard: Lisbon"]
    assert done.reply is None


def test_handlers_may_suspend_with_any_waiting_status(make_engine, wfe_run):
    engine = make_engine()

    async def wait_io(task: Task) -> None:
        engine.suspend(task, TaskStatus.WAITING_IO, reason="upload pending")

    async def wait_agent(task: Task) -> None:
        engine.suspend(task, "waiting_agent")

    engine.register_handler("io", wait_io)
    engine.register_handler("agent", wait_agent)
    engine.register_workflow("w", [Phase("io"), Phase("agent", assigned_to="functional")])

    async def scenario():
        first = await run_one(engine)
        await engine.resume(first.id, {"file": "x.csv"})
        await engine.run_until_idle()
        second = await engine.get_task(first.id)
        await engine.resume(first.id, 7)
        await engine.run_until_idle()
        return first, second, await engine.get_task(first.id)

    first, second, done = wfe_run(scenario())
    assert first.status is TaskStatus.WAITING_IO
    assert first.waiting_reason == "upload pending"
    assert second.status is TaskStatus.WAITING_AGENT
    assert second.classification == "agent"
    assert done.status is TaskStatus.COMPLETED
    assert done.outputs == {"io": {"file": "x.csv"}, "agent": 7}
    assert events(done).count("suspended") == 2
    assert events(done).count("resumed") == 2


def test_adapter_error_is_an_adapter_error(make_engine, wfe_run):
    engine = make_engine()
    engine.register_workflow("w", [Phase("think")])
    task = wfe_run(run_one(engine))
    assert task.error.startswith(AdapterError.__name__)


class PlainRunAdapter:
    """An adapter whose run is a plain function: it returns None, not an awaitable."""

    def run(self, task: Task, phase: Phase, engine: Any) -> None:
        task.output = "never seen"


def test_an_adapter_whose_run_is_not_async_fails_the_attempt_saying_so(make_engine, wfe_run):
    engine = make_engine()
    engine.register_adapter("agentic", PlainRunAdapter())
    engine.register_workflow("w", [Phase("think")])
    task = wfe_run(run_one(engine))
    assert task.status is TaskStatus.FAILED
    assert task.error == (
        "AdapterError: the agentic adapter PlainRunAdapter: run() returned NoneType, "
        "not an awaitable (make it 'async def run')"
    )


def test_a_task_without_an_adapter_says_when_the_built_in_ones_are_disabled(
    make_engine, wfe_run, monkeypatch
):
    monkeypatch.setenv("WFE_DISABLED_PLUGINS", "wfcore.adapters")
    engine = make_engine()
    engine.register_handler("p", lambda task: None)
    engine.register_workflow("w", [Phase("p", assigned_to="functional")])
    task = wfe_run(run_one(engine))
    assert task.status is TaskStatus.FAILED
    assert task.error == (
        "AdapterError: no adapter registered for task type 'functional' (the built-in "
        "adapters, plugin 'wfcore.adapters', are disabled: WFE_DISABLED_PLUGINS)"
    )

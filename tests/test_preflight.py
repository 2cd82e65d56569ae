"""A worker names, as it starts, the phases nothing can run and the on_timeouts that
never apply: before a task reaches them, after paid or human work."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from wfcore import ECSWorkflowEngine, InvalidWorkflowError, Phase, hookimpl
from wfcore.preflight import workflow_problems


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_a_worker_names_unrunnable_phases_and_dead_on_timeouts_once(
    wfe_engine_factory, wfe_run, caplog
):
    engine = wfe_engine_factory()

    async def report(task):
        task.output = "done"

    engine.register_handler("report", report)
    engine.register_workflow(
        "invoices",
        [
            Phase("extract", assigned_to="functional", command=["true"]),
            Phase("approve", assigned_to="human", on_timeout={"goto": "reprot"}),
            Phase("reprot", assigned_to="functional"),
            Phase("think", assigned_to="agentic"),
            Phase("anyone"),
        ],
    )
    caplog.set_level(logging.WARNING, logger="wfcore")
    wfe_run(engine.run_until_idle())
    wfe_run(engine.run_until_idle())  # said once per engine, not at every start
    assert _warnings(caplog) == [
        "workflow 'invoices', phase 'approve': on_timeout never applies: the phase has no "
        "timeout, so its wait has no deadline (give it timeout=SECONDS)",
        "workflow 'invoices', phase 'reprot': no handler and no command: every task "
        "reaching it fails (a handler is registered for 'report': a typo?)",
        "workflow 'invoices', phase 'think': no handler, and no agent adapter (such as "
        "wfe_openai's) is registered: every task reaching it fails",
        "workflow 'invoices', phase 'anyone': no handler, no command and no assigned_to: "
        "tasks submitted as agentic (the default) fail in it",
    ]


def test_phases_something_can_run_are_not_named(wfe_engine_factory):
    class Agent:
        async def run(self, task, phase, engine) -> None:
            task.output = "thought"

    class AgentPlugin:
        @hookimpl
        def wfe_register_adapters(self, register) -> None:
            register("agentic", Agent())

    engine = wfe_engine_factory(plugins=[AgentPlugin()])

    async def notify(task) -> None:
        pass

    engine.register_handler("approve", notify)  # may suspend with its own deadline
    engine.register_workflow(
        "ok",
        [
            Phase("extract", assigned_to="functional", command=["true"]),
            Phase("ask", assigned_to="human", timeout=60, on_timeout="fail"),
            Phase("approve", assigned_to="human", on_timeout="fail"),
            Phase("think", assigned_to="agentic"),
            Phase("anyone"),
        ],
    )
    assert workflow_problems(engine) == []


def test_a_request_shaping_handler_without_an_agent_adapter_is_named(wfe_engine_factory):
    """handler(task, request) needs an agent adapter (WFE_AGENT=openai forgotten, say);
    handlers callable with the task alone are not named."""
    engine = wfe_engine_factory()

    async def shape(task, request) -> None:
        pass

    class Shaper:
        def __call__(self, task, request) -> None:
            pass

    async def plain(task) -> None:
        pass

    async def defaulted(task, request=None) -> None:
        pass

    for name in ("analyze", "anyone"):
        engine.register_handler(name, shape)
    engine.register_handler("object", Shaper())
    engine.register_handler("plain", plain)
    engine.register_handler("defaulted", defaulted)
    engine.register_workflow(
        "w",
        [
            Phase("analyze", assigned_to="agentic"),
            Phase("anyone"),
            Phase("object", assigned_to="agentic"),
            Phase("plain", assigned_to="agentic"),
            Phase("defaulted", assigned_to="agentic"),
        ],
    )
    fix = (
        "its handler takes (task, request), the request of an agent adapter, and none is "
        "registered (start the worker with WFE_AGENT=openai, or register one with "
        "engine.register_adapter)"
    )
    assert workflow_problems(engine) == [
        f"workflow 'w', phase 'analyze': {fix}: every task reaching it fails",
        f"workflow 'w', phase 'anyone': {fix}: tasks submitted as agentic (the default) fail in it",
        f"workflow 'w', phase 'object': {fix}: every task reaching it fails",
    ]

    class Agent:
        async def run(self, task, phase, engine) -> None:
            task.output = "thought"

    engine.register_adapter("agentic", Agent())
    assert workflow_problems(engine) == []


def test_the_demo_app_starts_without_a_warning(tmp_path, monkeypatch):
    examples = Path(__file__).resolve().parent.parent / "examples"
    monkeypatch.syspath_prepend(str(examples))
    monkeypatch.setenv("WFE_STORE", f"sqlite://{tmp_path}/demo.db")
    sys.modules.pop("demo_app", None)
    import demo_app

    engine = next(v for v in vars(demo_app).values() if isinstance(v, ECSWorkflowEngine))
    assert workflow_problems(engine) == []


def test_a_worker_of_some_workflows_checks_only_those(wfe_engine_factory):
    """Another pool, whose app has the handler, runs the others."""
    engine = wfe_engine_factory(only_workflows=["invoices"])
    engine.register_workflow("invoices", [Phase("a", assigned_to="human")])
    engine.register_workflow("gpu", [Phase("render", assigned_to="functional")])
    assert workflow_problems(engine) == []


def test_a_schedule_starting_where_the_workflow_lets_no_task_start_is_named(wfe_engine_factory):
    engine = wfe_engine_factory()
    engine.register_handler("a", lambda task: None)
    engine.register_handler("b", lambda task: None)
    # Schedules first: register_schedule checks only a workflow registered before.
    engine.register_schedule("at-b", "w", every=60, classification="b")
    engine.register_schedule("at-a", "w", every=60, classification="a")
    engine.register_schedule("at-c", "w", every=60, classification="c")
    engine.register_workflow(
        "w",
        [Phase("a", assigned_to="functional"), Phase("b", assigned_to="functional")],
        start_phases=["a"],
    )
    assert workflow_problems(engine) == [
        "schedule 'at-b': workflow 'w' lets no task start at 'b' (start_phases): "
        "its tasks cannot be submitted",
        "schedule 'at-c': workflow 'w' has no phase 'c': its tasks cannot be submitted",
    ]


def test_a_schedule_of_a_registered_workflow_is_refused_a_phase_it_cannot_start_at(
    wfe_engine_factory,
):
    engine = wfe_engine_factory()
    engine.register_workflow(
        "w",
        [Phase("a", assigned_to="functional"), Phase("b", assigned_to="functional")],
        start_phases=["a"],
    )
    with pytest.raises(InvalidWorkflowError) as refused:
        engine.register_schedule("s", "w", every=60, classification="zz")
    assert str(refused.value) == "schedule 's': workflow 'w' has no phase 'zz'"
    with pytest.raises(InvalidWorkflowError) as refused:
        engine.register_schedule("s", "w", every=60, classification="b")
    assert str(refused.value) == (
        "schedule 's': workflow 'w' lets no task start at 'b' (start_phases)"
    )
    assert engine.schedules == {}

"""The typed public API as a library user meets it: the wire converter on every
model class, registered workflows that stay as validated, precise types."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import attrs
import cattrs
import pytest

from wfcore import (
    Artifact,
    ECSWorkflowEngine,
    InvalidTaskError,
    InvalidWorkflowError,
    Phase,
    Task,
    TaskStatus,
    TaskType,
    WorkflowSpec,
    hookimpl,
)
from wfcore.hookspecs import RegisterAdapter, RegisterWorkflow
from wfcore.testing import run_sync
from wfcore.wire import (
    MAX_TASK_ID_BYTES,
    check_task_id,
    converter,
    task_to_dict,
    workflow_from_dict,
    workflow_to_dict,
)

# -- the wire converter ----------------------------------------------------------------

PHASE = Phase(
    "approve",
    next_classifications=["a", "b"],
    assigned_to="human",
    instructions="Check it",
    input_schema={"type": "object", "properties": {"ok": {"type": "boolean"}}},
    timeout=60,
    on_timeout={"goto": "a"},
    max_attempts=3,
)
SPEC = WorkflowSpec(
    "flow",
    [PHASE, Phase("a", on_timeout="fail"), Phase("b", command=["echo", "hi"])],
    description="d",
)


def _task() -> Task:
    now = datetime.now(timezone.utc)
    return Task(
        data={"x": "é<b>"},
        workflow_name="flow",
        classification="approve",
        assigned_to="human",
        status=TaskStatus.WAITING_HUMAN,
        context={"k": [1, 2]},
        artifacts=[Artifact("r.txt", 3, "abc", "text/plain", phase="approve", path="/x")],
        output={"o": 1},
        outputs={"approve": 1},
        deadline=now + timedelta(hours=1),
        run_after=now,
        reply="r",
        resume_in_phase=True,
        version=7,
        history=[{"at": now.isoformat(), "event": "submitted"}],
    )


def _fields(task: Task) -> dict[str, Any]:
    # Task compares by identity (eq=False): compare what it holds.
    return {f.name: getattr(task, f.name) for f in attrs.fields(Task)}


@pytest.mark.parametrize(
    "obj", [PHASE, SPEC, SPEC.phases[2], Artifact("a.bin", 0, "00", "application/octet-stream")]
)
def test_the_converter_round_trips_phases_workflows_and_artifacts(obj: Any) -> None:
    cls = type(obj)
    assert converter.structure(converter.unstructure(obj), cls) == obj
    # ... through JSON text too, as the stores, Kafka and the dashboard carry it.
    text = json.dumps(converter.unstructure(obj))
    assert converter.structure(json.loads(text), cls) == obj


def test_the_converter_reads_what_workflow_to_dict_writes() -> None:
    doc = json.loads(json.dumps(workflow_to_dict(SPEC)))
    assert converter.structure(doc, WorkflowSpec) == SPEC
    assert workflow_from_dict(doc) == SPEC


def test_the_converter_round_trips_a_task() -> None:
    task = _task()
    back = converter.structure(json.loads(json.dumps(converter.unstructure(task))), Task)
    assert _fields(back) == _fields(task)
    back = converter.structure(json.loads(json.dumps(task_to_dict(task, internal=True))), Task)
    assert _fields(back) == _fields(task)


@attrs.frozen
class _Request:
    """An app's own request model, holding wfcore's classes."""

    spec: WorkflowSpec
    extra: list[Phase]


def test_an_apps_own_model_nests_workflows_and_phases() -> None:
    request = _Request(SPEC, [Phase("x"), PHASE])
    doc = json.loads(json.dumps(converter.unstructure(request)))
    assert converter.structure(doc, _Request) == request


def test_the_converter_validates_as_workflow_from_dict_does() -> None:
    doc = workflow_to_dict(SPEC)
    doc["phases"][1]["next_classifications"] = ["nowhere"]
    with pytest.raises(
        InvalidWorkflowError, match=r"phases\[1\]\.next_classifications: unknown classification"
    ):
        converter.structure(doc, WorkflowSpec)
    with pytest.raises(InvalidWorkflowError, match=r"^phase\.colour: unknown field"):
        converter.structure({"target_classification": "p", "colour": "red"}, Phase)
    # Nested in an app's model, cattrs collects the error under the field's name.
    with pytest.raises(cattrs.ClassValidationError) as caught:
        converter.structure({"spec": doc, "extra": []}, _Request)
    [error] = caught.value.exceptions
    assert isinstance(error, InvalidWorkflowError)


@pytest.mark.parametrize(
    ("task_id", "problem"),
    [
        ("", "must be a non-empty string"),
        (17, "must be a non-empty string"),
        ("orders/17", "may not contain '/'"),
        ("..", "or be '.' or '..'"),
        ("a\tb", "control characters"),
        (" order-17", "may not start or end with blanks"),
        ("\udcff", "is not Unicode text"),
        ("é" * MAX_TASK_ID_BYTES, f"too long (at most {MAX_TASK_ID_BYTES} bytes)"),
    ],
)
def test_check_task_id_names_what_no_task_id_can_be(task_id: Any, problem: str) -> None:
    with pytest.raises(InvalidTaskError, match=re.escape(problem)):
        check_task_id(task_id)


def test_check_task_id_accepts_what_submit_task_accepts() -> None:
    for task_id in ("order-17", "Bestellung 17", "é" * (MAX_TASK_ID_BYTES // 2), "a.b"):
        check_task_id(task_id)
        engine = ECSWorkflowEngine("memory://", load_plugins=False)
        engine.register_workflow("w", [Phase("p")])
        assert run_sync(engine.submit_task({}, "w", task_id=task_id)).id == task_id
        run_sync(engine.aclose())


# -- a registered workflow stays as it was checked ---------------------------------------


async def _echo(task: Task) -> None:
    task.output = task.classification


def test_changing_the_phases_after_registering_changes_nothing(
    wfe_engine_factory: Callable[..., ECSWorkflowEngine], wfe_store_url: str
) -> None:
    engine = wfe_engine_factory()
    engine.register_handler("a", _echo)
    engine.register_handler("b", _echo)
    first = Phase("a", assigned_to="functional", next_classifications=["b"])
    last = Phase("b", command=["true"])
    phases = [first, last]
    spec = engine.register_workflow("w", phases)
    as_registered = WorkflowSpec(
        "w",
        [
            Phase("a", assigned_to="functional", next_classifications=["b"]),
            Phase("b", command=["true"]),
        ],
    )
    assert spec == as_registered
    # Later, elsewhere in the app, the caller's lists change, unchecked:
    assert first.next_classifications is not None and last.command is not None
    first.next_classifications[0] = "typo"
    last.command[:] = ["rm", "-rf", "/nowhere"]
    phases.append(Phase("a"))
    spec.phases.append(Phase("a"))
    assert engine.workflows["w"] == as_registered

    async def scenario() -> tuple[Task, list[WorkflowSpec]]:
        task = await engine.submit_task({}, "w")
        await engine.run_until_idle()
        done = await engine.wait_for_task(task.id)
        # What another process reads from the store.
        other = wfe_engine_factory(store=wfe_store_url)
        stored = await (await other.get_store()).load_workflows()
        return done, stored

    done, stored = run_sync(scenario())
    assert done.status is TaskStatus.COMPLETED, done.error
    assert done.outputs == {"a": "a", "b": None}
    assert stored == [as_registered]


def test_a_phase_changed_before_registering_is_checked_again(
    wfe_engine_factory: Callable[..., ECSWorkflowEngine],
) -> None:
    engine = wfe_engine_factory()
    build = Phase("build", command=["make"])
    assert build.command is not None
    build.command.clear()
    with pytest.raises(InvalidWorkflowError, match=r"^phases\[1\]\.command: must be a non-empty"):
        engine.register_workflow("w", [Phase("a"), build])
    assert "w" not in engine.workflows


def test_a_plugins_workflow_is_copied_too(
    wfe_engine_factory: Callable[..., ECSWorkflowEngine],
) -> None:
    phases = [Phase("a", next_classifications=["b"]), Phase("b")]

    class Plugin:
        @hookimpl
        def wfe_register_workflows(self, register: RegisterWorkflow) -> None:
            register("w", phases)

    engine = wfe_engine_factory(plugins=[Plugin()])
    assert phases[0].next_classifications is not None
    phases[0].next_classifications.append("c")
    phases.pop()
    assert engine.workflows["w"] == WorkflowSpec(
        "w", [Phase("a", next_classifications=["b"]), Phase("b")]
    )


# -- types an app and a plugin type-check against ---------------------------------------

_TYPED_USER = """
from wfcore import ECSWorkflowEngine, Phase, Task, TaskType, hookimpl
from wfcore.hookspecs import RegisterAdapter, RegisterHandler, RegisterWorkflow
from wfcore.model import answer_validator
from wfcore.testing import WfeEngineFactory, WfeRun


class Echo:
    async def run(self, task: Task, phase: Phase, engine: ECSWorkflowEngine, /) -> None:
        task.output = task.data


async def handle(task: Task) -> None:
    task.output = 1


class Plugin:
    @hookimpl
    def wfe_register_adapters(self, register: RegisterAdapter) -> None:
        register(TaskType.AGENTIC, Echo())
        register("functional", Echo())
        register("human", object())  # E: not an adapter

    @hookimpl
    def wfe_register_handlers(self, register: RegisterHandler) -> None:
        register("p", handle)
        register("q", lambda task: None)
        register("r", "handle")  # E: not a handler

    @hookimpl
    def wfe_register_workflows(self, register: RegisterWorkflow) -> None:
        register("w", [Phase("p"), Phase("q")])
        register("v", ["p"])  # E: not phases


def check(engine: ECSWorkflowEngine, wfe_run: WfeRun) -> None:
    reveal_type(engine.adapter_for("agentic"))
    reveal_type(answer_validator({"type": "object"}))
    reveal_type(engine.only_workflows)
    reveal_type(engine.allowed_commands)
    reveal_type(engine.worker_id)
    reveal_type(engine.max_takeovers)

    async def scenario() -> Task:
        return await engine.wait_for_task("t")

    reveal_type(wfe_run(scenario()))
    reveal_type(wfe_run(scenario(), timeout=5))
    answer_validator({}).validatee({})  # E: a typo
    wfe_run(scenario()).statuss  # E: a typo


def test_with_fixtures(wfe_engine_factory: WfeEngineFactory) -> None:
    reveal_type(wfe_engine_factory(plugins=[Plugin()], max_concurrency=4))
    wfe_engine_factory(plugins=[Plugin()], store=3)  # E: not a store
"""


def test_an_app_and_a_plugin_type_check_against_precise_types(tmp_path: Path) -> None:
    pytest.importorskip("mypy", reason="mypy is in the test extra")
    (tmp_path / "user.py").write_text(_TYPED_USER)
    # In a process of its own, as a user runs it: in this one mypy would raise the
    # recursion limit for every later test (and deep JSON would stop being refused).
    checked = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--cache-dir",
            str(tmp_path / "cache"),
            str(tmp_path / "user.py"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    out, err = checked.stdout, checked.stderr
    assert not err, err
    # mypy versions differ in writing builtins.str or str.
    revealed = re.findall(r'Revealed type is "(.*)"', out.replace("builtins.", ""))
    assert revealed == [
        "wfcore.adapters.Adapter | None",
        "jsonschema.protocols.Validator",
        "tuple[str, ...] | None",
        "frozenset[str]",
        "str",
        "int | None",
        "wfcore.model.Task",
        "wfcore.model.Task",
        "wfcore.engine.ECSWorkflowEngine",
    ], out
    # Each line marked "# E:" is an error, and no other line.
    wanted = {n for n, line in enumerate(_TYPED_USER.splitlines(), 1) if "# E:" in line}
    found = {int(n) for n in re.findall(r"^\S*user\.py:(\d+): error:", out, re.M)}
    assert found == wanted, out


# -- what the hook reference promises about lifecycle hooks ------------------------------


class _Calls:
    """Plugins of one test append their names here as they are called."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def plugin(self, name: str, *, fail: bool = False, **marks: bool) -> object:
        calls = self.names

        class Plugin:
            @hookimpl(**marks)
            async def wfe_task_submitted(self, task: Task) -> None:
                await asyncio.sleep(0)  # not done at once: only awaiting finishes it
                calls.append(name)
                if fail:
                    raise RuntimeError(f"{name} is broken")

        Plugin.__name__ = name
        return Plugin()


def test_lifecycle_hooks_run_tryfirst_then_last_registered_first_and_survive_a_failure(
    wfe_engine_factory: Callable[..., ECSWorkflowEngine],
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = _Calls()
    plugins = [
        calls.plugin("A"),
        calls.plugin("B", fail=True),
        calls.plugin("First", tryfirst=True),
        calls.plugin("Last", trylast=True),
        calls.plugin("C"),
    ]
    engine = wfe_engine_factory(plugins=plugins)
    engine.register_workflow("w", [Phase("p", assigned_to="human")])
    with caplog.at_level(logging.ERROR, logger="wfcore"):
        task = run_sync(engine.submit_task({}, "w"))
        # submit_task returned after every implementation, async ones included, returned.
        assert calls.names == ["First", "C", "B", "A", "Last"]
    assert task.status is TaskStatus.PENDING
    [failure] = [r for r in caplog.records if r.exc_info]
    assert failure.getMessage() == "plugin 'B' failed in wfe_task_submitted"
    assert failure.levelno == logging.ERROR
    assert str(failure.exc_info[1]) == "B is broken"  # type: ignore[index]


def test_an_async_phase_started_hook_delays_the_phase_and_holds_its_slot(
    wfe_engine_factory: Callable[..., ECSWorkflowEngine],
) -> None:
    events: list[str] = []

    async def scenario() -> list[Task]:
        entered = asyncio.Event()
        gate = asyncio.Event()

        class Slow:
            @hookimpl
            async def wfe_phase_started(self, task: Task) -> None:
                entered.set()
                await gate.wait()
                events.append(f"hook {task.data}")

        def handle(task: Task) -> None:
            events.append(f"handler {task.data}")

        engine = wfe_engine_factory(plugins=[Slow()], max_concurrency=1)
        engine.register_handler("p", handle)
        engine.register_workflow("w", [Phase("p", assigned_to="functional")])
        first = await engine.submit_task(1, "w")
        second = await engine.submit_task(2, "w")
        running = asyncio.create_task(engine.run_until_idle())
        await asyncio.wait_for(entered.wait(), 30)
        # The hook waits: the phase has not run, and the task holds the only slot.
        assert events == []
        assert engine.active_count == 1
        waiting = await engine.get_task(second.id)
        assert waiting is not None and waiting.status is TaskStatus.PENDING
        gate.set()
        await running
        return [await engine.wait_for_task(t.id) for t in (first, second)]

    done = run_sync(scenario())
    assert [t.status for t in done] == [TaskStatus.COMPLETED] * 2
    assert events == ["hook 1", "handler 1", "hook 2", "handler 2"]


def test_resume_returns_after_the_async_hooks_it_fires(
    wfe_engine_factory: Callable[..., ECSWorkflowEngine],
) -> None:
    heard: list[str] = []

    class Listener:
        @hookimpl
        async def wfe_task_resumed(self, task: Task) -> None:
            await asyncio.sleep(0)
            heard.append("resumed")

        @hookimpl
        async def wfe_phase_finished(self, task: Task, phase: Phase) -> None:
            await asyncio.sleep(0)
            heard.append(f"finished {phase.target_classification}")

        @hookimpl
        async def wfe_task_completed(self, task: Task) -> None:
            await asyncio.sleep(0)
            heard.append("completed")

    engine = wfe_engine_factory(plugins=[Listener()])
    engine.register_workflow("w", [Phase("ask", assigned_to="human")])

    async def scenario() -> list[str]:
        task = await engine.submit_task({}, "w")
        await engine.run_until_idle()
        await engine.wait_for_task(task.id, waiting=True)
        await engine.resume(task.id, "yes")
        return list(heard)

    assert run_sync(scenario()) == ["resumed", "finished ask", "completed"]


# -- two plugins, one task type ----------------------------------------------------------


class _NamedAdapter:
    def __init__(self, name: str) -> None:
        self.name = name

    async def run(self, task: Task, phase: Phase, engine: ECSWorkflowEngine, /) -> None:
        task.output = self.name


class RobotAgents:
    @hookimpl
    def wfe_register_adapters(self, register: RegisterAdapter) -> None:
        register("agentic", _NamedAdapter("robot"))


class EchoAgents:
    @hookimpl
    def wfe_register_adapters(self, register: RegisterAdapter) -> None:
        register(TaskType.AGENTIC, _NamedAdapter("echo"))
        register("human", _NamedAdapter("echo"))


@pytest.mark.parametrize("first,second", [(RobotAgents, EchoAgents), (EchoAgents, RobotAgents)])
def test_two_plugins_registering_an_adapter_for_one_type_are_warned_about(
    wfe_engine_factory: Callable[..., ECSWorkflowEngine],
    caplog: pytest.LogCaptureFixture,
    first: type,
    second: type,
) -> None:
    with caplog.at_level(logging.WARNING, logger="wfcore"):
        engine = wfe_engine_factory(plugins=[first(), second()])
    winner = "robot" if second is RobotAgents else "echo"
    adapter = engine.adapter_for("agentic")
    assert isinstance(adapter, _NamedAdapter) and adapter.name == winner
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    # One warning, for the type both register (human has one plugin adapter only).
    assert [r.getMessage() for r in warnings] == [
        f"plugins {first.__name__!r} and {second.__name__!r} both register an adapter for "
        f"agentic phases; the one of {second.__name__!r} (_NamedAdapter) is used, as it "
        "registered "
        "last: to choose, disable the other with WFE_DISABLED_PLUGINS, or call "
        "engine.register_adapter() in code"
    ]


def test_one_plugin_replacing_a_built_in_adapter_is_not_warned_about(
    wfe_engine_factory: Callable[..., ECSWorkflowEngine],
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="wfcore"):
        engine = wfe_engine_factory(plugins=[EchoAgents()])
    assert isinstance(engine.adapter_for("human"), _NamedAdapter)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]

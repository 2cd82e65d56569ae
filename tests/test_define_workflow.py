"""define_workflow: a task that defines a workflow at run time, then runs in it."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from core_util import events

from wfcore import (
    DEFINE_WORKFLOW,
    ECSWorkflowEngine,
    InvalidTaskError,
    InvalidWorkflowError,
    Phase,
    Task,
    TaskStatus,
)
from wfcore.wire import workflow_from_dict


def handlers(engine: ECSWorkflowEngine, calls: list[tuple[str, Any]]) -> None:
    async def step(task: Task) -> None:
        calls.append((task.classification, task.data))
        task.output = f"{task.classification} done"

    for name in ("fetch", "summarise"):
        engine.register_handler(name, step)


SPEC = {
    "name": "report",
    "phases": [
        {"target_classification": "fetch"},
        {"target_classification": "summarise", "assigned_to": "functional"},
    ],
    "input": {"url": "https://example.org/data.csv"},
}


def test_define_workflow_registers_it_and_runs_the_task_in_it(make_engine, wfe_run):
    engine = make_engine()
    calls: list[tuple[str, Any]] = []
    handlers(engine, calls)

    async def scenario():
        task = await engine.submit_task(SPEC, None, classification=DEFINE_WORKFLOW)
        await engine.run_until_idle()
        done = await engine.get_task(task.id)
        later = await engine.submit_task({"url": "second"}, "report")
        await engine.run_until_idle()
        return done, await engine.get_task(later.id)

    done, later = wfe_run(scenario())
    assert done.status is TaskStatus.COMPLETED, done.error
    assert done.workflow_name == "report"
    assert done.data == SPEC["input"]  # the input became the task's data
    assert calls[:2] == [("fetch", SPEC["input"]), ("summarise", SPEC["input"])]
    assert done.outputs["summarise"] == "summarise done"
    assert "workflow_defined" in events(done)
    assert engine.workflows["report"].classifications == ["fetch", "summarise"]
    assert later.status is TaskStatus.COMPLETED
    assert calls[2:] == [("fetch", {"url": "second"}), ("summarise", {"url": "second"})]


def test_without_input_the_data_stays_the_spec(make_engine, wfe_run):
    engine = make_engine()
    calls: list[tuple[str, Any]] = []
    handlers(engine, calls)
    spec = {k: v for k, v in SPEC.items() if k != "input"}

    async def scenario():
        task = await engine.submit_task(spec, None, classification=DEFINE_WORKFLOW)
        await engine.run_until_idle()
        return await engine.get_task(task.id)

    done = wfe_run(scenario())
    assert done.status is TaskStatus.COMPLETED, done.error
    assert done.data == spec


def test_defined_workflow_with_a_human_phase_waits_and_resumes(make_engine, wfe_run):
    engine = make_engine()
    spec = {
        "name": "approval",
        "phases": [
            {
                "target_classification": "approve",
                "assigned_to": "human",
                "instructions": "OK to publish?",
                "input_schema": {"type": "boolean"},
            }
        ],
        "input": {"doc": 1},
    }

    async def scenario():
        task = await engine.submit_task(spec, None, classification=DEFINE_WORKFLOW)
        await engine.run_until_idle()
        waiting = await engine.get_task(task.id)
        await engine.resume(task.id, True)
        return waiting, await engine.get_task(task.id)

    waiting, done = wfe_run(scenario())
    assert waiting.status is TaskStatus.WAITING_HUMAN
    assert waiting.waiting_reason == "OK to publish?"
    assert done.status is TaskStatus.COMPLETED
    assert done.output is True


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"phases": [{"target_classification": "a"}]}, "name"),
        ({"name": "x"}, "phases"),
        ({"name": "x", "phases": []}, "phases"),
        ({"name": "x", "phases": [{"assigned_to": "human"}]}, "phases[0].target_classification"),
        (
            {"name": "x", "phases": [{"target_classification": "a", "timeout": -1}]},
            "phases[0].timeout",
        ),
        (
            {"name": "x", "phases": [{"target_classification": "a", "assigned_to": "robot"}]},
            "phases[0].assigned_to",
        ),
        (
            {
                "name": "x",
                "phases": [
                    {"target_classification": "a"},
                    {"target_classification": "b", "next_classifications": ["zzz"]},
                ],
            },
            "phases[1].next_classifications",
        ),
        ({"name": "x", "phases": [{"target_classification": "a", "colour": 1}]}, "colour"),
        # The built-in phase's name: a task rebound to it would define it again for ever.
        (
            {"name": "x", "phases": [{"target_classification": "define_workflow"}]},
            "phases[0].target_classification: 'define_workflow' is reserved",
        ),
        ("not a spec", "object"),
    ],
)
def test_invalid_spec_fails_the_task_naming_the_field(make_engine, wfe_run, spec, field):
    engine = make_engine()

    async def scenario():
        task = await engine.submit_task(spec, None, classification=DEFINE_WORKFLOW)
        await engine.run_until_idle()
        return await engine.get_task(task.id)

    task = wfe_run(scenario())
    assert task.status is TaskStatus.FAILED
    assert field in task.error
    assert "x" not in engine.workflows


def test_definition_survives_a_restart(wfe_engine_factory, wfe_run, wfe_store_url):
    first = wfe_engine_factory()
    calls: list[tuple[str, Any]] = []
    handlers(first, calls)
    spec = {
        "name": "report",
        "phases": [{"target_classification": "fetch"}, {"target_classification": "review"}],
        "input": {"n": 1},
    }

    async def define():
        task = await first.submit_task(spec, None, classification=DEFINE_WORKFLOW)
        await first.run_until_idle()
        return await first.get_task(task.id)

    waiting = wfe_run(define())
    assert waiting.status is TaskStatus.FAILED  # "review" has no handler here
    wfe_run(first.aclose())

    # A new engine on the same file knows the workflow without registering it.
    second = wfe_engine_factory()
    seen: list[str] = []

    async def review(task: Task) -> None:
        seen.append(task.data["n"])
        task.output = "reviewed"

    async def fetch(task: Task) -> None:
        task.output = "fetched"

    second.register_handler("fetch", fetch)
    second.register_handler("review", review)

    async def reuse():
        await second.get_store()
        assert second.workflows["report"].classifications == ["fetch", "review"]
        task = await second.submit_task({"n": 2}, "report")
        await second.run_until_idle()
        return await second.get_task(task.id)

    done = wfe_run(reuse())
    assert done.status is TaskStatus.COMPLETED
    assert seen == [2]
    # The stored definition is the workflow, not the input of the task that defined it.
    assert second.workflows["report"].input is None


def test_define_workflow_task_resumes_after_restart(wfe_engine_factory, wfe_run):
    spec = {
        "name": "two-step",
        "phases": [
            {"target_classification": "ask", "assigned_to": "human"},
            {"target_classification": "finish"},
        ],
    }
    first = wfe_engine_factory()

    async def define():
        task = await first.submit_task(spec, None, classification=DEFINE_WORKFLOW)
        await first.run_until_idle()
        return task.id

    task_id = wfe_run(define())
    wfe_run(first.aclose())

    second = wfe_engine_factory()
    got: list[Any] = []

    async def finish(task: Task) -> None:
        got.append(task.outputs["ask"])

    second.register_handler("finish", finish)

    async def carry_on():
        await second.resume(task_id, "yes")
        await second.run_until_idle()
        return await second.get_task(task_id)

    done = wfe_run(carry_on())
    assert done.status is TaskStatus.COMPLETED
    assert got == ["yes"]


def test_a_workflow_defined_by_one_engine_is_seen_by_another_on_the_same_store(
    wfe_engine_factory, wfe_run
):
    definer = wfe_engine_factory()
    other = wfe_engine_factory()
    other.register_handler("only", lambda task: setattr(task, "output", "ran"))
    spec = {"name": "late", "phases": [{"target_classification": "only"}]}

    async def scenario():
        await other.get_store()  # opened before the workflow exists
        definer.register_handler("only", lambda task: None)
        await definer.submit_task(spec, None, classification=DEFINE_WORKFLOW)
        await definer.run_until_idle()
        task = await other.submit_task({}, "late")
        await other.run_until_idle()
        return await other.get_task(task.id)

    assert wfe_run(scenario()).output == "ran"


def test_register_workflow_in_code_is_persisted(wfe_engine_factory, wfe_run):
    first = wfe_engine_factory()
    first.register_workflow("coded", [Phase("a"), Phase("b", assigned_to="human")])

    async def open_it():
        await first.get_store()

    wfe_run(open_it())
    wfe_run(first.aclose())
    second = wfe_engine_factory()

    async def look():
        await second.get_store()
        return second.workflows

    workflows = wfe_run(look())
    assert workflows["coded"].classifications == ["a", "b"]
    assert str(workflows["coded"].phases[1].assigned_to) == "human"


def test_defined_workflow_starts_at_its_first_phase_even_with_a_classifier(make_engine, wfe_run):
    from wfcore import hookimpl

    class AlwaysLast:
        @hookimpl
        def wfe_classify(self, task: Task) -> str | None:
            return "summarise" if task.workflow_name == "report" else None

    engine = make_engine(plugins=[AlwaysLast()])
    calls: list[tuple[str, Any]] = []
    handlers(engine, calls)

    async def scenario():
        task = await engine.submit_task(SPEC, None, classification=DEFINE_WORKFLOW)
        await engine.run_until_idle()
        return await engine.get_task(task.id)

    done = wfe_run(scenario())
    assert done.status is TaskStatus.COMPLETED, done.error
    assert [c for c, _ in calls] == ["fetch", "summarise"]


def test_a_defined_workflow_never_replaces_a_different_one(make_engine, wfe_run):
    """Defining a name that is taken by another workflow fails that task and leaves
    the workflow, and the tasks in it, alone; the same spec again is accepted."""
    engine = make_engine()
    engine.register_handler("a", lambda task: setattr(task, "output", "a"))
    engine.register_workflow("taken", [Phase("a", assigned_to="functional")])
    phase = {"target_classification": "a", "assigned_to": "functional"}
    same = {"name": "taken", "phases": [phase]}
    other = {"name": "taken", "phases": [{"target_classification": "x"}]}

    async def scenario():
        clash = await engine.submit_task(other, None, classification=DEFINE_WORKFLOW)
        again = await engine.submit_task(same, None, classification=DEFINE_WORKFLOW)
        await engine.run_until_idle()
        return await engine.get_task(clash.id), await engine.get_task(again.id)

    clash, again = wfe_run(scenario())
    assert clash.status is TaskStatus.FAILED
    assert "a different workflow named 'taken' exists already" in clash.error
    assert engine.workflows["taken"].classifications == ["a"]
    assert again.status is TaskStatus.COMPLETED
    assert again.outputs["a"] == "a"


def test_two_different_specs_of_one_name_defined_at_once_one_wins(make_engine, wfe_run):
    engine = make_engine(max_concurrency=10)

    def spec(phase: str) -> dict[str, Any]:
        return {
            "name": "race",
            "phases": [{"target_classification": phase, "assigned_to": "human"}],
        }

    async def scenario():
        tasks = await engine.submit_tasks(
            [
                {"data": spec(phase), "workflow_name": None, "classification": DEFINE_WORKFLOW}
                for phase in ("a", "b")
            ]
        )
        await engine.run_until_idle()
        return [await engine.get_task(t.id) for t in tasks], engine.workflows["race"]

    (first, second), race = wfe_run(scenario())
    assert first.status is TaskStatus.WAITING_HUMAN  # the first stored wins
    assert race.classifications == ["a"]
    assert second.status is TaskStatus.FAILED
    assert "a different workflow named 'race' exists already" in second.error


def _command_spec(name: str, *programs: str) -> dict[str, Any]:
    """A spec whose phases each run one program, printing the phase's name."""
    return {
        "name": name,
        "phases": [
            {
                "target_classification": f"step{i}",
                "assigned_to": "functional",
                "command": [program, "-c", f"print('step{i}')"],
            }
            for i, program in enumerate(programs)
        ],
    }


def test_a_defined_workflow_runs_no_command_unless_the_engine_allows_it(make_engine, wfe_run):
    """Whoever can submit a task can define a workflow: its commands would run
    any program on the worker. By default they may run none."""
    strict = make_engine()
    allowing = make_engine(allowed_commands=[sys.executable])
    trusting = make_engine(allowed_commands=["*"])

    async def define(engine: ECSWorkflowEngine, spec: dict[str, Any]) -> Task:
        task = await engine.submit_task(spec, None, classification=DEFINE_WORKFLOW)
        await engine.run_until_idle()
        return await engine.get_task(task.id)

    async def scenario():
        refused = await define(strict, _command_spec("by-default", sys.executable))
        stored = {spec.name for spec in await (await strict.get_store()).load_workflows()}
        allowed = await define(allowing, _command_spec("allowed", sys.executable))
        other = await define(allowing, _command_spec("other", sys.executable, "python-evil"))
        anything = await define(trusting, _command_spec("any", sys.executable))
        return refused, stored, allowed, other, anything

    refused, stored, allowed, other, anything = wfe_run(scenario())
    assert refused.status is TaskStatus.FAILED
    assert refused.error.startswith("InvalidWorkflowError: phases[0].command: workflow ")
    assert "allowed_commands (none)" in refused.error and sys.executable in refused.error
    assert "by-default" not in stored  # nothing refused is kept
    assert allowed.status is TaskStatus.COMPLETED, allowed.error
    assert allowed.output == "step0"
    assert other.status is TaskStatus.FAILED
    assert "phases[1].command" in other.error and "'python-evil'" in other.error
    assert anything.status is TaskStatus.COMPLETED, anything.error


def test_a_stored_workflow_not_in_the_code_runs_no_command_it_is_not_allowed(make_engine, wfe_run):
    """A workflow found in the store (defined by an engine allowing more, say) is
    checked where it runs; the app's own workflows run their commands regardless."""
    engine = make_engine()
    engine.register_workflow(
        "own",
        [Phase("run", assigned_to="functional", command=[sys.executable, "-c", "print(1)"])],
    )

    async def scenario():
        store = await engine.get_store()
        await store.save_workflow(workflow_from_dict(_command_spec("theirs", sys.executable)))
        theirs = await engine.submit_task({}, "theirs")
        own = await engine.submit_task({}, "own")
        await engine.run_until_idle()
        return await engine.get_task(theirs.id), await engine.get_task(own.id)

    theirs, own = wfe_run(scenario())
    assert theirs.status is TaskStatus.FAILED
    assert theirs.error.startswith(
        "AdapterError: phase 'step0': workflow 'theirs' is not registered in code"
    )
    assert own.status is TaskStatus.COMPLETED and own.output == 1


CATASTROPHIC = "^(a+)+$"  # each "a" before the "!" doubles the time: 40 take days


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "pattern": CATASTROPHIC},
        {"type": "object", "properties": {"name": {"type": "string", "pattern": CATASTROPHIC}}},
        {"type": "object", "patternProperties": {CATASTROPHIC: {}}},
        {"anyOf": [{"type": "null"}, {"items": {"pattern": CATASTROPHIC}}]},
        {"$defs": {"n": {"pattern": CATASTROPHIC}}, "$ref": "#/$defs/n"},
        # A $ref makes a subschema of any key; draft 7 has "dependencies".
        {"properties": {"x": {"$ref": "#/x-evil"}}, "x-evil": {"pattern": CATASTROPHIC}},
        {"dependencies": {"x": {"properties": {"x": {"pattern": CATASTROPHIC}}}}},
    ],
    ids=["top", "property", "patternProperties", "nested", "defs", "ref-anywhere", "draft-07"],
)
def test_a_run_time_workflow_may_not_use_regular_expressions(make_engine, wfe_run, schema):
    """A task must not be able to stall its worker: Python's re backtracks with the GIL
    held, so a pattern and an input that never finish matching would freeze every task,
    lease renewal and signal handler of the worker (and of each that took it over)."""
    engine = make_engine()
    spec = {
        "name": "redos",
        "phases": [
            {"target_classification": "free", "assigned_to": "human"},
            {
                "target_classification": "ask",
                "assigned_to": "human",
                "timeout": 60,
                # Checked against the schema when the spec is read (24: a second,
                # so that without the check this test fails rather than hangs).
                "on_timeout": {"output": "a" * 24 + "!"},
                "input_schema": schema,
            },
        ],
    }

    async def scenario():
        task = await engine.submit_task(spec, None, classification=DEFINE_WORKFLOW)
        await engine.run_until_idle()
        return await engine.get_task(task.id)

    task = wfe_run(scenario(), timeout=30)
    assert task.status is TaskStatus.FAILED
    keyword = "patternProperties" if "patternProperties" in str(schema) else "pattern"
    assert task.error.startswith(
        f"InvalidWorkflowError: phases[1].input_schema: {keyword!r} is not allowed in a "
        "workflow defined at run time"
    ), task.error
    assert "redos" not in engine.workflows


def test_a_property_named_pattern_is_no_regular_expression(make_engine, wfe_run):
    engine = make_engine()
    schema = {"type": "object", "properties": {"pattern": {"type": "string"}}}
    spec = {
        "name": "ok",
        "phases": [
            {"target_classification": "ask", "assigned_to": "human", "input_schema": schema}
        ],
    }

    async def scenario():
        task = await engine.submit_task(spec, None, classification=DEFINE_WORKFLOW)
        await engine.run_until_idle()
        return await engine.get_task(task.id)

    assert wfe_run(scenario()).status is TaskStatus.WAITING_HUMAN


def test_a_defined_workflow_keeps_its_start_phases(wfe_engine_factory, wfe_run):
    """A spec's start_phases are part of the workflow it defines: stored with it (for
    this engine and another on the store), so a task naming another phase is refused;
    the same spec defined again, or registered in code, is the same workflow."""
    definer = wfe_engine_factory()
    for name in ("approve", "pay"):
        definer.register_handler(name, lambda task: setattr(task, "output", "done"))
    spec = {
        "name": "refund",
        "start_phases": ["approve"],
        "phases": [
            {"target_classification": "approve", "assigned_to": "functional"},
            {"target_classification": "pay", "assigned_to": "functional"},
        ],
    }

    async def scenario():
        first = await definer.submit_task(spec, None, classification=DEFINE_WORKFLOW)
        await definer.run_until_idle()
        again = await definer.submit_task(spec, None, classification=DEFINE_WORKFLOW)
        await definer.run_until_idle()
        with pytest.raises(InvalidTaskError, match="start only at 'approve'"):
            await definer.submit_task({}, "refund", classification="pay")
        other = wfe_engine_factory()
        await other.get_store()
        with pytest.raises(InvalidTaskError, match="start only at 'approve'"):
            await other.submit_task({}, "refund", classification="pay")
        return await definer.get_task(first.id), await definer.get_task(again.id)

    first, again = wfe_run(scenario())
    assert (first.status, again.status) == (TaskStatus.COMPLETED, TaskStatus.COMPLETED)
    assert definer.workflows["refund"].start_phases == ["approve"]

    # An app that registers the same workflow in code (start_phases included) may
    # still run a task that defines it.
    coded = wfe_engine_factory()
    for name in ("approve", "pay"):
        coded.register_handler(name, lambda task: setattr(task, "output", "done"))
    coded.register_workflow(
        "refund",
        [Phase("approve", assigned_to="functional"), Phase("pay", assigned_to="functional")],
        start_phases=["approve"],
    )

    async def define_in_code_app():
        task = await coded.submit_task(spec, None, classification=DEFINE_WORKFLOW)
        await coded.run_until_idle()
        return await coded.get_task(task.id)

    done = wfe_run(define_in_code_app())
    assert done.status is TaskStatus.COMPLETED, done.error


def test_a_worker_for_some_workflows_leaves_a_defined_one_to_its_workers(
    wfe_engine_factory, wfe_run
):
    """A define_workflow task submitted under a workflow is claimed by that
    workflow's worker (only_workflows); the workflow it defines is not among that
    worker's, so the task waits, at its first phase, for a worker that runs it."""
    ran: list[str] = []

    def record(name: str) -> Any:
        def step(task: Task) -> None:
            ran.append(f"{name}:{task.classification}")

        return step

    only_x = wfe_engine_factory(only_workflows=["x"])
    only_x.register_handler("a", record("only_x"))
    only_x.register_handler("b", record("only_x"))
    only_x.register_workflow("x", [Phase("a", assigned_to="functional")])
    spec = {"name": "y", "phases": [{"target_classification": "b", "assigned_to": "functional"}]}

    async def scenario() -> tuple[Task, Task]:
        task = await only_x.submit_task(spec, "x", classification=DEFINE_WORKFLOW)
        await only_x.run_until_idle()
        left = await only_x.get_task(task.id)
        everything = wfe_engine_factory()
        everything.register_handler("b", record("everything"))
        await everything.run_until_idle()
        return left, await everything.get_task(task.id)

    left, done = wfe_run(scenario())
    assert (left.status, left.workflow_name, left.classification) == (
        TaskStatus.PENDING,
        "y",
        "b",
    )
    assert done.status is TaskStatus.COMPLETED
    assert ran == ["everything:b"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"nam": "x"}, "nam: unknown field (did you mean name?)"),
        (
            {"name": "x", "phases": [{"classification": "p"}]},
            "phases[0].classification: unknown field (did you mean target_classification?)",
        ),
        (
            {"name": "x", "phases": [{"target_classification": "p", "max_attempt": 2}]},
            "phases[0].max_attempt: unknown field (did you mean max_attempts?)",
        ),
        (
            {"name": "x", "phases": [{"target_classification": "p", "colour": "red"}]},
            "phases[0].colour: unknown field",
        ),
    ],
)
def test_an_unknown_spec_field_names_the_field_it_resembles(spec, message):
    with pytest.raises(InvalidWorkflowError) as caught:
        workflow_from_dict(spec)
    assert str(caught.value) == message

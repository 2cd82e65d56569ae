"""Routing: classification, phase order, next_classifications and the task's fields."""

from __future__ import annotations

import asyncio
import contextvars
from datetime import datetime

import pytest
from core_util import background, events, run_task, wait_for, wait_for_status

from wfcore import (
    ECSWorkflowEngine,
    Phase,
    Task,
    TaskStatus,
    TaskType,
    WorkflowSpec,
    hookimpl,
)
from wfcore.errors import InvalidTaskError, InvalidWorkflowError
from wfcore.wire import workflow_from_dict, workflow_to_dict


def recorder(calls: list[str], output: object = "same") -> object:
    """A handler that records which classification ran and echoes it as output."""

    async def handler(task: Task) -> None:
        calls.append(task.classification)
        task.output = f"out-{task.classification}" if output == "same" else output

    return handler


def register(engine: ECSWorkflowEngine, names: list[str], calls: list[str]) -> None:
    for name in names:
        engine.register_handler(name, recorder(calls))


def test_phases_run_in_list_order_and_outputs_are_kept(make_engine, wfe_run):
    engine = make_engine()
    calls: list[str] = []
    register(engine, ["a", "b", "c"], calls)
    engine.register_workflow("w", [Phase("a"), Phase("b"), Phase("c")])

    async def scenario():
        task = await engine.submit_task({"n": 1}, "w")
        assert task.status is TaskStatus.PENDING
        await engine.run_until_idle()
        return await engine.get_task(task.id)

    task = wfe_run(scenario())
    assert calls == ["a", "b", "c"]
    assert task.status is TaskStatus.COMPLETED
    assert task.output == "out-c"
    assert task.outputs == {"a": "out-a", "b": "out-b", "c": "out-c"}
    assert task.classification == "c"
    assert task.data == {"n": 1}
    assert task.workflow_name == "w"
    assert task.error is None


def test_empty_next_classifications_completes_the_task(make_engine, wfe_run):
    engine = make_engine()
    calls: list[str] = []
    register(engine, ["a", "b"], calls)
    engine.register_workflow("w", [Phase("a", next_classifications=[]), Phase("b")])

    task = wfe_run(run_task(engine, None, "w"))
    assert calls == ["a"]
    assert task.status is TaskStatus.COMPLETED
    assert set(task.outputs) == {"a"}


def test_one_next_classification_jumps_there(make_engine, wfe_run):
    engine = make_engine()
    calls: list[str] = []
    register(engine, ["a", "b", "c"], calls)
    engine.register_workflow("w", [Phase("a", next_classifications=["c"]), Phase("b"), Phase("c")])

    task = wfe_run(run_task(engine, None, "w"))
    assert calls == ["a", "c"]
    assert task.status is TaskStatus.COMPLETED


def test_a_loop_back_to_an_earlier_phase_runs_it_again(make_engine, wfe_run):
    engine = make_engine()
    calls: list[str] = []

    async def draft(task: Task) -> None:
        calls.append("draft")
        task.context["drafts"] = task.context.get("drafts", 0) + 1
        task.output = task.context["drafts"]

    async def review(task: Task) -> None:
        calls.append("review")
        task.next_classification = "publish" if task.context["drafts"] >= 2 else "draft"

    engine.register_handler("draft", draft)
    engine.register_handler("review", review)
    engine.register_handler("publish", recorder(calls))
    engine.register_workflow(
        "w",
        [
            Phase("draft"),
            Phase("review", next_classifications=["draft", "publish"]),
            Phase("publish"),
        ],
    )

    task = wfe_run(run_task(engine, None, "w"))
    assert calls == ["draft", "review", "draft", "review", "publish"]
    assert task.status is TaskStatus.COMPLETED
    assert task.context == {"drafts": 2}
    assert task.outputs["draft"] == 2


def test_several_next_classifications_handler_chooses(make_engine, wfe_run):
    engine = make_engine()
    calls: list[str] = []

    async def triage(task: Task) -> None:
        calls.append("triage")
        task.next_classification = task.data["route"]
        task.output = task.data["route"]

    engine.register_handler("triage", triage)
    register(engine, ["fast", "slow"], calls)
    engine.register_workflow(
        "w",
        [
            Phase("triage", next_classifications=["fast", "slow"]),
            Phase("fast", next_classifications=[]),
            Phase("slow", next_classifications=[]),
        ],
    )

    task = wfe_run(run_task(engine, {"route": "slow"}, "w"))
    assert calls == ["triage", "slow"]
    assert set(task.outputs) == {"triage", "slow"}
    assert task.status is TaskStatus.COMPLETED


def test_several_next_classifications_default_to_the_first(make_engine, wfe_run):
    engine = make_engine()
    calls: list[str] = []
    picks = {"none": None, "bogus": "nowhere"}

    async def triage(task: Task) -> None:
        calls.append("triage")
        task.next_classification = picks[task.data]

    engine.register_handler("triage", triage)
    register(engine, ["fast", "slow"], calls)
    engine.register_workflow(
        "w",
        [
            Phase("triage", next_classifications=["slow", "fast"]),
            Phase("fast", next_classifications=[]),
            Phase("slow", next_classifications=[]),
        ],
    )

    async def scenario():
        results = []
        for pick in ("none", "bogus"):
            calls.clear()
            task = await engine.submit_task(pick, "w")
            await engine.run_until_idle()
            results.append((list(calls), await engine.get_task(task.id)))
        return results

    (calls_none, plain), (calls_bogus, bogus) = wfe_run(scenario())
    assert calls_none == ["triage", "slow"]
    assert calls_bogus == ["triage", "slow"]
    assert plain.status is bogus.status is TaskStatus.COMPLETED
    # A choice outside the allowed list is not silently honoured; the history says so.
    assert "route_ignored" in events(bogus)


@pytest.mark.parametrize(
    ("nxt", "ran", "allowed"),
    [(None, ["pick", "b", "c"], ["b"]), ([], ["pick"], []), (["b"], ["pick", "b", "c"], ["b"])],
    ids=["list_order", "none", "one"],
)
def test_a_route_the_phase_does_not_offer_is_recorded_as_ignored(
    make_engine, wfe_run, nxt, ran, allowed
):
    """Whatever the phase's next_classifications, a route not taken is not dropped silently."""
    engine = make_engine()
    calls: list[str] = []

    async def pick(task: Task) -> None:
        calls.append("pick")
        task.next_classification = "c"  # wants to skip "b"

    engine.register_handler("pick", pick)
    register(engine, ["b", "c"], calls)
    engine.register_workflow(
        "w",
        [Phase("pick", next_classifications=nxt), Phase("b"), Phase("c")],
    )

    task = wfe_run(run_task(engine, None, "w"))
    assert task.status is TaskStatus.COMPLETED
    assert calls == ran
    [ignored] = [e for e in task.history if e["event"] == "route_ignored"]
    assert {k: ignored[k] for k in ("phase", "wanted", "allowed")} == {
        "phase": "pick",
        "wanted": "c",
        "allowed": allowed,
    }


def test_a_route_the_phase_takes_anyway_is_not_recorded_as_ignored(make_engine, wfe_run):
    engine = make_engine()

    async def pick(task: Task) -> None:
        task.next_classification = "b"  # where list order goes anyway

    engine.register_handler("pick", pick)
    register(engine, ["b"], [])
    engine.register_workflow("w", [Phase("pick"), Phase("b")])

    task = wfe_run(run_task(engine, None, "w"))
    assert task.status is TaskStatus.COMPLETED
    assert "route_ignored" not in events(task)


def test_preclassified_task_starts_at_its_phase(make_engine, wfe_run):
    engine = make_engine()
    calls: list[str] = []
    register(engine, ["a", "b", "c"], calls)
    engine.register_workflow("w", [Phase("a"), Phase("b"), Phase("c")])

    async def scenario():
        task = await engine.submit_task(None, "w", classification="b")
        await engine.run_until_idle()
        return await engine.get_task(task.id)

    task = wfe_run(scenario())
    assert calls == ["b", "c"]
    assert set(task.outputs) == {"b", "c"}


class SubmissionWatch:
    """A wfe_task_submitted plugin that records the id of each task submitted."""

    def __init__(self) -> None:
        self.submitted: list[str] = []

    @hookimpl
    def wfe_task_submitted(self, task: Task) -> None:
        self.submitted.append(task.id)


class Classifier:
    """A wfe_classify plugin that routes by the task's data."""

    def __init__(self) -> None:
        self.seen: list[object] = []

    @hookimpl
    def wfe_classify(self, task: Task, engine: ECSWorkflowEngine) -> str | None:
        self.seen.append(task.data)
        return task.data.get("go")


def test_classifier_hook_routes_unclassified_tasks(make_engine, wfe_run):
    classifier = Classifier()
    engine = make_engine(plugins=[classifier])
    calls: list[str] = []
    register(engine, ["a", "b", "c"], calls)
    engine.register_workflow("w", [Phase("a"), Phase("b"), Phase("c")])

    async def scenario():
        routed = await engine.submit_task({"go": "c"}, "w")
        await engine.run_until_idle()
        routed_calls = list(calls)
        calls.clear()
        passed = await engine.submit_task({"go": None}, "w")
        await engine.run_until_idle()
        preclassified = await engine.submit_task({"go": "a"}, "w", classification="b")
        await engine.run_until_idle()
        return (
            routed_calls,
            await engine.get_task(routed.id),
            await engine.get_task(passed.id),
            await engine.get_task(preclassified.id),
        )

    routed_calls, routed, passed, preclassified = wfe_run(scenario())
    assert routed_calls == ["c"]
    assert routed.status is TaskStatus.COMPLETED and set(routed.outputs) == {"c"}
    [classified] = [e for e in routed.history if e["event"] == "classified"]
    assert (classified["classification"], classified["plugin"]) == ("c", "Classifier")
    # No answer: the workflow's first phase.
    assert passed.status is TaskStatus.COMPLETED and set(passed.outputs) == {"a", "b", "c"}
    # A pre-classified task never asks the classifier.
    assert {"go": "a"} not in classifier.seen
    assert set(preclassified.outputs) == {"b", "c"}


def test_classifier_answering_unknown_classification_fails_the_task(make_engine, wfe_run):
    engine = make_engine(plugins=[Classifier()])
    calls: list[str] = []
    register(engine, ["a"], calls)
    engine.register_workflow("w", [Phase("a")])

    task = wfe_run(run_task(engine, {"go": "mystery"}, "w"))
    assert calls == []
    assert task.status is TaskStatus.FAILED
    assert task.error == (
        "InvalidTaskError: plugin 'Classifier' classified the task as 'mystery', "
        "a classification workflow 'w' does not have"
    )


class TypeRecorder:
    """An adapter that records the task type it was chosen for."""

    def __init__(self, kind: str, seen: list[tuple[str, str]]) -> None:
        self.kind = kind
        self.seen = seen

    async def run(self, task: Task, phase: Phase, engine: ECSWorkflowEngine) -> None:
        self.seen.append((phase.target_classification, self.kind))
        task.output = self.kind


def test_phase_assigned_to_overrides_the_task_type(make_engine, wfe_run):
    engine = make_engine()
    seen: list[tuple[str, str]] = []
    for kind in TaskType:
        engine.register_adapter(kind, TypeRecorder(kind.value, seen))
    engine.register_workflow(
        "w",
        [
            Phase("plain"),
            Phase("by_person", assigned_to="human"),
            Phase("by_program", assigned_to=TaskType.FUNCTIONAL),
        ],
    )

    async def scenario():
        ai = await engine.submit_task(None, "w")
        fn = await engine.submit_task(None, "w", assigned_to="functional")
        await engine.run_until_idle()
        return await engine.get_task(ai.id), await engine.get_task(fn.id)

    ai, fn = wfe_run(scenario())
    assert ai.assigned_to is TaskType.AGENTIC  # "ai" is stored as agentic
    assert fn.assigned_to is TaskType.FUNCTIONAL
    assert ai.outputs == {"plain": "agentic", "by_person": "human", "by_program": "functional"}
    assert fn.outputs == {"plain": "functional", "by_person": "human", "by_program": "functional"}


def test_output_is_none_after_a_phase_that_set_none(make_engine, wfe_run):
    engine = make_engine()

    async def first(task: Task) -> None:
        task.output = {"big": "result"}

    async def second(task: Task) -> None:
        assert task.output is None  # each phase starts without the previous output
        assert task.outputs["first"] == {"big": "result"}

    engine.register_handler("first", first)
    engine.register_handler("second", second)
    engine.register_workflow("w", [Phase("first"), Phase("second")])

    task = wfe_run(run_task(engine, None, "w"))
    assert task.status is TaskStatus.COMPLETED
    assert task.output is None
    assert task.outputs == {"first": {"big": "result"}, "second": None}


def test_task_fields_history_and_timestamps(make_engine, wfe_run):
    engine = make_engine()
    seen_attempts: list[tuple[str, int]] = []

    async def flaky(task: Task) -> None:
        seen_attempts.append((task.classification, task.attempts))
        if task.attempts == 1:
            raise RuntimeError("first try fails")

    async def steady(task: Task) -> None:
        seen_attempts.append((task.classification, task.attempts))
        task.context["steady"] = True

    engine.register_handler("a", flaky)
    engine.register_handler("b", steady)
    engine.register_workflow("w", [Phase("a", max_attempts=2), Phase("b")])

    async def scenario():
        submitted = await engine.submit_task({"k": "v"}, "w")
        await engine.run_until_idle()
        return submitted, await engine.get_task(submitted.id)

    submitted, task = wfe_run(scenario())
    assert isinstance(task.id, str) and task.id == submitted.id
    # attempts count the current phase's attempts and start again at a new phase
    assert seen_attempts == [("a", 1), ("a", 2), ("b", 1)]
    assert task.context == {"steady": True}
    assert task.error is None  # cleared once the phase succeeded
    assert task.created_at == submitted.created_at
    assert task.updated_at > task.created_at
    assert task.created_at.tzinfo is not None
    kinds = events(task)
    assert kinds[0] == "submitted" and kinds[-1] == "completed"
    assert kinds.count("phase_started") == 3
    assert "attempt_failed" in kinds
    stamps = [datetime.fromisoformat(entry["at"]) for entry in task.history]
    assert stamps == sorted(stamps)


def test_get_task_and_list_tasks(make_engine, wfe_run):
    engine = make_engine()

    async def gate(task: Task) -> None:
        if task.data == "wait":
            engine.suspend(task, TaskStatus.WAITING_HUMAN, reason="please")
        task.output = task.data

    engine.register_handler("a", gate)
    engine.register_workflow("w", [Phase("a")])

    async def scenario():
        assert await engine.get_task("no-such-task") is None
        ids = [(await engine.submit_task(d, "w")).id for d in ("x", "wait", "y")]
        pending = await engine.list_tasks(status=TaskStatus.PENDING)
        await engine.run_until_idle()
        return (
            ids,
            pending,
            await engine.list_tasks(),
            await engine.list_tasks(status="completed"),
            await engine.list_tasks(status=TaskStatus.WAITING_HUMAN),
            await engine.list_tasks(limit=2),
        )

    ids, pending, everything, done, waiting, two = wfe_run(scenario())
    assert {t.id for t in pending} == set(ids)
    assert {t.id for t in everything} == set(ids)
    assert {t.id for t in done} == {ids[0], ids[2]}
    assert [t.id for t in waiting] == [ids[1]]
    assert waiting[0].status is TaskStatus.WAITING_HUMAN
    assert len(two) == 2


def test_list_tasks_of_one_workflow_a_page_at_a_time(make_engine, wfe_run):
    engine = make_engine()
    engine.register_workflow("a", [Phase("p", assigned_to="human")])
    engine.register_workflow("b", [Phase("p", assigned_to="human")])

    async def scenario():
        ids = [(await engine.submit_task(n, "a" if n % 2 else "b")).id for n in range(7)]
        pages = [
            await engine.list_tasks(workflow_name="a", limit=2, offset=offset)
            for offset in (0, 2, 4)
        ]
        return ids, pages

    ids, pages = wfe_run(scenario())
    newest_first = [ids[5], ids[3], ids[1]]
    assert [[t.id for t in page] for page in pages] == [newest_first[:2], newest_first[2:], []]
    with pytest.raises(ValueError, match="offset must be a whole number"):
        wfe_run(engine.list_tasks(offset=-1))


def test_idempotent_submission_with_task_id(make_engine, wfe_run):
    watch = SubmissionWatch()
    engine = make_engine(plugins=[watch])
    calls: list[str] = []
    register(engine, ["a"], calls)
    engine.register_workflow("w", [Phase("a")])

    async def scenario():
        first = await engine.submit_task({"v": 1}, "w", task_id="order-42")
        again = await engine.submit_task({"v": 2}, "w", task_id="order-42")
        await engine.run_until_idle()
        after = await engine.submit_task({"v": 3}, "w", task_id="order-42")
        await engine.run_until_idle()
        return first, again, after, await engine.list_tasks()

    first, again, after, tasks = wfe_run(scenario())
    assert first.id == again.id == after.id == "order-42"
    assert again.data == {"v": 1}
    assert after.status is TaskStatus.COMPLETED  # the stored task, not a new one
    assert [t.id for t in tasks] == ["order-42"]
    assert calls == ["a"]
    assert watch.submitted == ["order-42"]


def test_run_until_idle_returns_while_tasks_wait(make_engine, wfe_run):
    engine = make_engine()
    engine.register_workflow("w", [Phase("ask", assigned_to="human"), Phase("after")])
    engine.register_handler("after", recorder([]))

    assert wfe_run(run_task(engine, None, "w")).status is TaskStatus.WAITING_HUMAN


def test_run_processes_tasks_submitted_while_running_until_stop(make_engine, wfe_run):
    engine = make_engine()
    calls: list[str] = []
    register(engine, ["a"], calls)
    engine.register_workflow("w", [Phase("a")])

    async def scenario():
        async with background(engine) as runner:
            assert engine.running
            first = await engine.submit_task(1, "w")
            await wait_for_status(engine, first.id, TaskStatus.COMPLETED)
            second = await engine.submit_task(2, "w")
            await wait_for_status(engine, second.id, TaskStatus.COMPLETED)
            assert not runner.done()  # run() keeps going when idle
        assert runner.done()
        assert not engine.running

    wfe_run(scenario())
    assert calls == ["a", "a"]


def test_tasks_run_concurrently_up_to_max_concurrency(make_engine, wfe_run):
    engine = make_engine(max_concurrency=3)
    running = 0
    peak = 0
    release = asyncio.Event()

    async def slow(task: Task) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            await release.wait()
        finally:
            running -= 1

    engine.register_handler("a", slow)
    engine.register_workflow("w", [Phase("a")])

    async def scenario():
        ids = [(await engine.submit_task(i, "w")).id for i in range(8)]
        runner = asyncio.create_task(engine.run_until_idle())
        # Three start together (they really overlap) and no more than three.
        await wait_for(lambda: running == 3, 10, "three concurrent handlers")
        assert engine.active_count == 3
        release.set()
        await runner
        return [await engine.get_task(i) for i in ids]

    tasks = wfe_run(scenario())
    assert peak == 3
    assert all(t.status is TaskStatus.COMPLETED for t in tasks)


def test_register_workflow_accepts_a_workflow_spec(make_engine, wfe_run):
    engine = make_engine()
    calls: list[str] = []
    register(engine, ["x", "y"], calls)
    spec = WorkflowSpec(name="ignored", phases=[Phase("x"), Phase("y")], description="d")
    registered = engine.register_workflow("named", spec)
    assert registered.name == "named"
    assert engine.workflows["named"].classifications == ["x", "y"]

    async def scenario():
        task = await engine.submit_task(None, "named")
        await engine.run_until_idle()
        return await engine.get_task(task.id)

    assert wfe_run(scenario()).status is TaskStatus.COMPLETED
    assert calls == ["x", "y"]


def test_a_handler_can_submit_follow_up_tasks(make_engine, wfe_run):
    engine = make_engine()

    async def split(task: Task) -> None:
        children = [
            (await engine.submit_task({"part": part}, "leaf")).id for part in task.data["parts"]
        ]
        task.output = children

    async def leaf(task: Task) -> None:
        task.output = task.data["part"] * 10

    engine.register_handler("split", split)
    engine.register_handler("leaf", leaf)
    engine.register_workflow("tree", [Phase("split")])
    engine.register_workflow("leaf", [Phase("leaf")])

    async def scenario():
        parent = await engine.submit_task({"parts": [1, 2, 3]}, "tree")
        await engine.run_until_idle()
        parent = await engine.get_task(parent.id)
        return [await engine.get_task(i) for i in parent.output]

    children = wfe_run(scenario())
    assert [c.output for c in children] == [10, 20, 30]
    assert all(c.status is TaskStatus.COMPLETED for c in children)


def test_many_tasks_through_two_phases(make_engine, wfe_run):
    engine = make_engine(max_concurrency=50)

    async def inc(task: Task) -> None:
        await asyncio.sleep(0)
        task.output = (task.output or 0) + task.data

    engine.register_handler("a", inc)
    engine.register_handler("b", inc)
    engine.register_workflow("w", [Phase("a"), Phase("b")])

    async def scenario():
        ids = [(await engine.submit_task(i, "w")).id for i in range(400)]
        await engine.run_until_idle()
        store = await engine.get_store()
        return await store.count_tasks(), await engine.get_task(ids[-1])

    counts, last = wfe_run(scenario())
    assert counts == {TaskStatus.COMPLETED: 400}
    assert last.outputs == {"a": 399, "b": 399}


def test_concurrent_submissions_with_one_task_id_make_one_task(wfe_engine_factory, wfe_run):
    engines = [wfe_engine_factory() for _ in range(3)]
    for engine in engines:
        engine.register_workflow("w", [Phase("a")])

    async def scenario():
        results = await asyncio.gather(
            *(e.submit_task({"from": n}, "w", task_id="same") for n, e in enumerate(engines))
        )
        return results, await engines[0].list_tasks()

    results, stored = wfe_run(scenario())
    assert [t.id for t in stored] == ["same"]
    assert len({str(t.data) for t in results}) == 1  # everyone got the stored task


def test_an_engine_runs_once_at_a_time(make_engine, wfe_run):
    from wfcore import WorkflowError

    engine = make_engine()
    engine.register_workflow("w", [Phase("a", assigned_to="human")])

    async def scenario():
        async with background(engine):
            with pytest.raises(WorkflowError):
                await engine.run_until_idle()

    wfe_run(scenario())


def test_submit_with_a_context(make_engine, wfe_run):
    engine = make_engine()

    async def read(task: Task) -> None:
        task.output = task.context["source"]

    engine.register_handler("a", read)
    engine.register_workflow("w", [Phase("a")])

    async def scenario():
        source = {"source": "email"}
        task = await engine.submit_task(None, "w", context=source)
        source["source"] = "changed by the caller later"
        await engine.run_until_idle()
        return await engine.get_task(task.id)

    task = wfe_run(scenario())
    assert task.output == "email"
    assert task.context == {"source": "email"}


def test_submit_tasks_queues_many_at_once_in_order(make_engine, wfe_run):
    watch = SubmissionWatch()
    engine = make_engine(plugins=[watch])
    calls: list[str] = []
    register(engine, ["a", "b"], calls)
    engine.register_workflow("w", [Phase("a"), Phase("b")])

    async def scenario():
        earlier = await engine.submit_task("old", "w", task_id="kept")
        tasks = await engine.submit_tasks(
            [
                {"data": 1, "workflow_name": "w"},
                {"data": 2, "workflow_name": "w", "classification": "b", "task_id": "two"},
                {"data": 3, "workflow_name": "w", "assigned_to": "human", "context": {"k": 1}},
                {"data": "new", "workflow_name": "w", "task_id": "kept"},
                {"data": 5, "workflow_name": "w", "task_id": "two"},
            ]
        )
        await engine.run_until_idle()
        stored = [await engine.get_task(t.id) for t in tasks]
        return earlier, tasks, stored

    earlier, tasks, stored = wfe_run(scenario())
    assert [t.data for t in tasks] == [1, 2, 3, "old", 2]  # existing ids: the stored task
    assert tasks[1].id == tasks[4].id == "two"
    assert tasks[2].assigned_to is TaskType.HUMAN and tasks[2].context == {"k": 1}
    assert [t.status for t in stored] == [
        TaskStatus.COMPLETED,
        TaskStatus.COMPLETED,
        TaskStatus.WAITING_HUMAN,
        TaskStatus.COMPLETED,
        TaskStatus.COMPLETED,
    ]
    assert stored[1].outputs == {"b": "out-b"}  # started at its classification
    assert watch.submitted == [earlier.id, tasks[0].id, "two", tasks[2].id]
    assert sorted(calls) == ["a", "a", "a", "b", "b", "b"]


def test_each_task_runs_in_its_own_context(make_engine, wfe_run):
    """Context variables set by one task's handler never reach another's, whether
    the handler suspends or not, and each runs as the current asyncio task."""
    current: contextvars.ContextVar[str] = contextvars.ContextVar("current")
    running: set[asyncio.Task] = set()
    engine = make_engine(max_concurrency=10)

    async def handler(task: Task) -> None:
        seen_at_start = current.get(None)
        current.set(task.id)
        assert asyncio.current_task() not in running, "another task's asyncio task"
        running.add(asyncio.current_task())
        if task.data["suspend"]:
            await asyncio.sleep(0.01)  # others run meanwhile
        task.output = {"start": seen_at_start, "end": current.get()}

    engine.register_handler("a", handler)
    engine.register_workflow("w", [Phase("a")])

    async def scenario():
        tasks = await engine.submit_tasks(
            [{"data": {"suspend": i % 2 == 0}, "workflow_name": "w"} for i in range(10)]
        )
        await engine.run_until_idle()
        return [await engine.get_task(t.id) for t in tasks]

    for task in wfe_run(scenario()):
        assert task.output == {"start": None, "end": task.id}


def test_a_producer_submitting_in_a_loop_does_not_starve_the_worker(make_engine, wfe_run):
    engine = make_engine()
    completed: list[str] = []

    # Async, so that only the event loop's turns decide what runs when: a plain
    # handler or hook would run in a thread, whose turn a busy machine can delay.
    async def handle(task: Task) -> None:
        task.output = task.data

    async def count(task: Task) -> None:
        completed.append(task.id)

    engine.register_handler("a", handle)
    engine.register_workflow("w", [Phase("a", assigned_to="functional")])
    engine.register_task_completed_hook(count)

    async def scenario():
        worker = asyncio.create_task(engine.run())
        done_while_submitting = 0
        for i in range(300):
            await engine.submit_task(i, "w")
            done_while_submitting = len(completed)
        await wait_for(lambda: len(completed) == 300, what="every task")
        engine.stop()
        await worker
        return done_while_submitting

    assert wfe_run(scenario()) > 0


def test_start_phases_keep_submitters_from_skipping_a_person(wfe_engine_factory, wfe_run):
    """Whoever can submit (Kafka, the dashboard) must not start a refund at 'pay'."""
    engine = wfe_engine_factory()
    engine.register_workflow(
        "refund",
        [Phase("approve", assigned_to="human"), Phase("pay", assigned_to="human")],
        start_phases=["approve"],
    )

    async def scenario():
        with pytest.raises(InvalidTaskError) as refused:
            await engine.submit_task({"amount": 10**6}, "refund", classification="pay")
        allowed = await engine.submit_task({}, "refund", classification="approve")
        first = await engine.submit_task({}, "refund")  # no classification: the first phase
        await engine.run_until_idle()
        # Another process reads the rule from the store.
        other = wfe_engine_factory()
        with pytest.raises(InvalidTaskError):
            await other.submit_task({}, "refund", classification="pay")
        return str(refused.value), allowed, first, await engine.list_tasks()

    said, allowed, first, stored = wfe_run(scenario())
    assert said == (
        "workflow 'refund' lets a submitted task start only at 'approve' (start_phases), "
        "not at 'pay'; submit it without a classification to start at its first phase"
    )
    assert {t.id for t in stored} == {allowed.id, first.id}
    assert all(t.classification == "approve" for t in stored)


def test_start_phases_must_name_phases_of_the_workflow(make_engine):
    engine = make_engine()
    with pytest.raises(InvalidWorkflowError, match="start_phases: unknown classification 'pya'"):
        engine.register_workflow("w", [Phase("approve"), Phase("pay")], start_phases=["pya"])
    with pytest.raises(InvalidWorkflowError, match="not one string"):
        engine.register_workflow("w", [Phase("approve")], start_phases="approve")
    spec = workflow_from_dict(
        {"name": "w", "phases": [{"target_classification": "a"}], "start_phases": []}
    )
    assert spec.start_phases == [] and workflow_to_dict(spec)["start_phases"] == []

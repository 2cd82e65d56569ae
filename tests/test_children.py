"""Child tasks: a phase submits tasks with ``submit_task(..., parent=task)``, waits for
them with ``engine.wait_for_children(task)``, and goes on with their results once
the last has finished."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from core_util import background, events, run_task, wait_for, wait_for_status

from wfcore import (
    ECSWorkflowEngine,
    InvalidTaskError,
    PermanentError,
    Phase,
    Task,
    TaskStatus,
)
from wfcore.model import utcnow


def _fan_out_engine(make_engine: Any, **kwargs: Any) -> ECSWorkflowEngine:
    """``batch`` splits its data into one ``page`` task per item and waits for them;
    ``merge`` reads what they did. A page named "bad" cannot be read."""
    engine: ECSWorkflowEngine = make_engine(**kwargs)

    async def split(task: Task) -> None:
        for page in task.data:
            await engine.submit_task(page, "page", parent=task)
        engine.wait_for_children(task)

    async def read(task: Task) -> None:
        if task.data == "bad":
            raise PermanentError("page 'bad' is unreadable")
        task.output = task.data.upper()

    async def merge(task: Task) -> None:
        results = task.outputs["split"]
        task.output = {
            "text": [r["output"] for r in results if r["status"] == "completed"],
            "failed": [r["id"] for r in results if r["status"] != "completed"],
        }

    engine.register_handler("split", split)
    engine.register_handler("read", read)
    engine.register_handler("merge", merge)
    engine.register_workflow("batch", [Phase("split"), Phase("merge")])
    engine.register_workflow("page", [Phase("read")])
    return engine


def test_a_phase_waits_for_its_children_and_goes_on_with_their_results(make_engine, wfe_run):
    engine = _fan_out_engine(make_engine)

    async def scenario() -> tuple[Task, list[Task]]:
        parent = await engine.submit_task(["a", "bad", "c"], "batch")
        # No worker checks on the children meanwhile (the first check is seconds
        # away): the last child to finish moves its parent on.
        await engine.run_until_idle()
        done = await engine.get_task(parent.id)
        assert done is not None
        children = [await engine.get_task(i) for i in done.children]
        return done, children  # type: ignore[return-value]

    parent, children = wfe_run(scenario())
    assert parent.status is TaskStatus.COMPLETED, parent.error
    assert parent.children == [f"{parent.id}.1", f"{parent.id}.2", f"{parent.id}.3"]
    assert [c.parent_id for c in children] == [parent.id] * 3
    assert [c.status for c in children] == [
        TaskStatus.COMPLETED,
        TaskStatus.FAILED,
        TaskStatus.COMPLETED,
    ]
    assert parent.outputs["split"] == [
        {"id": f"{parent.id}.1", "status": "completed", "output": "A", "error": None},
        {
            "id": f"{parent.id}.2",
            "status": "failed",
            "output": None,
            "error": "PermanentError: page 'bad' is unreadable",
        },
        {"id": f"{parent.id}.3", "status": "completed", "output": "C", "error": None},
    ]
    assert parent.output == {"text": ["A", "C"], "failed": [f"{parent.id}.2"]}
    assert parent.waiting_for is None
    joined = [e for e in parent.history if e["event"] == "children_finished"]
    assert joined == [
        {
            "at": joined[0]["at"],
            "event": "children_finished",
            "phase": "split",
            "completed": 2,
            "failed": 1,
        }
    ]
    assert events(parent).count("suspended") == 1


def test_children_finished_before_their_parent_waits_are_joined_when_it_does(make_engine, wfe_run):
    engine = make_engine()

    async def split(task: Task) -> None:
        child = await engine.submit_task("x", "page", parent=task)

        async def child_done() -> bool:
            found = await engine.get_task(child.id)
            return found is not None and found.status is TaskStatus.COMPLETED

        await wait_for(child_done, what="the child to complete before its parent waits")
        engine.wait_for_children(task)

    async def read(task: Task) -> None:
        task.output = "read"

    engine.register_handler("split", split)
    engine.register_handler("read", read)
    engine.register_workflow("batch", [Phase("split")])
    engine.register_workflow("page", [Phase("read")])

    parent = wfe_run(run_task(engine, None, "batch"))
    assert parent.status is TaskStatus.COMPLETED
    assert parent.output == [
        {"id": f"{parent.id}.1", "status": "completed", "output": "read", "error": None}
    ]


def test_a_phase_without_children_goes_on_at_once(make_engine, wfe_run):
    engine = _fan_out_engine(make_engine)

    parent = wfe_run(run_task(engine, [], "batch"))
    assert parent.status is TaskStatus.COMPLETED
    assert parent.outputs["split"] == []
    assert parent.output == {"text": [], "failed": []}


def test_a_worker_checking_at_the_deadline_joins_children_nobody_reported(make_engine, wfe_run):
    # As after a worker died between finishing the last child and telling its parent:
    # the children are finished in the store, the parent still waits.
    engine = _fan_out_engine(make_engine)

    async def direct() -> tuple[Task, Task]:
        store = await engine.get_store()
        parent = Task(
            data=None,
            workflow_name="batch",
            classification="split",
            id="waiting",
            status=TaskStatus.WAITING_IO,
            waiting_reason="waiting for 1 child task(s) to finish",
            children=["waiting.1"],
            waiting_for=["waiting.1"],
            deadline=utcnow() + timedelta(hours=1),
        )
        parent.record("suspended", phase="split", status="waiting_io")
        child = Task(
            data="z",
            workflow_name="page",
            id="waiting.1",
            parent_id="waiting",
            status=TaskStatus.COMPLETED,
            output="Z",
        )
        await store.insert_tasks([parent, child])
        await engine.run_until_idle()
        unchecked = await store.get_task("waiting")
        assert unchecked is not None
        # The next check is due: a worker claims it, and finds the child finished.
        unchecked.deadline = utcnow() - timedelta(seconds=1)
        assert await store.update_task(unchecked)
        await engine.run_until_idle()
        done = await store.get_task("waiting")
        assert done is not None
        return unchecked, done

    unchecked, done = wfe_run(direct())
    assert unchecked.status is TaskStatus.WAITING_IO
    assert done.status is TaskStatus.COMPLETED, done.error
    assert done.outputs["split"] == [
        {"id": "waiting.1", "status": "completed", "output": "Z", "error": None}
    ]
    assert done.output == {"text": ["Z"], "failed": []}


def test_a_check_that_finds_a_child_running_sets_the_next_one_later(make_engine, wfe_run):
    engine = _fan_out_engine(make_engine)
    engine.register_workflow("slow", [Phase("check", assigned_to="human")])

    async def scenario() -> tuple[Task, Task]:
        store = await engine.get_store()
        parent = Task(
            workflow_name="batch",
            classification="split",
            id="waiting",
            status=TaskStatus.WAITING_IO,
            children=["waiting.1"],
            waiting_for=["waiting.1"],
            deadline=utcnow() - timedelta(seconds=1),
        )
        parent.record("suspended", phase="split", status="waiting_io")
        # A child waiting for a person: not finished.
        child = Task(
            workflow_name="slow",
            classification="check",
            id="waiting.1",
            parent_id="waiting",
            status=TaskStatus.WAITING_HUMAN,
        )
        await store.insert_tasks([parent, child])
        before = await store.get_task("waiting")
        await engine.run_until_idle()
        after = await store.get_task("waiting")
        assert before is not None and after is not None
        return before, after

    before, after = wfe_run(scenario())
    assert after.status is TaskStatus.WAITING_IO
    assert after.waiting_for == ["waiting.1"]
    assert after.deadline is not None and after.deadline > utcnow() + timedelta(seconds=3)
    assert after.history == before.history  # a check leaves no event behind


def test_a_phase_run_again_finds_the_children_its_failed_attempt_submitted(make_engine, wfe_run):
    engine = make_engine(retry_delay=0.01)
    reads: list[str] = []

    async def split(task: Task) -> None:
        for page in ("a", "b"):
            await engine.submit_task(page, "page", parent=task)
        if task.attempts == 1:
            raise RuntimeError("lost the connection after submitting")
        engine.wait_for_children(task)

    async def read(task: Task) -> None:
        reads.append(task.id)
        task.output = task.data

    engine.register_handler("split", split)
    engine.register_handler("read", read)
    engine.register_workflow("batch", [Phase("split", max_attempts=2)])
    engine.register_workflow("page", [Phase("read")])

    async def scenario() -> tuple[Task, int]:
        parent = await engine.submit_task(None, "batch")
        await engine.run_until_idle()
        found = await engine.get_task(parent.id)
        assert found is not None
        counts = await (await engine.get_store()).count_tasks("page")
        return found, sum(counts.values())

    parent, pages = wfe_run(scenario())
    assert parent.status is TaskStatus.COMPLETED, parent.error
    assert parent.children == [f"{parent.id}.1", f"{parent.id}.2"]
    assert pages == 2
    assert sorted(reads) == [f"{parent.id}.1", f"{parent.id}.2"]
    assert [r["output"] for r in parent.output] == ["a", "b"]


def test_cancelling_a_child_counts_as_its_end_and_resume_ends_the_wait_early(make_engine, wfe_run):
    engine = make_engine()

    async def split(task: Task) -> None:
        for page in task.data:
            await engine.submit_task(page, "slow", parent=task)
        engine.wait_for_children(task)

    engine.register_handler("split", split)
    engine.register_workflow("batch", [Phase("split")])
    # Its tasks wait for a person: only a cancel finishes them here.
    engine.register_workflow("slow", [Phase("check", assigned_to="human")])

    async def scenario() -> tuple[Task, Task, Task]:
        await engine.submit_task(["x"], "batch", task_id="c")
        await engine.submit_task(["y"], "batch", task_id="r")
        await engine.run_until_idle()
        await engine.cancel("c.1")
        one = await engine.get_task("c")
        await engine.resume("r", output={"by": "hand"})
        await engine.resume("r.1", output="late")
        two = await engine.get_task("r")
        child = await engine.get_task("r.1")
        assert one is not None and two is not None and child is not None
        return one, two, child

    one, two, child = wfe_run(scenario())
    assert one.status is TaskStatus.COMPLETED
    assert one.output == [{"id": "c.1", "status": "cancelled", "output": None, "error": None}]
    assert two.status is TaskStatus.COMPLETED
    assert two.output == {"by": "hand"}
    assert two.waiting_for is None
    assert "children_finished" not in events(two)  # its child ended after the answer
    assert child.status is TaskStatus.COMPLETED


def test_parent_and_wait_for_children_are_for_the_phase_running_the_task(make_engine, wfe_run):
    engine = make_engine()
    problems: list[str] = []

    async def split(task: Task) -> None:
        for bad in ("not-a-task", task.copy()):
            try:
                await engine.submit_task(None, "page", parent=bad)  # type: ignore[arg-type]
            except InvalidTaskError as exc:
                problems.append(str(exc))
        try:
            await engine.submit_task(None, "page", task_id="taken", parent=task)
        except InvalidTaskError as exc:
            problems.append(str(exc))
        task.waiting_for = ["x"]  # only wait_for_children sets it

    engine.register_handler("split", split)
    engine.register_handler("read", lambda task: None)
    engine.register_workflow("batch", [Phase("split")])
    engine.register_workflow("page", [Phase("read")])

    async def scenario() -> Task:
        await engine.submit_task(None, "page", task_id="taken")
        parent = await engine.submit_task(None, "batch")
        await engine.run_until_idle()
        with pytest.raises(InvalidTaskError, match="wait_for_children\\(\\) is for a task"):
            engine.wait_for_children(parent)
        found = await engine.get_task(parent.id)
        assert found is not None
        return found

    parent = wfe_run(scenario())
    assert problems[0].startswith(
        "parent must be the Task object of a phase this engine runs (the handler's task), "
        "not str (a task id)"
    )
    assert problems[1].startswith("parent= takes the task of a phase this engine is running")
    assert problems[2] == (
        f"task 'taken' exists already, and is not a child of task {parent.id!r}: give the "
        "child another task_id"
    )
    assert parent.status is TaskStatus.FAILED
    assert parent.error == (
        "InvalidTaskError: a phase may not set task.waiting_for (call engine.wait_for_children())"
    )
    assert parent.children == []


def test_children_run_by_another_worker_on_the_store_move_their_parent_on(
    wfe_engine_factory, wfe_store_url, wfe_run
):
    # One engine runs only the parents, another (as another process would) only the
    # children: the one finishing the last child moves the parent on through the store.
    parents = wfe_engine_factory(store=wfe_store_url, only_workflows=["batch"], poll_interval=0.02)
    pages = wfe_engine_factory(store=wfe_store_url, only_workflows=["page"], poll_interval=0.02)
    for engine in (parents, pages):
        _register_batch(engine)

    async def scenario() -> Task:
        parent = await parents.submit_task(["a", "b", "c"], "batch")
        async with background(parents), background(pages):
            return await wait_for_status(parents, parent.id, TaskStatus.COMPLETED, timeout=3)

    parent = wfe_run(scenario())
    assert parent.output == {"text": ["A", "B", "C"], "failed": []}
    ran = {e.get("worker") for e in parent.history if e["event"] == "phase_started"}
    assert ran == {parents.worker_id}


def _register_batch(engine: ECSWorkflowEngine) -> None:
    async def split(task: Task) -> None:
        for page in task.data:
            await engine.submit_task(page, "page", parent=task)
        engine.wait_for_children(task)

    async def read(task: Task) -> None:
        task.output = task.data.upper()

    async def merge(task: Task) -> None:
        task.output = {
            "text": [r["output"] for r in task.outputs["split"]],
            "failed": [r["id"] for r in task.outputs["split"] if r["status"] != "completed"],
        }

    engine.register_handler("split", split)
    engine.register_handler("read", read)
    engine.register_handler("merge", merge)
    engine.register_workflow("batch", [Phase("split"), Phase("merge")])
    engine.register_workflow("page", [Phase("read")])


_SHOW_APP = """\
from wfcore import ECSWorkflowEngine, Phase

engine = ECSWorkflowEngine()


async def split(task):
    for page in task.data:
        await engine.submit_task(page, "page", parent=task)
    engine.wait_for_children(task, timeout=86400)


engine.register_handler("split", split)
engine.register_workflow("batch", [Phase("split", assigned_to="functional")])
engine.register_workflow("page", [Phase("check", assigned_to="human")])
"""


def test_wfe_show_names_a_tasks_parent_and_children(wfe, tmp_path):
    (tmp_path / "children_app.py").write_text(_SHOW_APP)
    app = ("--app", "children_app:engine")
    parent = wfe("submit", "batch", "--data", '["a", "b"]', "--id", "doc", *app)
    assert parent.stdout.strip() == "doc"
    wfe("worker", "children_app:engine", "--until-idle", "--quiet")
    shown = wfe("show", "doc").stdout.splitlines()
    assert "status    waiting_io" in shown
    assert "waiting   waiting for 2 child task(s) to finish" in shown
    assert "children  2: doc.1, doc.2" in shown
    assert [line for line in shown if line.startswith("checks    ")], shown
    [until] = [line for line in shown if line.startswith("until     ")]
    assert until.endswith(" (then it goes on, its children finished or not)")
    assert not [line for line in shown if line.startswith("deadline")]
    child = wfe("show", "doc.1").stdout.splitlines()
    assert "parent    doc" in child
    assert "status    waiting_human" in child
    wfe("cancel", "doc.2")
    listed = [line.split()[:4] for line in wfe("tasks", "--parent", "doc").stdout.splitlines()]
    assert listed == [
        ["ID", "WORKFLOW", "PHASE", "STATUS"],
        ["doc.1", "page", "check", "waiting_human"],
        ["doc.2", "page", "check", "cancelled"],
    ]
    waiting = wfe("tasks", "--parent", "doc", "--status", "waiting", "--json").stdout
    assert [t["id"] for t in json.loads(waiting)] == ["doc.1"]
    paged = wfe("tasks", "--parent", "doc", "--limit", "1").stdout.splitlines()
    assert paged[-1] == "(1 of 2 shown; --limit N or --offset N for more)"
    unknown = wfe("tasks", "--parent", "dco", check=False)
    assert unknown.returncode == 1  # as `wfe show dco`: an unknown task, not a usage error
    assert unknown.stderr == "Error: unknown task 'dco' (--parent)\n"
    assert wfe("cancel", "doc", "--children").stdout == "doc cancelled\n"
    statuses = json.loads(wfe("tasks", "--parent", "doc", "--json").stdout)
    assert [t["status"] for t in statuses] == ["cancelled", "cancelled"]


def test_submit_tasks_submits_many_children_in_one_call(make_engine, wfe_run):
    engine = make_engine()
    refused: list[object] = []

    async def split(task: Task) -> None:
        answers = await engine.submit_tasks(
            [
                {"data": "a", "workflow_name": "page", "parent": task},
                {"data": "b", "workflow_name": "page", "parent": "not-a-task"},
                {"data": "c", "workflow_name": "page", "parent": task, "task_id": "mine"},
                {"data": "d", "workflow_name": "page", "parent": task},
            ],
            return_exceptions=True,
        )
        refused.extend(a for a in answers if not isinstance(a, Task))
        engine.wait_for_children(task)

    async def read(task: Task) -> None:
        task.output = task.data

    engine.register_handler("split", split)
    engine.register_handler("read", read)
    engine.register_workflow("batch", [Phase("split")])
    engine.register_workflow("page", [Phase("read")])

    parent = wfe_run(run_task(engine, None, "batch", task_id="p"))
    assert [type(r) for r in refused] == [InvalidTaskError]
    assert parent.children == ["p.1", "mine", "p.3"]
    assert [(r["id"], r["output"]) for r in parent.output] == [
        ("p.1", "a"),
        ("mine", "c"),
        ("p.3", "d"),
    ]


def test_children_may_have_children_of_their_own(make_engine, wfe_run):
    # A tree two levels deep: each node's phase waits for its two children, and the
    # leaves count 1; the root finishes last, having counted them all.
    engine = make_engine()

    async def split(task: Task) -> None:
        if task.data > 0:
            for _ in range(2):
                await engine.submit_task(task.data - 1, "tree", parent=task)
        engine.wait_for_children(task)

    async def count(task: Task) -> None:
        below = task.outputs["split"]
        task.output = sum(r["output"] for r in below) if below else 1

    engine.register_handler("split", split)
    engine.register_handler("count", count)
    engine.register_workflow("tree", [Phase("split"), Phase("count")])

    async def scenario() -> tuple[Task, Task]:
        root = await engine.submit_task(2, "tree", task_id="root")
        await engine.run_until_idle()
        done = await engine.get_task(root.id)
        leaf = await engine.get_task("root.2.1")
        assert done is not None and leaf is not None
        return done, leaf

    root, leaf = wfe_run(scenario())
    assert root.status is TaskStatus.COMPLETED
    assert root.output == 4
    assert leaf.parent_id == "root.2"
    assert leaf.output == 1


def test_a_child_whose_id_would_be_too_long_is_refused_naming_the_way_out(make_engine, wfe_run):
    engine = make_engine()
    refused: list[str] = []

    async def split(task: Task) -> None:
        try:
            await engine.submit_task(None, "page", parent=task)
        except InvalidTaskError as exc:
            refused.append(str(exc))
        await engine.submit_task(None, "page", parent=task, task_id="short")
        engine.wait_for_children(task)

    engine.register_handler("split", split)
    engine.register_handler("read", lambda task: None)
    engine.register_workflow("batch", [Phase("split")])
    engine.register_workflow("page", [Phase("read")])

    parent = wfe_run(run_task(engine, None, "batch", task_id="x" * 199))
    assert refused == [
        f"the id of task {'x' * 40!r}...'s child would be longer than 200 bytes: give it a task_id"
    ]
    assert parent.status is TaskStatus.COMPLETED
    assert parent.children == ["short"]


def test_cancel_with_children_cancels_the_unfinished_ones_and_theirs(make_engine, wfe_run):
    engine = make_engine()

    async def split(task: Task) -> None:
        for workflow, data in task.data:
            await engine.submit_task(data, workflow, parent=task)
        engine.wait_for_children(task)

    async def done(task: Task) -> None:
        task.output = "done"

    engine.register_handler("split", split)
    engine.register_handler("done", done)
    engine.register_workflow("batch", [Phase("split")])
    engine.register_workflow("quick", [Phase("done")])
    engine.register_workflow("slow", [Phase("check", assigned_to="human")])
    engine.register_workflow("nested", [Phase("split")])  # waits for children of its own
    two = [["quick", None], ["slow", None]]

    async def scenario() -> dict[str, TaskStatus]:
        await engine.submit_task(two, "batch", task_id="keep")
        await engine.submit_task([*two, ["nested", [["slow", None]]]], "batch", task_id="all")
        await engine.run_until_idle()
        await engine.cancel("keep")
        await engine.cancel("all", children=True, by="ops")
        ids = ["keep", "keep.1", "keep.2", "all", "all.1", "all.2", "all.3", "all.3.1"]
        found = {i: await engine.get_task(i) for i in ids}
        assert found["all.2"] is not None
        cancelled = [e for e in found["all.2"].history if e["event"] == "cancelled"]
        assert cancelled[0]["by"] == "ops"
        return {i: t.status for i, t in found.items() if t is not None}

    got = wfe_run(scenario())
    assert got == {
        "keep": TaskStatus.CANCELLED,
        "keep.1": TaskStatus.COMPLETED,
        "keep.2": TaskStatus.WAITING_HUMAN,  # not asked to
        "all": TaskStatus.CANCELLED,
        "all.1": TaskStatus.COMPLETED,  # finished before: left as it is
        "all.2": TaskStatus.CANCELLED,
        "all.3": TaskStatus.CANCELLED,
        "all.3.1": TaskStatus.CANCELLED,
    }


def test_a_wait_with_a_timeout_goes_on_with_the_children_as_they_stand(make_engine, wfe_run):
    engine = make_engine(poll_interval=0.02)

    async def split(task: Task) -> None:
        for workflow in ("quick", "slow", "slow"):
            await engine.submit_task(None, workflow, parent=task)
        engine.wait_for_children(task, timeout=timedelta(seconds=0.3))

    async def done(task: Task) -> None:
        task.output = "done"

    engine.register_handler("split", split)
    engine.register_handler("done", done)
    engine.register_workflow("batch", [Phase("split")])
    engine.register_workflow("quick", [Phase("done")])
    engine.register_workflow("slow", [Phase("check", assigned_to="human")])

    async def scenario() -> Task:
        parent = await engine.submit_task(None, "batch", task_id="p")
        async with background(engine):
            return await wait_for_status(engine, parent.id, TaskStatus.COMPLETED, timeout=5)

    parent = wfe_run(scenario())
    assert parent.output == [
        {"id": "p.1", "status": "completed", "output": "done", "error": None},
        {"id": "p.2", "status": "waiting_human", "output": None, "error": None},
        {"id": "p.3", "status": "waiting_human", "output": None, "error": None},
    ]
    [suspended] = [e for e in parent.history if e["event"] == "suspended"]
    assert suspended["until"] is not None and suspended["deadline"] == suspended["until"]
    [joined] = [e for e in parent.history if e["event"] == "children_finished"]
    assert joined["wait_ended"] is True
    assert (joined["completed"], joined["waiting_human"]) == (1, 2)


@pytest.mark.parametrize("timeout", [-1, float("nan"), "10", True])
def test_a_wait_timeout_that_is_no_time_fails_the_attempt_naming_it(make_engine, wfe_run, timeout):
    engine = make_engine()

    async def split(task: Task) -> None:
        engine.wait_for_children(task, timeout=timeout)

    engine.register_handler("split", split)
    engine.register_workflow("batch", [Phase("split")])

    parent = wfe_run(run_task(engine, None, "batch"))
    assert parent.status is TaskStatus.FAILED
    assert parent.error.startswith("InvalidTaskError: wait_for_children's timeout")


def test_a_second_wait_without_a_timeout_does_not_keep_the_firsts(make_engine, wfe_run):
    engine = make_engine()

    async def split(task: Task) -> None:
        await engine.submit_task(None, "slow", parent=task)
        engine.wait_for_children(task, timeout=0.05)
        engine.wait_for_children(task)  # thought better of it: as long as it takes

    engine.register_handler("split", split)
    engine.register_workflow("batch", [Phase("split")])
    engine.register_workflow("slow", [Phase("check", assigned_to="human")])

    parent = wfe_run(run_task(engine, None, "batch"))
    assert parent.status is TaskStatus.WAITING_IO
    [suspended] = [e for e in parent.history if e["event"] == "suspended"]
    assert "until" not in suspended


_FAILING_APP = """\
from wfcore import ECSWorkflowEngine, Phase

engine = ECSWorkflowEngine()


async def split(task):
    for page in task.data:
        await engine.submit_task(page, "page", parent=task)
    raise RuntimeError("lost the connection after submitting")


engine.register_handler("split", split)
engine.register_workflow("batch", [Phase("split", assigned_to="functional")])
engine.register_workflow("page", [Phase("check", assigned_to="human")])
"""


def test_wfe_tasks_parent_lists_the_children_of_a_failed_attempt(wfe, tmp_path):
    # The failed attempt's changes to the parent are not kept, its list of children
    # with them; the children it submitted are found by their default ids.
    (tmp_path / "failing_app.py").write_text(_FAILING_APP)
    wfe("submit", "batch", "--data", '["a", "b"]', "--id", "doc", "--app", "failing_app:engine")
    wfe("worker", "failing_app:engine", "--until-idle", "--quiet")
    parent = json.loads(wfe("show", "doc", "--json").stdout)
    assert (parent["status"], parent["children"]) == ("failed", [])
    listed = json.loads(wfe("tasks", "--parent", "doc", "--json").stdout)
    assert [(t["id"], t["status"]) for t in listed] == [
        ("doc.1", "waiting_human"),
        ("doc.2", "waiting_human"),
    ]

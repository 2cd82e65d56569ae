"""Phase.max_concurrency: at most N tasks run a phase at once in a worker; the others
wait for a slot, and a stop hands the waiting ones back unstarted."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from core_util import (
    background,
    background_wfe,
    db_path,
    events,
    submit_with_app,
    wait_for,
    wait_until,
    with_pythonpath,
)

from wfcore import (
    DEFINE_WORKFLOW,
    ECSWorkflowEngine,
    InvalidWorkflowError,
    Phase,
    Task,
    TaskStatus,
    WorkflowSpec,
)
from wfcore.metrics import render_metrics
from wfcore.wire import workflow_from_dict, workflow_to_dict


class Overlap:
    """Counts how many handlers run at once; each one yields while it works."""

    def __init__(self, work: float = 0.01) -> None:
        self.running = 0
        self.peak = 0
        self.calls = 0
        self.work = work

    async def __call__(self, task: Task) -> None:
        self.running += 1
        self.calls += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(self.work)  # the phase's work, during which others may start
        finally:
            self.running -= 1
        task.output = task.data


class OneSlot:
    """An engine whose workflow "w" has one phase with one slot; each task's phase
    waits at a gate until the test opens it. ``entered`` lists the tasks whose phase
    started, in order."""

    def __init__(self, engine: ECSWorkflowEngine) -> None:
        self.engine = engine
        self.gate = asyncio.Event()
        self.entered: list[str] = []
        engine.register_handler("call", self._call)
        engine.register_workflow("w", [Phase("call", max_concurrency=1)])

    async def _call(self, task: Task) -> None:
        self.entered.append(task.id)
        await self.gate.wait()
        task.output = "done"

    async def one_running_two_waiting(self) -> list[Task]:
        """Submit three tasks; return once one runs its phase and two wait for the
        slot (the engine runs in the background meanwhile)."""
        submitted = await self.engine.submit_tasks(
            [{"data": i, "workflow_name": "w"} for i in range(3)]
        )
        await wait_for(lambda: self.entered, what="the first task's phase to start")
        await wait_for(lambda: self.engine.active_count == 3, what="the others to be claimed")
        return submitted


def _phase_started(task: Task, phase: str) -> dict[str, Any]:
    [entry] = [e for e in task.history if e["event"] == "phase_started" and e["phase"] == phase]
    return entry


def test_a_limited_phase_runs_at_most_n_tasks_at_once(make_engine, wfe_run):
    engine = make_engine(max_concurrency=20)
    first, limited = Overlap(), Overlap()
    engine.register_handler("fetch", first)
    engine.register_handler("render", limited)
    engine.register_workflow("w", [Phase("fetch"), Phase("render", max_concurrency=2)])

    async def scenario() -> list[Task]:
        await engine.submit_tasks([{"data": {"i": i}, "workflow_name": "w"} for i in range(12)])
        await engine.run_until_idle()
        return await engine.list_tasks(limit=100)

    tasks = wfe_run(scenario())
    assert [t.status for t in tasks] == [TaskStatus.COMPLETED] * 12
    assert limited.calls == 12
    assert limited.peak == 2
    assert first.peak > 2  # the phase without a limit ran side by side
    queued = [_phase_started(t, "render").get("queued") for t in tasks]
    assert any(q is not None and q > 0 for q in queued), queued
    assert all("queued" not in _phase_started(t, "fetch") for t in tasks)


def test_commands_of_a_limited_phase_never_overlap(wfe_engine_factory, wfe_run, tmp_path: Path):
    log = tmp_path / "runs.log"
    script = textwrap.dedent(
        """
        import os, sys, time
        def note(word):
            with open(sys.argv[1], "a") as f:
                f.write(f"{word} {os.getpid()}\\n")
        note("start")
        time.sleep(0.05)  # the command's work
        note("end")
        """
    )
    engine = wfe_engine_factory(max_concurrency=8)
    engine.register_workflow(
        "w", [Phase("convert", command=[sys.executable, "-c", script, str(log)], max_concurrency=1)]
    )

    async def scenario() -> list[Task]:
        await engine.submit_tasks(
            [
                {"data": {"i": i}, "workflow_name": "w", "assigned_to": "functional"}
                for i in range(5)
            ]
        )
        await engine.run_until_idle()
        return await engine.list_tasks(limit=10)

    tasks = wfe_run(scenario())
    assert [t.status for t in tasks] == [TaskStatus.COMPLETED] * 5, [t.error for t in tasks]
    lines = [line.split() for line in log.read_text().splitlines()]
    assert [word for word, _ in lines] == ["start", "end"] * 5
    # Each command ended before the next one started: same process, start then end.
    assert all(lines[i][1] == lines[i + 1][1] for i in range(0, 10, 2))


def test_a_slot_goes_to_the_waiting_task_of_the_highest_priority(make_engine, wfe_run):
    """Tasks waiting for a phase's slot get it by priority, then in the order they came:
    here the low-priority task reaches the limited phase first, the urgent one after."""
    engine = make_engine()
    gate = asyncio.Event()
    prepared = {name: asyncio.Event() for name in ("holder", "low", "urgent", "normal")}
    entered: list[str] = []

    async def prep(task: Task) -> None:
        await prepared[task.data].wait()

    async def call(task: Task) -> None:
        entered.append(task.data)
        await gate.wait()

    engine.register_handler("prep", prep)
    engine.register_handler("call", call)
    engine.register_workflow("w", [Phase("prep"), Phase("call", max_concurrency=1)])

    async def scenario() -> None:
        async with background(engine):
            for name, priority in (("holder", 0), ("low", -5), ("urgent", 5), ("normal", 0)):
                await engine.submit_task(name, "w", priority=priority)
            await wait_for(lambda: engine.active_count == 4, what="all four to be claimed")
            prepared["holder"].set()
            await wait_for(lambda: entered == ["holder"], what="the holder in the phase")
            # The others reach the slot one by one, in this order.
            for waiting, name in enumerate(("low", "normal", "urgent"), start=1):
                prepared[name].set()
                await wait_for(
                    lambda n=waiting: engine.waiting_for_slots == n, what=f"{name} at the slot"
                )
            gate.set()
            await wait_for(lambda: len(entered) == 4, what="every task's phase")

    wfe_run(scenario())
    assert entered == ["holder", "urgent", "normal", "low"]


def test_the_wait_for_a_slot_is_not_part_of_the_phase_timeout_or_time(make_engine, wfe_run):
    engine = make_engine(max_concurrency=10)
    limited = Overlap(work=0.15)
    engine.register_handler("call", limited)
    # Five runs of 0.15 s one after the other: the last waits 0.6 s, past the timeout.
    engine.register_workflow("w", [Phase("call", timeout=0.5, max_concurrency=1)])

    async def scenario() -> list[Task]:
        await engine.submit_tasks([{"data": i, "workflow_name": "w"} for i in range(5)])
        await engine.run_until_idle()
        return await engine.list_tasks(limit=10)

    tasks = wfe_run(scenario())
    assert [t.status for t in tasks] == [TaskStatus.COMPLETED] * 5, [t.error for t in tasks]
    waits = sorted(_phase_started(t, "call").get("queued", 0.0) for t in tasks)
    assert waits[-1] > 0.5
    for task in tasks:
        [finished] = [e for e in task.history if e["event"] == "phase_finished"]
        assert finished["seconds"] < 0.5


def test_a_stop_hands_back_the_tasks_waiting_for_a_slot_unstarted(make_engine, wfe_run):
    engine = make_engine(max_concurrency=10, shutdown_timeout=30)
    slot = OneSlot(engine)
    entered = slot.entered

    async def scenario() -> list[Task]:
        async with background(engine) as runner:
            submitted = await slot.one_running_two_waiting()
            engine.stop()  # graceful: the running phase may finish, the others must not start
            slot.gate.set()
            await asyncio.wait_for(runner, 15)
        return [await engine.get_task(t.id) for t in submitted]

    tasks = wfe_run(scenario())
    [ran] = [t for t in tasks if t.id in entered]
    assert ran.status is TaskStatus.COMPLETED
    waiting = [t for t in tasks if t.id not in entered]
    assert len(entered) == 1
    for task in waiting:
        assert task.status is TaskStatus.PENDING
        assert task.attempts == 0
        assert "phase_started" not in events(task)
        assert events(task)[-1] == "released"


def test_cancelling_a_task_that_waits_for_a_slot(make_engine, wfe_run):
    engine = make_engine(max_concurrency=10)
    slot = OneSlot(engine)
    entered = slot.entered

    async def scenario() -> list[Task]:
        async with background(engine):
            submitted = await slot.one_running_two_waiting()
            waiting = [t for t in submitted if t.id not in entered]
            await engine.cancel(waiting[0].id)
            slot.gate.set()
            await wait_for(lambda: len(entered) == 2, what="the last task's phase to start")
            await engine.wait_for_task(waiting[1].id, timeout=10)
        ids = [entered[0], *(t.id for t in waiting)]
        return [await engine.get_task(task_id) for task_id in ids]

    first, cancelled, last = wfe_run(scenario())
    assert first.status is TaskStatus.COMPLETED
    assert cancelled.status is TaskStatus.CANCELLED
    assert "phase_started" not in events(cancelled)
    assert last.status is TaskStatus.COMPLETED
    assert entered == [first.id, last.id]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "max_concurrency: must be an integer >= 1 or null, not 0"),
        (-3, "max_concurrency: must be an integer >= 1 or null, not -3"),
        (True, "max_concurrency: must be an integer >= 1 or null, not True"),
        ("2", "max_concurrency: must be an integer >= 1 or null, not '2'"),
        (1.5, "max_concurrency: must be an integer >= 1 or null, not 1.5"),
    ],
)
def test_a_bad_limit_is_refused_naming_the_field(value: Any, message: str):
    with pytest.raises(InvalidWorkflowError, match=f"^phase.{message}$"):
        Phase("call", max_concurrency=value)
    spec = {"name": "w", "phases": [{"target_classification": "a", "max_concurrency": value}]}
    with pytest.raises(InvalidWorkflowError, match=f"^phases\\[0\\].{message}$"):
        workflow_from_dict(spec)


def test_a_human_phase_takes_no_limit():
    with pytest.raises(InvalidWorkflowError, match="human phase waits for a person"):
        Phase("approve", assigned_to="human", max_concurrency=2)


def test_the_limit_is_stored_with_the_workflow_and_left_out_when_unset(wfe_engine_factory, wfe_run):
    spec = WorkflowSpec("w", [Phase("a"), Phase("b", max_concurrency=3)])
    doc = workflow_to_dict(spec)
    # Without a limit the field is not written: earlier releases read such a spec.
    assert "max_concurrency" not in doc["phases"][0]
    assert doc["phases"][1]["max_concurrency"] == 3
    assert workflow_from_dict(doc) == spec

    engine = wfe_engine_factory()
    engine.register_workflow("w", spec.phases)

    async def stored() -> WorkflowSpec | None:
        await engine.get_store()  # stores the workflows registered in code
        other = wfe_engine_factory()
        return await (await other.get_store()).load_workflow("w")

    assert wfe_run(stored()) == spec


def test_a_workflow_defined_at_run_time_can_limit_a_phase(make_engine, wfe_run):
    engine = make_engine(max_concurrency=20)
    limited = Overlap()
    engine.register_handler("render", limited)
    spec = {"name": "built", "phases": [{"target_classification": "render", "max_concurrency": 1}]}

    async def scenario() -> list[Task]:
        defining = await engine.submit_task(spec, None, classification=DEFINE_WORKFLOW)
        await engine.run_until_idle()
        assert (await engine.get_task(defining.id)).status is TaskStatus.COMPLETED
        await engine.submit_tasks([{"data": i, "workflow_name": "built"} for i in range(6)])
        await engine.run_until_idle()
        return await engine.list_tasks(workflow_name="built", limit=10)

    tasks = wfe_run(scenario())
    assert engine.workflows["built"].phases[0].max_concurrency == 1
    assert len(tasks) == 7 and all(t.status is TaskStatus.COMPLETED for t in tasks)
    assert limited.calls == 7  # the defining task ran the phase too
    assert limited.peak == 1


def test_metrics_count_the_tasks_waiting_for_a_slot(make_engine, wfe_run):
    engine = make_engine(max_concurrency=10)
    slot = OneSlot(engine)

    async def scenario() -> tuple[str, str]:
        async with background(engine):
            await slot.one_running_two_waiting()
            during = await render_metrics(engine)
            slot.gate.set()
            await wait_for(lambda: len(slot.entered) == 3, what="every phase to start")
        return during, await render_metrics(engine)

    during, after = wfe_run(scenario())
    waiting = 'wfcore_engine_tasks_waiting_for_slot{workflow="w",phase="call"}'
    assert f"{waiting} 2\n" in during
    assert f"{waiting} 0\n" in after


def stored_status_counts(store_url: str) -> dict[str, int]:
    """The tasks in a SQLite store by status, read through a connection of its own."""
    with sqlite3.connect(f"file:{db_path(store_url)}?mode=ro", uri=True) as conn:
        return dict(conn.execute("SELECT status, count(*) FROM tasks GROUP BY status"))


GATED_APP = """
import os, time
from datetime import datetime, timezone
from pathlib import Path
from wfcore import ECSWorkflowEngine, Phase

folder = Path(os.environ["WFE_TEST_DIR"])

def convert(task):
    (folder / f"started-{task.id}").touch()
    while not (folder / "gate").exists():
        time.sleep(0.02)

engine = ECSWorkflowEngine()
engine.register_handler("convert", convert)
engine.register_workflow("w", [Phase("convert", assigned_to="functional", max_concurrency=1)])
engine.register_schedule(
    "hourly", "w", every=3600, start=datetime(2100, 1, 1, tzinfo=timezone.utc)
)
"""


def test_wfe_worker_names_its_schedules_and_the_tasks_waiting_for_a_slot_as_it_stops(
    tmp_path: Path, worker_env: dict[str, str], wfe_store_url: str
):
    (tmp_path / "gated_app.py").write_text(GATED_APP)
    env = with_pythonpath(worker_env, tmp_path)
    submit_with_app(
        "gated_app:engine", "w", [0, 1, 2], env=env, cwd=tmp_path, assigned_to="functional"
    )
    log = tmp_path / "worker.log"
    with background_wfe("worker", "gated_app:engine", cwd=tmp_path, env=env, log=log) as worker:
        wait_until(lambda: list(tmp_path.glob("started-*")), what="a phase to start")
        wait_until(
            lambda: stored_status_counts(wfe_store_url).get("in_progress") == 3,
            what="the worker to hold all three",
        )
        worker.send_signal(signal.SIGTERM)
        wait_until(lambda: "stopping:" in log.read_text(), what="the stopping line")
        (tmp_path / "gate").touch()
        assert worker.wait(timeout=30) == 0
    said = log.read_text()
    assert "  schedule hourly: a w task every hour, next at 2100-01-01 00:00:00 UTC\n" in said
    assert (
        "stopping: 1 running phase(s) get up to 10s to finish, then go back to the store; "
        "2 waiting for a phase's slot go back now (a second Ctrl-C or SIGTERM: at once)"
    ) in said
    assert len(list(tmp_path.glob("started-*"))) == 1  # the waiting ones never started

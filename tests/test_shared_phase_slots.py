"""Phase.max_concurrency across processes: on SQLite, the slots of a limited phase
are kept in the store, so the limit holds for all the workers on one file."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path

from core_util import db_path, submit_with_app, wait_for, wait_until, with_pythonpath

from wfcore import ECSWorkflowEngine, Phase, Task, TaskStatus
from wfcore.stores.memory import MemoryStore
from wfcore.stores.sqlite import SQLiteStore


class Overlap:
    """Counts how many handlers run at once, across every engine it is given to."""

    def __init__(self) -> None:
        self.running = 0
        self.peak = 0
        self.by_engine: dict[str, int] = {}
        self.gate = asyncio.Event()

    def handler(self, name: str) -> Callable[[Task], Awaitable[None]]:
        async def call(task: Task) -> None:
            self.running += 1
            self.peak = max(self.peak, self.running)
            self.by_engine[name] = self.by_engine.get(name, 0) + 1
            try:
                await self.gate.wait()
            finally:
                self.running -= 1
            task.output = name

        return call


def _two_engines(
    wfe_engine_factory, overlap: Overlap, limit: int, holds: int = 3
) -> list[ECSWorkflowEngine]:
    """Two engines on one SQLite file, as two worker processes would be; each holds
    up to ``holds`` tasks, so that neither takes all a test submits."""
    engines = []
    for name in ("a", "b"):
        engine = wfe_engine_factory(max_concurrency=holds)
        engine.register_handler("call", overlap.handler(name))
        engine.register_workflow("w", [Phase("call", max_concurrency=limit)])
        engines.append(engine)
    return engines


async def _one_runs_and_one_waits(
    a: ECSWorkflowEngine, b: ECSWorkflowEngine, overlap: Overlap
) -> tuple[Task, Task, asyncio.Task[None], asyncio.Task[None]]:
    """With a limit of 1: a's task runs its phase, then b's waits for the store's
    slot. The two tasks, and a's and b's runs (started here)."""
    [first] = await a.submit_tasks([{"data": 0, "workflow_name": "w"}])
    running_a = asyncio.create_task(a.run())
    await wait_for(lambda: overlap.running == 1, what="a's phase to start")
    [second] = await a.submit_tasks([{"data": 1, "workflow_name": "w"}])
    running_b = asyncio.create_task(b.run())
    await wait_for(lambda: b.waiting_for_slots == 1, what="b's task to wait")
    return first, second, running_a, running_b


def test_the_limit_holds_across_workers_on_one_store(wfe_engine_factory, wfe_run):
    overlap = Overlap()
    a, b = _two_engines(wfe_engine_factory, overlap, limit=1)

    async def scenario() -> list[Task]:
        await a.submit_tasks([{"data": i, "workflow_name": "w"} for i in range(5)])
        runs = [asyncio.create_task(e.run_until_idle()) for e in (a, b)]
        # Each worker claims tasks; one phase runs, every other task waits.
        await wait_for(lambda: overlap.running == 1, what="a phase to start")
        await wait_for(
            lambda: a.active_count + b.active_count == 5, what="both workers to hold tasks"
        )
        await wait_for(
            lambda: a.waiting_for_slots + b.waiting_for_slots == 4,
            what="three tasks to wait for the slot",
        )
        assert a.active_count and b.active_count  # both workers hold some
        assert overlap.running == 1
        overlap.gate.set()
        await asyncio.gather(*runs)
        return await a.list_tasks(limit=10)

    tasks = wfe_run(scenario())
    assert [t.status for t in tasks] == [TaskStatus.COMPLETED] * 5
    assert overlap.peak == 1
    assert set(overlap.by_engine) == {"a", "b"}  # both ran some, one at a time
    queued = [e.get("queued") for t in tasks for e in t.history if e["event"] == "phase_started"]
    assert sum(1 for q in queued if q) >= 1, queued


def test_a_limit_of_two_lets_two_run_at_once_across_workers(wfe_engine_factory, wfe_run):
    overlap = Overlap()
    a, b = _two_engines(wfe_engine_factory, overlap, limit=2)

    async def scenario() -> None:
        await a.submit_tasks([{"data": i, "workflow_name": "w"} for i in range(6)])
        runs = [asyncio.create_task(e.run_until_idle()) for e in (a, b)]
        await wait_for(lambda: overlap.running == 2, what="two phases to run")
        await wait_for(lambda: a.waiting_for_slots + b.waiting_for_slots == 4, what="four to wait")
        overlap.gate.set()
        await asyncio.gather(*runs)

    wfe_run(scenario())
    assert overlap.peak == 2


def test_a_task_of_a_higher_priority_asks_the_store_in_place_of_one_of_its_worker(
    wfe_engine_factory, wfe_store_url, wfe_run
):
    """Only the tasks holding one of their worker's slots ask the store. One of a
    higher priority that comes to wait behind such a task takes its place, so the
    store's next free slot goes to it, not to the task that asked first."""
    overlap = Overlap()
    [a, _] = _two_engines(wfe_engine_factory, overlap, limit=1, holds=1)
    [_, b] = _two_engines(wfe_engine_factory, overlap, limit=1, holds=3)

    def asks(task_id: str) -> bool:
        conn = sqlite3.connect(db_path(wfe_store_url), timeout=30)
        try:
            query = "SELECT count(*) FROM phase_slots WHERE task_id = ?"
            return int(conn.execute(query, (task_id,)).fetchone()[0]) > 0
        finally:
            conn.close()

    async def scenario() -> tuple[Task, Task]:
        first, low, running_a, running_b = await _one_runs_and_one_waits(a, b, overlap)
        [high] = await a.submit_tasks([{"data": 2, "workflow_name": "w", "priority": 10}])
        # b claims it, and it waits behind the low one for b's slot; then asks.
        await wait_for(lambda: asks(high.id), what="the urgent task to ask the store")
        overlap.gate.set()  # a's phase ends and frees the store's slot
        await a.wait_for_task(first.id, timeout=10)
        await b.wait_for_task(low.id, timeout=10)
        await b.wait_for_task(high.id, timeout=10)
        a.stop()
        b.stop()
        await asyncio.gather(running_a, running_b)
        return await b.get_task(low.id), await b.get_task(high.id)

    low, high = wfe_run(scenario())

    def started(task: Task) -> str:
        return next(e["at"] for e in task.history if e["event"] == "phase_started")

    assert started(high) < started(low)


def test_a_stop_hands_back_a_task_waiting_for_the_stores_slot(wfe_engine_factory, wfe_run):
    overlap = Overlap()
    a, b = _two_engines(wfe_engine_factory, overlap, limit=1, holds=1)

    async def scenario() -> Task:
        first, second, running_a, running_b = await _one_runs_and_one_waits(a, b, overlap)
        b.stop()
        await running_b
        back = await b.get_task(second.id)
        overlap.gate.set()
        a.stop()
        await running_a
        assert (await a.get_task(first.id)).status is TaskStatus.COMPLETED
        return back

    back = wfe_run(scenario())
    assert back.status is TaskStatus.PENDING
    assert back.attempts == 0
    assert overlap.by_engine == {"a": 1}  # b never started it


def test_a_task_cancelled_while_it_waits_for_the_stores_slot_never_starts(
    wfe_engine_factory, wfe_store_url, wfe_run, monkeypatch
):
    """Cancelled from another process while its worker waits for the store's slot,
    a task does not start its phase when the slot frees: its worker no longer holds
    its lease, so the store refuses it the slot (which would not count either)."""
    # Renewals far apart, so that only the ask for the slot can tell b of the cancel.
    monkeypatch.setattr("wfcore.worker._RENEW_AT_LEAST_EVERY", 60.0)
    overlap = Overlap()
    a, b = _two_engines(wfe_engine_factory, overlap, limit=1, holds=1)
    other = wfe_engine_factory()  # the process that cancels (wfe cancel, a web app)

    def slot_rows(task_id: str) -> int:
        conn = sqlite3.connect(db_path(wfe_store_url), timeout=30)
        try:
            query = "SELECT count(*) FROM phase_slots WHERE task_id = ?"
            return int(conn.execute(query, (task_id,)).fetchone()[0])
        finally:
            conn.close()

    async def scenario() -> Task:
        first, second, running_a, running_b = await _one_runs_and_one_waits(a, b, overlap)
        await other.cancel(second.id)
        # At its next ask the store says the lease is gone: b lets the task go at
        # once, not at its next lease renewal.
        await wait_for(lambda: b.active_count == 0, 5, "b to let the cancelled task go")
        overlap.gate.set()  # a's phase ends and frees the slot
        await a.wait_for_task(first.id, timeout=10)
        # b asks again: it starts the phase (the defect) or is refused, its place
        # in line gone.
        await wait_for(
            lambda: "b" in overlap.by_engine or slot_rows(second.id) == 0,
            what="b to ask for the freed slot again",
        )
        for engine, run in ((a, running_a), (b, running_b)):
            engine.stop()
            await run
        return await other.get_task(second.id)

    cancelled = wfe_run(scenario())
    assert overlap.by_engine == {"a": 1}, "the cancelled task's phase ran"
    assert cancelled.status is TaskStatus.CANCELLED
    assert [e["event"] for e in cancelled.history] == ["submitted", "cancelled"]


def test_of_one_priority_the_tasks_that_waited_a_while_go_first_in_order(tmp_path, wfe_run):
    """SQLite lines up the tasks that have waited longer than phase_slot_line_after;
    before that, a task that asks as a slot is freed may take it."""

    async def scenario() -> list[bool]:
        store = SQLiteStore(tmp_path / "slots.db")
        await store.open()
        try:
            for n in range(3):
                await store.insert_task(Task(id=f"t{n}", data=n, workflow_name="w"))
            await store.claim("w1", 3, 30.0)

            async def take(task_id: str) -> bool:
                return await store.take_phase_slot(task_id, "w1", "w", "p", 1, 0)

            seen = [await take("t0"), await take("t1")]  # t0 runs, t1 waits
            await store.release_phase_slot("t0")
            # t1 has not waited long: t2, asking first, takes the freed slot.
            store.phase_slot_line_after = 3600.0
            seen.append(await take("t2"))
            await store.release_phase_slot("t2")
            # Once t1 has waited long enough, t2 asking again comes after it.
            store.phase_slot_line_after = 0.0
            seen += [await take("t2"), await take("t1"), await take("t2")]
            return seen
        finally:
            await store.close()

    assert wfe_run(scenario()) == [True, False, True, False, True, False]


def test_only_stores_that_share_slots_are_asked():
    """The slots' order and leases are tested by the store contract
    (test_store_contract.py), on every store that shares them."""
    assert SQLiteStore.shares_phase_slots
    assert not MemoryStore.shares_phase_slots  # one process: the worker's own slots


WFE = [sys.executable, "-m", "wfcore.cli"]


def _submit(app: str, n: int, env: dict[str, str], cwd: Path) -> None:
    """Submit n tasks (data 0 to n-1) to workflow "w" of ``app``."""
    submit_with_app(app, "w", list(range(n)), env=env, cwd=cwd)


APP = """
import os, sys
from wfcore import ECSWorkflowEngine, Phase

SCRIPT = '''
import os, sys, time
def note(word):
    with open(sys.argv[1], "a") as f:
        f.write(f"{word} {os.environ['WORKER_PID']}\\\\n")
note("start")
time.sleep(0.2)  # the command's work, long enough for the other worker to start one
note("end")
'''

os.environ["WORKER_PID"] = str(os.getpid())  # the commands it runs say whose they are
# A short poll: a worker waiting for the other's slot looks again soon after it frees.
engine = ECSWorkflowEngine(poll_interval=0.05)
engine.register_workflow(
    "w",
    [
        Phase(
            "convert",
            assigned_to="functional",
            command=[sys.executable, "-c", SCRIPT, os.environ["RUNS_LOG"]],
            max_concurrency=1,
        )
    ],
)
"""


def test_commands_never_overlap_across_worker_processes(tmp_path: Path, worker_env: dict[str, str]):
    (tmp_path / "limited_app.py").write_text(textwrap.dedent(APP))
    log = tmp_path / "runs.log"
    env = with_pythonpath(worker_env, tmp_path, RUNS_LOG=str(log))
    _submit("limited_app:engine", 6, env, tmp_path)
    # Each worker holds one task at a time, so that both get some.
    worker = [*WFE, "worker", "limited_app:engine", "--until-idle", "--concurrency", "1"]
    procs = [
        subprocess.Popen(worker, env=env, cwd=tmp_path, stderr=subprocess.PIPE) for _ in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    lines = [line.split() for line in log.read_text().splitlines()]
    assert len(lines) == 12
    # One command at a time: each start followed by its own end.
    assert [word for word, _ in lines] == ["start", "end"] * 6
    assert all(lines[i][1] == lines[i + 1][1] for i in range(0, 12, 2))
    assert {pid for _, pid in lines} == {str(p.pid) for p in procs}


GATED_APP = """
import os, sys
from wfcore import ECSWorkflowEngine, Phase

SCRIPT = '''
import os, sys, time
log, gate = sys.argv[1], sys.argv[2]
def note(word):
    with open(log, "a") as f:
        f.write(f"{word} {os.environ['WORKER_PID']}\\\\n")
note("start")
while not os.path.exists(gate):  # the command's work goes on until the test ends it
    time.sleep(0.02)
note("end")
'''

os.environ["WORKER_PID"] = str(os.getpid())
engine = ECSWorkflowEngine(max_concurrency=1, poll_interval=0.05)
engine.register_workflow(
    "w",
    [
        Phase(
            "convert",
            assigned_to="functional",
            command=[sys.executable, "-c", SCRIPT, os.environ["RUNS_LOG"], os.environ["GATE"]],
            max_concurrency=1,
        )
    ],
)
"""


def _slot_rows(store_url: str) -> list[tuple[str, int]]:
    conn = sqlite3.connect(db_path(store_url), timeout=30)
    try:
        return conn.execute("SELECT owner, running FROM phase_slots").fetchall()
    except sqlite3.OperationalError:
        return []  # no limited phase has asked yet
    finally:
        conn.close()


def test_a_worker_killed_mid_phase_frees_its_slot_for_the_others(
    tmp_path: Path, worker_env: dict[str, str], wfe_store_url: str
):
    (tmp_path / "gated_app.py").write_text(textwrap.dedent(GATED_APP))
    log, gate = tmp_path / "runs.log", tmp_path / "gate"
    env = with_pythonpath(worker_env, tmp_path, RUNS_LOG=str(log), GATE=str(gate))
    _submit("gated_app:engine", 2, env, tmp_path)
    first = subprocess.Popen([*WFE, "worker", "gated_app:engine"], env=env, cwd=tmp_path)
    second = None
    try:
        wait_until(lambda: log.exists() and log.read_text(), what="the first command to start")
        second = subprocess.Popen(
            [*WFE, "worker", "gated_app:engine", "--until-idle"],
            env=env,
            cwd=tmp_path,
            stderr=subprocess.PIPE,
        )
        wait_until(
            lambda: sorted(running for _, running in _slot_rows(wfe_store_url)) == [0, 1],
            what="the second worker's task to wait for the slot",
        )
        assert log.read_text() == f"start {first.pid}\n"
        first.send_signal(signal.SIGKILL)
        assert first.wait(10) == -signal.SIGKILL
        # Its lease goes (its process is gone), and its slot with it.
        wait_until(lambda: log.read_text().count("start") == 2, what="the second worker's command")
        gate.touch()
        _, err = second.communicate(timeout=120)
        assert second.returncode == 0, err.decode()
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    lines = log.read_text().splitlines()
    # The killed command, then the second worker's two runs (its own task and the
    # one it took over), one at a time.
    assert lines == [
        f"start {first.pid}",
        f"start {second.pid}",
        f"end {second.pid}",
        f"start {second.pid}",
        f"end {second.pid}",
    ]
    status = subprocess.run(
        [*WFE, "tasks", "--json"], env=env, cwd=tmp_path, capture_output=True, timeout=60
    )
    assert [t["status"] for t in json.loads(status.stdout)] == ["completed"] * 2

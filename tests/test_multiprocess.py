"""Real worker processes on one SQLite store: SIGKILL and restart, splitting work, cancel.

The workers run ``tests/apps/mp_app.py`` through ``tests/apps/run_worker.py``; every
side effect they have goes to files in the test's folder (see mp_app's docstring).
"""

from __future__ import annotations

import collections
import concurrent.futures
import json
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from core_util import pid_alive, stored_status, wait_until

from wfcore import ECSWorkflowEngine, Phase, TaskStatus
from wfcore.command import _host_prefix, remove_stale_workdirs


def lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def submitter(factory) -> ECSWorkflowEngine:
    engine = factory()
    engine.register_workflow("mp", [Phase("a"), Phase("b")])
    engine.register_workflow("cancel", [Phase("stubborn")])
    return engine


@pytest.mark.parametrize("how", ["dead-pid-on-this-host", "lease-expiry"])
def test_sigkill_mid_run_then_restart_finishes_every_task_once(
    wfe_engine_factory, wfe_run, wfe_store_url, start_worker, tmp_path, how
):
    engine = submitter(wfe_engine_factory)
    count = 6

    async def submit():
        return [(await engine.submit_task({"block": True}, "mp")).id for _ in range(count)]

    ids = wfe_run(submit())
    extra = {}
    if how == "lease-expiry":
        # A lease owner on another host cannot be checked for life: only expiry frees it.
        extra = {"WFE_TEST_WORKER_ID": "another-host/1/w1", "WFE_TEST_LEASE": "1"}
    first = start_worker("mp_app:engine", WFE_TEST_WORKER="w1", **extra)
    runs = tmp_path / "runs.log"
    wait_until(
        lambda: sum(1 for r in lines(runs) if r[0] == "b-start") == count,
        30,
        "every task to be blocked in phase b",
    )
    first.send_signal(signal.SIGKILL)
    assert first.wait(10) == -signal.SIGKILL
    assert {stored_status(wfe_store_url, i) for i in ids} == {"in_progress"}

    (tmp_path / "gate").touch()
    second = start_worker("mp_app:engine", WFE_TEST_WORKER="w2")
    assert second.wait(60) == 0, (tmp_path / "worker-1.log").read_text()

    async def results():
        return [await engine.get_task(i) for i in ids]

    tasks = wfe_run(results())
    assert all(t.status is TaskStatus.COMPLETED for t in tasks)
    completions = collections.Counter(r[0] for r in lines(tmp_path / "completions.log"))
    assert completions == dict.fromkeys(ids, 1)  # none lost, none completed twice
    runs_by = collections.Counter((r[0], r[1], r[2]) for r in lines(runs))
    for task_id in ids:
        assert runs_by[("a", task_id, "w1")] == 1  # a finished phase is never rerun
        assert runs_by[("a", task_id, "w2")] == 0
        assert runs_by[("b-start", task_id, "w1")] == 1
        assert runs_by[("b-start", task_id, "w2")] == 1  # the interrupted phase reruns
        assert runs_by[("b-end", task_id, "w1")] == 0
        assert runs_by[("b-end", task_id, "w2")] == 1
    assert [t.outputs for t in tasks] == [{"a": "w1", "b": "w2"}] * count
    # The history says which phase the dead worker left unfinished, and whose it was.
    for task in tasks:
        [takeover] = [e for e in task.history if e["event"] == "taken_over"]
        assert takeover["phase"] == "b"
        if how == "lease-expiry":
            assert takeover["previous_worker"] == "another-host/1/w1"
        else:
            assert takeover["previous_worker"].split("/")[1] == str(first.pid)
        events = [e["event"] for e in task.history]
        assert events.index("taken_over") < events.index("completed")


def test_two_workers_split_the_work_each_phase_run_once(
    wfe_engine_factory, wfe_run, start_worker, tmp_path
):
    engine = submitter(wfe_engine_factory)
    count = 30

    async def submit():
        # Phase a waits until both workers are up, so both surely get work.
        return [(await engine.submit_task({"wait_for_workers": 2}, "mp")).id for _ in range(count)]

    ids = wfe_run(submit())
    workers = [
        start_worker("mp_app:engine", WFE_TEST_WORKER=name, WFE_TEST_CONCURRENCY="4")
        for name in ("w1", "w2")
    ]
    for number, worker in enumerate(workers):
        assert worker.wait(60) == 0, (tmp_path / f"worker-{number}.log").read_text()

    async def results():
        return [await engine.get_task(i) for i in ids]

    tasks = wfe_run(results())
    assert all(t.status is TaskStatus.COMPLETED for t in tasks)
    runs = lines(tmp_path / "runs.log")
    per_phase = collections.Counter((r[0], r[1]) for r in runs)
    assert set(per_phase) == {(e, i) for e in ("a", "b-start", "b-end") for i in ids}
    assert set(per_phase.values()) == {1}  # each phase of each task ran exactly once
    by_worker = collections.Counter(r[2] for r in runs)
    assert by_worker["w1"] > 0 and by_worker["w2"] > 0
    assert sum(by_worker.values()) == 3 * count
    completions = collections.Counter(r[0] for r in lines(tmp_path / "completions.log"))
    assert completions == dict.fromkeys(ids, 1)
    # The history agrees: every phase started once, by one worker process.
    for task in tasks:
        starts = [e for e in task.history if e["event"] == "phase_started"]
        assert [e["phase"] for e in starts] == ["a", "b"]
        assert task.outputs["a"] in ("w1", "w2")


# The default lease (30 s) is renewed only every 10 s: the worker still hears of a
# cancel within a second or two, not at its next renewal.
@pytest.mark.parametrize("lease", ["0.6", "30"])
def test_cancel_a_task_another_process_is_running(
    wfe_engine_factory, wfe_run, start_worker, tmp_path, lease
):
    engine = submitter(wfe_engine_factory)

    async def submit():
        return (await engine.submit_task(None, "cancel")).id

    task_id = wfe_run(submit())
    worker = start_worker("mp_app:engine", WFE_TEST_WORKER="w1", WFE_TEST_LEASE=lease)
    wait_until((tmp_path / "started").exists, 30, "the worker to start the phase")

    async def cancel():
        return await engine.cancel(task_id)

    assert wfe_run(cancel()).status is TaskStatus.CANCELLED
    # The worker learns it lost the lease and interrupts its handler...
    wait_until((tmp_path / "noticed-cancel").exists, 8, "the worker to notice")
    # ...which here refuses to stop and finishes the phase anyway.
    (tmp_path / "gate").touch()
    wait_until((tmp_path / "finished").exists, 15, "the stubborn handler to finish")
    assert worker.wait(30) == 0, (tmp_path / "worker-0.log").read_text()

    async def result():
        return await engine.get_task(task_id)

    task = wfe_run(result())
    assert task.status is TaskStatus.CANCELLED
    assert task.output is None and task.outputs == {}  # the late write was dropped
    assert task.history[-1]["event"] == "cancelled"
    assert not (tmp_path / "completions.log").exists()


def test_sigkill_at_an_arbitrary_moment_loses_nothing(
    wfe_engine_factory, wfe_run, start_worker, tmp_path
):
    engine = submitter(wfe_engine_factory)
    count = 60

    async def submit():
        return [(await engine.submit_task({}, "mp")).id for _ in range(count)]

    ids = wfe_run(submit())
    first = start_worker("mp_app:engine", WFE_TEST_WORKER="w1", WFE_TEST_CONCURRENCY="4")
    completions = tmp_path / "completions.log"
    wait_until(lambda: len(lines(completions)) >= 10, 30, "some tasks to complete")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    second = start_worker("mp_app:engine", WFE_TEST_WORKER="w2", WFE_TEST_CONCURRENCY="4")
    assert second.wait(60) == 0, (tmp_path / "worker-1.log").read_text()

    async def results():
        return [await engine.get_task(i) for i in ids]

    tasks = wfe_run(results())
    assert all(t.status is TaskStatus.COMPLETED for t in tasks)  # none lost
    done = collections.Counter(r[0] for r in lines(completions))
    assert set(done.values()) == {1}  # none completed twice
    assert {r[1] for r in lines(completions)} == {"w1", "w2"}  # the kill was mid-run
    # Only a task killed between its final commit and its hook misses the hook:
    # at most the worker's concurrency.
    assert count - 4 <= len(done) <= count
    finished_b = collections.Counter(r[1] for r in lines(tmp_path / "runs.log") if r[0] == "b-end")
    assert set(finished_b) == set(ids)
    assert sum(n - 1 for n in finished_b.values()) <= 4  # reruns only of interrupted phases


def test_run_until_idle_waits_for_work_in_progress_in_another_process(
    wfe_engine_factory, wfe_run, start_worker, tmp_path
):
    engine = submitter(wfe_engine_factory)
    runs = tmp_path / "runs.log"

    async def submit():
        return (await engine.submit_task({"block": True}, "mp")).id

    task_id = wfe_run(submit())
    worker = start_worker("mp_app:engine", WFE_TEST_WORKER="w1")
    wait_until(lambda: any(r[0] == "b-start" for r in lines(runs)), 30, "phase b to start")

    async def idle_here():
        import asyncio

        here = asyncio.create_task(engine.run_until_idle())
        # The task is in progress elsewhere: this engine has nothing to run, yet
        # is not idle. A few poll intervals pass without it returning.
        for _ in range(10):
            await asyncio.sleep(0.05)
            assert not here.done()
        (tmp_path / "gate").touch()
        await asyncio.wait_for(here, 30)
        return await engine.get_task(task_id)

    done = wfe_run(idle_here())
    assert done.status is TaskStatus.COMPLETED
    assert done.outputs == {"a": "w1", "b": "w1"}  # all of it ran in the worker
    assert worker.wait(30) == 0


def test_sigkill_of_a_worker_kills_the_command_it_was_running(
    wfe_engine_factory, wfe_run, start_worker, tmp_path
):
    """A command phase does not outlive its worker, so the worker that takes the task
    over never runs it beside an orphaned earlier run."""
    engine = wfe_engine_factory()
    engine.register_workflow("hang", [Phase("hang", assigned_to="functional")])
    wfe_run(engine.submit_task(None, "hang"))
    worker = start_worker("mp_app:engine", "--forever")
    pids_file = tmp_path / "command-pids"
    wait_until(pids_file.exists, 30, "the command to start")
    pids = json.loads(pids_file.read_text())
    assert pid_alive(pids["command"]) and pid_alive(pids["child"]) and pid_alive(pids["own_group"])
    worker.send_signal(signal.SIGKILL)
    assert worker.wait(10) == -signal.SIGKILL
    wait_until(lambda: not pid_alive(pids["command"]), 10, "the command to die")
    wait_until(lambda: not pid_alive(pids["child"]), 10, "the command's own child to die")
    wait_until(lambda: not pid_alive(pids["own_group"]), 10, "the one in its own group to die")
    # Its work folder stays behind until a worker starts on this host.
    assert Path(pids["cwd"]).is_dir()
    wfe_run(ECSWorkflowEngine("memory://", load_plugins=False).run_until_idle())
    assert not Path(pids["cwd"]).exists()


def test_two_sweeps_at_once_count_each_stale_work_folder_once(tmp_path, monkeypatch):
    """A worker sweeps the work folders of dead workers as it starts and again as it
    frees their leases: the folders removed are counted once between the two."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    prefix = _host_prefix()
    for n in range(40):
        folder = tmp_path / f"{prefix}{dead.pid}-{n}"
        (folder / "out").mkdir(parents=True)
        for i in range(20):
            (folder / "out" / f"{i}.txt").write_text("x")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        counts = list(pool.map(lambda _: remove_stale_workdirs(), range(2)))
    assert sorted(counts) == [0, 40]
    assert list(tmp_path.iterdir()) == []


def test_a_checkpointed_phase_goes_on_from_its_checkpoint_after_a_kill(
    wfe_engine_factory, wfe_run, start_worker, tmp_path
):
    engine = wfe_engine_factory()
    engine.register_workflow("progress", [Phase("progress", assigned_to="functional")])
    task = wfe_run(engine.submit_task(None, "progress"))
    first = start_worker("mp_app:engine", "--forever", WFE_TEST_WORKER="w1")
    wait_until((tmp_path / "stopped-once").exists, 30, "the first run to reach item 2")
    first.send_signal(signal.SIGKILL)
    assert first.wait(10) == -signal.SIGKILL
    second = start_worker("mp_app:engine", WFE_TEST_WORKER="w2")
    assert second.wait(60) == 0

    done = wfe_run(engine.get_task(task.id))
    assert done.status is TaskStatus.COMPLETED, done.error
    assert done.output == [0, 1, 2, 3, 4]
    # The second run started after the three items the first one checkpointed.
    assert lines(tmp_path / "runs.log") == [
        ["progress-start", "0", "w1"],
        ["progress-start", "3", "w2"],
    ]
    kinds = [e["event"] for e in done.history]
    assert kinds.count("checkpoint") == 2 and "taken_over" in kinds  # one per attempt
    # A rerun after a lost worker is not counted as another attempt.
    started = [e["attempt"] for e in done.history if e["event"] == "phase_started"]
    assert started == [1, 1]


@pytest.mark.parametrize("checkpoint", [False, True], ids=["plain", "checkpointed"])
def test_a_phase_that_kills_its_worker_fails_after_three_lost_workers(
    wfe_engine_factory, wfe_run, start_worker, tmp_path, checkpoint
):
    """A poison task (its phase segfaults, or the OOM killer ends its worker) must
    not take down every worker that claims it, for ever; checkpoints don't hide it."""
    engine = wfe_engine_factory()
    engine.register_workflow("poison", [Phase("poison")])
    # Pre-classified: a task's first phase is stored only once an attempt of it ends.
    task = wfe_run(
        engine.submit_task({"checkpoint": checkpoint}, "poison", classification="poison")
    )
    # As a supervisor (systemd, Kubernetes) would: start a worker again as each dies.
    exits = []
    for n in range(5):
        exits.append(start_worker("mp_app:engine", WFE_TEST_WORKER=f"w{n}").wait(60))
        if exits[-1] == 0:
            break
    assert exits == [-signal.SIGKILL] * 3 + [0]
    assert [r[0] for r in lines(tmp_path / "runs.log")] == ["poison"] * 3

    failed = wfe_run(engine.get_task(task.id))
    assert failed.status is TaskStatus.FAILED
    assert failed.error.startswith(
        "WorkerLostError: phase 'poison' lost its worker 3 times in a row"
    )
    assert [e["event"] for e in failed.history].count("taken_over") == 3

    # A retry starts the count again: the phase runs once more.
    wfe_run(engine.retry(task.id))
    assert start_worker("mp_app:engine", WFE_TEST_WORKER="w9").wait(60) == -signal.SIGKILL
    assert len(lines(tmp_path / "runs.log")) == 4


def test_a_first_phase_that_kills_its_worker_fails_its_task_after_three_lost_workers(
    wfe_engine_factory, wfe_run, start_worker, tmp_path
):
    """A task not classified yet, whose first phase kills its worker, fails the same
    way; its error says it was its first phase."""
    engine = wfe_engine_factory()
    engine.register_workflow("poison", [Phase("poison")])
    unclassified = wfe_run(engine.submit_task({}, "poison"))
    for n in range(4):
        start_worker("mp_app:engine", WFE_TEST_WORKER=f"u{n}").wait(60)
    failed = wfe_run(engine.get_task(unclassified.id))
    assert failed.error.startswith("WorkerLostError: its first phase lost its worker 3 times")
    assert [r[0] for r in lines(tmp_path / "runs.log")] == ["poison"] * 3


def test_tasks_running_beside_a_phase_that_kills_its_worker_are_not_failed_with_it(
    wfe_engine_factory, wfe_run, start_worker, tmp_path
):
    """One more lost worker from failing, a task runs alone: the last worker it kills
    is its own loss only, not also that of the tasks that happened to run beside it."""
    engine = wfe_engine_factory()
    engine.register_workflow("poison", [Phase("poison")])
    engine.register_workflow("mp", [Phase("a"), Phase("b")])

    async def submit():
        poison = await engine.submit_task({}, "poison", classification="poison")
        others = [(await engine.submit_task({"block": True}, "mp")).id for _ in range(2)]
        return poison.id, others

    poison_id, others = wfe_run(submit())

    def status(task_id: str) -> TaskStatus:
        return wfe_run(engine.get_task(task_id)).status

    exits = []
    for n in range(6):
        worker = start_worker("mp_app:engine", WFE_TEST_WORKER=f"w{n}")
        wait_until(
            lambda w=worker: w.poll() is not None or status(poison_id) is TaskStatus.FAILED,
            60,
            "the worker to die or the poison task to fail",
        )
        if worker.poll() is None:  # the poison task failed: let the others finish
            (tmp_path / "gate").touch()
        exits.append(worker.wait(60))
        if exits[-1] == 0:
            break
    assert exits == [-signal.SIGKILL] * 3 + [0]

    failed = wfe_run(engine.get_task(poison_id))
    assert failed.error.startswith("WorkerLostError: phase 'poison' lost its worker 3 times")
    for task_id in others:
        done = wfe_run(engine.get_task(task_id))
        assert done.status is TaskStatus.COMPLETED, done.error
        # Lost with the first two workers, then run alone: never failed for it.
        assert [e["event"] for e in done.history].count("taken_over") == 2


def test_max_takeovers_none_runs_a_phase_again_whatever_happened_before(
    wfe_engine_factory, wfe_run
):
    engine = wfe_engine_factory(max_takeovers=None)
    engine.register_workflow("w", [Phase("p")])

    async def handler(task):
        task.output = "ran"

    engine.register_handler("p", handler)

    async def go():
        task = await engine.submit_task(None, "w")
        store = await engine.get_store()
        # Three workers lost in a row, as stored by the claims that took it over.
        [claimed] = await store.claim("dead", 1, 30)
        for n in range(3):
            claimed.record("taken_over", phase="p", previous_worker=f"d{n}", worker="x")
        claimed.status = TaskStatus.PENDING
        await store.update_task(claimed)
        await engine.run_until_idle()
        return await engine.get_task(task.id)

    done = wfe_run(go())
    assert done.status is TaskStatus.COMPLETED and done.output == "ran"


def test_a_phase_killed_after_submitting_children_finds_them_when_run_again(
    wfe_engine_factory, wfe_run, wfe_store_url, start_worker, tmp_path
):
    engine = wfe_engine_factory()
    engine.register_workflow("fanout", [Phase("split"), Phase("merge")])

    async def submit() -> str:
        return (await engine.submit_task(None, "fanout", task_id="doc")).id

    parent_id = wfe_run(submit())
    first = start_worker("mp_app:engine", WFE_TEST_WORKER="w1")
    wait_until(lambda: (tmp_path / "split-submitted").exists(), 30, "the children to be submitted")
    first.send_signal(signal.SIGKILL)
    assert first.wait(10) == -signal.SIGKILL
    second = start_worker("mp_app:engine", WFE_TEST_WORKER="w2")
    assert second.wait(60) == 0, (tmp_path / "worker-1.log").read_text()

    async def results():
        store = await engine.get_store()
        pages = await store.count_tasks("page")
        return await engine.get_task(parent_id), pages

    parent, pages = wfe_run(results())
    assert parent.status is TaskStatus.COMPLETED, parent.error
    # The run after the kill submitted the same three children, not three more.
    assert sum(pages.values()) == pages[TaskStatus.COMPLETED] == 3
    assert parent.children == ["doc.1", "doc.2", "doc.3"]
    assert parent.output == ["P1", "P2", "P3"]
    ran = collections.Counter(r[1] for r in lines(tmp_path / "runs.log") if r[0] == "page")
    assert set(ran) == {"doc.1", "doc.2", "doc.3"}


def test_a_worker_lost_in_a_first_phase_chosen_at_the_claim_leaves_its_name(
    wfe_engine_factory, wfe_run, start_worker, tmp_path
):
    """A task submitted without a phase is classified by the worker that claims it;
    once that phase has run a second, the stored task shows it, so a worker killed
    in it is followed by a takeover that names it (not null)."""
    engine = wfe_engine_factory()
    engine.register_workflow("cancel", [Phase("stubborn")])
    task = wfe_run(engine.submit_task(None, "cancel"))
    # Renewing its lease every 100 s: the phase is not stored by a renewal.
    first = start_worker("mp_app:engine", "--forever", WFE_TEST_WORKER="w1", WFE_TEST_LEASE="300")
    wait_until(lambda: (tmp_path / "started").exists(), what="the phase to start")
    running = wait_until(
        lambda: (t := wfe_run(engine.get_task(task.id))).classification == "stubborn" and t,
        what="the stored task to show its running phase",
    )
    assert running.status is TaskStatus.IN_PROGRESS
    assert wfe_run(engine.list_tasks(phase="stubborn"))[0].id == task.id
    first.kill()
    first.wait()

    (tmp_path / "gate").write_text("open")
    assert start_worker("mp_app:engine", WFE_TEST_WORKER="w2").wait(60) == 0
    done = wfe_run(engine.get_task(task.id))
    assert done.status is TaskStatus.COMPLETED
    [takeover] = [e for e in done.history if e["event"] == "taken_over"]
    assert takeover["phase"] == "stubborn"

"""Running ``wfe worker`` as a service: stopped by a service manager, its log lines."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from core_util import (
    background_wfe,
    http_get,
    metrics_url,
    run_task,
    stored_status,
    stored_task,
    submit_with_app,
    with_pythonpath,
)
from test_cli import APP, _wait_for
from test_persistence import WriteLockHolder

from wfcore import Phase, StoreError, Task, TaskStatus
from wfcore.metrics import MetricsServer
from wfcore.stores.memory import MemoryStore
from wfcore.wire import task_to_dict

# An app whose command phase runs until the test lets it finish: it writes its
# process group to ``<gate>.pgid`` and waits for the gate file, or prints its
# output at once when the gate is there.
_COMMAND_APP = """\
import sys
from pathlib import Path

from wfcore import ECSWorkflowEngine, Phase

HERE = Path(__file__).resolve().parent
engine = ECSWorkflowEngine(poll_interval=0.05, retry_delay=0.05)
engine.register_workflow(
    "slow",
    [Phase("run", assigned_to="functional", max_attempts=3,
           command=[sys.executable, str(HERE / "slow_command.py"), str(HERE / "gate")])],
)
"""

_COMMAND = """\
import os
import sys
import time
from pathlib import Path

gate = Path(sys.argv[1])
if gate.exists():
    print('{"done": true}')
    sys.exit(0)
Path(f"{gate}.pgid").write_text(str(os.getpgrp()))
while not gate.exists():
    time.sleep(0.05)
print('{"done": true}')
"""


def _command_app(wfe, tmp_path: Path) -> dict[str, str]:
    (tmp_path / "command_app.py").write_text(_COMMAND_APP)
    (tmp_path / "slow_command.py").write_text(_COMMAND)
    return with_pythonpath(wfe.env, tmp_path)


def _show(wfe, task_id: str, env: dict[str, str]) -> dict:
    """The task as ``wfe show TASK --json`` prints it, read from the store of ``env``
    in this process: for tests of what a worker process left there."""

    task = stored_task(env["WFE_STORE"], task_id)
    shown: dict = json.loads(json.dumps(task_to_dict(task, internal=True)))
    return shown


def test_a_service_stop_that_kills_the_command_too_hands_the_task_back(wfe, tmp_path) -> None:
    """systemd's default stop (KillMode=control-group) sends SIGTERM to the worker and
    to every process it started at once: the command phase dies of it before the
    worker can hand it back. That is the stop, not a failure of the phase."""
    env = _command_app(wfe, tmp_path)
    task_id = wfe("submit", "slow", "--app", "command_app:engine", env=env).stdout.strip()
    log = tmp_path / "worker.err"
    args = ["worker", "command_app:engine", "--shutdown-timeout", "600"]
    with background_wfe(*args, cwd=tmp_path, env=env, log=log) as worker:
        pgid_file = tmp_path / "gate.pgid"
        pgid = int(_wait_for(lambda: pgid_file.exists() and pgid_file.read_text(), what="it"))
        # As systemd does: the main process first, then the rest of the control group.
        worker.send_signal(signal.SIGTERM)
        os.killpg(pgid, signal.SIGTERM)
        worker.wait(timeout=60)  # long before the 600 s the phase was given
    said = log.read_text()
    assert worker.returncode == 0, said
    assert "its command was stopped by SIGTERM as this worker stops" in said, said
    task = _show(wfe, task_id, env)
    assert task["status"] == "pending", said
    assert task["attempts"] == 0 and task["error"] is None
    events = [e["event"] for e in task["history"]]
    assert events[-1] == "released" and "attempt_failed" not in events

    (tmp_path / "gate").write_text("open")
    wfe("worker", "command_app:engine", "--until-idle", "--quiet", env=env)
    task = _show(wfe, task_id, env)
    assert task["status"] == "completed" and task["output"] == {"done": True}
    events = [e["event"] for e in task["history"]]
    assert events.count("phase_started") == 2 and "attempt_failed" not in events


def test_a_command_killed_by_sigterm_while_its_worker_runs_on_fails_its_attempt(
    wfe_engine_factory, wfe_run
) -> None:
    """Only a stop makes a killed command a handed-back task: one killed by anyone
    else, the worker going on, is a failed attempt, with the signal in its error."""
    engine = wfe_engine_factory(poll_interval=0.02)
    command = ["/bin/sh", "-c", "kill -TERM $$"]
    engine.register_workflow("w", [Phase("run", assigned_to="functional", command=command)])
    done = wfe_run(run_task(engine, None, "w"))
    assert done.status is TaskStatus.FAILED
    assert "exited with status 143 (SIGTERM, likely)" in done.error


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_worker_whose_store_file_is_deleted_or_replaced_stops_and_saves_it(
    wfe, tmp_path, how
) -> None:
    """Its writes would go to a file nobody sees: it says so, saves what it saw of
    the old file beside the path, and exits 1 for its service manager to start it
    again on the file at the path now."""
    task_id = wfe("submit", "review", "--app", APP, "--data", '{"n": 2}').stdout.strip()
    log = tmp_path / "worker.err"
    store = tmp_path / "wfe.db"
    args = ["worker", APP, "--metrics", "0"]  # a port the system picks, and it names
    with background_wfe(*args, cwd=tmp_path, env=wfe.env, log=log) as worker:
        url = _wait_for(lambda: metrics_url(log), what="the worker to start")
        health = url.removesuffix("/metrics") + "/healthz"
        _wait_for(
            lambda: stored_status(f"sqlite://{store}", task_id) == "waiting_human",
            what="the task to wait for a person",
        )
        assert http_get(health) == (200, "ok\n")
        if how == "deleted":
            for suffix in ("", "-wal", "-shm"):
                store.with_name(store.name + suffix).unlink(missing_ok=True)
        else:
            other = tmp_path / "other.db"
            _make_store(other)
            os.replace(other, store)
        worker.wait(timeout=60)
    said = log.read_text()
    assert worker.returncode == 1, said
    what = "deleted" if how == "deleted" else "replaced by another file"
    assert f"ERROR wfcore: the store file {store} was {what} while this process had it open" in said
    last = said.strip().splitlines()[-1]
    assert last.startswith(f"Error: the store file {store} was {what}"), said
    assert "Traceback" not in said
    [saved] = tmp_path.glob("wfe.db.saved-*")
    assert f"what this process saw of it is saved in {saved}" in last
    conn = sqlite3.connect(saved)
    try:
        assert conn.execute("SELECT id, status FROM tasks").fetchall() == [
            (task_id, "waiting_human")
        ]
    finally:
        conn.close()


def _make_store(path: Path) -> None:
    from wfcore.stores.sqlite import SQLiteStore

    async def make() -> None:
        store = SQLiteStore(path)
        await store.open()
        await store.close()

    asyncio.run(make())


def test_healthz_says_when_the_store_file_was_deleted(wfe_engine_factory, wfe_run) -> None:
    engine = wfe_engine_factory(poll_interval=0.02)
    engine.register_workflow("w", [Phase("a", assigned_to="human")])

    async def scenario() -> tuple[tuple[int, str], tuple[int, str]]:
        server = MetricsServer(engine, "127.0.0.1", 0)
        await server.start()
        health = server.url.replace("metrics", "healthz")
        running = asyncio.create_task(engine.run())
        try:
            task = await engine.submit_task(None, "w")
            await engine.wait_for_task(task.id, waiting=True, timeout=30)
            before = await asyncio.to_thread(http_get, health)
            store = await engine.get_store()
            store.path.unlink()

            async def unhealthy() -> tuple[int, str]:
                while True:
                    answer = await asyncio.to_thread(http_get, health)
                    if answer[0] != 200:
                        return answer
                    await asyncio.sleep(0.05)

            after = await asyncio.wait_for(unhealthy(), 30)
        finally:
            engine.stop()
            await asyncio.gather(running, return_exceptions=True)
            await server.close()
        return before, after

    before, after = wfe_run(scenario())
    assert before == (200, "ok\n")
    assert after[0] == 503
    assert "was deleted while this process had it open" in after[1], after


_CLAIM_AND_EXIT = """\
import asyncio, os, socket, sys
from wfcore.stores.sqlite import SQLiteStore

async def main():
    store = SQLiteStore(sys.argv[1])
    await store.open()
    owner = f"{socket.gethostname()}/{os.getpid()}/gone"
    print(owner, len(await store.claim(owner, 10, 3600)))
    await store.close()

asyncio.run(main())
"""


def test_tasks_of_a_dead_worker_are_taken_over_and_logged_once(
    wfe_engine_factory, wfe_store_url, wfe_run, caplog
) -> None:
    """Freed leases keep their dead owner's name until a claim takes the tasks:
    a worker that cannot claim them (running other workflows) logged the same
    takeover at every look, every two seconds."""
    engine = wfe_engine_factory(poll_interval=0.02)
    engine.register_handler("a", lambda task: setattr(task, "output", "done"))
    engine.register_workflow("w", [Phase("a", assigned_to="functional")])
    ids = [wfe_run(engine.submit_task(n, "w")).id for n in range(2)]
    path = wfe_store_url.removeprefix("sqlite://")
    # A process that claims both tasks and is gone, as a worker killed mid-phase.
    dead = subprocess.run(
        [sys.executable, "-c", _CLAIM_AND_EXIT, path], capture_output=True, text=True, check=True
    )
    owner, count = dead.stdout.split()
    assert count == "2"
    caplog.set_level(logging.INFO, logger="wfcore")

    async def scenario() -> list[str]:
        store = await engine.get_store()
        for _ in range(3):  # three looks, as the worker takes every second or two
            await engine._worker._reap_dead_owners(store)
        await engine.run_until_idle()
        return [(await engine.get_task(task_id)).status for task_id in ids]

    assert wfe_run(scenario()) == [TaskStatus.COMPLETED] * 2
    said = [r.getMessage() for r in caplog.records if "took over" in r.getMessage()]
    assert said == [f"took over 2 task(s) from dead worker(s) {owner}"]


def test_each_log_line_of_worker_processes_names_its_process(wfe, tmp_path) -> None:
    """With --processes N the processes share one stderr: their log lines, not only
    their progress lines, say which process each is from."""
    submit_with_app("failing_app:engine", "retried", [{"n": -1}] * 4, env=wfe.env, cwd=tmp_path)
    done = wfe("worker", "failing_app:engine", "-p", "2", "--concurrency", "1", "--until-idle")
    logged = re.findall(r"^\S+Z (?:DEBUG|INFO|WARNING|ERROR) \S+: (.*)$", done.stderr, re.M)
    assert len(logged) >= 8, done.stderr  # a retry and a failure for each task
    pids = {int(m) for m in re.findall(r"\[worker (\d+)\] ", done.stderr)}
    assert pids and all(re.match(r"\[worker \d+\] ", line) for line in logged), done.stderr


_GATED_APP = """\
import asyncio
from pathlib import Path

from wfcore import ECSWorkflowEngine, Phase

HERE = Path(__file__).resolve().parent
engine = ECSWorkflowEngine(poll_interval=0.05, lease_seconds=1)


async def gated(task):
    (HERE / "running").write_text(task.id)
    while not (HERE / "gate").exists():
        await asyncio.sleep(0.02)
    task.output = "x" * 100_000  # more than the WAL has room for already


engine.register_handler("gated", gated)
engine.register_workflow("w", [Phase("gated", assigned_to="functional")])
"""


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 4 MB file system of its own (a tmpfs), to fill up: mounting needs root."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small file system to fill: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def _fill(folder: Path) -> Path:
    filler = folder / "filler"
    # Unbuffered: a buffered file keeps what the full disk refused and fails again,
    # with ENOSPC, when it is closed.
    with open(filler, "wb", buffering=0) as out:
        try:
            while True:
                out.write(b"\0" * 65536)
        except OSError:
            pass
    return filler


def test_a_full_disk_makes_the_worker_wait_and_go_on_once_there_is_room(
    wfe, tmp_path, small_disk
) -> None:
    """It says which store cannot be written and why, in lines, no traceback;
    /healthz says so; it keeps trying, backing off, and finishes the task once
    space is freed: nothing stored is lost."""
    (tmp_path / "gated_app.py").write_text(_GATED_APP)
    store = small_disk / "wfe.db"
    env = with_pythonpath(wfe.env, tmp_path, WFE_STORE=f"sqlite://{store}")
    task_id = wfe("submit", "w", "--app", "gated_app:engine", env=env).stdout.strip()
    log = tmp_path / "worker.err"
    args = ["worker", "gated_app:engine", "--metrics", "0"]  # a port the system picks
    with background_wfe(*args, cwd=tmp_path, env=env, log=log) as worker:
        url = _wait_for(lambda: metrics_url(log), what="the worker to start")
        health = url.removesuffix("/metrics") + "/healthz"
        _wait_for(lambda: (tmp_path / "running").exists(), what="the phase to start")
        filler = _fill(small_disk)
        (tmp_path / "gate").write_text("open")
        full = f"cannot write to {store}: the disk holding it is full"
        _wait_for(lambda: "This worker tries again in" in log.read_text(), what="a retry")
        status, body = http_get(health)
        assert status == 503 and full in body, body
        assert worker.poll() is None, log.read_text()

        filler.unlink()
        done = _wait_for(
            lambda: stored_status(f"sqlite://{store}", task_id) == "completed",
            timeout=120,
            what="the task to complete",
        )
        assert done
        _wait_for(lambda: http_get(health) == (200, "ok\n"), what="healthz to be ok again")
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
    said = log.read_text()
    assert worker.returncode == 0, said
    assert f"ERROR wfcore: the store failed: {full} (database or disk is full); free " in said
    assert "the store works again" in said and "Traceback" not in said, said
    task = _show(wfe, task_id, env)
    assert task["output"] == "x" * 100_000


def test_a_deadline_in_a_phase_a_redefined_workflow_dropped_names_that_phase(
    wfe_engine_factory, wfe_run
) -> None:
    first = wfe_engine_factory(poll_interval=0.02)
    first.register_workflow("w", [Phase("review", assigned_to="human", timeout=0.2)])

    async def wait_there() -> str:
        task = await first.submit_task(None, "w")
        await first.run_until_idle()
        assert (await first.get_task(task.id)).status is TaskStatus.WAITING_HUMAN
        await first.aclose()
        return task.id

    task_id = wfe_run(wait_there())
    # The app's next release renamed the phase.
    second = wfe_engine_factory(poll_interval=0.02)
    second.register_workflow("w", [Phase("approve", assigned_to="human"), Phase("send")])

    async def after_the_deadline() -> Task:
        running = asyncio.create_task(second.run())
        try:
            return await second.wait_for_task(task_id, timeout=30)
        finally:
            second.stop()
            await running

    done = wfe_run(after_the_deadline())
    assert done.status is TaskStatus.FAILED
    assert done.error == (
        "DeadlineExceeded: the deadline passed while the task waited in phase 'review', "
        "which workflow 'w' no longer has (redefined since; its phases: 'approve', 'send'), "
        "so its on_timeout rule is not known"
    )


def test_each_finished_task_gets_a_debug_line_with_its_workflow_and_time(
    wfe_engine_factory, wfe_run, caplog
) -> None:
    """At DEBUG: a busy worker finishes thousands a second, and its INFO log is read."""
    engine = wfe_engine_factory(poll_interval=0.02)

    def work(task: Task) -> None:
        if task.data == "bad":
            raise ValueError("bad input")
        task.output = task.data

    engine.register_handler("work", work)
    engine.register_workflow("w", [Phase("work", assigned_to="functional")])

    async def scenario() -> list[str]:
        ids = [(await engine.submit_task(data, "w")).id for data in ("good", "bad")]
        await engine.run_until_idle()
        return ids

    caplog.set_level(logging.DEBUG, logger="wfcore")
    good, bad = wfe_run(scenario())
    lines = [r for r in caplog.records if r.getMessage().endswith("after it was submitted")]
    assert [r.levelno for r in lines] == [logging.DEBUG] * 2
    said = sorted(r.getMessage() for r in lines)
    expected = sorted(
        [rf"task {good} \(workflow 'w'\): completed, ", rf"task {bad} \(workflow 'w'\): failed, "]
    )
    for line, pattern in zip(said, expected, strict=True):
        assert re.match(pattern + r"\d+\.\d{3}s after it was submitted$", line), said


class _FailingClaims(MemoryStore):
    """A plugin's store whose first claim fails with ``error``."""

    def __init__(self, error: StoreError) -> None:
        super().__init__()
        self.error: StoreError | None = error

    async def claim(self, owner, limit, lease_seconds, *, workflows=None):
        error, self.error = self.error, None
        if error is not None:
            raise error
        return await super().claim(owner, limit, lease_seconds, workflows=workflows)


class _Unreachable(StoreError):
    lasting = True


def test_a_store_error_is_waited_out_unless_it_is_lasting(wfe_engine_factory, wfe_run) -> None:
    """A store plugin's StoreError (its server restarting) is tried again; one whose
    class says ``lasting`` stops the worker, which cannot use the store again."""

    async def run_one(store: MemoryStore) -> Task:
        engine = wfe_engine_factory(store=store)
        engine.register_handler("work", lambda task: None)
        engine.register_workflow("w", [Phase("work", assigned_to="functional")])
        return await run_task(engine, None, "w")

    passing = _FailingClaims(StoreError("the database server is restarting"))
    assert wfe_run(run_one(passing)).status is TaskStatus.COMPLETED
    assert passing.error is None  # it did fail once
    with pytest.raises(_Unreachable, match="gone for good"):
        wfe_run(run_one(_FailingClaims(_Unreachable("gone for good"))))


def test_a_stop_that_comes_before_the_run_starts_is_not_lost(make_engine, wfe_run):
    """A run handed to a task (or another thread's loop) has not started when stop()
    is called right after: the stop used to be forgotten as the run began, and the
    run went on for good."""
    engine = make_engine()

    async def same_loop() -> None:
        run = asyncio.create_task(engine.run())
        engine.stop()
        await asyncio.wait_for(run, 10)

    wfe_run(same_loop())
    assert not engine.running

    other = asyncio.new_event_loop()
    thread = threading.Thread(target=other.run_forever, daemon=True)
    thread.start()
    try:
        run = asyncio.run_coroutine_threadsafe(engine.run(), other)
        engine.stop()  # from this thread, as a web app's request thread would
        run.result(timeout=10)
    finally:
        other.call_soon_threadsafe(other.stop)
        thread.join(10)
        other.close()


def test_a_stop_from_before_a_run_was_asked_for_does_not_stop_it(make_engine, wfe_run):
    engine = make_engine()

    async def done(task) -> None:
        task.output = "done"

    engine.register_handler("p", done)
    engine.register_workflow("w", [Phase("p", assigned_to="functional")])
    engine.stop()  # nothing runs yet: nothing to stop

    async def scenario():
        task = await engine.submit_task({}, "w")
        await engine.run_until_idle()
        return await engine.get_task(task.id)

    assert wfe_run(scenario()).status is TaskStatus.COMPLETED


def test_a_worker_waits_for_a_store_another_process_holds_locked(wfe, tmp_path) -> None:
    """Started while another process holds the write lock longer than the store's
    timeout, the worker says it waits, tries again, and works once the lock is let
    go (a service manager would restart one that exited, in a loop). The workflows
    it failed to save are saved then."""
    task_id = wfe("submit", "review", "--app", APP, "--data", '{"n": 2}').stdout.strip()
    store = tmp_path / "wfe.db"
    conn = sqlite3.connect(store)
    conn.execute("DELETE FROM workflows")  # the worker saves its app's again
    conn.commit()
    conn.close()
    log = tmp_path / "worker.err"
    url = f"sqlite://{store}?timeout=0.2"  # each try waits 0.2 s for the lock, not 30
    holder = WriteLockHolder(store)
    try:
        args = ["worker", APP, "--store", url, "--until-idle"]
        with background_wfe(*args, cwd=tmp_path, env=wfe.env, log=log) as worker:
            _wait_for(lambda: "waiting for the store" in log.read_text(), what="it to wait")
            assert worker.poll() is None
            holder.release()
            worker.wait(timeout=60)
    finally:
        holder.release()
    said = log.read_text()
    assert worker.returncode == 0, said
    assert said.count("waiting for the store") == 1, said
    assert (
        f"waiting for the store: cannot write to {store}: "
        "database is locked (another process has held its write lock for over 0.2 s"
    ) in said
    assert "trying again after 1 s, doubling up to 30 s (Ctrl-C to stop)" in said
    assert "the store is free again" in said
    assert "Traceback" not in said and "Error:" not in said
    shown = _show(wfe, task_id, wfe.env)
    assert shown["status"] == "waiting_human" and shown["outputs"] == {"double": {"n": 4}}
    assert "review" in wfe("workflows").stdout


@pytest.mark.parametrize("when", ["between tries", "in a try", "in a try to upgrade it"])
def test_a_worker_waiting_for_a_locked_store_stops_at_once_when_told(wfe, tmp_path, when) -> None:
    """SIGTERM while it waits, between tries (0.2 s each) or in the middle of one
    (which would wait 30 s for the lock: to save its workflows, or to upgrade an
    older store): it exits 0 at once, as it does when stopped anywhere else, the
    lock still held."""
    wfe("submit", "review", "--app", APP, "--data", '{"n": 2}')
    store = tmp_path / "wfe.db"
    log = tmp_path / "worker.err"
    timeout = "0.2" if when == "between tries" else "30"
    if when == "in a try to upgrade it":
        conn = sqlite3.connect(store)
        conn.execute("UPDATE wfe_meta SET value = '3' WHERE key = 'schema_version'")
        conn.commit()
        conn.close()
    holder = WriteLockHolder(store)
    try:
        args = ["worker", APP, "--store", f"sqlite://{store}?timeout={timeout}"]
        with background_wfe(*args, cwd=tmp_path, env=wfe.env, log=log) as worker:
            if timeout == "30":
                # In its first try, waiting for the lock: it has the store's file open.
                fds = Path(f"/proc/{worker.pid}/fd")
                if not fds.is_dir():
                    pytest.skip("needs /proc to see the worker open the store")

                def opened() -> bool:
                    try:
                        return any(os.path.realpath(fd) == str(store) for fd in fds.iterdir())
                    except OSError:
                        return False

                _wait_for(opened, what="the worker to open the store")
            else:
                _wait_for(lambda: "waiting for the store" in log.read_text(), what="it to wait")
            worker.send_signal(signal.SIGTERM)
            # Well within the 30 s its try would wait for the lock.
            worker.wait(timeout=15)
        assert holder.proc.poll() is None  # the lock was held all along
    finally:
        holder.release()
    said = log.read_text()
    assert worker.returncode == 0, said
    assert "Traceback" not in said and "Error:" not in said
    assert ("waiting for the store" in said) == (timeout == "0.2")


def test_a_worker_on_a_store_it_cannot_use_fails_at_once(wfe, tmp_path) -> None:
    """Only a lock is waited for: a store of a newer wfcore, say, ends the worker
    with its one-line error, however long its timeout."""
    wfe("submit", "review", "--app", APP, "--data", '{"n": 2}')
    store = tmp_path / "wfe.db"
    conn = sqlite3.connect(store)
    conn.execute("UPDATE wfe_meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    worker = wfe("worker", APP, "--store", f"sqlite://{store}?timeout=30", check=False)
    assert worker.returncode == 1
    assert worker.stderr.strip().splitlines()[-1] == (
        f"Error: {store} was written by a newer wfcore (schema 99, this code knows 6); "
        "upgrade wfcore to use it"
    )
    assert "waiting for the store" not in worker.stderr


def test_a_worker_whose_own_lease_ran_out_says_so_as_the_phase_starts_again(
    wfe_engine_factory, wfe_run, caplog
) -> None:
    """Renewals that cannot be written in time (a store locked for longer than
    lease_seconds) let the lease run out under a running phase: this worker's next
    claim takes its own task over, and the phase starts again. It said nothing."""
    engine = wfe_engine_factory(lease_seconds=0.3)
    starts: list[str] = []
    release = asyncio.Event()

    async def slow(task: Task) -> None:
        starts.append(task.id)
        await release.wait()

    engine.register_handler("slow", slow)
    engine.register_workflow("w", [Phase("slow", assigned_to="functional")])

    async def scenario() -> None:
        store = await engine.get_store()

        async def unwritten(owner: str, task_ids: list[str], lease_seconds: float) -> set[str]:
            return set(task_ids)  # as if renewed, but nothing reaches the store

        store.renew = unwritten  # type: ignore[method-assign]
        await engine.submit_task(None, "w")
        runner = asyncio.create_task(engine.run())
        try:
            while len(starts) < 2:
                await asyncio.sleep(0.02)
        finally:
            release.set()
            engine.stop()
            await runner

    with caplog.at_level(logging.WARNING, logger="wfcore"):
        wfe_run(scenario(), timeout=30)
    assert starts[0] == starts[1]
    assert any(
        "this worker's lease on it ran out while its phase ran" in r.getMessage()
        for r in caplog.records
    ), [r.getMessage() for r in caplog.records]

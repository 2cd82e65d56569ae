"""Helpers for the core engine's tests: polling with a deadline, a background engine,
``wfe`` processes and the HTTP they serve, a SQLite store that loses its folder."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

from wfcore import ECSWorkflowEngine, Phase, StoreError, Task, TaskStatus
from wfcore.stores.sqlite import SQLiteStore

__all__ = [
    "ECSWorkflowEngine",
    "HeldPhase",
    "background",
    "background_wfe",
    "db_path",
    "end_process",
    "events",
    "free_port",
    "http_get",
    "metrics_url",
    "pid_alive",
    "run_pytest",
    "run_task",
    "store_error_with_its_folder_gone",
    "stored_status",
    "stored_task",
    "submit_with_app",
    "wait_for",
    "wait_for_status",
    "wait_until",
    "wfe_at_once",
    "with_pythonpath",
]

T = TypeVar("T")


async def wait_for(
    probe: Callable[[], Awaitable[T] | T], timeout: float = 10.0, what: str = "condition"
) -> T:
    """Call ``probe`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def wait_until(probe: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Synchronous polling with a deadline (for tests that watch other processes)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


async def wait_for_status(
    engine: ECSWorkflowEngine, task_id: str, *statuses: TaskStatus, timeout: float = 10.0
) -> Task:
    """Poll the store until the task has one of ``statuses``; return it."""

    async def probe() -> Task | None:
        task = await engine.get_task(task_id)
        return task if task is not None and task.status in statuses else None

    return await wait_for(probe, timeout, f"task {task_id} to become {statuses}")


@contextlib.asynccontextmanager
async def background(engine: ECSWorkflowEngine) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``engine.run()`` while the block runs; stop it and wait for it after."""
    runner = asyncio.create_task(engine.run())
    await wait_for(lambda: engine.running or runner.done(), 10, "the engine to start")
    try:
        yield runner
    finally:
        engine.stop()
        await asyncio.wait_for(runner, 15)


async def run_task(
    engine: ECSWorkflowEngine, data: Any, workflow: str | None, **submit: Any
) -> Task:
    """Submit a task (``submit``: more of submit_task's arguments), run the engine
    until it is idle, and return the task as stored."""
    task = await engine.submit_task(data, workflow, **submit)
    await engine.run_until_idle()
    stored = await engine.get_task(task.id)
    assert stored is not None
    return stored


class HeldPhase:
    """Workflow "w" of ``engine``: one functional phase whose handler sets
    ``started`` and then waits until the test sets ``release``, so that the test
    acts on a task while its phase runs."""

    def __init__(self, engine: ECSWorkflowEngine) -> None:
        self.started, self.release = asyncio.Event(), asyncio.Event()
        engine.register_handler("slow", self._slow)
        engine.register_workflow("w", [Phase("slow", assigned_to="functional")])

    async def _slow(self, task: Task) -> None:
        self.started.set()
        await self.release.wait()


def events(task: Task) -> list[str]:
    """The event names of a task's history, in order."""
    return [entry["event"] for entry in task.history]


def db_path(store_url: str) -> Path:
    """The file of a ``sqlite:///`` URL."""
    assert store_url.startswith("sqlite:///")
    return Path("/" + store_url[len("sqlite://") :].lstrip("/"))


def stored_status(store_url: str, task_id: str) -> str | None:
    """Read a task's status straight from the SQLite file, through a new connection."""
    conn = sqlite3.connect(db_path(store_url), timeout=30)
    try:
        row = conn.execute("SELECT status FROM tasks WHERE id = ?", (task_id,)).fetchone()
    finally:
        conn.close()
    return None if row is None else row[0]


def stored_task(store_url: str, task_id: str) -> Task:
    """Read a task from the store of ``store_url`` (one another process wrote) with an
    engine of this process, opened and closed for the purpose."""

    async def read() -> Task | None:
        engine = ECSWorkflowEngine(store=store_url, load_plugins=False)
        try:
            return await engine.get_task(task_id)
        finally:
            await engine.aclose()

    task = asyncio.run(read())
    assert task is not None, f"no task {task_id} in {store_url}"
    return task


def pid_alive(pid: int) -> bool:
    """True if the process exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def end_process(proc: subprocess.Popen[Any]) -> None:
    """Kill ``proc`` if it still runs, and reap it."""
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def run_pytest(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run pytest on the tests in ``folder`` (``args``: node ids, ``-k ...``) in a
    process of its own, as a plugin's author would: its output, whatever the outcome."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
    )


@contextlib.contextmanager
def background_wfe(
    *args: str, cwd: Path, env: Mapping[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``wfe ARGS`` in a process of its own while the block runs, its stderr in ``log``.

    The block stops the process as its test means to (a signal, then ``wait``); one
    still running when the block ends, by a failed assertion, say, is killed.
    """
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "wfcore.cli", *args], cwd=cwd, env=env, stderr=err
        )
    try:
        yield proc
    finally:
        end_process(proc)


_SUBMIT_WITH_APP = """\
import asyncio, importlib, json, sys

module, _, attr = sys.argv[1].partition(":")
engine = getattr(importlib.import_module(module), attr or "engine")


async def main():
    ids = []
    for data in json.load(sys.stdin):
        ids.append((await engine.submit_task(data, sys.argv[2], None, sys.argv[3])).id)
    await engine.aclose()
    print(json.dumps(ids))


asyncio.run(main())
"""


def submit_with_app(
    app: str,
    workflow: str,
    datas: Sequence[Any],
    *,
    env: Mapping[str, str],
    cwd: Path,
    assigned_to: str = "ai",
) -> list[str]:
    """Submit one task per item of ``datas`` to ``workflow`` of the app ``MODULE:ATTR``
    on the store of ``env``, one after the other, and return their ids in order.

    What ``wfe submit WORKFLOW --app APP --data ...`` does once per task, in one
    process for them all: for tests about what workers do with the tasks, where a
    process started for each task would only add its start-up time. The data go on
    the process's stdin, which takes more than one argument may hold (128 KiB).
    """
    done = subprocess.run(
        [sys.executable, "-c", _SUBMIT_WITH_APP, app, workflow, assigned_to],
        input=json.dumps(datas),
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    ids: list[str] = json.loads(done.stdout)
    return ids


def wfe_at_once(
    wfe: Any, *commands: Sequence[str], env: Mapping[str, str] | None = None
) -> list[subprocess.CompletedProcess[str]]:
    """Run ``wfe COMMAND`` for each of ``commands``, several at a time, each as the
    ``wfe`` fixture runs one (its environment unless ``env``, in its store's folder),
    and return their results in the order given, whatever their exit status.

    For commands that change nothing another of them reads (reads, refused input),
    so that the order they run in does not matter: the starts of the processes,
    most of each command's time, then overlap. One more at a time than there are
    cores keeps them all busy; more only make the processes contend.
    """
    cwd = db_path(wfe.env["WFE_STORE"]).parent
    at_a_time = (os.cpu_count() or 1) + 1
    running: list[tuple[Sequence[str], subprocess.Popen[str]]] = []
    results: list[subprocess.CompletedProcess[str]] = []

    def finish_first() -> None:
        command, proc = running.pop(0)
        out, err = proc.communicate(timeout=60)
        results.append(subprocess.CompletedProcess(list(command), proc.returncode, out, err))

    try:
        for command in commands:
            if len(running) == at_a_time:
                finish_first()
            proc = subprocess.Popen(
                [sys.executable, "-m", "wfcore.cli", *command],
                cwd=cwd,
                env=wfe.env if env is None else env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            running.append((command, proc))
        while running:
            finish_first()
    finally:
        for _, proc in running:
            end_process(proc)
    return results


def with_pythonpath(env: Mapping[str, str], folder: Path, **more: str) -> dict[str, str]:
    """``env`` with ``folder`` first on PYTHONPATH (for the apps or plugins a test
    writes there) and ``more`` set."""
    return dict(env, PYTHONPATH=f"{folder}{os.pathsep}{env['PYTHONPATH']}", **more)


def metrics_url(log: Path) -> str | None:
    """The URL a ``wfe worker --metrics`` writing its stderr to ``log`` said it serves
    its metrics at, once that line is written whole; else None.

    With ``--metrics 0`` the worker binds a port the system picks, and names it: a
    port picked by the test and bound by the worker later may be taken meanwhile.
    """
    found = re.search(r"metrics at (http://\S+/metrics)\n", log.read_text())
    return found[1] if found else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a test that needs to
    know it before the process that binds it starts; else see :func:`metrics_url`)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(url: str) -> tuple[int, str]:
    """The status and body of a GET, error statuses (503) included."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def store_error_with_its_folder_gone(
    folder: Path, operation: Callable[[SQLiteStore], Awaitable[Any]]
) -> StoreError:
    """Open a SQLite store at ``folder/wfe.db``, move the folder away, and return the
    StoreError that ``operation`` on the store raises then (it must raise one).

    The store's connections open with its first read and its first write, so the
    operation is the first to find the file gone.
    """
    store = SQLiteStore(folder / "wfe.db")
    await store.open()
    try:
        folder.rename(folder.with_name(f"{folder.name}-elsewhere"))
        with pytest.raises(StoreError) as caught:
            await operation(store)
        return caught.value
    finally:
        await store.close()


def damage_tasks_table(db: Path) -> None:
    """Overwrite the first page of the tasks table and of each of its indexes, as a
    stale ``-wal`` file replayed onto a restored copy can: the schema still reads,
    the tasks do not."""
    with sqlite3.connect(db) as conn:
        roots = conn.execute(
            "SELECT rootpage FROM sqlite_master WHERE tbl_name = 'tasks' AND rootpage > 0"
        ).fetchall()
        (size,) = conn.execute("PRAGMA page_size").fetchone()
    conn.close()
    with db.open("r+b") as file:
        for (root,) in roots:
            file.seek((root - 1) * size)
            file.write(b"\xff" * size)

"""A worker app for the multi-process tests; every side effect goes to files.

Configured by the environment: ``WFE_STORE`` (the store), ``WFE_TEST_DIR`` (where
the side-effect files go), ``WFE_TEST_WORKER`` (this worker's name),
``WFE_TEST_WORKER_ID`` (overrides the engine's lease owner id), ``WFE_TEST_LEASE``
(lease seconds) and ``WFE_TEST_CONCURRENCY``.

Files written in ``WFE_TEST_DIR``: ``runs.log`` (one line per phase event:
``<event> <task id> <worker>``), ``completions.log`` (``<task id> <worker>`` from
the completed hook), ``ready-<worker>`` (when the engine starts) and, for the
``cancel`` workflow, ``started``, ``noticed-cancel`` and ``finished`` markers. The
``poison`` workflow's phase kills its own worker with SIGKILL. The ``fanout``
workflow's first phase submits three ``page`` children, writes ``split-submitted``
and, the first time, stops there for good.
A handler told to block waits for the file ``gate``. The ``hang`` workflow's command
starts a child of its own, writes both pids to ``command-pids`` and sleeps.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from wfcore import ECSWorkflowEngine, Phase, Task, hookimpl

DIR = Path(os.environ["WFE_TEST_DIR"])
WORKER = os.environ.get("WFE_TEST_WORKER", f"pid{os.getpid()}")


def append(name: str, line: str) -> None:
    """Append one line with a single write, so lines from several processes never mix."""
    fd = os.open(DIR / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


async def wait_for_file(path: Path) -> None:
    while not path.exists():
        await asyncio.sleep(0.02)


class Ready:
    @hookimpl
    def wfe_engine_started(self) -> None:
        (DIR / f"ready-{WORKER}").write_text(str(os.getpid()))


engine = ECSWorkflowEngine(
    max_concurrency=int(os.environ.get("WFE_TEST_CONCURRENCY", "10")),
    load_plugins=False,
    plugins=[Ready()],
    lease_seconds=float(os.environ.get("WFE_TEST_LEASE", "30")),
    retry_delay=0.05,
    poll_interval=0.05,
)
if os.environ.get("WFE_TEST_WORKER_ID"):
    engine.worker_id = os.environ["WFE_TEST_WORKER_ID"]


async def phase_a(task: Task) -> None:
    append("runs.log", f"a {task.id} {WORKER}")
    wanted = (task.data or {}).get("wait_for_workers", 0)
    while len(list(DIR.glob("ready-*"))) < wanted:
        await asyncio.sleep(0.02)
    task.output = WORKER


async def phase_b(task: Task) -> None:
    append("runs.log", f"b-start {task.id} {WORKER}")
    if (task.data or {}).get("block"):
        await wait_for_file(DIR / "gate")
    else:
        await asyncio.sleep(0.01)
    append("runs.log", f"b-end {task.id} {WORKER}")
    task.output = WORKER


async def stubborn(task: Task) -> None:
    """Ignores cancellation, then tries to finish the phase anyway."""
    (DIR / "started").write_text(WORKER)
    while True:
        try:
            await wait_for_file(DIR / "gate")
            break
        except asyncio.CancelledError:
            (DIR / "noticed-cancel").write_text(WORKER)
    task.output = "late result"
    (DIR / "finished").write_text(WORKER)


async def progress(task: Task) -> None:
    """Works through five items, checkpointing after each; the first run stops for
    good after item 2 (until its worker is killed)."""
    done = task.context.setdefault("done", [])
    append("runs.log", f"progress-start {len(done)} {WORKER}")
    for item in range(len(done), 5):
        done.append(item)
        await engine.checkpoint(task)
        if item == 2 and not (DIR / "stopped-once").exists():
            (DIR / "stopped-once").write_text(WORKER)
            await wait_for_file(DIR / "never")
    task.output = list(done)


async def poison(task: Task) -> None:
    """Kills its own worker, as a segfault or the OOM killer would; with
    ``checkpoint`` in its data it stores a checkpoint first."""
    append("runs.log", f"poison {task.id} {WORKER}")
    if (task.data or {}).get("checkpoint"):
        task.context["runs"] = task.context.get("runs", 0) + 1
        await engine.checkpoint(task)
    os.kill(os.getpid(), signal.SIGKILL)


async def split(task: Task) -> None:
    """Submits three ``page`` children; the first run then stops for good (until its
    worker is killed), the next waits for them."""
    for page in ("p1", "p2", "p3"):
        await engine.submit_task(page, "page", parent=task)
    if not (DIR / "split-submitted").exists():
        (DIR / "split-submitted").write_text(WORKER)
        await wait_for_file(DIR / "never")
    engine.wait_for_children(task)


async def page(task: Task) -> None:
    append("runs.log", f"page {task.id} {WORKER}")
    task.output = task.data.upper()


async def merge(task: Task) -> None:
    task.output = [child["output"] for child in task.outputs["split"]]


async def on_completed(task: Task) -> None:
    append("completions.log", f"{task.id} {WORKER}")


# A command that starts a child of its own, records both pids, then hangs.
HANG = [
    sys.executable,
    "-c",
    "import json, os, subprocess, sys, time\n"
    "sleeper = [sys.executable, '-c', 'import time; time.sleep(600)']\n"
    "child = subprocess.Popen(sleeper)\n"
    # As GNU timeout or a shell with job control does: a process group of its own.
    "own_group = subprocess.Popen(sleeper, preexec_fn=os.setpgrp)\n"
    "path = os.path.join(sys.argv[1], 'command-pids')\n"
    "with open(path + '.tmp', 'w') as fh:\n"
    "    json.dump({'command': os.getpid(), 'child': child.pid, 'own_group': own_group.pid,\n"
    "               'cwd': os.getcwd()}, fh)\n"
    "os.rename(path + '.tmp', path)\n"
    "time.sleep(600)\n",
    str(DIR),
]

engine.register_handler("a", phase_a)
engine.register_handler("b", phase_b)
engine.register_handler("stubborn", stubborn)
engine.register_handler("progress", progress)
engine.register_handler("poison", poison)
engine.register_handler("split", split)
engine.register_handler("page", page)
engine.register_handler("merge", merge)
engine.register_workflow("fanout", [Phase("split"), Phase("merge")])
engine.register_workflow("page", [Phase("page")])
engine.register_workflow("poison", [Phase("poison")])
engine.register_workflow("progress", [Phase("progress", assigned_to="functional")])
engine.register_workflow("mp", [Phase("a"), Phase("b")])
engine.register_workflow("cancel", [Phase("stubborn")])
engine.register_workflow("hang", [Phase("hang", assigned_to="functional", command=HANG)])
engine.register_task_completed_hook(on_completed)

"""Soak ("chaos") test: worker processes are SIGKILLed at random while a mixed
workload runs on one SQLite store, then what the README promises is checked.

    python benchmarks/soak.py [--tasks M] [--workers K] [--seconds S] [--kill-every S]
                              [--pause-every S --lease-seconds S] [--seed N] [--keep]

It makes a temporary folder with a SQLite store and an app module (``soak_app.py``)
of several workflows: async and plain handlers, a subprocess phase that writes files
under ``out/`` (a subfolder too), phases that add artifacts and read earlier ones,
a phase that submits child tasks and waits for them, a phase whose first attempt
fails (``max_attempts``), human phases answered with ``wfe resume``, a
``define_workflow`` task, and a workflow that ``wfe cancel``, ``wfe retry`` and
``wfe purge`` run against while the workers work. It submits the tasks in waves
(``wfe submit`` and the Python API), runs K ``wfe worker`` processes, and for
``--seconds`` SIGKILLs a random one every ``--kill-every`` seconds or so, starting
another in its place; the ``wfe resume``/``cancel``/``retry``/``purge`` commands are
killed at random too. With ``--pause-every``, a random worker is also stopped
(SIGSTOP) past its ``--lease-seconds`` and woken again. Then the workers finish what
is left (with a deadline), and the store and the artifacts folder are checked:

- every task submitted is stored (or, for the purged workflow only, purged) and
  finished, COMPLETED unless the harness cancelled it;
- each completed task's outputs, data and route are the ones its workflow computes,
  a human phase's output is the answer given, a defined workflow's task carries its
  ``input``;
- a task completes once (one ``completed`` event); the completed hook runs at most
  once per task, sees the outputs and artifacts that were stored, and is missing
  only where a process that could have run it was killed just after the completion;
- every artifact a task lists is on disk with its size and sha256; a finished task's
  folder holds nothing the task does not list (no ``.tmp-*`` file either), except a
  cancelled task's, which the README lets keep them; a failed attempt's files are gone;
- a parent lists exactly the children its phase submitted, each child names it, and
  its join output is every child's;
- after a last ``wfe purge``, no folder is left in the artifacts folder that no task
  owns, and the purged tasks' folders are gone;
- once the workers are stopped, no command a phase ran is still running, and no
  work folder of a killed worker is left (the run's TMPDIR is its own);
- phases that lost their worker ``max_takeovers`` times in a row fail with
  ``WorkerLostError`` (the README's rule); the harness retries those, as the README
  says to.

It prints the tasks by status, the phases rerun after kills (``taken_over`` events,
and the handler runs the app logs), and every violation with its task ids; it exits
1 on any violation. ``--seed`` fixes the workload, the answers and the kill schedule
(which moment a kill lands in a phase depends on timing).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import hashlib
import importlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

APP = r'''"""The soak harness's app: its workflows, handlers and completed hook.

Every handler run and every completion is appended as a JSON line to files in
$SOAK_DIR (runs.log, completed.log), one write each, for the harness to read.
"""

import asyncio
import hashlib
import json
import os
import sys
import time
from pathlib import Path

from wfcore import ECSWorkflowEngine, PermanentError, Phase, Task

LOGS = Path(os.environ["SOAK_DIR"])
SCALE = float(os.environ.get("SOAK_PHASE_SECONDS", "0.6"))
LEASE = float(os.environ.get("SOAK_LEASE_SECONDS", "30"))


def log(name, **fields):
    line = json.dumps({"pid": os.getpid(), "t": time.time(), **fields}) + "\n"
    fd = os.open(LOGS / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def pause(task, phase):
    """How long a phase works: fixed by the task and phase, up to SCALE seconds."""
    h = int(hashlib.sha256(f"{task.id}/{phase}".encode()).hexdigest()[:8], 16)
    return 0.05 + SCALE * (h % 1000) / 1000


def digest(value):
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def ran(task, phase):
    log("runs.log", task=task.id, phase=phase, attempt=task.attempts)


BUILD = """
import json, os, sys, time
task = json.load(sys.stdin)
n = int(open("artifacts/input.txt").read())
os.makedirs("out/sub", exist_ok=True)
with open("out/result.txt", "w") as f:
    f.write(str(n * n))
time.sleep(float(sys.argv[1]))
with open("out/sub/part-1.txt", "w") as f:  # names this run: a stale copy shows
    f.write(f"{task['id']} part 1 of {n}, by process {os.getpid()}")
with open("out/sub/part-2.txt", "w") as f:
    f.write(f"{task['id']} part 2 of {n}")
print(json.dumps({"square": n * n}))
"""

BLOB = """
import json, os, sys, time
task = json.load(sys.stdin)
os.makedirs("out", exist_ok=True)
with open("out/blob.bin", "wb") as f:
    f.write(task["id"].encode() * 2000)
time.sleep(float(sys.argv[1]))
print(json.dumps({"size": len(task["id"]) * 2000}))
"""


def build(store=None):
    engine = ECSWorkflowEngine(
        store=store, retry_delay=0.2, poll_interval=0.1, lease_seconds=LEASE
    )

    # pipeline: async -> command (out/ and out/sub/) -> async reading them -> plain
    async def prep(task: Task) -> None:
        ran(task, "prep")
        await asyncio.sleep(pause(task, "prep"))
        n = task.data["n"]
        await engine.add_artifact_text(task, "input.txt", f"{n}\n")
        task.context["prepared"] = n
        task.output = {"n": n}

    async def verify(task: Task) -> None:
        ran(task, "verify")
        n = task.data["n"]
        result = (await engine.read_artifact(task, "result.txt")).decode()
        part = (await engine.read_artifact(task, "sub/part-2.txt")).decode()
        if result != str(n * n) or part != f"{task.id} part 2 of {n}":
            raise PermanentError(f"artifacts of build are wrong: {result!r}, {part!r}")
        # Works in steps, noting its progress in a file after each (the file names
        # the process: a run that goes on after its task was taken over, its worker
        # paused past its lease, would write other bytes than the run that counts).
        for step in range(4):
            await asyncio.sleep(pause(task, "verify") / 4)
            note = f"step {step} by process {os.getpid()}"
            await engine.add_artifact_text(task, "progress.txt", note)
        summary = {"n": n, "square": n * n, "context": task.context.get("prepared")}
        # The file names the process that wrote it: a run that goes on after its
        # task was taken over (its worker paused) writes other bytes than the new run.
        written = {**summary, "pid": os.getpid()}
        await engine.add_artifact_text(task, "summary.json", json.dumps(written))
        task.output = summary

    def finish(task: Task) -> None:
        ran(task, "finish")
        time.sleep(pause(task, "finish"))
        task.output = {"n": task.data["n"], "square": task.outputs["build"]["square"]}

    engine.register_handler("prep", prep)
    engine.register_handler("verify", verify)
    engine.register_handler("finish", finish)
    engine.register_workflow(
        "pipeline",
        [
            Phase("prep", assigned_to="functional"),
            Phase(
                "build",
                assigned_to="functional",
                command=[sys.executable, "-c", BUILD, str(SCALE / 2)],
            ),
            Phase("verify", assigned_to="functional"),
            Phase("finish", assigned_to="functional"),
        ],
    )

    # flaky: submitted with a file; the first attempt adds one, then fails; the
    # second succeeds
    async def attempt(task: Task) -> None:
        ran(task, "attempt")
        seed = (await engine.read_artifact(task, "seed.txt")).decode()
        if seed != f"seed of {task.id}":
            raise PermanentError(f"seed.txt holds {seed!r}")
        await engine.add_artifact_text(task, f"try-{task.attempts}.txt", str(task.attempts))
        await asyncio.sleep(pause(task, "attempt"))
        if task.attempts == 1:
            raise RuntimeError("the first attempt fails on purpose")
        task.output = {"attempt": task.attempts}

    def settle(task: Task) -> None:
        ran(task, "settle")
        time.sleep(pause(task, "settle"))
        task.output = {"n": task.data["n"]}

    engine.register_handler("attempt", attempt)
    engine.register_handler("settle", settle)
    engine.register_workflow(
        "flaky",
        [
            Phase("attempt", assigned_to="functional", max_attempts=3),
            Phase("settle", assigned_to="functional"),
        ],
    )

    # fanout: a phase submits children and waits for them; the next joins them
    async def split(task: Task) -> None:
        ran(task, "split")
        for i in range(task.data["k"]):
            await engine.submit_task({"i": i}, "leaf", parent=task)
        await asyncio.sleep(pause(task, "split"))
        engine.wait_for_children(task)

    async def merge(task: Task) -> None:
        ran(task, "merge")
        children = task.outputs["split"]
        if [c["status"] for c in children] != ["completed"] * task.data["k"]:
            raise PermanentError(f"children did not all complete: {children}")
        task.output = {"total": sum(c["output"]["v"] for c in children)}

    def leaf(task: Task) -> None:
        ran(task, "leaf")
        time.sleep(pause(task, "leaf"))
        task.output = {"v": task.data["i"] * 10}

    engine.register_handler("split", split)
    engine.register_handler("merge", merge)
    engine.register_handler("leaf", leaf)
    engine.register_workflow("fanout", [Phase("split"), Phase("merge")])
    engine.register_workflow("leaf", [Phase("leaf")])

    # approval: a person answers in the middle; signoff: a person's answer completes it
    schema = {
        "type": "object",
        "required": ["approved", "token"],
        "properties": {"approved": {"type": "boolean"}, "token": {"type": "string"}},
    }

    async def draft(task: Task) -> None:
        ran(task, "draft")
        await asyncio.sleep(pause(task, "draft"))
        task.output = {"draft": task.data["n"]}

    def publish(task: Task) -> None:
        ran(task, "publish")
        time.sleep(pause(task, "publish"))
        task.output = {"published": task.outputs["approve"]["token"]}

    engine.register_handler("draft", draft)
    engine.register_handler("publish", publish)
    engine.register_workflow(
        "approval",
        [
            Phase("draft", assigned_to="functional"),
            Phase("approve", assigned_to="human", input_schema=schema),
            Phase("publish", assigned_to="functional"),
        ],
    )
    engine.register_handler("check", draft)
    engine.register_workflow(
        "signoff",
        [
            Phase("check", assigned_to="functional"),
            Phase("sign", assigned_to="human", input_schema=schema),
        ],
    )

    # scratch: what wfe cancel, retry and purge run against
    async def tidy(task: Task) -> None:
        ran(task, "tidy")
        await asyncio.sleep(pause(task, "tidy"))
        task.output = {"size": task.outputs["blob"]["size"]}

    engine.register_handler("tidy", tidy)
    engine.register_workflow(
        "scratch",
        [
            Phase("blob", assigned_to="functional",
                  command=[sys.executable, "-c", BLOB, str(SCALE)]),
            Phase("tidy", assigned_to="functional"),
        ],
    )

    # the phases of the workflow that define_workflow tasks define
    async def dyn_a(task: Task) -> None:
        ran(task, "dyn_a")
        await asyncio.sleep(pause(task, "dyn_a"))
        task.output = {"plus": task.data["n"] + 1}

    def dyn_b(task: Task) -> None:
        ran(task, "dyn_b")
        time.sleep(pause(task, "dyn_b"))
        task.output = {"times": task.outputs["dyn_a"]["plus"] * 2}

    engine.register_handler("dyn_a", dyn_a)
    engine.register_handler("dyn_b", dyn_b)

    async def completed(task: Task) -> None:
        log(
            "completed.log",
            task=task.id,
            outputs=digest(task.outputs),
            artifacts={a.name: a.sha256 for a in task.artifacts},
        )

    engine.register_task_completed_hook(completed)
    return engine


engine = build()
'''

# The workflow the define_workflow tasks define (every such task defines the same).
DYN_SPEC: dict[str, Any] = {
    "name": "dyn_double",
    "phases": [
        {"target_classification": "dyn_a", "assigned_to": "functional"},
        {"target_classification": "dyn_b", "assigned_to": "functional"},
    ],
}

# Of every 20 tasks, how many of each kind.
MIX = {
    "pipeline": 5,
    "flaky": 3,
    "fanout": 3,
    "approval": 2,
    "signoff": 2,
    "scratch": 3,
    "define": 2,
}
ROUTES = {
    "pipeline": ["prep", "build", "verify", "finish"],
    "flaky": ["attempt", "settle"],
    "fanout": ["split", "merge"],
    "leaf": ["leaf"],
    "approval": ["draft", "approve", "publish"],
    "signoff": ["check", "sign"],
    "scratch": ["blob", "tidy"],
    "dyn_double": ["dyn_a", "dyn_b"],
}
ARTIFACTS = {
    "pipeline": {
        "input.txt",
        "result.txt",
        "sub/part-1.txt",
        "sub/part-2.txt",
        "progress.txt",
        "summary.json",
    },
    "flaky": {"seed.txt", "try-2.txt"},
    "scratch": {"blob.bin"},
}
FINISHED = {"completed", "failed", "cancelled"}


@dataclass
class Planned:
    """A task the harness submits."""

    id: str
    kind: str
    data: dict[str, Any]
    via_cli: bool
    wave: int


@dataclass
class Run:
    """What the harness did and saw: the input of the checks and the summary."""

    folder: Path
    env: dict[str, str]
    wfe: str
    rng: random.Random  # the workload, the answers, cancel/retry/purge
    kill_rng: random.Random  # when workers are killed or paused, and which
    planned: list[Planned] = field(default_factory=list)
    kills: list[tuple[float, str]] = field(default_factory=list)  # (time, what)
    killed_workers: list[tuple[int, float]] = field(default_factory=list)  # (pid, time)
    cancelled: set[str] = field(default_factory=set)
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)
    ops: collections.Counter[str] = field(default_factory=collections.Counter)
    purges: int = 0
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    violations: list[tuple[str, list[str]]] = field(default_factory=list)

    def violation(self, what: str, ids: Iterable[str] = ()) -> None:
        self.violations.append((what, sorted(ids)))


def _token(task_id: str) -> str:
    return hashlib.sha256(task_id.encode()).hexdigest()[:10]


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def plan(rng: random.Random, count: int, waves: int) -> list[Planned]:
    kinds = [k for k, n in MIX.items() for _ in range(n)]
    tasks = []
    for i in range(count):
        kind = kinds[i % len(kinds)] if i < len(kinds) else rng.choice(kinds)
        n = rng.randint(1, 999)
        data: dict[str, Any] = {"n": n}
        if kind == "fanout":
            data["k"] = rng.randint(2, 4)
        if kind == "define":
            data = {**DYN_SPEC, "input": {"n": n}}
        tasks.append(Planned(f"{kind}-{i:04d}", kind, data, rng.random() < 0.25, i % waves))
    return tasks


# --- processes -------------------------------------------------------------------


def spawn(run: Run, args: list[str], log: str) -> subprocess.Popen[bytes]:
    """Start ``wfe ARGS`` in the run's folder, in a session of its own (so that a
    Ctrl-C reaches the harness alone, which then ends what it started)."""
    with open(run.folder / log, "ab") as out:
        proc = subprocess.Popen(
            [run.wfe, *args],
            cwd=run.folder,
            env=run.env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    run.procs[proc.pid] = proc
    return proc


def reap(run: Run) -> None:
    for pid, proc in list(run.procs.items()):
        if proc.poll() is not None:
            del run.procs[pid]


def kill_all(run: Run) -> None:
    """SIGKILL every process the harness started that still runs, by its id."""
    for proc in list(run.procs.values()):
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
    for proc in list(run.procs.values()):
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
    run.procs.clear()


async def command(run: Run, args: list[str], kill_chance: float, what: str) -> int | None:
    """Run ``wfe ARGS``; with ``kill_chance``, SIGKILL it at a random moment in its
    first second. Its exit status, or None when killed."""
    proc = spawn(run, args, "commands.log")
    kill_at = run.rng.uniform(0.05, 1.0) if run.rng.random() < kill_chance else None
    started = time.monotonic()
    while proc.poll() is None:
        if kill_at is not None and time.monotonic() - started >= kill_at:
            proc.kill()
            proc.wait()
            run.kills.append((time.time(), what))
            run.ops[f"{what} killed"] += 1
            return None
        await asyncio.sleep(0.02)
    run.ops[what] += 1
    return proc.returncode


def catches_sigterm(pid: int) -> bool:
    """Whether process ``pid`` has a handler for SIGTERM (True where /proc cannot tell)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    for line in status.splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return True


class Workers:
    """K ``wfe worker`` processes; kill() SIGKILLs one and starts another in its place."""

    def __init__(self, run: Run, count: int, concurrency: int) -> None:
        self.run = run
        self.concurrency = concurrency
        self.started = 0
        self.slots: list[subprocess.Popen[bytes]] = [self._start() for _ in range(count)]

    def _start(self) -> subprocess.Popen[bytes]:
        self.started += 1
        args = ["worker", "soak_app:engine", "--concurrency", str(self.concurrency), "--quiet"]
        return spawn(self.run, args, f"worker-{self.started}.log")

    def kill(self) -> None:
        i = self.run.kill_rng.randrange(len(self.slots))
        proc = self.slots[i]
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            self.run.kills.append((time.time(), "worker"))
            self.run.killed_workers.append((proc.pid, time.time()))
        else:
            self.run.violation(f"worker process {proc.pid} exited by itself ({proc.returncode})")
        self.slots[i] = self._start()

    async def pause(self, seconds: float) -> None:
        """SIGSTOP a random worker for ``seconds`` (past its lease), then SIGCONT it:
        its tasks are taken over meanwhile, and its writes once it wakes are dropped."""
        proc = self.run.kill_rng.choice(self.slots)
        if proc.poll() is not None:
            return
        proc.send_signal(signal.SIGSTOP)
        self.run.kills.append((time.time(), "pause"))
        try:
            await asyncio.sleep(seconds)
        finally:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGCONT)

    def check_alive(self) -> None:
        for i, proc in enumerate(self.slots):
            if proc.poll() is not None:
                self.run.violation(
                    f"worker process {proc.pid} exited by itself ({proc.returncode}); "
                    "see its log in the run folder"
                )
                self.slots[i] = self._start()

    def stop(self) -> None:
        # A worker stops cleanly on SIGTERM once it has set up its handler: one just
        # started, still importing, would die of it (as any program would), so each
        # gets until it catches SIGTERM (read from /proc), with a deadline.
        deadline = time.monotonic() + 30
        for proc in self.slots:
            while proc.poll() is None and not catches_sigterm(proc.pid):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        for proc in self.slots:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.slots:
            try:
                code = proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
                self.run.violation(f"worker process {proc.pid} did not stop on SIGTERM")
            if code not in (0, -signal.SIGKILL):
                self.run.violation(f"worker process {proc.pid} stopped with status {code}")


# --- the soak --------------------------------------------------------------------


async def submit_wave(run: Run, engine: Any, wave: list[Planned]) -> None:
    batch: list[dict[str, Any]] = []
    for t in wave:
        if t.via_cli:
            if t.kind == "define":
                args = ["submit", "-", "--classification", "define_workflow"]
            else:
                args = ["submit", t.kind]
            # --app: before any worker has stored the app's workflows, wfe submit
            # knows them only from the app (README, "Tasks").
            args += ["--data", json.dumps(t.data), "--id", t.id, "--app", "soak_app:engine"]
            if t.kind == "flaky":
                seed = run.folder / f"seed-{t.id}.txt"
                seed.write_text(f"seed of {t.id}")
                args += ["--artifact", f"seed.txt={seed}"]
            code = await command(run, args, 0, "submit")
            if code != 0:
                run.violation(f"wfe submit exited {code}", [t.id])
        elif t.kind == "define":
            batch.append(
                {
                    "data": t.data,
                    "workflow_name": None,
                    "classification": "define_workflow",
                    "task_id": t.id,
                }
            )
        else:
            request: dict[str, Any] = {"data": t.data, "workflow_name": t.kind, "task_id": t.id}
            if t.kind == "flaky":
                request["artifacts"] = {"seed.txt": f"seed of {t.id}".encode()}
            batch.append(request)
    if batch:
        await engine.submit_tasks(batch)


async def answer(run: Run, engine: Any, kill_chance: float) -> None:
    """Answer a few of the tasks waiting for a person, with ``wfe resume``."""
    waiting = await engine.list_tasks("waiting_human", limit=1000, summary=True)
    run.rng.shuffle(waiting)
    for task in waiting[:4]:
        output = {"approved": True, "token": _token(task.id)}
        run.answers[task.id] = output
        args = ["resume", task.id, "--output", json.dumps(output)]
        args += ["--phase", task.classification, "--app", "soak_app:engine"]
        await command(run, args, kill_chance, "resume")


async def chaos_op(run: Run, engine: Any, kill_chance: float) -> None:
    """One of cancel, retry or purge, against the scratch workflow."""
    op = run.rng.choice(["cancel", "cancel", "retry", "purge"])
    if op == "cancel":
        live = await engine.list_tasks(
            ["pending", "in_progress"], limit=1000, workflow_name="scratch", summary=True
        )
        if live:
            victim = run.rng.choice(sorted(t.id for t in live))
            run.cancelled.add(victim)
            await command(run, ["cancel", victim], kill_chance, "cancel")
    elif op == "retry":
        await command(
            run, ["retry", "--status", "cancelled", "--workflow", "scratch"], kill_chance, "retry"
        )
    else:
        run.purges += 1
        await command(
            run, ["purge", "--older-than", "1s", "--workflow", "scratch"], kill_chance, "purge"
        )


async def retry_lost(run: Run, engine: Any) -> None:
    """Retry tasks whose phase lost its worker max_takeovers times in a row (the
    README: "wfe retry runs it again once the cause is fixed"). Only those whose own
    error it is: a parent whose join names a child that failed so holds it too."""
    found = await engine.retry_tasks(
        ["failed"], error_contains="WorkerLostError", dry_run=True, by="soak"
    )
    for task_id in found:
        task = await engine.get_task(task_id)
        if task is not None and (task.error or "").startswith("WorkerLostError"):
            with contextlib.suppress(Exception):  # retried by a wfe retry meanwhile, say
                await engine.retry(task_id, by="soak")
                run.ops["retried after WorkerLostError"] += 1


async def unfinished(engine: Any) -> int:
    tasks = await engine.list_tasks(
        ["pending", "in_progress", "waiting_human", "waiting_agent", "waiting_io"],
        limit=100_000,
        summary=True,
    )
    return len(tasks)


async def soak(run: Run, args: argparse.Namespace, engine: Any) -> None:
    waves = max(1, min(args.tasks // 5, 12))
    run.planned = plan(run.rng, args.tasks, waves)
    kill_chance = args.command_kills
    workers = Workers(run, args.workers, args.concurrency)
    start = time.monotonic()
    end = start + args.seconds
    over = asyncio.Event()

    async def until(moment: float) -> None:
        with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
            await asyncio.wait_for(over.wait(), max(0.0, moment - time.monotonic()))

    async def submitter() -> None:
        # The waves go over the first 80% of the run; all of them, whatever happens.
        for wave in range(waves):
            await until(start + args.seconds * 0.8 * wave / waves)
            await submit_wave(run, engine, [t for t in run.planned if t.wave == wave])

    async def answerer() -> None:
        while not over.is_set():
            await answer(run, engine, kill_chance)
            await until(time.monotonic() + 1)

    async def operator() -> None:
        await until(start + run.rng.uniform(1, 3))
        while not over.is_set():
            await chaos_op(run, engine, kill_chance)
            await retry_lost(run, engine)
            await until(time.monotonic() + run.rng.uniform(2, 5))

    # Each its own coroutine, so that a command the harness waits for never holds up
    # the kills, whose times come from a random generator of their own.
    helpers = [asyncio.create_task(submitter()), asyncio.create_task(answerer())]
    if args.ops:
        helpers.append(asyncio.create_task(operator()))
    next_kill = start + run.kill_rng.uniform(0.5, 1.5) * args.kill_every
    next_pause = start + run.kill_rng.uniform(0.5, 1.5) * args.pause_every
    pausing: asyncio.Task[None] | None = None
    print(f"soak: {args.tasks} tasks, {args.workers} workers, {args.seconds:g}s", flush=True)
    try:
        while time.monotonic() < end:
            now = time.monotonic()
            if args.kill_every > 0 and now >= next_kill:
                workers.kill()
                next_kill += run.kill_rng.uniform(0.5, 1.5) * args.kill_every
            if args.pause_every > 0 and now >= next_pause:
                if pausing is None or pausing.done():
                    pausing = asyncio.create_task(workers.pause(args.lease_seconds * 1.5))
                next_pause += run.kill_rng.uniform(0.5, 1.5) * args.pause_every
            workers.check_alive()
            reap(run)
            await asyncio.sleep(0.02)
        over.set()
        await asyncio.gather(*helpers, *([pausing] if pausing is not None else []))
    finally:
        for helper in helpers:
            helper.cancel()
    kills = sum(1 for _, what in run.kills if what == "worker")
    print(f"soak: {kills} workers killed; letting the workers finish", flush=True)
    deadline = time.monotonic() + args.drain_seconds
    while True:
        await retry_lost(run, engine)
        await answer(run, engine, 0)
        if await unfinished(engine) == 0:
            break
        if time.monotonic() > deadline:
            run.violation(f"tasks still unfinished {args.drain_seconds:g}s after the soak")
            break
        workers.check_alive()
        await asyncio.sleep(0.5)
    workers.stop()


# --- the checks ------------------------------------------------------------------


def read_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def files_under(folder: Path) -> Iterator[str]:
    for path in sorted(folder.rglob("*")):
        if path.is_file() or path.is_symlink():
            yield path.relative_to(folder).as_posix()


def lost_children(task: Any) -> bool:
    """Whether a fanout parent failed in its join only because children of its had
    failed with WorkerLostError: its join then fails it (PermanentError), as the app
    says; the README lets a failed child leave its parent's next phase to decide."""
    joined = task.outputs.get("split") or []
    failed = [c for c in joined if c["status"] != "completed"]
    return (
        task.classification == "merge"
        and (task.error or "").startswith("PermanentError: children did not all complete")
        and bool(failed)
        and all(
            c["status"] == "failed" and (c["error"] or "").startswith("WorkerLostError")
            for c in failed
        )
    )


def expected_outputs(kind: str, task: Any, run: Run) -> dict[str, Any] | None:
    """The outputs a completed task of ``kind`` must have (None: not checked here)."""
    n = task.data.get("n")
    if kind == "pipeline":
        summary = {"n": n, "square": n * n, "context": n}
        return {
            "prep": {"n": n},
            "build": {"square": n * n},
            "verify": summary,
            "finish": {"n": n, "square": n * n},
        }
    if kind == "flaky":
        return {"attempt": {"attempt": 2}, "settle": {"n": n}}
    if kind in ("approval", "signoff"):
        answer = {"approved": True, "token": _token(task.id)}
        first = "draft" if kind == "approval" else "check"
        outputs: dict[str, Any] = {first: {"draft": n}}
        if kind == "approval":
            outputs.update(approve=answer, publish={"published": answer["token"]})
        else:
            outputs.update(sign=answer)
        return outputs
    if kind == "scratch":
        return {"blob": {"size": len(task.id) * 2000}, "tidy": {"size": len(task.id) * 2000}}
    if kind == "define":
        return {
            "define_workflow": {"workflow": "dyn_double"},
            "dyn_a": {"plus": n + 1},
            "dyn_b": {"times": (n + 1) * 2},
        }
    return None


async def check(run: Run, engine: Any, artifacts_dir: Path, kill_window: float) -> dict[str, Any]:
    stored = {t.id: t for t in await engine.list_tasks(limit=1_000_000)}
    planned = {t.id: t for t in run.planned}
    by_status = collections.Counter(t.status.value for t in stored.values())
    hooks = collections.defaultdict(list)
    for entry in read_log(run.folder / "completed.log"):
        hooks[entry["task"]].append(entry)
    runs = collections.Counter(
        (r["task"], r["phase"], r["attempt"]) for r in read_log(run.folder / "runs.log")
    )
    kill_times = sorted(t for t, what in run.kills if what in ("worker", "resume"))
    v = collections.defaultdict(set)

    def kill_near(at: float) -> bool:
        return any(at - 1 <= k <= at + kill_window for k in kill_times)

    children_of = collections.defaultdict(set)
    for task in stored.values():
        if task.parent_id is not None:
            children_of[task.parent_id].add(task.id)

    # Every task in the store: submitted by the harness or a child of one.
    for task_id, task in stored.items():
        if task_id not in planned and task.parent_id not in planned:
            v["a task in the store that nobody submitted"].add(task_id)

    for task_id, p in planned.items():
        task = stored.get(task_id)
        if task is None:
            if p.kind != "scratch" or run.purges == 0:
                v["a submitted task is not in the store (lost)"].add(task_id)
            continue
        status = task.status.value
        if status not in FINISHED:
            v[f"a task is still {status} after the workers finished"].add(task_id)
            continue
        if status == "cancelled" and task_id not in run.cancelled:
            v["a task nobody cancelled is cancelled"].add(task_id)
        if status == "failed" and not (p.kind == "fanout" and lost_children(task)):
            v[f"a task failed: {(task.error or '').splitlines()[0][:120]}"].add(task_id)
        if status != "completed":
            continue
        completions = [e for e in task.history if e.get("event") == "completed"]
        if len(completions) != 1:
            v[f"a completed task has {len(completions)} completed events"].add(task_id)
        want = expected_outputs(p.kind, task, run)
        if want is not None and task.outputs != want:
            v["a completed task's outputs are not what its phases compute"].add(task_id)
        route = ROUTES["dyn_double" if p.kind == "define" else p.kind]
        if p.kind == "define" and (
            task.workflow_name != "dyn_double" or task.data != p.data["input"]
        ):
            v["a define_workflow task is not in its workflow with its input as data"].add(task_id)
        if p.kind != "define" and task.data != p.data:
            v["a completed task's data changed"].add(task_id)
        if task.classification != route[-1]:
            v["a completed task did not end at its workflow's last phase"].add(task_id)
        names = {a.name for a in task.artifacts}
        if names != ARTIFACTS.get(p.kind, set()):
            v["a completed task's artifacts are not those its phases made"].add(task_id)
        # The completed hook: at most once, seeing what was stored.
        seen = hooks.get(task_id, [])
        if len(seen) > 1:
            v["the completed hook ran more than once"].add(task_id)
        for entry in seen:
            if entry["outputs"] != _digest(task.outputs) or entry["artifacts"] != {
                a.name: a.sha256 for a in task.artifacts
            }:
                v["the completed hook saw other outputs or artifacts than were stored"].add(task_id)
        if not seen:
            at = _event_time(completions[-1]) if completions else None
            if at is None or not kill_near(at):
                v["the completed hook did not run, and no process was killed then"].add(task_id)
        if p.kind == "fanout":
            want_children = [f"{task_id}.{i}" for i in range(1, p.data["k"] + 1)]
            if task.children != want_children or children_of[task_id] != set(want_children):
                v["a parent's children are not those its phase submitted"].add(task_id)
            total = sum(10 * i for i in range(p.data["k"]))
            if task.outputs.get("merge") != {"total": total}:
                v["a parent's join output is not its children's"].add(task_id)
            for child_id in want_children:
                child = stored.get(child_id)
                if child is None or child.status.value != "completed":
                    v["a child task did not complete"].add(child_id)
                elif child.outputs != {"leaf": {"v": 10 * child.data["i"]}}:
                    v["a child's output is wrong"].add(child_id)
        if p.kind == "flaky" and not any(e.get("event") == "attempt_failed" for e in task.history):
            v["a flaky task completed without its failed first attempt"].add(task_id)

    # Artifacts on disk, for every stored task.
    for task_id, task in stored.items():
        folder = artifacts_dir / task_id
        for art in task.artifacts:
            path = folder / art.name
            if not path.is_file():
                v[f"an artifact the task lists is not on disk ({art.name})"].add(task_id)
                continue
            body = path.read_bytes()
            if len(body) != art.size or hashlib.sha256(body).hexdigest() != art.sha256:
                v[f"an artifact's file does not match its size and sha256 ({art.name})"].add(
                    task_id
                )
        if task.status.value in ("completed", "failed") and folder.is_dir():
            extra = set(files_under(folder)) - {a.name for a in task.artifacts}
            if extra:
                v[
                    f"a finished task's folder holds files it does not list: {sorted(extra)[:3]}"
                ].add(task_id)

    # A phase fails with WorkerLostError only after losing its worker max_takeovers
    # (3) times in a row, nothing else happening to the task in between (README,
    # "Delivery guarantees").
    lost_failures = 0
    for task_id, task in stored.items():
        for i, e in enumerate(task.history):
            if e.get("event") != "failed" or not str(e.get("error")).startswith("WorkerLost"):
                continue
            lost_failures += 1
            row = 0
            for before in reversed(task.history[:i]):
                if before.get("event") == "taken_over":
                    row += 1
                elif before.get("event") not in ("phase_started", "checkpoint"):
                    break
            if row < 3:
                v[f"WorkerLostError after {row} lost worker(s) in a row, not 3"].add(task_id)

    # Reruns after kills, from the history and the app's log of handler runs.
    taken_over: collections.Counter[str] = collections.Counter()
    for task in stored.values():
        for e in task.history:
            if e.get("event") == "taken_over":
                taken_over[e.get("phase") or "-"] += 1
    # A handler run again at the same attempt, but for a retry: after a kill (or a
    # takeover). Tasks purged meanwhile count as never retried.
    retried = collections.Counter(
        (t.id, e.get("phase"))
        for t in stored.values()
        for e in t.history
        if e.get("event") == "retried"
    )
    reruns: collections.Counter[str] = collections.Counter()
    for (task_id, phase, attempt), n in runs.items():
        again = retried[(task_id, phase)] if attempt == 1 else 0
        reruns[phase] += max(0, n - 1 - again)
    reruns = +reruns
    for what, ids in v.items():
        run.violation(what, ids)
    return {
        "stored": len(stored),
        "by_status": dict(sorted(by_status.items())),
        "taken_over": dict(sorted(taken_over.items())),
        "handler_reruns": dict(sorted(reruns.items())),
        "worker_lost_failures": lost_failures,
        "parents_failed_by_lost_children": sum(
            1
            for t in stored.values()
            if t.workflow_name == "fanout" and t.status.value == "failed" and lost_children(t)
        ),
        "hooks_lost": sum(
            1 for t in stored.values() if t.status.value == "completed" and t.id not in hooks
        ),
    }


def _event_time(event: dict[str, Any]) -> float | None:
    from datetime import datetime

    at = event.get("at") or event.get("time") or event.get("ts")
    if not isinstance(at, str):
        return None
    return datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()


def soak_processes(folder: Path) -> list[int]:
    """Processes other than this one whose environment names the run's folder: the
    workers, the commands the harness runs, and the commands their phases run."""
    marker = f"SOAK_DIR={folder}".encode() + b"\0"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if marker in (entry / "environ").read_bytes():
                found.append(int(entry.name))
    return found


async def check_leftovers(run: Run, deadline: float) -> None:
    """Once every worker has stopped: no command a phase ran is left running (a
    killed worker's commands die with it), and no work folder is left of a dead
    worker (the next worker that starts removes them), in the run's TMPDIR."""
    if not Path("/proc/self/environ").exists():
        return
    left = soak_processes(run.folder)
    until = time.monotonic() + deadline
    while left and time.monotonic() < until:
        await asyncio.sleep(0.1)
        left = soak_processes(run.folder)
    if left:
        described = []
        for pid in left:
            with contextlib.suppress(OSError):
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                described.append(f"{pid}: {cmd[:80].decode(errors='replace')}")
        run.violation(
            f"processes still running {deadline:g}s after every worker stopped", described
        )
    killed = {pid for pid, _ in run.killed_workers}
    stale = []
    for entry in (run.folder / "tmp").iterdir():
        owner = entry.name.split("-")[2] if entry.name.count("-") >= 3 else ""
        if entry.name.startswith("wfe-") and owner.isdigit() and int(owner) in killed:
            stale.append(entry.name)
    if stale:
        run.violation("work folders of killed workers are left in TMPDIR", stale)


async def check_purge(run: Run, engine: Any, artifacts_dir: Path) -> int:
    """A last purge of the scratch workflow, killed by nobody; then no folder may be
    left that no task owns, and the purged tasks' folders are gone."""
    code = await command(run, ["purge", "--older-than", "1s", "--workflow", "scratch"], 0, "purge")
    if code != 0:
        run.violation(f"the last wfe purge exited {code}")
    stored = {t.id for t in await engine.list_tasks(limit=1_000_000, summary=True)}
    orphans = (
        [
            p.name
            for p in artifacts_dir.iterdir()
            if not p.name.startswith(".wfcore-store") and p.name not in stored
        ]
        if artifacts_dir.is_dir()
        else []
    )
    if orphans:
        run.violation(
            "a folder in the artifacts folder that no stored task owns (after purge)", orphans
        )
    return sum(1 for t in run.planned if t.kind == "scratch" and t.id not in stored)


# --- main ------------------------------------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/soak.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--tasks", type=int, default=60, help="tasks submitted (M), in waves (60)")
    add("--workers", type=int, default=3, help="wfe worker processes (K) (3)")
    add("--concurrency", type=int, default=4, help="each worker's --concurrency (4)")
    add("--seconds", type=float, default=120, help="how long the soak lasts (120)")
    add(
        "--kill-every",
        type=float,
        default=3,
        help="mean seconds between SIGKILLs of a random worker, each 0.5x to 1.5x of "
        "it; 0: none (3)",
    )
    add(
        "--pause-every",
        type=float,
        default=0,
        help="mean seconds between SIGSTOPs of a random worker for 1.5x --lease-seconds, "
        "then SIGCONT (a worker paused past its lease); 0: none (0)",
    )
    add("--lease-seconds", type=float, default=30, help="the workers' lease_seconds (30)")
    add("--seed", type=int, default=None, help="random seed (default: a random one, printed)")
    add(
        "--no-ops",
        dest="ops",
        action="store_false",
        help="run no wfe cancel/retry/purge against the scratch workflow meanwhile",
    )
    add(
        "--command-kills",
        type=float,
        default=0.3,
        help="chance that a wfe resume/cancel/retry/purge the harness runs is SIGKILLed (0.3)",
    )
    add(
        "--phase-seconds",
        type=float,
        default=0.6,
        help="longest a phase works, sleeping (0.6)",
    )
    add(
        "--drain-seconds",
        type=float,
        default=120,
        help="after the soak, how long the workers get to finish every task (120)",
    )
    add("--keep", action="store_true", help="keep the run's folder (store, app, logs)")
    add("--dir", type=Path, default=None, help="make the run's folder in DIR (default: TMPDIR)")
    return parser.parse_args(argv)


def wfe_command() -> str:
    here = Path(sys.executable).parent / "wfe"
    return str(here) if here.exists() else (shutil.which("wfe") or "wfe")


async def amain(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, str(run.folder))
    app = importlib.import_module("soak_app")
    engine = app.build(store=run.env["WFE_STORE"])
    try:
        started = time.monotonic()
        await soak(run, args, engine)
        store = await engine.get_store()
        artifacts_dir = Path(store.artifacts_dir)
        summary = await check(run, engine, artifacts_dir, kill_window=5.0)
        await check_leftovers(run, deadline=5)
        summary["purged"] = await check_purge(run, engine, artifacts_dir)
        summary["seconds"] = round(time.monotonic() - started, 1)
        return summary
    finally:
        await engine.aclose()


def report(run: Run, args: argparse.Namespace, summary: dict[str, Any]) -> None:
    kills = collections.Counter(what for _, what in run.kills)
    print(f"seed {args.seed}; run folder {run.folder}{'' if args.keep else ' (removed)'}")
    print(f"took {summary['seconds']}s; kills: {dict(sorted(kills.items())) or 'none'}")
    print(f"commands run: {dict(sorted(run.ops.items()))}")
    print(f"tasks stored: {summary['stored']}, by status: {summary['by_status']}")
    print(
        f"scratch tasks purged: {summary['purged']}; cancelled by the harness: {len(run.cancelled)}"
    )
    print(f"phases taken over after a kill (history): {summary['taken_over'] or 'none'}")
    print(f"handler reruns (app log): {summary['handler_reruns'] or 'none'}")
    print(f"completed hooks lost to a kill: {summary['hooks_lost']}")
    print(
        f"tasks failed with WorkerLostError (then retried): {summary['worker_lost_failures']}; "
        "parents failed in their join by such a child (expected): "
        f"{summary['parents_failed_by_lost_children']}"
    )
    if not run.violations:
        print("OK: no invariant violated")
        return
    print(f"VIOLATIONS: {len(run.violations)}")
    for what, ids in run.violations:
        shown = ", ".join(ids[:8]) + (f", ... ({len(ids)} in all)" if len(ids) > 8 else "")
        print(f"  - {what}" + (f": {shown}" if ids else ""))


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    # Ctrl-C (even where the shell that started it ignores SIGINT) and SIGTERM stop the
    # run; the finally below then kills every process it started.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    if args.seed is None:
        args.seed = random.randrange(1_000_000)
    folder = Path(tempfile.mkdtemp(prefix="wfe-soak-", dir=args.dir))
    (folder / "soak_app.py").write_text(APP)
    (folder / "tmp").mkdir()
    env = {
        **os.environ,
        "WFE_STORE": f"sqlite:///{folder / 'wfe.db'}",
        "SOAK_DIR": str(folder),
        "SOAK_PHASE_SECONDS": str(args.phase_seconds),
        "SOAK_LEASE_SECONDS": str(args.lease_seconds),
        "PYTHONDONTWRITEBYTECODE": "1",
        # The commands' work folders, apart from other programs' (see check_leftovers).
        "TMPDIR": str(folder / "tmp"),
    }
    env.pop("WFE_LOAD_PLUGINS", None)
    os.environ.update({k: env[k] for k in env if k.startswith("SOAK_") or k == "WFE_STORE"})
    run = Run(
        folder=folder,
        env=env,
        wfe=wfe_command(),
        rng=random.Random(args.seed),
        kill_rng=random.Random(args.seed + 1),
    )
    try:
        summary = asyncio.run(amain(run, args))
    except KeyboardInterrupt:
        kept = f"; run folder {folder}" if args.keep else ""
        print(f"interrupted: every process the run started is ended{kept}", file=sys.stderr)
        return 130
    finally:
        kill_all(run)
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    report(run, args, summary)
    return 1 if run.violations else 0


if __name__ == "__main__":
    sys.exit(main())

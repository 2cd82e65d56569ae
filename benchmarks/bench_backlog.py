"""A million pending tasks: memory and time from a cold start to the first completion.

Builds (once, cached in --dir, with ``submit_tasks``) a SQLite store holding N
pending tasks of a 2-phase workflow, then starts a fresh worker process on it and
reports how long the process took from its start to the first completed task, and
its peak RSS after completing --complete tasks. The store is the queue: a worker holds only what it
runs, so memory does not grow with the backlog.

    python benchmarks/bench_backlog.py                # N=1,000,000
    python benchmarks/bench_backlog.py -n 100000 --dir /tmp/backlog
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from wfcore import ECSWorkflowEngine, Phase, Task
from wfcore.stores.sqlite import SCHEMA_VERSION

WORKFLOW = [Phase("first", assigned_to="functional"), Phase("second", assigned_to="functional")]


async def _handler(task: Task) -> None:
    task.output = task.data["i"]


def build_engine(url: str) -> ECSWorkflowEngine:
    engine = ECSWorkflowEngine(url, max_concurrency=100, load_plugins=False)
    engine.register_handler("first", _handler)
    engine.register_handler("second", _handler)
    engine.register_workflow("backlog", WORKFLOW)
    return engine


def build_store(path: Path, n: int) -> None:
    """Create the store and submit the pending tasks, in batches, through the engine."""

    async def create() -> None:
        engine = build_engine(f"sqlite://{path}")
        for first in range(0, n, 10_000):
            await engine.submit_tasks(
                [
                    {"data": {"i": i}, "workflow_name": "backlog"}
                    for i in range(first, min(n, first + 10_000))
                ]
            )
        await engine.aclose()

    asyncio.run(create())


def worker(path: str, complete: int, started: float) -> None:
    """The measured process: run until `complete` tasks are done, print figures."""
    engine = build_engine(f"sqlite://{path}")
    first: list[float] = []
    done = 0

    async def completed(task: Task) -> None:
        nonlocal done
        done += 1
        if not first:
            first.append(time.time())
        if done >= complete:
            engine.stop()

    engine.register_task_completed_hook(completed)

    async def main() -> None:
        await engine.run()
        await engine.aclose()

    asyncio.run(main())
    print(
        json.dumps(
            {
                "first_completion_s": first[0] - started,
                "completed": done,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1_000_000, help="pending tasks")
    parser.add_argument(
        "--complete",
        type=int,
        default=20_000,
        help="tasks the worker completes before it reports its peak RSS",
    )
    parser.add_argument(
        "--dir",
        default=os.path.join(os.getcwd(), ".bench"),
        help="where the store is built and cached",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--started", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.complete, args.started)
        return
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    template = folder / f"backlog-{args.n}-schema{SCHEMA_VERSION}.db"
    if not template.exists():
        t0 = time.perf_counter()
        build_store(template.with_suffix(".tmp"), args.n)
        template.with_suffix(".tmp").rename(template)
        print(f"built {args.n:,} pending tasks in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    run_db = folder / "backlog-run.db"
    for suffix in ("", "-wal", "-shm"):
        Path(str(run_db) + suffix).unlink(missing_ok=True)
    subprocess.run(["cp", str(template), str(run_db)], check=True)
    started = time.time()
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--worker",
            str(run_db),
            "--started",
            str(started),
            "--complete",
            str(args.complete),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    if args.json:
        print(json.dumps({"n": args.n, **result}))
        return
    print(
        f"{args.n:,} pending: first completion {result['first_completion_s']:.2f}s after the "
        f"worker process started; peak RSS {result['peak_rss_mb']:.0f} MB after completing "
        f"{result['completed']:,}"
    )


if __name__ == "__main__":
    main()

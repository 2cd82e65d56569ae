"""Throughput and latency of 2-phase workflows with trivial async handlers.

Runs one engine in one process: a producer submits N tasks (``submit_tasks`` in
batches, or concurrent ``submit_task`` calls with ``--one-by-one``) while the engine
works; the clock runs from the first submission to the last
completion. Prints workflows/s, p50/p99 submit-to-complete latency and peak RSS,
for each store given (default: sqlite normal, sqlite full, memory).

    python benchmarks/bench_throughput.py                 # all three, N=20000
    python benchmarks/bench_throughput.py -n 50000 --store memory
    python benchmarks/bench_throughput.py --store sqlite --workers 2   # 2 worker processes
    python benchmarks/bench_throughput.py --urgent-every 100   # 1% at priority 10
    python benchmarks/bench_throughput.py --store sqlite --workers 2 --limit 50

With ``--urgent-every K`` every K-th task is submitted at priority 10 (the rest at 0),
and their latencies are reported apart: how long an urgent task takes to get through
a worker busy with a burst of others. ``--limit N`` gives the second phase
``max_concurrency=N``: on SQLite its slots are kept in the store, shared by the
worker processes, which costs two more writes per phase run.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from wfcore import ECSWorkflowEngine, Phase, Task, TaskStatus


async def _handler(task: Task) -> None:
    task.output = task.data["i"]


def _bench_engine(url: str, concurrency: int, limit: int | None = None) -> ECSWorkflowEngine:
    engine = ECSWorkflowEngine(url, max_concurrency=concurrency, load_plugins=False)
    engine.register_handler("first", _handler)
    engine.register_handler("second", _handler)
    engine.register_workflow(
        "bench",
        [
            Phase("first", assigned_to="functional"),
            Phase("second", assigned_to="functional", max_concurrency=limit),
        ],
    )
    return engine


URGENT = 10  # the priority of the tasks --urgent-every picks


def _priority(i: int, urgent_every: int) -> int:
    return URGENT if urgent_every and i % urgent_every == urgent_every - 1 else 0


def _requests(numbers: range, urgent_every: int = 0) -> list[dict[str, Any]]:
    requests: list[dict[str, Any]] = [{"data": {"i": i}, "workflow_name": "bench"} for i in numbers]
    if urgent_every:
        for request in requests:
            request["priority"] = _priority(request["data"]["i"], urgent_every)
    return requests


def _percentiles(latencies: list[float]) -> tuple[float, float]:
    """p50 and p99, in milliseconds."""
    latencies = sorted(latencies)
    return (
        statistics.median(latencies) * 1000,
        latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000,
    )


def _summary(
    n: int, elapsed: float, cpu: float, latencies: list[float], urgent: list[float]
) -> dict[str, float]:
    p50, p99 = _percentiles(latencies)
    summary = {
        "workflows_per_s": n / elapsed,
        "p50_ms": p50,
        "p99_ms": p99,
        "seconds": elapsed,
        "cpu_us_per_workflow": cpu / n * 1e6,
    }
    if urgent:
        summary["urgent_p50_ms"], summary["urgent_p99_ms"] = _percentiles(urgent)
    return summary


async def run_once(
    url: str,
    n: int,
    concurrency: int,
    batch: int,
    one_by_one: bool = False,
    urgent_every: int = 0,
    limit: int | None = None,
) -> dict[str, float]:
    """One engine in this process, with the producer beside it on the same loop."""
    engine = _bench_engine(url, concurrency, limit)
    submitted = [0.0] * n
    latencies: list[float] = []
    urgent: list[float] = []
    done = asyncio.Event()

    async def completed(task: Task) -> None:
        latency = time.perf_counter() - submitted[task.data["i"]]
        latencies.append(latency)
        if task.priority:
            urgent.append(latency)
        if len(latencies) == n:
            done.set()

    engine.register_task_completed_hook(completed)
    await engine.get_store()
    worker = asyncio.create_task(engine.run())
    start = time.perf_counter()
    cpu_start = time.process_time()

    async def submit_one(i: int) -> None:
        submitted[i] = time.perf_counter()
        await engine.submit_task({"i": i}, "bench", priority=_priority(i, urgent_every))

    for first in range(0, n, batch):
        numbers = range(first, min(n, first + batch))
        if one_by_one:
            await asyncio.gather(*(submit_one(i) for i in numbers))
        else:
            now = time.perf_counter()
            for i in numbers:
                submitted[i] = now
            await engine.submit_tasks(_requests(numbers, urgent_every))
    await done.wait()
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    engine.stop()
    await worker
    await engine.aclose()
    return _summary(n, elapsed, cpu, latencies, urgent)


async def _serve_until(
    url: str, concurrency: int, limit: int | None, stop: Any, report: Any
) -> None:
    """One worker process of ``--workers``: run an engine until ``stop`` is set,
    then report the CPU time it spent serving."""
    engine = _bench_engine(url, concurrency, limit)
    await engine.get_store()
    cpu_start = time.process_time()
    worker = asyncio.create_task(engine.run())
    while not stop.is_set() and not worker.done():
        await asyncio.sleep(0.05)
    engine.stop()
    await worker
    report.put(time.process_time() - cpu_start)
    await engine.aclose()


def _worker_process(url: str, concurrency: int, limit: int | None, stop: Any, report: Any) -> None:
    asyncio.run(_serve_until(url, concurrency, limit, stop, report))


async def run_processes(
    url: str,
    n: int,
    concurrency: int,
    batch: int,
    workers: int,
    urgent_every: int = 0,
    limit: int | None = None,
) -> dict[str, float]:
    """N worker processes on one SQLite file; this process only submits and watches.

    Latencies come from the store: each task's ``updated_at`` (when it completed)
    minus its ``created_at``; the clock stops at the last completion.
    """
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    report = ctx.Queue()
    producer = _bench_engine(url, concurrency)
    store = await producer.get_store()
    procs = [
        ctx.Process(target=_worker_process, args=(url, concurrency, limit, stop, report))
        for _ in range(workers)
    ]
    for proc in procs:
        proc.start()
    # Let every worker open the store before the clock starts.
    await asyncio.sleep(1.0)
    wall_start = time.time()
    cpu_start = time.process_time()
    for first in range(0, n, batch):
        await producer.submit_tasks(_requests(range(first, min(n, first + batch)), urgent_every))
    while (await store.count_tasks()).get(TaskStatus.COMPLETED, 0) < n:
        await asyncio.sleep(0.1)
    cpu = time.process_time() - cpu_start
    stop.set()
    cpu += sum(report.get() for _ in procs)
    for proc in procs:
        proc.join()
    await producer.aclose()
    # Read straight from the file: loading N tasks would swell this process.
    conn = sqlite3.connect(url.removeprefix("sqlite://").partition("?")[0])
    try:
        rows = conn.execute("SELECT created_at, updated_at, priority FROM tasks").fetchall()
    finally:
        conn.close()
    elapsed = max(updated for _, updated, _ in rows) - wall_start
    latencies = [updated - created for created, updated, _ in rows]
    urgent = [updated - created for created, updated, priority in rows if priority]
    return _summary(n, elapsed, cpu, latencies, urgent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20000, help="workflows per run")
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument(
        "--batch", type=int, default=500, help="tasks per submit_tasks call (or in flight)"
    )
    parser.add_argument(
        "--one-by-one",
        action="store_true",
        help="submit with concurrent submit_task calls instead of submit_tasks batches",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes on the SQLite stores (default 1: one engine in this process)",
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per store; the median run is reported"
    )
    parser.add_argument(
        "--store",
        action="append",
        choices=["sqlite", "sqlite-full", "memory"],
        help="stores to measure (repeatable; default all)",
    )
    parser.add_argument(
        "--gc-threshold",
        type=int,
        help="gc.freeze() after start-up and gc.set_threshold(N): the tuning a "
        "throughput-bound worker process can apply (default: Python's own GC settings)",
    )
    parser.add_argument(
        "--urgent-every",
        type=int,
        default=0,
        metavar="K",
        help=f"submit every K-th task at priority {URGENT} and report their latency apart",
    )
    parser.add_argument(
        "--limit",
        type=int,
        metavar="N",
        help="give the second phase max_concurrency=N (shared by the worker processes on SQLite)",
    )
    parser.add_argument("--json", action="store_true", help="print results as JSON lines")
    args = parser.parse_args()
    if args.urgent_every < 0:
        parser.error(f"--urgent-every must be 0 (no urgent tasks) or more, not {args.urgent_every}")
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit must be 1 or more, not {args.limit}")
    if args.gc_threshold:
        gc.freeze()
        gc.set_threshold(args.gc_threshold)
    stores = args.store or ["sqlite", "sqlite-full", "memory"]
    for name in stores:
        workers = 1 if name == "memory" else args.workers
        runs = []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as tmp:
                url = {
                    "sqlite": f"sqlite://{Path(tmp) / 'bench.db'}",
                    "sqlite-full": f"sqlite://{Path(tmp) / 'bench.db'}?durability=full",
                    "memory": "memory://",
                }[name]
                if workers > 1:
                    run = run_processes(
                        url,
                        args.n,
                        args.concurrency,
                        args.batch,
                        workers,
                        args.urgent_every,
                        args.limit,
                    )
                else:
                    run = run_once(
                        url,
                        args.n,
                        args.concurrency,
                        args.batch,
                        args.one_by_one,
                        args.urgent_every,
                        args.limit,
                    )
                runs.append(asyncio.run(run))
        runs.sort(key=lambda r: r["workflows_per_s"])
        result = dict(runs[len(runs) // 2])
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        result.update(
            store=name,
            n=args.n,
            workers=workers,
            gc_threshold=args.gc_threshold,
            limit=args.limit,
            peak_rss_mb=rss_mb,
            slowest_per_s=runs[0]["workflows_per_s"],
            fastest_per_s=runs[-1]["workflows_per_s"],
        )
        if args.json:
            print(json.dumps(result))
        else:
            spread = (
                f" (of {len(runs)} runs: {runs[0]['workflows_per_s']:,.0f}"
                f"-{runs[-1]['workflows_per_s']:,.0f})"
                if len(runs) > 1
                else ""
            )
            tuned = f" gc {args.gc_threshold}" if args.gc_threshold else ""
            tuned += f" limit {args.limit}" if args.limit else ""
            urgent = (
                f"  urgent (1 in {args.urgent_every}): p50 {result['urgent_p50_ms']:.1f} ms  "
                f"p99 {result['urgent_p99_ms']:.1f} ms"
                if "urgent_p50_ms" in result
                else ""
            )
            print(
                f"{name:<12} {workers} proc{tuned}  {result['workflows_per_s']:>7,.0f} workflows/s"
                f"{spread}  p50 {result['p50_ms']:.1f} ms  p99 {result['p99_ms']:.1f} ms  "
                f"peak RSS {rss_mb:.0f} MB  CPU {result['cpu_us_per_workflow']:.0f} us/workflow"
                f"{urgent}"
            )
        sys.stdout.flush()


if __name__ == "__main__":
    main()

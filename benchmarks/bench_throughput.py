"""Throughput and latency of 2-phase workflows with trivial async handlers.

Runs one engine in one process: a producer submits N tasks (``submit_tasks`` in
batches, or concurrent ``submit_task`` calls with ``--one-by-one``) while the engine
works; the clock runs from the first submission to the last
completion. Prints workflows/s, p50/p99 submit-to-complete latency and peak RSS,
for each store given (default: sqlite normal, sqlite full, memory).

    python benchmarks/bench_throughput.py                 # all three, N=20000
    python benchmarks/bench_throughput.py -n 50000 --store memory
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from wfcore import ECSWorkflowEngine, Phase, Task


async def _handler(task: Task) -> None:
    task.output = task.data["i"]


async def run_once(
    url: str, n: int, concurrency: int, batch: int, one_by_one: bool = False
) -> dict[str, float]:
    engine = ECSWorkflowEngine(url, max_concurrency=concurrency, load_plugins=False)
    engine.register_handler("first", _handler)
    engine.register_handler("second", _handler)
    engine.register_workflow(
        "bench",
        [Phase("first", assigned_to="functional"), Phase("second", assigned_to="functional")],
    )
    submitted = [0.0] * n
    latencies: list[float] = []
    done = asyncio.Event()

    async def completed(task: Task) -> None:
        latencies.append(time.perf_counter() - submitted[task.data["i"]])
        if len(latencies) == n:
            done.set()

    engine.register_task_completed_hook(completed)
    await engine.get_store()
    worker = asyncio.create_task(engine.run())
    start = time.perf_counter()
    cpu_start = time.process_time()

    async def submit_one(i: int) -> None:
        submitted[i] = time.perf_counter()
        await engine.submit_task({"i": i}, "bench")

    for first in range(0, n, batch):
        numbers = range(first, min(n, first + batch))
        if one_by_one:
            await asyncio.gather(*(submit_one(i) for i in numbers))
        else:
            now = time.perf_counter()
            for i in numbers:
                submitted[i] = now
            await engine.submit_tasks(
                [{"data": {"i": i}, "workflow_name": "bench"} for i in numbers]
            )
    await done.wait()
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    engine.stop()
    await worker
    await engine.aclose()
    latencies.sort()
    return {
        "workflows_per_s": n / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "seconds": elapsed,
        "cpu_us_per_workflow": cpu / n * 1e6,
    }


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
        "--store",
        action="append",
        choices=["sqlite", "sqlite-full", "memory"],
        help="stores to measure (repeatable; default all)",
    )
    parser.add_argument("--json", action="store_true", help="print results as JSON lines")
    args = parser.parse_args()
    stores = args.store or ["sqlite", "sqlite-full", "memory"]
    for name in stores:
        with tempfile.TemporaryDirectory() as tmp:
            url = {
                "sqlite": f"sqlite://{Path(tmp) / 'bench.db'}",
                "sqlite-full": f"sqlite://{Path(tmp) / 'bench.db'}?durability=full",
                "memory": "memory://",
            }[name]
            result = asyncio.run(
                run_once(url, args.n, args.concurrency, args.batch, args.one_by_one)
            )
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        result.update(store=name, n=args.n, peak_rss_mb=rss_mb)
        if args.json:
            print(json.dumps(result))
        else:
            print(
                f"{name:<12} {result['workflows_per_s']:>9,.0f} workflows/s  "
                f"p50 {result['p50_ms']:.1f} ms  p99 {result['p99_ms']:.1f} ms  "
                f"peak RSS {rss_mb:.0f} MB  CPU {result['cpu_us_per_workflow']:.0f} us/workflow  "
                f"({args.n} in {result['seconds']:.2f}s)"
            )
        sys.stdout.flush()


if __name__ == "__main__":
    main()

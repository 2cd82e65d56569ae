"""How a task's cost per phase holds up as its history grows: one task loops
through a phase N times (20,000 by default, 40,000 history events), and the time
of each 1,000 rounds is printed, with the last 1,000 against the first.

    python benchmarks/bench_long_history.py [--rounds N] [--store sqlite|memory]

A write of a task rewrites only the newest part of its history (the SQLite store
moves earlier entries to ``history_parts``), so the ratio stays near 1 where a
store that rewrote the whole history each time would grow it with N.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from wfcore import ECSWorkflowEngine, Phase, Task

_BLOCK = 1000


async def _measure(store: str, rounds: int) -> dict[str, object]:
    folder = tempfile.mkdtemp(prefix="wfe-bench-history-")
    url = f"sqlite:///{folder}/wfe.db" if store == "sqlite" else "memory://"
    engine = ECSWorkflowEngine(store=url, load_plugins=False)
    marks: list[float] = []

    async def step(task: Task) -> None:
        n = task.context.get("n", 0) + 1
        task.context["n"] = n
        if n % _BLOCK == 0:
            marks.append(time.perf_counter())
        task.next_classification = "step" if n < rounds else "done"

    async def done(task: Task) -> None:
        task.output = task.context["n"]

    engine.register_handler("step", step)
    engine.register_handler("done", done)
    engine.register_workflow(
        "loop", [Phase("step", next_classifications=["step", "done"]), Phase("done")]
    )
    task = await engine.submit_task({}, "loop")
    start = time.perf_counter()
    await engine.run_until_idle()
    total = time.perf_counter() - start
    task = await engine.get_task(task.id)
    assert task is not None and task.output == rounds, task
    events = len(task.history)
    await engine.aclose()
    size = sum(p.stat().st_size for p in Path(folder).glob("wfe.db*"))
    shutil.rmtree(folder, ignore_errors=True)
    blocks = [b - a for a, b in zip([start, *marks[:-1]], marks, strict=True)]
    return {
        "store": store,
        "rounds": rounds,
        "events": events,
        "seconds": round(total, 2),
        "first_1000_s": round(blocks[0], 3),
        "last_1000_s": round(blocks[-1], 3),
        "median_1000_s": round(statistics.median(blocks), 3),
        "last_vs_first": round(blocks[-1] / blocks[0], 2),
        "store_bytes": size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20_000, help="phases the task loops through")
    parser.add_argument(
        "--store", choices=["sqlite", "memory"], action="append", help="default: both"
    )
    parser.add_argument("--json", action="store_true", help="print results as JSON lines")
    args = parser.parse_args()
    if args.rounds < 2 * _BLOCK:
        parser.error(f"--rounds must be at least {2 * _BLOCK}")
    for store in args.store or ["sqlite", "memory"]:
        result = asyncio.run(_measure(store, args.rounds))
        if args.json:
            print(json.dumps(result))
        else:
            print(
                f"{store:7} {result['rounds']:,} rounds ({result['events']:,} events) in "
                f"{result['seconds']} s; per 1,000 rounds: first {result['first_1000_s']} s, "
                f"median {result['median_1000_s']} s, last {result['last_1000_s']} s "
                f"(last/first {result['last_vs_first']})"
            )


if __name__ == "__main__":
    main()

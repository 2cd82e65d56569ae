"""Listings of tasks that may be megabytes each: engine.list_tasks(summary=True) and
the `wfe tasks` table list each task without its payload."""

from __future__ import annotations

import json
import subprocess
import sys

from wfcore import Phase, Task, TaskStatus
from wfcore.stores.base import SUMMARY_PREVIEW


async def _big(task: Task) -> None:
    task.output = {"rows": ["r" * 100] * 200}  # 20 kB of JSON
    task.context["seen"] = "c" * 50_000


def test_a_summary_listing_leaves_the_payload_out(make_engine, wfe_run):
    engine = make_engine()
    engine.register_handler("p", _big)
    engine.register_workflow("w", [Phase("p")])

    async def scenario() -> tuple[list[Task], list[Task]]:
        await engine.submit_task({"blob": "x" * 100_000}, "w")
        await engine.run_until_idle()
        return await engine.list_tasks(), await engine.list_tasks(summary=True)

    [whole], [summary] = wfe_run(scenario())
    assert summary.id == whole.id and summary.status is TaskStatus.COMPLETED
    assert whole.data == {"blob": "x" * 100_000} and summary.data is None
    assert summary.context == {} and summary.outputs == {}
    # The output's JSON text is longer than a summary keeps: its start, as a string.
    assert summary.output == json.dumps(whole.output, separators=(",", ":"))[:SUMMARY_PREVIEW]
    assert summary.history == whole.history[-20:]


def test_the_tasks_table_lists_from_summaries_and_json_whole_tasks(
    wfe_engine_factory, wfe_run, wfe_store_url
):
    engine = wfe_engine_factory(store=wfe_store_url)
    engine.register_handler("p", _big)
    engine.register_workflow("w", [Phase("p")])

    async def scenario() -> str:
        task = await engine.submit_task({"blob": "x" * 100_000}, "w")
        await engine.run_until_idle()
        await engine.aclose()
        return task.id

    task_id = wfe_run(scenario())
    wfe = [sys.executable, "-m", "wfcore.cli", "--store", wfe_store_url, "tasks"]
    table = subprocess.run(wfe, capture_output=True, text=True, check=True).stdout
    assert table.splitlines()[1].split()[:4] == [task_id, "w", "p", "completed"]
    listed = json.loads(subprocess.run([*wfe, "--json"], capture_output=True, check=True).stdout)
    assert listed[0]["data"] == {"blob": "x" * 100_000}

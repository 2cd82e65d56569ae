"""Tasks with long histories on the SQLite store: a loop through thousands of phases.

A task's history grows with every phase. The store keeps a write's cost flat
however long it gets (its earlier entries move to ``history_parts``), and these
tests check what a user sees of that: every entry, in order, across a killed
worker, a resume, an upgrade from an older store and a damaged part.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import textwrap
from concurrent.futures import ThreadPoolExecutor

from core_util import background_wfe, db_path, wait_until, with_pythonpath

from wfcore import ECSWorkflowEngine, Phase, Task, TaskStatus
from wfcore.stores._sqlite_rows import PART_SIZE
from wfcore.stores.base import UNREADABLE_ERROR

ROUNDS = 1500


async def _step(task: Task) -> None:
    # Loops data["rounds"] times, asks a person, then loops as many more rounds
    # as they answer ({"more": n}) and is done.
    n = task.context.get("n", 0) + 1
    task.context["n"] = n
    answer = task.outputs.get("review")
    if n < task.data["rounds"] + (answer["more"] if answer else 0):
        task.next_classification = "step"
    else:
        task.next_classification = "done" if answer else "review"


def _loop_engine(url: str) -> ECSWorkflowEngine:
    engine = ECSWorkflowEngine(store=url, load_plugins=False)
    engine.register_handler("step", _step)
    engine.register_workflow(
        "loop",
        [
            Phase("step", next_classifications=["step", "review", "done"]),
            Phase("review", assigned_to="human", next_classifications=["step"]),
            Phase("done", next_classifications=[]),
        ],
    )
    engine.register_handler("done", _done)
    return engine


async def _done(task: Task) -> None:
    task.output = task.context["n"]


def _stored_history(url: str, task_id: str) -> tuple[str, list[tuple[int, int, int]]]:
    conn = sqlite3.connect(db_path(url))
    try:
        [(column,)] = conn.execute("SELECT history FROM tasks WHERE id = ?", (task_id,))
        parts = conn.execute(
            "SELECT part, count, length(entries) FROM history_parts WHERE task_id = ? "
            "ORDER BY part",
            (task_id,),
        ).fetchall()
    finally:
        conn.close()
    return column, parts


def _rounds_finished(task: Task) -> int:
    return [e.get("phase") for e in task.history if e["event"] == "phase_finished"].count("step")


def test_a_task_looping_through_thousands_of_phases_keeps_its_whole_history(wfe_store_url, wfe_run):
    engine = _loop_engine(wfe_store_url)

    async def scenario() -> tuple[Task, Task]:
        task = await engine.submit_task({"rounds": ROUNDS}, "loop")
        await engine.run_until_idle()
        waiting = await engine.get_task(task.id)
        # Resumed from a task read back (not one the worker holds): the write
        # finds where the stored history leaves off by itself.
        await engine.resume(task.id, output={"more": ROUNDS})
        await engine.run_until_idle()
        return waiting, await engine.get_task(task.id)

    waiting, task = wfe_run(scenario())
    assert waiting.status is TaskStatus.WAITING_HUMAN
    assert task.status is TaskStatus.COMPLETED
    assert task.output == 2 * ROUNDS
    assert _rounds_finished(task) == 2 * ROUNDS
    assert task.history[: len(waiting.history)] == waiting.history
    events = [e["event"] for e in task.history]
    assert events[0] == "submitted" and events[-1] == "completed"
    assert events.count("resumed") == 1
    times = [e["at"] for e in task.history]
    assert times == sorted(times)
    # The column a write rewrites stays small; the rest is in parts, each written once.
    column, parts = _stored_history(wfe_store_url, task.id)
    assert len(column) <= 2 * PART_SIZE
    assert len(parts) >= 10
    assert [p[0] for p in parts] == list(range(1, len(parts) + 1))
    assert sum(p[1] for p in parts) + column.count('"event"') == len(task.history)


_APP = textwrap.dedent(
    """
    import asyncio
    import os
    from pathlib import Path

    from wfcore import ECSWorkflowEngine, Phase, Task

    DIR = Path(os.environ["LOOP_DIR"])
    engine = ECSWorkflowEngine(load_plugins=False, poll_interval=0.05)


    async def step(task: Task) -> None:
        n = task.context.get("n", 0) + 1
        if n == task.data["stop_at"]:
            (DIR / "blocked").touch()
            while not (DIR / "gate").exists():
                await asyncio.sleep(0.02)
        task.context["n"] = n
        task.next_classification = "step" if n < task.data["rounds"] else "done"


    async def done(task: Task) -> None:
        task.output = task.context["n"]


    engine.register_handler("step", step)
    engine.register_handler("done", done)
    engine.register_workflow(
        "loop",
        [Phase("step", next_classifications=["step", "done"]), Phase("done")],
    )
    """
)


def test_a_long_loop_killed_mid_run_finishes_with_every_entry_once(
    wfe_store_url, wfe_run, tmp_path
):
    (tmp_path / "loop_app.py").write_text(_APP)
    env = with_pythonpath(
        {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", "")},
        tmp_path,
        WFE_STORE=wfe_store_url,
        LOOP_DIR=str(tmp_path),
    )
    engine = ECSWorkflowEngine(store=wfe_store_url, load_plugins=False)
    engine.register_workflow(
        "loop", [Phase("step", next_classifications=["step", "done"]), Phase("done")]
    )
    task = wfe_run(engine.submit_task({"rounds": ROUNDS, "stop_at": ROUNDS - 200}, "loop"))
    args = ("worker", "loop_app:engine", "--until-idle")
    with background_wfe(*args, cwd=tmp_path, env=env, log=tmp_path / "first.log") as first:
        wait_until(lambda: (tmp_path / "blocked").exists(), 60, "the loop to reach stop_at")
        first.send_signal(signal.SIGKILL)
        assert first.wait(10) == -signal.SIGKILL
    _, parts = _stored_history(wfe_store_url, task.id)
    assert parts, "the history had no parts when the worker was killed"
    (tmp_path / "gate").touch()
    with background_wfe(*args, cwd=tmp_path, env=env, log=tmp_path / "second.log") as second:
        assert second.wait(120) == 0, (tmp_path / "second.log").read_text()

    done = wfe_run(engine.get_task(task.id))
    assert done.status is TaskStatus.COMPLETED, done.error
    assert done.context["n"] == ROUNDS
    # The round the kill interrupted never finished; it ran again, once.
    assert _rounds_finished(done) == ROUNDS
    assert [e["event"] for e in done.history].count("taken_over") == 1
    times = [e["at"] for e in done.history]
    assert times == sorted(times)


def test_a_store_of_schema_4_is_upgraded_and_its_long_tasks_go_on(wfe_store_url, wfe_run):
    engine = _loop_engine(wfe_store_url)

    async def to_review() -> Task:
        task = await engine.submit_task({"rounds": 300}, "loop")
        await engine.run_until_idle()
        task = await engine.get_task(task.id)
        await engine.aclose()
        return task

    waiting = wfe_run(to_review())
    # As schema 4 stored it: the whole history in the column, no parts table.
    conn = sqlite3.connect(db_path(wfe_store_url))
    conn.execute("DROP TABLE history_parts")
    conn.execute(
        "UPDATE tasks SET history = ? WHERE id = ?", (json.dumps(waiting.history), waiting.id)
    )
    conn.execute("UPDATE wfe_meta SET value = '4' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()

    engine = _loop_engine(wfe_store_url)

    async def finish() -> tuple[Task, Task]:
        before = await engine.get_task(waiting.id)
        await engine.resume(waiting.id, output={"more": 300})
        await engine.run_until_idle()
        return before, await engine.get_task(waiting.id)

    before, done = wfe_run(finish())
    assert before.history == waiting.history
    assert done.status is TaskStatus.COMPLETED
    assert done.history[: len(waiting.history)] == waiting.history
    assert _rounds_finished(done) == 600
    _, parts = _stored_history(wfe_store_url, waiting.id)
    assert parts


def test_a_damaged_part_fails_only_its_task_and_keeps_the_text(wfe_store_url, wfe_run):
    engine = _loop_engine(wfe_store_url)

    async def scenario() -> tuple[Task, Task]:
        long = await engine.submit_task({"rounds": 300}, "loop")
        short = await engine.submit_task({"rounds": 1}, "loop")
        await engine.run_until_idle()
        return long, short

    long, short = wfe_run(scenario())
    conn = sqlite3.connect(db_path(wfe_store_url))
    conn.execute(
        "UPDATE history_parts SET entries = '[{\"at\": broken' WHERE task_id = ? AND part = 1",
        (long.id,),
    )
    conn.commit()
    conn.close()

    async def read() -> tuple[Task, Task, list[Task]]:
        return (
            await engine.get_task(long.id),
            await engine.get_task(short.id),
            await engine.list_tasks(),
        )

    damaged, fine, listed = wfe_run(read())
    assert damaged.status is TaskStatus.FAILED
    assert damaged.error.startswith(UNREADABLE_ERROR)
    # The entries of its parts, joined, with the damaged one among them.
    assert damaged.context["unreadable_history"].startswith('{"at": broke,{"at":')
    assert fine.status is TaskStatus.WAITING_HUMAN
    assert sorted(t.id for t in listed) == sorted([long.id, short.id])


def test_wfe_show_prints_the_end_of_a_long_history_and_all_of_it_when_asked(wfe, wfe_run):
    engine = _loop_engine(wfe.env["WFE_STORE"])

    async def loop() -> Task:
        task = await engine.submit_task({"rounds": 200}, "loop")
        await engine.run_until_idle()
        await engine.aclose()
        return await engine.get_task(task.id)

    task = wfe_run(loop())
    total = len(task.history)
    assert total > 400

    # Every wfe show at once, each in a process of its own: they only read.
    asked = [(), ("--history", "all"), ("--history", "3"), ("--history", "0")]
    bad = ["-1", "lots"]
    with ThreadPoolExecutor(len(asked) + len(bad)) as pool:
        shown = pool.map(lambda args: wfe("show", task.id, *args).stdout.splitlines(), asked)
        refused = pool.map(lambda n: wfe("show", task.id, "--history", n, check=False), bad)
        outs = zip(asked, shown, strict=True)
        by_args = {args: out[out.index("history") + 1 :] for args, out in outs}
        refusals = dict(zip(bad, refused, strict=True))

    lines = by_args[()]
    assert lines[0] == f"  ... {total - 100:,} earlier events (--history all shows them)"
    assert len(lines) == 101
    assert "suspended" in lines[-1]
    assert [line.split()[1] for line in lines[1:]] == [e["event"] for e in task.history[-100:]]
    assert len(by_args["--history", "all"]) == total
    assert (
        by_args["--history", "3"][0]
        == f"  ... {total - 3:,} earlier events (--history all shows them)"
    )
    assert by_args["--history", "0"] == [
        f"  ... {total:,} earlier events (--history all shows them)"
    ]
    for n, result in refusals.items():
        assert result.returncode == 2
        assert f"{n!r} is neither a number of events (0 or more) nor 'all'" in result.stderr

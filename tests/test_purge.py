"""Deleting finished tasks (``engine.purge``, ``wfe purge``) to keep a store small."""

from __future__ import annotations

import asyncio
import math
from datetime import timedelta

import pytest
from core_util import background, db_path, wait_for

import wfcore.engine
import wfcore.stores.sqlite
from wfcore import ECSWorkflowEngine, Phase, Task, TaskStatus
from wfcore.stores import MemoryStore


@pytest.fixture
def engine(make_engine) -> ECSWorkflowEngine:
    engine = make_engine()

    async def work(task: Task) -> None:
        if task.data.get("fail"):
            raise RuntimeError("asked to fail")
        if task.data.get("artifact"):
            await engine.add_artifact_text(task, "report.txt", "kept until purged")
        task.output = "done"

    engine.register_handler("work", work)
    engine.register_workflow("main", [Phase("work", assigned_to="functional")])
    engine.register_workflow("other", [Phase("work", assigned_to="functional")])
    engine.register_workflow("ask", [Phase("ask", assigned_to="human")])
    return engine


async def _one_of_each(engine: ECSWorkflowEngine) -> dict[str, str]:
    """A task in every status purge must tell apart; returns name -> task id."""
    ids = {
        "completed": (await engine.submit_task({"artifact": True}, "main")).id,
        "failed": (await engine.submit_task({"fail": True}, "main")).id,
        "other_workflow": (await engine.submit_task({}, "other")).id,
        "waiting": (await engine.submit_task({}, "ask")).id,
        "cancelled": (await engine.submit_task({}, "main")).id,
    }
    await engine.cancel(ids["cancelled"])
    await engine.run_until_idle()
    ids["pending"] = (await engine.submit_task({}, "main")).id
    return ids


async def _left(engine: ECSWorkflowEngine, ids: dict[str, str]) -> set[str]:
    return {name for name, task_id in ids.items() if await engine.get_task(task_id)}


def test_purge_deletes_only_finished_tasks_older_than_asked(engine, wfe_run):
    async def scenario():
        ids = await _one_of_each(engine)
        report = await engine.artifact_path(ids["completed"], "report.txt")
        # Everything finished a moment ago: an hour's age matches nothing.
        kept = await engine.purge(timedelta(hours=1))
        counted = await engine.purge(0, dry_run=True)
        after_dry_run = await _left(engine, ids)
        deleted = await engine.purge(0)
        return ids, report, kept, counted, after_dry_run, deleted, await _left(engine, ids)

    ids, report, kept, counted, after_dry_run, deleted, left = wfe_run(scenario())
    assert kept == 0
    assert counted == 4 and after_dry_run == set(ids)
    assert deleted == 4
    assert left == {"waiting", "pending"}
    assert not report.exists() and not report.parent.exists()  # the artifact folder too


def test_purge_narrowed_to_statuses_and_a_workflow(engine, wfe_run):
    async def scenario():
        ids = await _one_of_each(engine)
        failed = await engine.purge(0, statuses="FAILED")  # one status, or a list
        left_after_failed = await _left(engine, ids)
        other = await engine.purge(0, workflow_name="other")
        return failed, left_after_failed, other, await _left(engine, ids)

    failed, left_after_failed, other, left = wfe_run(scenario())
    assert failed == 1 and "failed" not in left_after_failed
    assert other == 1
    assert left == {"completed", "cancelled", "waiting", "pending"}


def test_purge_keeps_results_an_outbox_consumer_has_not_published(engine, wfe_run):
    async def scenario():
        store = await engine.get_store()
        await store.outbox_register("results")
        task = await engine.submit_task({}, "main")
        await engine.run_until_idle()
        before_ack = await engine.purge(0)
        await store.outbox_ack("results", [task.id])
        after_ack = await engine.purge(0)
        return before_ack, after_ack, await engine.get_task(task.id)

    before_ack, after_ack, task = wfe_run(scenario())
    assert (before_ack, after_ack, task) == (0, 1, None)


def test_purge_keeps_the_finished_children_of_a_parent_still_waiting_for_others(engine, wfe_run):
    """A parent reads its children's results when the last one finishes: purging the
    first ones meanwhile (a nightly purge, a child waiting for a person on holiday)
    would leave it nothing but "deleted before its parent read it"."""

    async def split(task: Task) -> None:
        await engine.submit_task({}, "main", parent=task)
        await engine.submit_task({}, "ask", parent=task)
        engine.wait_for_children(task)

    engine.register_handler("split", split)
    engine.register_workflow("fan", [Phase("split", assigned_to="functional")])

    async def scenario():
        parent = await engine.submit_task({}, "fan")
        await engine.run_until_idle()
        quick, asking = (await engine.get_task(parent.id)).children
        while_waiting = await engine.purge(0, dry_run=True), await engine.purge(0)
        await engine.resume(asking, output="yes")
        await engine.run_until_idle()
        done = await engine.get_task(parent.id)
        return quick, done, while_waiting, await engine.purge(0)

    quick, done, while_waiting, after = wfe_run(scenario())
    assert while_waiting == (0, 0)
    assert done.status is TaskStatus.COMPLETED
    assert done.outputs["split"][0] == {
        "id": quick,
        "status": "completed",
        "output": "done",
        "error": None,
    }
    assert after == 3  # the parent finished: it and both children may go


def test_a_dropped_outbox_consumer_no_longer_keeps_tasks(engine, wfe_run):
    async def scenario():
        store = await engine.get_store()
        await store.outbox_register("live")
        await store.outbox_register("retired")
        first = await engine.submit_task({}, "main")
        await engine.run_until_idle()
        await store.outbox_ack("live", [first.id])
        before = await store.outbox_consumers()
        kept = await engine.purge(0)
        dropped = await store.outbox_unregister("retired")
        again = await store.outbox_unregister("retired")
        second = await engine.submit_task({}, "main")
        await engine.run_until_idle()
        after = await store.outbox_consumers()
        purged = await engine.purge(0)
        return before, kept, dropped, again, after, purged, await engine.get_task(second.id)

    before, kept, dropped, again, after, purged, second = wfe_run(scenario())
    assert before == {"live": 0, "retired": 1}
    assert kept == 0  # "retired" never published it
    assert (dropped, again) == (1, None)
    # The retired consumer gets no rows for tasks finishing later; the live one does.
    assert after == {"live": 1}
    assert purged == 1  # the first task; the second waits for "live"
    assert second is not None


def test_purge_deletes_in_batches_until_done(engine, wfe_run, monkeypatch):
    monkeypatch.setattr(wfcore.engine, "_PURGE_BATCH", 3)

    async def scenario():
        await engine.submit_tasks([{"data": {"n": n}, "workflow_name": "main"} for n in range(7)])
        await engine.run_until_idle()
        deleted = await engine.purge(0)
        return deleted, await engine.list_tasks()

    deleted, left = wfe_run(scenario())
    assert deleted == 7 and left == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"older_than": -1}, "0 or more seconds"),
        ({"older_than": math.nan}, "0 or more seconds"),
        ({"older_than": 0, "statuses": ["pending"]}, "only finished tasks.*not pending"),
        ({"older_than": 0, "statuses": []}, "only finished tasks"),
    ],
)
def test_purge_refuses_what_it_must_not_delete(engine, wfe_run, kwargs, message):
    async def scenario():
        await engine.submit_task({}, "main")
        with pytest.raises(ValueError, match=message):
            await engine.purge(**kwargs)
        return await engine.list_tasks()

    assert [t.status for t in wfe_run(scenario())] == [TaskStatus.PENDING]


def test_a_phase_still_running_on_a_purged_task_leaves_no_files(make_engine, wfe_run):
    """Cancelled and purged elsewhere while it ran: its late artifact goes with its write."""
    worker = make_engine()
    other = make_engine()
    gate = asyncio.Event()
    started: list[str] = []

    async def slow(task: Task) -> None:
        started.append(task.id)
        await gate.wait()
        await worker.add_artifact_text(task, "late.txt", "written after the purge")

    worker.register_handler("slow", slow)
    worker.register_workflow("w", [Phase("slow")])

    async def scenario():
        other.use_store(await worker.get_store())
        task = await worker.submit_task({}, "w")
        folder = (await worker.get_store()).artifacts_dir / task.id
        async with background(worker):
            await wait_for(lambda: started, 10, "the phase to start")
            await other.cancel(task.id)
            purged = await other.purge(0)
            gate.set()
            await wait_for(lambda: not worker.active_count, 10, "the phase to end")
        return purged, folder.exists(), await other.get_task(task.id)

    purged, folder_left, task = wfe_run(scenario())
    assert (purged, folder_left, task) == (1, False, None)


def _sqlite_engine(factory) -> ECSWorkflowEngine:
    engine = factory()
    engine.register_handler("work", lambda task: None)
    engine.register_workflow("main", [Phase("work", assigned_to="functional")])
    engine.register_workflow("ask", [Phase("ask", assigned_to="human")])
    return engine


def _on_disk(store_url: str) -> int:
    """Bytes of the SQLite file and its WAL."""
    path = db_path(store_url)
    wal = path.with_name(path.name + "-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def test_the_wal_a_burst_grew_is_cut_back_while_the_store_stays_open(
    wfe_engine_factory, wfe_store_url, wfe_run, monkeypatch
):
    """journal_size_limit: the -wal file that a big write grew (a purge, a burst of
    submissions) shrinks back once writing goes on, though the store's connections
    (a worker's, a dashboard's) stay open; it used to keep its largest size."""
    limit = 256 * 1024
    monkeypatch.setattr(wfcore.stores.sqlite, "_WAL_SIZE_LIMIT", limit)
    engine = _sqlite_engine(wfe_engine_factory)
    wal = db_path(wfe_store_url).with_name("wfe.db-wal")

    async def scenario() -> tuple[int, int]:
        # One write of 3 MB.
        await engine.submit_tasks([{"data": "x" * 20_000, "workflow_name": "main"}] * 150)
        grown = wal.stat().st_size
        await engine.run_until_idle()
        purged = await engine.purge(0)

        async def cut_back() -> bool:
            await engine.submit_task({}, "ask")
            return wal.stat().st_size <= limit

        await wait_for(cut_back, 10, "the WAL to shrink back")
        return grown, purged

    grown, purged = wfe_run(scenario())
    assert grown > 3_000_000 and purged == 150


def test_compact_gives_back_the_space_a_purge_freed(wfe_engine_factory, wfe_store_url, wfe_run):
    """A purge leaves the file as large as before (SQLite keeps the free pages);
    compact() (VACUUM) gives them back and returns the sizes before and after. The
    tasks left read back as they were, in their order, and another engine on the
    store (a worker's) writes meanwhile and after."""
    engine = _sqlite_engine(wfe_engine_factory)
    other = _sqlite_engine(wfe_engine_factory)

    async def scenario():
        await engine.submit_tasks([{"data": "x" * 20_000, "workflow_name": "main"}] * 300)
        waiting = [(await engine.submit_task({"n": n}, "ask")).id for n in range(5)]
        await engine.run_until_idle()
        assert await engine.purge(0) == 300
        purged_size = _on_disk(wfe_store_url)
        listed = [t.id for t in await engine.list_tasks()]
        await other.get_store()  # open beside it, as a worker would be
        sizes, during = await asyncio.gather(
            (await engine.get_store()).compact(),
            other.submit_tasks([{"data": {"n": n}, "workflow_name": "ask"} for n in range(20)]),
        )
        after = await other.submit_task({"n": "after"}, "ask")
        await other.resume(waiting[0], output="yes")
        await engine.run_until_idle()
        return (
            purged_size,
            sizes,
            _on_disk(wfe_store_url),
            listed,
            [t.id for t in await engine.list_tasks(limit=100)],
            [t.id for t in during],
            after.id,
            waiting,
            [await engine.get_task(task_id) for task_id in waiting],
        )

    purged_size, sizes, on_disk, listed, relisted, during, after, waiting, tasks = wfe_run(
        scenario()
    )
    before, compacted = sizes
    assert purged_size > 6_000_000  # the 6 MB the purged tasks took
    assert before >= purged_size and compacted < 500_000
    assert on_disk < 1_000_000  # and so it stays, with the writes since
    assert listed == waiting[::-1]
    assert relisted == [after, *during[::-1], *listed]  # newest first, the order kept
    assert [t.data for t in tasks] == [{"n": n} for n in range(5)]
    assert [t.status for t in tasks] == [TaskStatus.COMPLETED] + [TaskStatus.WAITING_HUMAN] * 4


def test_a_store_with_nothing_to_compact_says_none(wfe_run):
    store = MemoryStore()
    assert wfe_run(store.compact()) is None

"""Persistence: where the store lives, durability before visibility, restarts."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from core_util import db_path, stored_status, wait_for

from wfcore import ECSWorkflowEngine, Phase, StoreError, Task, TaskStateError, TaskStatus, hookimpl
from wfcore.stores.base import StoreBusyError
from wfcore.stores.sqlite import SQLiteStore
from wfcore.wire import task_to_dict


def test_store_defaults_to_a_file_under_the_current_folder(tmp_path, monkeypatch, wfe_run):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WFE_STORE", raising=False)
    engine = ECSWorkflowEngine(load_plugins=False)
    expected = tmp_path / ".wfe" / "wfe.db"
    assert engine.store_url == f"sqlite://{expected}"
    assert not (tmp_path / ".wfe").exists()  # opened lazily, not by the constructor
    engine.register_handler("a", lambda task: None)
    engine.register_workflow("w", [Phase("a")])

    async def scenario():
        task = await engine.submit_task(None, "w")
        await engine.aclose()
        return task

    task = wfe_run(scenario())
    assert expected.is_file()
    assert stored_status(f"sqlite://{expected}", task.id) == "pending"


def test_store_comes_from_wfe_store(tmp_path, monkeypatch, wfe_run):
    target = tmp_path / "elsewhere" / "jobs.db"
    monkeypatch.setenv("WFE_STORE", f"sqlite://{target}")
    monkeypatch.chdir(tmp_path)
    engine = ECSWorkflowEngine(load_plugins=False)
    engine.register_workflow("w", [Phase("a")])

    async def scenario():
        task = await engine.submit_task(None, "w")
        await engine.aclose()
        return task

    task = wfe_run(scenario())
    assert stored_status(f"sqlite://{target}", task.id) == "pending"
    assert not (tmp_path / ".wfe").exists()


def test_memory_store_from_wfe_store(monkeypatch, wfe_run):
    monkeypatch.setenv("WFE_STORE", "memory://")
    engine = ECSWorkflowEngine(load_plugins=False)
    engine.register_handler("a", lambda task: setattr(task, "output", 1))
    engine.register_workflow("w", [Phase("a")])

    async def scenario():
        async with engine:
            task = await engine.submit_task(None, "w")
            await engine.run_until_idle()
            return await engine.get_task(task.id)

    assert wfe_run(scenario()).output == 1


class DurabilityProbe:
    """Hook implementations that read the task's status from the database file
    through their own connection: whatever a hook sees must already be committed."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.seen: list[tuple[str, str | None]] = []

    def look(self, hook: str, task: Task) -> None:
        self.seen.append((hook, stored_status(self.url, task.id)))

    @hookimpl
    def wfe_task_submitted(self, task: Task) -> None:
        self.look("submitted", task)

    @hookimpl
    def wfe_task_suspended(self, task: Task) -> None:
        self.look("suspended", task)

    @hookimpl
    def wfe_task_resumed(self, task: Task) -> None:
        self.look("resumed", task)

    @hookimpl
    def wfe_task_completed(self, task: Task) -> None:
        self.look("completed", task)

    @hookimpl
    def wfe_task_failed(self, task: Task) -> None:
        self.look("failed", task)

    @hookimpl
    def wfe_task_cancelled(self, task: Task) -> None:
        self.look("cancelled", task)


def test_every_state_change_is_durable_before_hooks_see_it(
    wfe_engine_factory, wfe_store_url, wfe_run
):
    probe = DurabilityProbe(wfe_store_url)
    engine = wfe_engine_factory(plugins=[probe])
    completions: list[str | None] = []

    async def on_completed(task: Task) -> None:
        completions.append(stored_status(wfe_store_url, task.id))

    engine.register_task_completed_hook(on_completed)

    async def boom(task: Task) -> None:
        raise RuntimeError("no")

    engine.register_handler("bad", boom)
    engine.register_workflow("w", [Phase("ask", assigned_to="human"), Phase("tail")])
    engine.register_handler("tail", lambda task: None)
    engine.register_workflow("fails", [Phase("bad")])

    async def scenario():
        task = await engine.submit_task(None, "w")
        await engine.run_until_idle()
        await engine.resume(task.id, "yes")
        await engine.run_until_idle()
        await engine.submit_task(None, "fails")
        await engine.run_until_idle()
        dropped = await engine.submit_task(None, "w")
        await engine.cancel(dropped.id)

    wfe_run(scenario())
    assert probe.seen == [
        ("submitted", "pending"),
        ("suspended", "waiting_human"),
        ("resumed", "pending"),
        ("completed", "completed"),
        ("submitted", "pending"),
        ("failed", "failed"),
        ("submitted", "pending"),
        ("cancelled", "cancelled"),
    ]
    assert completions == ["completed"]


def test_a_restart_keeps_every_part_of_a_task(wfe_engine_factory, wfe_run):
    first = wfe_engine_factory()

    async def work(task: Task) -> None:
        task.context["seen"] = [1, 2, {"deep": True}]
        await first.add_artifact_text(task, "report.md", "# hello")
        task.output = {"rows": 3}

    first.register_handler("work", work)
    first.register_workflow("w", [Phase("work"), Phase("ask", assigned_to="human")])

    async def before():
        task = await first.submit_task({"payload": [1, "two", None]}, "w", assigned_to="ai")
        await first.run_until_idle()
        return await first.get_task(task.id)

    saved = wfe_run(before())
    wfe_run(first.aclose())
    second = wfe_engine_factory()

    async def after():
        await second.run_until_idle()  # nothing to do: the task waits
        task = await second.get_task(saved.id)
        return task, await second.read_artifact(task, "report.md")

    loaded, text = wfe_run(after())
    assert task_to_dict(loaded) == task_to_dict(saved)
    assert loaded.status is TaskStatus.WAITING_HUMAN
    assert loaded.outputs == {"work": {"rows": 3}}
    assert loaded.context == {"seen": [1, 2, {"deep": True}]}
    assert [a.name for a in loaded.artifacts] == ["report.md"]
    assert text == b"# hello"


@pytest.mark.parametrize(
    "fields",
    [
        {},  # every field at its default
        {"output": 0, "reply": False, "error": "", "outputs": {"a": None}, "context": {"n": 0}},
        {"output": [], "reply": {}, "attempts": 3, "resume_in_phase": True},
        {
            "waiting_reason": "why?",
            "next_classification": "b",
            "traceback": "Traceback ...",
            "deadline": datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
            "run_after": datetime(2030, 1, 2, 3, 4, 6, tzinfo=timezone.utc),
        },
    ],
)
def test_a_stored_task_reads_back_field_for_field(wfe_engine_factory, store_url, wfe_run, fields):
    """Stores may leave default values out of what they write; falsy ones are not defaults."""
    engine = wfe_engine_factory(store=store_url)
    task = Task(data={"x": 1}, workflow_name="w", classification="a", **fields)

    async def round_trip():
        store = await engine.get_store()
        await store.insert_task(task)
        return await store.get_task(task.id)

    loaded = wfe_run(round_trip())
    stored, original = task_to_dict(loaded, internal=True), task_to_dict(task, internal=True)
    del stored["updated_at"], original["updated_at"]  # the store's time of writing
    assert stored == original
    for name, value in fields.items():
        assert getattr(loaded, name) == value and type(getattr(loaded, name)) is type(value)


def test_a_stored_workflow_that_is_no_longer_valid_is_skipped(
    wfe_engine_factory, wfe_store_url, wfe_run, caplog
):
    first = wfe_engine_factory()
    first.register_workflow("good", [Phase("a")])
    wfe_run(first.get_store())
    wfe_run(first.aclose())
    # As an older wfcore, which did not reserve the built-in phase's name, stored it.
    bad = {"name": "loops", "phases": [{"target_classification": "define_workflow"}]}
    with sqlite3.connect(db_path(wfe_store_url)) as conn:
        conn.execute(
            "INSERT INTO workflows (name, doc, updated_at) VALUES ('loops', ?, 0)",
            (json.dumps(bad),),
        )

    second = wfe_engine_factory()
    store = wfe_run(second.get_store())
    assert sorted(second.workflows) == ["good"]
    assert "stored workflow ignored, it is no longer valid" in caplog.text
    assert "reserved" in caplog.text
    caplog.clear()
    assert wfe_run(store.load_workflow("loops")) is None  # read by name, the same
    assert "stored workflow ignored, it is no longer valid" in caplog.text
    assert wfe_run(store.load_workflow("good")) == second.workflows["good"]


def test_completed_tasks_never_run_again_and_waiting_ones_keep_waiting(wfe_engine_factory, wfe_run):
    calls: list[str] = []

    def build() -> ECSWorkflowEngine:
        engine = wfe_engine_factory()
        engine.register_handler("a", lambda task: calls.append(f"a:{task.data}"))
        engine.register_workflow("w", [Phase("a"), Phase("b", assigned_to="human")])
        engine.register_workflow("short", [Phase("a")])
        return engine

    first = build()

    async def before():
        done = await first.submit_task("done", "short")
        waiting = await first.submit_task("waiting", "w")
        await first.run_until_idle()
        return done.id, waiting.id

    done_id, waiting_id = wfe_run(before())
    wfe_run(first.aclose())
    assert calls == ["a:done", "a:waiting"]

    second = build()

    async def after():
        await second.run_until_idle()
        return await second.get_task(done_id), await second.get_task(waiting_id)

    done, waiting = wfe_run(after())
    assert calls == ["a:done", "a:waiting"]
    assert done.status is TaskStatus.COMPLETED
    assert waiting.status is TaskStatus.WAITING_HUMAN


def test_in_progress_phase_reruns_after_a_lost_worker(wfe_engine_factory, wfe_store_url, wfe_run):
    """A task claimed by a worker that vanished (its lease ran out) runs that phase again."""
    ghost = wfe_engine_factory(lease_seconds=0.3)
    ghost.worker_id = "some-other-host/1/ghost"
    ghost.register_workflow("w", [Phase("a"), Phase("b")])

    async def claim_and_vanish():
        task = await ghost.submit_task(None, "w")
        store = await ghost.get_store()
        claimed = await store.claim(ghost.worker_id, 10, 0.3)
        assert [t.id for t in claimed] == [task.id]
        return task.id

    task_id = wfe_run(claim_and_vanish())
    assert stored_status(wfe_store_url, task_id) == "in_progress"
    wfe_run(ghost.aclose())

    heir = wfe_engine_factory()
    calls: list[str] = []
    heir.register_handler("a", lambda task: calls.append("a"))
    heir.register_handler("b", lambda task: calls.append("b"))

    async def take_over():
        await heir.run_until_idle()
        return await heir.get_task(task_id)

    done = wfe_run(take_over())
    assert done.status is TaskStatus.COMPLETED
    assert calls == ["a", "b"]


def test_a_claim_after_a_lost_lease_records_the_takeover(wfe_engine_factory, store_url, wfe_run):
    """The phase a lost worker was running left no trace: the heir's claim leaves one,
    in the claim's own write, so a second loss before any other write keeps it."""
    engine = wfe_engine_factory(store=store_url)
    engine.register_workflow("w", [Phase("a")])

    async def claim_lose_reclaim():
        task = await engine.submit_task(None, "w", classification="a")
        store = await engine.get_store()
        [first] = await store.claim("host/1/ghost", 10, 0.05)
        assert not [e for e in first.history if e["event"] == "taken_over"]
        # Neither ghost renews; each lease runs out and the next claim gets the task.
        await wait_for(lambda: store.claim("host/2/ghost", 10, 0.05), 10, "an expiry")
        [again] = await wait_for(lambda: store.claim("host/3/heir", 10, 30), 10, "an expiry")
        assert again.id == task.id
        return again, await store.get_task(task.id)

    again, stored = wfe_run(claim_lose_reclaim())
    takeovers = [
        {key: value for key, value in event.items() if key != "at"}
        for event in again.history
        if event["event"] == "taken_over"
    ]
    assert takeovers == [
        {
            "event": "taken_over",
            "phase": "a",
            "previous_worker": "host/1/ghost",
            "worker": "host/2/ghost",
        },
        {
            "event": "taken_over",
            "phase": "a",
            "previous_worker": "host/2/ghost",
            "worker": "host/3/heir",
        },
    ]
    assert stored.history == again.history  # stored by the claims themselves


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_claims_never_exceed_max_concurrency(wfe_engine_factory, wfe_store_url, wfe_run, kind):
    """Pending tasks stay in the store; the engine only holds what it is running."""
    engine = wfe_engine_factory(
        store=wfe_store_url if kind == "sqlite" else "memory://", max_concurrency=4
    )
    in_progress: list[int] = []

    async def count(task: Task) -> None:
        store = await engine.get_store()
        counts = await store.count_tasks()
        in_progress.append(counts.get(TaskStatus.IN_PROGRESS, 0))
        await asyncio.sleep(0.001)

    engine.register_handler("a", count)
    engine.register_workflow("w", [Phase("a")])

    async def scenario():
        for i in range(120):
            await engine.submit_task(i, "w")
        await engine.run_until_idle()
        store = await engine.get_store()
        return await store.count_tasks()

    counts = wfe_run(scenario())
    assert counts == {TaskStatus.COMPLETED: 120}
    assert len(in_progress) == 120
    assert max(in_progress) <= 4


def test_a_second_engine_sees_tasks_submitted_by_the_first(wfe_engine_factory, wfe_run):
    producer = wfe_engine_factory()
    consumer = wfe_engine_factory()
    producer.register_workflow("w", [Phase("a")])
    consumer.register_handler("a", lambda task: setattr(task, "output", task.data * 2))

    async def scenario():
        await consumer.get_store()
        task = await producer.submit_task(21, "w")
        await consumer.run_until_idle()
        return await producer.get_task(task.id)

    assert wfe_run(scenario()).output == 42


def test_sqlite_store_uses_wal_and_artifacts_sit_beside_it(
    wfe_engine_factory, wfe_store_url, wfe_run
):
    engine = wfe_engine_factory()

    async def attach(task: Task) -> None:
        await engine.add_artifact_bytes(task, "blob.bin", b"\x00\x01")

    engine.register_handler("a", attach)
    engine.register_workflow("w", [Phase("a")])

    async def scenario():
        task = await engine.submit_task(None, "w")
        await engine.run_until_idle()
        return await engine.get_task(task.id)

    task = wfe_run(scenario())
    db = db_path(wfe_store_url)
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()
    art_path = Path(task.artifacts[0].path)
    assert art_path.read_bytes() == b"\x00\x01"
    assert art_path.is_relative_to(db.parent)


def test_handler_writes_to_context_persist_when_the_phase_suspends(make_engine, wfe_run):
    engine = make_engine()
    notes: list[Any] = []

    async def ask(task: Task) -> None:
        task.context["question"] = "size?"
        engine.suspend(task, reason="size?")

    async def use(task: Task) -> None:
        notes.append((task.context["question"], task.outputs["ask"]))

    engine.register_handler("ask", ask)
    engine.register_handler("use", use)
    engine.register_workflow("w", [Phase("ask"), Phase("use")])

    async def scenario():
        task = await engine.submit_task(None, "w")
        await engine.run_until_idle()
        waiting = await engine.get_task(task.id)
        await engine.resume(task.id, "XL")
        await wait_for(lambda: True)
        await engine.run_until_idle()
        return waiting

    waiting = wfe_run(scenario())
    assert waiting.context == {"question": "size?"}
    assert notes == [("size?", "XL")]


def test_a_long_phase_keeps_its_lease_against_another_engine(wfe_engine_factory, wfe_run):
    """The lease is renewed while the phase runs, so a second engine on the same
    store never takes the task over, however long the phase takes."""
    runs: list[str] = []
    release = asyncio.Event()

    def build(name: str) -> ECSWorkflowEngine:
        engine = wfe_engine_factory(lease_seconds=0.3)

        async def long(task: Task) -> None:
            runs.append(name)
            await release.wait()
            task.output = name

        engine.register_handler("long", long)
        engine.register_workflow("w", [Phase("long")])
        return engine

    first, second = build("first"), build("second")

    async def scenario():
        task = await first.submit_task(None, "w")
        one = asyncio.create_task(first.run_until_idle())
        await wait_for(lambda: runs, 10, "the first engine to start the phase")
        two = asyncio.create_task(second.run_until_idle())
        # Several lease lengths pass while the second engine polls for work.
        for _ in range(5):
            await asyncio.sleep(0.3)
            assert runs == ["first"]
        release.set()
        await asyncio.gather(one, two)
        return await first.get_task(task.id)

    done = wfe_run(scenario())
    assert runs == ["first"]
    assert done.output == "first"
    assert done.status is TaskStatus.COMPLETED


def test_changes_inside_a_running_phase_are_invisible_until_it_ends(make_engine, wfe_run):
    engine = make_engine()
    inside = asyncio.Event()
    release = asyncio.Event()

    async def work(task: Task) -> None:
        task.context["draft"] = "half done"
        task.output = "partial"
        inside.set()
        await release.wait()
        task.context["draft"] = "done"
        task.output = "final"

    engine.register_handler("work", work)
    engine.register_workflow("w", [Phase("work")])

    async def scenario():
        task = await engine.submit_task(None, "w")
        runner = asyncio.create_task(engine.run_until_idle())
        await asyncio.wait_for(inside.wait(), 10)
        during = await engine.get_task(task.id)
        during.context["meddling"] = True  # a reader's copy is its own
        release.set()
        await runner
        return during, await engine.get_task(task.id)

    during, done = wfe_run(scenario())
    assert during.status is TaskStatus.IN_PROGRESS
    assert during.context == {"meddling": True}
    assert during.output is None
    assert done.context == {"draft": "done"}
    assert done.output == "final"


def test_in_place_changes_to_data_and_outputs_stay_private_until_the_phase_ends(
    make_engine, wfe_run, store_url
):
    engine = make_engine()
    inside = asyncio.Event()
    release = asyncio.Event()

    async def first(task: Task) -> None:
        task.output = {"rows": [1, 2]}

    async def second(task: Task) -> None:
        task.data["seen"] = True  # in place, on nested values
        task.outputs["first"]["rows"].append(3)
        inside.set()
        await release.wait()

    engine.register_handler("first", first)
    engine.register_handler("second", second)
    engine.register_workflow("w", [Phase("first"), Phase("second")])

    async def scenario():
        task = await engine.submit_task({"n": 1}, "w")
        runner = asyncio.create_task(engine.run_until_idle())
        await asyncio.wait_for(inside.wait(), 10)
        during = await engine.get_task(task.id)
        release.set()
        await runner
        return during, await engine.get_task(task.id)

    during, done = wfe_run(scenario())
    assert during.data == {"n": 1}
    assert during.outputs == {"first": {"rows": [1, 2]}}
    assert done.data == {"n": 1, "seen": True}
    assert done.outputs["first"] == {"rows": [1, 2, 3]}


def test_pending_tasks_stay_in_the_store_not_in_memory(wfe_engine_factory, wfe_run):
    """With hundreds of tasks pending in SQLite, a running engine holds only a
    handful of Task objects: the ones it is running."""
    import gc

    engine = wfe_engine_factory(max_concurrency=5)
    live: list[int] = []

    async def measure(task: Task) -> None:
        if task.data % 50 == 0:
            gc.collect()
            live.append(sum(1 for o in gc.get_objects() if type(o) is Task))
        await asyncio.sleep(0)

    engine.register_handler("a", measure)
    engine.register_workflow("w", [Phase("a")])

    async def scenario():
        await asyncio.gather(*(engine.submit_task(i, "w") for i in range(600)))
        gc.collect()
        await engine.run_until_idle()
        store = await engine.get_store()
        return await store.count_tasks()

    assert wfe_run(scenario()) == {TaskStatus.COMPLETED: 600}
    assert len(live) == 12
    assert max(live) <= 30


def _drop_priority(conn: sqlite3.Connection) -> None:
    """Lay a store's tasks out as before schema 6: no priority, claims by ready time."""
    conn.execute("DROP INDEX tasks_ready_priority")
    conn.execute("ALTER TABLE tasks DROP COLUMN priority")
    conn.execute("CREATE INDEX tasks_ready ON tasks (ready_at) WHERE ready_at IS NOT NULL")


def _as_schema_5(conn: sqlite3.Connection) -> None:
    """Make a store what the release before (schema 5) left."""
    _drop_priority(conn)
    conn.execute("UPDATE wfe_meta SET value = '5' WHERE key = 'schema_version'")


def test_a_schema_1_database_is_upgraded_in_place(wfe_engine_factory, wfe_store_url, wfe_run):
    """Schema 1 kept the history inside each task's document; schema 2 gives it a
    column. An old file opens, its tasks keep their history and run on."""
    engine = wfe_engine_factory()
    engine.register_handler("a", lambda task: setattr(task, "output", "done"))
    engine.register_workflow("w", [Phase("a")])
    task = wfe_run(engine.submit_task({"n": 1}, "w", assigned_to="functional"))
    wfe_run(engine.aclose())

    # Rewrite the file as schema 1 wrote it.
    conn = sqlite3.connect(db_path(wfe_store_url))
    for task_id, doc, history in conn.execute("SELECT id, doc, history FROM tasks").fetchall():
        fields = json.loads(doc)
        fields["history"] = json.loads(history)
        conn.execute("UPDATE tasks SET doc = ? WHERE id = ?", (json.dumps(fields), task_id))
    conn.execute("ALTER TABLE tasks DROP COLUMN history")
    conn.execute("ALTER TABLE outbox DROP COLUMN version")
    _drop_priority(conn)
    conn.execute("UPDATE wfe_meta SET value = '1' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()

    async def scenario():
        before = await engine.get_task(task.id)
        await engine.run_until_idle()
        return before, await engine.get_task(task.id)

    before, after = wfe_run(scenario())
    assert [e["event"] for e in before.history] == ["submitted"]
    assert after.status is TaskStatus.COMPLETED and after.output == "done"
    assert [e["event"] for e in after.history] == [
        "submitted",
        "phase_started",
        "phase_finished",
        "completed",
    ]
    conn = sqlite3.connect(db_path(wfe_store_url))
    try:
        version = conn.execute("SELECT value FROM wfe_meta WHERE key = 'schema_version'")
        assert version.fetchone()[0] == "6"
    finally:
        conn.close()


def test_the_results_outbox_lists_finished_tasks_until_acknowledged(make_engine, wfe_run):
    engine = make_engine()
    engine.register_handler("a", lambda task: setattr(task, "output", task.data))
    engine.register_workflow("w", [Phase("a")])

    async def scenario():
        store = await engine.get_store()
        await store.outbox_register("results")
        done = await engine.submit_task("x", "w", assigned_to="functional")
        await engine.submit_task("y", "w", assigned_to="human")  # waits: not finished
        await engine.run_until_idle()
        pending = await store.outbox_pending("results", 10)
        await store.outbox_ack("results", [t.id for t in pending])
        return done, pending, await store.outbox_pending("results", 10)

    done, pending, after_ack = wfe_run(scenario())
    assert [(t.id, t.status, t.output) for t in pending] == [(done.id, TaskStatus.COMPLETED, "x")]
    assert pending[0].history[-1]["event"] == "completed"
    assert after_ack == []


def test_acknowledging_an_earlier_finish_keeps_the_row_of_a_later_one(make_engine, wfe_run):
    """A task retried and finished again while its first result was being sent:
    the late acknowledgement of the first must not mark the second delivered."""
    engine = make_engine()
    engine.register_handler("a", lambda task: setattr(task, "output", task.attempts))
    engine.register_workflow("w", [Phase("a", assigned_to="functional")])

    async def scenario():
        store = await engine.get_store()
        await store.outbox_register("results")
        task = await engine.submit_task(None, "w")
        await engine.cancel(task.id)
        [first] = await store.outbox_pending("results")
        await engine.retry(task.id)
        # Retried and not finished again yet: nothing of it is due for publishing.
        while_pending = await store.outbox_pending("results")
        await engine.run_until_idle()
        await store.outbox_ack("results", [first.id], versions=[first.version])
        [second] = await store.outbox_pending("results")
        await store.outbox_ack("results", [second.id], versions=[second.version])
        return first, while_pending, second, await store.outbox_pending("results")

    first, while_pending, second, left = wfe_run(scenario())
    assert while_pending == []
    assert first.status is TaskStatus.CANCELLED
    assert second.status is TaskStatus.COMPLETED and second.version > first.version
    assert left == []


def test_a_consumer_registered_by_another_process_gets_every_later_result(
    wfe_engine_factory, wfe_run
):
    """The outbox consumers are read when a task finishes, not when the store opens."""

    def build():
        engine = wfe_engine_factory()
        engine.register_handler("a", lambda task: setattr(task, "output", task.data))
        engine.register_workflow("w", [Phase("a", assigned_to="functional")])
        return engine

    early, late = build(), build()

    async def scenario():
        await early.get_store()  # opened before the consumer exists
        await (await late.get_store()).outbox_register("results")
        ids = [(await e.submit_task(e is early, "w")).id for e in (early, late)]
        await early.run_until_idle()
        pending = await (await late.get_store()).outbox_pending("results", 10)
        return ids, pending

    ids, pending = wfe_run(scenario())
    assert sorted(t.id for t in pending) == sorted(ids)


def test_aclose_while_running_stops_the_run_first(make_engine, store_url, wfe_run):
    """Closing the store under a running worker would fail its writes: it stops first."""
    engine = make_engine(shutdown_timeout=5)
    started = asyncio.Event()

    async def slow(task: Task) -> None:
        started.set()
        await asyncio.sleep(0.2)
        task.output = "finished"

    engine.register_handler("slow", slow)
    engine.register_workflow("w", [Phase("slow")])

    async def scenario():
        task = await engine.submit_task({}, "w")
        runner = asyncio.create_task(engine.run())
        await asyncio.wait_for(started.wait(), 10)
        await engine.aclose()
        assert runner.done() and runner.exception() is None and not engine.running
        return await engine.get_task(task.id)  # the store reopens

    task = wfe_run(scenario())
    if store_url == "memory://":
        assert task is None  # the closed memory store is gone; a new one opened
    else:
        assert task.status is TaskStatus.COMPLETED and task.output == "finished"


def test_damaged_rows_fail_their_tasks_and_spare_the_others(
    wfe_engine_factory, wfe_store_url, wfe_run
):
    """Rows edited by hand or by a broken tool: workers and listings go on; each
    such task is failed, saying why, and its stored text is kept."""

    def build() -> ECSWorkflowEngine:
        engine = wfe_engine_factory(store=wfe_store_url)
        engine.register_handler("a", lambda task: setattr(task, "output", "ran"))
        engine.register_workflow("w", [Phase("a", assigned_to="functional")])
        return engine

    engine = build()
    names = ["good", "not-json", "too-deep", "bad-status", "bad-time", "bad-history"]
    for name in names:
        wfe_run(engine.submit_task({"n": name}, "w", task_id=name))
    wfe_run(engine.aclose())
    deep = "[" * 100_000 + "]" * 100_000
    conn = sqlite3.connect(db_path(wfe_store_url))
    conn.execute("UPDATE tasks SET doc = '{not json' WHERE id = 'not-json'")
    conn.execute("UPDATE tasks SET doc = ? WHERE id = 'too-deep'", (deep,))
    conn.execute("UPDATE tasks SET status = 'bogus' WHERE id = 'bad-status'")
    conn.execute("UPDATE tasks SET created_at = 1e20 WHERE id = 'bad-time'")
    conn.execute("UPDATE tasks SET history = '[{broken' WHERE id = 'bad-history'")
    conn.commit()
    conn.close()

    engine = build()

    async def scenario():
        listed = await engine.list_tasks()
        await engine.run_until_idle()
        counts = await (await engine.get_store()).count_tasks()
        return listed, {name: await engine.get_task(name) for name in names}, counts

    listed, tasks, counts = wfe_run(scenario())
    assert len(listed) == len(names)
    assert {t.id for t in listed if t.status is TaskStatus.FAILED} == set(names) - {"good"}
    assert tasks["good"].status is TaskStatus.COMPLETED and tasks["good"].output == "ran"
    assert counts == {TaskStatus.COMPLETED: 1, TaskStatus.FAILED: 5}
    for name in names[1:]:
        assert tasks[name].status is TaskStatus.FAILED, name
        assert tasks[name].error.startswith("StoreError: the stored task"), name
    assert tasks["not-json"].context == {"unreadable_doc": "{not json"}
    # A readable document with a damaged history: both texts are shown.
    assert tasks["bad-history"].context["unreadable_history"] == "[{broken"
    assert '"bad-history"' in tasks["bad-history"].context["unreadable_doc"]
    assert tasks["bad-history"].error.endswith(
        "its stored text is in context['unreadable_doc'] and context['unreadable_history']"
    )
    assert "RecursionError" in tasks["too-deep"].error
    # Its document was readable: it keeps its data, and says why it failed.
    assert tasks["bad-status"].data == {"n": "bad-status"}
    conn = sqlite3.connect(db_path(wfe_store_url))
    try:
        rows = dict(conn.execute("SELECT id, doc FROM tasks WHERE ready_at IS NULL").fetchall())
    finally:
        conn.close()
    assert rows["not-json"] == "{not json" and rows["too-deep"] == deep  # kept as they were

    # A stand-in is never written back: that would replace what is left of the row.
    for name in ("not-json", "bad-history"):
        with pytest.raises(TaskStateError, match="its stored row cannot be read"):
            wfe_run(engine.retry(name))
    conn = sqlite3.connect(db_path(wfe_store_url))
    try:
        kept = dict(conn.execute("SELECT id, history FROM tasks").fetchall())
    finally:
        conn.close()
    assert kept["bad-history"] == "[{broken"


def test_opening_a_store_of_an_older_schema_says_it_was_upgraded(wfe) -> None:
    """Any command upgrades a store older than the schema just before, a read-only
    one too (wfe status): it says so, once, naming the file, as workers of an older
    wfcore refuse it from then on."""
    wfe("submit", "review", "--app", "review_app:engine")
    path = Path(wfe.env["WFE_STORE"].removeprefix("sqlite://"))
    conn = sqlite3.connect(path)
    conn.execute("UPDATE wfe_meta SET value = '3' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    first = wfe("status").stderr
    assert (
        f"WARNING wfcore: upgraded the store {path} from schema 3 to 6: a wfcore that "
        "knows schema 5 at most (an older release) refuses to open it from now on"
    ) in first
    assert wfe("status").stderr == ""


def test_commands_that_only_read_leave_a_store_of_the_release_before_as_it_is(wfe) -> None:
    """The workers of the release before may still use the store: wfe status, tasks,
    show, workflows and wait read it as it is (schema 5, no priority column); a
    command that writes tasks upgrades it, and says so."""
    task_id = wfe("submit", "review", "--app", "review_app:engine", "--data", '{"n": 2}').stdout
    task_id = task_id.strip()
    path = Path(wfe.env["WFE_STORE"].removeprefix("sqlite://"))
    conn = sqlite3.connect(path)
    _as_schema_5(conn)
    conn.commit()
    conn.close()

    def schema() -> tuple[str, bool]:
        conn = sqlite3.connect(path)
        try:
            [(version,)] = conn.execute(
                "SELECT value FROM wfe_meta WHERE key = 'schema_version'"
            ).fetchall()
            columns = {r[1] for r in conn.execute("PRAGMA table_info(tasks)")}
        finally:
            conn.close()
        return version, "priority" in columns

    reads = [
        ("status",),
        ("tasks",),
        ("show", task_id),
        ("workflows",),
        ("wait", task_id, "--timeout", "0.1s"),
        ("outbox",),
        ("metrics",),
    ]
    # All at once, each in a process of its own: one that upgraded the store says so.
    with ThreadPoolExecutor(len(reads)) as pool:
        done = list(pool.map(lambda args: wfe(*args, check=False), reads))
    for args, result in zip(reads, done, strict=True):
        assert "upgraded" not in result.stderr, args
    assert schema() == ("5", False)
    shown = json.loads(wfe("show", task_id, "--json").stdout)
    assert shown["data"] == {"n": 2}
    assert [e["event"] for e in shown["history"]] == ["submitted"]

    cancelled = wfe("cancel", task_id)
    assert f"upgraded the store {path} from schema 5 to 6" in cancelled.stderr
    assert schema() == ("6", True)
    assert stored_status(wfe.env["WFE_STORE"], task_id) == "cancelled"


def test_a_store_read_as_it_is_refuses_to_write_tasks_and_says_why(wfe_store_url, wfe_run):
    engine = ECSWorkflowEngine(store=wfe_store_url, load_plugins=False)
    engine.register_workflow("w", [Phase("p")])
    task = wfe_run(engine.submit_task({"n": 1}, "w"))
    wfe_run(engine.aclose())
    path = db_path(wfe_store_url)
    conn = sqlite3.connect(path)
    _as_schema_5(conn)
    conn.commit()
    conn.close()

    async def scenario() -> tuple[Task | None, list[str]]:
        store = SQLiteStore(path)
        store.upgrade = False
        await store.open()
        try:
            got = await store.get_task(task.id)
            refused = []
            for write in (
                lambda: store.update_task(got),
                lambda: store.claim("w", 1, 30),
                lambda: store.insert_task(Task(data=None, workflow_name="w")),
            ):
                with pytest.raises(StoreError) as exc:
                    await write()
                refused.append(str(exc.value))
            return got, refused
        finally:
            await store.close()

    got, refused = wfe_run(scenario())
    assert got is not None and got.data == {"n": 1}
    assert (
        refused
        == [
            f"the store {path} is at schema 5, opened to be read as it is (the workers of "
            "the release before may use it): a command that writes tasks (wfe worker, wfe "
            "submit) upgrades it"
        ]
        * 3
    )


class WriteLockHolder:
    """Another process holding the store's write lock (as a long purge or a big
    submission does) until :meth:`release`."""

    def __init__(self, path: Path) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sqlite3, sys\n"
                f"conn = sqlite3.connect({str(path)!r}, isolation_level=None)\n"
                "conn.execute('BEGIN IMMEDIATE')\n"
                "print('locked', flush=True)\n"
                "sys.stdin.read()\n",  # held until release() closes stdin
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline() == "locked\n"

    def release(self) -> None:
        if self.proc.returncode is None:
            self.proc.communicate("", timeout=20)


def test_commands_that_only_read_do_not_wait_for_another_process_s_write(wfe) -> None:
    """A long write of another process (a purge, a big submission) holds the store's
    write lock; wfe status, tasks and show read on meanwhile, as WAL lets them,
    instead of waiting for it (30 s, then 'database is locked')."""
    task_id = wfe("submit", "review", "--app", "review_app:engine", "--data", '{"n": 2}').stdout
    path = Path(wfe.env["WFE_STORE"].removeprefix("sqlite://"))
    holder = WriteLockHolder(path)
    try:
        # All at once, each in a process of its own. timeout: these would wait 30 s
        # for the lock, then fail.
        reads = [("status",), ("tasks",), ("show", task_id.strip(), "--json")]
        with ThreadPoolExecutor(len(reads)) as pool:
            status, tasks, show = pool.map(lambda args: wfe(*args, timeout=20).stdout, reads)
        assert "review" in status
        assert task_id.strip() in tasks
        assert '"status": "pending"' in show
    finally:
        holder.release()


def test_a_write_that_waited_too_long_for_the_lock_says_why(
    wfe_engine_factory, wfe_store_url, wfe_run
):
    """SQLite's 'database is locked' names no cause: the error says what holds it,
    and that it is the kind of error that ends once the lock is let go."""
    # A short wait for the lock (?timeout=), so that the test need not hold it for 30 s.
    engine = wfe_engine_factory(store=f"{wfe_store_url}?timeout=0.1")
    engine.register_workflow("w", [Phase("p", assigned_to="human")])

    async def scenario() -> StoreError:
        await engine.get_store()
        holder = sqlite3.connect(db_path(wfe_store_url), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreError) as failed:
                await engine.submit_task({}, "w")
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        return failed.value

    error = wfe_run(scenario())
    said = str(error)
    assert said.startswith(f"cannot write to {db_path(wfe_store_url)}: database is locked")
    assert "another process has held its write lock for over 0.1 s" in said
    assert isinstance(error, StoreBusyError)


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("timeout=soon", "sqlite URL parameter timeout must be 0 to 86400 seconds, not 'soon'"),
        ("timeout=-1", "sqlite URL parameter timeout must be 0 to 86400 seconds, not '-1'"),
        ("timeout=nan", "sqlite URL parameter timeout must be 0 to 86400 seconds, not 'nan'"),
        ("timeout=", "sqlite URL parameter timeout must be 0 to 86400 seconds, not ''"),
        ("wait=5", "unknown sqlite URL parameter 'wait' (known: durability, timeout)"),
    ],
)
def test_a_bad_sqlite_timeout_is_refused_naming_it(tmp_path, query, error) -> None:
    with pytest.raises(StoreError) as refused:
        SQLiteStore.from_url(f"sqlite://{tmp_path / 'wfe.db'}?{query}")
    assert str(refused.value) == error


def test_the_sqlite_timeout_is_kept_in_the_store_s_url(tmp_path) -> None:
    path = tmp_path / "wfe.db"
    store = SQLiteStore.from_url(f"sqlite://{path}?timeout=2.5&durability=full")
    assert store.timeout == 2.5
    assert store.url == f"sqlite://{path}?durability=full&timeout=2.5"
    assert SQLiteStore.from_url(store.url).url == store.url
    assert SQLiteStore.from_url(f"sqlite://{path}?timeout=30").url == f"sqlite://{path}"


def _out_of_date(path: Path, how: str) -> None:
    """Make the store at ``path`` as an older wfcore left it, in one way."""
    conn = sqlite3.connect(path)
    try:
        if how == "schema 3":
            conn.execute("UPDATE wfe_meta SET value = '3' WHERE key = 'schema_version'")
        elif how == "schema 4":
            _drop_priority(conn)
            conn.execute("DROP TABLE history_parts")
            conn.execute("UPDATE wfe_meta SET value = '4' WHERE key = 'schema_version'")
        elif how == "schema 5":
            _as_schema_5(conn)
        elif how == "no store id":
            conn.execute("DELETE FROM wfe_meta WHERE key = 'store_id'")
        elif how == "no artifacts folder recorded":
            conn.execute("DELETE FROM wfe_meta WHERE key = 'artifacts_dir'")
        elif how == "outbox without versions":
            conn.execute("ALTER TABLE outbox DROP COLUMN version")
        conn.commit()
    finally:
        conn.close()


def _file_state(path: Path) -> tuple[Any, ...]:
    conn = sqlite3.connect(path)
    try:
        return (
            sorted(conn.execute("SELECT key, value FROM wfe_meta")),
            sorted(conn.execute("SELECT type, name FROM sqlite_master")),
            [r[1] for r in conn.execute("PRAGMA table_info(outbox)")],
        )
    finally:
        conn.close()


@pytest.mark.parametrize(
    "how",
    [
        "schema 3",
        "schema 4",
        "schema 5",
        "no store id",
        "no artifacts folder recorded",
        "outbox without versions",
    ],
)
def test_a_store_that_needs_changing_opens_under_the_write_lock_once(
    tmp_path, wfe_run, how
) -> None:
    """What opening must write to an older store, it writes under the write lock:
    while another process holds it, the open waits (here 0.1 s) and says so,
    leaving the file as it was; once done, the store opens without the lock, as an
    up-to-date one does (see the test above with a real lock holder)."""
    path = tmp_path / "wfe.db"
    url = f"sqlite://{path}?timeout=0.1"

    async def open_close() -> None:
        store = SQLiteStore.from_url(url)
        await store.open()
        await store.close()

    wfe_run(open_close())
    _out_of_date(path, how)
    before = _file_state(path)
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreBusyError, match="database is locked"):
            wfe_run(open_close())
        assert _file_state(path) == before
        holder.execute("ROLLBACK")
        wfe_run(open_close())
        assert _file_state(path) != before
        holder.execute("BEGIN IMMEDIATE")
        wfe_run(open_close())  # up to date now: no write lock needed
    finally:
        holder.close()

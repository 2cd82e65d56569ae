"""The store contract's tests: tasks in and out."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs

from ..model import Artifact, Task, TaskStatus, TaskType
from ..stores.base import Store
from ._support import (
    _CLAIM_BUMPS,
    _STALE_WRITE,
    _ContractBase,
    _task,
    _with_store,
)


def _field_default(field: attrs.Attribute[Any]) -> Any:
    """The value a Task field has when not given."""
    default: Any = field.default
    return default.factory() if hasattr(default, "factory") else default


def _check_all_set(task: Task, *, besides: Sequence[str] = ()) -> None:
    """Fail if the contract itself left a Task field at its default: a field added
    to Task must be added to the round-trip tests too."""
    unset = [
        f.name
        for f in attrs.fields(Task)
        if f.name not in besides and getattr(task, f.name) == _field_default(f)
    ]
    assert not unset, (
        f"the store contract leaves Task fields {unset} at their defaults: a wfcore bug "
        "(the round-trip tests must set every field), not the store's"
    )


def _differences(got: Task, written: Task, *, besides: Sequence[str] = ()) -> list[str]:
    """The fields in which a task read back differs from the one written, each as
    ``name: read back ..., written ...``."""
    return [
        f"{f.name}: read back {getattr(got, f.name)!r}, written {getattr(written, f.name)!r}"
        for f in attrs.fields(Task)
        if f.name not in besides and getattr(got, f.name) != getattr(written, f.name)
    ]


_KEEP_EVERY_FIELD = (
    "A store keeps every Task field: wfcore.wire.task_to_dict(task, internal=True) holds "
    "them all as JSON (without internal=True it leaves out the version), and "
    "wfcore.wire.task_from_dict reads them back."
)


class _TasksInAndOut(_ContractBase):
    @_with_store
    async def test_inserted_tasks_read_back_whole(self, store: Any) -> None:
        """A task comes back from get_task with every field as it was inserted."""
        due = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
        task = _task(
            1,
            assigned_to="human",
            context={"k": [1, {"x": None}]},
            outputs={"earlier": "done"},
            run_after=due,
        )
        task.record("submitted")
        stored, created = await store.insert_task(task)
        assert created, (
            f"insert_task of a new id returned created={created!r}: it returns (the "
            "stored task, True) when it stores the task"
        )
        assert stored.id == "task-1", f"insert_task returned a task of id {stored.id!r}"
        got = await store.get_task("task-1")
        assert got is not None, "get_task('task-1') gave None right after insert_task"
        for field in (
            "id",
            "data",
            "workflow_name",
            "classification",
            "assigned_to",
            "status",
            "context",
            "outputs",
            "run_after",
            "created_at",
        ):
            got_value, given = getattr(got, field), getattr(task, field)
            assert got_value == given, (
                f"get_task after insert_task gave {field} {got_value!r}, inserted {given!r}. "
                + _KEEP_EVERY_FIELD
            )
        events = [e["event"] for e in got.history]
        assert events == ["submitted"], (
            f"get_task after insert_task gave a history of events {events}, inserted "
            "['submitted']: the history is kept as written"
        )
        missing = await store.get_task("no-such-task")
        assert missing is None, f"get_task of an id never inserted gave {missing!r:.100}, not None"

    @_with_store
    async def test_every_field_of_an_inserted_task_reads_back(self, store: Any) -> None:
        """insert_task keeps every Task field, each set here to a value unlike its
        default: attempts, error, artifacts, reply and the rest read back as written,
        and the task is stored at the version it was inserted with."""
        now = datetime.now(timezone.utc)
        task = Task(
            id="task-1",
            data={"n": 1, "nested": [1, "two", {"three": 3.5}], "text": "\u00fcn\u00efcode \u2713"},
            workflow_name="w",
            classification="review",
            assigned_to=TaskType.HUMAN,
            status=TaskStatus.WAITING_HUMAN,
            context={"k": [1, {"x": None}]},
            artifacts=[
                Artifact(
                    name="report.txt",
                    size=5,
                    sha256="5d41402abc4b2a76b9719d911017c592" * 2,
                    media_type="text/plain",
                    phase="draft",
                    path="/var/lib/wfe/artifacts/task-1/report.txt",
                    created_at=now - timedelta(minutes=5),
                )
            ],
            output={"draft": "v1"},
            outputs={"draft": {"draft": "v1"}},
            error="ValueError: the first try failed",
            traceback="Traceback (most recent call last):\nValueError: the first try failed",
            attempts=2,
            created_at=now - timedelta(days=1),
            updated_at=now - timedelta(hours=1),
            next_classification="publish",
            waiting_reason="approve the draft",
            deadline=now + timedelta(days=2),
            reply={"approved": False, "note": "shorter"},
            resume_in_phase=True,
            run_after=now + timedelta(hours=3),
            priority=-7,
            parent_id="batch-9",
            children=["task-1.1", "task-1.2"],
            waiting_for=["task-1.2"],
            version=7,
        )
        task.record("submitted", by="someone")
        task.record("classified", phase="review")
        _check_all_set(task)
        written = task.copy()
        assert (await store.insert_task(task))[1], "insert_task of a new id said created=False"
        got = await store.get_task("task-1")
        assert got is not None, "get_task('task-1') gave None right after insert_task"
        # updated_at is the store's to set.
        wrong = _differences(got, written, besides=["updated_at"])
        assert not wrong, (
            "get_task after insert_task gave back a task that differs in "
            + "; ".join(wrong)
            + ". "
            + _KEEP_EVERY_FIELD
        )

    @_with_store
    async def test_every_field_of_an_updated_task_reads_back(self, store: Any) -> None:
        """update_task keeps every Task field a write may change, each set here to a
        value unlike its default and unlike the inserted one: a worker's write stores
        attempts, error, artifacts, reply and the rest, as written."""
        await store.insert_task(_task(1))
        inserted = await store.get_task("task-1")
        inserted_at = inserted.version
        [task] = await store.claim("w", 1, 30)
        assert task.version > inserted_at, (
            f"claim returned task-1 at version {task.version}, the version it was "
            f"inserted at ({inserted_at}): {_CLAIM_BUMPS}"
        )
        now = datetime.now(timezone.utc)
        task.data = {"n": 2, "list": [None, True, 1.5]}
        task.classification = "publish"
        task.assigned_to = TaskType.FUNCTIONAL
        task.status = TaskStatus.WAITING_IO
        task.context = {"step": 3, "seen": ["a", "b"]}
        task.artifacts = [
            Artifact(
                name="out/data.json",
                size=17,
                sha256="ab" * 32,
                media_type="application/json",
                phase="p",
                path="/var/lib/wfe/artifacts/task-1/out/data.json",
                created_at=now - timedelta(seconds=30),
            )
        ]
        task.output = ["result", 2]
        task.outputs = {"p": ["result", 2]}
        task.error = "TimeoutError: the service did not answer"
        task.traceback = "Traceback (most recent call last):\nTimeoutError"
        task.attempts = 3
        task.record("attempt_failed", phase="p", attempt=3)
        task.next_classification = "archive"
        task.waiting_reason = "the upload to finish"
        task.deadline = now + timedelta(hours=5)
        task.reply = {"uploaded": True}
        task.resume_in_phase = True
        task.run_after = now + timedelta(hours=1)
        task.priority = 250
        task.parent_id = "batch-3"
        task.children = ["task-1.1"]
        task.waiting_for = ["task-1.1"]
        _check_all_set(task)
        written = task.copy()
        assert await store.update_task(task), (
            "update_task returned False for the task as its claim returned it: a write at "
            "the stored version succeeds"
        )
        got = await store.get_task("task-1")
        assert got is not None, "get_task('task-1') gave None after update_task"
        wrong = _differences(got, written, besides=["updated_at", "version"])
        assert not wrong, (
            "get_task after update_task gave back a task that differs in "
            + "; ".join(wrong)
            + ". "
            + _KEEP_EVERY_FIELD
        )
        assert got.version == written.version + 1, (
            f"update_task of a task at version {written.version} stored version "
            f"{got.version}: a write bumps the version by one"
        )
        assert got.created_at == inserted.created_at, (
            f"update_task changed created_at from {inserted.created_at} to {got.created_at}: "
            "it is set once, by insert_task"
        )

    @_with_store
    async def test_a_long_history_reads_back_whole_and_in_order(self, store: Any) -> None:
        """A task that loops through hundreds of phases keeps every history entry, in
        order, whichever way it is written (by the worker holding it, from a task
        read with get_task, after a release and a new claim) and read (get_task,
        list_tasks, claim, outbox_pending); a task purged and submitted again under
        its id starts with a history of its own."""
        await store.outbox_register("results")
        await store.insert_task(_task(1))
        [task] = await store.claim("w", 1, 30)
        note = "x" * 80  # a history of a few hundred kilobytes in all
        for n in range(400):
            if n % 50 == 25:  # written from a fresh read, as resume and cancel do
                task = await store.get_task("task-1")
            if n == 200:  # released, then claimed again
                task.status = TaskStatus.PENDING
                assert await store.update_task(task)
                [task] = await store.claim("w", 1, 30)
            for step in range(5):
                task.record("step", n=n, step=step, note=note)
            assert await store.update_task(task, keep_lease=True)
        expected = list(task.history)
        steps = [(e["n"], e["step"]) for e in expected if e["event"] == "step"]
        assert steps == [(n, step) for n in range(400) for step in range(5)]

        def wrong(got: Task, read_by: str) -> str:
            return (
                f"{read_by} gave back a history of {len(got.history)} entries where "
                f"{len(expected)} were written"
                + ("" if len(got.history) != len(expected) else ", in another order or changed")
            )

        got = await store.get_task("task-1")
        assert got.history == expected, wrong(got, "get_task")
        [listed] = await store.list_tasks(limit=10)
        assert listed.history == expected, wrong(listed, "list_tasks")
        task.status = TaskStatus.COMPLETED
        assert await store.update_task(task)
        [published] = await store.outbox_pending("results")
        assert published.history == expected, wrong(published, "outbox_pending")

        # A write that replaces the history with a shorter one stores that one.
        await store.insert_task(_task(2))
        [other] = await store.claim("w", 1, 30)
        other.history = [dict(e) for e in expected]
        assert await store.update_task(other)
        replaced = await store.get_task("task-2")
        replaced.history = replaced.history[:3]
        assert await store.update_task(replaced)
        got = await store.get_task("task-2")
        assert got.history == expected[:3], wrong(got, "get_task after a shorter history")

        if type(store).delete_finished is not Store.delete_finished:
            await store.outbox_ack("results", ["task-1"])
            purged = await store.delete_finished(time.time() + 60, [TaskStatus.COMPLETED])
            assert purged == ["task-1"], (
                f"delete_finished gave {purged} for the one COMPLETED task, task-1, whose "
                "finish the only outbox consumer acknowledged (outbox_ack('results', "
                "['task-1'])): it purges that task, as the outbox keeps it no longer"
            )
            fresh = _task(1)
            fresh.record("submitted")
            await store.insert_task(fresh)
            again = await store.get_task("task-1")
            assert again.history == fresh.history, (
                "a task submitted under the id of a purged one has the purged task's "
                "history: delete_finished must delete all of a task"
            )

    @_with_store
    async def test_inserting_an_existing_id_returns_the_stored_task(self, store: Any) -> None:
        """Submission is idempotent by id: a second insert changes nothing."""
        await store.insert_task(_task(1))
        again = _task(1)
        again.data = {"n": "other"}
        stored, created = await store.insert_task(again)
        assert not created, (
            "insert_task of an id stored already returned created=True: it returns "
            "(the stored task, False) and writes nothing, so that submitting a task "
            "twice (a retried request, a message delivered again) stores it once"
        )
        assert stored.data == {"n": 1}, (
            f"insert_task of an id stored already returned data {stored.data!r}, not the "
            "stored {'n': 1}: it returns the task as stored, not the one passed in"
        )
        results = await store.insert_tasks([_task(2), _task(1), _task(2)])
        created_flags = [created for _, created in results]
        assert created_flags == [True, False, False], (
            f"insert_tasks([task-2, task-1 (stored), task-2 again]) said created "
            f"{created_flags}, not [True, False, False]: only the first of an id not "
            "stored yet is created, in the batch as across calls"
        )
        assert [t.id for t, _ in results] == ["task-2", "task-1", "task-2"]
        listed = [t.id for t in await store.list_tasks(limit=10)]
        assert len(listed) == 2, f"list_tasks gave {listed} after inserting task-1 and task-2"

    @_with_store
    async def test_the_stored_task_is_a_copy(self, store: Any) -> None:
        """Changing a task object after writing it, or one read back (by get_task,
        list_tasks or outbox_pending), changes nothing stored."""
        await store.outbox_register("results")
        task = _task(1)
        await store.insert_task(task)
        task.data["n"] = "changed after insert"
        task.record("after_insert")
        got = await store.get_task("task-1")
        got.context["x"] = "changed after read"
        got.record("after_read")
        again = await store.get_task("task-1")
        assert again.data == {"n": 1}
        assert again.context == {}
        assert again.history == []
        [listed] = await store.list_tasks()
        listed.context["y"] = "changed after list_tasks"
        listed.record("after_list")
        again = await store.get_task("task-1")
        assert (again.context, again.history) == ({}, []), (
            "changing a task list_tasks returned changed the stored task: return copies, "
            "as get_task does"
        )
        again.record("written")
        assert await store.update_task(again)
        again.record("after_update")  # by a handler still holding the task, say
        stored = await store.get_task("task-1")
        assert [e["event"] for e in stored.history] == ["written"], (
            "history entries added to a task after it was written, or to a task read "
            "back, reached the store"
        )
        [claimed] = await store.claim("w", 1, 30)
        claimed.status, claimed.output = TaskStatus.COMPLETED, {"ok": True}
        assert await store.update_task(claimed)
        [published] = await store.outbox_pending("results")
        published.output["ok"] = "changed after outbox_pending"
        published.record("after_outbox")
        stored = await store.get_task("task-1")
        assert stored.output == {"ok": True} and stored.history[-1]["event"] != "after_outbox", (
            "changing a task outbox_pending returned changed the stored task: return "
            "copies, as get_task does"
        )

    @_with_store
    async def test_update_is_a_compare_and_set_on_version(self, store: Any) -> None:
        """update_task writes only over the version read, bumps it by one, and stamps
        updated_at; a stale or unknown task writes nothing and returns False."""
        long_ago = datetime.now(timezone.utc) - timedelta(days=1)
        await store.insert_task(_task(1, created_at=long_ago, updated_at=long_ago))
        task = await store.get_task("task-1")
        stale = await store.get_task("task-1")
        read_version = task.version
        before = datetime.now(timezone.utc)
        task.output = "first"
        wrote = await store.update_task(task)
        assert wrote is True, (
            f"update_task returned {wrote!r} for a task at the version just read: it writes "
            "and returns True when the stored version is the task's"
        )
        assert task.version == read_version + 1, (
            f"update_task left the task it wrote at version {task.version}, read at "
            f"{read_version}: a write bumps task.version by one, on the stored row and on "
            "the task passed in, so that the caller's next write is at the new version"
        )
        stored = await store.get_task("task-1")
        assert stored.version == task.version, (
            f"get_task after update_task read back version {stored.version}, but the write "
            f"set the task's to {task.version}: store the bumped version with the write"
        )
        assert stored.output == "first", (
            f"get_task after update_task read back output {stored.output!r}, written 'first'"
        )
        assert stored.updated_at >= before - timedelta(seconds=1), "updated_at is not stamped"
        assert abs((task.updated_at - stored.updated_at).total_seconds()) < 1, (
            f"update_task left updated_at {task.updated_at} on the task it wrote, but "
            f"stored {stored.updated_at}: set the time written on the task passed in too, "
            "as the version (the engine hands that object on, to hooks and callers)"
        )
        assert stored.created_at == long_ago, (
            f"update_task changed created_at from {long_ago} to {stored.created_at}: "
            "it is set once, by insert_task"
        )

        stale.output = "lost write"
        wrote = await store.update_task(stale)
        assert wrote is False, (
            f"update_task returned {wrote!r} for a task read at version {read_version}, "
            f"after another write had made it {task.version}: " + _STALE_WRITE
        )
        kept = (await store.get_task("task-1")).output
        assert kept == "first", (
            f"a stale update_task overwrote the stored output with {kept!r}: " + _STALE_WRITE
        )
        wrote = await store.update_task(_task(99))
        assert wrote is False, (
            f"update_task returned {wrote!r} for a task that was never inserted: a write "
            "to an unknown id stores nothing and returns False (insert_task adds tasks)"
        )
        assert await store.get_task("task-99") is None, (
            "update_task of a task that was never inserted stored it: a write to an "
            "unknown id stores nothing and returns False (insert_task adds tasks)"
        )

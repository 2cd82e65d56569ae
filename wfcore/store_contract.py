"""The store contract as pytest tests: what every storage backend must do, checked.

A third-party store (a ``wfe_open_store`` plugin) inherits these tests to find out
whether the engine can rely on it; the built-in SQLite and memory stores pass them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from .engine import ECSWorkflowEngine
from .model import Phase, Task, TaskStatus, WorkflowSpec
from .stores.base import Store

__all__ = ["StoreContract"]

_Scenario = Callable[[Any, Any], Awaitable[None]]


def _with_store(scenario: _Scenario) -> Callable[[Any, str], None]:
    """A test method running ``scenario(self, store)`` on a freshly opened store."""

    # Not functools.wraps: pytest would read the scenario's signature and look for
    # a fixture named "store".
    def test(self: StoreContract, store_url: str) -> None:
        async def run() -> None:
            engine = self.make_engine(store_url)
            try:
                await scenario(self, await engine.get_store())
            finally:
                await engine.aclose()

        asyncio.run(asyncio.wait_for(run(), self.timeout))

    test.__name__ = scenario.__name__
    test.__qualname__ = scenario.__qualname__
    test.__doc__ = scenario.__doc__
    return test


def _task(n: int, **fields: Any) -> Task:
    fields.setdefault("workflow_name", "w")
    fields.setdefault("classification", "p")
    return Task(data={"n": n}, id=f"task-{n}", **fields)


async def _eventually(check: Callable[[], Awaitable[Any]], what: str, timeout: float = 10) -> Any:
    """Await ``check()`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.02)


class StoreContract:
    """Tests every store must pass, to inherit in a test class of your own.

    Give the subclass a ``store_url`` fixture returning the URL of a fresh, empty
    store for each test, and ``plugins``, the plugins that provide its URL scheme
    (the test engines load no entry points)::

        import pytest
        from wfcore.testing import StoreContract

        import wfe_jsonfile


        class TestJsonFileStore(StoreContract):
            plugins = [wfe_jsonfile]

            @pytest.fixture
            def store_url(self, tmp_path):
                return f"jsonfile://{tmp_path}/tasks.json"

    Set ``durable = False`` for a store whose tasks do not outlive closing it
    (like ``memory://``), on this class and on the store class alike (a test
    checks that they agree). Each test opens the store through an engine, as a
    worker does, so the plugin's ``wfe_open_store`` is tested too.
    """

    #: Plugins registered on each test's engine (the store's own, at least).
    plugins: Sequence[Any] = ()
    #: Tasks, workflows and outbox rows survive closing and reopening the store.
    durable: bool = True
    #: Seconds a single test may take.
    timeout: float = 60.0

    @pytest.fixture
    def store_url(self) -> str:
        pytest.fail(f"{type(self).__name__} must define a store_url fixture (a fresh store)")

    def make_engine(self, store_url: str) -> ECSWorkflowEngine:
        """The engine each test opens the store through."""
        return ECSWorkflowEngine(store=store_url, plugins=list(self.plugins), load_plugins=False)

    # -- what the store says of itself ------------------------------------------------

    @_with_store
    async def test_durable_is_what_the_store_class_says(self, store: Any) -> None:
        """The store class's ``durable`` is the contract's: set in two places, they
        can disagree, and wfe_kafka trusts the store's (it commits offsets only for
        a durable store) while the contract tests what this class claims."""
        said, claimed = bool(type(store).durable), bool(self.durable)
        if said != claimed:
            pytest.fail(
                f"{type(store).__name__}.durable is {said}, but {type(self).__name__}.durable "
                f"is {claimed}: set both to True if the store's tasks outlive closing and "
                "reopening it, or both to False if they do not (a subclass of MemoryStore "
                "inherits durable = False)",
                pytrace=False,
            )

    # -- tasks in and out ----------------------------------------------------------

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
        assert created
        assert stored.id == "task-1"
        got = await store.get_task("task-1")
        assert got is not None
        for field in ("id", "data", "workflow_name", "classification", "assigned_to"):
            assert getattr(got, field) == getattr(task, field), field
        assert (got.status, got.context, got.outputs) == (task.status, task.context, task.outputs)
        assert got.run_after == due
        assert [e["event"] for e in got.history] == ["submitted"]
        assert got.created_at == task.created_at
        assert await store.get_task("no-such-task") is None

    @_with_store
    async def test_inserting_an_existing_id_returns_the_stored_task(self, store: Any) -> None:
        """Submission is idempotent by id: a second insert changes nothing."""
        await store.insert_task(_task(1))
        again = _task(1)
        again.data = {"n": "other"}
        stored, created = await store.insert_task(again)
        assert not created
        assert stored.data == {"n": 1}
        results = await store.insert_tasks([_task(2), _task(1), _task(2)])
        assert [created for _, created in results] == [True, False, False]
        assert [t.id for t, _ in results] == ["task-2", "task-1", "task-2"]
        assert len(await store.list_tasks(limit=10)) == 2

    @_with_store
    async def test_the_stored_task_is_a_copy(self, store: Any) -> None:
        """Changing a task object after writing it, or one read back, changes nothing stored."""
        task = _task(1)
        await store.insert_task(task)
        task.data["n"] = "changed after insert"
        got = await store.get_task("task-1")
        got.context["x"] = "changed after read"
        again = await store.get_task("task-1")
        assert again.data == {"n": 1}
        assert again.context == {}

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
        assert await store.update_task(task) is True
        assert task.version == read_version + 1
        stored = await store.get_task("task-1")
        assert stored.version == task.version
        assert stored.output == "first"
        assert stored.updated_at >= before - timedelta(seconds=1), "updated_at is not stamped"
        assert stored.created_at == long_ago

        stale.output = "lost write"
        assert await store.update_task(stale) is False
        assert (await store.get_task("task-1")).output == "first"
        assert await store.update_task(_task(99)) is False
        assert await store.get_task("task-99") is None

    # -- claiming and leases ---------------------------------------------------------

    @_with_store
    async def test_claim_leases_runnable_tasks_oldest_first(self, store: Any) -> None:
        """Claimed tasks are IN_PROGRESS, at a new version, and no one else's."""
        for n in range(3):
            await store.insert_task(_task(n))
        inserted = await store.get_task("task-0")
        first = await store.claim("worker-a", 2, 30)
        assert [t.id for t in first] == ["task-0", "task-1"]
        assert all(t.status is TaskStatus.IN_PROGRESS for t in first)
        assert first[0].version > inserted.version
        # A write by whoever read the task before the claim is refused.
        inserted.output = "too late"
        assert await store.update_task(inserted) is False
        second = await store.claim("worker-b", 5, 30)
        assert [t.id for t in second] == ["task-2"]
        assert await store.claim("worker-c", 5, 30) == []
        assert sorted(await store.lease_owners()) == ["worker-a", "worker-b"]
        if type(store).lease_of is not Store.lease_of:  # the store can tell (optional)
            now = datetime.now(timezone.utc)
            owner, expires = await store.lease_of("task-2")
            assert owner == "worker-b"
            assert now + timedelta(seconds=20) < expires < now + timedelta(seconds=40)
            assert await store.lease_of("no-such-task") is None

    @_with_store
    async def test_tasks_to_start_later_wait_for_their_time(self, store: Any) -> None:
        """A pending task with run_after in the future is not claimed; it is delayed."""
        later = datetime.now(timezone.utc) + timedelta(hours=1)
        await store.insert_task(_task(1, run_after=later))
        await store.insert_task(_task(2, run_after=datetime.now(timezone.utc)))
        assert [t.id for t in await store.claim("w", 10, 30)] == ["task-2"]
        count, first = await store.count_delayed()
        assert count == 1
        assert abs((first - later).total_seconds()) < 1

    @_with_store
    async def test_a_finished_write_releases_the_lease(self, store: Any) -> None:
        """update_task frees the lease unless keep_lease; a released pending task is
        claimable again at once."""
        await store.insert_task(_task(1))
        [task] = await store.claim("w", 1, 30)
        task.context["step"] = 1
        assert await store.update_task(task, keep_lease=True)
        assert await store.renew("w", ["task-1"], 30) == {"task-1"}
        task.status = TaskStatus.PENDING
        assert await store.update_task(task)
        assert await store.renew("w", ["task-1"], 30) == set()
        assert await store.lease_of("task-1") is None
        [again] = await store.claim("other", 1, 30)
        assert again.context == {"step": 1}
        assert not [e for e in again.history if e["event"] == "taken_over"]

    @_with_store
    async def test_an_expired_lease_is_taken_over(self, store: Any) -> None:
        """A running task whose lease ran out goes to the next claimer, with a
        taken_over event naming the worker that lost it."""
        await store.insert_task(_task(1))
        [task] = await store.claim("dead-worker", 1, 0.2)
        assert await store.claim("next-worker", 1, 30) == []
        [taken] = await _eventually(
            lambda: store.claim("next-worker", 1, 30), "the expired lease to be claimable"
        )
        assert taken.id == "task-1"
        assert taken.status is TaskStatus.IN_PROGRESS
        [event] = [e for e in taken.history if e["event"] == "taken_over"]
        assert event["previous_worker"] == "dead-worker"
        assert event["worker"] == "next-worker"
        # The old owner can neither renew nor write any more.
        assert await store.renew("dead-worker", ["task-1"], 30) == set()
        task.output = "late"
        assert await store.update_task(task) is False

    @_with_store
    async def test_leases_of_dead_owners_are_released_at_once(self, store: Any) -> None:
        """release_dead_leases makes a dead process's tasks claimable now."""
        for n in range(2):
            await store.insert_task(_task(n))
        assert len(await store.claim("dead", 2, 3600)) == 2
        assert await store.release_dead_leases(["dead"]) == 2
        taken = await store.claim("alive", 5, 30)
        assert sorted(t.id for t in taken) == ["task-0", "task-1"]
        assert all(
            [e["previous_worker"] for e in t.history if e["event"] == "taken_over"] == ["dead"]
            for t in taken
        )
        assert await store.lease_owners() == ["alive"]

    @_with_store
    async def test_waiting_tasks_are_claimed_only_after_their_deadline(self, store: Any) -> None:
        """WAITING_* tasks are not runnable, until their deadline passes; they come
        back still waiting, for the engine to time them out."""
        now = datetime.now(timezone.utc)
        await store.insert_task(_task(1))
        await store.insert_task(_task(2))
        await store.insert_task(_task(3))
        claimed = {t.id: t for t in await store.claim("w", 3, 30)}
        for task_id, deadline in [
            ("task-1", None),
            ("task-2", now + timedelta(hours=1)),
            ("task-3", now - timedelta(seconds=1)),
        ]:
            task = claimed[task_id]
            task.status = TaskStatus.WAITING_HUMAN
            task.deadline = deadline
            assert await store.update_task(task)
        assert not await store.has_active_tasks()  # waiting tasks don't count
        [due] = await store.claim("w", 5, 30)
        assert due.id == "task-3"
        assert due.status is TaskStatus.WAITING_HUMAN

    @_with_store
    async def test_workers_of_some_workflows_see_only_those(self, store: Any) -> None:
        """claim and has_active_tasks with workflows= look at those workflows only."""
        await store.insert_task(_task(1, workflow_name="left"))
        await store.insert_task(_task(2, workflow_name="right"))
        assert await store.has_active_tasks(workflows=["left"])
        [left] = await store.claim("w", 5, 30, workflows=["left"])
        assert left.id == "task-1"
        left.status = TaskStatus.COMPLETED
        assert await store.update_task(left)
        assert not await store.has_active_tasks(workflows=["left"])
        assert await store.has_active_tasks()
        assert [t.id for t in await store.claim("w", 5, 30)] == ["task-2"]

    # -- reading many ----------------------------------------------------------------

    @_with_store
    async def test_lists_and_counts(self, store: Any) -> None:
        """list_tasks filters, orders by creation and pages; the counts agree."""
        for name in ("a", "b"):
            await store.save_workflow(WorkflowSpec(name, [Phase("p"), Phase("q")]))
        for n in range(5):
            await store.insert_task(_task(n, workflow_name="a" if n < 3 else "b"))
        [task] = await store.claim("w", 1, 30)
        task.status, task.classification = TaskStatus.COMPLETED, "q"
        assert await store.update_task(task)

        newest_first = [t.id for t in await store.list_tasks()]
        assert newest_first == [f"task-{n}" for n in (4, 3, 2, 1, 0)]
        assert [t.id for t in await store.list_tasks(oldest_first=True, limit=2, offset=1)] == [
            "task-1",
            "task-2",
        ]
        pending = await store.list_tasks(TaskStatus.PENDING, "a")
        assert [t.id for t in pending] == ["task-2", "task-1"]
        either = await store.list_tasks([TaskStatus.PENDING, TaskStatus.COMPLETED], "a")
        assert len(either) == 3
        assert await store.count_tasks() == {TaskStatus.PENDING: 4, TaskStatus.COMPLETED: 1}
        assert await store.count_tasks("b") == {TaskStatus.PENDING: 2}
        assert await store.count_by_phase("a") == {"p": 2}  # finished tasks are left out
        assert await store.count_all_by_workflow() == {
            "a": {TaskStatus.PENDING: 2, TaskStatus.COMPLETED: 1},
            "b": {TaskStatus.PENDING: 2},
        }
        assert await store.count_all_by_phase() == {"a": {"p": 2}, "b": {"p": 2}}

    # -- workflows -------------------------------------------------------------------

    @_with_store
    async def test_workflows_are_stored_and_the_first_of_a_name_wins(self, store: Any) -> None:
        """save_workflow replaces; add_workflow keeps the one stored first."""
        first = WorkflowSpec("flow", [Phase("a"), Phase("b", assigned_to="human")])
        await store.save_workflow(first)
        assert await store.add_workflow(WorkflowSpec("flow", [Phase("other")])) == first
        replaced = WorkflowSpec("flow", [Phase("c")])
        await store.save_workflow(replaced)
        await store.save_workflow(WorkflowSpec("another", [Phase("x")]))
        stored = {spec.name: spec for spec in await store.load_workflows()}
        assert stored == {"flow": replaced, "another": WorkflowSpec("another", [Phase("x")])}

    @_with_store
    async def test_one_workflow_is_read_by_its_name(self, store: Any) -> None:
        """load_workflow gives the workflow stored under a name, as last saved, and
        None for a name never stored."""
        first = WorkflowSpec("flow", [Phase("a")])
        await store.save_workflow(first)
        await store.save_workflow(WorkflowSpec("another", [Phase("x")]))
        assert await store.load_workflow("flow") == first
        replaced = WorkflowSpec("flow", [Phase("b", assigned_to="human")])
        await store.save_workflow(replaced)
        assert await store.load_workflow("flow") == replaced
        assert await store.load_workflow("no-such-flow") is None

    # -- the results outbox ------------------------------------------------------------

    @_with_store
    async def test_the_outbox_records_each_finish_until_acknowledged(self, store: Any) -> None:
        """Tasks finishing after a consumer registered wait in its outbox until
        acknowledged at their version; a later finish (a retry) waits again."""
        await store.insert_task(_task(0))
        [early] = await store.claim("w", 1, 30)
        early.status = TaskStatus.COMPLETED
        assert await store.update_task(early)  # before anyone registered
        await store.outbox_register("results")
        await store.outbox_register("results")  # idempotent
        await store.insert_task(_task(1))
        [task] = await store.claim("w", 1, 30)
        task.status, task.output = TaskStatus.COMPLETED, "done"
        assert await store.update_task(task)
        [pending] = await store.outbox_pending("results")
        assert (pending.id, pending.output, pending.version) == ("task-1", "done", task.version)
        assert await store.outbox_pending("nobody") == []

        await store.outbox_ack("results", ["task-1"], versions=[task.version])
        assert await store.outbox_pending("results") == []
        task.status = TaskStatus.PENDING  # retried...
        assert await store.update_task(task)
        [task] = await store.claim("w", 1, 30)
        task.status = TaskStatus.FAILED  # ...and finished again
        assert await store.update_task(task)
        [again] = await store.outbox_pending("results")
        assert (again.id, again.status) == ("task-1", TaskStatus.FAILED)
        # An acknowledgement of the earlier finish does not cover the later one.
        await store.outbox_ack("results", ["task-1"], versions=[task.version - 3])
        assert [t.id for t in await store.outbox_pending("results")] == ["task-1"]

    # -- across a restart --------------------------------------------------------------

    def test_everything_survives_closing_and_reopening(self, store_url: str) -> None:
        """Tasks, workflows and the outbox are there after the store is reopened."""
        if not self.durable:
            pytest.skip("the store is not durable (durable = False)")

        async def write() -> None:
            engine = self.make_engine(store_url)
            store = await engine.get_store()
            try:
                await store.save_workflow(WorkflowSpec("flow", [Phase("a")]))
                await store.outbox_register("results")
                await store.insert_task(_task(1))
                await store.insert_task(_task(2))
                [task] = await store.claim("w", 1, 30)
                task.status, task.output = TaskStatus.COMPLETED, {"ok": True}
                assert await store.update_task(task)
            finally:
                await engine.aclose()

        async def read() -> None:
            engine = self.make_engine(store_url)
            store = await engine.get_store()
            try:
                assert [s.name for s in await store.load_workflows()] == ["flow"]
                done = await store.get_task("task-1")
                assert done is not None
                assert (done.status, done.output) == (TaskStatus.COMPLETED, {"ok": True})
                assert [t.id for t in await store.outbox_pending("results")] == ["task-1"]
                assert [t.id for t in await store.claim("w", 5, 30)] == ["task-2"]
            finally:
                await engine.aclose()

        asyncio.run(asyncio.wait_for(write(), self.timeout))
        asyncio.run(asyncio.wait_for(read(), self.timeout))

    # -- the engine on it --------------------------------------------------------------

    def test_an_engine_runs_workflows_on_it(self, store_url: str) -> None:
        """Tasks through a 2-phase workflow with a person in it, end to end."""
        engine = self.make_engine(store_url)

        async def double(task: Task) -> None:
            task.output = task.data["n"] * 2

        engine.register_handler("double", double)
        engine.register_workflow(
            "flow", [Phase("double", assigned_to="functional"), Phase("check", assigned_to="human")]
        )

        async def scenario() -> list[Task | None]:
            try:
                ids = [(await engine.submit_task({"n": n}, "flow")).id for n in range(20)]
                await engine.run_until_idle()
                for task_id in ids:
                    waiting = await engine.get_task(task_id)
                    assert waiting is not None
                    assert waiting.status is TaskStatus.WAITING_HUMAN, waiting.error
                    await engine.resume(task_id, output="ok")
                await engine.run_until_idle()
                return [await engine.get_task(task_id) for task_id in ids]
            finally:
                await engine.aclose()

        done = asyncio.run(asyncio.wait_for(scenario(), self.timeout))
        assert [t and t.status for t in done] == [TaskStatus.COMPLETED] * 20
        assert [t and t.outputs for t in done] == [
            {"double": n * 2, "check": "ok"} for n in range(20)
        ]

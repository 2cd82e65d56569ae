"""The store contract as pytest tests: what every storage backend must do, checked.

A third-party store (a ``wfe_open_store`` plugin) inherits these tests to find out
whether the engine can rely on it; the built-in SQLite and memory stores pass them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import attrs
import pytest

from .engine import ECSWorkflowEngine
from .errors import StoreError
from .model import Artifact, Phase, Task, TaskStatus, TaskType, WorkflowSpec
from .plugins import call_impl
from .stores.base import Store, phase_filter, summarized

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


def _opens(impl: Any, url: str) -> bool:
    """Whether a ``wfe_open_store`` implementation gives a store for ``url``; one that
    raises does too, as far as this check goes: opening it says what is wrong."""
    try:
        return call_impl(impl, url=url) is not None
    except Exception:
        return True


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


def _with_two_stores(
    scenario: Callable[[Any, Any, Any], Awaitable[None]],
) -> Callable[[Any, str], None]:
    """A test method running ``scenario(self, first, second)`` on two stores opened on
    one URL at once (two engines in one event loop), as two processes would open it;
    skipped for a store that is not shared."""

    def test(self: StoreContract, store_url: str) -> None:
        self._skip_unless_shared()

        async def run() -> None:
            first = self.make_engine(store_url)
            second = self.make_engine(store_url)
            try:
                # Both open before anything is written: what the second one sees
                # must come from the store, not from what it read when it opened.
                opened = (await first.get_store(), await second.get_store())
                await scenario(self, *opened)
            finally:
                try:
                    await first.aclose()
                finally:
                    await second.aclose()

        asyncio.run(asyncio.wait_for(run(), self.timeout))

    test.__name__ = scenario.__name__
    test.__qualname__ = scenario.__qualname__
    test.__doc__ = scenario.__doc__
    return test


_Ready = Callable[[], Awaitable[None]]


async def _meet(barrier: threading.Barrier, timeout: float) -> None:
    """Wait, without blocking the event loop, until every party reaches ``barrier``."""
    await asyncio.to_thread(barrier.wait, timeout)


def _start_in_threads(
    count: int,
    timeout: float,
    work: Callable[[int, _Ready], Awaitable[Any]],
    barrier: threading.Barrier | None = None,
) -> list[concurrent.futures.Future[Any]]:
    """Start ``work(n, ready)`` for each n below ``count``, each in a thread and event
    loop of its own; return the futures of their results.

    ``await ready()`` waits until every party of ``barrier`` (by default, these
    ``count``) has called it: each does its slow preparation first, so that what
    comes after runs truly at the same time. The threads are daemons: one stuck in
    a store call does not keep a failed test waiting for it.
    """
    gate = barrier or threading.Barrier(count)
    ready = functools.partial(_meet, gate, timeout)
    futures: list[concurrent.futures.Future[Any]] = [
        concurrent.futures.Future() for _ in range(count)
    ]

    def run(n: int) -> None:
        try:
            futures[n].set_result(asyncio.run(asyncio.wait_for(work(n, ready), timeout)))
        except BaseException as exc:  # the caller raises it
            futures[n].set_exception(exc)
            gate.abort()  # after: the others' broken barrier is not the first error

    for n in range(count):
        threading.Thread(target=run, args=(n,), name=f"store-contract-{n}", daemon=True).start()
    return futures


def _results(futures: Sequence[concurrent.futures.Future[Any]]) -> list[Any]:
    """The futures' results; the first error as soon as one fails."""
    done, _ = concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_EXCEPTION)
    errors = [error for future in done if (error := future.exception()) is not None]
    # A broken barrier is what the first real error caused in the others.
    errors.sort(key=lambda error: isinstance(error, threading.BrokenBarrierError))
    if errors:
        raise errors[0]
    return [future.result() for future in futures]


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

_CLAIM_BUMPS = (
    "a claim bumps the version, on the stored task and the one it returns, so that a "
    "write by whoever read the task before the claim is refused"
)

_STALE_WRITE = (
    "a write carrying a version other than the stored one must store nothing and "
    "return False (compare the version and write in one atomic step: one transaction, "
    "or under one lock held across both), or a cancel or a result written in between "
    "is lost while both writers believe they won."
)


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
    checks that they agree). Set ``shared = False`` for a store that two openers
    of one URL do not share, and ``threadsafe = False`` for one meant for a single
    thread (``memory://`` is both): the tests that need those are skipped. Each
    test opens the store through an engine, as a worker does, so the plugin's
    ``wfe_open_store`` is tested too.
    """

    #: Plugins registered on each test's engine (the store's own, at least).
    plugins: Sequence[Any] = ()
    #: Tasks, workflows and outbox rows survive closing and reopening the store.
    durable: bool = True
    #: Stores opened on one URL at once (by several processes: ``wfe submit``
    #: beside a running ``wfe worker``) share their tasks. False for a store each
    #: opener has to itself (``memory://``): the tests of two openers are skipped.
    shared: bool = True
    #: One opened store takes calls from several event loops in several threads at
    #: once (an engine serving a web app's request threads). False for a store meant
    #: for one thread (``memory://``): that test is skipped.
    threadsafe: bool = True
    #: Seconds a single test may take.
    timeout: float = 60.0

    @pytest.fixture
    def store_url(self) -> str:
        pytest.fail(f"{type(self).__name__} must define a store_url fixture (a fresh store)")

    def make_engine(self, store_url: str) -> ECSWorkflowEngine:
        """The engine each test opens the store through."""
        name = type(self).__name__
        if not isinstance(self.plugins, (list, tuple)):
            pytest.fail(
                f"{name}.plugins is {type(self.plugins).__name__} {self.plugins!r}: give a "
                "list of the plugins that open the store, plugins = [my_plugin]"
            )
        engine = ECSWorkflowEngine(store=store_url, plugins=list(self.plugins), load_plugins=False)
        if not any(
            _opens(impl, store_url)
            for impl in engine.plugin_manager.hook.wfe_open_store.get_hookimpls()
        ):
            pytest.fail(
                f"no plugin opens {store_url!r}, the store_url of {name}: set plugins = "
                f"[the plugin whose wfe_open_store opens it] on the class (plugins is "
                f"{list(self.plugins)!r})"
            )
        return engine

    def _skip_unless_shared(self) -> None:
        if not self.shared:
            pytest.skip("two openers of one URL do not share the store (shared = False)")

    def _on_store(self, store_url: str, scenario: Callable[[Any], Awaitable[Any]]) -> Any:
        """``scenario(store)``'s result, on a store opened for it in an event loop of
        its own (and closed after)."""

        async def run() -> Any:
            engine = self.make_engine(store_url)
            try:
                return await scenario(await engine.get_store())
            finally:
                await engine.aclose()

        return asyncio.run(asyncio.wait_for(run(), self.timeout))

    def _two_openers(
        self, store_url: str, work: Callable[[Any, int, _Ready], Awaitable[Any]]
    ) -> list[Any]:
        """``work(store, n, ready)`` for n = 0 and 1 at once, each on a store of its
        own opened on ``store_url``, in a thread and event loop of its own (as two
        processes would run)."""

        async def run(n: int, ready: _Ready) -> Any:
            engine = self.make_engine(store_url)
            try:
                return await work(await engine.get_store(), n, ready)
            finally:
                await engine.aclose()

        return _results(_start_in_threads(2, self.timeout, run))

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

    @_with_store
    async def test_the_artifacts_folder_is_an_absolute_path(self, store: Any) -> None:
        """artifacts_dir is set once the store is open, to an absolute path: the engine
        keeps each task's artifact files under it, and every process (a worker, ``wfe
        show``, started in other folders) must find them there."""
        folder = getattr(store, "artifacts_dir", None)
        assert isinstance(folder, Path), (
            f"{type(store).__name__}.artifacts_dir is {folder!r}, not a pathlib.Path: set "
            "it, in __init__ or by the end of open(), to the folder under which the engine "
            "keeps each task's artifact files"
        )
        assert folder.is_absolute(), (
            f"{type(store).__name__}.artifacts_dir is {str(folder)!r}, a relative path: a "
            "process started in another folder would look for the files elsewhere; make "
            "it absolute (Path(...).absolute()), derived from the URL"
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
        assert (await store.insert_task(task))[1]
        got = await store.get_task("task-1")
        assert got is not None
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
        assert await store.update_task(task)
        got = await store.get_task("task-1")
        assert got is not None
        wrong = _differences(got, written, besides=["updated_at", "version"])
        assert not wrong, (
            "get_task after update_task gave back a task that differs in "
            + "; ".join(wrong)
            + ". "
            + _KEEP_EVERY_FIELD
        )
        assert got.version == written.version + 1
        assert got.created_at == inserted.created_at

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

    # -- claiming and leases ---------------------------------------------------------

    @_with_store
    async def test_claim_leases_runnable_tasks_oldest_first(self, store: Any) -> None:
        """Claimed tasks are IN_PROGRESS, at a new version, and no one else's."""
        for n in range(3):
            await store.insert_task(_task(n))
        inserted = await store.get_task("task-0")
        inserted_at = inserted.version
        first = await store.claim("worker-a", 2, 30)
        ids = [t.id for t in first]
        assert len(first) <= 2, (
            f"claim('worker-a', limit=2, ...) returned {len(first)} tasks {ids}: a claim "
            "leases at most `limit` tasks (a worker asks for as many as it has room for)"
        )
        assert ids == ["task-0", "task-1"], (
            f"claim('worker-a', limit=2, ...) returned {ids} of task-0, task-1 and task-2, "
            "inserted in that order: the tasks ready longest come first"
        )
        assert all(t.status is TaskStatus.IN_PROGRESS for t in first), (
            "a claim returns a PENDING task IN_PROGRESS, and stores it so"
        )
        assert first[0].version > inserted_at, (
            f"claim returned task-0 at version {first[0].version}, the version it was "
            f"inserted at ({inserted_at}): {_CLAIM_BUMPS}"
        )
        # A write by whoever read the task before the claim is refused.
        inserted.output = "too late"
        wrote = await store.update_task(inserted)
        assert wrote is False, (
            f"update_task returned {wrote!r} for a task read before a claim: the claim "
            "bumps the version, and " + _STALE_WRITE
        )
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
    async def test_claim_takes_the_task_ready_longest_whatever_its_id(self, store: Any) -> None:
        """claim takes the tasks that have been runnable longest: a waiting task since
        its deadline, a pending one since its run_after, or without one since it was
        inserted or last written back pending (a released task queues behind those
        already waiting); never by id, which need not sort by age."""
        now = datetime.now(timezone.utc)
        await store.insert_task(_task(9))
        [waiting] = await store.claim("w", 1, 30)
        waiting.status = TaskStatus.WAITING_HUMAN
        waiting.deadline = now - timedelta(hours=2)
        assert await store.update_task(waiting)
        await store.insert_task(_task(10, run_after=now - timedelta(hours=1)))
        await store.insert_task(Task(id="b", workflow_name="w", classification="p"))
        await store.insert_task(Task(id="a", workflow_name="w", classification="p"))
        # One at a time: the order within one claim's list is not part of the rule.
        claimed = [(await store.claim("w", 1, 30))[0] for _ in range(3)]
        released = claimed[-1]  # b, given back: now behind a
        released.status = TaskStatus.PENDING
        assert await store.update_task(released)
        claimed += [(await store.claim("w", 1, 30))[0] for _ in range(2)]
        order = [t.id for t in claimed]
        assert order == ["task-9", "task-10", "b", "a", "b"], (
            f"claim took the tasks in the order {order}, not by how long each has been "
            "runnable: task-9 since its deadline 2 h ago, task-10 since its run_after 1 h "
            "ago, then b and a as they were inserted, then b again, written back pending "
            "after a was inserted. Order claims by that time (ties in insertion order), "
            "not by id or created_at"
        )

    @_with_store
    async def test_claim_takes_the_highest_priority_first(self, store: Any) -> None:
        """Of the ready tasks, claim takes those of the highest priority first, and
        those of one priority by how long each has been ready. A task of a higher
        priority that is not ready yet (delayed, or leased) waits its turn; a priority
        written by update_task counts from that write on, whichever workflows the
        claim is for."""
        now = datetime.now(timezone.utc)
        await store.insert_task(_task(1))
        await store.insert_task(_task(2, priority=5))
        await store.insert_task(_task(3, priority=-3))
        await store.insert_task(_task(4, priority=5))
        await store.insert_task(_task(5, priority=9, run_after=now + timedelta(hours=1)))
        await store.insert_task(_task(6, priority=1000, workflow_name="other"))
        await store.insert_task(_task(7))
        order = [t.id for t in await store.claim("w", 3, 30, workflows=["w"])]
        order += [(await store.claim("w", 1, 30, workflows=["w"]))[0].id for _ in range(2)]
        # The order within one claim's list is not part of the rule.
        assert sorted(order[:3]) == ["task-1", "task-2", "task-4"], (
            f"claim took {order[:3]} first, not the two tasks of priority 5 and the "
            "oldest of priority 0"
        )
        assert order[3:] == ["task-7", "task-3"], (
            f"after the priority 5 tasks and task-1, claim took {order[3:]}: expected "
            "task-7 (priority 0, ready after task-1) then task-3 (priority -3); the "
            "delayed priority 9 task-5 must not be taken before its run_after"
        )
        [task] = [t for t in await store.claim("w", 10, 30) if t.id == "task-6"]
        # Given back with a new priority: it goes ahead of those of the old one.
        task.status, task.priority = TaskStatus.PENDING, -1000
        assert await store.update_task(task)
        await store.insert_task(_task(8, priority=-999, workflow_name="other"))
        assert [t.id for t in await store.claim("w", 1, 30)] == ["task-8"], (
            "a task written back with priority -1000 was claimed before one inserted "
            "later with -999: claim must order by the priority of the task's last write"
        )
        assert (await store.get_task("task-6")).priority == -1000

    @_with_store
    async def test_a_run_after_written_by_update_delays_the_task(self, store: Any) -> None:
        """A task written back PENDING with run_after in the future (a retry's backoff)
        is not claimed until then, and counts as delayed; one whose run_after is moved
        into the past is claimed at once."""
        await store.insert_task(_task(1))
        [task] = await store.claim("w", 1, 30)
        later = datetime.now(timezone.utc) + timedelta(hours=1)
        task.status, task.run_after = TaskStatus.PENDING, later
        assert await store.update_task(task)
        claimed = await store.claim("w", 5, 30)
        assert claimed == [], (
            "a task written back PENDING by update_task with run_after an hour from now "
            "was claimed at once: claim must go by the run_after of the task's last "
            "write, not only of its insert (a retry's backoff is set by update_task)"
        )
        count, first = await store.count_delayed()
        assert count == 1, "count_delayed does not count a task delayed by update_task"
        assert first is not None and abs((first - later).total_seconds()) < 1
        assert await store.has_active_tasks(), (
            "has_active_tasks() is False while a PENDING task waits for its run_after: a "
            "delayed task is still active, or run_until_idle returns before running it"
        )
        task.run_after = datetime.now(timezone.utc) - timedelta(seconds=1)
        assert await store.update_task(task)
        assert [t.id for t in await store.claim("w", 5, 30)] == ["task-1"], (
            "a task whose run_after update_task moved into the past is not claimed"
        )

    @_with_store
    async def test_a_delayed_task_is_still_active(self, store: Any) -> None:
        """has_active_tasks counts a PENDING task whose run_after is in the future:
        run_until_idle and ``wfe worker --until-idle`` wait for it."""
        later = datetime.now(timezone.utc) + timedelta(hours=1)
        await store.insert_task(_task(1, run_after=later))
        assert await store.has_active_tasks(), (
            "has_active_tasks() is False while a PENDING task waits for its run_after: "
            "a delayed task is still active, or run_until_idle returns before running it"
        )
        assert await store.has_active_tasks(workflows=["w"]), (
            "has_active_tasks(workflows=['w']) is False while a delayed task of w waits"
        )
        assert not await store.has_active_tasks(workflows=["other"]), (
            "has_active_tasks(workflows=['other']) is True though only a task of "
            "workflow 'w' is stored: with workflows=, count only tasks of those workflows"
        )

    @_with_store
    async def test_an_owner_renews_its_expired_lease_nobody_took(self, store: Any) -> None:
        """renew extends a lease the owner still holds even after it expired, as long
        as nobody has claimed the task since; the renewed task is nobody else's."""
        await store.insert_task(_task(1))
        assert len(await store.claim("slow-worker", 1, 0)) == 1  # expired at once
        assert await store.renew("slow-worker", ["task-1"], 30) == {"task-1"}, (
            "renew refused a lease that had expired although nobody had taken the task "
            "over: the owner still holds it until another claim takes the task (or a "
            "write releases it), and refusing makes a slow worker give up its phase"
        )
        taken = [t.id for t in await store.claim("other", 1, 30)]
        assert taken == [], (
            f"claim took {taken} right after renew('slow-worker', ['task-1'], 30) returned "
            "it: renew extends each lease it returns to lease_seconds from now"
        )

    @_with_store
    async def test_writes_at_one_version_at_once_let_one_win(self, store: Any) -> None:
        """update_task calls made at once (asyncio.gather) over one read version: for
        each task exactly one succeeds, as a worker finishing a phase and a cancel do;
        the version check and the write are one atomic step."""
        ids = [f"task-{n}" for n in range(10)]
        await store.insert_tasks([_task(n) for n in range(10)])
        claimed = {t.id: t.version for t in await store.claim("w", 10, 30)}
        writes = []
        for task_id in ids:
            finish, cancel = await store.get_task(task_id), await store.get_task(task_id)
            finish.status, finish.output = TaskStatus.COMPLETED, "done"
            cancel.status = TaskStatus.CANCELLED
            writes += [finish, cancel]
        results = await asyncio.gather(*(store.update_task(t) for t in writes))
        both = [i for n, i in enumerate(ids) if results[2 * n] and results[2 * n + 1]]
        assert not both, (
            f"update_task returned True for both of two writes at one version of {both}: "
            "one was lost (a cancel, or a result) while both callers believe they won. "
            "Compare the version and write in one atomic step (one transaction, or under "
            "one lock held across both), never check, then await, then write"
        )
        assert all(results[2 * n] or results[2 * n + 1] for n in range(len(ids))), (
            "neither of two writes at one version succeeded"
        )
        for n, task_id in enumerate(ids):
            stored = await store.get_task(task_id)
            winner = TaskStatus.COMPLETED if results[2 * n] else TaskStatus.CANCELLED
            assert (stored.status, stored.version) == (winner, claimed[task_id] + 1)

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
        renewed = await store.renew("w", ["task-1"], 30)
        assert renewed == set(), (
            f"renew gave {renewed} for a task written back PENDING without keep_lease: "
            "such a write releases the lease, and renew returns only the ids whose "
            "lease the owner still holds"
        )
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
        stored = await store.get_task("task-1")
        assert [e for e in stored.history if e["event"] == "taken_over"] == [event], (
            "claim added the taken_over event to the task it returned but did not store "
            "it: the event must be written with the claim itself, since a worker killed "
            "before its first write never stores it, and the engine fails a task whose "
            "workers keep dying by counting the stored events (max_takeovers)"
        )
        assert stored.version == taken.version, "claim returned another version than it stored"
        # The old owner can neither renew nor write any more.
        renewed = await store.renew("dead-worker", ["task-1"], 30)
        assert renewed == set(), (
            f"renew gave {renewed} to the worker whose expired lease another claim took: "
            "renew returns only the ids whose lease the owner still holds"
        )
        task.output = "late"
        wrote = await store.update_task(task)
        assert wrote is False, (
            f"update_task returned {wrote!r} for the task as its expired lease's owner "
            "had it, after another worker claimed it: the claim bumps the version, and "
            + _STALE_WRITE
        )

    @_with_store
    async def test_leases_of_dead_owners_are_released_at_once(self, store: Any) -> None:
        """release_dead_leases makes a dead process's tasks claimable now."""
        for n in range(2):
            await store.insert_task(_task(n))
        assert len(await store.claim("dead", 2, 3600)) == 2
        released = await store.release_dead_leases(["dead"])
        assert released == 2, (
            f"release_dead_leases(['dead']) returned {released!r} after 'dead' claimed two "
            "tasks: it frees the leases of those owners and returns how many it freed"
        )
        taken = await store.claim("alive", 5, 30)
        assert sorted(t.id for t in taken) == ["task-0", "task-1"]
        assert all(
            [e["previous_worker"] for e in t.history if e["event"] == "taken_over"] == ["dead"]
            for t in taken
        )
        for task in taken:
            stored = await store.get_task(task.id)
            assert [e["worker"] for e in stored.history if e["event"] == "taken_over"] == [
                "alive"
            ], "the taken_over event the claim returned is not stored with the claim"
        assert await store.lease_owners() == ["alive"]

    @_with_store
    async def test_phase_slots_go_up_to_the_limit_and_in_order(self, store: Any) -> None:
        """take_phase_slot gives at most ``limit`` slots of a phase, and never one
        to a task while a task of a higher priority waits for one."""
        if not store.shares_phase_slots:
            pytest.skip("the store keeps no phase slots (shares_phase_slots = False)")
        for n in range(4):
            await store.insert_task(_task(n))
        await store.claim("w1", 4, 30)
        one, two, low, high = (f"task-{n}" for n in range(4))

        async def take(task_id: str, priority: int = 0, phase: str = "p") -> bool:
            return bool(await store.take_phase_slot(task_id, "w1", "w", phase, 1, priority))

        assert await take(one)
        assert await take(one), "asking again for a slot held must keep it"
        assert not await take(two), "a second slot was given with limit=1"
        assert not await take(low, -5)
        assert not await take(high, 5)
        assert await take(low, -5, phase="other"), "another phase must have slots of its own"
        await store.release_phase_slot(low)
        await store.release_phase_slot(one)
        assert not await take(low, -5), "a lower priority overtook the tasks in line"
        assert not await take(two), "a task overtook a higher priority in line"
        assert await take(high, 5), "the freed slot did not go to the highest priority"
        await store.release_phase_slot(high)
        assert not await take(low, -5)
        assert await take(two), "the freed slot did not go to the waiting task"
        await store.release_phase_slot(two)
        assert await take(low, -5)
        await store.release_phase_slot("never-asked")  # changes nothing

    @_with_two_stores
    async def test_a_phase_slot_whose_lease_is_gone_is_free(self, first: Any, second: Any) -> None:
        """A slot, or a place in line, counts only while its task's lease is held by
        the owner that asked: a dead worker's frees without a release."""
        if not first.shares_phase_slots:
            pytest.skip("the store keeps no phase slots (shares_phase_slots = False)")
        for n in range(3):
            await first.insert_task(_task(n))
        await first.claim("dead-worker", 2, 3600)
        assert await first.take_phase_slot("task-0", "dead-worker", "w", "p", 1, 0)
        assert not await first.take_phase_slot("task-1", "dead-worker", "w", "p", 1, 0)
        [mine] = await second.claim("live-worker", 1, 30)
        assert not await second.take_phase_slot(mine.id, "live-worker", "w", "p", 1, 0)
        await second.release_dead_leases(["dead-worker"])
        gone = await second.take_phase_slot("task-1", "dead-worker", "w", "p", 1, 0)
        assert gone is None, (
            f"take_phase_slot returned {gone!r} for a task whose lease its owner no longer "
            "holds: None, so that the worker stops waiting for a slot it can never use"
        )
        assert await second.take_phase_slot(mine.id, "live-worker", "w", "p", 1, 0), (
            "a slot held by a task whose lease is gone (its worker died) still counted"
        )
        taken = await second.claim("live-worker", 2, 30)
        assert sorted(t.id for t in taken) == ["task-0", "task-1"]
        assert not await second.take_phase_slot("task-0", "live-worker", "w", "p", 1, 0), (
            "a task taken over kept the slot its dead worker held"
        )

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
        before = claimed["task-3"]
        assert due.version > before.version, (
            "claiming a waiting task did not bump its version: every claim does, so that "
            "a write by whoever read the task before (a person's answer) cannot cross "
            "the claimer's (its timeout)"
        )
        wrote = await store.update_task(before)
        assert wrote is False, (
            f"update_task returned {wrote!r} for a waiting task read before its claim: "
            + _STALE_WRITE
        )
        assert await store.claim("other", 5, 30) == [], (
            "a waiting task claimed after its deadline was claimed again at once: it is "
            "leased to its claimer like any claimed task, until the lease expires or a "
            "write (the engine's timeout) releases it"
        )

    @_with_store
    async def test_workers_of_some_workflows_see_only_those(self, store: Any) -> None:
        """claim and has_active_tasks with workflows= look at those workflows only."""
        await store.insert_task(_task(1, workflow_name="left"))
        await store.insert_task(_task(2, workflow_name="right"))
        assert await store.has_active_tasks(workflows=["left"])
        claimed = await store.claim("w", 5, 30, workflows=["left"])
        assert [t.id for t in claimed] == ["task-1"], (
            f"claim(workflows=['left']) took {[t.id for t in claimed]}, not ['task-1']: "
            "with workflows=, claim only tasks of those workflows (other workers run the rest)"
        )
        [left] = claimed
        left.status = TaskStatus.COMPLETED
        assert await store.update_task(left)
        assert not await store.has_active_tasks(workflows=["left"]), (
            "has_active_tasks(workflows=['left']) is True though left's only task is "
            "COMPLETED (task-2, of workflow 'right', is pending): with workflows=, count "
            "only tasks of those workflows"
        )
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
        assert newest_first == [f"task-{n}" for n in (4, 3, 2, 1, 0)], (
            f"list_tasks() gave {newest_first} for tasks inserted task-0 to task-4: "
            "without oldest_first, the last inserted comes first"
        )
        paged = [t.id for t in await store.list_tasks(oldest_first=True, limit=2, offset=1)]
        assert paged == ["task-1", "task-2"], (
            f"list_tasks(oldest_first=True, limit=2, offset=1) gave {paged} for tasks "
            "inserted task-0 to task-4: oldest first, skip `offset` tasks, then give at "
            "most `limit`"
        )
        pending = await store.list_tasks(TaskStatus.PENDING, "a")
        assert [t.id for t in pending] == ["task-2", "task-1"]
        either = await store.list_tasks([TaskStatus.PENDING, TaskStatus.COMPLETED], "a")
        assert len(either) == 3
        counted = await store.count_tasks()
        assert counted == {TaskStatus.PENDING: 4, TaskStatus.COMPLETED: 1}, (
            f"count_tasks() gave {counted}, not 4 pending and 1 completed"
        )
        counted = await store.count_tasks("b")
        assert counted == {TaskStatus.PENDING: 2}, (
            f"count_tasks('b') gave {counted}, not the 2 pending tasks of workflow b: "
            "count only the named workflow's tasks (statuses with none left out)"
        )
        assert await store.count_by_phase("a") == {"p": 2}  # finished tasks are left out
        assert await store.count_all_by_workflow() == {
            "a": {TaskStatus.PENDING: 2, TaskStatus.COMPLETED: 1},
            "b": {TaskStatus.PENDING: 2},
        }
        assert await store.count_all_by_phase() == {"a": {"p": 2}, "b": {"p": 2}}

    @_with_store
    async def test_lists_and_counts_by_phase(self, store: Any) -> None:
        """list_tasks(phase=...) lists only the tasks at that phase (classification),
        with the other filters and in the same order; count_tasks(phase=...) counts
        them. A task not classified yet is at no phase. Optional: skipped for a
        store whose list_tasks and count_tasks take no phase."""
        _skip_without_phase_listing(store)
        for name in ("a", "b"):
            await store.save_workflow(WorkflowSpec(name, [Phase("p"), Phase("q")]))
        places = [("a", "p"), ("a", "q"), ("b", "p"), ("a", "p"), ("a", None), ("b", "q")]
        for n, (workflow, phase) in enumerate(places):
            await store.insert_task(_task(n, workflow_name=workflow, classification=phase))
        [task] = await store.claim("w", 1, 30)  # task-0, the oldest
        task.status = TaskStatus.COMPLETED
        assert await store.update_task(task)

        at_p = [t.id for t in await store.list_tasks(phase="p")]
        assert at_p == ["task-3", "task-2", "task-0"], (
            f"list_tasks(phase='p') gave {at_p}: only the tasks whose classification is "
            "'p', of every workflow, newest first"
        )
        listed = [t.id for t in await store.list_tasks(workflow_name="a", phase="p")]
        assert listed == ["task-3", "task-0"], f"list_tasks(workflow_name='a', phase='p'): {listed}"
        listed = [t.id for t in await store.list_tasks(TaskStatus.PENDING, "a", phase="p")]
        assert listed == ["task-3"], f"list_tasks(PENDING, 'a', phase='p') gave {listed}"
        listed = [
            t.id for t in await store.list_tasks(phase="p", oldest_first=True, limit=1, offset=1)
        ]
        assert listed == ["task-2"], f"list_tasks(phase='p', oldest_first, 1, 1) gave {listed}"
        summaries = [t.id for t in await store.list_task_summaries(workflow_name="a", phase="q")]
        assert summaries == ["task-1"], f"list_task_summaries(phase='q') gave {summaries}"
        assert await store.list_tasks(phase="r") == []
        counted = await store.count_tasks(phase="p")
        assert counted == {TaskStatus.PENDING: 2, TaskStatus.COMPLETED: 1}, (
            f"count_tasks(phase='p') gave {counted}: count the tasks at phase 'p' by status"
        )
        counted = await store.count_tasks("a", "p")
        assert counted == {TaskStatus.PENDING: 1, TaskStatus.COMPLETED: 1}, (
            f"count_tasks('a', 'p') gave {counted}: the tasks of workflow 'a' at phase 'p'"
        )
        assert await store.count_tasks("b", phase="r") == {}

    @_with_store
    async def test_notes_the_phase_of_a_task_claimed_without_one(self, store: Any) -> None:
        """note_phases stores the phase of the tasks in progress that the owner holds
        and that were stored without one, and changes nothing else of them, so that a
        running first phase is found by phase. Optional: skipped for a store that
        keeps the default (which does nothing)."""
        if type(store).note_phases is Store.note_phases:
            pytest.skip("the store keeps Store.note_phases' default: tasks show no phase")
        for n, phase in enumerate([None, None, "q"]):
            await store.insert_task(_task(n, classification=phase))
        claimed = {t.id: t for t in await store.claim("w", 3, 30)}
        await store.insert_task(_task(3, classification=None))  # pending, not held

        await store.note_phases("w", {"task-0": "p", "task-2": "p", "task-3": "p"})
        await store.note_phases("other", {"task-1": "p"})

        phases = {t.id: t.classification for t in await store.list_tasks()}
        assert phases == {"task-0": "p", "task-1": None, "task-2": "q", "task-3": None}, (
            f"after note_phases the tasks are at {phases}: only a task in progress that "
            "the owner holds and that has no phase takes the one noted"
        )
        if _lists_by_phase(store):
            assert [t.id for t in await store.list_tasks(phase="p")] == ["task-0"]
        assert await store.count_by_phase("w") == {"p": 1, "q": 1}
        stored = await store.get_task("task-0")
        assert stored is not None and stored.classification == "p"
        assert stored.version == claimed["task-0"].version, (
            "note_phases changed the task's version: the phase's own write must still apply"
        )
        assert stored.history == claimed["task-0"].history
        ended = claimed["task-0"]
        ended.classification = "q"
        ended.status = TaskStatus.PENDING
        assert await store.update_task(ended), "the phase's write after note_phases was refused"
        stored = await store.get_task("task-0")
        assert stored is not None and stored.classification == "q"

    @_with_store
    async def test_finds_the_ids_that_start_with_a_prefix(self, store: Any) -> None:
        """task_ids_starting_with gives the ids that start with a prefix, in code point
        order, at most ``limit`` of them."""
        for task_id in ["abc2", "ab", "abc\u00e9", "x-abc", "abc1", "abd", "abcZ"]:
            await store.insert_task(Task(id=task_id, workflow_name="w", classification="p"))
        found = await store.task_ids_starting_with("abc")
        assert found == ["abc1", "abc2", "abcZ", "abc\u00e9"], (
            f"task_ids_starting_with('abc') gave {found}: the ids that start with 'abc' "
            "(not 'x-abc', not 'ab'), sorted by code point"
        )
        assert await store.task_ids_starting_with("abc", limit=2) == ["abc1", "abc2"]
        assert await store.task_ids_starting_with("abc1") == ["abc1"]
        assert await store.task_ids_starting_with("abe") == []
        assert len(await store.task_ids_starting_with("", limit=5)) == 5

    @_with_store
    async def test_lists_go_by_insertion_whatever_the_ids(self, store: Any) -> None:
        """list_tasks orders by creation (insertion), never by id: ids need not sort by
        age (task-9 before task-10, or random ones)."""
        ids = ["task-9", "task-10", "b", "a"]
        for task_id in ids:
            await store.insert_task(Task(id=task_id, workflow_name="w", classification="p"))
        oldest_first = [t.id for t in await store.list_tasks(oldest_first=True)]
        assert oldest_first == ids, (
            f"list_tasks(oldest_first=True) gave {oldest_first} for tasks inserted as {ids}: "
            "order by when tasks were inserted, not by id"
        )
        assert [t.id for t in await store.list_tasks()] == ids[::-1]
        assert [t.id for t in await store.list_tasks(limit=2, offset=1)] == ["b", "task-10"]

    @_with_store
    async def test_lists_can_put_the_highest_priority_first(self, store: Any) -> None:
        """list_tasks(priority_first=True) orders by priority, highest first, and the
        tasks of one priority by insertion, as oldest_first says; then it pages."""
        for n, priority in enumerate([0, 5, 0, -2, 5]):
            await store.insert_task(_task(n, priority=priority))
        listed = [t.id for t in await store.list_tasks(priority_first=True, oldest_first=True)]
        assert listed == ["task-1", "task-4", "task-0", "task-2", "task-3"], (
            f"list_tasks(priority_first=True, oldest_first=True) gave {listed}: the highest "
            "priority first, each priority's tasks in the order they were inserted"
        )
        newest = [t.id for t in await store.list_tasks(priority_first=True, limit=3, offset=1)]
        assert newest == ["task-1", "task-2", "task-0"]
        assert [t.id for t in await store.list_tasks()] == [f"task-{n}" for n in (4, 3, 2, 1, 0)]

    @_with_store
    async def test_summaries_list_the_same_tasks_without_their_big_fields(self, store: Any) -> None:
        """list_task_summaries lists what list_tasks lists, in the same order, each
        task as wfcore.stores.base.summarized makes it from the whole one."""
        outputs: list[Any] = [None, True, 7, 2.5, "short", "x" * 3000, {"a": [1]}, ["y" * 2000]]
        for n, output in enumerate(outputs):
            task = _task(n, context={"notes": "z" * 5000}, outputs={"p": output})
            task.output = output
            task.error = None if n % 2 else "E" * 3000
            task.history = [
                {"at": "2026-01-01T00:00:00+00:00", "event": f"e{i}"} for i in range(30)
            ]
            await store.insert_task(task)
        listings: list[dict[str, Any]] = [{}, {"oldest_first": True, "limit": 3, "offset": 2}]
        if _lists_by_phase(store):
            listings.append({"phase": "p"})
        for args in listings:
            whole = await store.list_tasks(**args)
            summaries = await store.list_task_summaries(**args)
            assert [t.id for t in summaries] == [t.id for t in whole], (
                f"list_task_summaries({args}) listed other tasks than list_tasks({args})"
            )
            for task, summary in zip(whole, summaries, strict=True):
                expected = summarized(task)
                for field in attrs.fields(Task):
                    got, want = getattr(summary, field.name), getattr(expected, field.name)
                    assert got == want and type(got) is type(want), (
                        f"list_task_summaries: {task.id}.{field.name} is {got!r:.80}, not "
                        f"{want!r:.80} as wfcore.stores.base.summarized makes it"
                    )

    # -- workflows -------------------------------------------------------------------

    @_with_store
    async def test_workflows_are_stored_and_the_first_of_a_name_wins(self, store: Any) -> None:
        """save_workflow replaces; add_workflow keeps the one stored first. Every
        field of the workflow and its phases comes back as saved."""
        # The engine that opened the store saved the workflows its plugins contribute
        # (a store plugin may bring workflows too): they are not this test's.
        contributed = {spec.name for spec in await store.load_workflows()}
        first = WorkflowSpec("flow", [Phase("a"), Phase("b", assigned_to="human")])
        await store.save_workflow(first)
        assert await store.add_workflow(WorkflowSpec("flow", [Phase("other")])) == first
        replaced = WorkflowSpec(
            "flow",
            [
                Phase(
                    "c",
                    next_classifications=["d", "e"],
                    assigned_to="human",
                    instructions="Check it",
                    input_schema={"type": "object", "required": ["ok"]},
                    timeout=30,
                    on_timeout={"goto": "e"},
                ),
                Phase(
                    "d",
                    command=["echo", "hi"],
                    max_attempts=3,
                    max_concurrency=2,
                    permanent_exit_codes=[2, 65],
                ),
                Phase("e", assigned_to="agentic", timeout=5.5, on_timeout="fail"),
            ],
            description="A flow with every phase field set",
            start_phases=["c", "d"],
        )
        await store.save_workflow(replaced)
        await store.save_workflow(WorkflowSpec("another", [Phase("x")]))
        stored = {
            spec.name: spec for spec in await store.load_workflows() if spec.name not in contributed
        }
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
        left = [t.id for t in await store.outbox_pending("results")]
        assert left == [], (
            f"outbox_pending gave {left} after outbox_ack('results', ['task-1'], "
            f"versions=[{task.version}]), the version it gave: an acknowledged finish "
            "leaves the consumer's outbox, or its result is published again and again"
        )
        task.status = TaskStatus.PENDING  # retried...
        assert await store.update_task(task)
        [task] = await store.claim("w", 1, 30)
        task.status = TaskStatus.FAILED  # ...and finished again
        assert await store.update_task(task)
        [again] = await store.outbox_pending("results")
        assert (again.id, again.status) == ("task-1", TaskStatus.FAILED)
        # An acknowledgement of the earlier finish does not cover the later one.
        await store.outbox_ack("results", ["task-1"], versions=[task.version - 3])
        left = [t.id for t in await store.outbox_pending("results")]
        assert left == ["task-1"], (
            f"outbox_pending gave {left} after task-1 finished again and an outbox_ack "
            "at the version of its earlier finish: that acknowledgement covers only the "
            "finish it names (compare `versions`), or the later result is never published"
        )

    @_with_store
    async def test_the_outbox_gives_tasks_finished_now_in_finish_order(self, store: Any) -> None:
        """outbox_pending lists, in the order they finished, the tasks whose status is
        finished now: one retried since waits, without filling a page, until it finishes
        again, then comes back once, as stored then."""
        await store.outbox_register("results")
        await store.insert_tasks([Task(id=i, workflow_name="w") for i in ("t9", "t10", "b")])
        running = {t.id: t for t in await store.claim("w", 3, 30)}
        for task_id, status in [
            ("b", TaskStatus.COMPLETED),
            ("t9", TaskStatus.FAILED),
            ("t10", TaskStatus.CANCELLED),
        ]:
            running[task_id].status = status
            assert await store.update_task(running[task_id])
        order = [t.id for t in await store.outbox_pending("results")]
        assert order == ["b", "t9", "t10"], (
            f"outbox_pending gave {order} for tasks that finished as b, t9, t10: give them "
            "in the order they finished"
        )
        page = [t.id for t in await store.outbox_pending("results", limit=2)]
        assert page == ["b", "t9"], (
            f"outbox_pending('results', limit=2) gave {page}: give at most `limit` tasks, "
            "the first to finish"
        )
        for task_id in ("b", "t9"):  # retried before their results went out
            retried = await store.get_task(task_id)
            retried.status = TaskStatus.PENDING
            assert await store.update_task(retried)
        page = [(t.id, t.status.value) for t in await store.outbox_pending("results", limit=1)]
        assert page == [("t10", "cancelled")], (
            f"outbox_pending(limit=1) gave {page}: leave out the tasks that are not "
            "finished now (retried since they finished), or they fill the page and a "
            "consumer that publishes only finished tasks never reaches t10"
        )
        again = {t.id: t for t in await store.claim("w", 2, 30)}["b"]
        again.status = TaskStatus.COMPLETED
        assert await store.update_task(again)
        pending = await store.outbox_pending("results")
        assert sorted(t.id for t in pending) == ["b", "t10"], (
            f"after b, retried, finished again, outbox_pending gave {[t.id for t in pending]}: "
            "a task finished twice before it was acknowledged comes back once, for its "
            "latest finish"
        )
        [b] = [t for t in pending if t.id == "b"]
        assert (b.status, b.version) == (TaskStatus.COMPLETED, again.version)

    @_with_store
    async def test_a_finish_is_recorded_once(self, store: Any) -> None:
        """Only a write that makes a task finished adds it to the outbox: writing a task
        that was finished already (an artifact added to a completed task) adds nothing,
        and an acknowledgement of its finish covers such later writes."""
        await store.outbox_register("results")
        await store.insert_tasks([_task(1), _task(2)])
        running = {t.id: t for t in await store.claim("w", 2, 30)}
        for task in running.values():
            task.status, task.output = TaskStatus.COMPLETED, "done"
            assert await store.update_task(task)
        published = {t.id: t.version for t in await store.outbox_pending("results")}
        assert sorted(published) == ["task-1", "task-2"]
        await store.outbox_ack("results", ["task-1"], versions=[published["task-1"]])
        for task in running.values():  # an artifact added to each, still COMPLETED
            task.artifacts = [
                Artifact(name="note.txt", size=1, sha256="0" * 64, media_type="text/plain")
            ]
            assert await store.update_task(task)
        pending = [t.id for t in await store.outbox_pending("results")]
        assert pending == ["task-2"], (
            f"outbox_pending gave {pending} after a write of two tasks that were COMPLETED "
            "already (task-1's finish acknowledged, task-2's not): add outbox rows only "
            "when a task newly reaches a finished status, or its result is published twice"
        )
        await store.outbox_ack("results", ["task-2"], versions=[published["task-2"]])
        assert await store.outbox_pending("results") == [], (
            "acknowledging task-2 at the version outbox_pending gave did not remove it: a "
            "write after its finish that did not finish it again must not change which "
            "finish its outbox row stands for"
        )

    @_with_store
    async def test_purging_keeps_results_not_yet_published(self, store: Any) -> None:
        """delete_finished and count_finished leave out the tasks an outbox consumer has
        not acknowledged yet, and those of other statuses or changed later; with
        ``workflow_name``, those of other workflows; delete_finished deletes at most
        ``limit``."""
        can_delete = type(store).delete_finished is not Store.delete_finished
        can_count = type(store).count_finished is not Store.count_finished
        if not (can_delete or can_count):
            pytest.skip("the store keeps Store's delete_finished and count_finished (no purge)")
        await store.insert_task(_task(0))
        [early] = await store.claim("w", 1, 30)
        early.status = TaskStatus.COMPLETED  # before any consumer registered
        assert await store.update_task(early)
        await store.outbox_register("results")
        await store.insert_tasks([_task(1), _task(2), _task(3)])
        running = {t.id: t for t in await store.claim("w", 3, 30)}
        for task_id, status in [
            ("task-1", TaskStatus.COMPLETED),
            ("task-2", TaskStatus.COMPLETED),
            ("task-3", TaskStatus.FAILED),
        ]:
            running[task_id].status = status
            assert await store.update_task(running[task_id])
        await store.outbox_ack("results", ["task-1"], versions=[running["task-1"].version])
        later, long_ago = time.time() + 60, time.time() - 3600
        completed = [TaskStatus.COMPLETED]
        keep = (
            "a purge keeps each task whose result an outbox consumer has not acknowledged "
            "(task-2: its result would never be published), and those of other statuses "
            "(task-3) or changed after `before`"
        )
        if can_count:
            assert await store.count_finished(long_ago, completed) == 0, keep
            count = await store.count_finished(later, completed)
            assert count == 2, f"count_finished gave {count}, not 2 (task-0, task-1): {keep}"
        if can_delete:
            assert await store.delete_finished(long_ago, completed) == [], keep
            deleted = sorted(await store.delete_finished(later, completed))
            assert deleted == ["task-0", "task-1"], f"delete_finished deleted {deleted}: {keep}"
            assert await store.get_task("task-1") is None, (
                "get_task still finds a task delete_finished deleted"
            )
            assert (await store.get_task("task-2")) is not None
            assert (await store.get_task("task-3")) is not None
            await store.outbox_ack("results", ["task-2"], versions=[running["task-2"].version])
            assert await store.delete_finished(later, completed) == ["task-2"]
        # `wfe purge --workflow` and its batches: only that workflow's, `limit` at a time.
        await store.insert_tasks([_task(4, workflow_name="other"), _task(5), _task(6)])
        finished = {t.id: t for t in await store.claim("w", 3, 30)}
        for task in finished.values():
            task.status = TaskStatus.COMPLETED
            assert await store.update_task(task)
        await store.outbox_ack(
            "results", list(finished), versions=[t.version for t in finished.values()]
        )
        if can_count:
            count = await store.count_finished(later, completed, workflow_name="other")
            assert count == 1, (
                f"count_finished(workflow_name='other') gave {count}, not 1: count only the "
                "tasks of workflow_name when it is given"
            )
        if can_delete:
            deleted = await store.delete_finished(later, completed, workflow_name="other")
            assert deleted == ["task-4"], (
                f"delete_finished(workflow_name='other') deleted {deleted}, not ['task-4']: "
                "delete only the tasks of workflow_name when it is given (`wfe purge "
                "--workflow other` must not delete the other workflows' tasks)"
            )
            deleted = await store.delete_finished(later, completed, limit=1)
            assert len(deleted) == 1, (
                f"delete_finished(limit=1) deleted {deleted}: delete at most `limit` tasks "
                "(a purge goes in batches, so that it never holds the store for long)"
            )
            rest = await store.delete_finished(later, completed)
            assert sorted(deleted + rest) == ["task-5", "task-6"], (
                f"delete_finished deleted {deleted}, then {rest}, not task-5 and task-6"
            )

    # -- several openers, threads and event loops ----------------------------------------

    @_with_two_stores
    async def test_a_second_opener_sees_the_first_ones_writes(
        self, first: Any, second: Any
    ) -> None:
        """Two stores open on one URL at once (``wfe submit`` beside a running ``wfe
        worker``) see each other's inserts, claims, writes, workflows and consumers as
        soon as they are made: reads go to the shared store, not to a copy of it."""
        assert first.artifacts_dir == second.artifacts_dir, (
            f"two stores opened on one URL keep artifacts in different folders "
            f"({first.artifacts_dir}, {second.artifacts_dir}): derive it from the URL"
        )
        await first.save_workflow(WorkflowSpec("flow", [Phase("a")]))
        await first.outbox_register("results")
        await first.insert_task(_task(1, workflow_name="flow"))
        seen = await second.get_task("task-1")
        assert seen is not None, (
            "a task inserted through one store was not found by get_task on a second "
            "store opened on the same URL before the insert: every read must see what "
            "other openers (other processes) wrote by then; a store that reads from a copy "
            "taken at open() never sees the tasks `wfe submit` stores. (For a store two "
            "openers never share, like memory://, set shared = False on the test class.)"
        )
        listed = [t.id for t in await second.list_tasks()]
        assert listed == ["task-1"], f"the second store lists {listed}, not the first one's task"
        assert await second.load_workflow("flow") == WorkflowSpec("flow", [Phase("a")]), (
            "the second store does not load a workflow the first one saved"
        )
        before_claim = await first.get_task("task-1")
        claimed = await second.claim("w", 5, 30)
        assert [t.id for t in claimed] == ["task-1"], (
            "the second store cannot claim a task the first one inserted"
        )
        [task] = claimed
        on_first = await first.get_task("task-1")
        assert (on_first.status, on_first.version) == (TaskStatus.IN_PROGRESS, task.version), (
            "the first store does not see the second one's claim"
        )
        before_claim.output = "late"
        assert await first.update_task(before_claim) is False, (
            "a write through the first store at the version it read before the second "
            "store's claim succeeded: the compare-and-set must hold across openers"
        )
        task.status, task.output = TaskStatus.COMPLETED, "done"
        assert await second.update_task(task)
        done = await first.get_task("task-1")
        assert (done.status, done.output) == (TaskStatus.COMPLETED, "done"), (
            "the first store does not see the second one's write"
        )
        assert [t.id for t in await first.outbox_pending("results")] == ["task-1"], (
            "a task finished through the second store has no outbox row for the consumer "
            "registered through the first: a finishing write records it for every "
            "consumer registered by then, by any opener"
        )

    def test_two_openers_claiming_at_once_never_share_a_task(self, store_url: str) -> None:
        """Two stores opened on one URL (two processes; here two threads, each with an
        event loop and a store of its own) claiming at once never both get one task:
        picking and leasing tasks is one atomic step for everyone sharing the store."""
        self._skip_unless_shared()
        ids = [f"task-{n}" for n in range(60)]
        self._on_store(store_url, lambda store: store.insert_tasks([_task(n) for n in range(60)]))

        async def claim_all(store: Any, n: int, ready: _Ready) -> list[str]:
            await ready()
            got: list[str] = []
            while batch := await store.claim(f"worker-{n}", 2, 30):
                got += [t.id for t in batch]
            return got

        first, second = self._two_openers(store_url, claim_all)
        twice = sorted(set(first) & set(second), key=ids.index)
        assert not twice, (
            f"{len(twice)} tasks were claimed by both stores at once ({', '.join(twice[:5])}"
            f"{', ...' if len(twice) > 5 else ''}): claim must choose and lease its tasks in "
            "one atomic step that holds across processes (a transaction, or a lock shared "
            "by every opener of the URL, such as flock on a file; a lock of one store "
            "object does not reach another)"
        )
        assert sorted(first + second, key=ids.index) == ids, (
            "claims at once returned a task twice to one store, or left tasks unclaimed"
        )

    def test_two_openers_writing_at_one_version_let_one_win(self, store_url: str) -> None:
        """Two stores opened on one URL (two processes; here two threads) write the
        same tasks at once, each at the version it read: for each task exactly one
        write succeeds, the compare-and-set holding across processes."""
        self._skip_unless_shared()
        ids = [f"task-{n}" for n in range(20)]

        async def prepare(store: Any) -> dict[str, int]:
            await store.insert_tasks([_task(n) for n in range(20)])
            return {t.id: t.version for t in await store.claim("worker", 20, 30)}

        claimed = self._on_store(store_url, prepare)

        async def write_all(store: Any, n: int, ready: _Ready) -> list[bool]:
            tasks = [await store.get_task(task_id) for task_id in ids]
            for task in tasks:
                task.status = TaskStatus.COMPLETED if n == 0 else TaskStatus.CANCELLED
            await ready()
            return list(await asyncio.gather(*(store.update_task(t) for t in tasks)))

        finished, cancelled = self._two_openers(store_url, write_all)
        both = [i for i, a, b in zip(ids, finished, cancelled, strict=True) if a and b]
        assert not both, (
            f"update_task returned True on both stores for {len(both)} tasks written at one "
            f"version ({', '.join(both[:5])}): one write was lost while both callers believe "
            "they won. Compare the version and write in one atomic step that holds across "
            "processes (one transaction, or a lock shared by every opener held across both)"
        )

        async def check(store: Any) -> None:
            for task_id, won in zip(ids, finished, strict=True):
                stored = await store.get_task(task_id)
                winner = TaskStatus.COMPLETED if won else TaskStatus.CANCELLED
                assert (stored.status, stored.version) == (winner, claimed[task_id] + 1), (
                    f"{task_id}: neither write at its version succeeded, or the stored task "
                    "is not the one the successful write wrote"
                )

        self._on_store(store_url, check)

    @_with_store
    async def test_one_store_serves_several_event_loops_at_once(self, store: Any) -> None:
        """One opened store takes calls from several event loops in several threads at
        once (an engine serving a web app's request threads beside its worker's loop),
        and its claims stay atomic across them."""
        if not self.threadsafe:
            pytest.skip("the store is meant for one thread (threadsafe = False)")
        ids = [f"task-{n}" for n in range(30)]
        await store.insert_tasks([_task(n) for n in range(30)])

        async def work(n: int, ready: _Ready) -> list[str]:
            await ready()
            assert (await store.insert_task(_task(100 + n)))[1]
            got: list[str] = []
            while batch := await store.claim(f"loop-{n}", 2, 30):
                for task in batch:
                    task.status = TaskStatus.COMPLETED
                    assert await store.update_task(task)
                got += [t.id for t in batch]
            return got

        # The loop that opened the store works too, beside two loops of two threads.
        barrier = threading.Barrier(3)

        async def in_this_loop() -> list[str]:
            try:
                return await work(2, functools.partial(_meet, barrier, self.timeout))
            except BaseException:
                barrier.abort()
                raise

        others = _start_in_threads(2, self.timeout, work, barrier)
        try:
            here, first, second = await asyncio.gather(
                in_this_loop(), *(asyncio.wrap_future(f) for f in others)
            )
        except (AssertionError, threading.BrokenBarrierError):
            raise
        except Exception as exc:
            pytest.fail(
                "a store call failed while three event loops in three threads used the "
                f"store at once: {type(exc).__name__}: {exc}. The engine calls its one store "
                "from several loops and threads at once: keep no asyncio object (a lock, a "
                "queue, the loop) made in open() for later calls, guard shared state with "
                "threading locks, and give each caller its result in its own loop. (For a "
                "store meant for one thread, like memory://, set threadsafe = False on the "
                "test class.)",
                pytrace=False,
            )
        claims = first + second + here
        twice = sorted({i for i in claims if claims.count(i) > 1})
        assert not twice, (
            f"tasks claimed twice by claims from several event loops at once: {twice[:5]}"
        )
        expected = ids + [f"task-{n}" for n in (100, 101, 102)]
        assert sorted(claims) == sorted(expected), "some tasks were never claimed"
        assert await store.count_tasks() == {TaskStatus.COMPLETED: len(expected)}

    # -- across a restart --------------------------------------------------------------

    def test_everything_survives_closing_and_reopening(self, store_url: str) -> None:
        """Tasks, workflows and the outbox are there after the store is reopened, and
        so are acknowledgements and purges: an acknowledged result is not published
        again, a purged task does not come back."""
        if not self.durable:
            pytest.skip("the store is not durable (durable = False)")
        # The workflows the plugins contribute, which each engine saves as it opens
        # the store: not this test's.
        contributed: set[str] = set()

        async def write() -> None:
            engine = self.make_engine(store_url)
            contributed.update(engine.workflows)
            store = await engine.get_store()
            try:
                await store.save_workflow(WorkflowSpec("flow", [Phase("a")]))
                await store.outbox_register("results")
                await store.insert_tasks([_task(1), _task(3)])
                await store.insert_task(_task(2))
                finished = {t.id: t for t in await store.claim("w", 2, 30)}
                for task in finished.values():
                    task.status, task.output = TaskStatus.COMPLETED, {"ok": True}
                    assert await store.update_task(task)
                # The last writes before closing: an acknowledgement, then a purge.
                versions = [finished["task-3"].version]
                await store.outbox_ack("results", ["task-3"], versions=versions)
                if type(store).delete_finished is not Store.delete_finished:
                    purged = await store.delete_finished(time.time() + 60, [TaskStatus.COMPLETED])
                    assert purged == ["task-3"], (
                        f"delete_finished deleted {purged}, not ['task-3']: task-3 is "
                        "COMPLETED and its result acknowledged (outbox_ack), task-1's not"
                    )
            finally:
                await engine.aclose()

        async def read() -> None:
            engine = self.make_engine(store_url)
            store = await engine.get_store()
            try:
                names = [s.name for s in await store.load_workflows()]
                assert [name for name in names if name not in contributed] == ["flow"]
                done = await store.get_task("task-1")
                assert done is not None
                assert (done.status, done.output) == (TaskStatus.COMPLETED, {"ok": True})
                published = [t.id for t in await store.outbox_pending("results")]
                assert published == ["task-1"], (
                    f"after reopening, outbox_pending gave {published}, not ['task-1']: "
                    "keep every finish recorded for a consumer, and every acknowledgement "
                    "(task-3's), across closing and reopening the store"
                )
                if type(store).delete_finished is not Store.delete_finished:
                    assert await store.get_task("task-3") is None, (
                        "a task delete_finished deleted is back after reopening the store: "
                        "a purge must be as durable as any other write"
                    )
                assert [t.id for t in await store.claim("w", 5, 30)] == ["task-2"]
            finally:
                await engine.aclose()

        asyncio.run(asyncio.wait_for(write(), self.timeout))
        asyncio.run(asyncio.wait_for(read(), self.timeout))

    def test_exists_is_false_before_the_first_open_and_true_after(self, store_url: str) -> None:
        """``Store.exists()`` (None, "cannot tell", is always allowed) is never True
        for a fresh URL, and asking creates nothing; once a store was opened and
        written there, it is never False (for a durable store, asked by a store
        object of its own): ``wfe tasks`` would refuse the store as a mistyped URL."""

        async def ask() -> bool | None:
            engine = self.make_engine(store_url)
            said = await engine._store_for(store_url).exists()
            assert said in (True, False, None), (
                f"exists() returned {said!r}: return True, False, or None (cannot tell)"
            )
            return said

        async def write() -> None:
            engine = self.make_engine(store_url)
            try:
                await (await engine.get_store()).insert_task(_task(1))
            finally:
                await engine.aclose()

        def run(step: Callable[[], Awaitable[Any]]) -> Any:
            return asyncio.run(asyncio.wait_for(step(), self.timeout))

        for asked in ("first", "second"):
            if run(ask) is True:
                pytest.fail(
                    f"exists() said True for a fresh store ({asked} time asked), before "
                    "anything opened it: it must say whether open() would find the store "
                    "there, and create nothing itself",
                    pytrace=False,
                )
        run(write)
        if self.durable and run(ask) is False:
            pytest.fail(
                "exists() said False for a store opened and written before: wfe tasks, "
                "show and status would refuse it as a mistyped URL",
                pytrace=False,
            )

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


def _lists_by_phase(store: Store) -> bool:
    """Whether the store's list_tasks and count_tasks take ``phase`` (optional)."""
    try:
        phase_filter(store, "p")
    except StoreError:
        return False
    return True


def _skip_without_phase_listing(store: Store) -> None:
    if not _lists_by_phase(store):
        pytest.skip(
            "listing by phase is optional, and this store's list_tasks or count_tasks "
            "takes no 'phase': the engine refuses such listings with a StoreError"
        )

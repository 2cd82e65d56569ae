"""The store contract as pytest tests: what every storage backend must do, checked.

A third-party store (a ``wfe_open_store`` plugin) inherits these tests to find out
whether the engine can rely on it; the built-in SQLite and memory stores pass them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import multiprocessing
import multiprocessing.connection
import multiprocessing.context
import os
import pickle
import threading
import time
import traceback
import warnings
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import attrs
import pytest

from .engine import ECSWorkflowEngine
from .errors import StoreError
from .model import Artifact, Phase, Task, TaskStatus, TaskType, WorkflowSpec
from .plugins import call_impl
from .stores.base import UNREADABLE_ERROR, Store, phase_filter, summarized, unreadable

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


def _fork_context() -> multiprocessing.context.BaseContext | None:
    """The ``fork`` start method, where the system has one (not on Windows)."""
    if not hasattr(os, "fork"):
        return None
    try:
        return multiprocessing.get_context("fork")
    except ValueError:
        return None


# Seconds a forked opener may take beyond the test's timeout (its own wait_for
# fires first) to send what it got, before it is killed.
_CHILD_GRACE = 10.0


class _RemoteTraceback(Exception):
    """The traceback of an error raised in a forked opener, as text: the cause of
    the error raised here in its stead."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


class _ChildFailed(Exception):
    """An error of a forked opener that could not be sent here as it was."""


def _run_in_child(
    work: Callable[[_Ready], Awaitable[Any]],
    barrier: threading.Barrier,
    timeout: float,
    send: multiprocessing.connection.Connection,
) -> None:
    """In a forked process: ``await work(ready)`` in an event loop of its own, and
    send back ``("result", value)`` or ``("error", exception or None, traceback)``."""
    outcome: tuple[Any, ...]
    failed = False
    try:
        ready = functools.partial(_meet, barrier, timeout)
        outcome = ("result", asyncio.run(asyncio.wait_for(work(ready), timeout)))
    except BaseException as exc:  # sent to the parent, which raises it
        failed = True
        text = "".join(traceback.format_exception(exc))
        try:
            sent: BaseException | None = pickle.loads(pickle.dumps(exc))
        except Exception:
            sent = None
        outcome = ("error", sent, text)
    try:
        send.send(outcome)
    except Exception as exc:  # a result that does not pickle
        failed = True
        text = "".join(traceback.format_exception(exc))
        send.send(("error", None, f"sending the result back failed:\n{text}"))
    finally:
        send.close()
        if failed:
            # After sending: the other opener's broken barrier is not the first error.
            barrier.abort()
    # The process ends with os._exit (multiprocessing's way): pytest's atexit
    # handlers and the parent's finalizers do not run here.


class _ForkedOpener:
    """``work(ready)`` run in a forked process; :attr:`result` gets what it returned
    or raised, as a thread's future would (an error with the child's traceback as
    its cause)."""

    def __init__(
        self,
        context: multiprocessing.context.BaseContext,
        timeout: float,
        work: Callable[[_Ready], Awaitable[Any]],
        barrier: threading.Barrier,
    ) -> None:
        self.result: concurrent.futures.Future[Any] = concurrent.futures.Future()
        receive, send = context.Pipe(duplex=False)
        self._process = context.Process(  # type: ignore[attr-defined]
            target=_run_in_child,
            args=(work, barrier, timeout, send),
            name="store-contract-1",
            daemon=True,
        )
        with warnings.catch_warnings():
            # Python 3.12 warns of forking while threads run (pytest-xdist's, say):
            # the child uses nothing of theirs, only the objects it is handed.
            warnings.filterwarnings(
                "ignore", message=r".*fork\(\) may lead to deadlocks", category=DeprecationWarning
            )
            self._process.start()
        send.close()  # the child's copy is the only one left: its end is an EOF here
        threading.Thread(
            target=self._collect,
            args=(receive, barrier, timeout + _CHILD_GRACE),
            name="store-contract-collect",
            daemon=True,
        ).start()

    def _collect(
        self,
        receive: multiprocessing.connection.Connection,
        barrier: threading.Barrier,
        timeout: float,
    ) -> None:
        __tracebackhide__ = True  # the child's traceback, its cause, says where
        try:
            self.result.set_result(self._receive(receive, timeout))
        except BaseException as exc:
            self.result.set_exception(exc)
            barrier.abort()
        finally:
            receive.close()

    def _receive(self, receive: multiprocessing.connection.Connection, timeout: float) -> Any:
        __tracebackhide__ = True
        if not receive.poll(timeout):
            self._process.kill()
            raise TimeoutError(
                f"the second store's process (a fork of this one) gave no result in "
                f"{timeout:g} s, and was killed: a store call never returned"
            )
        try:
            outcome = receive.recv()
        except EOFError:
            self._process.join(_CHILD_GRACE)
            raise _ChildFailed(
                "the second store's process (a fork of this one) ended without a result "
                f"(exit code {self._process.exitcode}): the store ended it, or crashed it"
            ) from None
        if outcome[0] == "result":
            return outcome[1]
        _, error, text = outcome
        if error is None:
            error = _ChildFailed(
                "the second store's process (a fork of this one) failed; its traceback:\n" + text
            )
        else:
            error.__cause__ = _RemoteTraceback(
                f"\n(in the second store's process, a fork of this one)\n{text}"
            )
        raise error

    def stop(self) -> None:
        """Wait a little for the process to end, then kill it."""
        self._process.join(_CHILD_GRACE)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()


def _results(futures: Sequence[concurrent.futures.Future[Any]]) -> list[Any]:
    """The futures' results; the first error as soon as one fails."""
    done, pending = concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_EXCEPTION)
    errors = [error for future in done if (error := future.exception()) is not None]
    if pending and all(isinstance(error, threading.BrokenBarrierError) for error in errors):
        # The party that broke the barrier may be a forked opener, whose own error
        # comes over a pipe a moment after the others see the barrier broken.
        done, _ = concurrent.futures.wait(
            pending, _CHILD_GRACE, return_when=concurrent.futures.FIRST_EXCEPTION
        )
        errors += [error for future in done if (error := future.exception()) is not None]
    # A broken barrier is what the first real error caused in the others.
    errors.sort(key=lambda error: isinstance(error, threading.BrokenBarrierError))
    if errors:
        raise errors[0]
    return [future.result() for future in futures]


_DAMAGED = "a row the store cannot read must not make every read fail, nor stop a worker"


_READ_AS_STAND_IN = (
    "Read a row you cannot decode as the stand-in wfcore.stores.base."
    "unreadable_stand_in(task_id, reason, stored_text) builds (see wfcore.Store, 'A row "
    "that cannot be read')"
)


async def _unbroken(
    call: Callable[[], Awaitable[Any]], what: str, damaged: str, do: str = _READ_AS_STAND_IN
) -> Any:
    """``await call()``; fail saying what to ``do`` when it raises for a damaged row."""
    try:
        return await call()
    except Exception as exc:
        pytest.fail(
            f"{what} raised {type(exc).__name__}: {str(exc)[:200]} once damage_row had "
            f"damaged the stored {damaged}: {_DAMAGED}. {do}",
            pytrace=False,
        )


def _check_stand_in(task: Task | None, task_id: str, read_by: str, *, whole: bool = True) -> None:
    """Fail unless ``task`` is the stand-in of the damaged ``task_id`` (``whole``:
    not a summary, so with the stored text)."""
    if task is None:
        pytest.fail(
            f"{read_by} gave no {task_id} after damage_row damaged it: a row the store "
            "cannot read is still there, as the stand-in wfcore.stores.base."
            "unreadable_stand_in builds, so that people see it and repair it",
            pytrace=False,
        )
    if task.id != task_id or not unreadable(task):
        pytest.fail(
            f"{read_by} gave {task_id}, damaged by damage_row, as task {task.id!r} "
            f"{task.status.value}, error {task.error!r:.80}: not the stand-in "
            "wfcore.stores.base.unreadable_stand_in(task_id, reason, stored_text) builds "
            f"(FAILED, its error starting {UNREADABLE_ERROR!r}), which tells the engine "
            "never to run it or write it back. (Or damage_row did not damage the row.)",
            pytrace=False,
        )
    if whole:
        text = task.context.get("unreadable_doc")
        assert isinstance(text, str) and text, (
            f"the stand-in {read_by} gave for {task_id} has context['unreadable_doc'] "
            f"{text!r:.80}: pass the row's stored text as stored_text, for whoever repairs it"
        )


def _footprint(url: str) -> tuple[bool, list[str]] | None:
    """Whether the local path a store URL names exists, and what it holds if it is a
    folder; None for a URL that names no absolute path (``memory://``)."""
    path = unquote(urlsplit(url).path)
    if not path.startswith("/"):
        return None
    try:
        return True, sorted(os.listdir(path))
    except NotADirectoryError:
        return True, []
    except OSError:
        return os.path.lexists(path), []


def _shown_footprint(footprint: tuple[bool, list[str]] | None) -> str:
    if footprint is None or not footprint[0]:
        return "nothing was there"
    return f"it held {footprint[1]}" if footprint[1] else "it was there"


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
    ``wfe_open_store`` is tested too. The tests of two openers at once run one of
    them in a process of its own (forked, where the system can fork), so that a
    lock or a cache held by one process only is found out.

    Implement :meth:`damage_row` to run the tests of rows the store cannot read:
    they are skipped without it.
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

    def damage_row(self, store_url: str, task_id: str) -> None:
        """Damage the stored task ``task_id`` in the store at ``store_url`` as a hand
        edit or a broken tool would, so that the store cannot read it back: cut its
        JSON document short, say, as ``UPDATE tasks SET doc = '{"data": ' WHERE id =
        ?`` does to an SQLite store. Called while a store is open on the URL, from a
        thread of its own.

        Optional: implement it on the test class to run the tests of rows that
        cannot be read (see :class:`~wfcore.stores.base.Store`); without it they are
        skipped.
        """
        raise NotImplementedError

    def _skip_unless_damageable(self) -> None:
        if type(self).damage_row is StoreContract.damage_row:
            pytest.skip(
                f"{type(self).__name__} has no damage_row(store_url, task_id): implement "
                "it (damage a stored task as a hand edit would) to test how the store "
                "reads a row it cannot read"
            )

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
        own opened on ``store_url`` in an event loop of its own, as two processes run
        it: n = 1 in a process of its own (forked: it inherits this class, its
        plugins and ``work``, and sends back only its result), n = 0 in a thread of
        this one. So a lock that holds within one process only (a lock or cache of
        the module, shared by every store object of the process) reaches no further,
        as in ``wfe submit`` beside ``wfe worker``. Where the system cannot fork,
        both run in threads of this process."""

        async def run(n: int, ready: _Ready) -> Any:
            engine = self.make_engine(store_url)
            try:
                return await work(await engine.get_store(), n, ready)
            finally:
                await engine.aclose()

        context = _fork_context()
        if context is None:
            return _results(_start_in_threads(2, self.timeout, run))
        barrier = context.Barrier(2)
        # Forked before this process opens a store: the child inherits no open
        # store of it (an SQLite connection, its writer thread) to trip over.
        child = _ForkedOpener(context, self.timeout, functools.partial(run, 1), barrier)
        try:
            [here] = _start_in_threads(1, self.timeout, run, barrier)
            return _results([here, child.result])
        finally:
            child.stop()

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
        second = [t.id for t in await store.claim("worker-b", 5, 30)]
        assert second == ["task-2"], (
            f"claim('worker-b', 5, ...) took {second} after worker-a's claim leased task-0 "
            "and task-1: only task-2 is not leased"
        )
        third = [t.id for t in await store.claim("worker-c", 5, 30)]
        assert third == [], (
            f"claim('worker-c', ...) took {third} while every task is leased (for 30 s): a "
            "leased task is nobody else's until its lease expires or a write releases it"
        )
        owners = sorted(await store.lease_owners())
        assert owners == ["worker-a", "worker-b"], (
            f"lease_owners() gave {owners}: the owners of the leases tasks hold"
        )
        if type(store).lease_of is not Store.lease_of:  # the store can tell (optional)
            now = datetime.now(timezone.utc)
            lease = await store.lease_of("task-2")
            assert lease is not None, "lease_of('task-2') gave None though worker-b claimed it"
            owner, expires = lease
            assert owner == "worker-b", (
                f"lease_of('task-2') names {owner!r} as its owner, not 'worker-b', whose "
                "claim leased it: give the owner the claim was made for"
            )
            assert now + timedelta(seconds=20) < expires < now + timedelta(seconds=40), (
                f"lease_of('task-2') says the lease expires at {expires}, {now} being now: a "
                "claim with lease_seconds=30 leases its tasks until 30 s from the claim (an "
                "aware UTC datetime)"
            )
            missing = await store.lease_of("no-such-task")
            assert missing is None, f"lease_of of an unknown task gave {missing!r}, not None"

    @_with_store
    async def test_tasks_to_start_later_wait_for_their_time(self, store: Any) -> None:
        """A pending task with run_after in the future is not claimed; it is delayed."""
        later = datetime.now(timezone.utc) + timedelta(hours=1)
        await store.insert_task(_task(1, run_after=later))
        await store.insert_task(_task(2, run_after=datetime.now(timezone.utc)))
        claimed = [t.id for t in await store.claim("w", 10, 30)]
        assert claimed == ["task-2"], (
            f"claim took {claimed}: task-1 is to run an hour from now (run_after), task-2 "
            "now; a pending task is claimable only once its run_after has passed"
        )
        count, first = await store.count_delayed()
        assert (count, first is not None) == (1, True), (
            f"count_delayed() gave ({count}, {first}) for one pending task whose run_after "
            "is an hour away: (1, that run_after)"
        )
        assert abs((first - later).total_seconds()) < 1, (
            f"count_delayed() gave the first run_after as {first}, not {later}"
        )

    @_with_store
    async def test_count_due_counts_the_work_at_hand(self, store: Any) -> None:
        """count_due counts the tasks running, and those pending and due: not those
        delayed (run_after), waiting or finished; with workflows=, those of these
        workflows only. Optional: skipped for a store that keeps Store's (which
        counts every pending task, due or not)."""
        if type(store).count_due is Store.count_due:
            pytest.skip("the store keeps Store.count_due's default, which counts delayed tasks")
        later = datetime.now(timezone.utc) + timedelta(hours=1)
        await store.insert_tasks([_task(n) for n in range(4)])
        claimed = {t.id: t for t in await store.claim("w", 3, 30)}  # task-0 to task-2
        claimed["task-1"].status = TaskStatus.WAITING_HUMAN
        claimed["task-2"].status = TaskStatus.COMPLETED
        for task_id in ("task-1", "task-2"):
            assert await store.update_task(claimed[task_id])
        await store.insert_tasks([_task(4, run_after=later), _task(5, workflow_name="other")])
        due = await store.count_due()
        assert due == 3, (
            f"count_due() gave {due}: task-0 is running, task-3 and task-5 pending and "
            "due; task-1 waits for a person, task-2 is completed and task-4 delayed an "
            "hour, which are not at hand"
        )
        due = await store.count_due(workflows=["w"])
        assert due == 2, (
            f"count_due(workflows=['w']) gave {due}: task-0 and task-3 (task-5 is of "
            "workflow 'other')"
        )

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
            assert (stored.status, stored.version) == (winner, claimed[task_id] + 1), (
                f"{task_id} is stored {stored.status.value} at version {stored.version}: "
                f"the write that returned True stored it, {winner.value} at version "
                f"{claimed[task_id] + 1}"
            )

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
        lease = await store.lease_of("task-1")
        assert lease is None, (
            f"lease_of('task-1') gave {lease} after a write without keep_lease released it"
        )
        [again] = await store.claim("other", 1, 30)
        assert again.context == {"step": 1}, (
            f"the task claimed again has context {again.context}, not the one last written"
        )
        assert not [e for e in again.history if e["event"] == "taken_over"], (
            "a claim of a task whose lease a write released added a taken_over event: only "
            "a task still leased to another owner (expired, or freed by "
            "release_dead_leases) is taken over"
        )

    @_with_store
    async def test_an_expired_lease_is_taken_over(self, store: Any) -> None:
        """A running task whose lease ran out goes to the next claimer, with a
        taken_over event naming the worker that lost it."""
        await store.insert_task(_task(1))
        [task] = await store.claim("dead-worker", 1, 0.2)
        assert await store.claim("next-worker", 1, 30) == [], (
            "a task was claimed again right after a claim leased it for 0.2 s"
        )
        [taken] = await _eventually(
            lambda: store.claim("next-worker", 1, 30), "the expired lease to be claimable"
        )
        assert (taken.id, taken.status) == ("task-1", TaskStatus.IN_PROGRESS), (
            f"the claim after task-1's lease expired gave {taken.id} {taken.status.value}: "
            "task-1, still IN_PROGRESS"
        )
        events = [e for e in taken.history if e["event"] == "taken_over"]
        assert [(e.get("previous_worker"), e.get("worker")) for e in events] == [
            ("dead-worker", "next-worker")
        ], (
            f"the task taken over has taken_over events {events}: one, from "
            "record_takeover(task, 'dead-worker', 'next-worker'), as the claim that takes "
            "over a task still leased to another owner adds it"
        )
        [event] = events
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
        """release_dead_leases makes a dead process's tasks claimable now, and says
        how many leases it freed: every lease the owners held, expired ones too."""
        for n in range(3):
            await store.insert_task(_task(n))
        claimed = await store.claim("dead", 2, 3600)
        claimed += await store.claim("dead", 1, 0)  # expired at once, not taken yet
        assert len(claimed) == 3, f"claims of 3 tasks by 'dead' took {[t.id for t in claimed]}"
        released = await store.release_dead_leases(["dead"])
        assert released == 3, (
            f"release_dead_leases(['dead']) returned {released!r} after 'dead' claimed three "
            "tasks (one lease of them expired already): it frees the leases of those owners "
            "and returns how many it freed, expired ones included (nobody had taken their "
            "tasks yet)"
        )
        taken = await store.claim("alive", 5, 30)
        assert sorted(t.id for t in taken) == ["task-0", "task-1", "task-2"], (
            f"claim took {sorted(t.id for t in taken)} after release_dead_leases(['dead']) "
            "freed the leases of task-0 to task-2: a freed lease's task is claimable at once"
        )
        assert all(
            [e["previous_worker"] for e in t.history if e["event"] == "taken_over"] == ["dead"]
            for t in taken
        ), (
            "a task whose lease release_dead_leases freed came back from its claim without "
            "one taken_over event naming 'dead': the lease stays on record, its owner's "
            "name with it, until the claim that takes the task over"
        )
        for task in taken:
            stored = await store.get_task(task.id)
            assert [e["worker"] for e in stored.history if e["event"] == "taken_over"] == [
                "alive"
            ], "the taken_over event the claim returned is not stored with the claim"
        owners = await store.lease_owners()
        assert owners == ["alive"], (
            f"lease_owners() gave {owners} after 'alive' took over every task 'dead' held"
        )

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
        assert not await store.has_active_tasks(), (
            "has_active_tasks() is True though every task is waiting: waiting tasks don't "
            "count, or run_until_idle never returns while a person has work"
        )
        due_now = await store.claim("w", 5, 30)
        assert [(t.id, t.status) for t in due_now] == [("task-3", TaskStatus.WAITING_HUMAN)], (
            f"claim took {[(t.id, t.status.value) for t in due_now]} of three waiting tasks: "
            "task-3 alone, whose deadline has passed (task-1 has none, task-2's is an hour "
            "away), still waiting (the engine times it out)"
        )
        [due] = due_now
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
    async def test_a_waiting_task_whose_claimer_died_is_claimed_again(self, store: Any) -> None:
        """A waiting task claimed after its deadline whose claimer dies before timing
        it out (its lease runs out, or release_dead_leases frees it) is claimable
        again, still waiting, with a taken_over event: else a person's task whose
        timing-out worker was killed waits for ever."""
        past = datetime.now(timezone.utc) - timedelta(seconds=1)
        await store.insert_tasks([_task(1), _task(2)])
        for task in await store.claim("w", 2, 30):
            task.status, task.deadline = TaskStatus.WAITING_HUMAN, past
            assert await store.update_task(task)
        dead = [t.id for t in await store.claim("dead", 1, 3600)]
        expiring = [t.id for t in await store.claim("expiring", 1, 0.2)]
        assert sorted(dead + expiring) == ["task-1", "task-2"], (
            f"claims of one task each took {dead}, then {expiring}: two waiting tasks "
            "whose deadline has passed are each claimable"
        )

        def check(claimed: list[Task], lost: list[str], owner: str, how: str) -> None:
            ids = [t.id for t in claimed]
            assert ids == lost, (
                f"claim gave {ids} after {owner!r}, which held waiting task {lost}, died "
                f"({how}): a waiting task claimed after its deadline is claimable again "
                "once its lease expires or is freed, like any claimed task, or it waits "
                "for ever"
            )
            [task] = claimed
            events = [e.get("previous_worker") for e in task.history if e["event"] == "taken_over"]
            assert (task.status, events) == (TaskStatus.WAITING_HUMAN, [owner]), (
                f"the waiting task claimed again came back {task.status.value} with "
                f"taken_over events from {events}: still waiting (the engine times it "
                f"out), with one taken_over event naming {owner!r}"
            )

        claimed = await _eventually(
            lambda: store.claim("other", 5, 30),
            "a waiting task claimed after its deadline to be claimable again once its "
            "claimer's lease ran out (else a person's task whose timing-out worker died "
            "waits for ever)",
            timeout=5,
        )
        check(claimed, expiring, "expiring", "its lease ran out")
        await store.release_dead_leases(["dead"])
        check(await store.claim("other", 5, 30), dead, "dead", "release_dead_leases")

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
        assert await store.has_active_tasks(), (
            "has_active_tasks() is False though task-2 is pending"
        )
        rest = [t.id for t in await store.claim("w", 5, 30)]
        assert rest == ["task-2"], f"claim() without workflows= took {rest}, not ['task-2']"

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
        pending = [t.id for t in await store.list_tasks(TaskStatus.PENDING, "a")]
        assert pending == ["task-2", "task-1"], (
            f"list_tasks(PENDING, 'a') gave {pending}: the pending tasks of workflow a, "
            "newest first (task-0 is completed, task-3 and task-4 are of b)"
        )
        either = [
            t.id for t in await store.list_tasks([TaskStatus.PENDING, TaskStatus.COMPLETED], "a")
        ]
        assert len(either) == 3, (
            f"list_tasks([PENDING, COMPLETED], 'a') gave {either}: a list of statuses "
            "lists the tasks in any of them"
        )
        counted = await store.count_tasks()
        assert counted == {TaskStatus.PENDING: 4, TaskStatus.COMPLETED: 1}, (
            f"count_tasks() gave {counted}, not 4 pending and 1 completed"
        )
        counted = await store.count_tasks("b")
        assert counted == {TaskStatus.PENDING: 2}, (
            f"count_tasks('b') gave {counted}, not the 2 pending tasks of workflow b: "
            "count only the named workflow's tasks (statuses with none left out)"
        )
        counted = await store.count_by_phase("a")
        assert counted == {"p": 2}, (
            f"count_by_phase('a') gave {counted}: the unfinished tasks of workflow a by "
            "classification, {'p': 2} (task-0, completed at q, is left out)"
        )
        by_workflow = await store.count_all_by_workflow()
        assert by_workflow == {
            "a": {TaskStatus.PENDING: 2, TaskStatus.COMPLETED: 1},
            "b": {TaskStatus.PENDING: 2},
        }, f"count_all_by_workflow() gave {by_workflow}: count_tasks of each workflow"
        by_phase = await store.count_all_by_phase()
        assert by_phase == {"a": {"p": 2}, "b": {"p": 2}}, (
            f"count_all_by_phase() gave {by_phase}: count_by_phase of each workflow"
        )

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
        newest_first = [t.id for t in await store.list_tasks()]
        assert newest_first == ids[::-1], (
            f"list_tasks() gave {newest_first} for tasks inserted as {ids}: the last "
            "inserted first, whatever the ids"
        )
        paged = [t.id for t in await store.list_tasks(limit=2, offset=1)]
        assert paged == ["b", "task-10"], (
            f"list_tasks(limit=2, offset=1) gave {paged} for tasks inserted as {ids}"
        )

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
        assert newest == ["task-1", "task-2", "task-0"], (
            f"list_tasks(priority_first=True, limit=3, offset=1) gave {newest}: the highest "
            "priority first, each priority's tasks newest first, then skip 1 and give 3"
        )
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
        kept = await store.add_workflow(WorkflowSpec("flow", [Phase("other")]))
        assert kept == first, (
            f"add_workflow of a name stored already returned {kept}: it keeps and returns "
            "the workflow stored first under the name"
        )
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
        assert stored == {"flow": replaced, "another": WorkflowSpec("another", [Phase("x")])}, (
            f"load_workflows() gave {stored}, not the workflows as last saved, every field "
            "of each phase kept (wfcore.wire.workflow_to_dict and workflow_from_dict "
            "round-trip them)"
        )

    @_with_store
    async def test_one_workflow_is_read_by_its_name(self, store: Any) -> None:
        """load_workflow gives the workflow stored under a name, as last saved, and
        None for a name never stored."""
        first = WorkflowSpec("flow", [Phase("a")])
        await store.save_workflow(first)
        await store.save_workflow(WorkflowSpec("another", [Phase("x")]))
        got = await store.load_workflow("flow")
        assert got == first, f"load_workflow('flow') gave {got}, not the one saved: {first}"
        replaced = WorkflowSpec("flow", [Phase("b", assigned_to="human")])
        await store.save_workflow(replaced)
        got = await store.load_workflow("flow")
        assert got == replaced, (
            f"load_workflow('flow') gave {got} after save_workflow replaced it with {replaced}"
        )
        got = await store.load_workflow("no-such-flow")
        assert got is None, f"load_workflow of a name never saved gave {got}, not None"

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
        published = await store.outbox_pending("results")
        assert [(t.id, t.output, t.version) for t in published] == [
            ("task-1", "done", task.version)
        ], (
            f"outbox_pending('results') gave {[(t.id, t.output, t.version) for t in published]}: "
            f"task-1 alone, as its finishing write stored it (output 'done', version "
            f"{task.version}); task-0 finished before 'results' registered"
        )
        nobody = await store.outbox_pending("nobody")
        assert nobody == [], (
            f"outbox_pending('nobody') gave {[t.id for t in nobody]} for a consumer never "
            "registered: nothing is recorded for it"
        )

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
        published = await store.outbox_pending("results")
        assert [(t.id, t.status) for t in published] == [("task-1", TaskStatus.FAILED)], (
            f"outbox_pending gave {[(t.id, t.status.value) for t in published]} after task-1, "
            "acknowledged, was retried and finished again (FAILED): a later finish is "
            "recorded again, and waits for its own acknowledgement"
        )
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
        assert (b.status, b.version) == (TaskStatus.COMPLETED, again.version), (
            f"outbox_pending gave b {b.status.value} at version {b.version}: as stored now, "
            f"COMPLETED at {again.version}"
        )

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
        assert sorted(published) == ["task-1", "task-2"], (
            f"outbox_pending gave {sorted(published)} after task-1 and task-2 finished"
        )
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
    async def test_bad_consumer_names_are_refused_before_anything_is_stored(
        self, store: Any
    ) -> None:
        """outbox_register refuses, with TypeError or ValueError and storing nothing,
        a name wfcore.stores.base.check_consumer_name refuses: not text, blank, with
        blanks around it or control characters, over 200 characters. Kept, a bad
        name (None, say) could fail every write that finishes a task."""
        for name in [None, 7, "", "   ", " results", "results\n", "a\x00b", "x" * 201]:
            try:
                await store.outbox_register(name)
            except (TypeError, ValueError):
                continue
            except Exception as exc:
                pytest.fail(
                    f"outbox_register({name!r:.30}) raised {type(exc).__name__}: {exc}: "
                    "refuse a bad consumer name with TypeError or ValueError, as "
                    "wfcore.stores.base.check_consumer_name(consumer) does",
                    pytrace=False,
                )
            pytest.fail(
                f"outbox_register({name!r:.30}) took the name: call "
                "wfcore.stores.base.check_consumer_name(consumer) before storing anything; "
                "it raises TypeError or ValueError for a name no consumer may have",
                pytrace=False,
            )
        if type(store).outbox_consumers is not Store.outbox_consumers:
            registered = await store.outbox_consumers()
            assert registered == {}, (
                f"outbox_consumers() gave {registered} after outbox_register refused every "
                "name it was given: a refused name is stored nowhere"
            )
        await store.outbox_register("results")
        await store.insert_task(_task(1))
        [task] = await store.claim("w", 1, 30)
        task.status = TaskStatus.COMPLETED
        assert await store.update_task(task), (
            "update_task refused the write that finished a task, after outbox_register "
            "had refused bad consumer names"
        )
        assert [t.id for t in await store.outbox_pending("results")] == ["task-1"]

    @_with_store
    async def test_outbox_consumers_counts_what_each_has_not_acknowledged(self, store: Any) -> None:
        """outbox_consumers gives every registered consumer, with how many finished
        tasks it has not acknowledged yet (``wfe outbox`` shows it). Optional:
        skipped for a store that keeps Store's (which raises StoreError)."""
        if type(store).outbox_consumers is Store.outbox_consumers:
            pytest.skip("the store keeps Store.outbox_consumers' default: it cannot list them")
        await store.outbox_register("a")
        await store.outbox_register("b")
        await store.insert_tasks([_task(n) for n in range(3)])
        for task in await store.claim("w", 3, 30):
            task.status = TaskStatus.COMPLETED
            assert await store.update_task(task)
            if task.id == "task-0":
                await store.outbox_ack("a", ["task-0"], versions=[task.version])
        await store.outbox_register("c")  # after the finishes: nothing recorded for it
        counts = await store.outbox_consumers()
        ours = {name: counts.get(name) for name in ("a", "b", "c")}
        assert ours == {"a": 2, "b": 3, "c": 0}, (
            f"outbox_consumers() gave {counts}: three tasks finished while 'a' and 'b' "
            "were registered, 'a' acknowledged one, and 'c' registered after; give each "
            "registered consumer with how many finished tasks it has not acknowledged"
        )

    @_with_store
    async def test_an_unregistered_consumer_is_forgotten(self, store: Any) -> None:
        """outbox_unregister stops recording finishes for a consumer and drops what it
        has not acknowledged, returning how many tasks that was (None for a consumer
        not registered); its rows no longer keep tasks from a purge (``wfe outbox
        --drop``). Optional: skipped for a store that keeps Store's (which raises
        StoreError)."""
        if type(store).outbox_unregister is Store.outbox_unregister:
            pytest.skip("the store keeps Store.outbox_unregister's default: it cannot")
        await store.outbox_register("a")
        await store.outbox_register("b")
        await store.insert_tasks([_task(0), _task(1)])
        finished: dict[str, int] = {}
        for task in await store.claim("w", 2, 30):
            task.status = TaskStatus.COMPLETED
            assert await store.update_task(task)
            finished[task.id] = task.version
        await store.outbox_ack("a", ["task-0"], versions=[finished["task-0"]])
        dropped = await store.outbox_unregister("a")
        assert dropped == 1, (
            f"outbox_unregister('a') returned {dropped!r}: 'a' had not acknowledged one "
            "finished task (task-1); return how many tasks the consumer had not "
            "acknowledged, and forget them"
        )
        again = await store.outbox_unregister("a")
        assert again is None, (
            f"outbox_unregister('a') a second time returned {again!r}: return None for a "
            "consumer that is not registered (any more); the first call forgets it"
        )
        never = await store.outbox_unregister("never-registered")
        assert never is None, f"outbox_unregister('never-registered') returned {never!r}, not None"
        left = [t.id for t in await store.outbox_pending("a")]
        assert left == [], f"outbox_pending('a') gave {left} after 'a' was unregistered"
        await store.insert_task(_task(2))
        [task] = await store.claim("w", 1, 30)
        task.status = TaskStatus.COMPLETED
        assert await store.update_task(task)
        finished[task.id] = task.version
        left = [t.id for t in await store.outbox_pending("a")]
        assert left == [], (
            f"outbox_pending('a') gave {left}: a task that finished after 'a' was "
            "unregistered was recorded for it; unregistering stops the recording"
        )
        if type(store).outbox_consumers is not Store.outbox_consumers:
            consumers = await store.outbox_consumers()
            assert "a" not in consumers and consumers.get("b") == 3, (
                f"outbox_consumers() gave {consumers} after 'a' was unregistered: 'b' "
                "alone, with the 3 tasks it has not acknowledged"
            )
        if type(store).delete_finished is not Store.delete_finished:
            await store.outbox_ack("b", list(finished), versions=list(finished.values()))
            purged = sorted(await store.delete_finished(time.time() + 60, [TaskStatus.COMPLETED]))
            assert purged == ["task-0", "task-1", "task-2"], (
                f"delete_finished deleted {purged} of three COMPLETED tasks whose results "
                "'b' acknowledged: an unregistered consumer's rows ('a' had not "
                "acknowledged task-1) must not keep tasks from a purge any more"
            )

    @_with_store
    async def test_purging_keeps_the_children_of_a_parent_not_finished(self, store: Any) -> None:
        """delete_finished and count_finished leave out the finished children of a
        parent that has not finished (it reads their results when its last child
        finishes); once the parent has finished, or is gone, they are purged."""
        can_delete = type(store).delete_finished is not Store.delete_finished
        can_count = type(store).count_finished is not Store.count_finished
        if not (can_delete or can_count):
            pytest.skip("the store keeps Store's delete_finished and count_finished (no purge)")
        await store.insert_tasks(
            [
                _task(0, status=TaskStatus.WAITING_IO, children=["task-1", "task-2"]),
                _task(1, parent_id="task-0"),
                _task(2, parent_id="task-0"),
                _task(3, parent_id="gone"),
            ]
        )
        claimed = {t.id: t for t in await store.claim("w", 3, 30)}
        for task_id in ("task-1", "task-3"):
            claimed[task_id].status = TaskStatus.COMPLETED
            assert await store.update_task(claimed[task_id])
        later, completed = time.time() + 60, [TaskStatus.COMPLETED]
        keep = (
            "a purge keeps a finished child (task-1) while its parent (task-0, waiting "
            "for its other child) has not finished: the parent reads every child's "
            "result when its last child finishes. A child whose parent is not stored "
            "(task-3) goes."
        )
        if can_count:
            count = await store.count_finished(later, completed)
            assert count == 1, f"count_finished gave {count}, not 1 (task-3): {keep}"
        if can_delete:
            deleted = sorted(await store.delete_finished(later, completed))
            assert deleted == ["task-3"], f"delete_finished deleted {deleted}: {keep}"
        parent = await store.get_task("task-0")
        parent.status = TaskStatus.COMPLETED
        assert await store.update_task(parent)
        if can_delete:
            deleted = sorted(await store.delete_finished(later, completed))
            assert deleted == ["task-0", "task-1"], (
                f"delete_finished deleted {deleted} once the parent task-0 had finished: "
                "['task-0', 'task-1'] (task-2 never finished)"
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
            assert (await store.get_task("task-2")) is not None, (
                f"task-2 is gone though delete_finished did not name it: {keep}"
            )
            assert (await store.get_task("task-3")) is not None, (
                f"task-3 is gone though delete_finished did not name it: {keep}"
            )
            await store.outbox_ack("results", ["task-2"], versions=[running["task-2"].version])
            deleted = await store.delete_finished(later, completed)
            assert deleted == ["task-2"], (
                f"delete_finished deleted {deleted} once 'results' acknowledged task-2, the "
                "only COMPLETED task left: ['task-2']"
            )
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

    # -- rows that cannot be read --------------------------------------------------------

    def test_a_row_that_cannot_be_read_reads_as_a_stand_in(self, store_url: str) -> None:
        """A stored task the store cannot read (edited by hand, written by a broken
        tool) breaks no read: get_task, list_tasks, list_task_summaries and
        outbox_pending give the stand-in wfcore.stores.base.unreadable_stand_in
        builds for it, and the other tasks as ever. Optional: run for a test class
        with damage_row."""
        self._skip_unless_damageable()

        async def scenario(store: Any) -> None:
            await store.outbox_register("results")
            await store.insert_tasks([_task(n) for n in range(3)])
            running = {t.id: t for t in await store.claim("w", 3, 30)}
            for task_id in ("task-0", "task-1"):
                running[task_id].status = TaskStatus.COMPLETED
                assert await store.update_task(running[task_id])
            await asyncio.to_thread(self.damage_row, store_url, "task-1")
            damaged = "task-1"

            got = await _unbroken(lambda: store.get_task("task-1"), "get_task('task-1')", damaged)
            _check_stand_in(got, "task-1", "get_task")
            other = await _unbroken(lambda: store.get_task("task-0"), "get_task('task-0')", damaged)
            assert other is not None and (other.status, unreadable(other)) == (
                TaskStatus.COMPLETED,
                False,
            ), f"get_task('task-0') gave {other!r:.200} after damage_row damaged task-1 only"
            for method in ("list_tasks", "list_task_summaries"):
                listed = await _unbroken(getattr(store, method), f"{method}()", damaged)
                ids = sorted(t.id for t in listed)
                assert ids == ["task-0", "task-1", "task-2"], (
                    f"{method}() listed {ids} after damage_row damaged task-1: list every "
                    "task, one the store cannot read as its stand-in"
                )
                [stand_in] = [t for t in listed if t.id == "task-1"]
                _check_stand_in(stand_in, "task-1", method, whole=method == "list_tasks")
            published = await _unbroken(
                lambda: store.outbox_pending("results"), "outbox_pending('results')", damaged
            )
            ids = sorted(t.id for t in published)
            assert ids == ["task-0", "task-1"], (
                f"outbox_pending('results') gave {ids} after task-0 and task-1 finished and "
                "damage_row damaged task-1: give every task recorded for the consumer, one "
                "the store cannot read as its stand-in"
            )
            _check_stand_in(published[ids.index("task-1")], "task-1", "outbox_pending")

        self._on_store(store_url, scenario)

    def test_claim_never_hands_out_a_row_that_cannot_be_read(self, store_url: str) -> None:
        """claim never hands out a stored task it cannot read (it skips the row, or
        fails the task for good in place, keeping the stored text), and goes on
        handing out the others, also one at a time; a write at the version read
        before the damage stores nothing, or the task whole. Optional: run for a
        test class with damage_row."""
        self._skip_unless_damageable()

        async def scenario(store: Any) -> None:
            await store.insert_tasks([_task(n) for n in range(4)])
            before = await store.get_task("task-3")
            for task_id in ("task-0", "task-3"):
                await asyncio.to_thread(self.damage_row, store_url, task_id)
            damaged = "task-0 and task-3"
            wrote = await _unbroken(
                lambda: store.update_task(before),
                "update_task(task-3)",
                damaged,
                "Return False for a row whose version you cannot read (see wfcore.Store, 'A "
                "row that cannot be read')",
            )
            if wrote:
                # A store that still reads the version (a column of its own) may take
                # the write, which repairs the row.
                got = await store.get_task("task-3")
                assert got is not None and not unreadable(got), (
                    "update_task returned True for task-3, damaged by damage_row, at the "
                    f"version read before, but get_task then gave {got!r:.200}: return "
                    "False for a row whose version you cannot read, or store the task whole"
                )
            claimed: list[Task] = []
            for _ in range(4):  # one at a time: the damaged task-0 is first in line
                claimed += await _unbroken(
                    lambda: store.claim("w", 1, 30), "claim('w', 1, 30)", damaged
                )
            claimed += await _unbroken(lambda: store.claim("w", 10, 30), "claim", damaged)
            handed = [t.id for t in claimed]
            expected = ["task-1", "task-2"] + (["task-3"] if wrote else [])
            assert sorted(handed) == expected, (
                f"claims gave {handed} of task-0 to task-3, damage_row having damaged "
                f"task-0 and task-3{' (task-3 written whole again since)' if wrote else ''}: "
                f"expected {expected}. Never hand out a row you cannot read (skip it, or "
                "fail it for good in place, keeping its stored text), and let it take no "
                "place of the claim's limit from the tasks behind it, or a worker with "
                "room for one task never gets past it"
            )
            stored = await _unbroken(lambda: store.get_task("task-0"), "get_task", damaged)
            assert stored is not None and stored.status is TaskStatus.FAILED, (
                f"after the claims, get_task('task-0'), damaged, gave {stored!r:.200}: the "
                "stand-in (FAILED), or the task failed for good in place"
            )

        self._on_store(store_url, scenario)

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
        """Two stores opened on one URL by two processes (one forked, where the system
        can fork; else two threads), each with an event loop and a store of its own,
        claiming at once never both get one task: picking and leasing tasks is one
        atomic step for everyone sharing the store."""
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
        """Two stores opened on one URL by two processes (one forked, where the system
        can fork; else two threads) write the same tasks at once, each at the version
        it read: for each task exactly one write succeeds, the compare-and-set
        holding across processes."""
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
                ours = [name for name in names if name not in contributed]
                assert ours == ["flow"], (
                    f"after reopening, load_workflows() gave {ours}, not the one saved, 'flow'"
                )
                done = await store.get_task("task-1")
                assert done is not None and (done.status, done.output) == (
                    TaskStatus.COMPLETED,
                    {"ok": True},
                ), f"after reopening, get_task('task-1') gave {done!r:.200}, not it COMPLETED"
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
                claimed = [t.id for t in await store.claim("w", 5, 30)]
                assert claimed == ["task-2"], (
                    f"after reopening, claim took {claimed}: task-2, pending, alone"
                )
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

        before = _footprint(store_url)
        for asked in ("first", "second"):
            if run(ask) is True:
                pytest.fail(
                    f"exists() said True for a fresh store ({asked} time asked), before "
                    "anything opened it: it must say whether open() would find the store "
                    "there, and create nothing itself",
                    pytrace=False,
                )
        after = _footprint(store_url)
        if after != before:
            pytest.fail(
                f"exists() made something at the store's path: before it was asked, "
                f"{_shown_footprint(before)}; after, {_shown_footprint(after)}. It is asked "
                "of a store that may never be opened (wfe tasks on a mistyped URL): create "
                "nothing, no folder, no file",
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
        statuses = [t and t.status.value for t in done]
        assert statuses == ["completed"] * 20, (
            f"tasks run through a workflow by an engine on the store ended {statuses}"
        )
        assert [t and t.outputs for t in done] == [
            {"double": n * 2, "check": "ok"} for n in range(20)
        ], "tasks run by an engine on the store did not keep each phase's output"


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

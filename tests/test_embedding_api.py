"""The engine embedded in an app: its public API called the way an app calls it,
from several threads and event loops, and called wrongly."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from core_util import wait_for

import wfcore
from wfcore import (
    ECSWorkflowEngine,
    InvalidTaskError,
    Phase,
    StoreError,
    Task,
    TaskStatus,
    UnknownWorkflowError,
    WorkflowError,
    hookimpl,
)
from wfcore.testing import run_sync


def _in_threads(calls: list[Callable[[], Coroutine[Any, Any, Any]]]) -> list[Any]:
    """Run each coroutine in a thread of its own, each with its own event loop, all
    starting at the same moment (as a web app's request threads do); return what
    each returned or raised."""
    start = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        async def at_once() -> Any:
            start.wait()
            return await calls[i]()

        try:
            results[i] = run_sync(at_once(), timeout=20)
        except BaseException as exc:  # kept for the test to look at
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_first_calls_from_several_event_loops_at_once_all_open_the_one_store(make_engine):
    """A fresh engine whose first calls come from several threads' event loops at
    once (a web app started under load) opens its store once, and every call works."""
    engine: ECSWorkflowEngine = make_engine()
    engine.register_handler("p", lambda task: None)
    engine.register_workflow("w", [Phase("p", assigned_to="functional")])

    def submit(i: int) -> Callable[[], Coroutine[Any, Any, Any]]:
        return lambda: engine.submit_task({"n": i}, "w", task_id=f"t{i}")

    results = _in_threads([submit(i) for i in range(4)])
    assert [getattr(r, "id", r) for r in results] == ["t0", "t1", "t2", "t3"]

    async def stored() -> list[str]:
        return sorted(t.id for t in await engine.list_tasks())

    # The same store (one open) holds all four.
    assert run_sync(stored()) == ["t0", "t1", "t2", "t3"]


def test_a_store_that_cannot_open_fails_each_caller_from_any_loop(tmp_path: Path):
    """When the store cannot be opened, each of the callers waiting at once gets the
    store's error, and none is left waiting."""
    folder = tmp_path / "not-a-file.db"
    folder.mkdir()
    engine = ECSWorkflowEngine(store=f"sqlite://{folder}", load_plugins=False)
    results = _in_threads([lambda: engine.get_task("x") for _ in range(4)])
    for result in results:
        assert isinstance(result, StoreError), result
        assert "is a folder" in str(result)


def test_the_engine_works_on_after_a_failed_open(tmp_path: Path):
    """An open that failed is tried again at the next call."""
    path = tmp_path / "later.db"
    path.mkdir()  # a folder where the file should be
    engine = ECSWorkflowEngine(store=f"sqlite://{path}", load_plugins=False)
    with pytest.raises(StoreError, match="is a folder"):
        run_sync(engine.get_task("x"))
    path.rmdir()
    engine.register_workflow("w", [Phase("p", assigned_to="human")])
    task = run_sync(engine.submit_task(1, "w"))
    assert task.status is TaskStatus.PENDING
    run_sync(engine.aclose())


def test_one_id_twice_in_a_batch_with_files_stores_the_first_with_its_files(make_engine):
    """Two requests of one task id in one submit_tasks call: as for any id already
    submitted, the second gets the first one's task back; the files stored are the
    first one's, never the second's (nor a mix)."""
    engine: ECSWorkflowEngine = make_engine()
    engine.register_workflow("w", [Phase("ask", assigned_to="human")])

    async def scenario() -> None:
        both = await engine.submit_tasks(
            [
                {"data": 1, "workflow_name": "w", "task_id": "a", "artifacts": {"f": b"one"}},
                {"data": 2, "workflow_name": "w", "task_id": "a", "artifacts": {"f": b"two"}},
                {"data": 3, "workflow_name": "w", "task_id": "b"},
                {"data": 4, "workflow_name": "w", "task_id": "b", "artifacts": {"g": b"four"}},
            ]
        )
        assert [(t.id, t.data, [a.name for a in t.artifacts]) for t in both] == [
            ("a", 1, ["f"]),
            ("a", 1, ["f"]),
            ("b", 3, []),
            ("b", 3, []),
        ]
        assert await engine.read_artifact("a", "f") == b"one"
        stored_b = await engine.get_task("b")
        assert stored_b is not None and stored_b.artifacts == []
        store = await engine.get_store()
        # No file of the second request was left behind either.
        assert sorted(p.name for p in store.artifacts_dir.iterdir()) == ["a"]
        assert [p.name for p in (store.artifacts_dir / "a").iterdir()] == ["f"]

    run_sync(scenario())


class _Shout:
    @hookimpl
    def wfe_register_handlers(self, register: Callable[..., None]) -> None:
        register("shout", lambda task: None)


class _Static:
    @staticmethod
    @hookimpl
    def wfe_register_handlers(register: Callable[..., None]) -> None:
        register("static", lambda task: None)


@pytest.mark.parametrize(
    ("plugins", "message"),
    [
        (["wfe_kafka"], "not str 'wfe_kafka': pass the plugin object or module itself"),
        ("wfe_kafka", "plugins takes a list of plugin objects or modules, not str"),
        (None, "plugins takes a list of plugin objects or modules, not NoneType"),
        ([None], "plugins takes plugin objects or modules, not NoneType None"),
        (
            [_Shout],
            "plugin _Shout is a class whose hook wfe_register_handlers takes self: "
            "pass an instance, plugins=[_Shout()]",
        ),
    ],
)
def test_plugins_that_would_register_nothing_are_refused(plugins: Any, message: str):
    """A plugin's name, or its class, passed where the plugin object belongs would
    otherwise register no hook (or fail at its first call) with no word of why."""
    with pytest.raises(TypeError) as caught:
        ECSWorkflowEngine(store="memory://", load_plugins=False, plugins=plugins)
    assert message in str(caught.value)


def test_a_class_whose_hooks_need_no_instance_is_a_plugin():
    engine = ECSWorkflowEngine(store="memory://", load_plugins=False, plugins=[_Static])
    assert engine.handler_for("static") is not None


@pytest.mark.parametrize("store", ["", "  "])
def test_an_empty_store_url_is_refused_not_taken_for_the_default(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """``store=os.environ.get("APP_STORE", "")`` with the variable unset must not make
    a store in whatever folder the program runs in."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WFE_STORE", raising=False)
    with pytest.raises(ValueError, match="store is an empty URL"):
        ECSWorkflowEngine(store=store, load_plugins=False)
    engine = ECSWorkflowEngine(store="memory://", load_plugins=False)
    with pytest.raises(ValueError, match="store is an empty URL"):
        engine.use_store(store)
    assert engine.store_url == "memory://"
    assert not (tmp_path / ".wfe").exists()


def test_use_store_refuses_what_the_constructor_refuses(tmp_path: Path):
    """A Path given to use_store() is refused as the constructor refuses it, saying
    which URL to give, instead of failing later inside the store plugin."""
    engine = ECSWorkflowEngine(store="memory://", load_plugins=False)
    path = tmp_path / "jobs.db"
    for given in (path, 5, None):
        with pytest.raises(TypeError, match="store must be a URL"):
            engine.use_store(given)  # type: ignore[arg-type]
    with pytest.raises(TypeError) as caught:
        ECSWorkflowEngine(store=path, load_plugins=False)  # type: ignore[arg-type]
    assert f"(for a SQLite file: 'sqlite://{path}')" in str(caught.value)
    assert engine.store_url == "memory://"


def test_artifact_mistakes_inside_a_phase_name_the_mistake(make_engine):
    """Text that is not a str or cannot be encoded is an ArtifactError saying so, and
    a phase adding an artifact to its task by id is told to pass its Task object;
    the phase's proper artifacts are stored as ever."""
    engine: ECSWorkflowEngine = make_engine()
    refused: list[str] = []

    async def handler(task: Task) -> None:
        attempts: list[Callable[[], Coroutine[Any, Any, Any]]] = [
            lambda: engine.add_artifact_text(task, "a.txt", b"bytes"),  # type: ignore[arg-type]
            lambda: engine.add_artifact_text(task, "a.txt", "é", encoding="ascii"),
            lambda: engine.add_artifact_text(task, "a.txt", "x", encoding="no-such-codec"),
            lambda: engine.add_artifact_text(task.id, "a.txt", "by id"),
        ]
        for attempt in attempts:
            try:
                await attempt()
            except WorkflowError as exc:
                refused.append(f"{type(exc).__name__}: {exc}")
        await engine.add_artifact_text(task, "a.txt", "kept")

    engine.register_handler("p", handler)
    engine.register_workflow("w", [Phase("p", assigned_to="functional")])

    async def scenario() -> Task:
        task = await engine.submit_task(1, "w")
        await engine.run_until_idle()
        return await engine.wait_for_task(task.id)

    task = run_sync(scenario())
    assert task.status is TaskStatus.COMPLETED
    assert run_sync(engine.read_artifact(task, "a.txt")) == b"kept"
    assert refused[0] == (
        "ArtifactError: artifact 'a.txt': text must be a str, not bytes "
        "(add_artifact_bytes takes bytes)"
    )
    assert refused[1].startswith(
        "ArtifactError: artifact 'a.txt': cannot encode its text: 'ascii' codec can't encode"
    )
    assert refused[2] == (
        "ArtifactError: artifact 'a.txt': cannot encode its text: unknown encoding: no-such-codec"
    )
    assert refused[3].startswith("TaskStateError: cannot add artifact 'a.txt'")
    assert refused[3].endswith(
        "pass the phase's own Task object (the handler's task), not its id or a copy"
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"older_than": "30d"}, "older_than must be a number of seconds or a timedelta, not str"),
        ({"older_than": "10"}, "older_than must be a number of seconds or a timedelta, not str"),
        ({"older_than": None}, "older_than must be a number of seconds or a timedelta"),
        ({"older_than": True}, "older_than must be a number of seconds or a timedelta"),
        ({"older_than": 0, "workflow_name": 5}, "workflow_name must be a name or None, not 5"),
    ],
)
def test_purge_refuses_arguments_of_the_wrong_kind_and_deletes_nothing(
    make_engine, kwargs: dict[str, Any], message: str
):
    """``purge("30d")`` (the command line's spelling) is a TypeError naming the
    argument, not a float() error; nor is "10" or True taken for a number of seconds."""
    engine: ECSWorkflowEngine = make_engine()
    engine.register_handler("p", lambda task: None)
    engine.register_workflow("w", [Phase("p", assigned_to="functional")])

    async def scenario() -> None:
        task = await engine.submit_task(1, "w")
        await engine.run_until_idle()
        with pytest.raises(TypeError) as caught:
            await engine.purge(**kwargs)
        assert message in str(caught.value)
        assert await engine.get_task(task.id) is not None

    run_sync(scenario())


def test_stop_with_an_error_that_is_not_an_exception_is_refused_at_the_call(make_engine):
    """``stop(error="why")`` would make ``run()`` fail with Python's own "exceptions
    must derive from BaseException", and win over a real error given after it."""
    engine: ECSWorkflowEngine = make_engine()

    async def scenario() -> None:
        run = asyncio.ensure_future(engine.run())
        await wait_for(lambda: engine.running, what="the engine to run")
        with pytest.raises(TypeError, match=r"stop\(error=...\) takes an exception, not str"):
            engine.stop(error="the broker is gone")  # type: ignore[arg-type]
        engine.stop(error=ConnectionError("the broker is gone"))
        with pytest.raises(ConnectionError, match="the broker is gone"):
            await run

    run_sync(scenario())


def test_a_request_without_a_workflow_says_so(make_engine):
    """``submit_tasks([{"data": ...}])`` (the workflow left out) said "unknown
    workflow None", as if a workflow of that name were missing."""
    engine: ECSWorkflowEngine = make_engine()
    engine.register_workflow("w", [Phase("ask", assigned_to="human")])
    with pytest.raises(UnknownWorkflowError) as caught:
        run_sync(engine.submit_tasks([{"data": 1}]))
    assert str(caught.value) == "no workflow named (workflow_name is None) (known: w)"
    assert caught.value.name is None and caught.value.known == ["w"]


def test_aclose_inside_a_phase_fails_that_phase_at_once_saying_why(make_engine):
    """It waited for the run to end, and so for its own phase: the run stalled for
    shutdown_timeout, then handed the task back to do the same at the next start."""
    engine: ECSWorkflowEngine = make_engine(shutdown_timeout=30)

    async def closes(task: Task) -> None:
        await wfcore.current_engine().aclose()

    engine.register_handler("p", closes)
    engine.register_workflow("w", [Phase("p", assigned_to="functional")])

    async def scenario() -> Task:
        task = await engine.submit_task(1, "w")
        await engine.run_until_idle()
        return await engine.wait_for_task(task.id)

    task = run_sync(scenario(), timeout=20)
    assert task.status is TaskStatus.FAILED
    assert task.error == (
        "WorkflowError: aclose() inside a phase of this engine would wait for its own phase "
        "to end; call engine.stop() to stop after it, and aclose() where run() was awaited"
    )


def test_list_tasks_takes_a_list_of_statuses(make_engine):
    """The stores list by several statuses; the engine called a list an "unknown
    status"."""
    engine: ECSWorkflowEngine = make_engine()

    def fails(task: Task) -> None:
        raise RuntimeError("no")

    engine.register_handler("bad", fails)
    engine.register_workflow("w", [Phase("ask", assigned_to="human")])
    engine.register_workflow("f", [Phase("bad", assigned_to="functional")])

    async def scenario() -> None:
        waiting = await engine.submit_task(1, "w", task_id="waiting")
        failed = await engine.submit_task(2, "f", task_id="failed")
        await engine.submit_task(3, "w", task_id="cancelled")
        await engine.cancel("cancelled")
        await engine.run_until_idle()
        assert (await engine.get_task(failed.id)).status is TaskStatus.FAILED  # type: ignore[union-attr]
        found = await engine.list_tasks(["failed", TaskStatus.CANCELLED])
        assert [t.id for t in found] == ["cancelled", "failed"]
        assert await engine.list_tasks([]) == []
        assert [t.id for t in await engine.list_tasks(("waiting_human",))] == [waiting.id]
        with pytest.raises(InvalidTaskError, match="unknown status 'done'"):
            await engine.list_tasks(["failed", "done"])
        with pytest.raises(TypeError, match="status must be a status, or a list of them"):
            await engine.list_tasks(b"failed")  # type: ignore[arg-type]

    run_sync(scenario())


def test_plugins_given_as_a_generator_are_all_registered():
    engine = ECSWorkflowEngine(
        store="memory://", load_plugins=False, plugins=(p for p in [_Shout(), _Static])
    )
    assert engine.handler_for("shout") is not None
    assert engine.handler_for("static") is not None


def test_wfe_run_past_its_deadline_names_the_coroutine(wfe_engine, wfe_run):
    """A test whose scenario never ended failed with a bare TimeoutError; the run it
    cancelled still hands its task back."""
    engine: ECSWorkflowEngine = wfe_engine
    started = threading.Event()

    async def forever(task: Task) -> None:
        started.set()
        await asyncio.Event().wait()

    engine.register_handler("p", forever)
    engine.register_workflow("w", [Phase("p", assigned_to="functional")])

    async def scenario() -> None:
        await engine.submit_task(1, "w", task_id="t1")
        await engine.run()

    with pytest.raises(asyncio.TimeoutError) as caught:
        wfe_run(scenario(), timeout=0.5)
    assert str(caught.value) == (
        "test_wfe_run_past_its_deadline_names_the_coroutine.<locals>.scenario() did not "
        "finish within 0.5 s (wfe_run's timeout)"
    )
    assert started.is_set()
    task = wfe_run(engine.get_task("t1"))
    assert task is not None and task.status is TaskStatus.PENDING  # handed back

    async def waits() -> None:
        await engine.wait_for_task("t1", timeout=0)

    with pytest.raises(TimeoutError, match="task 't1' is still pending after 0s"):
        wfe_run(waits(), timeout=30)


def test_the_default_store_stays_the_one_opened_after_a_chdir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """An engine built without store= opens .wfe/wfe.db under the current folder.
    A program that then changes folder (a daemon's chdir("/")) kept that store open,
    but store_url named one in the new folder, and a reopen after aclose() opened
    that other, empty store: the tasks looked gone."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    monkeypatch.delenv("WFE_STORE", raising=False)
    monkeypatch.chdir(first)
    engine = ECSWorkflowEngine(load_plugins=False)
    engine.register_workflow("w", [Phase("ask", assigned_to="human")])
    opened = f"sqlite://{first / '.wfe' / 'wfe.db'}"

    async def scenario() -> None:
        task = await engine.submit_task(1, "w")
        assert engine.store_url == opened
        monkeypatch.chdir(second)
        monkeypatch.setenv("WFE_STORE", "memory://")
        assert engine.store_url == opened
        await engine.aclose()
        assert await engine.get_task(task.id) is not None
        assert engine.store_url == opened
        await engine.aclose()

    run_sync(scenario())
    assert not (second / ".wfe").exists()


def test_suspend_and_checkpoint_given_a_task_id_say_they_take_the_task(make_engine):
    """The other methods take a task or its id; these two change the phase's own
    Task object, and an id failed with "'str' object has no attribute 'id'"."""
    engine: ECSWorkflowEngine = make_engine()
    refused: list[str] = []

    async def handler(task: Task) -> None:
        try:
            await engine.checkpoint(task.id)  # type: ignore[arg-type]
        except TypeError as exc:
            refused.append(str(exc))
        try:
            engine.suspend(task.id)  # type: ignore[arg-type]
        except TypeError as exc:
            refused.append(str(exc))
        engine.suspend(task, reason="the right way")

    engine.register_handler("p", handler)
    engine.register_workflow("w", [Phase("p", assigned_to="functional")])

    async def scenario() -> Task:
        task = await engine.submit_task(1, "w")
        await engine.run_until_idle()
        return await engine.wait_for_task(task.id, waiting=True)

    task = run_sync(scenario())
    assert task.status is TaskStatus.WAITING_HUMAN and task.waiting_reason == "the right way"
    assert refused == [
        "checkpoint() takes the running phase's Task object (the handler's task), "
        "not str (a task id)",
        "suspend() takes the running phase's Task object (the handler's task), not str (a task id)",
    ]


def test_checkpoint_after_suspend_says_the_task_waits(make_engine):
    engine: ECSWorkflowEngine = make_engine()

    async def handler(task: Task) -> None:
        task.context["ticket"] = "T-1"
        engine.suspend(task, TaskStatus.WAITING_IO, reason="ticket T-1")
        await engine.checkpoint(task)

    engine.register_handler("p", handler)
    engine.register_workflow("w", [Phase("p", assigned_to="functional")])

    async def scenario() -> Task:
        await engine.submit_task(1, "w", task_id="t")
        await engine.run_until_idle()
        return await engine.get_task("t")

    task = run_sync(scenario())
    assert task.status is TaskStatus.FAILED
    assert task.error == (
        "InvalidTaskError: checkpoint() after suspend() or wait_for_children(): task 't' "
        "waits now (waiting_io), and is stored as it is once its phase returns (to store "
        "it sooner, call checkpoint() before)"
    )


def test_a_workflow_name_that_is_not_unicode_text_is_an_unknown_workflow(make_engine):
    """A name with a lone surrogate (a command line argument in another encoding, a
    JSON message's "\\udcff") reached SQLite, which raised UnicodeEncodeError: the
    whole batch failed, the good requests in it too."""
    engine: ECSWorkflowEngine = make_engine()
    engine.register_workflow("w", [Phase("ask", assigned_to="human")])
    bad = "caf\udce9"

    async def scenario() -> None:
        with pytest.raises(UnknownWorkflowError, match="unknown workflow 'caf\\\\udce9'"):
            await engine.submit_task(1, bad)
        results = await engine.submit_tasks(
            [{"data": 1, "workflow_name": bad}, {"data": 2, "workflow_name": "w"}],
            return_exceptions=True,
        )
        assert isinstance(results[0], UnknownWorkflowError)
        assert isinstance(results[1], Task) and results[1].data == 2
        assert await engine.list_tasks(workflow_name=bad) == []
        assert [t.data for t in await engine.list_tasks(workflow_name="w")] == [2]

    run_sync(scenario())


@pytest.mark.parametrize("names", [["w\udcff"], [""], [5]])
def test_only_workflows_that_no_workflow_could_have_are_refused_when_built(names: list[Any]):
    """A name with a lone surrogate was taken, and every claim of the worker then
    failed in SQLite with UnicodeEncodeError."""
    with pytest.raises(ValueError, match="only_workflows must be non-empty workflow names"):
        ECSWorkflowEngine(store="memory://", load_plugins=False, only_workflows=names)


def test_register_workflow_with_a_spec_takes_the_description_given_beside_it():
    """As start_phases given beside a WorkflowSpec wins over the spec's, so does
    description (it was dropped without a word)."""
    engine = ECSWorkflowEngine(store="memory://", load_plugins=False)
    spec = wfcore.WorkflowSpec(name="x", phases=[Phase("a")], description="old")
    assert engine.register_workflow("w", spec, "new").description == "new"
    assert engine.workflows["w"].description == "new"
    assert engine.register_workflow("v", spec).description == "old"

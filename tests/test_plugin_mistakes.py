"""A plugin author's mistakes, each refused when the plugin is registered (or its store
is opened) with one line naming the plugin and the hook: a misspelled hook or
argument, a plugin registered too late, contributions register() refuses, a store
hook returning something else than a store, an adapter that cannot run; and
WFE_TRACE_PLUGINS tracing the classifier like every other hook."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pluggy
import pytest

from wfcore import (
    MemoryStore,
    Phase,
    PluginError,
    StoreError,
    Task,
    TaskStatus,
    WorkflowError,
    hookimpl,
)
from wfcore.adapters import FunctionalAdapter


class WrongArg:
    @hookimpl
    def wfe_classify(self, tsk: Task, engine: Any) -> None:
        return None


class Misspelled:
    @hookimpl
    def wfe_task_complete(self, task: Task) -> None:
        pass


class Watcher:
    @hookimpl
    def wfe_task_submitted(self, task: Task) -> None:
        pass


class LateHandlers:
    @hookimpl
    def wfe_register_handlers(self, register: Any) -> None:
        register("late", lambda task: None)


# -- registering a plugin -------------------------------------------------------------


def test_an_argument_the_hook_does_not_pass_is_a_plugin_error(wfe_engine_factory):
    with pytest.raises(PluginError) as caught:
        wfe_engine_factory(plugins=[WrongArg()])
    assert str(caught.value) == (
        "plugin 'WrongArg': wfe_classify takes 'tsk', which the hook does not pass "
        "(it passes: task, engine)"
    )
    assert isinstance(caught.value, WorkflowError)


def test_an_argument_the_hook_does_not_pass_is_refused_later_too(wfe_engine_factory):
    pm = wfe_engine_factory().plugin_manager
    late = WrongArg()
    with pytest.raises(PluginError, match=r"^plugin 'late': wfe_classify takes 'tsk'"):
        pm.register(late, name="late")
    assert not pm.is_registered(late) and pm.get_plugin("late") is None


def test_other_refusals_of_pluggy_are_one_line_too(wfe_engine_factory):
    class NotAWrapper:
        @hookimpl(wrapper=True)
        def wfe_task_submitted(self, task: Task) -> None:
            pass

    with pytest.raises(PluginError) as caught:
        wfe_engine_factory(plugins=[NotAWrapper()])
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith("Plugin 'NotAWrapper' for hook 'wfe_task_submitted' ")


def test_a_misspelled_hook_gets_a_suggestion(wfe_engine_factory):
    with pytest.raises(PluginError) as caught:
        wfe_engine_factory(plugins=[Misspelled()])
    assert str(caught.value) == (
        "plugin 'Misspelled': unknown hook 'wfe_task_complete' (did you mean 'wfe_task_completed'?)"
    )


def test_a_made_up_hook_name_gets_no_far_fetched_suggestion(wfe_engine_factory):
    """Every hook starts "wfe_": compared with it, any name starting "wfe_o" was close
    to wfe_open_store."""

    class MadeUp:
        @hookimpl
        def wfe_on_done(self, task: Task) -> None:
            pass

    with pytest.raises(PluginError) as caught:
        wfe_engine_factory(plugins=[MadeUp()])
    assert str(caught.value) == "plugin 'MadeUp': unknown hook 'wfe_on_done'"


def test_a_misspelled_hook_is_refused_in_a_plugin_registered_later(wfe_engine_factory):
    pm = wfe_engine_factory().plugin_manager
    late = Misspelled()
    with pytest.raises(PluginError) as caught:
        pm.register(late)
    assert str(caught.value) == (
        "plugin 'Misspelled': unknown hook 'wfe_task_complete' (did you mean 'wfe_task_completed'?)"
    )
    assert not pm.is_registered(late)
    assert not pm.hook.wfe_task_complete.get_hookimpls()


def test_check_pending_says_it_in_the_same_words(wfe_engine_factory):
    """For a plugin registered past wfcore's checks (pluggy's own register)."""
    pm = wfe_engine_factory().plugin_manager
    pluggy.PluginManager.register(pm, Misspelled(), name="sneaked-in")
    with pytest.raises(PluginError) as caught:
        pm.check_pending()
    assert str(caught.value) == (
        "plugin 'sneaked-in': unknown hook 'wfe_task_complete' (did you mean 'wfe_task_completed'?)"
    )


def test_a_hook_nothing_resembles_gets_no_suggestion(wfe_engine_factory):
    class Unrelated:
        @hookimpl
        def make_coffee(self) -> None:
            pass

    with pytest.raises(PluginError) as caught:
        wfe_engine_factory(plugins=[Unrelated()])
    assert str(caught.value) == "plugin 'Unrelated': unknown hook 'make_coffee'"


def test_a_plugin_registered_without_a_name_is_named_by_its_class(wfe_engine_factory):
    pm = wfe_engine_factory().plugin_manager
    first, second = Watcher(), Watcher()
    assert pm.register(first) == "Watcher"
    assert pm.register(second) == "Watcher-2"
    assert pm.get_plugin("Watcher") is first and pm.get_plugin("Watcher-2") is second

    class AsyncClassify:
        @hookimpl
        async def wfe_classify(self, task: Task) -> None:
            return None

    with pytest.raises(PluginError, match=r"^plugin 'AsyncClassify': wfe_classify must be"):
        pm.register(AsyncClassify())


def test_passed_in_plugins_of_one_class_are_numbered(wfe_engine_factory):
    engine = wfe_engine_factory(plugins=[Watcher(), Watcher()])
    names = [name for name, _ in engine.plugin_manager.list_name_plugin()]
    assert "Watcher" in names and "Watcher-2" in names


def test_a_plugin_registered_too_late_for_its_contributions_is_warned_about(
    wfe_engine_factory, caplog
):
    engine = wfe_engine_factory()
    with caplog.at_level(logging.WARNING, logger="wfcore.plugins"):
        assert engine.plugin_manager.register(LateHandlers()) == "LateHandlers"
    assert [r.getMessage() for r in caplog.records] == [
        "plugin 'LateHandlers' was registered too late: its wfe_register_handlers is not "
        "called (only as the engine is built; pass the plugin to "
        "ECSWorkflowEngine(plugins=[...]) instead)"
    ]
    assert engine.handler_for("late") is None


def test_a_store_plugin_registered_before_the_store_opens_is_not_too_late(
    wfe_engine_factory, wfe_run, caplog
):
    class JarStore:
        @hookimpl
        def wfe_open_store(self, url: str) -> Any:
            return MemoryStore(url) if url.startswith("jar://") else None

    engine = wfe_engine_factory(store="jar://cookies")
    with caplog.at_level(logging.WARNING, logger="wfcore.plugins"):
        engine.plugin_manager.register(JarStore())
        store = wfe_run(engine.get_store())
        engine.plugin_manager.register(JarStore())  # now it is
    assert isinstance(store, MemoryStore)
    assert [r.getMessage() for r in caplog.records] == [
        "plugin 'JarStore-2' was registered too late: its wfe_open_store is not called "
        "(only as the engine opens its store; pass the plugin to "
        "ECSWorkflowEngine(plugins=[...]) instead)"
    ]


def test_lifecycle_hooks_of_a_late_plugin_are_not_warned_about(wfe_engine_factory, caplog):
    """As wfe_kafka registers its hooks once its engine starts."""
    engine = wfe_engine_factory()
    with caplog.at_level(logging.WARNING, logger="wfcore.plugins"):
        engine.plugin_manager.register(Watcher(), name="watcher")
    assert caplog.records == []


# -- what contribution hooks register -------------------------------------------------


def contributing(name: str, hook: str, *registrations: tuple[Any, Any]) -> Any:
    """A plugin object of class ``name`` whose ``hook`` registers ``registrations``."""

    def implementation(self: Any, register: Any) -> None:
        for key, value in registrations:
            register(key, value)

    return type(name, (), {hook: hookimpl(implementation)})()


@pytest.mark.parametrize(
    ("hook", "registration", "message"),
    [
        (
            "wfe_register_adapters",
            ("robot", FunctionalAdapter()),
            "an adapter for unknown task type 'robot' (one of: human, agentic, functional, or ai)",
        ),
        (
            "wfe_register_adapters",
            ("functional", object()),
            "the functional adapter (object) has no run method: an adapter needs "
            "async def run(self, task, phase, engine)",
        ),
        (
            "wfe_register_adapters",
            ("agentic", FunctionalAdapter),
            "the agentic adapter is the class FunctionalAdapter, not an instance of it",
        ),
        (
            "wfe_register_workflows",
            ("bw", "not a list"),
            "workflow 'bw': phases must be a list of Phase, not str",
        ),
        (
            "wfe_register_workflows",
            ("bw", [Phase("a"), {"target_classification": "b"}]),
            "workflow 'bw': phases[1]: must be a Phase, not dict",
        ),
        (
            "wfe_register_workflows",
            ("bw", []),
            "workflow 'bw': phases: a workflow needs at least one phase",
        ),
        (
            "wfe_register_handlers",
            ("a", "not a function"),
            "handler for 'a' is not callable",
        ),
        (
            "wfe_register_handlers",
            ("", lambda task: None),
            "classification must be a non-empty string",
        ),
    ],
    ids=[
        "unknown-task-type",
        "adapter-without-run",
        "adapter-class",
        "phases-a-string",
        "phase-a-dict",
        "no-phases",
        "handler-not-callable",
        "empty-classification",
    ],
)
def test_what_register_refuses_names_the_plugin_and_the_hook(
    wfe_engine_factory, hook, registration, message
):
    with pytest.raises(PluginError) as caught:
        wfe_engine_factory(plugins=[contributing("Sloppy", hook, registration)])
    assert str(caught.value) == f"plugin 'Sloppy' failed in {hook}: {message}"


@pytest.mark.parametrize(
    ("hook", "registration", "what"),
    [
        ("wfe_register_workflows", ("my_io", [Phase("a")]), "workflow 'my_io'"),
        ("wfe_register_handlers", ("shout", lambda task: None), "handler for 'shout'"),
    ],
)
def test_a_duplicate_between_plugins_names_both(wfe_engine_factory, hook, registration, what):
    first = contributing("First", hook, registration)
    second = contributing("Second", hook, registration)
    with pytest.raises(PluginError) as caught:
        wfe_engine_factory(plugins=[first, second])
    # pluggy calls the plugin registered last first.
    assert str(caught.value) == (
        f"plugin 'First' failed in {hook}: {what} registered twice "
        "(by plugin 'Second' and plugin 'First')"
    )


def test_a_duplicate_within_one_plugin_names_it_once(wfe_engine_factory):
    twice = contributing(
        "Twice", "wfe_register_workflows", ("w", [Phase("a")]), ("w", [Phase("b")])
    )
    with pytest.raises(PluginError) as caught:
        wfe_engine_factory(plugins=[twice])
    assert str(caught.value) == (
        "plugin 'Twice' failed in wfe_register_workflows: "
        "workflow 'w' registered twice by plugin 'Twice'"
    )


def test_a_workflow_error_raised_by_a_contribution_hook_names_the_plugin(wfe_engine_factory):
    class Unconfigured:
        @hookimpl
        def wfe_register_workflows(self, register: Any) -> None:
            raise PluginError("WFE_EXAMPLE_FLOWS is not set")

    with pytest.raises(PluginError) as caught:
        wfe_engine_factory(plugins=[Unconfigured()])
    assert str(caught.value) == (
        "plugin 'Unconfigured' failed in wfe_register_workflows: WFE_EXAMPLE_FLOWS is not set"
    )


def test_the_app_may_still_replace_a_plugins_workflow(wfe_engine_factory):
    engine = wfe_engine_factory(
        plugins=[contributing("P", "wfe_register_workflows", ("w", [Phase("a")]))]
    )
    engine.register_workflow("w", [Phase("b")])
    assert engine.workflows["w"].classifications == ["b"]


def test_register_workflow_refuses_phases_that_are_no_list(wfe_engine_factory):
    engine = wfe_engine_factory()
    with pytest.raises(WorkflowError) as caught:
        engine.register_workflow("w", "ab")  # type: ignore[arg-type]
    assert str(caught.value) == "phases must be a list of Phase, not str"
    assert "w" not in engine.workflows


# -- adapters -------------------------------------------------------------------------


def test_register_adapter_refuses_an_adapter_without_run(wfe_engine_factory):
    engine = wfe_engine_factory()
    with pytest.raises(TypeError) as caught:
        engine.register_adapter("functional", object())
    assert str(caught.value) == (
        "the functional adapter (object) has no run method: an adapter needs "
        "async def run(self, task, phase, engine)"
    )
    with pytest.raises(TypeError) as caught:
        engine.register_adapter("human", FunctionalAdapter)
    assert str(caught.value) == (
        "the human adapter is the class FunctionalAdapter, not an instance of it"
    )
    assert type(engine.adapter_for("functional")) is FunctionalAdapter  # unchanged


# -- the store a plugin opens ---------------------------------------------------------


class BrokenOpen(MemoryStore):
    async def open(self) -> None:
        raise IsADirectoryError(21, "Is a directory", "/srv/jar")


@pytest.mark.parametrize(
    ("returned", "message"),
    [
        (MemoryStore, "must return a Store instance, not the class MemoryStore"),
        ("memory://", "must return a Store, not str"),
        ((MemoryStore("jar://x"),), "must return a Store, not tuple"),
    ],
    ids=["class", "str", "tuple"],
)
def test_a_store_hook_returning_no_store_is_refused(wfe_engine_factory, wfe_run, returned, message):
    class JarStore:
        @hookimpl
        def wfe_open_store(self, url: str) -> Any:
            return returned

    engine = wfe_engine_factory(plugins=[JarStore()], store="jar://cookies")
    with pytest.raises(PluginError) as caught:
        wfe_run(engine.get_store())
    assert str(caught.value) == f"plugin 'JarStore': wfe_open_store {message}"


def test_a_plugin_store_failing_to_open_is_a_store_error(wfe_engine_factory, wfe_run):
    class JarStore:
        @hookimpl
        def wfe_open_store(self, url: str) -> Any:
            return BrokenOpen(url)

    engine = wfe_engine_factory(plugins=[JarStore()], store="jar://cookies")
    with pytest.raises(StoreError) as caught:
        wfe_run(engine.get_store())
    assert str(caught.value) == (
        "cannot open the store 'jar://cookies': IsADirectoryError: "
        "[Errno 21] Is a directory: '/srv/jar'"
    )
    assert isinstance(caught.value.__cause__, IsADirectoryError)


def test_a_store_error_from_open_is_kept_as_it_is(wfe_engine_factory, wfe_run):
    class Refusing(MemoryStore):
        async def open(self) -> None:
            raise StoreError("jar://cookies: the jar is empty")

    class JarStore:
        @hookimpl
        def wfe_open_store(self, url: str) -> Any:
            return Refusing(url)

    engine = wfe_engine_factory(plugins=[JarStore()], store="jar://cookies")
    with pytest.raises(StoreError) as caught:
        wfe_run(engine.get_store())
    assert str(caught.value) == "jar://cookies: the jar is empty"


@pytest.mark.parametrize(
    ("folder", "what"),
    [
        (None, "None, not a pathlib.Path"),
        ("/srv/artifacts", "'/srv/artifacts', not a pathlib.Path"),
        (Path("artifacts"), "'artifacts', a relative path"),
    ],
)
def test_a_plugin_store_without_an_absolute_artifacts_dir_is_refused_as_it_opens(
    wfe_engine_factory, wfe_run, folder, what
):
    """A relative folder would follow the process's working folder (a daemon's "/"),
    so that artifacts written by one process are not found by the next."""

    class Misplaced(MemoryStore):
        async def open(self) -> None:
            await super().open()
            if folder is None:
                del self.artifacts_dir
            else:
                self.artifacts_dir = folder

        async def close(self) -> None:
            self.closed = True

    opened: list[Misplaced] = []

    class JarStore:
        @hookimpl
        def wfe_open_store(self, url: str) -> Any:
            opened.append(Misplaced(url))
            return opened[-1]

    engine = wfe_engine_factory(plugins=[JarStore()], store="jar://cookies")
    with pytest.raises(StoreError) as caught:
        wfe_run(engine.get_store())
    assert str(caught.value) == (
        f"cannot open the store 'jar://cookies': Misplaced.artifacts_dir is {what}, once "
        "open() returned: set it to the absolute path of the folder the store's artifact "
        "files go in"
    )
    assert opened[0].closed  # not left open


# -- WFE_TRACE_PLUGINS ----------------------------------------------------------------


def test_the_classifier_is_traced_in_one_line_without_the_task(
    monkeypatch, wfe_engine_factory, wfe_run, caplog
):
    monkeypatch.setenv("WFE_TRACE_PLUGINS", "1")

    class Classifier:
        @hookimpl
        def wfe_classify(self, task: Task) -> str:
            return "b"

    class Passer:
        @hookimpl
        def wfe_classify(self, task: Task) -> None:
            return None

    # Passer is registered last, so asked first; Classifier answers.
    engine = wfe_engine_factory(store="memory://", plugins=[Classifier(), Passer()])
    engine.register_handler("a", lambda task: None)
    engine.register_handler("b", lambda task: None)
    engine.register_workflow("w", [Phase("a"), Phase("b")])

    async def scenario() -> Task | None:
        task = await engine.submit_task({"card": "4111-secret"}, "w")
        await engine.run_until_idle()
        return await engine.get_task(task.id)

    with caplog.at_level(logging.DEBUG, logger="wfcore.plugins"):
        task = wfe_run(scenario())
    assert task is not None and task.status is TaskStatus.COMPLETED
    traced = [r.getMessage() for r in caplog.records if r.name == "wfcore.plugins"]
    classify = [line for line in traced if "wfe_classify" in line]
    assert classify == ["wfe_classify: calling Passer", "wfe_classify: calling Classifier"]
    assert not any("4111-secret" in line for line in traced), traced

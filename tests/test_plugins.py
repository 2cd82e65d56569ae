"""Plugins: a third-party package installed with an entry point, the switches that
control loading, and in-process plugins (stores by URL scheme, tracing, mistakes)."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import wfcore.plugins
from wfcore import (
    ECSWorkflowEngine,
    MemoryStore,
    Phase,
    PluginError,
    StoreError,
    Task,
    TaskStatus,
    hookimpl,
)
from wfcore.plugins import SYNC_ONLY_HOOKS, make_plugin_manager, plugin_infos

TESTS_DIR = Path(__file__).resolve().parent
PROBE = TESTS_DIR / "apps" / "plugin_probe.py"


def pip_install(sources: dict[str, Path], root: Path) -> dict[str, Path]:
    """``pip install --target``, one folder per package, the installs run side by side.

    The packages land in those folders only, never in the main environment. Each is
    built from a copy so no build files appear under tests/. Without the ``wheel``
    package, setuptools needs pip's isolated build (which fetches it from PyPI).
    """
    isolation = [] if importlib.util.find_spec("wheel") is None else ["--no-build-isolation"]
    running = {}
    for key, source in sources.items():
        copy = root / f"src-{key}"
        shutil.copytree(source, copy)
        target = root / key
        command = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--disable-pip-version-check",
            *isolation,
            "--target",
            str(target),
            str(copy),
        ]
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        running[key] = (proc, target)
    for key, (proc, _) in running.items():
        output, _ = proc.communicate(timeout=180)
        assert proc.returncode == 0, f"installing {key} failed:\n{output.decode()}"
    return {key: target for key, (_, target) in running.items()}


@pytest.fixture(scope="session")
def plugin_sites(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two install folders: one with wfe-testplugin, one with wfe-badplugin."""
    return pip_install(
        {"good": TESTS_DIR / "plugin_pkg", "bad": TESTS_DIR / "plugin_pkg_bad"},
        tmp_path_factory.mktemp("plugin-sites"),
    )


def probe(site: Path, *args: str, **env: str) -> dict[str, Any]:
    """Run apps/plugin_probe.py with ``site`` on the path and return its report."""
    environ = {
        k: v
        for k, v in os.environ.items()
        if k not in ("WFE_LOAD_PLUGINS", "WFE_DISABLED_PLUGINS", "WFE_TRACE_PLUGINS", "PYTHONPATH")
    }
    environ["PYTHONPATH"] = str(site)
    environ.update(env)
    done = subprocess.run(
        [sys.executable, str(PROBE), *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_installed_plugin_contributes_adapter_handler_and_workflow(plugin_sites):
    # Default loading: every installed plugin, this one among them.
    report = probe(plugin_sites["good"])
    assert "testplugin" in report["plugins"]
    assert "plugin-flow" in report["workflows"]
    assert report["has_prepare_handler"]
    # Only this plugin, so that its adapter is the one that replaces the built-in.
    alone = probe(plugin_sites["good"], WFE_LOAD_PLUGINS="wfe-testplugin")
    assert alone["plugins"] == ["testplugin"]
    assert alone["agentic_adapter"] == "ShoutingAgent"
    assert alone["result"] == [
        "completed",
        {"prepare": "prepared hello", "speak": "PREPARED HELLO"},
    ]


def test_wfe_load_plugins_selects_by_distribution_or_entry_point(plugin_sites):
    site = plugin_sites["good"]
    assert "testplugin" in probe(site, WFE_LOAD_PLUGINS="wfe-testplugin")["plugins"]
    # Spelled as pip compares distribution names.
    assert "testplugin" in probe(site, WFE_LOAD_PLUGINS="WFE_TestPlugin")["plugins"]
    assert "testplugin" in probe(site, WFE_LOAD_PLUGINS="other, testplugin")["plugins"]
    assert "testplugin" not in probe(site, WFE_LOAD_PLUGINS="some-other-plugin")["plugins"]


@pytest.mark.parametrize(
    ("args", "env"),
    [
        ((), {"WFE_LOAD_PLUGINS": ""}),
        ((), {"WFE_DISABLED_PLUGINS": "testplugin"}),
        ((), {"WFE_DISABLED_PLUGINS": "wfe-testplugin"}),
        ((), {"WFE_DISABLED_PLUGINS": "other, WFE_TestPlugin"}),
        (("--no-load",), {}),
    ],
    ids=[
        "WFE_LOAD_PLUGINS-empty",
        "WFE_DISABLED_PLUGINS",
        "WFE_DISABLED_PLUGINS-distribution",
        "WFE_DISABLED_PLUGINS-as-pip-compares",
        "load_plugins-False",
    ],
)
def test_plugin_loading_can_be_turned_off(plugin_sites, args, env):
    report = probe(plugin_sites["good"], *args, **env)
    assert "testplugin" not in report["plugins"]
    assert "plugin-flow" not in report["workflows"]
    assert report["agentic_adapter"] == "AgenticAdapter"
    assert not report["has_prepare_handler"]


def wfe_on(site: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``wfe ARGS`` with ``site`` on the path (and the plugin switches unset)."""
    environ = {
        k: v
        for k, v in os.environ.items()
        if k not in ("WFE_LOAD_PLUGINS", "WFE_DISABLED_PLUGINS", "WFE_TRACE_PLUGINS", "PYTHONPATH")
    }
    environ.update(PYTHONPATH=str(site), **env)
    done = subprocess.run(
        [sys.executable, "-m", "wfcore.cli", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done


def test_wfe_plugins_says_why_installed_plugins_are_not_loaded(plugin_sites):
    site = plugin_sites["good"]
    loaded = json.loads(wfe_on(site, "plugins", "--json").stdout)
    assert "testplugin" in [p["name"] for p in loaded]

    off = wfe_on(site, "plugins", WFE_LOAD_PLUGINS="").stdout
    assert off.startswith("no plugins loaded: WFE_LOAD_PLUGINS is empty; installed: ")
    assert "testplugin (wfe-testplugin)" in off
    # Loading only this one, and disabling it by its distribution's name.
    only = {"WFE_LOAD_PLUGINS": "wfe-testplugin", "WFE_DISABLED_PLUGINS": "wfe-testplugin"}
    disabled = wfe_on(site, "plugins", **only)
    assert disabled.stdout.startswith("no plugins loaded: ")
    assert "testplugin (wfe-testplugin) disabled by WFE_DISABLED_PLUGINS" in disabled.stdout
    assert disabled.stderr == ""  # a name that matches warns of nothing


def test_a_disabled_name_that_matches_no_plugin_is_warned_about(plugin_sites, tmp_path):
    site = plugin_sites["good"]
    names = "wfe-testplugn, testplugin, wfcore.stores.memory"
    result = wfe_on(site, "plugins", "--json", "--all", WFE_DISABLED_PLUGINS=names)
    spec = json.dumps({"name": "w", "phases": [{"target_classification": "a"}]})
    define = ("submit", "-", "--classification", "define_workflow", "--data", spec)
    store = f"sqlite://{tmp_path / 'wfe.db'}"
    submitted = wfe_on(site, "--store", store, *define, WFE_DISABLED_PLUGINS=names)
    # Once per process, though the command line and its engine each make a manager.
    assert submitted.stderr.count("WFE_DISABLED_PLUGINS names") == 1, submitted.stderr
    warnings = [line for line in result.stderr.splitlines() if "WFE_DISABLED_PLUGINS" in line]
    assert len(warnings) == 1, result.stderr
    # After the time the wfe command starts its log lines with.
    assert (
        " WARNING wfcore.plugins: WFE_DISABLED_PLUGINS names 'wfe-testplugn', which is no "
        "plugin, so it disables nothing (installed: "
    ) in warnings[0]
    assert "wfe-testplugin" in warnings[0] and "wfcore.adapters" in warnings[0]
    listed = [p["name"] for p in json.loads(result.stdout)]
    assert "testplugin" not in listed and "wfcore.stores.memory" not in listed
    assert "wfcore.stores.sqlite" in listed


def test_a_disabled_plugin_passed_in_is_known_by_its_name(monkeypatch, caplog):
    monkeypatch.setenv("WFE_DISABLED_PLUGINS", "Passed, NotAPluginAnywhere")

    class Passed:
        @hookimpl
        def wfe_task_submitted(self) -> None:
            pass

    with caplog.at_level(logging.WARNING, logger="wfcore.plugins"):
        engine = ECSWorkflowEngine("memory://", load_plugins=False, plugins=[Passed()])
    assert not any(isinstance(p, Passed) for _, p in engine.plugin_manager.list_name_plugin())
    warned = [r.getMessage() for r in caplog.records if r.name == "wfcore.plugins"]
    assert len(warned) == 1 and "'NotAPluginAnywhere'" in warned[0], warned


def test_a_misspelled_hook_implementation_fails_loudly(plugin_sites):
    report = probe(plugin_sites["bad"])
    assert report["error"] == "PluginError"
    assert report["message"] == (
        "plugin 'badplugin': unknown hook 'wfe_task_complete' (did you mean 'wfe_task_completed'?)"
    )
    # Blocking the broken plugin lets the engine start.
    unblocked = probe(plugin_sites["bad"], WFE_DISABLED_PLUGINS="badplugin")
    assert "error" not in unblocked and "badplugin" not in unblocked["plugins"]


def test_misspelled_hook_in_an_in_process_plugin(wfe_engine_factory):
    class Typo:
        @hookimpl
        def wfe_phase_finish(self, task: Task) -> None:
            pass

    with pytest.raises(PluginError) as caught:
        wfe_engine_factory(plugins=[Typo()])
    assert "wfe_phase_finish" in str(caught.value)


@pytest.mark.parametrize(
    "hook", ["wfe_register_handlers", "wfe_register_workflows", "wfe_open_store"]
)
def test_a_plugin_failing_in_a_contribution_hook_is_named(wfe_engine_factory, wfe_run, hook):
    class Broken:
        pass

    def fail(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("config file missing")

    setattr(Broken, hook, hookimpl(fail))
    with pytest.raises(PluginError) as caught:
        engine = wfe_engine_factory(plugins=[Broken()])
        wfe_run(engine.get_store())
    assert str(caught.value) == (
        f"plugin 'Broken' failed in {hook}: RuntimeError: config file missing"
    )


def test_a_plugin_store_is_chosen_by_url_scheme(wfe_engine_factory, wfe_store_url, wfe_run):
    opened: list[str] = []

    class JarStore:
        @hookimpl
        def wfe_open_store(self, url: str) -> Any:
            if not url.startswith("jar://"):
                return None
            opened.append(url)
            return MemoryStore(url)

    engine = wfe_engine_factory(plugins=[JarStore()], store="jar://cookies")
    engine.register_handler("a", lambda task: setattr(task, "output", "from the jar"))
    engine.register_workflow("w", [Phase("a")])
    others = wfe_engine_factory(plugins=[JarStore()])  # sqlite still handled by the built-in

    async def scenario():
        task = await engine.submit_task(None, "w")
        await engine.run_until_idle()
        store = await others.get_store()
        return await engine.get_task(task.id), store

    task, sqlite_store = wfe_run(scenario())
    assert opened == ["jar://cookies"]
    assert task.output == "from the jar"
    assert type(sqlite_store).__name__ == "SQLiteStore"
    assert engine.store_url == "jar://cookies"


def test_blocking_a_builtin_store(monkeypatch, wfe_run):
    monkeypatch.setenv("WFE_DISABLED_PLUGINS", "wfcore.stores.memory")
    engine = ECSWorkflowEngine("memory://", load_plugins=False)
    with pytest.raises(StoreError) as caught:
        wfe_run(engine.get_store())
    assert "memory://" in str(caught.value)


def test_a_url_no_store_handles_names_what_the_registered_stores_take(
    monkeypatch, wfe_store_url, wfe_run
):
    """Not the built-ins a WFE_DISABLED_PLUGINS took away, as if they were there."""

    class JarStore:
        @hookimpl
        def wfe_open_store(self, url: str) -> Any:
            return MemoryStore(url) if url.startswith("jar://") else None

    def refusal(url: str, plugins: tuple[Any, ...] = ()) -> str:
        engine = ECSWorkflowEngine(url, load_plugins=False, plugins=plugins)
        with pytest.raises(StoreError) as caught:
            wfe_run(engine.get_store())
        return str(caught.value)

    assert refusal("postgres://db") == (
        "no storage backend handles 'postgres://db' (built-in: sqlite:///path, memory://)"
    )
    monkeypatch.setenv("WFE_DISABLED_PLUGINS", "wfcore.stores.sqlite")
    assert refusal(wfe_store_url, (JarStore(),)) == (
        f"no storage backend handles {wfe_store_url!r} (built-in: memory://; disabled by "
        "WFE_DISABLED_PLUGINS: sqlite:///path (wfcore.stores.sqlite); store plugins: JarStore)"
    )
    monkeypatch.setenv("WFE_DISABLED_PLUGINS", "wfcore.stores.sqlite,wfcore.stores.memory")
    assert refusal("memory://") == (
        "no storage backend handles 'memory://' (built-in: none; disabled by "
        "WFE_DISABLED_PLUGINS: sqlite:///path (wfcore.stores.sqlite), "
        "memory:// (wfcore.stores.memory))"
    )


def test_two_plugins_serving_one_scheme_are_warned_about_once(
    monkeypatch, wfe_engine_factory, wfe_run, caplog
):
    """The one registered last wins; one that raises for the URL does not serve it."""
    monkeypatch.setattr(wfcore.plugins, "_WARNED_STORES", set())
    made: list[tuple[str, MemoryStore]] = []

    class FirstJar:
        @hookimpl
        def wfe_open_store(self, url: str) -> Any:
            if not url.startswith("jar://"):
                return None
            made.append(("FirstJar", MemoryStore(url)))
            return made[-1][1]

    class SecondJar:
        @hookimpl
        def wfe_open_store(self, url: str) -> Any:
            if not url.startswith("jar://"):
                return None
            made.append(("SecondJar", MemoryStore(url)))
            return made[-1][1]

    class Picky:
        @hookimpl
        def wfe_open_store(self, url: str) -> Any:
            if url.startswith("jar://"):
                raise StoreError(f"{url!r} names no jar this plugin knows")
            return None

    class Broken:
        # Returns what is no store (the engine refuses it): it serves no scheme.
        @hookimpl
        def wfe_open_store(self, url: str) -> Any:
            return MemoryStore if url.startswith("jar://") else None

    plugins = [Broken(), Picky(), FirstJar(), SecondJar()]
    with caplog.at_level(logging.WARNING, logger="wfcore.plugins"):
        engine = wfe_engine_factory(plugins=plugins, store="jar://cookies")
        store = wfe_run(engine.get_store())
        other = wfe_engine_factory(plugins=plugins, store="jar://biscuits")
        wfe_run(other.get_store())
    # Once warned of, the other plugin is not asked again.
    assert [label for label, _ in made] == ["SecondJar", "FirstJar", "SecondJar"]
    assert store is made[0][1]  # the other answer is left unopened, unused
    assert [r.getMessage() for r in caplog.records if r.name == "wfcore.plugins"] == [
        "plugins 'SecondJar' and 'FirstJar' both open jar:// stores; 'SecondJar' wins "
        "(wfcore asks the plugin registered last first, and the built-in stores after all "
        "others); WFE_DISABLED_PLUGINS=FirstJar keeps that and ends this warning"
    ]

    infos = plugin_infos(engine.plugin_manager, include_builtins=True, store_urls=["jar://x"])
    assert {info["name"]: info.get("store_schemes") for info in infos} == {
        "Broken": [],
        "FirstJar": ["jar://"],
        "Picky": [],
        "SecondJar": ["jar://"],
        "wfcore.adapters": None,
        "wfcore.stores.memory": ["memory://"],
        "wfcore.stores.sqlite": ["sqlite://"],
    }


def test_a_memory_store_exists_while_open(wfe_run):
    store = MemoryStore()

    async def scenario() -> list[bool]:
        said = [await store.exists()]
        await store.open()
        said.append(await store.exists())
        await store.close()
        return [*said, await store.exists()]

    assert wfe_run(scenario()) == [False, True, False]


def test_trace_plugins_logs_hook_calls(monkeypatch, wfe_engine_factory, wfe_run, caplog):
    monkeypatch.setenv("WFE_TRACE_PLUGINS", "1")

    class Watcher:
        @hookimpl
        def wfe_task_submitted(self) -> None:
            pass

        @hookimpl
        def wfe_task_cancelled(self) -> None:
            pass

    engine = wfe_engine_factory(store="memory://", plugins=[Watcher()])
    engine.register_workflow("w", [Phase("a", assigned_to="human")])

    async def scenario():
        task = await engine.submit_task(None, "w")
        await engine.run_until_idle()
        await engine.cancel(task.id)

    with caplog.at_level(logging.DEBUG, logger="wfcore.plugins"):
        wfe_run(scenario())
    traced = " ".join(r.getMessage() for r in caplog.records if r.name == "wfcore.plugins")
    assert "wfe_open_store" in traced
    # Lifecycle hooks too, which the engine calls one implementation at a time.
    assert "wfe_task_submitted: calling Watcher" in traced
    assert "wfe_task_cancelled: calling Watcher" in traced


def test_an_async_classifier_is_refused_when_registered(wfe_engine_factory):
    class AsyncClassifier:
        @hookimpl
        async def wfe_classify(self, task: Task) -> str:
            return "a"

    with pytest.raises(PluginError) as caught:
        wfe_engine_factory(plugins=[AsyncClassifier()])
    assert str(caught.value) == (
        "plugin 'AsyncClassifier': wfe_classify must be a plain function, not async def "
        "(its first result that is not None is used as it is, and a coroutine is not None)"
    )


@pytest.mark.parametrize("hook", sorted(SYNC_ONLY_HOOKS))
def test_async_implementations_of_sync_only_hooks_are_refused(wfe_engine_factory, hook):
    class Eager:
        pass

    async def implementation(*args: Any, **kwargs: Any) -> None:
        return None

    setattr(Eager, hook, hookimpl(implementation))
    with pytest.raises(PluginError) as caught:
        wfe_engine_factory(plugins=[Eager()])
    assert str(caught.value).startswith(
        f"plugin 'Eager': {hook} must be a plain function, not async def ("
    )


def test_a_plugin_registered_later_is_checked_too(wfe_engine_factory):
    """As wfe_kafka registers its hooks once its engine starts."""
    engine = wfe_engine_factory()
    pm = engine.plugin_manager

    class LateStore:
        @hookimpl
        async def wfe_open_store(self, url: str) -> None:
            return None

    class LateWatcher:
        @hookimpl
        async def wfe_task_submitted(self, task: Task) -> None:  # lifecycle: may be async
            pass

    late = LateStore()
    with pytest.raises(PluginError, match="plugin 'late': wfe_open_store must be a plain"):
        pm.register(late, name="late")
    assert not pm.is_registered(late) and pm.get_plugin("late") is None
    assert pm.register(LateWatcher(), name="watcher") == "watcher"


def test_a_classifier_returning_an_awaitable_still_fails_the_task(wfe_engine_factory, wfe_run):
    """A plain function returning a coroutine passes registration; the worker
    refuses its answer (and closes it, unawaited)."""

    async def later() -> str:
        return "a"

    class Sneaky:
        @hookimpl
        def wfe_classify(self, task: Task) -> Any:
            return later()

    engine = wfe_engine_factory(plugins=[Sneaky()])
    engine.register_handler("a", lambda task: None)
    engine.register_workflow("w", [Phase("a")])

    async def scenario():
        task = await engine.submit_task(None, "w")
        await engine.run_until_idle()
        return await engine.get_task(task.id)

    task = wfe_run(scenario())
    assert task.status is TaskStatus.FAILED
    assert task.error == "PluginError: plugin 'Sneaky': wfe_classify must not be async"


def test_sync_only_hooks_are_the_ones_documented_so():
    import inspect

    import wfcore.hookspecs

    documented = {
        name
        for name, spec in inspect.getmembers(wfcore.hookspecs, inspect.isfunction)
        if name.startswith("wfe_") and "Must not be async" in (spec.__doc__ or "")
    }
    firstresult = {
        name
        for name, caller in vars(make_plugin_manager(load_entry_points=False).hook).items()
        if name.startswith("wfe_") and caller.spec and caller.spec.opts.get("firstresult")
    }
    assert SYNC_ONLY_HOOKS == documented
    assert firstresult <= SYNC_ONLY_HOOKS


def test_wfe_testing_fixtures_give_each_test_its_own_engine(
    wfe_engine, wfe_engine_factory, wfe_store_url, wfe_run
):
    assert isinstance(wfe_engine, ECSWorkflowEngine)
    assert wfe_engine.store_url == wfe_store_url
    assert wfe_store_url.startswith("sqlite:///") and not wfe_store_url.startswith("sqlite:////")
    assert wfe_engine.plugin_manager.list_name_plugin()  # the built-ins only
    assert all(
        name.startswith("wfcore.") for name, _ in wfe_engine.plugin_manager.list_name_plugin()
    )
    other = wfe_engine_factory(store="memory://")
    assert other.store_url == "memory://"
    assert wfe_run(wfe_engine.list_tasks()) == []

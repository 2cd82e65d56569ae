"""A plugin class registered where an instance belongs (an entry point naming the
class, or ``engine.plugin_manager.register(MyPlugin)``) is refused with one line
naming the plugin: pluggy would call its methods without ``self``, so every hook
would fail at each call, a lifecycle hook's only logged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_plugin_entry_points import install, wfe

from wfcore import ECSWorkflowEngine, PluginError, Task, hookimpl

PLUGIN_CLASS = """
from wfcore import hookimpl


class ClassPlugin:
    @hookimpl
    def wfe_task_completed(self, task):
        pass


plugin = ClassPlugin()
"""


def test_an_entry_point_naming_a_class_is_one_line(tmp_path: Path) -> None:
    site = install(
        tmp_path / "site",
        "wfe-classy",
        "wfe_classy",
        {"classy": "wfe_classy:ClassPlugin"},
        PLUGIN_CLASS,
    )
    done = wfe([site], "plugins", WFE_LOAD_PLUGINS="wfe-classy")
    assert done.returncode == 1, done.stdout
    assert done.stderr == (
        "Error: plugin 'classy' is the class ClassPlugin, whose hook wfe_task_completed "
        "takes self: register an instance, ClassPlugin() (an entry point names an "
        "instance made in its module, or the module itself) "
        "(set WFE_DISABLED_PLUGINS=classy to skip it)\n"
    )


def test_an_entry_point_naming_an_instance_loads(tmp_path: Path) -> None:
    site = install(
        tmp_path / "site",
        "wfe-classy",
        "wfe_classy",
        {"classy": "wfe_classy:plugin"},
        PLUGIN_CLASS,
    )
    done = wfe([site], "plugins", WFE_LOAD_PLUGINS="wfe-classy")
    assert done.returncode == 0, done.stderr
    assert "classy" in done.stdout


class Watcher:
    @hookimpl
    def wfe_task_completed(self, task: Task) -> None:
        pass


class StaticWatcher:
    @hookimpl
    @staticmethod
    def wfe_task_completed(task: Task) -> None:
        pass


def test_registering_a_class_later_is_refused() -> None:
    engine = ECSWorkflowEngine("memory://", load_plugins=False)
    with pytest.raises(PluginError) as caught:
        engine.plugin_manager.register(Watcher)
    assert str(caught.value).startswith(
        "plugin 'Watcher' is the class Watcher, whose hook wfe_task_completed takes self"
    )
    assert not engine.plugin_manager.is_registered(Watcher)


def test_a_class_of_static_hooks_registers() -> None:
    engine = ECSWorkflowEngine("memory://", load_plugins=False)
    plugin: Any = StaticWatcher
    assert engine.plugin_manager.register(plugin) == "StaticWatcher"

"""A hook wrapper (``@hookimpl(wrapper=True)`` or ``hookwrapper=True``) is refused when
its plugin is registered, naming the plugin and the hook: wfcore calls each
implementation on its own, so a wrapper's generator never ran (a lifecycle wrapper
did nothing, silently) or was taken for its result (a classifier's generator failed
the task as an unknown classification)."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from wfcore import PluginError, Task, hookimpl


class LifecycleWrapper:
    @hookimpl(wrapper=True)
    def wfe_task_completed(self, task: Task) -> Generator[None, Any, Any]:
        result = yield
        return result


class OldStyleWrapper:
    @hookimpl(hookwrapper=True)
    def wfe_task_submitted(self, task: Task) -> Generator[None, Any, None]:
        yield


class ClassifierWrapper:
    @hookimpl(wrapper=True)
    def wfe_classify(self, task: Task) -> Generator[None, Any, Any]:
        result = yield
        return result


@pytest.mark.parametrize(
    ("plugin", "said"),
    [
        (
            LifecycleWrapper(),
            "plugin 'LifecycleWrapper': wfe_task_completed is a hook wrapper (wrapper=True)",
        ),
        (
            OldStyleWrapper(),
            "plugin 'OldStyleWrapper': wfe_task_submitted is a hook wrapper (hookwrapper=True)",
        ),
        (
            ClassifierWrapper(),
            "plugin 'ClassifierWrapper': wfe_classify is a hook wrapper (wrapper=True)",
        ),
    ],
)
def test_a_hook_wrapper_is_refused(wfe_engine_factory: Any, plugin: Any, said: str) -> None:
    with pytest.raises(PluginError) as caught:
        wfe_engine_factory(plugins=[plugin])
    assert str(caught.value) == (
        f"{said}, which wfcore does not run: it calls each implementation on its own; "
        "make it a plain implementation (tryfirst=True or trylast=True to order it)"
    )


def test_a_wrapper_registered_later_is_refused_and_not_kept(wfe_engine_factory: Any) -> None:
    pm = wfe_engine_factory().plugin_manager
    late = LifecycleWrapper()
    with pytest.raises(PluginError, match=r"^plugin 'late': wfe_task_completed is a hook"):
        pm.register(late, name="late")
    assert not pm.is_registered(late)

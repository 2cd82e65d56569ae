"""A contribution hook's ``register`` takes its two arguments by position or by the
names the hook's documentation gives them (``register(name=..., phases=...)``);
called with too few or too many, the error names the plugin, the hook and what
``register`` takes, not an internal function's name."""

from __future__ import annotations

from typing import Any

import pytest

from wfcore import Phase, PluginError, Task, hookimpl
from wfcore.adapters import FunctionalAdapter


class ByName:
    @hookimpl
    def wfe_register_adapters(self, register: Any) -> None:
        register(task_type="functional", adapter=FunctionalAdapter())

    @hookimpl
    def wfe_register_handlers(self, register: Any) -> None:
        async def shout(task: Task) -> None:
            task.output = str(task.data).upper()

        register(classification="shout", handler=shout)

    @hookimpl
    def wfe_register_workflows(self, register: Any) -> None:
        register(name="w", phases=[Phase("shout", assigned_to="functional")])


def test_register_takes_the_documented_names(wfe_engine_factory: Any, wfe_run: Any) -> None:
    engine = wfe_engine_factory(plugins=[ByName()])

    async def scenario() -> Any:
        task = await engine.submit_task("hi", "w")
        await engine.run_until_idle()
        return await engine.wait_for_task(task.id)

    assert wfe_run(scenario()).output == "HI"


class HandlerOnly:
    @hookimpl
    def wfe_register_handlers(self, register: Any) -> None:
        async def shout(task: Task) -> None:
            pass

        register(shout)


class ThreeArgs:
    @hookimpl
    def wfe_register_workflows(self, register: Any) -> None:
        register("w", [Phase("a")], "extra")


class WrongName:
    @hookimpl
    def wfe_register_adapters(self, register: Any) -> None:
        register(type="functional", adapter=FunctionalAdapter())


@pytest.mark.parametrize(
    ("plugin", "said"),
    [
        (
            HandlerOnly(),
            "plugin 'HandlerOnly' failed in wfe_register_handlers: register takes "
            "(classification, handler): missing a required argument: 'handler'",
        ),
        (
            ThreeArgs(),
            "plugin 'ThreeArgs' failed in wfe_register_workflows: register takes "
            "(name, phases): too many positional arguments",
        ),
        (
            WrongName(),
            "plugin 'WrongName' failed in wfe_register_adapters: register takes "
            "(task_type, adapter): missing a required argument: 'task_type'",
        ),
    ],
)
def test_register_called_wrongly_says_what_it_takes(
    wfe_engine_factory: Any, plugin: Any, said: str
) -> None:
    with pytest.raises(PluginError) as caught:
        wfe_engine_factory(plugins=[plugin])
    assert str(caught.value) == said

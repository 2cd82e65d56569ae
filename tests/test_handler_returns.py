"""What a phase's handler returns: an awaitable (a coroutine returned, not awaited)
is awaited, whether the handler is async or plain; any other value is not the
phase's output (task.output is), and the worker says so once per handler."""

from __future__ import annotations

import logging

from wfcore import Phase, Task, TaskStatus


async def _set_output(task: Task) -> None:
    task.output = "the result"


async def forgot_await(task: Task) -> object:
    return _set_output(task)  # a coroutine, returned rather than awaited


def plain_forgot_await(task: Task) -> object:
    return _set_output(task)


async def returns_value(task: Task) -> object:
    return {"answer": 42}


def test_what_a_handler_returns(make_engine, wfe_run, caplog) -> None:
    engine = make_engine()
    for handler in (forgot_await, plain_forgot_await, returns_value):
        engine.register_handler(handler.__name__, handler)
        engine.register_workflow(
            handler.__name__, [Phase(handler.__name__, assigned_to="functional")]
        )

    async def scenario() -> list[Task]:
        ids = [
            (await engine.submit_task({}, name)).id
            for name in ("forgot_await", "plain_forgot_await", "returns_value", "returns_value")
        ]
        await engine.run_until_idle()
        return [await engine.get_task(i) for i in ids]

    with caplog.at_level(logging.WARNING, logger="wfcore"):
        done = wfe_run(scenario())
    assert [t.status for t in done] == [TaskStatus.COMPLETED] * 4
    assert [t.output for t in done] == ["the result", "the result", None, None]
    said = [r.getMessage() for r in caplog.records if "returned a" in r.getMessage()]
    assert said == [
        "the handler returns_value of phase 'returns_value' returned a dict, which is not "
        "used: a handler sets task.output (this is said once per handler)"
    ]


def _returning(value: object) -> object:
    async def handler(task: Task) -> object:
        return value

    return handler


def test_handlers_of_one_name_are_each_said_once(make_engine, wfe_run, caplog) -> None:
    engine = make_engine()
    for name, value in (("a", 1), ("b", "text")):  # one factory: one __qualname__
        engine.register_handler(name, _returning(value))
        engine.register_workflow(name, [Phase(name, assigned_to="functional")])

    async def scenario() -> None:
        for name in ("a", "b", "a"):
            await engine.submit_task({}, name)
        await engine.run_until_idle()

    with caplog.at_level(logging.WARNING, logger="wfcore"):
        wfe_run(scenario())
    said = [r.getMessage() for r in caplog.records if "returned a" in r.getMessage()]
    assert sorted(line.split(" which")[0] for line in said) == [
        "the handler _returning.<locals>.handler of phase 'a' returned an int,",
        "the handler _returning.<locals>.handler of phase 'b' returned a str,",
    ]

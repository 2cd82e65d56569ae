"""A command argument holding a NUL character (a JSON "\\u0000" in a workflow defined at
run time, say) fails the attempt with an error naming the argument, not Python's bare
``ValueError: embedded null byte``."""

from __future__ import annotations

from wfcore import Phase, Task, TaskStatus


def test_a_nul_in_a_defined_workflows_argument_is_named(make_engine, wfe_run):
    engine = make_engine(allowed_commands=["echo"])
    spec = {
        "name": "greet",
        "phases": [{"target_classification": "say", "command": ["echo", "hello\u0000world"]}],
    }

    async def scenario() -> Task:
        task = await engine.submit_task(spec, None, classification="define_workflow")
        await engine.run_until_idle()
        stored = await engine.get_task(task.id)
        assert stored is not None
        return stored

    task = wfe_run(scenario())
    assert task.status is TaskStatus.FAILED
    assert task.error == (
        "CommandError: cannot start command 'echo': its argument 1 ('hello\\x00world') "
        "holds a NUL character, which no program can be given"
    )


def test_a_nul_in_a_registered_workflows_program_is_named(make_engine, wfe_run):
    engine = make_engine()
    engine.register_workflow("w", [Phase("say", command=["ec\x00ho", "hi"])])

    async def scenario() -> Task:
        task = await engine.submit_task({}, "w")
        await engine.run_until_idle()
        stored = await engine.get_task(task.id)
        assert stored is not None
        return stored

    task = wfe_run(scenario())
    assert task.status is TaskStatus.FAILED
    assert task.error is not None
    assert task.error.startswith("CommandError: cannot start command 'ec\\x00ho': its argument 0")

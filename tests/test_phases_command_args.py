"""A command argument holding a NUL character (a JSON "\\u0000" in a workflow defined at
run time, say) is refused with the workflow, naming the argument: no program can be
given it, and Python's own error would be a bare ``ValueError: embedded null byte``."""

from __future__ import annotations

import pytest
from core_util import run_task

from wfcore import InvalidWorkflowError, Phase, TaskStatus


def test_a_nul_in_a_defined_workflows_argument_fails_the_definition(make_engine, wfe_run):
    engine = make_engine(allowed_commands=["echo"])
    spec = {
        "name": "greet",
        "phases": [{"target_classification": "say", "command": ["echo", "hello\u0000world"]}],
    }

    task = wfe_run(run_task(engine, spec, None, classification="define_workflow"))
    assert task.status is TaskStatus.FAILED
    assert task.error is not None
    assert task.error.startswith("InvalidWorkflowError: ")
    assert (
        "phases[0].command[1]: 'hello\\x00world' holds a NUL character, "
        "which no program can be given"
    ) in task.error


def test_a_nul_in_a_registered_workflows_program_is_refused(make_engine):
    engine = make_engine()
    with pytest.raises(InvalidWorkflowError, match=r"command\[0\]: 'ec\\x00ho' holds a NUL"):
        engine.register_workflow("w", [Phase("say", command=["ec\x00ho", "hi"])])

"""An app for the CLI tests: a last phase answered by a person, and a completed callback."""

import os
from pathlib import Path

from wfcore import ECSWorkflowEngine, Phase

engine = ECSWorkflowEngine()
engine.register_workflow("sign", [Phase("sign", assigned_to="human")])


async def completed(task):
    with Path(os.environ["CLI_APP_LOG"]).open("a") as log:
        log.write(f"{task.id} {task.output}\n")


engine.register_task_completed_hook(completed)

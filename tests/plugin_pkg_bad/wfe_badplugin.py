"""A wfcore plugin whose hook implementation is misspelled (wfe_task_complete)."""

from __future__ import annotations

from wfcore import Task, hookimpl


@hookimpl
def wfe_task_complete(task: Task) -> None:
    print("never called", task.id)

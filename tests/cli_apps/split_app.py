"""An app for the CLI tests: two one-phase workflows, for workers that run only one."""

from wfcore import ECSWorkflowEngine, Phase

engine = ECSWorkflowEngine(poll_interval=0.05)


async def mark(task):
    task.output = {"ran": task.workflow_name}


for name in ("left", "right"):
    engine.register_handler(name, mark)
    engine.register_workflow(name, [Phase(name, assigned_to="functional")])

"""An app for the CLI tests: a phase whose handler raises, so its task fails with a traceback."""

from wfcore import ECSWorkflowEngine, Phase

engine = ECSWorkflowEngine(poll_interval=0.05, retry_delay=0.05)


def _check(n):
    if n < 0:
        raise ValueError(f"n must not be negative, got {n}")


async def check(task):
    _check(task.data["n"])
    task.output = task.data


engine.register_handler("check", check)
engine.register_workflow("checked", [Phase("check", assigned_to="functional")])
# Two attempts: the first failing one is retried.
engine.register_workflow("retried", [Phase("check", assigned_to="functional", max_attempts=2)])

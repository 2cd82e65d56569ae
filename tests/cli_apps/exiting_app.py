"""An app for the CLI tests: phases that parse arguments with argparse, which calls
sys.exit on bad input, from an async handler and from a plain one."""

import argparse

from wfcore import ECSWorkflowEngine, Phase, Task

engine = ECSWorkflowEngine(poll_interval=0.05, retry_delay=0.05)


def _parse(args: list[str]) -> dict[str, int]:
    parser = argparse.ArgumentParser(prog="tool")
    parser.add_argument("--n", type=int, required=True)
    return vars(parser.parse_args(args))


async def parse(task: Task) -> None:
    task.output = _parse(task.data["args"])


def parse_plain(task: Task) -> None:
    task.output = _parse(task.data["args"])


engine.register_handler("parse", parse)
engine.register_handler("parse_plain", parse_plain)
engine.register_workflow("parse", [Phase("parse", assigned_to="functional")])
engine.register_workflow(
    "parse_plain", [Phase("parse_plain", assigned_to="functional", timeout=30)]
)

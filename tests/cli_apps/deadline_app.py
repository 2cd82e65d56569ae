"""An app for the CLI tests: a person has a fifth of a second to answer, else a default."""

from wfcore import ECSWorkflowEngine, Phase

engine = ECSWorkflowEngine(poll_interval=0.05)
engine.register_workflow(
    "quick",
    [
        Phase(
            "ask",
            assigned_to="human",
            instructions="Answer quickly",
            timeout=0.2,
            on_timeout={"output": {"x": 0}},
        )
    ],
)

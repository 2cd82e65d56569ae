"""An app for the CLI tests of phases: a functional phase, then a human one, and a
second workflow of one functional phase."""

from wfcore import ECSWorkflowEngine, Phase

engine = ECSWorkflowEngine()
engine.register_handler("draft", lambda task: None)
engine.register_workflow(
    "review",
    [Phase("draft", assigned_to="functional"), Phase("approve", assigned_to="human")],
)
engine.register_handler("a", lambda task: None)
engine.register_workflow("quick", [Phase("a", assigned_to="functional")])

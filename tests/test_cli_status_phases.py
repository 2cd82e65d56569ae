"""wfe status says where the unfinished tasks are: how many at each phase of each
workflow, in the workflow's order, and how many no worker has classified yet."""

from __future__ import annotations

import json
from pathlib import Path

_APP = """
from wfcore import ECSWorkflowEngine, Phase

engine = ECSWorkflowEngine()
engine.register_handler("draft", lambda task: None)
engine.register_workflow(
    "review",
    [Phase("draft", assigned_to="functional"), Phase("approve", assigned_to="human")],
)
engine.register_handler("a", lambda task: None)
engine.register_workflow("quick", [Phase("a", assigned_to="functional")])
"""


def test_status_counts_the_unfinished_tasks_of_each_workflow_by_phase(wfe, tmp_path: Path) -> None:
    (tmp_path / "status_app.py").write_text(_APP)
    env = {**wfe.env, "PYTHONPATH": str(tmp_path)}
    for _ in range(3):
        wfe("submit", "review", "--data", "{}", "--app", "status_app:engine", env=env)
    wfe("submit", "quick", "--data", "{}", "--app", "status_app:engine", env=env)
    # Three wait at approve, the quick one completes; then one more of each, unclaimed,
    # and one submitted straight to approve.
    wfe("worker", "status_app:engine", "--until-idle", "-q", env=env)
    wfe("submit", "review", "--data", "{}", env=env)
    wfe("submit", "review", "--data", "{}", "--classification", "approve", env=env)
    wfe("submit", "quick", "--data", "{}", env=env)

    lines = wfe("status").stdout.splitlines()
    start = lines.index("unfinished tasks by phase:")
    # Workflows in the table's order; phases in the workflow's.
    assert lines[start + 1 : start + 3] == [
        "  quick: not classified yet 1",
        "  review: not classified yet 1, approve 4",
    ]
    assert lines[-1].startswith("busy workers: ")

    doc = json.loads(wfe("status", "--json").stdout)
    assert doc["unfinished_by_phase"] == {"review": {"approve": 4}}
    assert doc["unclassified"] == {"review": 1, "quick": 1}


def test_status_of_a_store_with_nothing_unfinished_leaves_the_phases_out(
    wfe, tmp_path: Path
) -> None:
    (tmp_path / "status_app.py").write_text(_APP)
    env = {**wfe.env, "PYTHONPATH": str(tmp_path)}
    wfe("submit", "quick", "--data", "{}", "--app", "status_app:engine", env=env)
    wfe("worker", "status_app:engine", "--until-idle", "-q", env=env)

    assert "unfinished tasks by phase:" not in wfe("status").stdout
    doc = json.loads(wfe("status", "--json").stdout)
    assert doc["unfinished_by_phase"] == {} and doc["unclassified"] == {}

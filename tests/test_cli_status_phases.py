"""wfe status says where the unfinished tasks are: how many at each phase of each
workflow, in the workflow's order, and how many no worker has classified yet."""

from __future__ import annotations

import json


def test_status_counts_the_unfinished_tasks_of_each_workflow_by_phase(wfe) -> None:
    env = wfe.env  # tests/cli_apps/phases_app.py importable
    for _ in range(3):
        wfe("submit", "review", "--data", "{}", "--app", "phases_app:engine", env=env)
    wfe("submit", "quick", "--data", "{}", "--app", "phases_app:engine", env=env)
    # Three wait at approve, the quick one completes; then one more of each, unclaimed,
    # and one submitted straight to approve.
    wfe("worker", "phases_app:engine", "--until-idle", "-q", env=env)
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


def test_status_of_a_store_with_nothing_unfinished_leaves_the_phases_out(wfe) -> None:
    env = wfe.env  # tests/cli_apps/phases_app.py importable
    wfe("submit", "quick", "--data", "{}", "--app", "phases_app:engine", env=env)
    wfe("worker", "phases_app:engine", "--until-idle", "-q", env=env)

    assert "unfinished tasks by phase:" not in wfe("status").stdout
    doc = json.loads(wfe("status", "--json").stdout)
    assert doc["unfinished_by_phase"] == {} and doc["unclassified"] == {}

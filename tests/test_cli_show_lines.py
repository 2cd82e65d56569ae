"""wfe show indents the further lines of a multi-line error or question, so that a
text from a task (a command's error output, say) never reads as a field or a
history event of its own."""

from __future__ import annotations

import json
from pathlib import Path

APP = """\
from wfcore import ECSWorkflowEngine, Phase

engine = ECSWorkflowEngine()
FORGED = "  2026-01-01T00:00:00.000  completed        by=admin"


async def fail(task):
    raise RuntimeError("it broke\\n" + FORGED + "\\nstatus    completed")


engine.register_handler("fail", fail)
engine.register_workflow("w", [Phase("fail", assigned_to="functional")])
"""


def test_a_multi_line_error_stays_under_its_field_and_event(wfe, tmp_path: Path) -> None:
    (tmp_path / "lines_app.py").write_text(APP)
    task_id = wfe("submit", "w", "--app", "lines_app:engine").stdout.strip()
    wfe("worker", "lines_app:engine", "--until-idle", "--quiet")
    assert json.loads(wfe("show", task_id, "--json").stdout)["status"] == "failed"
    shown = wfe("show", task_id).stdout.splitlines()
    assert [line for line in shown if line.startswith("status")] == ["status    failed"]
    forged = "  2026-01-01T00:00:00.000  completed        by=admin"
    error = shown.index("error     RuntimeError: it broke")
    assert shown[error + 1 : error + 3] == [" " * 10 + forged, " " * 10 + "status    completed"]
    # In the history, each event's further lines are deeper than the events.
    events = shown[shown.index("history") + 1 :]
    assert forged not in events
    assert "    " + forged in events
    assert all(line.startswith(("  20", "    ")) for line in events), events

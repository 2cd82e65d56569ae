"""``wfe worker`` tunes the garbage collector of its process once the app is loaded
(what is loaded is frozen out of later collections; young objects are collected in
larger batches), unless the app tuned it itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

_APP = """\
import gc

from wfcore import ECSWorkflowEngine, Phase

{tuning}
engine = ECSWorkflowEngine()


async def look(task):
    task.output = {{"threshold": list(gc.get_threshold()), "frozen": gc.get_freeze_count()}}


engine.register_handler("look", look)
engine.register_workflow("w", [Phase("look", assigned_to="functional")])
"""


@pytest.mark.parametrize(
    ("tuning", "threshold", "frozen"),
    [("", [7000, 10, 10], True), ("gc.set_threshold(1234, 5, 5)", [1234, 5, 5], False)],
)
def test_the_worker_tunes_the_collector_unless_the_app_did(
    wfe, tmp_path: Path, tuning: str, threshold: list[int], frozen: bool
) -> None:
    (tmp_path / "gc_app.py").write_text(_APP.format(tuning=tuning))
    task_id = wfe("submit", "w", "--app", "gc_app:engine").stdout.strip()
    wfe("worker", "gc_app:engine", "--until-idle", "--quiet")
    output = json.loads(wfe("show", task_id, "--json").stdout)["output"]
    assert output["threshold"] == threshold
    assert (output["frozen"] > 0) is frozen

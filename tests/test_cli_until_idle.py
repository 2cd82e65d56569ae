"""wfe worker --until-idle --quiet says why it does not exit when only delayed tasks
are left once it has run what was due."""

from __future__ import annotations

import json
from pathlib import Path

from core_util import background_wfe
from test_cli import APP, _wait_for


def test_a_quiet_worker_says_it_waits_for_delayed_tasks_after_its_work(wfe, tmp_path: Path) -> None:
    wfe("submit", "review", "--app", APP, "--data", '{"n": 1}', "--at", "2099-12-01T08:00:00Z")
    due = wfe("submit", "review", "--app", APP, "--data", '{"n": 2}').stdout.strip()
    log = tmp_path / "worker.log"
    args = ("worker", APP, "--until-idle", "--quiet")
    with background_wfe(*args, cwd=tmp_path, env=wfe.env, log=log) as worker:
        # A task was due as it started: no note then, one once it has run it.
        note = _wait_for(lambda: (text := log.read_text()).endswith("\n") and text, what="the note")
        worker.terminate()
        assert worker.wait(timeout=30) == 0
    assert note == (
        "note: no task is due yet; --until-idle waits for 1 delayed task(s), the next at "
        "2099-12-01 08:00:00 UTC (Ctrl-C to stop)\n"
    )
    assert json.loads(wfe("show", due, "--json").stdout)["status"] == "waiting_human"

"""wfe wait on a task deleted while it waits (purged once finished) says so, not
that the id it was given is unknown."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from core_util import background_wfe
from test_cli import APP, _wait_for


def test_wait_on_a_task_deleted_meanwhile_says_it_was_deleted(wfe, tmp_path: Path) -> None:
    task_id = wfe("submit", "review", "--app", APP, "--delay", "1h").stdout.strip()
    log = tmp_path / "wait.log"
    args = ("wait", task_id, "--timeout", "60s")
    with background_wfe(*args, cwd=tmp_path, env=wfe.env, log=log) as waiting:
        _wait_for(lambda: "this waits until then" in log.read_text(), what="the wait's note")
        # What wfe purge does to a finished task, at once, so that no poll of the
        # wait sees the task finished first.
        with sqlite3.connect(tmp_path / "wfe.db") as db:
            db.execute("DELETE FROM history_parts WHERE task_id = ?", (task_id,))
            db.execute("DELETE FROM tasks WHERE id = ?", (task_id,))
        assert waiting.wait(timeout=30) == 1
    assert log.read_text().splitlines()[-1] == (
        f"Error: task {task_id!r} was deleted while this waited for it: it finished and "
        "was purged (wfe purge) before this saw how; wfe wait cannot tell how it ended now"
    )
    unknown = wfe("wait", "nosuch", check=False)  # never there: unknown, as before
    assert unknown.returncode == 1 and unknown.stderr == "Error: unknown task 'nosuch'\n"

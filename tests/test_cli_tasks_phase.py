"""wfe tasks --phase lists the tasks at one phase (the ones wfe status counts there),
and says so when no stored workflow has the phase asked for: a typo."""

from __future__ import annotations

import json
from pathlib import Path


def _store_with_tasks_at_phases(wfe) -> tuple[dict[str, str], list[str], str]:
    """Three review tasks waiting at approve, a quick one completed at a, and a review
    task no worker has classified yet. Returns the env, the approve ids (newest
    first) and the quick task's id."""
    env = wfe.env  # tests/cli_apps/phases_app.py importable
    app = ("--app", "phases_app:engine")
    approve = [wfe("submit", "review", "--data", "{}", *app, env=env).stdout.strip() for _ in "abc"]
    quick = wfe("submit", "quick", "--data", "{}", *app, env=env).stdout.strip()
    wfe("worker", "phases_app:engine", "--until-idle", "-q", env=env)
    wfe("submit", "review", "--data", "{}", env=env)
    return env, approve[::-1], quick


def test_tasks_lists_only_the_tasks_at_the_phase(wfe) -> None:
    env, approve, quick = _store_with_tasks_at_phases(wfe)

    listed = json.loads(wfe("tasks", "--phase", "approve", "--json", env=env).stdout)
    assert [t["id"] for t in listed] == approve
    assert {(t["classification"], t["status"]) for t in listed} == {("approve", "waiting_human")}
    table = wfe("tasks", "--phase", "approve", env=env).stdout.splitlines()
    assert [line.split()[0] for line in table[1:]] == approve
    both = json.loads(wfe("tasks", "-w", "quick", "--phase", "a", "--json", env=env).stdout)
    assert [t["id"] for t in both] == [quick]
    assert wfe("tasks", "--phase", "approve", "--status", "completed", env=env).stdout == (
        "no tasks\n"
    )


def test_a_page_of_a_phase_counts_the_tasks_at_it(wfe) -> None:
    env, approve, _ = _store_with_tasks_at_phases(wfe)

    first = wfe("tasks", "--phase", "approve", "--limit", "2", env=env).stdout.splitlines()
    assert [line.split()[0] for line in first[1:3]] == approve[:2]
    assert first[-1] == "(2 of 3 shown; --limit N or --offset N for more)"
    rest = wfe("tasks", "--phase", "approve", "--offset", "2", "--json", env=env).stdout
    assert [t["id"] for t in json.loads(rest)] == approve[2:]


def test_a_phase_no_workflow_has_is_a_usage_error(wfe) -> None:
    env, _, _ = _store_with_tasks_at_phases(wfe)

    typo = wfe("tasks", "--phase", "aprove", check=False, env=env)
    assert typo.returncode == 2
    assert "no stored workflow has a phase 'aprove' (wfe workflows lists them)" in typo.stderr
    elsewhere = wfe("tasks", "-w", "quick", "--phase", "approve", check=False, env=env)
    assert elsewhere.returncode == 2
    assert "workflow 'quick' has no phase 'approve' (its phases: a)" in elsewhere.stderr
    # A phase that exists but holds no task (with this status) is no mistake.
    empty = wfe("tasks", "-w", "review", "--phase", "draft", check=False, env=env)
    assert (empty.returncode, empty.stdout) == (0, "no tasks\n")


_FAILING_APP = """
from wfcore import ECSWorkflowEngine, Phase

engine = ECSWorkflowEngine()


def down(task):
    raise ConnectionError("the ledger is down")


engine.register_handler("check", down)
engine.register_handler("pay", down)
engine.register_workflow(
    "invoices", [Phase("check", assigned_to="functional"), Phase("pay", assigned_to="functional")]
)
"""


def test_retry_takes_the_failed_tasks_of_one_phase(wfe, tmp_path: Path) -> None:
    (tmp_path / "failing_app.py").write_text(_FAILING_APP)
    env = {**wfe.env, "PYTHONPATH": str(tmp_path)}
    app = ("--app", "failing_app:engine")
    ids = {
        phase: wfe("submit", "invoices", "--classification", phase, *app, env=env).stdout.strip()
        for phase in ("check", "pay")
    }
    wfe("worker", "failing_app:engine", "--until-idle", "-q", env=env)

    dry = wfe("retry", "--status", "failed", "--phase", "pay", "--dry-run", env=env)
    assert (dry.stdout, dry.stderr) == (
        f"{ids['pay']}\n",
        "would retry 1 failed task(s) (--dry-run)\n",
    )
    done = wfe("retry", "--status", "failed", "-w", "invoices", "--phase", "pay", env=env)
    assert done.stdout == f"{ids['pay']} pending\n"
    left = json.loads(wfe("tasks", "--status", "failed", "--json", env=env).stdout)
    assert [t["id"] for t in left] == [ids["check"]]

    typo = wfe("retry", "--status", "failed", "--phase", "pya", check=False, env=env)
    assert typo.returncode == 2
    assert "no stored workflow has a phase 'pya'" in typo.stderr
    alone = wfe("retry", ids["check"], "--phase", "pay", check=False, env=env)
    assert alone.returncode == 2
    assert "--phase chooses tasks with --status; give --status too" in alone.stderr

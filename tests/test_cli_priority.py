"""Task priority on the wfe command line: submit --priority, and show, tasks and
retry keeping and showing it."""

from __future__ import annotations

import json
from pathlib import Path

from core_util import submit_with_app, wfe_at_once
from test_cli import APP

# An app whose one phase notes each task's data in a file, in the order they run.
_ORDER_APP = """\
from pathlib import Path

from wfcore import ECSWorkflowEngine, Phase

engine = ECSWorkflowEngine(poll_interval=0.05)


async def note(task):
    with open(Path(__file__).with_name("ran.txt"), "a") as ran:
        ran.write(f"{task.data}\\n")


engine.register_handler("note", note)
engine.register_workflow("jobs", [Phase("note", assigned_to="functional")])
"""


def test_submit_priority_is_stored_shown_and_listed(wfe) -> None:
    plain = wfe("submit", "review", "--app", APP, "--data", '{"n": 1}').stdout.strip()
    # Without priorities the table is as it always was.
    assert wfe("tasks").stdout.splitlines()[0].split() == [
        "ID",
        "WORKFLOW",
        "PHASE",
        "STATUS",
        "UPDATED",
        "(UTC)",
        "NOTE",
    ]
    submitted = wfe("submit", "review", "--data", '{"n": 2}', "--priority", "100", "--json")
    urgent = json.loads(submitted.stdout)
    assert urgent["priority"] == 100
    assert urgent["history"][0]["priority"] == 100
    low = wfe("submit", "review", "--data", '{"n": 3}', "--delay", "1h", "--priority", "-7")
    low_id = low.stdout.strip()

    runs = wfe_at_once(
        wfe,
        ("show", urgent["id"]),
        ("show", plain),
        ("show", low_id),
        ("tasks", "--json"),
        ("tasks",),
    )
    assert [run.returncode for run in runs] == [0] * 5, [run.stderr for run in runs]
    show_urgent, show_plain, show_low, as_json, table = (run.stdout for run in runs)
    assert "\npriority  100\n" in show_urgent
    assert "\npriority  0\n" in show_plain
    assert show_low.rstrip().endswith(" priority=-7")  # its submitted event
    listed = {t["id"]: t["priority"] for t in json.loads(as_json)}
    assert listed == {plain: 0, urgent["id"]: 100, low_id: -7}

    # A PRIORITY column once a task has one, after the columns scripts read by
    # position; NOTE stays last.
    header, *rows = table.splitlines()
    assert header.split() == [
        "ID",
        "WORKFLOW",
        "PHASE",
        "STATUS",
        "UPDATED",
        "(UTC)",
        "PRIORITY",
        "NOTE",
    ]
    by_id = {row.split()[0]: row for row in rows}
    assert by_id[urgent["id"]].split()[3:] == ["pending", *by_id[urgent["id"]].split()[4:6], "100"]
    assert by_id[plain].split()[6] == "0"
    assert by_id[low_id].split()[6] == "-7" and "runs after 20" in by_id[low_id]


def test_a_worker_takes_the_priorities_submitted_from_the_command_line(wfe, tmp_path: Path) -> None:
    """Submitted before a worker starts, one at a time, tasks run highest priority
    first, and each priority in the order of submission."""
    (tmp_path / "order_app.py").write_text(_ORDER_APP)
    app = "order_app:engine"
    for n, priority in ((1, "-5"), (2, "0"), (3, "10"), (4, "10"), (5, "-5"), (6, None)):
        given = () if priority is None else ("--priority", priority)
        wfe("submit", "jobs", "--app", app, "--data", str(n), *given)
    wfe("worker", app, "--concurrency", "1", "--until-idle", "--quiet")
    assert (tmp_path / "ran.txt").read_text().split() == ["3", "4", "2", "6", "1", "5"]


def test_retry_keeps_the_priority(wfe) -> None:
    app = "failing_app:engine"
    task_id = wfe(
        "submit", "checked", "--app", app, "--data", '{"n": -1}', "--priority", "50"
    ).stdout.strip()
    wfe("worker", app, "--until-idle", "--quiet")
    assert "\npriority  50\n" in wfe("show", task_id).stdout
    retried = json.loads(wfe("retry", task_id, "--json").stdout)
    assert (retried["status"], retried["priority"]) == ("pending", 50)


def test_submit_refuses_a_bad_priority_before_making_a_store(wfe, tmp_path: Path) -> None:
    cases = (
        ("5000", "must be from -1000 to 1000, not 5000"),
        ("-1001", "must be from -1000 to 1000, not -1001"),
        ("high", "must be an integer from -1000 to 1000, not 'high'"),
        ("1.5", "must be an integer from -1000 to 1000, not '1.5'"),
        ("1_000", "must be an integer from -1000 to 1000, not '1_000'"),
        ("", "must be an integer from -1000 to 1000, not ''"),
    )
    *results, help_run = wfe_at_once(
        wfe,
        *[("submit", "review", "--app", APP, "--priority", value) for value, _ in cases],
        ("submit", "--help"),
    )
    for (value, message), bad in zip(cases, results, strict=True):
        assert bad.returncode == 2, (value, bad.stderr)
        assert f"Error: Invalid value for --priority: {message}\n" in bad.stderr
        assert bad.stdout == ""
    assert not (tmp_path / "wfe.db").exists()  # none of them made it
    assert "--priority N" in (helped := help_run.stdout)
    assert "-1000 to 1000" in helped and "[default: 0]" in helped


def test_submitting_an_existing_id_says_when_the_priority_differs(wfe) -> None:
    args = ("submit", "review", "--app", APP, "--id", "t-1", "--data", '{"n": 1}')
    wfe(*args, "--priority", "5")
    same = wfe(*args, "--priority", "5")
    assert same.stdout == "t-1\n" and same.stderr == ""
    other = wfe(*args)
    assert other.stdout == "t-1\n"
    assert (
        "note: task 't-1' already exists and was left as it is (its priority differs from "
        "this submission)" in other.stderr
    )
    assert "\npriority  5\n" in wfe("show", "t-1").stdout
    both = wfe(*args[:-1], '{"n": 2}')
    assert "(its data and priority differ from this submission)" in both.stderr


def test_submitting_an_existing_id_says_what_else_differs(wfe) -> None:
    """A different start, phase or task type was not noted, and --data true was the
    same as 1 (Python's 1 == True): the stored task runs as it was submitted."""
    args = ("submit", "review", "--app", APP, "--id", "t-2", "--data", "1")
    wfe(*args)
    for extra, what in [
        (("--delay", "1h"), "start"),
        (("--classification", "approve"), "phase"),
        (("--assigned-to", "human"), "task type"),
    ]:
        other = wfe(*args, *extra)
        assert other.stdout == "t-2\n"
        assert other.stderr == (
            f"note: task 't-2' already exists and was left as it is (its {what} differs from "
            "this submission)\n"
        ), extra
    assert "(its data differs" in wfe(*args[:-1], "true").stderr
    assert wfe(*args).stderr == ""  # the same submission again says nothing
    wfe("submit", "review", "--app", APP, "--id", "t-3", "--delay", "1h", "--priority", "2")
    later = wfe("submit", "review", "--app", APP, "--id", "t-3", "--delay", "2h", "--priority", "2")
    assert later.stderr == ""  # delayed both times: when is not compared, a delay moves on


def test_wfe_priority_moves_a_queued_task_and_records_who(wfe, tmp_path: Path) -> None:
    (tmp_path / "order_app.py").write_text(_ORDER_APP)
    app = "order_app:engine"
    first, second, third = submit_with_app(app, "jobs", [1, 2, 3], env=wfe.env, cwd=tmp_path)
    assert wfe("priority", third, "10").stdout == f"{third} priority 10\n"
    # A negative N is a priority, not an option.
    lowered = wfe("priority", first, "-10", "--by", "alice", "--json")
    assert json.loads(lowered.stdout)["priority"] == -10
    shown = wfe("show", first).stdout
    assert "\npriority  -10\n" in shown
    assert "priority_changed previous=0 priority=-10 by=alice" in shown
    wfe("worker", app, "--concurrency", "1", "--until-idle", "--quiet")
    assert (tmp_path / "ran.txt").read_text().split() == ["3", "2", "1"]

    cases = (
        ("1001", "must be from -1000 to 1000, not 1001"),
        ("urgent", "must be an integer from -1000 to 1000, not 'urgent'"),
    )
    # All refused: none changes what another reads.
    finished, unknown, *results = wfe_at_once(
        wfe,
        ("priority", second, "5"),
        ("priority", "no-such-task", "5"),
        *[("priority", first, value) for value, _ in cases],
    )
    assert finished.returncode == 1
    assert f"Error: task {second!r} is COMPLETED; only a PENDING or waiting task's" in (
        finished.stderr
    )
    assert unknown.returncode == 1 and "Error: unknown task 'no-such-task'" in unknown.stderr
    for (value, message), bad in zip(cases, results, strict=True):
        assert bad.returncode == 2, (value, bad.stderr)
        assert f"Error: Invalid value for N: {message}\n" in bad.stderr


def test_wfe_workflows_names_a_schedule_s_priority(wfe, tmp_path: Path) -> None:
    (tmp_path / "scheduled_app.py").write_text(
        "from datetime import datetime, timezone\n"
        "from wfcore import ECSWorkflowEngine, Phase\n"
        "engine = ECSWorkflowEngine()\n"
        "engine.register_workflow('render', [Phase('frames', assigned_to='functional')])\n"
        "start = datetime(2100, 1, 1, 2, tzinfo=timezone.utc)\n"
        "engine.register_schedule('nightly', 'render', every=86400, start=start, priority=-10)\n"
        "engine.register_schedule('hourly', 'render', every=3600, start=start)\n"
    )
    wfe("submit", "render", "--app", "scheduled_app:engine")  # stores the workflow
    lines = wfe("workflows", "--app", "scheduled_app:engine").stdout.splitlines()
    assert lines[-2:] == [
        "schedule hourly: a render task every hour, next at 2100-01-01 02:00:00 UTC",
        "schedule nightly: a render task (priority -10) every day, next at 2100-01-01 02:00:00 UTC",
    ]

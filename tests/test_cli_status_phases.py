"""wfe status says where the unfinished tasks are: how many at each phase of each
workflow, in the workflow's order, and how many no worker has classified yet."""

from __future__ import annotations

import asyncio
import json

from wfcore import SQLiteStore, Task


def _tasks_at_phases(wfe) -> None:
    """Three review tasks wait at approve and a quick one completes; then one more
    of each, unclaimed, and a review task submitted straight to approve."""
    env = wfe.env  # tests/cli_apps/phases_app.py importable
    for _ in range(3):
        wfe("submit", "review", "--data", "{}", "--app", "phases_app:engine", env=env)
    wfe("submit", "quick", "--data", "{}", "--app", "phases_app:engine", env=env)
    wfe("worker", "phases_app:engine", "--until-idle", "-q", env=env)
    wfe("submit", "review", "--data", "{}", env=env)
    wfe("submit", "review", "--data", "{}", "--classification", "approve", env=env)
    wfe("submit", "quick", "--data", "{}", env=env)


def test_status_counts_the_unfinished_tasks_of_each_workflow_by_phase(wfe) -> None:
    _tasks_at_phases(wfe)

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


def test_status_of_one_workflow_counts_it_alone(wfe) -> None:
    _tasks_at_phases(wfe)

    lines = wfe("status", "--workflow", "review").stdout.splitlines()
    assert lines[0].split()[:4] == ["WORKFLOW", "PENDING", "IN_PROGRESS", "WAITING"]
    # Its row only: no other workflow, no (other) or (all) rows.
    assert [line.split() for line in lines[1:3]] == [
        ["review", "2", "0", "3", "0", "0", "0"],
        ["unfinished", "tasks", "by", "phase:"],
    ]
    assert lines[3] == "  review: not classified yet 1, approve 4"
    assert lines[4].startswith("busy workers: ")

    doc = json.loads(wfe("status", "-w", "quick", "--json").stdout)
    assert list(doc["workflows"]) == ["quick"]
    assert doc["total"]["completed"] == 1 and sum(doc["total"].values()) == 2
    assert doc["unfinished_by_phase"] == {} and doc["unclassified"] == {"quick": 1}


def test_status_of_a_workflow_only_its_tasks_know(wfe, tmp_path) -> None:
    # Tasks of a workflow no worker here stored (an app elsewhere wrote them):
    # counted all the same, their phases by name.
    async def write() -> None:
        store = SQLiteStore(tmp_path / "wfe.db")
        await store.open()
        await store.insert_tasks(
            [Task(workflow_name="elsewhere", data={}, classification=c) for c in (None, "check")]
        )
        await store.close()

    asyncio.run(write())

    doc = json.loads(wfe("status", "--workflow", "elsewhere", "--json").stdout)
    assert doc["total"]["pending"] == 2
    assert doc["unfinished_by_phase"] == {"elsewhere": {"check": 1}}
    assert doc["unclassified"] == {"elsewhere": 1}


def test_status_refuses_a_workflow_that_names_nothing(wfe) -> None:
    wfe("submit", "quick", "--data", "{}", "--app", "phases_app:engine", env=wfe.env)

    typo = wfe("status", "--workflow", "quik", check=False)
    assert typo.returncode == 2
    assert "unknown workflow 'quik' (known: quick, review)" in typo.stderr
    empty = wfe("status", "--workflow", "", check=False)
    assert empty.returncode == 2 and "--workflow" in empty.stderr and "is empty" in empty.stderr


def test_commands_that_read_leave_the_stored_workflows_as_they_are(wfe) -> None:
    """A reading command run with another app (an older checkout's, another team's)
    shows the store, and does not replace its workflows with the app's: nor does it
    need to write at all (a store on read-only credentials, a replica)."""
    env = wfe.env
    wfe("submit", "review", "--data", "{}", "--app", "phases_app:engine", env=env)
    stored = wfe("workflows", env=env).stdout
    assert "draft" in stored
    for command in (["tasks"], ["status"], ["metrics"], ["workflows"]):
        wfe(*command, "--app", "review_app:engine", env=env)
        assert wfe("workflows", env=env).stdout == stored, command
    # A workflow of the app's own, stored nowhere yet, is no typo to refuse.
    listed = wfe("tasks", "--app", "callback_app:engine", "--workflow", "sign", env=env)
    assert (listed.returncode, listed.stdout, listed.stderr) == (0, "no tasks\n", "")


def test_workflows_with_an_app_shows_its_own_also_before_any_store(wfe, tmp_path) -> None:
    """A newcomer's first look at their app: its workflows, though nothing was
    submitted or run yet (no store), and beside the stored ones after."""
    env = wfe.env
    first = wfe("workflows", "--app", "phases_app:engine", env=env)
    assert first.stdout.splitlines()[0].split() == ["WORKFLOW", "PHASE", "TYPE", "THEN"]
    assert {line.split()[0] for line in first.stdout.splitlines()[1:] if line[0] != " "} == {
        "review",
        "quick",
    }
    assert first.stderr.startswith("wfe: no store at ")
    assert "these are the app's workflows" in first.stderr
    assert not (tmp_path / "wfe.db").exists()  # shown, not stored
    # Without an app there is nothing to show: no store is an error, as before.
    assert wfe("workflows", env=env, check=False).returncode == 1
    # Once another app stored its own, both show.
    wfe("submit", "sign", "--data", "{}", "--app", "callback_app:engine", env=env)
    both = json.loads(wfe("workflows", "--app", "phases_app:engine", "--json", env=env).stdout)
    assert sorted(spec["name"] for spec in both) == ["quick", "review", "sign"]

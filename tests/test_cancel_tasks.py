"""Cancelling many tasks at once: engine.cancel_tasks and wfe cancel --status, by
status, workflow and phase, with --dry-run; finished tasks are never touched."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

import wfcore._bulk
from wfcore import ECSWorkflowEngine, Phase, TaskStatus

_APP = """
from wfcore import ECSWorkflowEngine, Phase

engine = ECSWorkflowEngine()
engine.register_handler("check", lambda task: None)
engine.register_workflow(
    "invoices", [Phase("check", assigned_to="functional"), Phase("approve", assigned_to="human")]
)
engine.register_workflow("other", [Phase("approve", assigned_to="human")])
"""


def test_cancel_tasks_by_status_workflow_and_phase(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A page a task: every task is listed before any is cancelled, or cancelling
    # the first page's would shift the next page past some.
    monkeypatch.setattr(wfcore._bulk, "BULK_PAGE", 1)
    asyncio.run(_cancels(f"sqlite://{tmp_path / 'wfe.db'}"))


async def _cancels(url: str) -> None:
    engine = ECSWorkflowEngine(url, load_plugins=False)
    engine.register_workflow("w", [Phase("a"), Phase("b")])
    engine.register_workflow("v", [Phase("a")])
    try:
        ids = [
            (await engine.submit_task({}, workflow_name=w, classification=p)).id
            for w, p in (("w", "a"), ("w", "b"), ("v", "a"), ("w", "a"))
        ]
        assert await engine.cancel_tasks("pending", phase="a", dry_run=True) == [
            ids[3],
            ids[2],
            ids[0],
        ]
        assert await engine.cancel_tasks(["pending"], workflow_name="w", phase="a") == [
            ids[3],
            ids[0],
        ]
        statuses = {t.id: t.status for t in await engine.list_tasks()}
        assert statuses == {
            ids[0]: TaskStatus.CANCELLED,
            ids[1]: TaskStatus.PENDING,
            ids[2]: TaskStatus.PENDING,
            ids[3]: TaskStatus.CANCELLED,
        }
        cancelled = await engine.get_task(ids[0])
        assert cancelled is not None and cancelled.history[-1]["event"] == "cancelled"
        # Cancelled ones are finished: asked for, they are refused, never cancelled again.
        with pytest.raises(ValueError, match="cancel_tasks cancels only unfinished tasks"):
            await engine.cancel_tasks("cancelled")
        with pytest.raises(ValueError, match="no status given: cancel_tasks cancels only"):
            await engine.cancel_tasks([])
        with pytest.raises(TypeError, match="statuses must be a status, or a list of them"):
            await engine.cancel_tasks(None)  # type: ignore[arg-type]
        # "waiting" stands for the three waiting statuses, as on the command line.
        assert await engine.cancel_tasks("waiting", dry_run=True) == []
        assert await engine.cancel_tasks("pending", workflow_name="nowhere") == []
    finally:
        await engine.aclose()


def test_wfe_cancel_status_cancels_every_such_task(wfe, tmp_path: Path) -> None:
    (tmp_path / "cancel_app.py").write_text(_APP)
    env = {**wfe.env, "PYTHONPATH": str(tmp_path)}
    app = ("--app", "cancel_app:engine")
    waiting = [wfe("submit", "invoices", *app, env=env).stdout.strip() for _ in "ab"]
    elsewhere = wfe("submit", "other", *app, env=env).stdout.strip()
    wfe("worker", "cancel_app:engine", "--until-idle", "-q", env=env)  # all wait at approve
    pending = wfe("submit", "invoices", env=env).stdout.strip()

    dry = wfe("cancel", "--status", "waiting", "-w", "invoices", "--dry-run", env=env)
    assert dry.stdout.split() == waiting[::-1]
    assert dry.stderr == ("would cancel 2 waiting task(s) (--dry-run)\n")
    done = wfe("cancel", "--status", "waiting_human", "--phase", "approve", "--by", "ops", env=env)
    assert done.stdout.splitlines() == [f"{t} cancelled" for t in (elsewhere, *waiting[::-1])]
    assert done.stderr == "cancelled 3 waiting_human task(s)\n"
    shown = json.loads(wfe("show", waiting[0], "--json", env=env).stdout)
    assert shown["status"] == "cancelled" and shown["history"][-1]["by"] == "ops"
    assert shown["history"][-1]["phase"] == "approve"  # where it was when cancelled
    left = json.loads(wfe("tasks", "--json", env=env).stdout)
    assert {t["id"]: t["status"] for t in left}[pending] == "pending"

    again = wfe("cancel", "--status", "pending", "--json", env=env)
    assert json.loads(again.stdout) == [pending]


def test_wfe_cancel_refuses_what_it_cannot_do(wfe, tmp_path: Path) -> None:
    (tmp_path / "cancel_app.py").write_text(_APP)
    env = {**wfe.env, "PYTHONPATH": str(tmp_path)}
    task_id = wfe("submit", "invoices", "--app", "cancel_app:engine", env=env).stdout.strip()

    for args, said in (
        (("--status", "completed"), "completed tasks are never cancelled"),
        (("--status", "pending", task_id), "give a task id or --status, not both"),
        (("--phase", "check", task_id), "--phase chooses tasks with --status"),
        (("--status", "pending", "--phase", "chek"), "no stored workflow has a phase 'chek'"),
        (("--status", "pending", "-w", "invoice"), "unknown workflow 'invoice'"),
        ((), "give one task id, or --status pending"),
        (("--status", "pending", "--phase", ""), "Invalid value for --phase: is empty"),
    ):
        refused = wfe("cancel", *args, check=False, env=env)
        assert refused.returncode == 2, (args, refused.stdout, refused.stderr)
        assert said in refused.stderr, (args, refused.stderr)
    still = json.loads(wfe("show", task_id, "--json", env=env).stdout)
    assert still["status"] == "pending"


_SPLIT_APP = """
from wfcore import ECSWorkflowEngine, Phase

engine = ECSWorkflowEngine()


async def split(task):
    for n in range(2):
        await engine.submit_task({"n": n}, "item", parent=task)
    engine.wait_for_children(task)


engine.register_handler("split", split)
engine.register_workflow("batch", [Phase("split", assigned_to="functional")])
engine.register_workflow("item", [Phase("look", assigned_to="human")])
"""


def test_wfe_cancel_status_with_children_says_it_cancelled_them_too(wfe, tmp_path: Path) -> None:
    (tmp_path / "split_app.py").write_text(_SPLIT_APP)
    env = {**wfe.env, "PYTHONPATH": str(tmp_path)}
    parent = wfe("submit", "batch", "--app", "split_app:engine", env=env).stdout.strip()
    wfe("worker", "split_app:engine", "--until-idle", "-q", env=env)
    children = json.loads(wfe("tasks", "--parent", parent, "--json", env=env).stdout)
    assert {t["status"] for t in children} == {"waiting_human"}
    # --phase filters a task's children too.
    at_look = wfe("tasks", "--parent", parent[:8], "--phase", "look", "--json", env=env)
    assert [t["id"] for t in json.loads(at_look.stdout)] == [t["id"] for t in children]
    assert wfe("tasks", "--parent", parent, "--phase", "split", env=env).stdout == "no tasks\n"

    done = wfe("cancel", "--status", "waiting", "-w", "batch", "--children", env=env)
    assert done.stdout == f"{parent} cancelled\n"
    assert done.stderr == "cancelled 1 waiting task(s) and their unfinished children\n"
    children = json.loads(wfe("tasks", "--parent", parent, "--json", env=env).stdout)
    assert [t["status"] for t in children] == ["cancelled", "cancelled"]

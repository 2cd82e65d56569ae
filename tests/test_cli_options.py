"""wfe's options taking several values, and the stores and input commands refuse."""

from __future__ import annotations

import json

from core_util import wfe_at_once
from test_cli import APP


def _ids(result) -> list[str]:
    return sorted(t["id"] for t in json.loads(result.stdout))


def test_status_options_take_repeats_and_commas_alike(wfe) -> None:
    app = "split_app:engine"
    done = wfe("submit", "left", "--app", app).stdout.strip()
    wfe("worker", app, "--until-idle", "--quiet")
    cancelled = wfe("submit", "left", "--app", app).stdout.strip()
    wfe("cancel", cancelled)
    pending = wfe("submit", "right", "--app", app).stdout.strip()

    both = sorted([done, cancelled])
    three = ("--status", "completed", "--status", "cancelled,pending", "--json")
    dry = ("purge", "--older-than", "0", "--dry-run")
    names = ("pending", "waiting")
    # All of them only read the store (--dry-run) or are refused: at once.
    (
        repeated,
        commas,
        mixed,
        dry_both,
        dry_repeated,
        unknown,
        *running,
        helped,
    ) = wfe_at_once(
        wfe,
        ("tasks", "--status", "completed", "--status", "cancelled", "--json"),
        ("tasks", "--status", "completed,cancelled", "--json"),
        ("tasks", *three),
        (*dry, "--status", "completed,cancelled"),
        (*dry, "--status", "completed", "--status", "failed"),
        (*dry, "--status", "completed,sleeping"),
        *[(*dry, "--status", f"failed,{name}") for name in names],
        ("purge", "--help"),
    )
    for run in (repeated, commas, mixed, dry_both, dry_repeated, helped):
        assert run.returncode == 0, (run.args, run.stderr)
    assert _ids(repeated) == both
    assert _ids(commas) == both
    assert _ids(mixed) == sorted([*both, pending])

    assert dry_both.stdout.startswith("would delete 2 completed/cancelled task(s)")
    assert dry_repeated.stdout.startswith("would delete 1 completed/failed task(s)")
    assert unknown.returncode == 2
    assert (
        "unknown status 'sleeping' (one of: completed, failed, cancelled; several separated "
        "by commas)" in unknown.stderr
    )
    for name, refused in zip(names, running, strict=True):
        assert refused.returncode == 2
        assert (
            f"{name} tasks are never purged; only completed, failed or cancelled" in refused.stderr
        )
    assert "S[,S...]" in helped.stdout


def test_only_the_worker_takes_the_memory_store(wfe, tmp_path) -> None:
    refused = (
        "Error: memory:// lives in this one command's process and ends with it: use a store "
        "the commands share (sqlite:///path; --store or WFE_STORE)\n"
    )
    env = dict(wfe.env, WFE_STORE="memory://")
    commands = (
        ("submit", "review", "--app", APP),
        ("tasks",),
        ("status",),
        ("show", "x"),
        ("cancel", "x"),
        ("purge", "--older-than", "1d"),
        ("tasks", "--store", "memory://"),
    )
    for args, result in zip(commands, wfe_at_once(wfe, *commands, env=env), strict=True):
        assert (result.returncode, result.stderr) == (2, refused), args
    (tmp_path / "memory_app.py").write_text(
        "from review_app import engine\nengine.use_store('memory://')\n"
    )
    no_store = {k: v for k, v in wfe.env.items() if k != "WFE_STORE"}
    app_store = wfe("submit", "review", "--app", "memory_app:engine", env=no_store, check=False)
    assert (app_store.returncode, app_store.stderr) == (2, refused)
    assert wfe("worker", APP, "--until-idle", "--quiet", env=env).stderr == ""

"""wfe's options taking several values, and the stores and input commands refuse."""

from __future__ import annotations

import json

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
    assert _ids(wfe("tasks", "--status", "completed", "--status", "cancelled", "--json")) == both
    assert _ids(wfe("tasks", "--status", "completed,cancelled", "--json")) == both
    three = ("--status", "completed", "--status", "cancelled,pending", "--json")
    assert _ids(wfe("tasks", *three)) == sorted([*both, pending])

    dry = ["purge", "--older-than", "0", "--dry-run"]
    assert wfe(*dry, "--status", "completed,cancelled").stdout.startswith(
        "would delete 2 completed/cancelled task(s)"
    )
    assert wfe(*dry, "--status", "completed", "--status", "failed").stdout.startswith(
        "would delete 1 completed/failed task(s)"
    )
    unknown = wfe(*dry, "--status", "completed,sleeping", check=False)
    assert unknown.returncode == 2
    assert (
        "unknown status 'sleeping' (one of: completed, failed, cancelled; several separated "
        "by commas)" in unknown.stderr
    )
    for name in ("pending", "waiting"):
        running = wfe(*dry, "--status", f"failed,{name}", check=False)
        assert running.returncode == 2
        assert (
            f"{name} tasks are never purged; only completed, failed or cancelled" in running.stderr
        )
    assert "S[,S...]" in wfe("purge", "--help").stdout


def test_only_the_worker_takes_the_memory_store(wfe, tmp_path) -> None:
    refused = (
        "Error: memory:// lives in this one command's process and ends with it: use a store "
        "the commands share (sqlite:///path; --store or WFE_STORE)\n"
    )
    env = dict(wfe.env, WFE_STORE="memory://")
    for args in (
        ("submit", "review", "--app", APP),
        ("tasks",),
        ("status",),
        ("show", "x"),
        ("cancel", "x"),
        ("purge", "--older-than", "1d"),
        ("tasks", "--store", "memory://"),
    ):
        result = wfe(*args, env=env, check=False)
        assert (result.returncode, result.stderr) == (2, refused), args
    (tmp_path / "memory_app.py").write_text(
        "from review_app import engine\nengine.use_store('memory://')\n"
    )
    no_store = {k: v for k, v in wfe.env.items() if k != "WFE_STORE"}
    app_store = wfe("submit", "review", "--app", "memory_app:engine", env=no_store, check=False)
    assert (app_store.returncode, app_store.stderr) == (2, refused)
    assert wfe("worker", APP, "--until-idle", "--quiet", env=env).stderr == ""

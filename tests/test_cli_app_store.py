"""A command on stored tasks whose --app names a store in code that does not exist
says the store came from the app, not from --store or WFE_STORE."""

from __future__ import annotations

from pathlib import Path


def test_a_missing_store_named_by_the_apps_code_is_said_to_be_the_apps(wfe, tmp_path: Path) -> None:
    missing = tmp_path / "elsewhere" / "app.db"
    (tmp_path / "own_store_app.py").write_text(
        "from wfcore import ECSWorkflowEngine\n\n"
        f"engine = ECSWorkflowEngine(store='sqlite://{missing}')\n"
    )
    env = {k: v for k, v in wfe.env.items() if k != "WFE_STORE"}
    for command in ("tasks", "status", "show x"):
        result = wfe(*command.split(), "--app", "own_store_app:engine", env=env, check=False)
        assert result.returncode == 1, result.stderr
        assert result.stderr == (
            f"Error: no store at {missing}: nothing was submitted or run there (the store "
            "own_store_app:engine names in code, its store=; --store or WFE_STORE picks "
            "another)\n"
        )
    # Named by --store, the store is --store's to check.
    other = tmp_path / "other.db"
    given = wfe(
        "tasks",
        "--app",
        "own_store_app:engine",
        "--store",
        f"sqlite://{other}",
        env=env,
        check=False,
    )
    assert given.returncode == 1
    assert given.stderr.endswith(
        f"Error: no store at {other}: nothing was submitted or run there (check --store and "
        "WFE_STORE)\n"
    )
    assert not missing.parent.exists()

"""WFE_STORE as an embedded app's engine reads it: the URL without the blanks an env
file or a paste leaves around it."""

from __future__ import annotations

from pathlib import Path

import pytest

from wfcore import ECSWorkflowEngine, Phase, StoreError, Task


async def _echo(task: Task) -> None:
    task.output = task.data


def test_blanks_around_wfe_store_are_not_part_of_the_url(tmp_path, monkeypatch, wfe_run):
    db = tmp_path / "wfe.db"
    monkeypatch.setenv("WFE_STORE", f"  sqlite://{db}\t\n")
    engine = ECSWorkflowEngine(load_plugins=False)
    engine.register_handler("p", _echo)
    engine.register_workflow("w", [Phase("p")])

    async def scenario() -> None:
        await engine.submit_task(1, "w")
        await engine.run_until_idle()
        await engine.aclose()

    wfe_run(scenario())
    assert engine.store_url == f"sqlite://{db}"
    assert db.exists()
    assert not [p.name for p in Path(tmp_path).iterdir() if p.name != p.name.strip()]


def test_a_blank_wfe_store_is_refused(monkeypatch, wfe_run):
    monkeypatch.setenv("WFE_STORE", "   ")
    engine = ECSWorkflowEngine(load_plugins=False)
    with pytest.raises(StoreError, match="WFE_STORE is blank: give a store URL, or unset it"):
        wfe_run(engine.get_store())

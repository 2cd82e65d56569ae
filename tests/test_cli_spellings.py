"""Names wfe takes in any case, as it takes status names: --history all, and
plugins --hook with or without the wfe_ prefix every hook has."""

from __future__ import annotations

import json

from test_cli import APP


def test_history_all_in_any_case(wfe) -> None:
    task_id = wfe("submit", "review", "--app", APP, "--data", '{"n": 1}').stdout.strip()
    shown = wfe("show", task_id, "--history", "all").stdout
    for spelling in ("ALL", "All", " all"):
        assert wfe("show", task_id, "--history", spelling).stdout == shown, spelling


def test_plugins_hook_in_any_case_and_without_its_prefix(wfe) -> None:
    expected = wfe("plugins", "--all", "--json", "--hook", "wfe_open_store").stdout
    assert {p["name"] for p in json.loads(expected)} >= {"wfcore.stores.sqlite"}
    for spelling in ("open_store", "WFE_OPEN_STORE", "Open_Store"):
        result = wfe("plugins", "--all", "--json", "--hook", spelling)
        assert result.stdout == expected, spelling
    unknown = wfe("plugins", "--hook", "nosuch", check=False)
    assert unknown.returncode == 2
    assert "no hook named 'nosuch' (hooks: wfe_attempt_failed, " in unknown.stderr

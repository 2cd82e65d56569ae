"""Values wfe takes as a person writes them: --history all and plugins --hook
names in any case (as status names are taken), the hook without the wfe_ prefix
every hook has; and a --metrics port that cannot exist said to be one."""

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


def test_a_metrics_port_that_does_not_exist_is_named(wfe) -> None:
    for value in ("99999", "0.0.0.0:70000"):
        result = wfe("worker", APP, "--metrics", value, check=False)
        assert result.returncode == 2
        port = value.rpartition(":")[2]
        assert result.stderr.endswith(
            f"Error: Invalid value for --metrics: {value!r}: port {port} does not exist "
            "(ports are 0 to 65535; 0: any free one)\n"
        ), result.stderr

"""Values wfe takes as a person writes them: --history all and plugins --hook
names in any case (as status names are taken), the hook without the wfe_ prefix
every hook has; and a --metrics port that cannot exist said to be one."""

from __future__ import annotations

import json

from core_util import wfe_at_once
from test_cli import APP


def test_history_all_in_any_case(wfe) -> None:
    task_id = wfe("submit", "review", "--app", APP, "--data", '{"n": 1}').stdout.strip()
    spellings = ("all", "ALL", "All", " all")
    runs = wfe_at_once(wfe, *[("show", task_id, "--history", s) for s in spellings])
    assert [run.returncode for run in runs] == [0] * 4, [run.stderr for run in runs]
    shown = runs[0].stdout
    for spelling, run in zip(spellings[1:], runs[1:], strict=True):
        assert run.stdout == shown, spelling


def test_plugins_hook_in_any_case_and_without_its_prefix(wfe) -> None:
    spellings = ("wfe_open_store", "open_store", "WFE_OPEN_STORE", "Open_Store")
    *runs, unknown = wfe_at_once(
        wfe,
        *[("plugins", "--all", "--json", "--hook", spelling) for spelling in spellings],
        ("plugins", "--hook", "nosuch"),
    )
    assert [run.returncode for run in runs] == [0] * 4, [run.stderr for run in runs]
    expected = runs[0].stdout
    assert {p["name"] for p in json.loads(expected)} >= {"wfcore.stores.sqlite"}
    for spelling, result in zip(spellings[1:], runs[1:], strict=True):
        assert result.stdout == expected, spelling
    assert unknown.returncode == 2
    assert "no hook named 'nosuch' (hooks: wfe_attempt_failed, " in unknown.stderr


def test_a_metrics_port_that_does_not_exist_is_named(wfe) -> None:
    values = ("99999", "0.0.0.0:70000")
    results = wfe_at_once(wfe, *[("worker", APP, "--metrics", value) for value in values])
    for value, result in zip(values, results, strict=True):
        assert result.returncode == 2
        port = value.rpartition(":")[2]
        assert result.stderr.endswith(
            f"Error: Invalid value for --metrics: {value!r}: port {port} does not exist "
            "(ports are 0 to 65535; 0: any free one)\n"
        ), result.stderr

"""wfe submit of a define_workflow task refuses a spec the worker would fail the
task for, before anything is stored."""

from __future__ import annotations

import json
from pathlib import Path

from core_util import stored_task, wfe_at_once
from test_cli import APP


def _define(wfe, spec: object, *args: str):
    data = json.dumps(spec)
    return wfe(
        "submit", "-", "--classification", "define_workflow", "--data", data, *args, check=False
    )


def test_a_spec_the_worker_would_fail_is_refused_at_submit(wfe, tmp_path: Path) -> None:
    phase = {"target_classification": "p", "assigned_to": "human"}
    cases = [
        (
            {"nam": "x", "phases": [phase]},
            "not a workflow spec, as define_workflow takes: nam: unknown field (did you "
            "mean name?)",
        ),
        (
            {"name": "x", "phases": [{"classification": "p"}]},
            "phases[0].classification: unknown field (did you mean target_classification?)",
        ),
        (
            {
                "name": "x",
                "phases": [{**phase, "input_schema": {"type": "string", "pattern": "a"}}],
            },
            "phases[0].input_schema: 'pattern' is not allowed in a workflow defined at run time",
        ),
    ]
    define = ("submit", "-", "--classification", "define_workflow", "--data")
    results = wfe_at_once(wfe, *[(*define, json.dumps(spec)) for spec, _ in cases])
    for (spec, message), refused in zip(cases, results, strict=True):
        assert refused.returncode == 2, (spec, refused.stderr)
        assert refused.stderr.splitlines()[-1].startswith("Error: Invalid value for --data: ")
        assert message in refused.stderr, (spec, refused.stderr)
        assert refused.stdout == ""
    assert not (tmp_path / "wfe.db").exists()  # refused before a store was made


def test_a_spec_for_a_name_taken_by_another_workflow_is_refused(wfe) -> None:
    first = {"name": "intake", "phases": [{"target_classification": "p", "assigned_to": "human"}]}
    defined = _define(wfe, first).stdout.strip()
    wfe("worker", APP, "--until-idle", "--quiet")
    assert stored_task(wfe.env["WFE_STORE"], defined).workflow_name == "intake"
    before = wfe("tasks", "--json").stdout

    changed = {**first, "phases": [{"target_classification": "q", "assigned_to": "human"}]}
    cases = (
        (changed, "intake", ()),  # defined at run time earlier
        ({**changed, "name": "review"}, "review", ("--app", APP)),  # the app's own
    )
    define = ("submit", "-", "--classification", "define_workflow", "--data")
    # Both refused: neither stores anything the other reads.
    results = wfe_at_once(wfe, *[(*define, json.dumps(spec), *args) for spec, _, args in cases])
    for (_, taken, _), refused in zip(cases, results, strict=True):
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.endswith(
            f"Error: a different workflow named {taken!r} exists already; define this one "
            f"under a new name ({taken}-v2, say)\n"
        )
    assert wfe("tasks", "--json").stdout == before  # nothing stored
    # The same spec again is what a rerun submits: taken.
    assert _define(wfe, first).returncode == 0


def test_start_phases_count_in_whether_a_spec_is_the_same(wfe) -> None:
    """The same spec with start_phases again is taken, as the worker takes it; one
    that differs only in its start_phases is refused, as the worker would fail it."""
    phases = [
        {"target_classification": "draft", "assigned_to": "human"},
        {"target_classification": "approve", "assigned_to": "human"},
    ]
    spec = {"name": "gated", "phases": phases, "start_phases": ["approve"]}
    first = _define(wfe, spec).stdout.strip()
    wfe("worker", APP, "--until-idle", "--quiet")
    defined = stored_task(wfe.env["WFE_STORE"], first)
    assert (defined.workflow_name, defined.status.value) == ("gated", "waiting_human")

    again = _define(wfe, spec)
    assert again.returncode == 0, again.stderr
    wfe("worker", APP, "--until-idle", "--quiet")
    rerun = stored_task(wfe.env["WFE_STORE"], again.stdout.strip())
    assert (rerun.workflow_name, rerun.status.value) == ("gated", "waiting_human"), rerun.error

    other = _define(wfe, {**spec, "start_phases": ["draft"]})
    assert other.returncode == 2, other.stderr
    assert "a different workflow named 'gated' exists already" in other.stderr

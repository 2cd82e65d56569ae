"""A phase's command says that trying again cannot help by exiting with one of the
phase's ``permanent_exit_codes``: the task fails at once, as ``PermanentError`` does.
A command that failed on a relative path to a file of the worker's folder is told so."""

from __future__ import annotations

import sys

import pytest
from core_util import events, run_task

from wfcore import InvalidWorkflowError, Phase, Task, TaskStatus, WorkflowSpec
from wfcore.wire import workflow_from_dict, workflow_to_dict

# Exits 65 (sysexits' EX_DATAERR) for data it cannot read, 75 (EX_TEMPFAIL) when the
# service it needs is down, as the task's data says.
_VALIDATE = [
    "sh",
    "-c",
    'read -r task; case "$task" in *bad*) echo "invoice 7 has no total" >&2; exit 65;; '
    '*down*) echo "ledger unreachable" >&2; exit 75;; esac; echo \'"ok"\'',
]


def _workflow() -> list[Phase]:
    return [Phase("validate", command=_VALIDATE, max_attempts=3, permanent_exit_codes=[64, 65])]


def test_an_exit_in_permanent_exit_codes_fails_the_task_without_further_attempts(
    make_engine, wfe_run
):
    engine = make_engine(retry_delay=0.01)
    engine.register_workflow("invoices", _workflow())

    async def scenario() -> tuple[Task, Task, Task]:
        bad = await engine.submit_task("bad", "invoices")
        down = await engine.submit_task("down", "invoices")
        good = await engine.submit_task("good", "invoices")
        await engine.run_until_idle()
        found = [await engine.get_task(t.id) for t in (bad, down, good)]
        assert all(t is not None for t in found)
        return found[0], found[1], found[2]  # type: ignore[return-value]

    bad, down, good = wfe_run(scenario())
    assert bad.status is TaskStatus.FAILED
    assert bad.attempts == 1
    assert events(bad).count("attempt_failed") == 1
    assert "retry_scheduled" not in events(bad)
    assert bad.error == (
        "PermanentError: command 'sh' exited with status 65, one of the phase's "
        "permanent_exit_codes, so it is not tried again: invoice 7 has no total"
    )
    # Any other non-zero exit is retried while max_attempts allows, as before.
    assert down.status is TaskStatus.FAILED
    assert down.attempts == 3
    assert events(down).count("attempt_failed") == 3
    assert down.error == "CommandError: command 'sh' exited with status 75: ledger unreachable"
    assert good.status is TaskStatus.COMPLETED
    assert good.output == "ok"


def test_permanent_exit_codes_survive_the_store_and_a_run_time_definition(make_engine, wfe_run):
    engine = make_engine(allowed_commands=["sh"])
    spec = {
        "name": "defined",
        "phases": [
            {
                "target_classification": "validate",
                "command": _VALIDATE,
                "max_attempts": 4,
                "permanent_exit_codes": [65],
            }
        ],
        "input": "bad",
    }

    async def scenario() -> Task:
        task = await engine.submit_task(spec, None, classification="define_workflow")
        await engine.run_until_idle()
        stored = await (await engine.get_store()).load_workflow("defined")
        assert stored is not None
        assert stored.phases[0].permanent_exit_codes == [65]
        found = await engine.get_task(task.id)
        assert found is not None
        return found

    task = wfe_run(scenario())
    assert task.status is TaskStatus.FAILED
    assert task.attempts == 1
    assert task.error.startswith("PermanentError: command 'sh' exited with status 65")


def test_phases_without_permanent_exit_codes_are_written_without_the_field():
    # Releases before the field read every phase they are given, and refuse unknown fields.
    doc = workflow_to_dict(_spec([Phase("p", command=["true"])]))
    assert "permanent_exit_codes" not in doc["phases"][0]
    doc = workflow_to_dict(_spec([Phase("p", command=["true"], permanent_exit_codes=[2])]))
    assert doc["phases"][0]["permanent_exit_codes"] == [2]
    assert workflow_from_dict(doc).phases[0].permanent_exit_codes == [2]


def _spec(phases: list[Phase]) -> WorkflowSpec:
    return WorkflowSpec(name="w", phases=phases)


@pytest.mark.parametrize(
    ("phase", "message"),
    [
        (
            {"target_classification": "p", "permanent_exit_codes": [2]},
            "phases[0].permanent_exit_codes: only a phase with a command exits with a status",
        ),
        (
            {"target_classification": "p", "command": ["x"], "permanent_exit_codes": [0]},
            "phases[0].permanent_exit_codes: must be a list of exit statuses from 1 to 255 "
            "(0 is success), not [0]",
        ),
        (
            {"target_classification": "p", "command": ["x"], "permanent_exit_codes": [256]},
            "not [256]",
        ),
        (
            {"target_classification": "p", "command": ["x"], "permanent_exit_codes": 65},
            "not 65",
        ),
        (
            {"target_classification": "p", "command": ["x"], "permanent_exit_codes": [True]},
            "not [True]",
        ),
        (
            {"target_classification": "p", "command": ["x"], "permanent_exit_codes": ["65"]},
            "not ['65']",
        ),
    ],
)
def test_bad_permanent_exit_codes_are_refused_naming_the_field(phase, message):
    with pytest.raises(InvalidWorkflowError) as caught:
        workflow_from_dict({"name": "w", "phases": [phase]})
    assert message in str(caught.value)


def test_a_relative_path_to_a_file_of_the_workers_folder_gets_a_hint(
    make_engine, wfe_run, tmp_path, monkeypatch
):
    # The script is beside the app, where the worker runs; the command runs elsewhere.
    (tmp_path / "extract.py").write_text("print('never run')\n")
    monkeypatch.chdir(tmp_path)
    engine = make_engine()
    engine.register_workflow("w", [Phase("extract", command=[sys.executable, "extract.py"])])

    task = wfe_run(run_task(engine, None, "w"))
    assert task.status is TaskStatus.FAILED
    assert task.error.startswith(
        f"CommandError: command {sys.executable!r} exited with status 2 (its argument "
        f"'extract.py' is a file of the worker's folder {tmp_path}, but the command runs "
        "in a work folder of its own: give its absolute path): "
    )
    assert "can't open file" in task.error  # the command's own words follow


def test_a_command_failing_under_a_worker_whose_folder_is_gone_says_how_it_exited(
    make_engine, wfe_run, tmp_path, monkeypatch
):
    # A release folder replaced under a running worker: looking for a hint in it
    # failed the attempt with a bare FileNotFoundError instead of the exit status.
    gone = tmp_path / "release-41"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    engine = make_engine()
    engine.register_workflow("w", [Phase("p", command=["sh", "-c", "echo oops >&2; exit 3"])])

    task = wfe_run(run_task(engine, None, "w"))
    assert task.status is TaskStatus.FAILED
    assert task.error == "CommandError: command 'sh' exited with status 3: oops"

"""Apps that misbehave as wfe loads them: one that ends the process (sys.exit,
argparse at import) or whose factory is async gets one error naming it, never the
app's own exit status; what one prints goes to stderr, off the command's output."""

from __future__ import annotations

import json
from pathlib import Path

ARGPARSE_APP = """\
import argparse

from wfcore import ECSWorkflowEngine

parser = argparse.ArgumentParser()
parser.add_argument("--db")
args = parser.parse_args()
engine = ECSWorkflowEngine()
"""

EXITING_APP = """\
import sys

from wfcore import ECSWorkflowEngine

engine = ECSWorkflowEngine()


def main():
    sys.exit(0)


main()


def make():
    sys.exit(3)


async def make_async():
    return ECSWorkflowEngine()
"""


def test_an_app_that_parses_wfes_arguments_at_import_is_named(wfe, tmp_path: Path) -> None:
    (tmp_path / "cli_app.py").write_text(ARGPARSE_APP)
    result = wfe("worker", "cli_app:engine", "--until-idle", check=False)
    assert result.returncode == 2, result.stderr
    # argparse has had its say; the last line says whose it was, and where.
    assert result.stderr.splitlines()[-1] == (
        "Error: Invalid value for APP: importing 'cli_app' failed: SystemExit: 2 (the app "
        "called sys.exit() as it was imported; argparse does when it parses wfe's command "
        "line: parse the app's own arguments only under if __name__ == '__main__') "
        f"(at {tmp_path / 'cli_app.py'}, line 7)"
    )


def test_an_app_exiting_0_as_it_loads_is_no_success(wfe, tmp_path: Path) -> None:
    (tmp_path / "exit_app.py").write_text(EXITING_APP)
    store = tmp_path / "wfe.db"
    submitted = wfe("submit", "x", "--app", "exit_app:engine", check=False)
    # A script's id=$(wfe submit ...) must not take an empty id for a stored task.
    assert (submitted.returncode, submitted.stdout) == (2, "")
    assert "Invalid value for --app: importing 'exit_app' failed: SystemExit: 0" in (
        submitted.stderr
    )
    assert f"(at {tmp_path / 'exit_app.py'}, line 9)" in submitted.stderr
    assert not store.exists()
    worker = wfe("worker", "exit_app:engine", "--until-idle", check=False)
    assert worker.returncode == 2
    assert "importing 'exit_app' failed: SystemExit: 0" in worker.stderr


def test_a_factory_that_exits_or_is_async_is_named(wfe, tmp_path: Path) -> None:
    # The module itself imports (its main() is kept from exiting by a name check).
    (tmp_path / "factories.py").write_text(
        EXITING_APP.replace("\nmain()\n", "\nif __name__ == '__main__':\n    main()\n")
    )
    exits = wfe("worker", "factories:make", "--until-idle", check=False)
    assert exits.returncode == 2, exits.stderr
    said = "calling factories:make() failed: SystemExit: 3 (the app called sys.exit() as it"
    assert f"{said} made the engine" in exits.stderr
    assert f"(at {tmp_path / 'factories.py'}, line 17)" in exits.stderr
    made_async = wfe("tasks", "--app", "factories:make_async", check=False)
    assert made_async.returncode == 2
    assert made_async.stderr.endswith(
        "Error: Invalid value for --app: factories:make_async is an async function: wfe "
        "calls a factory without awaiting it; make it a plain function (def, not async "
        "def) that returns the engine\n"
    )  # and no warning of a coroutine never awaited after it


PRINTING_APP = """\
from wfcore import ECSWorkflowEngine, Phase

print("loading the config")
engine = ECSWorkflowEngine()
engine.register_workflow("w", [Phase("p", assigned_to="human")])


def make():
    print("making the engine")
    return engine
"""


def test_what_an_app_prints_as_it_loads_stays_off_stdout(wfe, tmp_path: Path) -> None:
    """A script's id=$(wfe submit ...) or wfe tasks --json | jq reads stdout."""
    (tmp_path / "printing_app.py").write_text(PRINTING_APP)
    submitted = wfe("submit", "w", "--app", "printing_app:make")
    task_id = submitted.stdout.strip()
    assert submitted.stdout == f"{task_id}\n"
    assert "loading the config\nmaking the engine\n" in submitted.stderr
    listed = wfe("tasks", "--json", "--app", "printing_app:engine").stdout
    assert [task["id"] for task in json.loads(listed)] == [task_id]

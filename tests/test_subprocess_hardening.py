"""Subprocess phases against hostile input: links in out/, huge out/ files, and the
environment a command of a workflow defined at run time gets."""

from __future__ import annotations

import os
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import pytest

from wfcore import DEFINE_WORKFLOW, Phase, TaskStatus


def py(code: str, *args: str) -> list[str]:
    """argv running a Python snippet with this interpreter."""
    return [sys.executable, "-c", textwrap.dedent(code), *args]


ENV_KEYS = ["PATH", "HOME", "LANG", "LC_TIME", "TZ", "TMPDIR"]
SECRETS = {
    "OPENAI_API_KEY": "sk-live-123",
    "WFE_UI_TOKEN": "dashboard-token-abc",
    "WFE_STORE": "sqlite:////somewhere/secret.db",
    "KAFKA_SASL_PASSWORD": "kafka-pass",
}
PRINT_ENV = py("import json, os; print(json.dumps(dict(os.environ)))")


def env_for_commands(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith("LC_"):
            monkeypatch.delenv(key)
    # A UTF-8 locale: else the child Python would set LC_CTYPE in its own environment.
    monkeypatch.setenv("LANG", "C.UTF-8")
    monkeypatch.setenv("LC_TIME", "C.UTF-8")
    monkeypatch.setenv("TZ", "Europe/Paris")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("TMPDIR", tempfile.gettempdir())
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)


def test_a_command_of_a_workflow_defined_at_run_time_gets_a_minimal_environment(
    make_engine, wfe_run, monkeypatch, tmp_path
):
    """Whoever defines the workflow chooses an allowed program's arguments too
    (``jq -n env``): the worker's secrets stay out of its environment."""
    engine = make_engine(allowed_commands=[sys.executable])
    env_for_commands(monkeypatch, tmp_path)
    spec: dict[str, Any] = {
        "name": "theirs",
        "phases": [
            {"target_classification": "peek", "assigned_to": "functional", "command": PRINT_ENV}
        ],
    }

    async def scenario():
        task = await engine.submit_task(spec, None, classification=DEFINE_WORKFLOW)
        await engine.run_until_idle()
        return await engine.get_task(task.id)

    task = wfe_run(scenario())
    assert task.status is TaskStatus.COMPLETED, task.error
    seen = task.output
    expected = {key: os.environ[key] for key in ENV_KEYS}
    expected |= {"WFE_TASK_ID": task.id, "WFE_PHASE": "peek"}
    # The guard shell that runs the command sets PWD, to the work folder.
    assert seen.pop("PWD").startswith(tempfile.gettempdir())
    assert seen == expected


def test_a_command_of_a_workflow_registered_in_code_gets_the_whole_environment(
    make_engine, wfe_run, monkeypatch, tmp_path
):
    """Its author chose the command: it keeps what the worker has, as before."""
    engine = make_engine()
    env_for_commands(monkeypatch, tmp_path)
    engine.register_workflow("own", [Phase("peek", assigned_to="functional", command=PRINT_ENV)])

    async def scenario():
        task = await engine.submit_task(None, "own")
        await engine.run_until_idle()
        return await engine.get_task(task.id)

    task = wfe_run(scenario())
    assert task.status is TaskStatus.COMPLETED, task.error
    for key, value in {**SECRETS, **{key: os.environ[key] for key in ENV_KEYS}}.items():
        assert task.output[key] == value
    assert task.output["WFE_TASK_ID"] == task.id
    assert task.output["WFE_PHASE"] == "peek"

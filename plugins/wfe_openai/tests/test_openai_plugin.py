"""The installed plugin: nothing changes until WFE_AGENT=openai; then workers run agents on it."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import wfe_openai.plugin
from wfe_openai import OpenAIAgentAdapter

from wfcore import ECSWorkflowEngine, Phase, TaskStatus, TaskType
from wfcore.adapters import AgenticAdapter


def _answer(engine: ECSWorkflowEngine, wfe_run: Any) -> Any:
    engine.register_workflow("w", [Phase("answer", assigned_to="agentic")])

    async def scenario() -> Any:
        task = await engine.submit_task({"q": "2+2?"}, "w")
        await engine.run_until_idle()
        return await engine.get_task(task.id)

    return wfe_run(scenario())


def test_the_entry_point_is_installed():
    eps = importlib.metadata.entry_points(group="wfcore")
    [ep] = [ep for ep in eps if ep.name == "openai"]
    assert ep.value == "wfe_openai.plugin"
    assert ep.load() is wfe_openai.plugin


def test_installed_plugin_changes_nothing_without_wfe_agent(
    openai_server, monkeypatch, wfe_engine_factory, wfe_run
):
    monkeypatch.setenv("WFE_LOAD_PLUGINS", "wfe-openai")
    engine = wfe_engine_factory(load_plugins=True)
    assert engine.plugin_manager.get_plugin("openai") is wfe_openai.plugin

    task = _answer(engine, wfe_run)

    assert type(engine.adapter_for(TaskType.AGENTIC)) is AgenticAdapter
    assert task.status is TaskStatus.FAILED
    assert "no handler for agentic phase 'answer'" in task.error
    assert openai_server.requests == []


def test_wfe_agent_openai_registers_the_adapter_when_the_engine_starts(
    openai_server, monkeypatch, wfe_engine_factory, wfe_run
):
    monkeypatch.setenv("WFE_AGENT", "openai")
    monkeypatch.setenv("WFE_OPENAI_MODEL", "llama3.2")
    openai_server.reply("4")
    engine = wfe_engine_factory(plugins=[wfe_openai.plugin])

    task = _answer(engine, wfe_run)

    assert task.status is TaskStatus.COMPLETED, task.error
    assert task.output == "4"
    assert isinstance(engine.adapter_for(TaskType.AGENTIC), OpenAIAgentAdapter)
    assert openai_server.requests[0]["body"]["model"] == "llama3.2"


def test_wfe_agent_openai_keeps_an_adapter_chosen_in_code(
    openai_server, monkeypatch, wfe_engine_factory, wfe_run
):
    monkeypatch.setenv("WFE_AGENT", "openai")

    class Mine:
        async def run(self, task, phase, engine):
            task.output = "mine"

    engine = wfe_engine_factory(plugins=[wfe_openai.plugin])
    engine.register_adapter(TaskType.AGENTIC, Mine())

    task = _answer(engine, wfe_run)

    assert task.output == "mine"
    assert openai_server.requests == []


def test_wfe_worker_with_wfe_agent_openai(
    openai_server, tmp_path: Path, wfe_store_url: str, wfe_engine_factory, wfe_run
):
    """A real ``wfe worker`` process: the app registers no adapter, the env chooses OpenAI."""
    (tmp_path / "agentapp.py").write_text(
        textwrap.dedent(
            """
            from wfcore import ECSWorkflowEngine, Phase

            engine = ECSWorkflowEngine()
            engine.register_workflow(
                "qa", [Phase("answer", assigned_to="agentic", instructions="Answer briefly.")]
            )
            """
        )
    )
    client = wfe_engine_factory()
    client.register_workflow(
        "qa", [Phase("answer", assigned_to="agentic", instructions="Answer briefly.")]
    )

    async def submit() -> str:
        task = await client.submit_task({"q": "capital of Norway?"}, "qa")
        await client.aclose()
        return task.id

    task_id = wfe_run(submit())
    openai_server.reply("Oslo.")
    env = dict(
        os.environ,
        WFE_AGENT="openai",
        WFE_OPENAI_MODEL="gpt-4o-mini",
        WFE_STORE=wfe_store_url,
        WFE_LOAD_PLUGINS="wfe-openai",
        PYTHONPATH=str(tmp_path),
    )
    wfe = shutil.which("wfe")
    command = [wfe] if wfe else [sys.executable, "-m", "wfcore.cli"]
    worker = subprocess.run(
        [*command, "worker", "agentapp:engine", "--until-idle", "--quiet"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert worker.returncode == 0, worker.stderr
    done = wfe_run(client.get_task(task_id))
    assert done.status is TaskStatus.COMPLETED, done.error
    assert done.output == "Oslo."
    [request] = openai_server.requests
    assert request["body"]["model"] == "gpt-4o-mini"
    assert request["body"]["messages"][0]["content"] == "Answer briefly."
    assert "capital of Norway?" in request["body"]["messages"][1]["content"]


def test_an_unknown_wfe_agent_is_warned_about_once(
    openai_server, monkeypatch, caplog, wfe_engine_factory, wfe_run
):
    monkeypatch.setattr(wfe_openai.plugin, "_warned", set())
    caplog.set_level(logging.WARNING, logger="wfe_openai")

    def start(value: str) -> ECSWorkflowEngine:
        monkeypatch.setenv("WFE_AGENT", value)
        engine = wfe_engine_factory(plugins=[wfe_openai.plugin])
        wfe_run(engine.run_until_idle())
        return engine

    engines = [start("open-ai"), start("open-ai"), start(" "), start("OpenAI ")]

    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name == "wfe_openai" and r.levelno >= logging.WARNING
    ]
    assert warnings == [
        "WFE_AGENT='open-ai' is not a value wfe_openai knows (accepted: openai); "
        "agentic phases keep their adapter"
    ]
    assert [type(e.adapter_for(TaskType.AGENTIC)) for e in engines] == [
        AgenticAdapter,
        AgenticAdapter,
        AgenticAdapter,
        OpenAIAgentAdapter,
    ]

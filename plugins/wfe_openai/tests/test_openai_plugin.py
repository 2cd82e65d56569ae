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
from wfcore.plugins import report_header


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
    openai_server, monkeypatch, caplog, wfe_engine_factory, wfe_run
):
    monkeypatch.setenv("WFE_AGENT", "openai")
    monkeypatch.setattr(wfe_openai.plugin, "_warned_kept", set(), raising=False)
    caplog.set_level(logging.WARNING, logger="wfe_openai")

    class Mine:
        async def run(self, task, phase, engine):
            task.output = "mine"

    engine = wfe_engine_factory(plugins=[wfe_openai.plugin])
    engine.register_adapter(TaskType.AGENTIC, Mine())

    task = _answer(engine, wfe_run)
    wfe_run(engine.run_until_idle())  # a second start says nothing more

    assert task.output == "mine"
    assert openai_server.requests == []
    # The operator asked for OpenAI: the adapter kept (one a plugin registers, say)
    # is named, once.
    warnings = [r.getMessage() for r in caplog.records if r.name == "wfe_openai"]
    assert warnings == [
        "WFE_AGENT=openai is ignored: agentic phases keep the adapter registered in code "
        f"or by a plugin ({__name__}.{Mine.__qualname__}); WFE_AGENT=openai replaces only "
        "the built-in one"
    ]


def _write_agent_app(tmp_path: Path) -> None:
    """An app whose one workflow has an agentic phase, and no adapter of its own."""
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


def _submit_question(wfe_engine_factory: Any, wfe_run: Any, question: str) -> str:
    """Store a task of the app's workflow (as another process would); its id."""
    client = wfe_engine_factory()
    client.register_workflow(
        "qa", [Phase("answer", assigned_to="agentic", instructions="Answer briefly.")]
    )

    async def submit() -> str:
        task = await client.submit_task({"q": question}, "qa")
        await client.aclose()
        return task.id

    return str(wfe_run(submit()))


def _run_worker(
    tmp_path: Path, store_url: str, *options: str, **env: str | None
) -> subprocess.CompletedProcess[str]:
    """``wfe worker agentapp:engine --until-idle`` with WFE_AGENT=openai, and ``env``
    over this environment (a value of None removes the variable)."""
    merged = dict(
        os.environ,
        WFE_AGENT="openai",
        WFE_OPENAI_MODEL="gpt-4o-mini",
        WFE_STORE=store_url,
        WFE_LOAD_PLUGINS="wfe-openai",
        PYTHONPATH=str(tmp_path),
    )
    merged.update(env)
    wfe = shutil.which("wfe")
    command = [wfe] if wfe else [sys.executable, "-m", "wfcore.cli"]
    return subprocess.run(
        [*command, "worker", "agentapp:engine", "--until-idle", *options],
        cwd=tmp_path,
        env={k: v for k, v in merged.items() if v is not None},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _header_lines(stderr: str) -> list[str]:
    """The lines ``wfe worker`` prints under its start-up line, before its progress."""
    lines = stderr.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("wfe worker "))
    return [line for line in lines[start + 1 :] if line.startswith("  ")]


def test_wfe_worker_with_wfe_agent_openai(
    openai_server, tmp_path: Path, wfe_store_url: str, wfe_engine_factory, wfe_run
):
    """A real ``wfe worker`` process: the app registers no adapter, the env chooses OpenAI."""
    _write_agent_app(tmp_path)
    task_id = _submit_question(wfe_engine_factory, wfe_run, "capital of Norway?")
    openai_server.reply("Oslo.")
    worker = _run_worker(tmp_path, wfe_store_url, "--quiet")

    assert worker.returncode == 0, worker.stderr
    client = wfe_engine_factory()
    done = wfe_run(client.get_task(task_id))
    assert done.status is TaskStatus.COMPLETED, done.error
    assert done.output == "Oslo."
    [request] = openai_server.requests
    assert request["body"]["model"] == "gpt-4o-mini"
    assert request["body"]["messages"][0]["content"] == "Answer briefly."
    assert "capital of Norway?" in request["body"]["messages"][1]["content"]


def test_a_password_in_openai_base_url_stays_out_of_the_debug_log(
    openai_server, tmp_path: Path, wfe_store_url: str, wfe_engine_factory, wfe_run
):
    """At --log-level debug the HTTP client logs each request with its URL whole:
    the worker's log masks the password there."""
    _write_agent_app(tmp_path)
    task_id = _submit_question(wfe_engine_factory, wfe_run, "capital of Norway?")
    openai_server.reply("Oslo.")
    url = openai_server.base_url.replace("http://", "http://svc-user:pw-s3cret@")

    worker = _run_worker(
        tmp_path, wfe_store_url, "--quiet", OPENAI_BASE_URL=url, WFE_LOG_LEVEL="debug"
    )

    assert worker.returncode == 0, worker.stderr
    done = wfe_run(wfe_engine_factory().get_task(task_id))
    assert done.status is TaskStatus.COMPLETED, done.error
    masked = url.replace("pw-s3cret", "***")
    assert f"HTTP Request: POST {masked}/chat/completions" in worker.stderr
    assert "s3cret" not in worker.stderr


NO_KEY_WARNING = (
    "  warning: OPENAI_API_KEY is not set: agentic phases will fail (a local server "
    "that ignores keys still needs some value, e.g. OPENAI_API_KEY=none)"
)


def test_wfe_worker_says_which_model_agents_run_on_and_warns_without_a_key(
    openai_server, tmp_path: Path, wfe_store_url: str, wfe_engine_factory, wfe_run
):
    """Without a key every agentic task fails: the worker says so as it starts, and
    the advice it gives works against a local server that ignores keys."""
    _write_agent_app(tmp_path)
    failing = _submit_question(wfe_engine_factory, wfe_run, "capital of Norway?")

    worker = _run_worker(tmp_path, wfe_store_url, OPENAI_API_KEY=None)

    assert worker.returncode == 0, worker.stderr
    assert _header_lines(worker.stderr) == [
        f"  agentic phases: OpenAI model gpt-4o-mini at {openai_server.base_url}",
        NO_KEY_WARNING,
    ]
    client = wfe_engine_factory()
    failed = wfe_run(client.get_task(failing))
    assert failed.status is TaskStatus.FAILED
    assert "OPENAI_API_KEY is not set" in failed.error
    assert openai_server.requests == []

    # Some value, as the warning says, and the server answers.
    answered = _submit_question(wfe_engine_factory, wfe_run, "capital of Sweden?")
    openai_server.reply("Stockholm.")
    worker = _run_worker(tmp_path, wfe_store_url, OPENAI_API_KEY="none")

    assert worker.returncode == 0, worker.stderr
    assert _header_lines(worker.stderr) == [
        f"  agentic phases: OpenAI model gpt-4o-mini at {openai_server.base_url}"
    ]
    assert wfe_run(client.get_task(answered)).output == "Stockholm."
    [request] = openai_server.requests
    assert request["headers"]["authorization"] == "Bearer none"


def test_the_header_follows_wfe_agent_and_never_shows_the_key(
    openai_server, monkeypatch, fake_key, wfe_engine_factory, wfe_run
):
    engine = wfe_engine_factory(plugins=[wfe_openai.plugin])
    assert report_header(engine) == []  # WFE_AGENT unset: nothing to say
    monkeypatch.setenv("WFE_AGENT", "open-ai")
    assert report_header(engine) == []  # warned about when the engine starts
    monkeypatch.setenv("WFE_AGENT", " OpenAI ")
    line = f"agentic phases: OpenAI model gpt-4o at {openai_server.base_url}"
    assert report_header(engine) == [line]
    # The same once the engine started and the adapter is registered.
    wfe_run(engine.run_until_idle())
    assert isinstance(engine.adapter_for(TaskType.AGENTIC), OpenAIAgentAdapter)
    assert report_header(engine) == [line]

    fresh = wfe_engine_factory(plugins=[wfe_openai.plugin])
    monkeypatch.setenv("WFE_OPENAI_MODEL", "gpt-4o-mini")
    for unset in ("", None):  # OPENAI_BASE_URL= in a .env file counts as unset
        if unset is None:
            monkeypatch.delenv("OPENAI_BASE_URL")
        else:
            monkeypatch.setenv("OPENAI_BASE_URL", unset)
        assert report_header(fresh) == [
            "agentic phases: OpenAI model gpt-4o-mini at api.openai.com"
        ]

    monkeypatch.setenv("OPENAI_API_KEY", "")  # empty is missing, as for the adapter
    assert report_header(fresh)[1] == NO_KEY_WARNING.strip()
    monkeypatch.setenv("OPENAI_API_KEY", fake_key + "\n")
    lines = report_header(fresh)
    assert lines[1] == (
        "warning: the API key (OPENAI_API_KEY) holds whitespace or a control character "
        "(a trailing newline from a file?): agentic phases will fail"
    )
    assert not any(fake_key in line or fake_key[-8:] in line for line in lines)


def test_the_header_warns_about_an_organization_no_header_can_carry(
    openai_server, monkeypatch, wfe_engine_factory
):
    monkeypatch.setenv("WFE_AGENT", "openai")
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    monkeypatch.setenv("OPENAI_ORG_ID", "org-123\n")
    engine = wfe_engine_factory(plugins=[wfe_openai.plugin])
    assert report_header(engine) == [
        f"agentic phases: OpenAI model gpt-4o at {openai_server.base_url}",
        "warning: OPENAI_ORG_ID='org-123\\n' holds whitespace or a control character (a "
        "trailing newline from a file?): the SDK sends it as an HTTP header, which cannot "
        "carry it: agentic phases will fail",
    ]


def test_the_header_warns_about_a_server_url_the_adapter_refuses(
    openai_server, monkeypatch, wfe_engine_factory
):
    monkeypatch.setenv("WFE_AGENT", "openai")
    engine = wfe_engine_factory(plugins=[wfe_openai.plugin])
    monkeypatch.setenv("OPENAI_BASE_URL", "localhost:8000/v1")
    assert report_header(engine) == [
        "agentic phases: OpenAI model gpt-4o at localhost:8000/v1",
        "warning: OPENAI_BASE_URL must be an http:// or https:// URL, got "
        "'localhost:8000/v1': agentic phases will fail",
    ]
    # Credentials in the URL are masked, as in the adapter's errors.
    monkeypatch.setenv("OPENAI_BASE_URL", "http://wfe:hunter22@127.0.0.1:8000/v1")
    assert report_header(engine) == [
        "agentic phases: OpenAI model gpt-4o at http://***@127.0.0.1:8000/v1"
    ]
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8000/v1?api-key=k3y")
    assert report_header(engine) == [
        "agentic phases: OpenAI model gpt-4o at http://127.0.0.1:8000/v1?api-key=***",
        "warning: OPENAI_BASE_URL must not have a query string "
        "('http://127.0.0.1:8000/v1?api-key=***'): the SDK adds the API path after it. "
        "Pass query parameters with client=AsyncOpenAI(base_url=..., default_query={...}): "
        "agentic phases will fail",
    ]
    # The old SDK's name for it is read by nobody: said, as a server address is at stake.
    monkeypatch.delenv("OPENAI_BASE_URL")
    monkeypatch.setenv("OPENAI_API_BASE", "http://127.0.0.1:8000/v1")
    assert report_header(engine) == [
        "agentic phases: OpenAI model gpt-4o at api.openai.com",
        "warning: OPENAI_API_BASE='http://127.0.0.1:8000/v1' is ignored: the openai SDK "
        "reads OPENAI_BASE_URL, so agentic phases go to api.openai.com (set OPENAI_BASE_URL "
        "instead)",
    ]
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8000/v1")
    assert report_header(engine) == [
        "agentic phases: OpenAI model gpt-4o at http://127.0.0.1:8000/v1"
    ]


def test_the_header_of_an_adapter_chosen_in_code(
    openai_server, monkeypatch, fake_key, wfe_engine_factory
):
    """WFE_AGENT leaves an app's own adapter alone, and so does the header; an
    OpenAIAgentAdapter the app registers is reported like the one WFE_AGENT makes."""
    import openai

    class Mine:
        async def run(self, task, phase, engine):
            task.output = "mine"

    monkeypatch.setenv("WFE_AGENT", "openai")
    engine = wfe_engine_factory(plugins=[wfe_openai.plugin])
    engine.register_adapter(TaskType.AGENTIC, Mine())
    assert report_header(engine) == []

    monkeypatch.delenv("WFE_AGENT")
    monkeypatch.delenv("OPENAI_API_KEY")
    engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter(model="llama3.2"))
    assert report_header(engine) == [
        f"agentic phases: OpenAI model llama3.2 at {openai_server.base_url}",
        NO_KEY_WARNING.strip(),
    ]
    engine.register_adapter(
        TaskType.AGENTIC,
        OpenAIAgentAdapter(model="llama3.2", api_key=fake_key, base_url="http://10.0.0.5:8000/v1"),
    )
    assert report_header(engine) == [
        "agentic phases: OpenAI model llama3.2 at http://10.0.0.5:8000/v1"
    ]
    given = openai.AsyncOpenAI(api_key=fake_key, base_url="http://10.0.0.6:8000/v1")
    engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter(model="m", client=given))
    assert report_header(engine) == ["agentic phases: OpenAI model m at http://10.0.0.6:8000/v1/"]


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


def test_wfe_openai_timeout_and_max_retries_for_workers(
    openai_server, monkeypatch, wfe_engine_factory, wfe_run
):
    monkeypatch.setenv("WFE_AGENT", "openai")
    monkeypatch.setenv("WFE_OPENAI_TIMEOUT", "1.5")
    monkeypatch.setenv("WFE_OPENAI_MAX_RETRIES", "0")
    openai_server.hang()
    engine = wfe_engine_factory(plugins=[wfe_openai.plugin])
    assert report_header(engine) == [
        f"agentic phases: OpenAI model gpt-4o at {openai_server.base_url} "
        "(timeout 1.5 s per request, max_retries 0)"
    ]

    task = _answer(engine, wfe_run)

    adapter = engine.adapter_for(TaskType.AGENTIC)
    assert (adapter.request_options["timeout"], adapter._max_retries) == (1.5, 0)
    assert task.status is TaskStatus.FAILED
    # The operator set it, not the app: the error names the variable.
    assert task.error == (
        "AdapterError: chat completion timed out and was not retried: "
        f"max_retries is 0 ({openai_server.base_url}/): "
        "no reply within 1.5 s per request (WFE_OPENAI_TIMEOUT)"
    )
    assert len(openai_server.requests) == 1


def test_bad_wfe_openai_timeout_or_max_retries_refuse_the_start(
    openai_server, tmp_path: Path, wfe_store_url: str, monkeypatch, wfe_engine_factory
):
    monkeypatch.setenv("WFE_AGENT", "openai")
    cases = [
        (
            "WFE_OPENAI_TIMEOUT",
            "2m",
            "WFE_OPENAI_TIMEOUT must be a number of seconds > 0 "
            "(the wait for each reply), such as 120, not '2m'",
        ),
        (
            "WFE_OPENAI_TIMEOUT",
            "0",
            "WFE_OPENAI_TIMEOUT must be a number of seconds > 0 "
            "(the wait for each reply), such as 120, not '0'",
        ),
        (
            "WFE_OPENAI_TIMEOUT",
            "nan",
            "WFE_OPENAI_TIMEOUT must be a number of seconds > 0 "
            "(the wait for each reply), such as 120, not 'nan'",
        ),
        (
            "WFE_OPENAI_MAX_RETRIES",
            "-1",
            "WFE_OPENAI_MAX_RETRIES must be a whole number >= 0 "
            "(the retries of a failed request), such as 2, not '-1'",
        ),
        (
            "WFE_OPENAI_MAX_RETRIES",
            "two",
            "WFE_OPENAI_MAX_RETRIES must be a whole number >= 0 "
            "(the retries of a failed request), such as 2, not 'two'",
        ),
    ]
    for name, value, message in cases:
        with monkeypatch.context() as env:
            env.setenv(name, value)
            engine = wfe_engine_factory(plugins=[wfe_openai.plugin])
            assert report_header(engine)[1] == f"warning: {message}: the worker will not start"
    # A real worker process exits with the message, before it runs anything.
    _write_agent_app(tmp_path)
    worker = _run_worker(tmp_path, wfe_store_url, WFE_OPENAI_TIMEOUT="2m")
    assert worker.returncode != 0
    assert cases[0][2] in worker.stderr
    assert openai_server.requests == []


def test_phase_options_naming_no_phase_are_warned_about_once(
    openai_server, monkeypatch, caplog, wfe_engine_factory, wfe_run
):
    caplog.set_level(logging.WARNING, logger="wfe_openai")
    openai_server.reply("4")
    engine = wfe_engine_factory(plugins=[wfe_openai.plugin])
    adapter = OpenAIAgentAdapter(
        phase_options={"answer": {"temperature": 0}, "typo_phase": {"model": "x"}}
    )
    engine.register_adapter(TaskType.AGENTIC, adapter)

    task = _answer(engine, wfe_run)
    wfe_run(engine.run_until_idle())  # a second start says nothing new

    assert task.status is TaskStatus.COMPLETED, task.error
    warnings = [r.getMessage() for r in caplog.records if r.name == "wfe_openai"]
    assert warnings == [
        "phase_options['typo_phase'] names no phase of this engine's workflows "
        "(phases: answer); its options apply to no phase"
    ]


def test_a_wfe_command_with_the_plugin_loaded_does_not_import_the_adapter() -> None:
    """Every wfe command loads the installed plugins; one that runs no agent is
    spared importing the adapter, its tools and jsonschema (about a tenth of the
    time `wfe tasks` took), which the package's names bring in when first used."""
    probe = textwrap.dedent(
        """
        import sys
        from wfcore.cli import main
        sys.argv = ["wfe", "plugins"]
        try:
            main()
        except SystemExit:
            pass
        loaded = sorted(m for m in ("wfe_openai.plugin", "wfe_openai.adapter",
                                    "wfe_openai.tools", "jsonschema") if m in sys.modules)
        print("LOADED", loaded)
        import wfe_openai
        print("NAMES", all(getattr(wfe_openai, n) is not None for n in wfe_openai.__all__))
        print("LATER", sorted(m for m in ("wfe_openai.adapter", "jsonschema") if m in sys.modules))
        try:
            wfe_openai.OpenAIAgentAdaptor
        except AttributeError as exc:
            print("TYPO", exc)
        """
    )
    env = {**os.environ, "WFE_LOAD_PLUGINS": "wfe-openai"}
    result = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)
    assert "openai" in result.stdout  # wfe plugins listed it
    assert lines["LOADED"] == "['wfe_openai.plugin']"
    assert lines["NAMES"] == "True"
    assert lines["LATER"] == "['jsonschema', 'wfe_openai.adapter']"
    assert lines["TYPO"] == "module 'wfe_openai' has no attribute 'OpenAIAgentAdaptor'"

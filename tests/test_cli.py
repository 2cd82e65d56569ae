"""The wfe command line, run as a real console script in subprocesses."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from core_util import stored_status, submit_with_app, wfe_at_once

ROOT = Path(__file__).resolve().parents[1]
APP = "review_app:engine"


def _wait_for(predicate, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_submit_work_answer_and_show(wfe) -> None:
    task_id = wfe("submit", "review", "--app", APP, "--data", '{"n": 21}').stdout.strip()
    worker = wfe("worker", APP, "--until-idle")
    assert "completed 0" in worker.stderr  # progress goes to stderr

    waiting = json.loads(wfe("tasks", "--status", "WAITING_HUMAN", "--json").stdout)
    assert [t["id"] for t in waiting] == [task_id]
    assert waiting[0]["outputs"] == {"double": {"n": 42}}
    assert waiting[0]["waiting_reason"] == "Approve the doubled number?"

    bad = wfe("resume", task_id, "--output", '{"ok": "yes"}', check=False)
    assert bad.returncode == 1
    assert "does not match its input_schema" in bad.stderr
    assert "ok: 'yes' is not of type 'boolean'" in bad.stderr
    read = json.loads(wfe("show", task_id, "--json").stdout)
    assert read["status"] == "waiting_human"
    assert f"version   {read['version']}" in wfe("show", task_id).stdout
    stale = wfe(
        "resume", task_id, "--output", '{"ok": true}', "--if-version", str(read["version"] - 1),
        check=False,
    )  # fmt: skip
    assert stale.returncode == 1
    assert f"has changed since version {read['version'] - 1} was read" in stale.stderr

    answer = ["--output", '{"ok": true}', "--if-version", str(read["version"])]
    assert wfe("resume", task_id, *answer).stdout.split() == [
        task_id,
        "completed",
    ]
    shown = wfe("show", task_id).stdout
    assert "status    completed" in shown
    assert 'output    approve: {"ok": true}' in shown
    table = wfe("tasks", "--status", "completed").stdout.splitlines()
    assert table[0].split()[:4] == ["ID", "WORKFLOW", "PHASE", "STATUS"]
    assert table[1].split()[:4] == [task_id, "review", "approve", "completed"]


def test_commands_use_the_store_an_app_names_in_code(wfe, tmp_path: Path) -> None:
    """An app with store= in code: every command given --app works on that store, from
    any folder (not on a .wfe/wfe.db that does not exist there)."""
    srv = tmp_path / "srv"
    srv.mkdir()
    (tmp_path / "srv_app.py").write_text(
        "from wfcore import ECSWorkflowEngine, Phase\n"
        f"engine = ECSWorkflowEngine(store='sqlite://{srv}/wfe.db')\n"
        "engine.register_workflow('w', [Phase('x', assigned_to='human')])\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in wfe.env.items() if k != "WFE_STORE"}
    env["PYTHONPATH"] += os.pathsep + str(tmp_path)

    def run(*args: str) -> str:
        return wfe(*args, "--app", "srv_app:engine", env=env, cwd=elsewhere).stdout

    task_id = run("submit", "w").strip()
    assert [t["id"] for t in json.loads(run("tasks", "--json"))] == [task_id]
    assert json.loads(run("show", task_id, "--json"))["status"] == "pending"
    assert json.loads(run("status", "--json"))["workflows"]["w"]["pending"] == 1
    assert run("cancel", task_id).split() == [task_id, "cancelled"]
    typo = wfe("tasks", "--app", "no_such_app:engine", env=env, cwd=elsewhere, check=False)
    assert "Invalid value for --app: cannot import 'no_such_app'" in typo.stderr
    assert run("retry", task_id).split() == [task_id, "pending"]
    assert "w" in run("workflows")
    assert not (elsewhere / ".wfe").exists()


def test_show_cuts_a_huge_value_and_json_shows_it_whole(wfe) -> None:
    big = {"blob": "x" * 5000}
    task_id = wfe("submit", "review", "--app", APP, "--data", json.dumps(big)).stdout.strip()
    [data_line] = [
        line for line in wfe("show", task_id).stdout.splitlines() if line.startswith("data")
    ]
    assert data_line.endswith("… (5,012 characters; --json shows all)")
    assert len(data_line) < 2100
    assert json.loads(wfe("show", task_id, "--json").stdout)["data"] == big


def test_bad_input_exits_non_zero_with_one_line(wfe) -> None:
    wfe("worker", APP, "--until-idle", "--quiet")  # stores the app's workflows
    cases = [
        (("submit", "nope", "--data", "{}"), "unknown workflow 'nope'"),
        (("submit", "nope"), "or name the app with --app MODULE:ATTR"),
        (("submit", "review", "--data", "{bad"), "--data"),
        (("submit", "review", "--data", "[" * 5000 + "]" * 5000), "nested deeper than 200"),
        (("resume", "x", "--output", "[" * 5000 + "]" * 5000), "nested deeper than 200"),
        (("submit", "review", "--data", "{}", "--assigned-to", "robot"), "unknown assigned_to"),
        (("submit", "review", "--data", "{}", "--classification", "x"), "unknown classification"),
        (("show", "missing"), "unknown task 'missing'"),
        (("resume", "missing", "--output", "1"), "unknown task 'missing'"),
        (("cancel", "missing"), "unknown task 'missing'"),
        (("tasks", "--status", "sleeping"), "unknown status 'sleeping'"),
        (("worker", "no_such_module:engine"), "cannot import 'no_such_module'"),
        (("worker", "review_app:nothing"), "has no attribute 'nothing'"),
    ]
    results = wfe_at_once(wfe, *[args for args, _ in cases])
    for (args, message), result in zip(cases, results, strict=True):
        assert result.returncode != 0, args
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr, args


def test_an_app_that_fails_to_import_is_named_with_its_line(wfe, tmp_path: Path) -> None:
    """In a long app, the line to fix; the whole traceback at --log-level debug."""
    (tmp_path / "typo_app.py").write_text(
        "from wfcore import ECSWorkflowEngine, Phase\n"
        "engine = ECSWorkflowEngine()\n"
        "\n"
        "engine.register_workflow('w', [Phase('a'), Phase('a')])\n"
    )
    (tmp_path / "dep_app.py").write_text("import json\nimport no_such_dependency\n")
    cases = [
        (
            "typo_app",
            "importing 'typo_app' failed: InvalidWorkflowError: "
            "phases[1].target_classification: duplicate 'a' (at {path}, line 4)",
        ),
        (
            "dep_app",
            "cannot import 'dep_app': No module named 'no_such_dependency' (at {path}, line 2)",
        ),
    ]
    *results, debug = wfe_at_once(
        wfe,
        *[("worker", f"{app}:engine") for app, _ in cases],
        ("--log-level", "debug", "worker", "typo_app:engine"),
    )
    for (app, said), result in zip(cases, results, strict=True):
        path = tmp_path / f"{app}.py"
        assert result.returncode == 2
        assert result.stderr.endswith(said.format(path=path) + "\n"), result.stderr
        assert "Traceback" not in result.stderr
    assert "Traceback (most recent call last)" in debug.stderr
    assert f'File "{tmp_path / "typo_app.py"}", line 4' in debug.stderr


def test_submit_with_files_the_first_phase_reads(wfe, tmp_path: Path) -> None:
    (tmp_path / "files_app.py").write_text(
        "from wfcore import ECSWorkflowEngine, Phase\n"
        "engine = ECSWorkflowEngine()\n"
        "engine.register_workflow('intake', [Phase('read', assigned_to='functional',\n"
        "    command=['cat', 'artifacts/scan.txt', 'artifacts/pages/1.txt'])])\n"
    )
    (tmp_path / "scan.txt").write_text("scanned ")
    (tmp_path / "p=1.txt").write_text("page one")
    (tmp_path / "k=v.txt").write_text("a file named k=v.txt")
    app = ("--app", "files_app:engine")
    task_id = wfe(
        "submit", "intake", *app, "--artifact", "scan.txt", "--artifact", "pages/1.txt=p=1.txt"
    ).stdout.strip()
    wfe("worker", "files_app:engine", "--until-idle", "--quiet")
    task = json.loads(wfe("show", task_id, "--json").stdout)
    assert task["output"] == "scanned page one"
    assert [a["name"] for a in task["artifacts"]] == ["scan.txt", "pages/1.txt"]

    named = wfe("submit", "intake", *app, "--artifact", "k=v.txt", "--json").stdout
    assert [a["name"] for a in json.loads(named)["artifacts"]] == ["k=v.txt"]
    missing = wfe("submit", "intake", *app, "--artifact", "nope.pdf", check=False)
    assert missing.returncode == 2
    assert "artifacts: artifact 'nope.pdf': 'nope.pdf' does not exist" in missing.stderr
    again = wfe("submit", "intake", *app, "--id", task_id, "--artifact", "scan.txt")
    assert again.stdout.strip() == task_id
    assert "already exists; its files were left as they were" in again.stderr
    twice = wfe(
        "submit", "intake", *app, "--artifact", "a=scan.txt", "--artifact", "a=p=1.txt", check=False
    )
    assert twice.returncode == 2 and "two files named 'a'" in twice.stderr


def test_an_explicit_store_beats_wfe_store(wfe, tmp_path: Path) -> None:
    """--store before or after the command name wins over WFE_STORE."""
    other = f"sqlite://{tmp_path / 'other.db'}"
    in_env = wfe("submit", "review", "--app", APP, "--id", "in-env").stdout.strip()
    wfe("--store", other, "submit", "review", "--app", APP, "--id", "in-other")
    for args in (("--store", other, "tasks", "--json"), ("tasks", "--store", other, "--json")):
        assert [t["id"] for t in json.loads(wfe(*args).stdout)] == ["in-other"], args
    assert [t["id"] for t in json.loads(wfe("tasks", "--json").stdout)] == [in_env]


def test_commands_on_stored_tasks_need_an_existing_store(wfe, tmp_path: Path) -> None:
    """A mistyped store path is an error, not an empty store created on the spot."""
    missing = tmp_path / "typo" / "wfe.db"
    commands = (("tasks",), ("show", "x"), ("cancel", "x"), ("workflows",))
    results = wfe_at_once(wfe, *[("--store", f"sqlite://{missing}", *c) for c in commands])
    for args, result in zip(commands, results, strict=True):
        assert result.returncode == 1, args
        assert f"no store at {missing}" in result.stderr, (args, result.stderr)
    assert not missing.parent.exists()


def test_commands_that_read_leave_an_empty_file_as_it_is(wfe, tmp_path: Path) -> None:
    """An empty file (a touch, a failed copy) is no store: reading commands made a
    wfcore database of it, and said nothing."""
    empty = tmp_path / "notes.txt"
    empty.write_bytes(b"")
    commands = (("status",), ("tasks",), ("show", "x"), ("workflows",), ("metrics",))
    results = wfe_at_once(wfe, *[("--store", f"sqlite://{empty}", *c) for c in commands])
    for args, result in zip(commands, results, strict=True):
        assert result.returncode == 1, args
        assert f"no store at {empty}" in result.stderr, (args, result.stderr)
    assert empty.read_bytes() == b""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "tmp"]
    # A command that stores makes its store in it, as in a file it made itself.
    wfe("--store", f"sqlite://{empty}", "submit", "review", "--app", APP)
    assert wfe("--store", f"sqlite://{empty}", "tasks", "--json").stdout.count('"id"') == 1


def test_unusable_store_paths_and_broken_apps_get_one_line(wfe, tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("")
    (tmp_path / "dangling.db").symlink_to(tmp_path / "gone" / "wfe.db")
    (tmp_path / "raising_app.py").write_text("raise RuntimeError('no config')\n")
    (tmp_path / "broken_app.py").write_text("def f(:\n")
    (tmp_path / "factory_app.py").write_text("def make(settings):\n    pass\n")
    cases = [
        (("--store", f"sqlite://{tmp_path}", "submit", "review"), "is a folder"),
        (("--store", f"sqlite://{tmp_path}/a_file/x.db", "submit", "review"), "a_file"),
        # Said to be "deleted or replaced as this process opened it, 5 times in a row".
        (
            ("--store", f"sqlite://{tmp_path}/dangling.db", "submit", "review"),
            f"cannot create {tmp_path}/dangling.db: unable to open database file; it is a "
            f"symbolic link to {tmp_path}/gone/wfe.db, which does not exist",
        ),
        (("worker", "raising_app:engine"), "RuntimeError: no config"),
        (("worker", "broken_app:engine"), "SyntaxError"),
        (("worker", "factory_app:make"), "calling factory_app:make() failed: TypeError"),
        (("submit", "review", "--app", "raising_app:engine"), "Invalid value for --app"),
    ]
    results = wfe_at_once(wfe, *[args for args, _ in cases])
    for (args, message), result in zip(cases, results, strict=True):
        assert result.returncode != 0, args
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr, args


def test_resume_of_a_task_that_is_not_waiting(wfe) -> None:
    task_id = wfe("submit", "review", "--app", APP, "--data", '{"n": 1}').stdout.strip()
    result = wfe("resume", task_id, "--output", "true", check=False)
    assert result.returncode == 1
    assert "is PENDING, not waiting" in result.stderr


def test_status_names_in_any_case_and_json_array(wfe, tmp_path: Path) -> None:
    ids = submit_with_app(APP, "review", [{"n": i} for i in range(3)], env=wfe.env, cwd=tmp_path)
    spellings = ("pending", "PENDING", "Pending")
    runs = wfe_at_once(
        wfe,
        *[("tasks", "--status", spelling, "--json") for spelling in spellings],
        ("tasks", "--status", "completed", "--json"),
        ("tasks", "--limit", "2", "--json"),
    )
    for run in runs:
        assert run.returncode == 0, (run.args, run.stderr)
    *by_spelling, completed, limited = (json.loads(run.stdout) for run in runs)
    for listed in by_spelling:
        assert sorted(t["id"] for t in listed) == sorted(ids)
        assert all(t["format"] == 1 for t in listed)
    assert completed == []
    assert len(limited) == 2


def test_idempotent_submit_with_id(wfe) -> None:
    first = wfe("submit", "review", "--app", APP, "--data", '{"n": 1}', "--id", "order-7")
    second = wfe("submit", "review", "--app", APP, "--data", '{"n": 99}', "--id", "order-7")
    assert first.stdout.strip() == second.stdout.strip() == "order-7"
    assert "note" not in first.stderr
    assert "already exists and was left as it is" in second.stderr
    shown = json.loads(wfe("show", "order-7", "--json").stdout)
    assert shown["data"] == {"n": 1}
    assert len(json.loads(wfe("tasks", "--json").stdout)) == 1


def test_cancel_retry_and_workflows(wfe) -> None:
    task_id = wfe("submit", "review", "--app", APP, "--data", '{"n": 1}').stdout.strip()
    not_failed = wfe("retry", task_id, check=False)
    assert not_failed.returncode == 1 and "only a FAILED or CANCELLED" in not_failed.stderr
    assert wfe("cancel", task_id).stdout.split() == [task_id, "cancelled"]
    again = wfe("cancel", task_id, check=False)
    assert again.returncode == 1 and "already CANCELLED" in again.stderr
    assert wfe("retry", task_id).stdout.split() == [task_id, "pending"]
    wfe("worker", APP, "--until-idle", "--quiet")
    assert json.loads(wfe("show", task_id, "--json").stdout)["status"] == "waiting_human"
    assert wfe("workflows").stdout.splitlines() == [
        "WORKFLOW  PHASE    TYPE        THEN",
        "review    double   functional  approve",
        "          approve  human       done",
    ]
    as_json = json.loads(wfe("workflows", "--json").stdout)
    assert [w["name"] for w in as_json] == ["review"]
    assert as_json[0]["phases"][1]["input_schema"]["required"] == ["ok"]


def test_workflows_shows_where_each_phase_goes(wfe, tmp_path: Path) -> None:
    """Routes as the worker takes them, not list order: branches, ends, timeouts."""
    (tmp_path / "routes_app.py").write_text(
        "from wfcore import ECSWorkflowEngine, Phase\n"
        "engine = ECSWorkflowEngine()\n"
        "engine.register_workflow('invoices', [\n"
        "    Phase('eu', assigned_to='functional', command=['true'],\n"
        "          next_classifications=['check']),\n"
        "    Phase('intl', assigned_to='functional', command=['true']),\n"
        "    Phase('check', next_classifications=['pay', 'escalate'],\n"
        "          assigned_to='human', timeout=60, on_timeout={'goto': 'escalate'}),\n"
        "    Phase('pay', assigned_to='functional', command=['true'], next_classifications=[]),\n"
        "    Phase('escalate', assigned_to='human', timeout=60, on_timeout={'output': 0}),\n"
        "], start_phases=['eu', 'intl'])\n"
    )
    wfe("worker", "routes_app:engine", "--until-idle", "--quiet")
    assert wfe("workflows").stdout.splitlines() == [
        "WORKFLOW  PHASE         TYPE        THEN",
        "invoices  eu (start)    functional  check",
        "          intl (start)  functional  check",
        "          check         human       pay or escalate (the phase picks; else the first); "
        "on timeout: escalate",
        "          pay           functional  done",
        "          escalate      human       done; on timeout: a set output",
    ]


def test_worker_store_option_applies_to_an_app_built_at_import(wfe, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere" / "other.db"
    env = {k: v for k, v in wfe.env.items() if k != "WFE_STORE"}
    url = f"sqlite://{other}"
    wfe("submit", "review", "--app", APP, "--store", url, "--data", '{"n": 2}', env=env)
    wfe("worker", APP, "--store", url, "--until-idle", "--concurrency", "3", env=env)
    waiting = json.loads(wfe("tasks", "--store", url, "--json", env=env).stdout)
    assert [t["status"] for t in waiting] == ["waiting_human"]
    assert other.exists()
    assert not (tmp_path / ".wfe").exists()


def test_worker_stops_cleanly_on_sigterm_and_hands_work_back(wfe, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    env = dict(wfe.env, CLI_APP_GATE=str(gate))
    task_id = wfe(
        "submit", "review", "--app", APP, "--data", '{"n": 5, "wait": true}'
    ).stdout.strip()
    proc = subprocess.Popen(
        [sys.executable, "-m", "wfcore.cli", "worker", APP],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(lambda: Path(str(gate) + ".running").exists(), what="the phase to start")
        status = wfe("status").stdout.splitlines()
        assert status[1].split()[:3] == ["review", "0", "1"]  # in progress
        assert status[-1].startswith("busy workers: ") and f"/{proc.pid}/" in status[-1]
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "stopping: 1 running phase(s) get up to" in stderr
    task = json.loads(wfe("show", task_id, "--json").stdout)
    # The phase could not finish within shutdown_timeout: it went back to the store.
    assert task["status"] == "pending"
    assert task["attempts"] == 0
    assert task["history"][-1]["event"] == "released"
    gate.write_text("open")
    wfe("worker", APP, "--until-idle", "--quiet", env=env)
    task = json.loads(wfe("show", task_id, "--json").stdout)
    assert task["status"] == "waiting_human" and task["outputs"]["double"] == {"n": 10}


def test_plugins_command_and_a_plugin_adding_a_command(wfe, tmp_path: Path) -> None:
    *runs, misspelled = wfe_at_once(
        wfe,
        ("plugins", "--all"),
        ("plugins", "--all", "--hook", "wfe_open_store", "--json"),
        ("plugins",),
        ("plugins", "--hook", "wfe_classify"),
        ("plugins", "--hook", "wfe_clasify"),
    )
    assert [run.returncode for run in runs] == [0] * 4, [run.stderr for run in runs]
    listed, stores_json, none, classify = (run.stdout for run in runs)
    assert "wfcore.adapters" in listed and "wfe_register_adapters" in listed
    stores = json.loads(stores_json)
    assert sorted(p["name"] for p in stores) == ["wfcore.stores.memory", "wfcore.stores.sqlite"]
    # The fixture sets WFE_LOAD_PLUGINS empty.
    assert none.startswith(("no plugins installed", "no plugins loaded: WFE_LOAD_PLUGINS is empty"))
    assert "no plugins implement wfe_classify" in classify
    assert misspelled.returncode == 2
    assert "no hook named 'wfe_clasify' (did you mean 'wfe_classify'? hooks: " in misspelled.stderr
    typo = wfe("plugins", env=dict(wfe.env, WFE_LOAD_PLUGINS="wfe-kafak"))
    assert "WFE_LOAD_PLUGINS names 'wfe-kafak', which is no installed plugin" in typo.stderr

    # A plugin installed the way pip lays one out: a module plus dist-info with an
    # entry point in the wfcore group.
    site = tmp_path / "site"
    (site / "hello_cmd-1.2.dist-info").mkdir(parents=True)
    (site / "hello_cmd-1.2.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: hello-cmd\nVersion: 1.2\n"
    )
    (site / "hello_cmd-1.2.dist-info" / "entry_points.txt").write_text(
        "[wfcore]\nhello = hello_cmd\n"
    )
    (site / "hello_cmd.py").write_text(
        "import click\nfrom wfcore import hookimpl\n\n"
        "@hookimpl\ndef wfe_register_commands(cli):\n"
        "    @cli.command()\n    @click.argument('name')\n"
        "    def hello(name):\n        'Say hello.'\n        click.echo(f'hello {name}')\n"
    )
    env = dict(wfe.env, PYTHONPATH=f"{site}{os.pathsep}{wfe.env['PYTHONPATH']}")
    env.pop("WFE_LOAD_PLUGINS")
    assert wfe("hello", "world", env=env).stdout == "hello world\n"
    listed = json.loads(wfe("plugins", "--json", env=env).stdout)
    assert {
        "name": "hello",
        "package": "hello-cmd",
        "version": "1.2",
        "builtin": False,
        "hooks": ["wfe_register_commands"],
    } in listed
    blocked = wfe("hello", "x", env=dict(env, WFE_DISABLED_PLUGINS="hello"), check=False)
    assert blocked.returncode == 2 and "No such command 'hello'" in blocked.stderr
    by_package = wfe("hello", "x", env=dict(env, WFE_DISABLED_PLUGINS="Hello_Cmd"), check=False)
    assert by_package.returncode == 2 and "No such command 'hello'" in by_package.stderr

    # Installed but not loaded: wfe plugins says why.
    off = wfe("plugins", env=dict(env, WFE_LOAD_PLUGINS="")).stdout
    assert off.startswith("no plugins loaded: WFE_LOAD_PLUGINS is empty; installed: ")
    assert "hello (hello-cmd)" in off and off.endswith(" (--all shows the built-ins)\n")
    only_hello = dict(env, WFE_LOAD_PLUGINS="hello-cmd", WFE_DISABLED_PLUGINS="hello-cmd")
    disabled = wfe("plugins", env=only_hello).stdout
    assert disabled.startswith("no plugins loaded: ")
    assert "hello (hello-cmd) disabled by WFE_DISABLED_PLUGINS" in disabled
    hooked = wfe("plugins", "--hook", "wfe_register_commands", env=only_hello).stdout
    assert hooked.startswith("no plugins implement wfe_register_commands; no plugins loaded: ")


def test_show_and_json_keep_non_ascii_text_as_is(wfe) -> None:
    task_id = wfe("submit", "review", "--app", APP, "--data", '{"name": "Zoë → 東京"}').stdout
    assert '{"name": "Zoë → 東京"}' in wfe("show", task_id.strip()).stdout
    assert '"name": "Zoë → 東京"' in wfe("tasks", "--json").stdout


def test_help_lists_every_command(wfe) -> None:
    runs = wfe_at_once(wfe, ("--help",), ("worker", "--help"))
    assert [run.returncode for run in runs] == [0, 0], [run.stderr for run in runs]
    out, worker_help = (run.stdout for run in runs)
    for command in (
        "worker",
        "submit",
        "tasks",
        "show",
        "resume",
        "cancel",
        "workflows",
        "plugins",
        "wait",
    ):
        assert command in out
    assert "MODULE:ATTR" in worker_help


def test_worker_processes_share_the_store_and_stop_together(wfe, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    env = dict(wfe.env, CLI_APP_GATE=str(gate))
    datas = [{"n": n, "wait": True} for n in (1, 2)]
    ids = submit_with_app(APP, "review", datas, env=wfe.env, cwd=tmp_path)
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "wfcore.cli", "worker", APP, "-p", "2", "--concurrency", "1"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def running_pids():
            files = [Path(f"{gate}.pid.{task_id}") for task_id in ids]
            return all(f.exists() for f in files) and {f.read_text() for f in files}

        # One task at a time each: both run at once only on two processes.
        pids = _wait_for(running_pids, what="both tasks to run")
        assert len(pids) == 2 and str(supervisor.pid) not in pids
        supervisor.send_signal(signal.SIGTERM)
        _, stderr = supervisor.communicate(timeout=30)
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
    assert supervisor.returncode == 0, stderr
    for pid in pids:  # each says which worker its progress lines are of
        assert re.search(rf"^\S+ \[worker {pid}\] this worker: ", stderr, re.M), stderr
        # and which is stopping: they all get the signal at once
        assert f"\n[worker {pid}] stopping: 1 running phase(s) get up to 0.5s" in stderr, stderr
    for task_id in ids:  # both processes handed their phase back on the way out
        task = json.loads(wfe("show", task_id, "--json").stdout)
        assert task["status"] == "pending" and task["history"][-1]["event"] == "released"

    gate.write_text("open")
    wfe("worker", APP, "--processes", "2", "--until-idle", "--quiet", env=env)
    for task_id in ids:
        assert json.loads(wfe("show", task_id, "--json").stdout)["status"] == "waiting_human"


def test_worker_runs_only_the_workflows_it_is_given(wfe, tmp_path: Path) -> None:
    app = "split_app:engine"
    ids = {
        name: submit_with_app(app, name, [None, None], env=wfe.env, cwd=tmp_path)
        for name in ("left", "right")
    }

    def statuses(name: str) -> list[str | None]:
        return [stored_status(wfe.env["WFE_STORE"], i) for i in ids[name]]

    # --until-idle: idle once no task of its own workflows is left.
    worker = wfe("worker", app, "--workflow", "left", "--until-idle")
    assert "workflows left" in worker.stderr
    assert statuses("left") == ["completed"] * 2
    assert statuses("right") == ["pending"] * 2

    empty, typo, helped = wfe_at_once(
        wfe,
        ("worker", app, "-w", "", "--until-idle"),
        ("worker", app, "-w", "rigth", "--until-idle", "--quiet"),
        ("worker", "--help"),
    )
    assert empty.returncode == 2 and "a workflow name may not be empty" in empty.stderr
    assert typo.returncode == 0, typo.stderr
    assert "no workflow named 'rigth'" in typo.stderr and "known: left, right" in typo.stderr
    assert statuses("right") == ["pending"] * 2
    assert "--workflow NAME" in helped.stdout

    # --processes hands the workflows on to each process.
    ids["left"] += submit_with_app(app, "left", [None], env=wfe.env, cwd=tmp_path)
    wfe("worker", app, "-p", "2", "-w", "right", "--until-idle", "--quiet")
    assert statuses("right") == ["completed"] * 2
    assert statuses("left") == ["completed", "completed", "pending"]
    wfe("worker", app, "-w", "right", "-w", "left", "--until-idle", "--quiet")
    assert statuses("left") == ["completed"] * 3


def test_purge_deletes_finished_tasks_older_than_asked(wfe, tmp_path: Path) -> None:
    app = "split_app:engine"
    done = submit_with_app(app, "left", [None] * 3, env=wfe.env, cwd=tmp_path)
    wfe("worker", app, "--until-idle", "--quiet")
    waiting = wfe("submit", "right", "--app", app).stdout.strip()

    assert wfe("purge", "--older-than", " 1H ").stdout.endswith("more than 1h ago\n")
    dry = wfe("purge", "--older-than", "0", "--dry-run").stdout
    assert dry.startswith("would delete 3 completed/failed/cancelled task(s)")
    assert wfe("purge", "--older-than", "0", "--status", "failed").stdout.startswith("deleted 0")
    assert wfe("purge", "--older-than", "0s", "--workflow", "left").stdout.startswith("deleted 3")
    assert [stored_status(wfe.env["WFE_STORE"], i) for i in done] == [None, None, None]
    assert stored_status(wfe.env["WFE_STORE"], waiting) == "pending"

    cases = [
        (["--older-than", "5"], "is not an age"),
        (["--older-than", "-2d"], "is not an age"),
        (["--older-than", "infd"], "is not an age"),
        (["--older-than", "1e400d"], "is not an age"),
        # Months or minutes: refused rather than deleting 5 minutes' worth of history.
        (["--older-than", "5M"], "'5M' is ambiguous: write m for minutes"),
        (["--older-than", "1d", "--status", "pending"], "pending tasks are never purged"),
    ]
    *refused, helped = wfe_at_once(
        wfe, *[("purge", *args) for args, _ in cases], ("purge", "--help")
    )
    for (args, message), bad in zip(cases, refused, strict=True):
        assert bad.returncode == 2 and message in bad.stderr, (args, bad.stderr)
    assert stored_status(wfe.env["WFE_STORE"], waiting) == "pending"
    assert "--older-than AGE" in helped.stdout


def test_purge_compact_gives_the_space_back(wfe, tmp_path) -> None:
    app = "split_app:engine"
    big = {"blob": "x" * 200_000}
    submit_with_app(app, "left", [big] * 10, env=wfe.env, cwd=tmp_path)
    wfe("worker", app, "--until-idle", "--quiet")
    db = tmp_path / "wfe.db"
    before = db.stat().st_size
    plain = wfe("purge", "--older-than", "0").stdout
    assert plain.startswith("deleted 10 ") and "compacted" not in plain
    assert db.stat().st_size >= before  # SQLite keeps the freed pages
    compacted = wfe("purge", "--older-than", "0", "--compact").stdout.splitlines()
    assert compacted[0].startswith("deleted 0 ")
    assert compacted[1].startswith("compacted the store: ")
    assert db.stat().st_size < before / 4
    both = wfe("purge", "--older-than", "0", "--compact", "--dry-run", check=False)
    assert both.returncode == 2 and "--compact deletes nothing" in both.stderr


def test_purge_json_says_what_it_did_for_a_script(wfe, tmp_path) -> None:
    app = "split_app:engine"
    submit_with_app(app, "left", [None] * 3, env=wfe.env, cwd=tmp_path)
    wfe("worker", app, "--until-idle", "--quiet")
    _register_outbox_consumer(tmp_path / "wfe.db", "kafka:old-results")
    held = wfe("submit", "left", "--app", app).stdout.strip()
    wfe("worker", app, "--until-idle", "--quiet")

    dry = json.loads(wfe("purge", "--older-than", "0", "--dry-run", "--json").stdout)
    assert dry == {
        "count": 3,
        "dry_run": True,
        "statuses": ["completed", "failed", "cancelled"],
        "older_than_seconds": 0.0,
        "workflow": None,
        "kept_by_outbox": {"kafka:old-results": 1},
        "compacted": None,
    }
    args = ["--older-than", "2h", "--status", "completed", "-w", "left", "--json"]
    assert json.loads(wfe("purge", *args).stdout)["older_than_seconds"] == 7200.0
    done = json.loads(wfe("purge", "--older-than", "0", "-w", "left", "--compact", "--json").stdout)
    assert done["count"] == 3 and not done["dry_run"] and done["workflow"] == "left"
    assert done["compacted"]["after"] <= done["compacted"]["before"]
    assert done["compacted"]["after"] == (tmp_path / "wfe.db").stat().st_size
    assert stored_status(wfe.env["WFE_STORE"], held) == "completed"


def _register_outbox_consumer(db: Path, name: str) -> None:
    """Register an outbox consumer in the store at ``db``, as the Kafka plugin does."""
    register = (
        "import asyncio, sys\n"
        "from wfcore import ECSWorkflowEngine\n"
        "async def main():\n"
        "    engine = ECSWorkflowEngine(sys.argv[1], load_plugins=False)\n"
        "    await (await engine.get_store()).outbox_register(sys.argv[2])\n"
        "    await engine.aclose()\n"
        "asyncio.run(main())\n"
    )
    subprocess.run([sys.executable, "-c", register, f"sqlite://{db}", name], check=True)


def test_outbox_lists_consumers_and_drops_a_retired_one(wfe, tmp_path) -> None:
    app = "split_app:engine"
    wfe("submit", "left", "--app", app)
    wfe("worker", app, "--until-idle", "--quiet")
    assert wfe("outbox").stdout.startswith("no outbox consumers")
    _register_outbox_consumer(tmp_path / "wfe.db", "kafka:old-results")
    wfe("submit", "left", "--app", app)
    wfe("worker", app, "--until-idle", "--quiet")

    assert wfe("outbox").stdout.split() == ["CONSUMER", "UNPUBLISHED", "kafka:old-results", "1"]
    assert json.loads(wfe("outbox", "--json").stdout) == {"kafka:old-results": 1}
    purged = wfe("purge", "--older-than", "0").stdout
    assert purged.startswith("deleted 1 ")  # the task finished before the registration
    assert "kept: finished tasks not yet published by outbox consumer(s) kafka:old-results (1)" in (
        purged
    )
    unknown = wfe("outbox", "--drop", "kafka:old", check=False)
    assert unknown.returncode == 2
    assert "no outbox consumer named 'kafka:old' (registered: kafka:old-results)" in unknown.stderr
    dropped = wfe("outbox", "--drop", "kafka:old-results").stdout
    assert "1 result(s) it had not published will not be published" in dropped
    assert wfe("purge", "--older-than", "0").stdout == (
        "deleted 1 completed/failed/cancelled task(s) that finished more than 0 ago\n"
    )
    assert wfe("outbox").stdout.startswith("no outbox consumers")


def test_worker_allow_command_lets_defined_workflows_run_that_program(wfe) -> None:
    app = "split_app:engine"

    def define(name: str) -> str:
        spec = {
            "name": name,
            "phases": [{"target_classification": "run", "command": [sys.executable, "-V"]}],
        }
        args = ["submit", "-", "--classification", "define_workflow", "--data", json.dumps(spec)]
        return wfe(*args, "--assigned-to", "functional").stdout.strip()

    refused = define("refused")
    wfe("worker", app, "--until-idle", "--quiet")
    error = json.loads(wfe("show", refused, "--json").stdout)["error"]
    assert "allowed_commands (none)" in error and "--allow-command PROGRAM" in error
    allowed = define("allowed")
    wfe("worker", app, "--allow-command", sys.executable, "--until-idle", "--quiet")
    shown = json.loads(wfe("show", allowed, "--json").stdout)
    assert shown["status"] == "completed" and shown["output"].startswith("Python 3")
    empty = wfe("worker", app, "--allow-command", "", "--until-idle", check=False)
    assert empty.returncode == 2 and "a program name may not be empty" in empty.stderr


def test_submit_delay_and_at_start_a_task_later(wfe) -> None:
    delayed = wfe("submit", "review", "--app", APP, "--data", '{"n": 1}', "--delay", "2h")
    at = "2031-01-02T03:04:05+01:00"
    timed = wfe("submit", "review", "--app", APP, "--data", '{"n": 2}', "--at", at, "--json")
    timed_task = json.loads(timed.stdout)
    assert timed_task["run_after"] == "2031-01-02T02:04:05+00:00"
    notes = {line.split()[0]: line for line in wfe("tasks").stdout.splitlines()[1:]}
    assert (
        "pending" in notes[delayed.stdout.strip()]
        and "runs after 20" in notes[delayed.stdout.strip()]
    )
    assert notes[timed_task["id"]].endswith("runs after 2031-01-02 02:04:05")
    assert "starts    2031-01-02T02:04:05+00:00" in wfe("show", timed_task["id"]).stdout

    for args, message in [
        (["--delay", "2"], "Invalid value for --delay: '2' is not a duration"),
        (["--at", "2031-01-02 03:04"], "is not an ISO 8601 time with a UTC offset"),
        (["--at", at, "--delay", "1h"], "give --delay or --at, not both"),
    ]:
        bad = wfe("submit", "review", "--app", APP, "--data", "{}", *args, check=False)
        assert bad.returncode == 2 and message in bad.stderr


def test_status_marks_a_killed_worker_still_holding_tasks_as_dead(wfe, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    env = dict(wfe.env, CLI_APP_GATE=str(gate))
    wfe("submit", "review", "--app", APP, "--data", '{"n": 5, "wait": true}')
    proc = subprocess.Popen(
        [sys.executable, "-m", "wfcore.cli", "worker", APP, "--quiet"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(lambda: Path(str(gate) + ".running").exists(), what="the phase to start")
    finally:
        proc.kill()
        proc.wait()
    busy = wfe("status").stdout.splitlines()[-1]
    assert f"/{proc.pid}/" in busy and "(dead: its tasks go to the next claim)" in busy


def test_tables_line_up_with_wide_characters(wfe) -> None:
    for task_id in ("日本語", "abcdefg"):
        wfe("submit", "review", "--app", APP, "--id", task_id, "--data", '{"n": 1}')
    rows = {line.split()[0]: line for line in wfe("tasks").stdout.splitlines()[1:]}
    # Each CJK character takes two columns: both ids are padded to seven.
    assert rows["日本語"].startswith("日本語   review")
    assert rows["abcdefg"].startswith("abcdefg  review")


def test_status_counts_tasks_by_workflow_and_status(wfe, tmp_path: Path) -> None:
    datas = [{"n": n} for n in (1, 2, 3)]
    waiting = submit_with_app(APP, "review", datas, env=wfe.env, cwd=tmp_path)
    wfe("worker", APP, "--until-idle", "--quiet")  # all three wait for a person
    wfe("resume", waiting[0], "--output", '{"ok": true}')
    wfe("cancel", waiting[1])
    wfe("submit", "review", "--data", '{"n": 4}')
    spec = {"name": "later", "phases": [{"target_classification": "a"}]}
    wfe("submit", "-", "--phase", "define_workflow", "--data", json.dumps(spec))

    table, as_json = wfe_at_once(wfe, ("status",), ("status", "--json"))
    assert (table.returncode, as_json.returncode) == (0, 0), (table.stderr, as_json.stderr)
    lines = table.stdout.splitlines()
    assert lines[0].split() == [
        "WORKFLOW", "PENDING", "IN_PROGRESS", "WAITING", "COMPLETED", "FAILED", "CANCELLED"
    ]  # fmt: skip
    assert [line.split() for line in lines[1:4]] == [
        ["review", "1", "0", "1", "1", "0", "1"],
        ["(other)", "1", "0", "0", "0", "0", "0"],  # the define_workflow task
        ["(all)", "2", "0", "1", "1", "0", "1"],
    ]
    # The unfinished ones: one waits at approve, the one submitted last is not claimed.
    assert lines[4:6] == ["unfinished tasks by phase:", "  review: not classified yet 1, approve 1"]
    assert lines[6] == "busy workers: none (no task held)"
    doc = json.loads(as_json.stdout)
    assert doc["workflows"]["review"]["waiting_human"] == 1
    assert doc["total"]["pending"] == 2 and doc["busy_workers"] == []


def test_worker_exits_with_the_message_of_a_plugin_refusing_to_start(wfe) -> None:
    result = wfe("worker", "refusing_app:engine", "--until-idle", check=False)
    assert result.returncode == 1
    assert "Error: plugin 'Misconfigured': WFE_EXAMPLE_URL is not a URL" in result.stderr
    assert "Traceback" not in result.stderr


def test_arguments_in_another_encoding_get_one_line_errors(wfe) -> None:
    wfe("submit", "review", "--app", APP)
    latin1 = "caf\udce9"  # what Python makes of the bytes b"caf\xe9" in argv
    cases = [
        (["show", latin1], "Error: unknown task 'caf\\udce9'"),
        (["cancel", latin1], "Error: unknown task"),
        (["resume", latin1, "--text", "hi"], "Error: unknown task"),
        (["tasks", "--workflow", latin1], "is not UTF-8 text"),
        (["submit", "review", "--id", latin1], "is not Unicode text"),
    ]
    results = wfe_at_once(wfe, *[args for args, _ in cases])
    for (args, message), result in zip(cases, results, strict=True):
        assert result.returncode in (1, 2) and message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr


def test_resume_with_app_runs_the_apps_completed_callbacks(wfe, tmp_path: Path) -> None:
    log = tmp_path / "completed.log"
    env = dict(wfe.env, CLI_APP_LOG=str(log))
    app = "callback_app:engine"
    first, second = [wfe("submit", "sign", "--app", app, env=env).stdout.strip() for _ in range(2)]
    wfe("worker", app, "--until-idle", "--quiet", env=env)

    wfe("resume", first, "--text", "signed", env=env)  # this process knows no callbacks
    assert not log.exists()
    wfe("resume", second, "--text", "signed", "--app", app, env=env)
    assert log.read_text() == f"{second} signed\n"
    assert "--app MODULE:ATTR" in wfe("cancel", "--help").stdout


def test_a_read_only_store_gets_a_one_line_error(wfe, tmp_path: Path) -> None:
    wfe("submit", "review", "--app", APP)
    (tmp_path / "wfe.db").chmod(0o444)
    as_user: list[str] = []
    if os.geteuid() == 0:  # root writes anything unless it gives up that power
        if shutil.which("setpriv") is None:
            pytest.skip("as root, making a file read-only needs setpriv")
        as_user = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner", "--"]
    result = subprocess.run(
        [*as_user, sys.executable, "-m", "wfcore.cli", "submit", "review", "--app", APP],
        cwd=tmp_path,
        env=wfe.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("Error: cannot write to ")
    assert "readonly database" in result.stderr and "Traceback" not in result.stderr


def test_worker_processes_refuse_the_memory_store(wfe) -> None:
    result = wfe("worker", APP, "--store", "memory://", "--processes", "2", check=False)
    assert result.returncode == 2
    assert "--processes needs a store the processes share" in result.stderr


def test_a_plugin_failing_to_add_its_commands_leaves_the_others_working(monkeypatch, capsys):
    """``wfe plugins``, the command to look into it with, must still run."""
    import wfcore.cli
    from wfcore import hookimpl
    from wfcore.plugins import make_plugin_manager

    class Broken:
        @hookimpl
        def wfe_register_commands(self, cli) -> None:
            raise RuntimeError("no such module: extras")

    monkeypatch.setattr(
        wfcore.cli, "_plugin_manager", lambda: make_plugin_manager(False, [Broken()])
    )
    monkeypatch.setattr(sys, "argv", ["wfe", "plugins", "--all"])
    with pytest.raises(SystemExit) as exited:
        wfcore.cli.main()
    out, err = capsys.readouterr()
    assert exited.value.code == 0
    assert err == (
        "Warning: plugin 'Broken' failed in wfe_register_commands: "
        "RuntimeError: no such module: extras\n"
    )
    assert "Broken" in out


def test_wait_prints_the_output_or_the_question_and_exits_by_status(wfe, tmp_path) -> None:
    worker = subprocess.Popen(
        [sys.executable, "-m", "wfcore.cli", "worker", APP, "--quiet"],
        cwd=tmp_path,
        env=wfe.env,
    )
    try:
        task_id = wfe("submit", "review", "--app", APP, "--data", '{"n": 3}').stdout.strip()
        asked = wfe("wait", task_id, "--waiting", "--timeout", "60s")
        assert asked.stdout == "waiting_human in phase 'approve': Approve the doubled number?\n"
        still = wfe("wait", task_id, "--timeout", "0s", check=False)
        assert still.returncode == 4
        assert f"task {task_id!r} is still waiting_human after 0s" in still.stderr
        # Else a wait on a task waiting for a person would look like a hang.
        assert still.stderr.startswith(
            f"note: task {task_id!r} is waiting_human in phase 'approve'; this waits until it "
            "is answered (wfe resume) and finishes (--waiting returns now)\n"
        )
        wfe("resume", task_id, "--output", '{"ok": true}')
        done = wfe("wait", task_id, "--timeout", "60s")
        assert json.loads(done.stdout) == {"ok": True}
        assert json.loads(wfe("wait", task_id, "--json").stdout)["outputs"]["double"] == {"n": 6}

        other = wfe("submit", "review", "--app", APP, "--data", '{"n": 1}').stdout.strip()
        wfe("cancel", other)
        cancelled = wfe("wait", other, check=False)
        assert cancelled.returncode == 3 and cancelled.stdout == ""
        assert cancelled.stderr.startswith(f"task {other!r} cancelled")
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    unknown = wfe("wait", "nope", check=False)
    assert unknown.returncode == 1 and unknown.stderr == "Error: unknown task 'nope'\n"
    bad = wfe("wait", task_id, "--timeout", "5", check=False)
    assert bad.returncode == 2 and "'5' is not a duration" in bad.stderr
    forever = wfe("wait", task_id, "--timeout", "100000w", check=False)
    assert forever.returncode == 2 and "'100000w' is more than 100 years" in forever.stderr


def test_submit_without_a_workflow_says_how_to_define_one(wfe, tmp_path: Path) -> None:
    spec = json.dumps({"name": "later", "phases": [{"target_classification": "a"}]})
    hint = "wfe submit - --classification define_workflow --data SPEC"
    forgot = wfe("submit", "-", "--data", spec, check=False)
    assert forgot.returncode == 2
    assert (
        f"Error: WORKFLOW '-' (no workflow) needs --classification define_workflow: {hint}\n"
        in forgot.stderr
    )
    assert "None" not in forgot.stderr
    assert not (tmp_path / "wfe.db").exists()  # refused before any store was opened
    other = wfe("submit", "-", "--classification", "a", "--data", spec, check=False)
    assert other.returncode == 2
    assert "needs --classification define_workflow, not 'a'" in other.stderr

    named = wfe("submit", "define_workflow", "--data", spec, check=False)
    assert named.returncode == 2
    assert "\nError: unknown workflow 'define_workflow'" in named.stderr  # after the new store
    assert named.stderr.endswith(f"; to define a workflow: {hint}\n")
    assert "--app MODULE:ATTR" not in named.stderr  # an app would not help

    task_id = wfe("submit", "-", "--classification", "define_workflow", "--data", spec).stdout
    assert json.loads(wfe("show", task_id.strip(), "--json").stdout)["status"] == "pending"


def test_until_idle_says_which_delayed_tasks_it_waits_for(wfe, tmp_path: Path) -> None:
    at = "2099-12-01T09:00:00+01:00"
    wfe("submit", "review", "--app", APP, "--data", '{"n": 1}', "--at", at)
    wfe("submit", "review", "--app", APP, "--data", '{"n": 2}')  # due now
    when = "2099-12-01 08:00:00 UTC"

    def start(log: Path) -> subprocess.Popen[str]:
        with open(log, "w") as err:
            return subprocess.Popen(
                [sys.executable, "-m", "wfcore.cli", "worker", APP, "--until-idle"],
                cwd=tmp_path,
                env=wfe.env,
                stdout=subprocess.DEVNULL,
                stderr=err,
                text=True,
            )

    def stop(proc: subprocess.Popen[str]) -> None:
        proc.terminate()
        assert proc.wait(timeout=30) == 0

    first_log = tmp_path / "first.log"
    first = start(first_log)
    try:
        # The first line comes after two seconds, then one a change (every ten seconds at
        # most): one after the due task went on to wait for a person.
        line = _wait_for(
            lambda: next(
                (x for x in first_log.read_text().splitlines() if "waiting_human 1" in x), None
            ),
            what="a progress line",
        )
    finally:
        stop(first)
    assert f"| store: pending 1 (1 delayed, next at {when})  waiting_human 1" in line
    assert "note:" not in first_log.read_text()  # a task was due when it started

    # Only the delayed task is left: a worker starting now says it waits for it.
    second_log = tmp_path / "second.log"
    second = start(second_log)
    try:
        note = _wait_for(
            lambda: next((x for x in second_log.read_text().splitlines() if "note" in x), None),
            what="the note",
        )
    finally:
        stop(second)
    assert note == (
        "note: no task is due yet; --until-idle waits for 1 delayed task(s), "
        f"the next at {when} (Ctrl-C to stop)"
    )


def test_a_command_creating_a_store_says_so_once(wfe, tmp_path: Path) -> None:
    """A mistyped --store still makes a store (a first run needs one), but not silently."""
    # Each store below is its own: the commands of one round touch different stores,
    # so they run at once; the second round runs each command again on its store.
    typo = tmp_path / "typo" / "wfe.db"
    on_typo = ("worker", APP, "--store", f"sqlite://{typo}", "--until-idle", "--quiet")
    submitted = tmp_path / "submitted.db"
    on_submitted = ("submit", "review", "--app", APP, "--store", f"sqlite://{submitted}")
    on_submitted += ("--data", '{"n": 1}')
    # A submission that fails leaves no store behind, and says there was none.
    failed = tmp_path / "mistyped" / "deeper" / "failed.db"
    # Several processes: noted once, by the command that starts them.
    shared = tmp_path / "shared.db"
    on_shared = ("worker", APP, "--store", f"sqlite://{shared}", "-p", "2", "--until-idle")
    # Nothing is created for memory://, nor for the store the environment names
    # once the first command has made it.
    on_memory = ("worker", APP, "--store", "memory://", "--until-idle", "--quiet")
    first, first_submit, refused, processes, memory, made = wfe_at_once(
        wfe,
        on_typo,
        on_submitted,
        ("submit", "nope", "--store", f"sqlite://{failed}"),
        (*on_shared, "--quiet"),
        on_memory,
        ("submit", "review", "--app", APP, "--data", '{"n": 1}'),
    )
    for run in (first, first_submit, processes, memory, made):
        assert run.returncode == 0, (run.args, run.stderr)
    assert first.stderr == f"wfe: created a new store at {typo}\n"
    assert first_submit.stderr == f"wfe: created a new store at {submitted}\n"
    assert refused.returncode != 0
    assert refused.stderr.startswith(
        f"wfe: there is no store at {failed}; none was left there (check --store and "
        "WFE_STORE)\nError: unknown workflow 'nope'"
    )
    assert not (tmp_path / "mistyped").exists()
    assert processes.stderr == f"wfe: created a new store at {shared}\n"
    assert memory.stderr == ""
    assert "created a new store" in made.stderr

    again, again_submit, missing, default = wfe_at_once(
        wfe,
        on_typo,
        on_submitted,
        ("tasks", "--store", f"sqlite://{failed}"),
        ("worker", APP, "--until-idle", "--quiet"),
    )
    for run in (again, again_submit, default):
        assert run.returncode == 0, (run.args, run.stderr)
    assert again.stderr == ""
    assert again_submit.stderr == ""
    assert missing.returncode == 1 and f"no store at {failed}" in missing.stderr
    assert default.stderr == ""


def test_show_prints_the_traceback_of_a_failed_task(wfe) -> None:
    app = "failing_app:engine"
    failed = wfe("submit", "checked", "--app", app, "--data", '{"n": -1}').stdout.strip()
    passed = wfe("submit", "checked", "--app", app, "--data", '{"n": 1}').stdout.strip()
    wfe("worker", app, "--until-idle", "--quiet")
    stored = json.loads(wfe("show", failed, "--json").stdout)["traceback"]
    lines = wfe("show", failed).stdout.splitlines()
    error = lines.index("error     ValueError: n must not be negative, got -1")
    assert lines[error + 1] == "traceback"
    block = lines[error + 2 : lines.index("history")]
    block = [line for line in block if line.startswith("  ")]  # up to data, outputs...
    assert block == ["  " + line for line in stored.rstrip("\n").splitlines()]
    assert any("in _check" in line for line in block)
    assert block[-1] == "  ValueError: n must not be negative, got -1"
    assert "traceback" not in wfe("show", passed).stdout


def test_show_prints_the_schema_a_waiting_tasks_answer_must_match(wfe) -> None:
    task_id = wfe("submit", "review", "--app", APP, "--data", '{"n": 2}').stdout.strip()
    assert "schema" not in wfe("show", task_id).stdout  # pending: no question yet
    wfe("worker", APP, "--until-idle", "--quiet")
    lines = wfe("show", task_id).stdout.splitlines()
    # Who answers: the phase's type, not the task's own default ("ai").
    assert "type      human (this phase's; the task's own: agentic)" in lines
    waiting = lines.index("waiting   Approve the doubled number?")
    assert lines[waiting + 1] == (
        'schema    {"type": "object", "required": ["ok"], '
        '"properties": {"ok": {"type": "boolean"}}}'
    )
    wfe("resume", task_id, "--output", '{"ok": true}')
    assert "schema" not in wfe("show", task_id).stdout


def test_tasks_status_takes_waiting_and_a_list(wfe, tmp_path: Path) -> None:
    datas = [{"n": n} for n in (1, 2, 3)]
    ids = submit_with_app(APP, "review", datas, env=wfe.env, cwd=tmp_path)
    wfe("worker", APP, "--until-idle", "--quiet")  # all three wait for a person
    wfe("cancel", ids[0])
    pending = wfe("submit", "review", "--data", '{"n": 4}').stdout.strip()

    statuses = ("waiting", "WAITING", "pending,cancelled", " waiting , pending,")
    statuses += ("waiting,waiting_human",)
    *lists, table_run, unknown, empty, helped = wfe_at_once(
        wfe,
        *[("tasks", "--status", status, "--json") for status in statuses],
        ("tasks", "--status", "waiting"),
        ("tasks", "--status", "pending,sleeping"),
        ("tasks", "--status", ","),
        ("tasks", "--help"),
    )
    for run in (*lists, table_run, helped):
        assert run.returncode == 0, (run.args, run.stderr)
    listed = {
        status: sorted(t["id"] for t in json.loads(run.stdout))
        for status, run in zip(statuses, lists, strict=True)
    }
    assert listed["waiting"] == listed["WAITING"] == sorted(ids[1:])
    assert listed["pending,cancelled"] == sorted([pending, ids[0]])
    assert listed[" waiting , pending,"] == sorted([*ids[1:], pending])
    assert listed["waiting,waiting_human"] == sorted(ids[1:])  # each task once
    table = table_run.stdout.splitlines()[1:]
    assert sorted(row.split()[3] for row in table) == ["waiting_human"] * 2

    assert unknown.returncode == 2
    assert "Invalid value for --status: unknown status 'sleeping' (one of: pending, " in (
        unknown.stderr
    )
    assert "cancelled; or waiting, for the three waiting_* ones" in unknown.stderr
    assert empty.returncode == 2 and "no status given" in empty.stderr
    assert "S[,S...]" in helped.stdout


def test_ui_without_the_dashboard_says_where_it_comes_from(wfe) -> None:
    try:
        importlib.metadata.distribution("wfe-flaskui")
        why = ", installed but not loaded: WFE_LOAD_PLUGINS is empty"
    except importlib.metadata.PackageNotFoundError:
        why = "; install it (from a checkout of wfcore: pip install -e plugins/wfe_flaskui)"
    commands = (("ui",), ("ui", "--port", "8000"), ("ui", "--help"))
    # The fixture sets WFE_LOAD_PLUGINS empty.
    *results, other = wfe_at_once(wfe, *commands, ("nope",))
    for result in results:
        assert result.returncode == 2
        assert result.stderr.endswith(
            f"Error: No such command 'ui': the dashboard is the separate wfe_flaskui package{why}\n"
        ), result.stderr
    assert other.returncode == 2
    # The fixture's empty WFE_LOAD_PLUGINS keeps out whatever plugins are installed.
    kept_out = "" if why.startswith(";") else " (plugins not loaded: WFE_LOAD_PLUGINS is empty"
    assert f"Error: No such command 'nope'{kept_out or '.'}" in other.stderr


def test_ui_says_how_to_install_the_dashboard(monkeypatch, capsys) -> None:
    """Where wfe_flaskui is not installed at all (this checkout's tests install it)."""
    import wfcore.cli
    from wfcore.plugins import make_plugin_manager

    monkeypatch.setattr(wfcore.cli._base, "installed_plugins", list)
    # As if no test in this process had run wfe with the dashboard loaded.
    without_ui = {k: v for k, v in wfcore.cli.cli.commands.items() if k != "ui"}
    monkeypatch.setattr(wfcore.cli.cli, "commands", without_ui)
    monkeypatch.setattr(wfcore.cli, "_plugin_manager", lambda: make_plugin_manager(False))
    monkeypatch.setattr(sys, "argv", ["wfe", "ui"])
    with pytest.raises(SystemExit) as exited:
        wfcore.cli.main()
    assert exited.value.code == 2
    assert capsys.readouterr().err.endswith(
        "Error: No such command 'ui': the dashboard is the separate wfe_flaskui package; "
        "install it (from a checkout of wfcore: pip install -e plugins/wfe_flaskui)\n"
    )


def test_worker_prints_what_its_plugins_report_after_its_own_line(wfe) -> None:
    lines = wfe("worker", "header_app:engine", "--until-idle").stderr.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("wfe worker "))
    # In the order the plugins were given; one that cannot report is named.
    assert lines[start + 1 : start + 4] == [
        "  topics: consuming in.tasks for 100 tasks at once",
        "  agents: model tiny-1",
        "  Broken: cannot report (RuntimeError: settings unreadable)",
    ]
    quiet = wfe("worker", "header_app:engine", "--until-idle", "--quiet").stderr
    assert "topics:" not in quiet

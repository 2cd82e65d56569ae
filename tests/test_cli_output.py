"""What wfe prints for people: no Python None or repr, paging, data from files."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from core_util import stored_task, submit_with_app, wfe_at_once
from test_cli import APP, _wait_for


def test_show_prints_no_python_values(wfe) -> None:
    task_id = wfe("submit", "quick", "--app", "deadline_app:engine").stdout.strip()
    assert "phase     -" in wfe("show", task_id).stdout.splitlines()  # not classified yet
    wfe("worker", "deadline_app:engine", "--until-idle", "--quiet")  # it waits for a person
    _wait_for(
        lambda: "(deadline passed)" in wfe("show", task_id).stdout, what="the deadline to pass"
    )
    wfe("worker", "deadline_app:engine", "--until-idle", "--quiet")
    shown = wfe("show", task_id).stdout
    assert 'deadline_passed  phase=ask on_timeout={"output": {"x": 0}}' in shown, shown
    assert "None" not in shown and "{'" not in shown

    spec = json.dumps({"name": "later", "phases": [{"target_classification": "a"}]})
    defining = wfe("submit", "-", "--classification", "define_workflow", "--data", spec).stdout
    lines = wfe("show", defining.strip()).stdout.splitlines()
    assert "workflow  -" in lines and "None" not in "\n".join(lines)

    pending = wfe("submit", "review", "--app", APP, "--data", '{"n": 1}').stdout.strip()
    wfe("cancel", pending)
    cancelled = wfe("wait", pending, check=False)
    assert cancelled.returncode == 3 and cancelled.stderr == f"task {pending!r} cancelled\n"


def test_tasks_says_when_more_match_than_it_shows(wfe, tmp_path: Path) -> None:
    ids = submit_with_app(APP, "review", [{"n": 1}] * 3, env=wfe.env, cwd=tmp_path)
    runs = wfe_at_once(
        wfe,
        ("tasks", "--limit", "2"),
        ("tasks", "--limit", "1", "--offset", "1"),
        ("tasks", "--offset", "2"),
        ("tasks",),
        ("tasks", "--limit", "1", "--offset", "2", "--json"),
        ("tasks", "-w", "review", "--status", "completed"),
        ("tasks", "--offset", "5"),
    )
    for run in runs:
        assert run.returncode == 0, (run.args, run.stderr)
    limited, middle_run, rest_run, whole, as_json, none, past_the_end = runs
    lines = limited.stdout.splitlines()
    assert len(lines) == 4 and lines[-1] == "(2 of 3 shown; --limit N or --offset N for more)"
    assert [row.split()[0] for row in lines[1:3]] == ids[:0:-1]  # newest first
    middle = middle_run.stdout.splitlines()
    assert middle[1].split()[0] == ids[1]
    assert middle[-1] == "(2 to 2 of 3 shown; --limit N or --offset N for more)"
    rest = rest_run.stdout.splitlines()
    assert len(rest) == 2 and rest[1].split()[0] == ids[0]  # the last: no note
    assert len(whole.stdout.splitlines()) == 4
    assert json.loads(as_json.stdout)[0]["id"] == ids[0]
    assert none.stdout == "no tasks\n"
    assert past_the_end.stdout == "no tasks (--offset 5 of 3)\n"


def test_submit_reads_data_from_stdin_or_a_file(wfe, tmp_path: Path) -> None:
    from_stdin = wfe("submit", "review", "--app", APP, "--data", "-", input='{"n": 7}').stdout
    (tmp_path / "data.json").write_text('{"n": 8}')
    from_file = wfe("submit", "review", "--app", APP, "--data", "@data.json").stdout
    for task_id, n in ((from_stdin, 7), (from_file, 8)):
        assert stored_task(wfe.env["WFE_STORE"], task_id.strip()).data == {"n": n}
    # wfe resume's --output takes an answer so too.
    wfe("worker", APP, "--until-idle", "--quiet")
    (tmp_path / "answer.json").write_text('{"ok": false}')
    answered = [
        wfe("resume", from_stdin.strip(), "--output", "-", "--json", input='{"ok": true}'),
        wfe("resume", from_file.strip(), "--output", "@answer.json", "--json"),
    ]
    for result, ok in zip(answered, (True, False), strict=True):
        done = json.loads(result.stdout)
        assert (done["status"], done["outputs"]["approve"]) == ("completed", {"ok": ok})
    missing, *helps = wfe_at_once(
        wfe,
        ("submit", "review", "--data", "@nope.json"),
        *[(command, "--help") for command in ("submit", "tasks", "purge", "worker")],
    )
    assert missing.returncode == 2
    assert "Invalid value for --data: cannot read 'nope.json': No such file or directory" in (
        missing.stderr
    )
    assert [run.returncode for run in helps] == [0] * 4
    submit_help, tasks_help, purge_help, worker_help = (run.stdout for run in helps)
    assert "--app MODULE:ATTR" in submit_help and "@FILE" in submit_help
    assert "-w, --workflow NAME" in tasks_help
    assert "-w, --workflow NAME" in purge_help
    assert "100 unless it sets one" in worker_help


def test_show_of_a_task_running_its_first_phase(wfe, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    task_id = wfe("submit", "review", "--app", APP, "--data", '{"n": 1, "wait": true}').stdout
    task_id = task_id.strip()
    first = "type      functional (the first phase's; the task's own: agentic)"
    pending = wfe("show", task_id).stdout.splitlines()
    assert "phase     -" in pending and first in pending
    proc = subprocess.Popen(
        [sys.executable, "-m", "wfcore.cli", "worker", APP, "--quiet"],
        cwd=tmp_path,
        env=dict(wfe.env, CLI_APP_GATE=str(gate)),
    )
    try:
        _wait_for(lambda: Path(f"{gate}.running").exists(), what="the first phase to run")
        running = wfe("show", task_id).stdout.splitlines()
        # Named once the phase has run a second (this phase waits for its gate).
        assert "phase     - (the first; named once it has run a second)" in running
        assert first in running
        assert "status    in_progress" in running
        # Which worker holds it, and until when: what an operator asks of a stuck task.
        [holder] = [line for line in running if line.startswith("worker    ")]
        assert re.fullmatch(
            rf"worker    \S+/{proc.pid}/\w+ \(lease until \d{{4}}-\d\d-\d\d "
            r"\d\d:\d\d:\d\d UTC, renewed while it runs\)",
            holder,
        ), holder
    finally:
        proc.kill()
        proc.wait()
    # Killed: the lease is a dead process's, which the next claim takes over.
    dead = [line for line in wfe("show", task_id).stdout.splitlines() if "worker " in line]
    assert dead == [holder.split(" (")[0] + " (dead: the next claim takes the task over)"], dead


def test_a_store_overriding_the_apps_own_is_named(wfe, tmp_path: Path) -> None:
    own = f"sqlite://{tmp_path / 'own.db'}"
    (tmp_path / "own_store_app.py").write_text(
        "from wfcore import ECSWorkflowEngine, Phase\n"
        f"engine = ECSWorkflowEngine(store={own!r}, load_plugins=False)\n"
        "engine.register_workflow('w', [Phase('a', assigned_to='human')])\n"
    )
    overridden = wfe("submit", "w", "--app", "own_store_app:engine")  # WFE_STORE is set
    assert (
        f"wfe: using the store {wfe.env['WFE_STORE']} (from --store or WFE_STORE), "
        f"not the app's own {own}"
    ) in overridden.stderr.splitlines()
    env = {k: v for k, v in wfe.env.items() if k != "WFE_STORE"}
    kept = wfe("submit", "w", "--app", "own_store_app:engine", env=env)
    assert "not the app's own" not in kept.stderr
    assert (tmp_path / "own.db").exists()
    masked = wfe(
        "submit",
        "w",
        "--app",
        "own_store_app:engine",
        "--store",
        "postgresql://bob:hunter2@db/wf",
        check=False,
    )
    note = masked.stderr.splitlines()[0]
    assert "postgresql://***@db/wf" in note and "hunter2" not in note


def test_client_libraries_info_lines_show_only_at_debug(wfe, tmp_path: Path) -> None:
    (tmp_path / "chatty_app.py").write_text(
        "import logging\n"
        "from wfcore import ECSWorkflowEngine, Phase\n"
        "engine = ECSWorkflowEngine(load_plugins=False)\n"
        "async def call(task):\n"
        "    for name in ('httpx', 'httpcore'):\n"
        "        logging.getLogger(name).info('HTTP Request: POST http://bob:pw@h/v1 200')\n"
        "    logging.getLogger('kafka.net.connection').info('Connection to broker')\n"
        "    logging.getLogger('kafka.cluster').error('Topic t not found')\n"
        "    logging.getLogger('chatty_app').info('own line')\n"
        "engine.register_handler('a', call)\n"
        "engine.register_workflow('w', [Phase('a', assigned_to='functional')])\n"
    )
    for _ in range(2):
        wfe("submit", "w", "--app", "chatty_app:engine")
    quiet = wfe("worker", "chatty_app:engine", "--until-idle").stderr
    assert "own line" in quiet and "Topic t not found" in quiet  # errors still show
    assert "HTTP Request" not in quiet and "Connection to broker" not in quiet
    wfe("submit", "w", "--app", "chatty_app:engine")
    debug = wfe("--log-level", "debug", "worker", "chatty_app:engine", "--until-idle").stderr
    assert debug.count("HTTP Request: POST") == 2  # the one task: httpx's and httpcore's
    assert "Connection to broker" in debug


def test_tasks_of_an_unknown_workflow_and_a_start_in_the_past(wfe) -> None:
    wfe("submit", "review", "--app", APP, "--data", '{"n": 1}')
    typo = wfe("tasks", "-w", "reveiw", check=False)
    assert typo.returncode == 2
    assert typo.stderr.splitlines()[-1].startswith("Error: unknown workflow 'reveiw' (known: ")
    assert "review" in typo.stderr
    assert wfe("tasks", "-w", "review", "--status", "failed").stdout == "no tasks\n"
    past = wfe(
        "submit", "review", "--app", APP, "--data", '{"n": 2}', "--at", "2020-01-01T00:00:00Z"
    )
    assert "wfe: --at 2020-01-01T00:00:00Z is in the past: the task starts now" in past.stderr
    assert "runs after" not in wfe("tasks").stdout


def test_resume_cancel_and_retry_say_who_did_it(wfe, tmp_path: Path) -> None:
    import getpass

    datas = [{"n": 1}, {"n": 2}]
    first, second = submit_with_app(APP, "review", datas, env=wfe.env, cwd=tmp_path)
    wfe("worker", APP, "--until-idle", "--quiet")
    wfe("resume", first, "--output", '{"ok": true}', "--by", "alice")
    assert "by=alice" in wfe("show", first).stdout
    bad = wfe("cancel", second, "--by", " ", check=False)
    assert bad.returncode == 2 and "--by" in bad.stderr and "by must be a name" in bad.stderr
    wfe("cancel", second, env=dict(wfe.env, WFE_USER="bob"))
    wfe("retry", second, env={k: v for k, v in wfe.env.items() if k != "WFE_USER"})
    history = wfe("show", second).stdout
    assert "by=bob" in history and f"by={getpass.getuser()}" in history


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux's /dev/full")
def test_output_that_cannot_be_written_is_one_line_and_the_work_is_kept(wfe, tmp_path) -> None:
    def writing_to(stdout: Any, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "wfcore.cli", *args],
            cwd=tmp_path,
            env=wfe.env,
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )

    def to_full_disk(*args: str) -> subprocess.CompletedProcess[str]:
        with open("/dev/full", "w") as full:
            return writing_to(full, *args)

    # The task is submitted, and the error says so, rather than a traceback that
    # would leave a script to submit it again.
    submitted = to_full_disk("submit", "review", "--app", APP)
    assert submitted.returncode == 1
    assert submitted.stderr.splitlines()[-1] == (
        "Error: cannot write to stdout: No space left on device (wfe submit did its work; "
        "only its output is lost)"
    )
    assert "Traceback" not in submitted.stderr
    assert len(json.loads(wfe("tasks", "--json").stdout)) == 1
    # A reader gone (| head): a command that changed something says so too; one
    # that only reads ends quietly, as a pipe's writer does.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        gone = [
            writing_to(write_end, *args)
            for args in (("submit", "review", "--app", APP), ("tasks",))
        ]
    finally:
        os.close(write_end)
    assert (gone[0].returncode, gone[0].stderr) == (
        1,
        "Error: cannot write to stdout: Broken pipe (wfe submit did its work; only its "
        "output is lost)\n",
    )
    assert gone[1].stderr == ""
    assert len(json.loads(wfe("tasks", "--json").stdout)) == 2
    helped = to_full_disk("--help")  # printed as wfe's own options are read
    assert (helped.returncode, helped.stderr) == (
        1,
        "Error: cannot write to stdout: No space left on device\n",
    )

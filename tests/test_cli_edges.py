"""wfe at the edges of its input: values the file system or the engine cannot
take, and text from tasks that a terminal would act on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from core_util import wfe_at_once
from test_cli import APP, _wait_for


def test_artifact_names_too_long_to_look_up_get_one_line(wfe, tmp_path: Path) -> None:
    (tmp_path / "scan.txt").write_text("scanned")
    long = "x" * 300  # longer than a file name may be (255 bytes on Linux)
    too_long = "File name too long"
    cases = [
        # Too long to be a file, so NAME=FILE: the engine refuses the name.
        (f"{long}=scan.txt", "each part between slashes may be at most 240 bytes"),
        (f"scan.txt={tmp_path / long}", f"--artifact: cannot read '{tmp_path / long}': {too_long}"),
        (str(tmp_path / long), f"--artifact: cannot read '{tmp_path / long}': {too_long}"),
    ]
    results = wfe_at_once(
        wfe, *[("submit", "review", "--app", APP, "--artifact", value) for value, _ in cases]
    )
    for (value, said), result in zip(cases, results, strict=True):
        assert result.returncode == 2, (value, result.stderr)
        assert said in result.stderr and "Traceback" not in result.stderr, (value, result.stderr)
    assert not (tmp_path / "wfe.db").exists()  # nothing was submitted


def test_worker_refuses_a_shutdown_timeout_that_is_not_a_number(wfe, tmp_path: Path) -> None:
    values = ("nan", "NaN")
    commands = [("worker", APP, "--shutdown-timeout", value, "--until-idle") for value in values]
    for result in wfe_at_once(wfe, *commands):
        assert result.returncode == 2, result.stderr
        assert result.stderr.endswith(
            "Error: Invalid value for --shutdown-timeout: nan is not a number of seconds "
            "(0 to 86400)\n"
        )
    assert not (tmp_path / "wfe.db").exists()  # refused before the worker made its store


def test_purge_names_an_unknown_workflow_as_tasks_does(wfe) -> None:
    task_id = wfe("submit", "review", "--app", APP, "--data", '{"n": 1}').stdout.strip()
    wfe("cancel", task_id)
    purge = ("purge", "--older-than", "0", "--workflow")
    typos = (
        ("tasks", "--workflow", "reveiw"),
        (*purge, "reveiw", "--dry-run"),
        (*purge, "reveiw"),
    )
    for args, result in zip(typos, wfe_at_once(wfe, *typos), strict=True):
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert result.stderr == "Error: unknown workflow 'reveiw' (known: review)\n", args
    assert wfe(*purge, "review", "--dry-run").stdout.startswith("would delete 1 ")
    # The typos purged nothing.
    assert wfe("show", task_id).stdout.startswith(f"task      {task_id}\n")
    assert wfe(*purge, "review").stdout.startswith("deleted 1 ")
    assert wfe(*purge, "review").stdout.startswith("deleted 0 ")  # known, nothing left


_RAISING_APP = """\
from wfcore import ECSWorkflowEngine, Phase

engine = ECSWorkflowEngine()


async def fetch(task):
    # As a remote service's reply might: a terminal title, a carriage return, a
    # delete, a C1 control sequence introducer and a right-to-left override.
    raise RuntimeError("bad reply \\x1b]0;owned\\x07 here\\rOVERWRITTEN\\x7f\\x9b2J\\u202efdp.exe")


engine.register_handler("fetch", fetch)
engine.register_workflow("remote", [Phase("fetch", assigned_to="functional")])
"""


def test_text_from_a_task_cannot_drive_the_terminal(wfe, tmp_path: Path) -> None:
    """An error or question is shown with its control characters escaped: a
    terminal would act on them (set its title, go back over the line)."""
    (tmp_path / "remote_app.py").write_text(_RAISING_APP)
    task_id = wfe("submit", "remote", "--app", "remote_app:engine").stdout.strip()
    worker = wfe("worker", "remote_app:engine", "--until-idle", "--quiet")
    escaped = r"bad reply \x1b]0;owned\x07 here\rOVERWRITTEN\x7f\x9b2J\u202efdp.exe"
    shown = {
        "tasks": wfe("tasks").stdout,
        "show": wfe("show", task_id).stdout,
        "wait": wfe("wait", task_id, check=False).stderr,
        "worker": worker.stderr,  # its log line of the failed attempt
    }
    for command, text in shown.items():
        controls = [
            c for c in text if c not in "\n" and (c < " " or "\x7f" <= c <= "\x9f" or c == "\u202e")
        ]
        assert controls == [], (command, text)
    assert f"RuntimeError: {escaped}"[:40] in shown["tasks"]  # cut to the NOTE column
    assert f"error     RuntimeError: {escaped}\n" in shown["show"]
    assert f"  RuntimeError: {escaped}\n" in shown["show"]  # the traceback's last line
    assert f"failed           phase=fetch error=RuntimeError: {escaped}\n" in shown["show"]
    assert f"failed in phase 'fetch': RuntimeError: {escaped}\n" in shown["worker"]
    assert shown["wait"] == f"task {task_id!r} failed in phase 'fetch': RuntimeError: {escaped}\n"
    # --json keeps the text as it is, for programs.
    error = json.loads(wfe("show", task_id, "--json").stdout)["error"]
    assert error == (
        "RuntimeError: bad reply \x1b]0;owned\x07 here\rOVERWRITTEN\x7f\x9b2J\u202efdp.exe"
    )


def _wfe_bytes(
    wfe, *args: str, stdin: bytes = b"", **env: str
) -> subprocess.CompletedProcess[bytes]:
    """``wfe args`` with bytes in and out, and ``env`` added to the test's."""
    return subprocess.run(
        [sys.executable, "-m", "wfcore.cli", *args],
        input=stdin,
        capture_output=True,
        env=dict(wfe.env, **env),
        cwd=Path(wfe.env["WFE_STORE"].removeprefix("sqlite://")).parent,
        timeout=60,
    )


def test_a_terminal_that_is_not_utf8_gets_the_text_escaped(wfe) -> None:
    """Where stdin and stdout are latin-1 (a locale of that encoding): data on stdin
    is read as UTF-8, as JSON is; what latin-1 cannot show is written as escapes."""
    latin1 = {"PYTHONIOENCODING": "latin-1"}
    data = {"text": "日本 ü 😀"}
    submitted = _wfe_bytes(
        wfe,
        "submit",
        "review",
        "--app",
        APP,
        "--data",
        "-",
        stdin=json.dumps(data, ensure_ascii=False).encode(),
        **latin1,
    )
    assert submitted.returncode == 0, submitted.stderr
    task_id = submitted.stdout.decode().strip()
    assert json.loads(wfe("show", task_id, "--json").stdout)["data"] == data  # no mojibake

    shown = _wfe_bytes(wfe, "show", task_id, **latin1)
    assert shown.returncode == 0, shown.stderr
    assert (
        '\ndata      {"text": "\\u65e5\\u672c \xfc \\U0001f600"}\n'.encode("latin-1")
        in shown.stdout
    )
    for args in (("show", task_id, "--json"), ("tasks", "--json")):
        printed = _wfe_bytes(wfe, *args, **latin1)
        assert printed.returncode == 0, (args, printed.stderr)
        assert printed.stdout.isascii(), args  # \\u escapes: JSON in any ASCII encoding
        found = json.loads(printed.stdout)
        assert (found if args[0] == "show" else found[0])["data"] == data, args

    bom = _wfe_bytes(
        wfe, "submit", "review", "--app", APP, "--data", "-", stdin=b'\xef\xbb\xbf{"n": 1}'
    )
    assert bom.returncode == 0, bom.stderr  # as Windows editors save UTF-8
    latin1_bytes = _wfe_bytes(wfe, "submit", "review", "--data", "-", stdin=b'{"n": "\xfc"}')
    assert latin1_bytes.returncode == 2
    assert latin1_bytes.stderr.decode().endswith(
        "Error: Invalid value for --data: stdin is not UTF-8 text ('utf-8' codec can't decode "
        "byte 0xfc in position 7: invalid start byte)\n"
    )


_WAITING_APP = """\
import asyncio
from pathlib import Path

from wfcore import ECSWorkflowEngine, Phase

engine = ECSWorkflowEngine(poll_interval=0.05)


async def hold(task):
    Path("running").write_text(task.id)
    await asyncio.sleep(3600)  # until the worker stops


engine.register_handler("hold", hold)
engine.register_workflow("held", [Phase("hold", assigned_to="functional")])
"""


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGTERM, 0), (signal.SIGINT, 130)])
def test_a_worker_whose_stderr_is_gone_still_stops_when_told(
    wfe, tmp_path: Path, sig: signal.Signals, status: int
) -> None:
    """``wfe worker ... 2>&1 | head``, or a terminal closed under it: its next line
    to stderr fails (EPIPE), and neither that nor Python's flush at exit may keep
    it from stopping and exiting as usual."""
    (tmp_path / "held_app.py").write_text(_WAITING_APP)
    task_id = wfe("submit", "held", "--app", "held_app:engine").stdout.strip()
    env = dict(wfe.env)
    env.pop("PYTHONUNBUFFERED", None)  # as a service or shell runs it: stderr buffered
    read_end, write_end = os.pipe()
    command = ["worker", "held_app:engine", "--shutdown-timeout", "0.1"]
    worker = subprocess.Popen(
        [sys.executable, "-m", "wfcore.cli", *command],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=write_end,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    os.close(write_end)
    try:
        assert os.read(read_end, 4096).startswith(b"wfe worker ")
        _wait_for(lambda: (tmp_path / "running").exists(), what="the phase to start")
        os.close(read_end)  # whoever read its stderr is gone
        worker.send_signal(sig)  # the worker says "stopping: ..." to a closed pipe
        assert worker.wait(timeout=30) == status
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert json.loads(wfe("show", task_id, "--json").stdout)["status"] == "pending"


def test_an_empty_store_option_is_refused(wfe, tmp_path: Path) -> None:
    """``--store "$STORE"`` with the variable unset names no store: the default one
    in the current folder must not quietly serve (or be made) instead."""
    said = (
        "Error: --store is empty (an unset variable?): give a store URL, or leave --store "
        "out for WFE_STORE or the default\n"
    )
    commands = (
        ("--store", "", "submit", "review", "--app", APP),
        ("submit", "review", "--app", APP, "--store", ""),
        ("--store", "", "tasks"),
        ("--store", " ", "tasks"),
        ("worker", APP, "--store", "", "--until-idle"),
    )
    for args, result in zip(commands, wfe_at_once(wfe, *commands), strict=True):
        assert (result.returncode, result.stderr) == (2, said), args
    assert not (tmp_path / ".wfe").exists() and not (tmp_path / "wfe.db").exists()
    blank = wfe("tasks", env=dict(wfe.env, WFE_STORE="  "), check=False)
    assert (blank.returncode, blank.stderr) == (
        2,
        "Error: WFE_STORE is blank: give a store URL, or unset it\n",
    )


def test_blanks_around_a_store_url_are_not_part_of_it(wfe, tmp_path: Path) -> None:
    """WFE_STORE with a blank after it (an env file, a paste) is the store it names:
    not another file, made new by a worker or submit, that no other command sees."""
    padded = dict(wfe.env, WFE_STORE=f" {wfe.env['WFE_STORE']} \t")
    task_id = wfe("submit", "review", "--app", APP, env=padded).stdout.strip()
    assert [t["id"] for t in json.loads(wfe("tasks", "--json").stdout)] == [task_id]
    assert not [path.name for path in tmp_path.iterdir() if path.name != path.name.strip()]


def test_help_names_each_value_as_the_readme_does(wfe) -> None:
    """Option values are named for what they are (URL, N, JSON), not TEXT or
    INTEGER RANGE."""
    expected = {
        (): ["--store URL "],
        ("worker",): ["--store URL ", "-p, --processes N "],
        ("submit",): ["--phase, --classification NAME ", "--assigned-to TYPE ", "--id ID "],
        ("resume",): ["--output JSON ", "--phase NAME "],
        ("plugins",): ["--hook NAME "],
    }
    runs = wfe_at_once(wfe, *[(*command, "--help") for command in expected])
    for (command, options), run in zip(expected.items(), runs, strict=True):
        assert run.returncode == 0, (command, run.stderr)
        helped = run.stdout
        for option in options:
            assert f"  {option}" in helped, (command, option, helped)
        assert " TEXT " not in helped.replace("--text TEXT ", ""), (command, helped)
        assert "INTEGER RANGE" not in helped, (command, helped)


def test_an_app_named_by_its_file_gets_the_module_name_to_use(wfe, tmp_path: Path) -> None:
    (tmp_path / "apps").mkdir()
    (tmp_path / "apps" / "billing.py").write_text("engine = None\n")
    hint = "(MODULE is a module's dotted name, not a file: apps.billing:engine)\n"
    specs = ("apps/billing.py:engine", "./apps/billing.py:engine", "apps.billing.py:engine")
    *results, tasks, unknown = wfe_at_once(
        wfe,
        *[("worker", spec) for spec in specs],
        ("tasks", "--app", "apps/billing.py:engine"),
        ("worker", "nosuch:engine"),  # a module name: no hint
    )
    for spec, result in zip(specs, results, strict=True):
        assert result.returncode == 2, spec
        assert result.stderr.startswith("Usage: wfe worker") and result.stderr.endswith(hint), (
            spec,
            result.stderr,
        )
    assert tasks.returncode == 2 and tasks.stderr.endswith(hint), tasks.stderr
    assert unknown.stderr.endswith("cannot import 'nosuch': No module named 'nosuch'\n")


def _start_held_worker(wfe, tmp_path: Path, ignore_hangup: bool = False) -> subprocess.Popen:
    """A worker of the held app, once its phase runs; SIGHUP ignored as nohup has it."""

    def signals() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_IGN if ignore_hangup else signal.SIG_DFL)

    (tmp_path / "held_app.py").write_text(_WAITING_APP)
    wfe("submit", "held", "--app", "held_app:engine")
    command = ["worker", "held_app:engine", "--quiet", "--shutdown-timeout", "0.1"]
    worker = subprocess.Popen(
        [sys.executable, "-m", "wfcore.cli", *command],
        cwd=tmp_path,
        env=wfe.env,
        preexec_fn=signals,
    )
    _wait_for(lambda: (tmp_path / "running").exists(), what="the phase to start")
    return worker


def test_a_worker_whose_terminal_closes_hands_its_work_back(wfe, tmp_path: Path) -> None:
    """SIGHUP (the terminal closed) stops a worker as SIGTERM does, so its running
    phases go back to the store; it exits 129, as a shell says a hangup ended it."""
    worker = _start_held_worker(wfe, tmp_path)
    try:
        worker.send_signal(signal.SIGHUP)
        assert worker.wait(timeout=30) == 129
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    [task] = json.loads(wfe("tasks", "--json").stdout)
    assert task["status"] == "pending" and task["history"][-1]["event"] == "released"


def test_a_worker_started_with_nohup_goes_on_after_a_hangup(wfe, tmp_path: Path) -> None:
    worker = _start_held_worker(wfe, tmp_path, ignore_hangup=True)
    try:
        worker.send_signal(signal.SIGHUP)  # ignored: were it not, it would be the first
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0  # stopped by SIGTERM, not SIGHUP (129)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


_SLOW_IMPORT_APP = """\
import os
import sys
import time
from pathlib import Path

from wfcore import ECSWorkflowEngine

engine = ECSWorkflowEngine()
if "--supervisor-pid" in sys.argv:  # one of wfe worker --processes' workers
    # Still importing, its signal handlers not set yet, when the test signals.
    Path(f"importing.{os.getpid()}").write_text("")
    deadline = time.monotonic() + 60
    while not Path("gate").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
"""


def test_processes_stopped_while_their_app_imports_exit_cleanly(wfe, tmp_path: Path) -> None:
    """SIGTERM passed on to the processes of --processes before they handle it
    ends them by the signal: that is the stop asked for, not a failure to name,
    and the supervisor exits 0 as a lone worker stopped by SIGTERM does."""
    (tmp_path / "slow_app.py").write_text(_SLOW_IMPORT_APP)
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "wfcore.cli", "worker", "slow_app:engine", "-p", "2"],
        cwd=tmp_path,
        env=wfe.env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(lambda: len(list(tmp_path.glob("importing.*"))) == 2, what="both to be importing")
        supervisor.send_signal(signal.SIGTERM)
        _, stderr = supervisor.communicate(timeout=30)
    finally:
        (tmp_path / "gate").write_text("")
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()
    assert supervisor.returncode == 0, stderr
    assert "worker process" not in stderr, stderr


def test_wait_on_a_delayed_task_says_until_when(wfe) -> None:
    task_id = wfe("submit", "review", "--app", APP, "--at", "2099-01-01T08:00:00Z").stdout.strip()
    result = wfe("wait", task_id, "--timeout", "0s", check=False)
    assert result.returncode == 4
    assert result.stderr.startswith(
        f"note: task {task_id!r} runs after 2099-01-01 08:00:00 UTC; this waits until then\n"
    )


def test_wait_on_a_task_no_worker_takes_asks_whether_one_runs(wfe) -> None:
    """wfe wait only watches: with no worker on the store it would say nothing until
    --timeout. After a few seconds it asks (once) whether a worker runs."""
    task_id = wfe("submit", "review", "--app", APP).stdout.strip()
    result = wfe("wait", task_id, "--timeout", "6s", check=False)
    assert result.returncode == 4
    assert result.stderr.splitlines() == [
        f"note: task {task_id!r} is still pending after 5 s: no worker has taken it yet "
        "(wfe wait only watches; is a worker, wfe worker APP, running on this store?)",
        f"Error: task {task_id!r} is still pending after 6s",
    ]


def test_retry_and_cancel_show_the_one_task_id_they_take(wfe) -> None:
    """`wfe retry` and `wfe cancel` take one task id (or --status): their usage line
    says so, and a second id is refused."""
    for command in ("retry", "cancel"):
        helped = wfe(command, "--help").stdout
        assert f"Usage: wfe {command} [OPTIONS] [TASK_ID]\n" in helped, helped
        two = wfe(command, "a1b2c3", "d4e5f6", check=False)
        assert two.returncode == 2 and "give one task id" in two.stderr, two.stderr


def test_values_no_task_or_hook_can_have_are_usage_errors(wfe) -> None:
    """Each was taken: a negative --if-version failed as if the task had changed, an
    age of 1e308 weeks purged nothing, an empty --hook listed every plugin; a bad
    WFE_USER was blamed on a --by nobody gave."""
    task_id = wfe("submit", "review", "--app", APP).stdout.strip()
    cases = [
        (
            ("resume", task_id, "--if-version", "-1"),
            {},
            "Invalid value for --if-version: must be a task's version, 0 or more (as wfe "
            "show prints it), not -1",
        ),
        (
            ("purge", "--older-than", "1e308w"),
            {},
            "Invalid value for --older-than: '1e308w' is more than 100 years",
        ),
        (("plugins", "--hook", ""), {}, "Invalid value for --hook: no hook named ''"),
        (
            ("resume", task_id, "--phase", "nope", "--output", "{}"),
            {},
            f"workflow 'review' of task {task_id!r} has no phase 'nope' (phases: double, approve)",
        ),
        (
            ("cancel", task_id),
            {"WFE_USER": "\x1b"},
            "Invalid value for WFE_USER (--by): by must be a name",
        ),
    ]
    results = [wfe(*args, env=dict(wfe.env, **env), check=False) for args, env, _ in cases]
    for (args, _, said), result in zip(cases, results, strict=True):
        assert result.returncode == 2, (args, result.stderr)
        assert f"Error: {said}" in result.stderr, (args, result.stderr)
    assert json.loads(wfe("show", task_id, "--json").stdout)["status"] == "pending"
    # A phase the workflow has, where the task is not: the task's state (1).
    moved = wfe("resume", task_id, "--phase", "approve", "--output", "{}", check=False)
    assert moved.returncode == 1 and "not 'approve'" in moved.stderr, moved.stderr

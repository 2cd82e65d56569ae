"""The fork server the ``wfe`` fixture runs commands with gives what a new
``python -m wfcore.cli`` process gives: the same exit status, output, working
folder, environment and import path; and a command past its timeout is killed."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from cli_forks import ForkServer, run_fresh

# An app module that says, as it is imported, what its process looks like.
PROBE = """
import json, os, sys, tempfile, time
from wfcore import ECSWorkflowEngine, Phase

with open(os.environ["PROBE_OUT"], "w") as out:
    json.dump(
        {
            "cwd": os.getcwd(),
            "path": sys.path,
            "argv": sys.argv[1:],
            "main": sys.modules["__main__"].__spec__.name,
            "tmp": tempfile.gettempdir(),
            "tz": time.tzname[0],
            "probe_env": os.environ.get("PROBE_ENV"),
            "stdin": sys.stdin.read(),
            "fds": sorted(int(fd) for fd in os.listdir("/proc/self/fd")),
        },
        out,
    )
engine = ECSWorkflowEngine()
engine.register_workflow("probe", [Phase("only")])
"""


@pytest.fixture
def env(wfe) -> dict[str, str]:
    return dict(wfe.env)


@pytest.fixture
def server(cli_forks: ForkServer | None) -> ForkServer:
    if cli_forks is None:
        pytest.skip("no fork server here (WFE_TEST_FORKS=0, or no process file descriptors)")
    return cli_forks


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["nope"],
        ["tasks"],
        ["submit", "nope", "--data", "{}"],
        ["tasks", "--status", "sideways"],
    ],
)
def test_a_forked_command_says_and_exits_as_a_new_interpreter_does(
    server: ForkServer, env: dict[str, str], tmp_path: Path, args: list[str]
) -> None:
    assert server.fits(env)
    forked = server.run(args, env=env, cwd=tmp_path, timeout=60)
    fresh = run_fresh(args, env=env, cwd=tmp_path, timeout=60)
    assert (forked.returncode, forked.stdout, forked.stderr) == (
        fresh.returncode,
        fresh.stdout,
        fresh.stderr,
    )
    assert forked.stdout or forked.stderr


def test_a_forked_command_has_the_folder_environment_and_path_of_a_new_one(
    server: ForkServer, env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "probe_app.py").write_text(PROBE)
    args = ["submit", "probe", "--data", "{}", "--app", "probe_app:engine"]
    seen = {}
    for how in ("forked", "fresh"):
        out = tmp_path / f"{how}.json"
        run_env = dict(env, PROBE_OUT=str(out), PROBE_ENV=how, TZ="Asia/Tokyo")
        if how == "forked":
            result = server.run(args, env=run_env, cwd=tmp_path, input="asked", timeout=60)
        else:
            result = run_fresh(args, env=run_env, cwd=tmp_path, input="asked", timeout=60)
        assert result.returncode == 0, result.stderr
        seen[how] = json.loads(out.read_text())
    forked, fresh = seen["forked"], seen["fresh"]
    assert forked.pop("probe_env") == "forked" and fresh.pop("probe_env") == "fresh"
    assert forked == fresh
    assert forked["cwd"] == forked["path"][0] == str(tmp_path)
    assert forked["tmp"] == env["TMPDIR"]
    assert forked["tz"] == "JST"
    assert forked["stdin"] == "asked"


def test_a_forked_command_past_its_timeout_is_killed(
    server: ForkServer, env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "probe_app.py").write_text(PROBE)
    run_env = dict(env, PROBE_OUT=str(tmp_path / "probe.json"))
    with pytest.raises(subprocess.TimeoutExpired):
        server.run(["worker", "probe_app:engine"], env=run_env, cwd=tmp_path, timeout=2)
    # The worker ran (it imported the app), and no process is left of it.
    assert (tmp_path / "probe.json").exists()
    deadline = time.monotonic() + 30
    while _children(server.pid):
        assert time.monotonic() < deadline, f"still running: {_children(server.pid)}"
        time.sleep(0.05)


def test_an_environment_python_starts_differently_with_runs_a_new_interpreter(
    server: ForkServer, env: dict[str, str]
) -> None:
    assert server.fits(dict(env, WFE_STORE="sqlite:///elsewhere.db", TZ="UTC"))
    assert not server.fits(dict(env, PYTHONIOENCODING="latin-1"))
    assert not server.fits(dict(env, PYTHONPATH="/elsewhere"))
    assert not server.fits(dict(env, LC_ALL="C"))


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            # The parent's pid is the second field after the command's ")".
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry))
    return found

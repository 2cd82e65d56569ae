"""Subprocess phases: argv without a shell, stdin/stdout, artifacts in and out, timeouts."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from core_util import events, pid_alive, wait_until

import wfcore.command
from wfcore import ECSWorkflowEngine, InvalidWorkflowError, Phase, Task, TaskStatus, TaskType


def py(code: str, *args: str) -> list[str]:
    """argv running a Python snippet with this interpreter."""
    return [sys.executable, "-c", textwrap.dedent(code), *args]


async def run_one(engine: ECSWorkflowEngine, data: Any = None, **submit: Any) -> Task:
    task = await engine.submit_task(data, "w", **submit)
    await engine.run_until_idle()
    return await engine.get_task(task.id)


def test_task_json_on_stdin_and_json_stdout_becomes_output(make_engine, wfe_run):
    engine = make_engine()

    async def prepare(task: Task) -> None:
        task.context["unit"] = "cm"
        task.output = {"width": 3}

    engine.register_handler("prepare", prepare)
    echo = py(
        """
        import json, os, sys
        doc = json.load(sys.stdin)
        print(json.dumps({
            "stdin": doc,
            "env": [os.environ["WFE_TASK_ID"], os.environ["WFE_PHASE"]],
        }))
        """
    )
    engine.register_workflow(
        "w", [Phase("prepare"), Phase("measure", assigned_to="functional", command=echo)]
    )
    task = wfe_run(run_one(engine, {"item": "box"}))
    assert task.status is TaskStatus.COMPLETED, task.error
    stdin = task.output["stdin"]
    assert stdin["id"] == task.id
    assert stdin["data"] == {"item": "box"}
    assert stdin["context"] == {"unit": "cm"}
    assert stdin["outputs"] == {"prepare": {"width": 3}}
    assert task.output["env"] == [task.id, "measure"]
    assert task.outputs["measure"] == task.output


def test_plain_text_stdout_is_kept_as_text_and_silence_is_none(make_engine, wfe_run):
    engine = make_engine()
    engine.register_workflow(
        "w",
        [
            Phase("talk", command=py("print('hello there')")),
            Phase("quiet", command=py("pass")),
        ],
    )
    task = wfe_run(run_one(engine, assigned_to="functional"))
    assert task.status is TaskStatus.COMPLETED, task.error
    assert task.outputs == {"talk": "hello there", "quiet": None}


def test_command_is_argv_not_a_shell_line(make_engine, wfe_run):
    engine = make_engine()
    tricky = ["a; echo injected", "$HOME", "`id`", "*"]
    engine.register_workflow(
        "w",
        [
            Phase(
                "args",
                assigned_to="functional",
                command=py("import json, sys; print(json.dumps(sys.argv[1:]))", *tricky),
            )
        ],
    )
    task = wfe_run(run_one(engine))
    assert task.output == tricky


def test_out_files_become_artifacts_and_later_phases_see_them(make_engine, wfe_run):
    engine = make_engine()
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))

    async def write_notes(task: Task) -> None:
        await engine.add_artifact_text(task, "notes.txt", "from a handler")

    engine.register_handler("notes", write_notes)
    plot = py(
        """
        import os, pathlib, sys
        pathlib.Path("out/plots").mkdir(parents=True)
        pathlib.Path("out/plots/a.png").write_bytes(bytes.fromhex(sys.argv[1]))
        pathlib.Path("out/summary.json").write_text('{"ok": true}')
        print(sorted(os.listdir(".")))
        """,
        png.hex(),
    )
    inspect = py(
        """
        import json, os, pathlib
        found = sorted(
            str(p.relative_to("artifacts")) for p in pathlib.Path("artifacts").rglob("*")
            if p.is_file()
        )
        print(json.dumps({
            "found": found,
            "notes": pathlib.Path("artifacts/notes.txt").read_text(),
            "png_size": pathlib.Path("artifacts/plots/a.png").stat().st_size,
        }))
        """
    )
    engine.register_workflow(
        "w",
        [
            Phase("notes"),
            Phase("plot", command=plot),
            Phase("inspect", command=inspect),
        ],
    )

    async def scenario():
        task = await run_one(engine, assigned_to="functional")
        return task, await engine.read_artifact(task, "plots/a.png")

    task, stored_png = wfe_run(scenario())
    assert task.status is TaskStatus.COMPLETED, task.error
    assert task.outputs["plot"] == "['artifacts', 'out']"  # a fresh folder holding just these
    assert task.output == {
        "found": ["notes.txt", "plots/a.png", "summary.json"],
        "notes": "from a handler",
        "png_size": len(png),
    }
    by_name = {a.name: a for a in task.artifacts}
    assert set(by_name) == {"notes.txt", "plots/a.png", "summary.json"}
    art = by_name["plots/a.png"]
    assert art.size == len(png)
    assert art.sha256 == hashlib.sha256(png).hexdigest()
    assert art.media_type == "image/png"
    assert art.phase == "plot"
    assert by_name["summary.json"].media_type == "application/json"
    assert by_name["notes.txt"].phase == "notes"
    assert stored_png == png


def test_each_run_gets_a_fresh_work_folder(make_engine, wfe_run):
    engine = make_engine()
    leave_mess = py(
        """
        import os, pathlib
        print(sorted(os.listdir(".")))
        pathlib.Path("leftover.txt").write_text("x")
        print(os.getcwd())
        """
    )
    engine.register_workflow(
        "w", [Phase("one", command=leave_mess), Phase("two", command=leave_mess)]
    )
    task = wfe_run(run_one(engine, assigned_to="functional"))
    assert task.status is TaskStatus.COMPLETED, task.error
    listing_one, cwd_one = task.outputs["one"].splitlines()
    listing_two, cwd_two = task.outputs["two"].splitlines()
    assert listing_one == listing_two == "['artifacts', 'out']"
    assert cwd_one != cwd_two
    assert not Path(cwd_one).exists()  # removed once the phase is over


def test_nonzero_exit_fails_with_the_tail_of_stderr(make_engine, wfe_run):
    engine = make_engine()
    crash = py(
        """
        import sys
        sys.stderr.write("x" * 5000 + "\\nfinal words: disk full\\n")
        sys.exit(3)
        """
    )
    engine.register_workflow("w", [Phase("c", assigned_to="functional", command=crash)])
    task = wfe_run(run_one(engine))
    assert task.status is TaskStatus.FAILED
    assert task.error.startswith("CommandError")
    assert "status 3" in task.error
    assert "final words: disk full" in task.error
    assert len(task.error) < 3000  # the tail, not the whole stream


@pytest.mark.parametrize(
    "printed",
    [
        "NaN",
        "1e999",
        '{"a": "\\ud800"}',
        "[Infinity]",
        # Deeper than Python's recursion limit: json.loads raises RecursionError.
        pytest.param("[" * 5000 + "]" * 5000, id="nested-5000-deep"),
    ],
)
def test_stdout_python_reads_but_json_forbids_is_text(make_engine, wfe_run, printed):
    engine = make_engine()
    command = ["printf", "%s", printed]
    engine.register_workflow("w", [Phase("c", assigned_to="functional", command=command)])
    task = wfe_run(run_one(engine))
    assert task.status is TaskStatus.COMPLETED, task.error
    assert task.output == printed


def test_an_out_file_named_in_another_encoding_fails_the_attempt(make_engine, wfe_run):
    engine = make_engine()
    command = py(
        """
        import os
        with open(os.path.join(b"out", b"caf\\xe9.txt"), "wb") as f:
            f.write(b"latin-1 name")
        print("done")
        """
    )
    engine.register_workflow("w", [Phase("c", assigned_to="functional", command=command)])
    task = wfe_run(run_one(engine))
    assert task.status is TaskStatus.FAILED
    assert "is not Unicode text (a file name in another encoding?)" in task.error
    assert task.output is None and task.artifacts == []


def test_a_command_killed_by_a_signal_says_which(make_engine, wfe_run):
    engine = make_engine()
    suicide = py(
        """
        import os, signal
        os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's OOM killer would
        """
    )
    engine.register_workflow("w", [Phase("c", assigned_to="functional", command=suicide)])
    task = wfe_run(run_one(engine))
    assert task.status is TaskStatus.FAILED
    assert "exited with status 137 (SIGKILL, likely)" in task.error


@pytest.mark.parametrize(
    ("program", "problem"),
    [
        ("/nonexistent/tool", "no such file"),
        ("no-such-tool-anywhere", "no such file on PATH"),
        (__file__, "not an executable file"),
    ],
)
def test_a_program_that_cannot_start_fails_the_attempt(make_engine, wfe_run, program, problem):
    engine = make_engine()
    engine.register_workflow("w", [Phase("c", assigned_to="functional", command=[program, "x"])])
    task = wfe_run(run_one(engine))
    assert task.status is TaskStatus.FAILED
    assert task.error == f"CommandError: cannot start command {program!r}: {problem}"


def test_a_relative_program_is_looked_up_in_the_work_folder(make_engine, wfe_run, tmp_path):
    """Where the command runs, not where the worker does: a ./tool.sh beside the
    worker is not the command's."""
    tool = Path("tool.sh")
    engine = make_engine()
    engine.register_workflow("w", [Phase("c", assigned_to="functional", command=["./tool.sh"])])
    here = Path.cwd()
    try:
        os.chdir(tmp_path)
        tool.write_text("#!/bin/sh\necho ran\n")
        tool.chmod(0o755)
        task = wfe_run(run_one(engine))
    finally:
        os.chdir(here)
    assert task.status is TaskStatus.FAILED
    assert task.error == (
        "CommandError: cannot start command './tool.sh': no such file "
        "(a relative path is looked up in the phase's work folder)"
    )


def test_a_command_ends_when_it_exits_whatever_it_left_running(make_engine, wfe_run):
    """A background child holding stdout neither keeps the phase waiting nor
    outlives it."""
    engine = make_engine()
    leaver = ["/bin/sh", "-c", "sleep 300 & echo $!"]
    engine.register_workflow("w", [Phase("c", assigned_to="functional", command=leaver)])
    task = wfe_run(run_one(engine), timeout=30)
    assert task.status is TaskStatus.COMPLETED, task.error
    wait_until(lambda: not pid_alive(task.output), 10, "the background sleep to be killed")


def test_a_command_ends_with_what_it_left_in_process_groups_of_its_own(make_engine, wfe_run):
    """GNU timeout, a shell with job control and make put what they run in a process
    group of their own; it stays in the command's session, and goes too."""
    engine = make_engine()
    leaver = py(
        """
        import os, subprocess, sys
        sleeper = [sys.executable, "-c", "import time; time.sleep(300)"]
        print(subprocess.Popen(sleeper, preexec_fn=os.setpgrp, stdout=subprocess.DEVNULL).pid)
        """
    )
    engine.register_workflow("w", [Phase("c", assigned_to="functional", command=leaver)])
    task = wfe_run(run_one(engine), timeout=30)
    assert task.status is TaskStatus.COMPLETED, task.error
    wait_until(lambda: not pid_alive(task.output), 10, "the background sleep to be killed")


def test_a_child_that_left_the_process_group_does_not_keep_the_phase_waiting(make_engine, wfe_run):
    """A process that made a session of its own escapes the group kill; holding the
    command's stdout, it would keep the phase waiting as long as it lives."""
    engine = make_engine()
    escaper = py(
        """
        import subprocess, sys
        child = subprocess.Popen(
            [sys.executable, "-c", "import os, time; os.setsid(); time.sleep(60)"]
        )
        print(child.pid)
        """
    )
    engine.register_workflow("w", [Phase("c", assigned_to="functional", command=escaper)])
    task = wfe_run(run_one(engine), timeout=30)
    try:
        assert task.status is TaskStatus.COMPLETED, task.error
    finally:
        if isinstance(task.output, int):
            os.kill(task.output, signal.SIGKILL)


def test_a_child_that_left_the_process_group_holding_stdin_does_not_keep_it_waiting(
    make_engine, wfe_run
):
    """The same with stdin: task data larger than a pipe holds is still being fed
    when the command exits, to a child that never reads it."""
    engine = make_engine()
    escaper = py(
        """
        import subprocess, sys
        child = subprocess.Popen(
            [sys.executable, "-c", "import os, time; os.setsid(); time.sleep(60)"],
            stdin=sys.stdin,
        )
        print(child.pid)
        """
    )
    engine.register_workflow("w", [Phase("c", assigned_to="functional", command=escaper)])
    task = wfe_run(run_one(engine, {"big": "x" * 1_000_000}), timeout=30)
    try:
        assert task.status is TaskStatus.COMPLETED, task.error
    finally:
        if isinstance(task.output, int):
            os.kill(task.output, signal.SIGKILL)


def test_too_much_stdout_fails_the_attempt(make_engine, wfe_run, monkeypatch):
    monkeypatch.setattr(wfcore.command, "MAX_STDOUT", 100_000)
    engine = make_engine()
    chatty = py("import sys; sys.stdout.write('x' * 300_000)")
    engine.register_workflow("w", [Phase("c", assigned_to="functional", command=chatty)])
    task = wfe_run(run_one(engine))
    assert task.status is TaskStatus.FAILED
    assert task.error.startswith("CommandError: the command wrote more than 100,000 bytes")
    assert "write large results to files under out/" in task.error


def test_a_timeout_while_the_command_starts_fails_the_attempt(make_engine, wfe_run):
    """A timeout landing while the guard process starts used to leave the phase
    waiting for ever on pipes the guard's watcher held."""
    engine = make_engine(max_concurrency=20)
    quick = [sys.executable, "-c", "pass"]
    engine.register_workflow(
        "w", [Phase("c", assigned_to="functional", command=quick, timeout=0.001)]
    )

    async def scenario():
        tasks = [await engine.submit_task(None, "w") for _ in range(20)]
        await engine.run_until_idle()
        return [await engine.get_task(t.id) for t in tasks]

    done = wfe_run(scenario(), timeout=60)
    assert {t.status for t in done} <= {TaskStatus.FAILED, TaskStatus.COMPLETED}
    failed = [t for t in done if t.status is TaskStatus.FAILED]
    assert failed and all("timed out after 0.001s" in t.error for t in failed)


def test_failed_command_is_retried_up_to_max_attempts(make_engine, wfe_run, tmp_path):
    engine = make_engine()
    counter = tmp_path / "runs.txt"
    flaky = py(
        """
        import pathlib, sys
        counter = pathlib.Path(sys.argv[1])
        runs = len(counter.read_text()) if counter.exists() else 0
        counter.write_text("x" * (runs + 1))
        if runs < 2:
            sys.exit("not yet")
        print(runs + 1)
        """,
        str(counter),
    )
    engine.register_workflow(
        "w", [Phase("c", assigned_to="functional", command=flaky, max_attempts=3)]
    )
    task = wfe_run(run_one(engine))
    assert task.status is TaskStatus.COMPLETED, task.error
    assert task.output == 3
    assert events(task).count("attempt_failed") == 2


def test_timeout_kills_the_whole_process_group(make_engine, wfe_run, tmp_path):
    engine = make_engine()
    pids = tmp_path / "pids.json"
    # The child starts a grandchild; both record their pids and then hang.
    hang = py(
        """
        import json, subprocess, sys, time
        sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
        grandchild = subprocess.Popen(sleeper)
        own_group = subprocess.Popen(sleeper, preexec_fn=__import__("os").setpgrp)
        with open(sys.argv[1], "w") as fh:
            json.dump({
                "child": __import__("os").getpid(),
                "grandchild": grandchild.pid,
                "own_group": own_group.pid,
            }, fh)
        time.sleep(600)
        """,
        str(pids),
    )
    engine.register_workflow(
        "w", [Phase("hang", assigned_to="functional", command=hang, timeout=1.0)]
    )
    task = wfe_run(run_one(engine))
    assert task.status is TaskStatus.FAILED
    assert "timed out" in task.error
    recorded = json.loads(pids.read_text())
    wait_until(lambda: not pid_alive(recorded["child"]), 10, "the child to die")
    wait_until(lambda: not pid_alive(recorded["grandchild"]), 10, "the grandchild to die")
    wait_until(lambda: not pid_alive(recorded["own_group"]), 10, "the one in its own group")


def test_cancel_kills_a_running_command_and_its_children(make_engine, wfe_run, tmp_path):
    import asyncio

    from core_util import wait_for

    engine = make_engine()
    pids = tmp_path / "pids.json"
    hang = py(
        """
        import json, os, subprocess, sys, time
        sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
        grandchild = subprocess.Popen(sleeper)
        own_group = subprocess.Popen(sleeper, preexec_fn=os.setpgrp)
        with open(sys.argv[1] + ".tmp", "w") as fh:
            json.dump(
                {"child": os.getpid(), "grandchild": grandchild.pid, "own_group": own_group.pid},
                fh,
            )
        os.rename(sys.argv[1] + ".tmp", sys.argv[1])
        time.sleep(600)
        """,
        str(pids),
    )
    engine.register_workflow("w", [Phase("hang", assigned_to="functional", command=hang)])

    async def scenario():
        task = await engine.submit_task(None, "w")
        runner = asyncio.create_task(engine.run_until_idle())
        await wait_for(pids.exists, 20, "the command to start")
        await engine.cancel(task.id)
        await asyncio.wait_for(runner, 20)
        return await engine.get_task(task.id)

    task = wfe_run(scenario())
    assert task.status is TaskStatus.CANCELLED
    recorded = json.loads(pids.read_text())
    wait_until(lambda: not pid_alive(recorded["child"]), 10, "the child to die")
    wait_until(lambda: not pid_alive(recorded["grandchild"]), 10, "the grandchild to die")
    wait_until(lambda: not pid_alive(recorded["own_group"]), 10, "the one in its own group")


def test_a_phase_with_a_command_is_functional_whatever_the_task_type(make_engine, wfe_run):
    """Tasks are agentic by default: a command phase still runs its command, rather
    than failing for want of an agent handler."""
    engine = make_engine()
    engine.register_workflow("w", [Phase("run", command=[sys.executable, "-c", "print(42)"])])
    assert engine.workflows["w"].phases[0].assigned_to is TaskType.FUNCTIONAL

    async def scenario():
        task = await engine.submit_task(None, "w")  # assigned_to="ai"
        await engine.run_until_idle()
        return await engine.get_task(task.id)

    done = wfe_run(scenario())
    assert done.status is TaskStatus.COMPLETED, done.error
    assert done.output == 42
    for other in ("human", "agentic"):
        with pytest.raises(InvalidWorkflowError) as refused:
            Phase("run", assigned_to=other, command=["true"])
        assert str(refused.value) == (
            f"phase.command: only functional phases run commands, and this one is assigned "
            f"to {other!r} (leave assigned_to out, or make it 'functional')"
        )

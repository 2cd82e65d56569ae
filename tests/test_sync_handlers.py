"""Plain (sync) handlers run in a worker thread, and a phase that calls sys.exit fails
its attempt instead of ending the worker."""

from __future__ import annotations

import contextvars
import functools
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from core_util import (
    background,
    background_wfe,
    stored_task,
    submit_with_app,
    wait_for,
    wait_for_status,
    wait_until,
    with_pythonpath,
)

from wfcore import Phase, Task, TaskStatus

ROOT = Path(__file__).resolve().parents[1]


def test_a_blocking_plain_handler_does_not_hold_up_other_tasks(make_engine, wfe_run):
    engine = make_engine()
    started = threading.Event()
    release = threading.Event()

    def blocking(task: Task) -> None:
        started.set()
        if not release.wait(30):
            raise RuntimeError("never released")
        task.output = "released"

    async def quick(task: Task) -> None:
        task.output = "quick"

    engine.register_handler("blocking", blocking)
    engine.register_handler("quick", quick)
    engine.register_workflow("slow", [Phase("blocking", assigned_to="functional")])
    engine.register_workflow("fast", [Phase("quick", assigned_to="functional")])

    async def scenario():
        try:
            async with background(engine):
                slow = await engine.submit_task({}, "slow")
                await wait_for(started.is_set, 10, "the plain handler to start")
                fast = await engine.submit_task({}, "fast")
                done = await wait_for_status(engine, fast.id, TaskStatus.COMPLETED)
                meanwhile = await engine.get_task(slow.id)
                release.set()
                finished = await wait_for_status(engine, slow.id, TaskStatus.COMPLETED)
        finally:
            release.set()
        return done, meanwhile, finished

    done, meanwhile, finished = wfe_run(scenario())
    assert done.output == "quick"
    assert meanwhile.status is TaskStatus.IN_PROGRESS
    assert finished.output == "released"


def test_a_plain_handler_past_its_timeout_fails_while_it_still_blocks(make_engine, wfe_run):
    engine = make_engine()
    release = threading.Event()
    returned = threading.Event()

    def blocking(task: Task) -> None:
        try:
            release.wait(30)
        finally:
            returned.set()

    engine.register_handler("b", blocking)
    engine.register_workflow("w", [Phase("b", assigned_to="functional", timeout=0.3)])

    async def scenario():
        try:
            task = await engine.submit_task({}, "w")
            await engine.run_until_idle()
            failed = await engine.get_task(task.id)
            still_blocked = not returned.is_set()
        finally:
            release.set()
        return failed, still_blocked

    failed, still_blocked = wfe_run(scenario())
    assert still_blocked
    assert failed.status is TaskStatus.FAILED
    assert failed.error == "TimeoutError: phase 'b' timed out after 0.3s"


def test_handlers_of_every_shape_run(make_engine, wfe_run):
    """An async def, a plain function, a partial of an async def, an object with an
    async __call__, and a plain function returning a coroutine: coroutines run on
    the event loop, plain code in a thread."""
    engine = make_engine()
    on_loop: dict[str, bool] = {}

    def in_main_thread() -> bool:
        return threading.current_thread() is threading.main_thread()

    async def labelled(task: Task, label: str) -> None:
        on_loop[label] = in_main_thread()
        task.output = label

    async def async_def(task: Task) -> None:
        await labelled(task, "async_def")

    def plain(task: Task) -> None:
        on_loop["plain"] = in_main_thread()
        task.output = "plain"

    class AsyncCallable:
        async def __call__(self, task: Task) -> None:
            await labelled(task, "object")

    handlers = {
        "async_def": async_def,
        "plain": plain,
        "partial": functools.partial(labelled, label="partial"),
        "object": AsyncCallable(),
        "returns": lambda task: labelled(task, "returns"),
    }
    for name, handler in handlers.items():
        engine.register_handler(name, handler)
        engine.register_workflow(name, [Phase(name, assigned_to="functional")])

    async def scenario():
        ids = {name: (await engine.submit_task({}, name)).id for name in handlers}
        await engine.run_until_idle()
        return {name: (await engine.get_task(i)).output for name, i in ids.items()}

    assert wfe_run(scenario()) == {name: name for name in handlers}
    assert on_loop == {
        "async_def": True,
        "plain": False,
        "partial": True,
        "object": True,
        "returns": True,
    }


REQUEST = contextvars.ContextVar("REQUEST", default=None)


def test_a_plain_handler_can_suspend_and_sees_the_context(make_engine, wfe_run):
    engine = make_engine()
    seen: list[object] = []

    def ask(task: Task) -> None:
        seen.append((REQUEST.get(), threading.current_thread() is threading.main_thread()))
        if task.reply is None:
            engine.suspend(
                task, TaskStatus.WAITING_HUMAN, reason="Your name?", resume_in_phase=True
            )
        else:
            task.output = f"hello {task.reply}"

    engine.register_handler("ask", ask)
    engine.register_workflow("w", [Phase("ask", assigned_to="functional")])

    async def scenario():
        REQUEST.set("req-1")  # the worker's tasks, and their threads, inherit it
        task = await engine.submit_task({}, "w")
        await engine.run_until_idle()
        waiting = await engine.get_task(task.id)
        await engine.resume(task.id, "Ada")
        await engine.run_until_idle()
        return waiting, await engine.get_task(task.id)

    waiting, done = wfe_run(scenario())
    assert waiting.status is TaskStatus.WAITING_HUMAN
    assert waiting.waiting_reason == "Your name?"
    assert done.status is TaskStatus.COMPLETED
    assert done.output == "hello Ada"
    assert seen == [("req-1", False), ("req-1", False)]


def _exit_2(task: Task) -> None:
    sys.exit(2)


async def _exit_2_async(task: Task) -> None:
    sys.exit(2)


@pytest.mark.parametrize(
    ("handler", "timeout"),
    [(_exit_2_async, None), (_exit_2_async, 30), (_exit_2, None), (_exit_2, 30)],
    ids=["async", "async_timeout", "plain", "plain_timeout"],
)
def test_a_phase_calling_sys_exit_fails_its_attempt_and_the_engine_goes_on(
    make_engine, wfe_run, handler, timeout
):
    engine = make_engine()

    async def fine(task: Task) -> None:
        task.output = "fine"

    engine.register_handler("exits", handler)
    engine.register_handler("fine", fine)
    engine.register_workflow("exits", [Phase("exits", assigned_to="functional", timeout=timeout)])
    engine.register_workflow("fine", [Phase("fine", assigned_to="functional")])

    async def scenario():
        async with background(engine) as runner:
            exiting = await engine.submit_task({}, "exits")
            failed = await wait_for_status(engine, exiting.id, TaskStatus.FAILED)
            after = await engine.submit_task({}, "fine")
            done = await wait_for_status(engine, after.id, TaskStatus.COMPLETED)
            running = engine.running and not runner.done()
        return failed, done, running

    failed, done, running = wfe_run(scenario())
    assert failed.error == "SystemExit: 2 (the phase called sys.exit)"
    assert "sys.exit(2)" in failed.traceback
    assert done.output == "fine"
    assert running


def test_wfe_worker_survives_argparse_exiting_on_bad_input(tmp_path):
    env = dict(
        os.environ,
        WFE_STORE=f"sqlite://{tmp_path / 'wfe.db'}",
        PYTHONPATH=os.pathsep.join(
            [str(ROOT / "tests" / "cli_apps"), os.environ.get("PYTHONPATH", "")]
        ).rstrip(os.pathsep),
        WFE_LOAD_PLUGINS="",
    )
    app = "exiting_app:engine"

    def wfe(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "wfcore.cli", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    every_args = [("--n", "bad"), ("--n", "1")]
    ids = {}
    for workflow in ("parse", "parse_plain"):
        datas = [{"args": list(args)} for args in every_args]
        submitted = submit_with_app(app, workflow, datas, env=env, cwd=tmp_path)
        ids.update(zip([(workflow, args) for args in every_args], submitted, strict=True))
    worker = wfe("worker", app, "--until-idle", "--quiet")
    assert worker.returncode == 0, worker.stderr
    assert "argument --n: invalid int value: 'bad'" in worker.stderr  # argparse's usage

    shown = {key: stored_task(env["WFE_STORE"], task_id) for key, task_id in ids.items()}
    for workflow in ("parse", "parse_plain"):
        bad, good = shown[workflow, ("--n", "bad")], shown[workflow, ("--n", "1")]
        assert bad.status is TaskStatus.FAILED
        assert bad.error == "SystemExit: 2 (the phase called sys.exit)"
        assert good.status is TaskStatus.COMPLETED
        assert good.output == {"n": 1}


def test_keyboard_interrupt_from_a_phase_still_ends_the_process(tmp_path):
    script = textwrap.dedent(
        """
        import asyncio
        from wfcore import ECSWorkflowEngine, Phase

        async def interrupted(task):
            raise KeyboardInterrupt

        async def main():
            engine = ECSWorkflowEngine("memory://", load_plugins=False)
            engine.register_handler("p", interrupted)
            engine.register_workflow("w", [Phase("p", assigned_to="functional")])
            await engine.submit_task({}, "w")
            await engine.run_until_idle()
            print("the engine went on")

        asyncio.run(main())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert result.returncode != 0
    assert "KeyboardInterrupt" in result.stderr
    assert "the engine went on" not in result.stdout


BLOCKED_FOR_GOOD = """
import os, threading
from pathlib import Path
from wfcore import ECSWorkflowEngine, Phase

def stuck(task):
    Path(os.environ["WFE_TEST_DIR"], "started").touch()
    threading.Event().wait()  # a call that never returns

engine = ECSWorkflowEngine(shutdown_timeout=0.5)
engine.register_handler("stuck", stuck)
engine.register_workflow("w", [Phase("stuck", assigned_to="functional", timeout=TIMEOUT)])
"""


def test_a_stopped_worker_exits_though_a_plain_handler_never_returns(tmp_path, worker_env):
    (tmp_path / "stuck_app.py").write_text(BLOCKED_FOR_GOOD.replace("TIMEOUT", "None"))
    env = with_pythonpath(worker_env, tmp_path)
    wfe = [sys.executable, "-m", "wfcore.cli"]
    submitted = subprocess.run(
        [*wfe, "submit", "w", "--app", "stuck_app:engine", "--assigned-to", "functional"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    task_id = submitted.stdout.strip()
    with background_wfe(
        "worker", "stuck_app:engine", cwd=tmp_path, env=env, log=tmp_path / "worker.log"
    ) as worker:
        wait_until(lambda: (tmp_path / "started").exists(), what="the handler to start")
        worker.send_signal(signal.SIGTERM)
        # Its thread still blocks: the worker hands the task back and exits all the same.
        assert worker.wait(timeout=30) == 0, (tmp_path / "worker.log").read_text()
    task = stored_task(env["WFE_STORE"], task_id)
    assert task.status is TaskStatus.PENDING
    assert task.history[-1]["event"] == "released"


def test_a_program_ends_though_a_plain_handler_outlived_its_timeout(tmp_path):
    app = BLOCKED_FOR_GOOD.replace("TIMEOUT", "0.2").replace(
        "ECSWorkflowEngine(shutdown_timeout=0.5)", "ECSWorkflowEngine('memory://')"
    )
    script = app + textwrap.dedent(
        """
        import asyncio

        async def main():
            task = await engine.submit_task({}, "w", assigned_to="functional")
            await engine.run_until_idle()
            print((await engine.get_task(task.id)).error)

        asyncio.run(main())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=dict(os.environ, WFE_TEST_DIR=str(tmp_path), WFE_LOAD_PLUGINS=""),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("TimeoutError: phase 'stuck' timed out after 0.2s")

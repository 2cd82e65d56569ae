"""A failed or handed-back attempt keeps none of its unsaved changes: every rerun of a
phase starts from the task as stored at the attempt's start or its last checkpoint,
as one after a crash (kill -9) does."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from core_util import events, wait_for

from wfcore import ArtifactError, Phase, Task, TaskStatus


def _seen(task: Task) -> dict[str, Any]:
    """What an attempt starts from."""
    return {
        "data": dict(task.data),
        "context": dict(task.context),
        "artifacts": sorted(a.name for a in task.artifacts),
    }


def test_a_failed_attempts_changes_are_not_kept_and_reruns_start_alike(make_engine, wfe_run):
    engine = make_engine(retry_delay=0.01)
    seen: list[dict[str, Any]] = []

    async def first(task: Task) -> None:
        await engine.add_artifact_text(task, "keep.txt", "from the first phase")
        task.output = "first"

    async def flaky(task: Task) -> None:
        seen.append(_seen(task))
        attempt = task.attempts
        task.context["n"] = task.context.get("n", 0) + 1
        task.context["seed"] = "changed"
        task.data["touched"] = attempt
        await engine.add_artifact_text(task, "keep.txt", f"replaced by attempt {attempt}")
        if attempt < 3:
            await engine.add_artifact_text(task, "partial.txt", f"attempt {attempt}")
            await engine.add_artifact_text(task, "sub/part.txt", f"attempt {attempt}")
            raise RuntimeError(f"attempt {attempt} failed")
        # The same name again, and "sub" as a file where a failed attempt had a folder.
        await engine.add_artifact_text(task, "partial.txt", "final")
        await engine.add_artifact_text(task, "sub", "a file now")
        task.output = dict(task.context)

    engine.register_handler("first", first)
    engine.register_handler("flaky", flaky)
    engine.register_workflow(
        "w",
        [
            Phase("first", assigned_to="functional"),
            Phase("flaky", assigned_to="functional", max_attempts=3),
        ],
    )

    async def scenario():
        task = await engine.submit_task({"orig": 1}, "w", context={"seed": 1})
        await engine.run_until_idle()
        done = await engine.get_task(task.id)
        return done, await engine.read_artifact(done, "partial.txt")

    done, partial = wfe_run(scenario())
    start = {"data": {"orig": 1}, "context": {"seed": 1}, "artifacts": ["keep.txt"]}
    assert seen == [start, start, start]
    assert done.status is TaskStatus.COMPLETED, done.error
    assert done.output == {"seed": "changed", "n": 1}
    assert done.data == {"orig": 1, "touched": 3}
    assert sorted(a.name for a in done.artifacts) == ["keep.txt", "partial.txt", "sub"]
    assert partial == b"final"
    assert events(done).count("attempt_failed") == 2


def test_a_task_that_fails_for_good_keeps_what_it_had_before_the_attempt(make_engine, wfe_run):
    engine = make_engine()

    async def broken(task: Task) -> None:
        task.context["progress"] = 50
        task.data["half"] = "done"
        await engine.add_artifact_text(task, "half.txt", "half")
        raise ValueError("the input has no header row")

    engine.register_handler("parse", broken)
    engine.register_workflow("w", [Phase("parse", assigned_to="functional")])

    async def scenario():
        task = await engine.submit_task({"n": 1}, "w", context={"from": "test"})
        await engine.run_until_idle()
        failed = await engine.get_task(task.id)
        with pytest.raises(ArtifactError, match=r"has no artifact 'half\.txt'"):
            await engine.read_artifact(failed, "half.txt")
        return failed

    failed = wfe_run(scenario())
    assert failed.status is TaskStatus.FAILED
    assert failed.error == "ValueError: the input has no header row"
    assert failed.attempts == 1
    assert failed.classification == "parse"
    assert failed.context == {"from": "test"}
    assert failed.data == {"n": 1}
    assert failed.artifacts == []
    assert events(failed)[-3:] == ["phase_started", "attempt_failed", "failed"]


def test_a_timed_out_attempts_changes_are_not_kept(make_engine, wfe_run):
    engine = make_engine()

    async def slow(task: Task) -> None:
        task.context["started"] = True
        task.data.append("changed")
        await engine.add_artifact_text(task, "draft.txt", "half a draft")
        await asyncio.Event().wait()  # for ever: the timeout ends it

    engine.register_handler("slow", slow)
    engine.register_workflow(
        "w", [Phase("slow", assigned_to="functional", timeout=0.3, max_attempts=2)]
    )

    async def scenario():
        task = await engine.submit_task(["orig"], "w")
        await engine.run_until_idle()
        return await engine.get_task(task.id)

    failed = wfe_run(scenario())
    assert failed.status is TaskStatus.FAILED
    assert failed.error == "TimeoutError: phase 'slow' timed out after 0.3s"
    assert events(failed).count("attempt_failed") == 2
    assert failed.context == {}
    assert failed.data == ["orig"]
    assert failed.artifacts == []


@pytest.mark.parametrize("now", [False, True], ids=["grace_time", "now"])
def test_a_handed_back_attempts_changes_are_not_kept(make_engine, wfe_run, now):
    engine = make_engine(shutdown_timeout=0.1)
    runs: list[dict[str, Any]] = []
    running = asyncio.Event()

    async def long(task: Task) -> None:
        runs.append(_seen(task))
        if len(runs) == 1:
            task.context["started"] = 1
            task.data["touched"] = True
            await engine.add_artifact_text(task, "out/part.txt", "unsaved")
            running.set()
            await asyncio.Event().wait()  # until stop() hands it back
        task.output = "done"

    engine.register_handler("long", long)
    engine.register_workflow("w", [Phase("long", assigned_to="functional")])

    async def scenario():
        task = await engine.submit_task({"orig": 1}, "w")
        runner = asyncio.create_task(engine.run())
        await asyncio.wait_for(running.wait(), 10)
        engine.stop(now=now)
        await asyncio.wait_for(runner, 10)
        back = await engine.get_task(task.id)
        store = await engine.get_store()
        left = (store.artifacts_dir / task.id / "out").exists()
        await engine.run_until_idle()
        return back, left, await engine.get_task(task.id)

    back, left, done = wfe_run(scenario())
    assert back.status is TaskStatus.PENDING
    assert back.attempts == 0
    assert back.context == {}
    assert back.data == {"orig": 1}
    assert back.artifacts == []
    assert events(back)[-2:] == ["phase_started", "released"]
    assert not left  # the attempt's artifact file, and its folder
    assert runs == [{"data": {"orig": 1}, "context": {}, "artifacts": []}] * 2
    assert done.status is TaskStatus.COMPLETED


def test_checkpointed_changes_are_kept_by_a_failed_attempt(make_engine, wfe_run):
    engine = make_engine(retry_delay=0.01)
    seen: list[dict[str, Any]] = []

    async def step(task: Task) -> None:
        seen.append(_seen(task))
        if task.attempts == 2:
            task.output = "done"
            return
        task.context["step"] = 1
        task.data["checked"] = True
        await engine.add_artifact_text(task, "saved.txt", "checkpointed")
        await engine.checkpoint(task)
        task.context["step"] = 2
        await engine.add_artifact_text(task, "lost.txt", "after the checkpoint")
        raise RuntimeError("after the checkpoint")

    engine.register_handler("step", step)
    engine.register_workflow("w", [Phase("step", assigned_to="functional", max_attempts=2)])

    async def scenario():
        task = await engine.submit_task({}, "w")
        await engine.run_until_idle()
        done = await engine.get_task(task.id)
        return done, await engine.read_artifact(done, "saved.txt")

    done, saved = wfe_run(scenario())
    assert done.status is TaskStatus.COMPLETED, done.error
    assert seen[1] == {
        "data": {"checked": True},
        "context": {"step": 1},
        "artifacts": ["saved.txt"],
    }
    assert saved == b"checkpointed"
    assert [a.name for a in done.artifacts] == ["saved.txt"]


def test_a_plain_handler_running_on_after_its_timeout_changes_nothing_stored(
    wfe_engine_factory, wfe_run
):
    """Its thread cannot be stopped; what it does to the task afterwards is dropped."""
    engine = wfe_engine_factory()
    release = threading.Event()
    returned = threading.Event()

    def blocking(task: Task) -> None:
        task.context["before"] = True
        try:
            release.wait(30)
            task.context["after"] = True
            task.data["after"] = True
            task.output = "too late"
        finally:
            returned.set()

    engine.register_handler("b", blocking)
    engine.register_workflow("w", [Phase("b", assigned_to="functional", timeout=0.3)])

    async def scenario():
        try:
            task = await engine.submit_task({"orig": 1}, "w")
            await engine.run_until_idle()
            failed = await engine.get_task(task.id)
            assert not returned.is_set()  # failed while the thread still blocks
        finally:
            release.set()
        await wait_for(returned.is_set, 10, "the handler's thread to return")
        return failed, await engine.get_task(task.id)

    failed, later = wfe_run(scenario())
    assert failed.status is TaskStatus.FAILED
    assert failed.error == "TimeoutError: phase 'b' timed out after 0.3s"
    for task in (failed, later):
        assert task.context == {}
        assert task.data == {"orig": 1}
        assert task.output is None
    assert later.version == failed.version

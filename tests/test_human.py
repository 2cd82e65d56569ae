"""Human phases: instructions, typed answers, deadlines and resuming without re-running work."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import pytest
from core_util import background, events, wait_for_status

from wfcore import (
    ECSWorkflowEngine,
    InvalidOutputError,
    Phase,
    Task,
    TaskStateError,
    TaskStatus,
    WorkflowError,
)
from wfcore.model import utcnow

SCHEMA = {
    "type": "object",
    "properties": {
        "approved": {"type": "boolean"},
        "amount": {"type": "number", "minimum": 0},
    },
    "required": ["approved", "amount"],
    "additionalProperties": False,
}


async def submit_and_settle(engine: ECSWorkflowEngine, data: Any = None) -> Task:
    task = await engine.submit_task(data, "w")
    await engine.run_until_idle()
    return await engine.get_task(task.id)


def test_answer_is_validated_against_the_input_schema(make_engine, wfe_run):
    engine = make_engine()
    engine.register_workflow(
        "w",
        [
            Phase(
                "approve",
                assigned_to="human",
                instructions="Approve the refund",
                input_schema=SCHEMA,
            )
        ],
    )

    async def scenario():
        waiting = await submit_and_settle(engine)
        with pytest.raises(InvalidOutputError) as refused:
            await engine.resume(waiting.id, {"amount": -5, "colour": "red"})
        still = await engine.get_task(waiting.id)
        with pytest.raises(InvalidOutputError) as wrong_type:
            await engine.resume(waiting.id, "yes")
        resumed = await engine.resume(waiting.id, {"approved": True, "amount": 12.5})
        return waiting, refused.value, still, wrong_type.value, resumed

    waiting, refused, still, wrong_type, resumed = wfe_run(scenario())
    assert waiting.waiting_reason == "Approve the refund"
    assert isinstance(refused, WorkflowError)
    # Every violation is listed, each with where it is.
    assert len(refused.errors) == 3
    joined = "\n".join(refused.errors)
    assert "approved" in joined and "required" in joined
    assert "amount" in joined and "-5" in joined
    assert "colour" in joined
    for error in refused.errors:
        assert error in str(refused)
    assert still.status is TaskStatus.WAITING_HUMAN
    assert still.version == waiting.version  # nothing was written
    assert still.outputs == {}
    assert len(wrong_type.errors) == 1 and "object" in wrong_type.errors[0]
    assert resumed.status is TaskStatus.COMPLETED
    assert resumed.output == {"approved": True, "amount": 12.5}


def test_answer_formats_are_checked(make_engine, wfe_run):
    schema = {
        "type": "object",
        "properties": {"email": {"format": "email"}, "day": {"format": "date"}},
    }
    engine = make_engine()
    engine.register_workflow("w", [Phase("ask", assigned_to="human", input_schema=schema)])

    async def scenario():
        waiting = await submit_and_settle(engine)
        with pytest.raises(InvalidOutputError) as refused:
            await engine.resume(waiting.id, {"email": "not an address", "day": "yesterday"})
        return refused.value, await engine.resume(
            waiting.id, {"email": "ann@example.org", "day": "2026-11-26"}
        )

    refused, resumed = wfe_run(scenario())
    assert refused.errors == [
        "day: 'yesterday' is not a 'date'",
        "email: 'not an address' is not a 'email'",
    ]
    assert resumed.status is TaskStatus.COMPLETED


def test_date_time_answers_are_checked(make_engine, wfe_run):
    schema = {"type": "object", "properties": {"when": {"type": "string", "format": "date-time"}}}
    engine = make_engine()
    engine.register_workflow("w", [Phase("ask", assigned_to="human", input_schema=schema)])

    async def scenario():
        waiting = await submit_and_settle(engine)
        refused = []
        for when in ("next tuesday", "2026-12-01T09:00:00", "2026-02-30T09:00:00Z"):
            with pytest.raises(InvalidOutputError) as caught:
                await engine.resume(waiting.id, {"when": when})
            refused.append(caught.value.errors)
        return refused, await engine.resume(waiting.id, {"when": "2026-12-01T09:00:00Z"})

    refused, resumed = wfe_run(scenario())
    assert refused == [
        ["when: 'next tuesday' is not a 'date-time'"],
        ["when: '2026-12-01T09:00:00' is not a 'date-time'"],  # no offset
        ["when: '2026-02-30T09:00:00Z' is not a 'date-time'"],
    ]
    assert resumed.status is TaskStatus.COMPLETED
    assert resumed.output == {"when": "2026-12-01T09:00:00Z"}


_FORMAT_CHECK = """
import json, sys
if sys.argv[1] == "bare":  # as if jsonschema's optional format packages were missing
    for name in ("rfc3339_validator", "jsonpointer", "idna", "fqdn", "rfc3987",
                 "rfc3986_validator", "uri_template", "isoduration", "webcolors"):
        sys.modules[name] = None
from wfcore import Phase, WorkflowError
from wfcore.model import answer_validator
properties = {name: {"format": name} for name in (
    "date-time", "date", "email", "ipv4", "uuid", "time", "json-pointer", "hostname", "uri")}
validator = answer_validator({"type": "object", "properties": properties})
answer = dict.fromkeys(properties, "next tuesday")
refused = sorted(error.path[0] for error in validator.iter_errors(answer))
try:
    Phase("p", assigned_to="human", input_schema={"format": "date-time"},
          on_timeout={"output": "next tuesday"})
    default = "accepted"
except WorkflowError as exc:
    default = str(exc)
print(json.dumps([refused, default]))
"""


def test_which_answer_formats_are_checked_does_not_depend_on_installed_packages():
    """jsonschema's own checker gains formats with optional packages (date-time with
    rfc3339-validator): the engine checks a fixed set wherever it runs."""
    results = [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", _FORMAT_CHECK, setting],
                capture_output=True,
                text=True,
                check=True,
                timeout=60,
            ).stdout
        )
        for setting in ("bare", "installed")
    ]
    assert (
        results[0]
        == results[1]
        == [
            ["date", "date-time", "email", "ipv4", "uuid"],
            "phase.on_timeout.output: does not match input_schema: "
            "'next tuesday' is not a 'date-time'",
        ]
    )


def test_resuming_never_reruns_work_done_before_the_suspension(make_engine, wfe_run):
    engine = make_engine()
    calls: list[str] = []

    async def gather(task: Task) -> None:
        calls.append("gather")
        task.output = "facts"

    async def ask(task: Task) -> None:
        calls.append("ask")
        task.context["asked"] = True
        engine.suspend(task, reason="decide")

    async def act(task: Task) -> None:
        calls.append("act")
        task.output = f"acting on {task.outputs['decide']}"

    engine.register_handler("gather", gather)
    engine.register_handler("decide", ask)
    engine.register_handler("act", act)
    engine.register_workflow("w", [Phase("gather"), Phase("decide"), Phase("act")])

    async def scenario():
        waiting = await submit_and_settle(engine)
        await engine.resume(waiting.id, "go")
        await engine.run_until_idle()
        return waiting, await engine.get_task(waiting.id)

    waiting, done = wfe_run(scenario())
    assert waiting.status is TaskStatus.WAITING_HUMAN
    assert waiting.waiting_reason == "decide"
    assert done.status is TaskStatus.COMPLETED
    assert calls == ["gather", "ask", "act"]
    assert done.output == "acting on go"
    assert done.context == {"asked": True}


def deadline_workflow(engine: ECSWorkflowEngine, on_timeout: Any, timeout: float = 0.3) -> None:
    ran: list[str] = []

    async def record(task: Task) -> None:
        ran.append(task.classification)
        task.output = f"{task.classification} with {task.outputs.get('ask')!r}"

    engine.register_handler("after", record)
    engine.register_handler("escalate", record)
    engine.register_workflow(
        "w",
        [
            Phase(
                "ask",
                assigned_to="human",
                timeout=timeout,
                on_timeout=on_timeout,
                next_classifications=["after"],
            ),
            Phase("escalate", next_classifications=[]),
            Phase("after"),
        ],
    )


@pytest.mark.parametrize("on_timeout", [None, "fail"])
def test_deadline_fails_the_task_by_default(make_engine, wfe_run, on_timeout):
    engine = make_engine()
    deadline_workflow(engine, on_timeout)

    async def scenario():
        async with background(engine):
            task = await engine.submit_task(None, "w")
            waiting = await wait_for_status(engine, task.id, TaskStatus.WAITING_HUMAN)
            failed = await wait_for_status(engine, task.id, TaskStatus.FAILED, timeout=5)
        return waiting, failed

    waiting, failed = wfe_run(scenario())
    assert waiting.deadline is not None
    assert "deadline" in failed.error and "ask" in failed.error
    assert "deadline_passed" in events(failed)


def test_deadline_with_default_output_continues(make_engine, wfe_run):
    engine = make_engine()
    # A short deadline: the test waits for it to pass, not for the task to wait.
    deadline_workflow(engine, {"output": {"approved": False}}, timeout=0.1)

    async def scenario():
        async with background(engine):
            task = await engine.submit_task(None, "w")
            return await wait_for_status(engine, task.id, TaskStatus.COMPLETED, timeout=5)

    done = wfe_run(scenario())
    assert done.outputs["ask"] == {"approved": False}
    assert done.output == "after with {'approved': False}"
    assert "escalate" not in done.outputs


def test_deadline_with_goto_routes_there(make_engine, wfe_run):
    engine = make_engine()
    # A short deadline: the test waits for it to pass, not for the task to wait.
    deadline_workflow(engine, {"goto": "escalate"}, timeout=0.1)

    async def scenario():
        async with background(engine):
            task = await engine.submit_task(None, "w")
            return await wait_for_status(engine, task.id, TaskStatus.COMPLETED, timeout=5)

    done = wfe_run(scenario())
    assert set(done.outputs) == {"escalate"}
    assert done.output == "escalate with None"


def test_an_answer_before_the_deadline_clears_it(make_engine, wfe_run):
    engine = make_engine()
    deadline_workflow(engine, "fail", timeout=30)

    async def scenario():
        waiting = await submit_and_settle(engine)
        resumed = await engine.resume(waiting.id, "in time")
        await engine.run_until_idle()
        return waiting, resumed, await engine.get_task(waiting.id)

    waiting, resumed, done = wfe_run(scenario())
    assert waiting.deadline is not None
    assert resumed.deadline is None
    assert done.status is TaskStatus.COMPLETED
    assert done.output == "after with 'in time'"


def test_an_answer_after_the_deadline_is_refused_even_with_no_worker_running(make_engine, wfe_run):
    """Past the deadline, on_timeout decides; a late answer does not win just because
    no worker has applied the rule yet."""
    engine = make_engine()
    deadline_workflow(engine, {"goto": "escalate"}, timeout=0.2)

    async def scenario():
        waiting = await submit_and_settle(engine)
        while utcnow() <= waiting.deadline:  # no worker runs: the deadline just passes
            await asyncio.sleep(0.02)
        with pytest.raises(TaskStateError, match="past its deadline") as refused:
            await engine.resume(waiting.id, "too late")
        unchanged = await engine.get_task(waiting.id)
        await engine.run_until_idle()
        return str(refused.value), unchanged, await engine.get_task(waiting.id)

    message, unchanged, done = wfe_run(scenario())
    assert '{"goto": "escalate"}' in message
    assert unchanged.status is TaskStatus.WAITING_HUMAN
    assert done.status is TaskStatus.COMPLETED
    assert set(done.outputs) == {"escalate"}


def test_deadline_holds_across_a_restart(wfe_engine_factory, wfe_run):
    first = wfe_engine_factory()
    deadline_workflow(first, {"output": "nobody answered"}, timeout=0.5)

    async def suspend():
        return await submit_and_settle(first)

    waiting = wfe_run(suspend())
    assert waiting.status is TaskStatus.WAITING_HUMAN
    wfe_run(first.aclose())

    # The new engine knows the workflow from the store; only handlers are code.
    second = wfe_engine_factory()
    deadline_workflow(second, {"output": "nobody answered"}, timeout=0.5)

    async def resume_later():
        async with background(second):
            return await wait_for_status(second, waiting.id, TaskStatus.COMPLETED, timeout=5)

    done = wfe_run(resume_later())
    assert done.outputs["ask"] == "nobody answered"
    assert done.output == "after with 'nobody answered'"


def test_timeout_on_a_non_human_phase_limits_each_attempt(make_engine, wfe_run):
    engine = make_engine()
    attempts: list[int] = []

    async def slow_then_fast(task: Task) -> None:
        attempts.append(task.attempts)
        if task.attempts == 1:
            import asyncio

            await asyncio.sleep(60)
        task.output = "second try"

    engine.register_handler("work", slow_then_fast)
    engine.register_workflow("w", [Phase("work", timeout=0.3, max_attempts=2)])

    async def scenario():
        return await submit_and_settle(engine)

    done = wfe_run(scenario())
    assert done.status is TaskStatus.COMPLETED
    assert attempts == [1, 2]
    failures = [e for e in done.history if e["event"] == "attempt_failed"]
    assert len(failures) == 1 and "timed out" in failures[0]["error"]


def test_resume_by_another_engine_on_the_same_store(wfe_engine_factory, wfe_run):
    worker = wfe_engine_factory()
    front_end = wfe_engine_factory()
    finished: list[Any] = []

    async def finish(task: Task) -> None:
        finished.append(task.outputs["ask"])

    worker.register_handler("finish", finish)
    worker.register_workflow("w", [Phase("ask", assigned_to="human"), Phase("finish")])

    async def scenario():
        async with background(worker):
            task = await worker.submit_task(None, "w")
            await wait_for_status(worker, task.id, TaskStatus.WAITING_HUMAN)
            await front_end.resume(task.id, {"from": "front end"})
            return await wait_for_status(worker, task.id, TaskStatus.COMPLETED, timeout=5)

    done = wfe_run(scenario())
    assert finished == [{"from": "front end"}]
    assert done.outputs["ask"] == {"from": "front end"}


def test_a_human_phase_handler_that_takes_the_reply_itself_needs_one_answer(make_engine, wfe_run):
    engine = make_engine()

    async def greet(task: Task) -> None:
        if not task.resume_in_phase:
            engine.suspend(task, reason="Your name?", resume_in_phase=True)
        else:
            task.output = f"hello {task.reply}"

    engine.register_handler("greet", greet)
    engine.register_workflow("w", [Phase("greet", assigned_to="human")])

    async def scenario():
        waiting = await submit_and_settle(engine)
        await engine.resume(waiting.id, "Ann")
        await engine.run_until_idle()
        return waiting, await engine.get_task(waiting.id)

    waiting, done = wfe_run(scenario())
    assert waiting.waiting_reason == "Your name?"
    assert done.status is TaskStatus.COMPLETED
    assert done.output == "hello Ann"


def test_a_second_question_is_never_answered_by_the_first_answer(make_engine, wfe_run):
    """A handler asking in turn with resume_in_phase: after a cancel and retry while the
    second question waits, the rerun must ask it again, not take the first answer."""
    engine = make_engine()
    asked: list[str] = []

    def interview(task: Task) -> None:
        answers = task.context.setdefault("answers", [])
        if task.reply is not None:
            answers.append(task.reply)
        if len(answers) < 2:
            question = ["Which account?", "Approve paying 10,000 EUR?"][len(answers)]
            asked.append(question)
            engine.suspend(task, reason=question, resume_in_phase=True)
            return
        task.output = {"account": answers[0], "approved": answers[1]}

    engine.register_handler("interview", interview)
    engine.register_workflow("w", [Phase("interview", assigned_to="human")])

    async def scenario():
        first = await submit_and_settle(engine)
        await engine.resume(first.id, "account 7", phase="interview")
        await engine.run_until_idle()
        second = await engine.get_task(first.id)
        await engine.cancel(first.id)
        await engine.retry(first.id)
        await engine.run_until_idle()
        again = await engine.get_task(first.id)
        await engine.resume(first.id, "yes", phase="interview")
        await engine.run_until_idle()
        return second, again, await engine.get_task(first.id)

    second, again, done = wfe_run(scenario())
    assert second.waiting_reason == "Approve paying 10,000 EUR?"
    assert second.reply is None  # the first answer went with the first question
    assert again.status is TaskStatus.WAITING_HUMAN
    assert again.waiting_reason == "Approve paying 10,000 EUR?"
    assert asked == ["Which account?", "Approve paying 10,000 EUR?", "Approve paying 10,000 EUR?"]
    assert done.status is TaskStatus.COMPLETED
    assert done.output == {"account": "account 7", "approved": "yes"}


def test_an_answer_naming_its_phase_is_refused_once_the_task_moved_on(make_engine, wfe_run):
    """Two people see the legal question; one answers; the other's answer must not
    become the answer to the finance question that follows."""
    engine = make_engine()
    engine.register_workflow(
        "w", [Phase("legal", assigned_to="human"), Phase("finance", assigned_to="human")]
    )

    async def scenario():
        task = await submit_and_settle(engine)
        with pytest.raises(TaskStateError) as early:
            await engine.resume(task.id, {"approved": True}, phase="finance")
        await engine.resume(task.id, {"approved": True}, phase="legal")
        with pytest.raises(TaskStateError) as late:
            await engine.resume(task.id, {"approved": False}, phase="legal")
        await engine.run_until_idle()
        waiting = await engine.get_task(task.id)
        with pytest.raises(TaskStateError) as typo:
            await engine.resume(task.id, "ok", phase="financ")
        done = await engine.resume(task.id, "ok", phase="finance")
        return early.value, late.value, typo.value, waiting, done

    early, late, typo, waiting, done = wfe_run(scenario())
    assert str(early).endswith(
        "waits in phase 'legal' now, not 'finance': the answer was for a question it has "
        "not come to"
    )
    assert str(late).endswith(
        "is at phase 'finance' now, not 'legal': the answer was for a question it has moved past"
    )
    assert "workflow 'w' of task" in str(typo)
    assert "has no phase 'financ' (phases: legal, finance)" in str(typo)
    assert waiting.status is TaskStatus.WAITING_HUMAN and waiting.outputs == {
        "legal": {"approved": True}
    }
    assert done.status is TaskStatus.COMPLETED
    assert done.outputs == {"legal": {"approved": True}, "finance": "ok"}


def test_an_answer_naming_the_version_it_read_is_refused_once_the_task_changed(
    make_engine, wfe_run
):
    """A loop brings the task back to the same question: only the version read
    tells an answer to the earlier round from one to the new round."""
    engine = make_engine()

    async def fix(task: Task) -> None:
        task.output = "fixed"

    engine.register_handler("fix", fix)
    engine.register_workflow(
        "w",
        [
            Phase("review", assigned_to="human", next_classifications=["fix", "done"]),
            Phase("fix", assigned_to="functional", next_classifications=["review"]),
            Phase("done", assigned_to="functional", next_classifications=[]),
        ],
    )
    engine.register_handler("done", fix)

    async def scenario():
        first = await submit_and_settle(engine)
        # Both people read the question at this version; one sends it back for a fix.
        await engine.resume(first.id, "needs work", phase="review", version=first.version)
        await engine.run_until_idle()
        second = await engine.get_task(first.id)
        with pytest.raises(TaskStateError) as late:
            await engine.resume(first.id, "approved", phase="review", version=first.version)
        kept = await engine.get_task(first.id)
        done = await engine.resume(first.id, "approved", phase="review", version=second.version)
        return first, second, late.value, kept, done

    first, second, late, kept, done = wfe_run(scenario())
    assert second.classification == "review" and second.version > first.version
    assert f"has changed since version {first.version} was read" in str(late)
    assert kept.status is TaskStatus.WAITING_HUMAN and kept.version == second.version
    assert done.outputs["review"] == "approved"


def test_a_version_that_is_not_a_whole_number_is_a_type_error(make_engine, wfe_run):
    engine = make_engine()
    engine.register_workflow("w", [Phase("ask", assigned_to="human")])

    async def scenario():
        task = await submit_and_settle(engine)
        with pytest.raises(TypeError, match="version must be a whole number"):
            await engine.resume(task.id, "yes", version=str(task.version))
        return await engine.get_task(task.id)

    assert wfe_run(scenario()).status is TaskStatus.WAITING_HUMAN


def test_an_answer_for_a_phase_a_deployment_dropped_says_what_to_do(
    wfe_engine_factory, wfe_run, caplog
):
    old = wfe_engine_factory()
    old.register_workflow(
        "review", [Phase("legal", assigned_to="human"), Phase("done", assigned_to="human")]
    )

    async def wait_in_legal():
        task = await old.submit_task({}, "review")
        await old.run_until_idle()
        return task.id

    task_id = wfe_run(wait_in_legal())
    new = wfe_engine_factory()  # the next deployment, on the same store
    new.register_workflow("review", [Phase("done", assigned_to="human")])

    async def answer():
        with caplog.at_level("WARNING", logger="wfcore"):
            await new.get_store()  # stores the new definition, saying what it strands
        with pytest.raises(TaskStateError) as refused:
            await new.resume(task_id, {"ok": True})
        cancelled = await new.cancel(task_id)
        return str(refused.value), cancelled.status

    said, status = wfe_run(answer())
    assert said == (
        f"task {task_id!r} waits in phase 'legal', which workflow 'review' no longer has: "
        "no answer can go on from there. Put the phase back (a deployment that dropped it "
        "strands its waiting tasks), or cancel the task"
    )
    assert status is TaskStatus.CANCELLED
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        "workflow 'review': this app's definition has no phase 'legal', where unfinished "
        "tasks are (1 in 'legal'); they cannot go on: put the phases back, or cancel them "
        "(wfe tasks -w review)"
    ]


def test_a_refused_resume_or_cancel_says_which_task_and_its_status(make_engine, wfe_run):
    """A web app tells "someone else answered" from "already finished" by the status."""
    engine = make_engine()
    engine.register_workflow("w", [Phase("ask", assigned_to="human")])

    async def scenario():
        task = await engine.submit_task({}, "w")
        await engine.run_until_idle()
        await engine.resume(task.id, "yes")
        await engine.run_until_idle()
        refused = []
        for attempt in (engine.resume(task.id, "again"), engine.cancel(task.id)):
            with pytest.raises(TaskStateError) as caught:
                await attempt
            refused.append((caught.value.task_id, caught.value.status))
        return task.id, refused

    task_id, refused = wfe_run(scenario())
    assert refused == [(task_id, TaskStatus.COMPLETED)] * 2

"""Escalation to a person: ask_human suspends the task, resume continues the same conversation."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Any

import pytest
from wfe_openai import OpenAIAgentAdapter

from wfcore import ECSWorkflowEngine, Phase, Task, TaskStateError, TaskStatus, TaskType
from wfcore.wire import task_to_dict


def lookup_stock(item: str) -> dict[str, Any]:
    """Sizes in stock for an item."""
    return {"item": item, "sizes": ["S", "M"]}


PHASES = [Phase("order", assigned_to="agentic", instructions="Place the order.", max_attempts=2)]


def _submit_and_answer(
    engine: ECSWorkflowEngine, wfe_run: Any, workflow: str, *answers: Any
) -> Any:
    """Submit a task (no data) to ``workflow`` and run the engine until idle; then,
    for each answer, resume the task with it and run until idle again.

    Returns the stored task after each run: the first as it waits (or ended), the
    last as the last answer left it. An answer of None resumes without one.
    """

    async def scenario() -> list[Task]:
        task = await engine.submit_task({}, workflow)
        await engine.run_until_idle()
        states = [await engine.get_task(task.id)]
        for answer in answers:
            await engine.resume(task.id, answer)
            await engine.run_until_idle()
            states.append(await engine.get_task(task.id))
        return states

    return wfe_run(scenario())


def test_ask_human_suspends_and_resume_continues_after_a_restart(
    openai_server, wfe_engine_factory, wfe_run
):
    openai_server.tool_calls(
        ("lookup_stock", {"item": "t-shirt"}),
        ("ask_human", {"question": "Which size, S or M?"}),
        content="Let me check.",
    )

    first = wfe_engine_factory()
    first.register_workflow("shop", PHASES)
    first.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter(tools=[lookup_stock]))

    async def until_waiting() -> Any:
        task = await first.submit_task({"item": "t-shirt"}, "shop")
        await first.run_until_idle()
        task = await first.get_task(task.id)
        await first.aclose()
        return task

    waiting = wfe_run(until_waiting())
    assert waiting.status is TaskStatus.WAITING_HUMAN, waiting.error
    assert waiting.waiting_reason == "Which size, S or M?"
    asked = [e for e in waiting.history if e["event"] == "agent_asked_human"]
    assert [a["question"] for a in asked] == ["Which size, S or M?"]
    saved = waiting.context["openai"]["conversation"]
    assert saved["question"] == "Which size, S or M?"
    assert len(openai_server.requests) == 1

    # A new process: a new engine on the same file, a new adapter instance.
    openai_server.reply("Ordered one t-shirt in size M.")
    second = wfe_engine_factory()
    second.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter(tools=[lookup_stock]))

    async def answer() -> Any:
        await second.resume(waiting.id, "M, please")
        await second.run_until_idle()
        return await second.get_task(waiting.id)

    done = wfe_run(answer())
    assert done.status is TaskStatus.COMPLETED, done.error
    assert done.output == "Ordered one t-shirt in size M."
    # The model saw the whole conversation, the answer as the ask_human result.
    messages = openai_server.messages()
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "tool"]
    assert messages[0]["content"] == "Place the order."
    assert messages[1] == openai_server.messages(0)[1]
    assistant = messages[2]
    assert assistant["content"] == "Let me check."
    lookup_call, ask_call = assistant["tool_calls"]
    assert ask_call["function"] == {
        "name": "ask_human",
        "arguments": json.dumps({"question": "Which size, S or M?"}),
    }
    assert messages[3] == {
        "role": "tool",
        "tool_call_id": lookup_call["id"],
        "content": '{"item": "t-shirt", "sizes": ["S", "M"]}',
    }
    assert messages[4] == {"role": "tool", "tool_call_id": ask_call["id"], "content": "M, please"}
    assert [e["answer"] for e in done.history if e["event"] == "agent_resumed"] == ["M, please"]
    # The finished task no longer carries the conversation; the usage of both runs stays.
    assert "conversation" not in done.context["openai"]
    assert done.context["openai"]["usage"]["calls"] == 2


def test_a_second_question_and_a_structured_answer(openai_server, wfe_engine, wfe_run):
    openai_server.tool_calls(("ask_human", {"question": "Budget?"}))
    openai_server.tool_calls(("ask_human", {"question": "Deadline?"}))
    openai_server.reply("Plan: 100 EUR by Friday.")
    wfe_engine.register_workflow("plan", [Phase("plan", assigned_to="agentic")])
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter())

    first, second, done = _submit_and_answer(
        wfe_engine, wfe_run, "plan", {"amount": 100, "currency": "EUR"}, "Friday"
    )
    assert (first.status, first.waiting_reason) == (TaskStatus.WAITING_HUMAN, "Budget?")
    assert (second.status, second.waiting_reason) == (TaskStatus.WAITING_HUMAN, "Deadline?")
    assert done.status is TaskStatus.COMPLETED, done.error
    assert done.output == "Plan: 100 EUR by Friday."
    tool_results = [m["content"] for m in openai_server.messages() if m["role"] == "tool"]
    assert tool_results == ['{"amount": 100, "currency": "EUR"}', "Friday"]
    assert done.attempts == 0


def test_a_failed_attempt_after_the_answer_retries_from_the_same_point(
    openai_server, wfe_engine, wfe_run
):
    openai_server.tool_calls(("ask_human", {"question": "Go ahead?"}))
    openai_server.error(500, "model overloaded")
    openai_server.reply("Done.")
    wfe_engine.register_workflow("w", PHASES)
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter(max_retries=0))

    _, done = _submit_and_answer(wfe_engine, wfe_run, "w", "yes")
    assert done.status is TaskStatus.COMPLETED, done.error
    failed = [e["error"] for e in done.history if e["event"] == "attempt_failed"]
    assert len(failed) == 1 and "HTTP 500" in failed[0]
    # The retry sent exactly what the failed attempt sent: the answer once, nothing lost.
    assert openai_server.messages(1) == openai_server.messages(2)
    assert [m["role"] for m in openai_server.messages(2)] == ["system", "user", "assistant", "tool"]
    assert openai_server.messages(2)[-1]["content"] == "yes"


def test_without_escalation_ask_human_is_not_offered(openai_server, wfe_engine, wfe_run):
    openai_server.reply("fine")
    wfe_engine.register_workflow("w", [Phase("p", assigned_to="agentic")])
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter(allow_human=False))

    [done] = _submit_and_answer(wfe_engine, wfe_run, "w")
    assert done.status is TaskStatus.COMPLETED
    assert "tools" not in openai_server.requests[0]["body"]


def test_the_waiting_task_shows_the_question_in_its_json(openai_server, wfe_engine, wfe_run):
    openai_server.tool_calls(("ask_human", {"question": "Approve the refund of 30 EUR?"}))
    wfe_engine.register_workflow("w", [Phase("p", assigned_to="agentic")])
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter())

    async def scenario() -> Any:
        await wfe_engine.submit_task({}, "w")
        await wfe_engine.run_until_idle()
        return await wfe_engine.list_tasks(status="waiting_human")

    [task] = wfe_run(scenario())
    doc = task_to_dict(task)
    assert doc["status"] == "waiting_human"
    assert doc["waiting_reason"] == "Approve the refund of 30 EUR?"
    assert doc["resume_in_phase"] is True


def test_retrying_a_cancelled_wait_asks_the_person_again(openai_server, wfe_engine, wfe_run):
    openai_server.tool_calls(("ask_human", {"question": "Approve the refund of 30 EUR?"}))
    openai_server.reply("Refunded 30 EUR.")
    wfe_engine.register_workflow("w", [Phase("decide", assigned_to="agentic")])
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter())

    async def scenario() -> list[Any]:
        task = await wfe_engine.submit_task({}, "w")
        await wfe_engine.run_until_idle()
        await wfe_engine.cancel(task.id)
        await wfe_engine.retry(task.id)  # what the dashboard's Retry button does
        await wfe_engine.run_until_idle()
        again = await wfe_engine.get_task(task.id)
        calls_while_waiting = len(openai_server.requests)
        await wfe_engine.resume(task.id, "Yes, approved.")
        await wfe_engine.run_until_idle()
        return [again, calls_while_waiting, await wfe_engine.get_task(task.id)]

    again, calls_while_waiting, done = wfe_run(scenario())
    # Nobody answered: the task waits for the same question, and the model was not called.
    assert again.status is TaskStatus.WAITING_HUMAN, again.error
    assert again.waiting_reason == "Approve the refund of 30 EUR?"
    assert calls_while_waiting == 1
    assert [e["event"] for e in again.history if e["event"].startswith("agent_")] == [
        "agent_asked_human",
        "agent_asked_human",
    ]
    # The person's answer, when it comes, is the only one the model ever gets.
    assert done.status is TaskStatus.COMPLETED, done.error
    assert done.output == "Refunded 30 EUR."
    assert [m["content"] for m in openai_server.messages() if m["role"] == "tool"] == [
        "Yes, approved."
    ]
    assert [e["answer"] for e in done.history if e["event"] == "agent_resumed"] == [
        "Yes, approved."
    ]


def test_retrying_a_failed_run_after_the_answer_keeps_the_answer(
    openai_server, wfe_engine, wfe_run
):
    openai_server.tool_calls(("ask_human", {"question": "Go ahead?"}))
    openai_server.error(500, "model overloaded")
    openai_server.reply("Done.")
    wfe_engine.register_workflow("w", [Phase("p", assigned_to="agentic")])
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter(max_retries=0))

    async def scenario() -> list[Any]:
        task = await wfe_engine.submit_task({}, "w")
        await wfe_engine.run_until_idle()
        await wfe_engine.resume(task.id, "yes")
        await wfe_engine.run_until_idle()
        failed = await wfe_engine.get_task(task.id)
        await wfe_engine.retry(task.id)
        await wfe_engine.run_until_idle()
        return [failed, await wfe_engine.get_task(task.id)]

    failed, done = wfe_run(scenario())
    assert failed.status is TaskStatus.FAILED
    assert done.status is TaskStatus.COMPLETED, done.error
    assert done.output == "Done."
    assert openai_server.messages(2)[-1] == openai_server.messages(1)[-1]
    assert openai_server.messages(2)[-1]["content"] == "yes"


def test_a_resume_without_an_answer_reaches_the_model(openai_server, wfe_engine, wfe_run):
    openai_server.tool_calls(("ask_human", {"question": "Anything to add?"}))
    openai_server.reply("Nothing added.")
    wfe_engine.register_workflow("w", [Phase("p", assigned_to="agentic")])
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter())

    # A person chose to go on without an answer.
    _, done = _submit_and_answer(wfe_engine, wfe_run, "w", None)
    assert done.status is TaskStatus.COMPLETED, done.error
    assert openai_server.messages()[-1]["content"] == "(no answer)"


def test_ask_human_with_arguments_sent_as_an_object(openai_server, wfe_engine, wfe_run):
    openai_server.raw_tool_calls(
        {"type": "function", "function": {"name": "ask_human", "arguments": ["Size?"]}},
    )
    openai_server.raw_tool_calls(
        {"type": "function", "function": {"name": "ask_human", "arguments": {"question": "Size?"}}},
    )
    openai_server.reply("Ordered size M.")
    wfe_engine.register_workflow("shop", PHASES)
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter())

    waiting, done = _submit_and_answer(wfe_engine, wfe_run, "shop", "M")
    # Arguments that are not an object went back to the model as an error, in the same attempt.
    assert waiting.status is TaskStatus.WAITING_HUMAN, waiting.error
    assert waiting.waiting_reason == "Size?"
    assert not [e for e in waiting.history if e["event"] == "attempt_failed"]
    assert openai_server.messages(1)[-1]["content"] == (
        "error: invalid arguments for ask_human: arguments must be a JSON object, not an array; "
        "the call's arguments were '[\"Size?\"]'"
    )
    assert done.status is TaskStatus.COMPLETED, done.error
    # The answer is the result of the call that asked, whose generated id was kept.
    messages = openai_server.messages()
    asked = messages[-2]["tool_calls"][0]
    assert asked["function"] == {"name": "ask_human", "arguments": '{"question": "Size?"}'}
    assert messages[-1] == {"role": "tool", "tool_call_id": asked["id"], "content": "M"}
    assert asked["id"] and asked["id"] != messages[-4]["tool_calls"][0]["id"]


def test_retrying_a_cancelled_wait_for_a_second_question_asks_it_again(
    openai_server, wfe_engine, wfe_run
):
    """The answer to the first question must never be taken for the answer to the
    second: nobody approved the payment."""
    openai_server.tool_calls(("ask_human", {"question": "Q1: Which account?"}))
    openai_server.tool_calls(("ask_human", {"question": "Q2: Approve paying 10,000 EUR?"}))
    openai_server.reply("paid")
    wfe_engine.register_workflow("w", [Phase("pay", assigned_to="agentic")])
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter())

    async def scenario() -> list[Any]:
        task = await wfe_engine.submit_task({}, "w")
        await wfe_engine.run_until_idle()
        await wfe_engine.resume(task.id, "account 7")
        await wfe_engine.run_until_idle()
        second = await wfe_engine.get_task(task.id)
        await wfe_engine.cancel(task.id)
        await wfe_engine.retry(task.id)
        await wfe_engine.run_until_idle()
        again = await wfe_engine.get_task(task.id)
        calls_while_waiting = len(openai_server.requests)
        await wfe_engine.resume(task.id, "Yes, approved.")
        await wfe_engine.run_until_idle()
        return [second, again, calls_while_waiting, await wfe_engine.get_task(task.id)]

    second, again, calls_while_waiting, done = wfe_run(scenario())
    assert second.waiting_reason == "Q2: Approve paying 10,000 EUR?"
    assert again.status is TaskStatus.WAITING_HUMAN, again.error
    assert again.waiting_reason == "Q2: Approve paying 10,000 EUR?"
    assert again.output is None
    assert calls_while_waiting == 2
    assert done.status is TaskStatus.COMPLETED, done.error
    tool_results = [m["content"] for m in openai_server.messages() if m["role"] == "tool"]
    assert tool_results == ["account 7", "Yes, approved."]
    assert [e["answer"] for e in done.history if e["event"] == "agent_resumed"] == [
        "account 7",
        "Yes, approved.",
    ]


def test_an_unanswered_question_meets_the_phase_timeout_and_on_timeout_applies(
    openai_server, wfe_engine, wfe_run
):
    """The phase's timeout is the deadline of the wait for a person, as for a human
    phase; then on_timeout decides, and no late answer is taken."""
    openai_server.tool_calls(("ask_human", {"question": "Approve the refund of 30 EUR?"}))
    phase = Phase("decide", assigned_to="agentic", timeout=1, on_timeout={"output": "not approved"})
    wfe_engine.register_workflow("w", [phase, Phase("after", assigned_to="functional")])
    wfe_engine.register_handler("after", lambda task: None)
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter())

    async def scenario() -> list[Any]:
        task = await wfe_engine.submit_task({}, "w")
        await wfe_engine.run_until_idle()
        waiting = await wfe_engine.get_task(task.id)
        running = asyncio.ensure_future(wfe_engine.run())
        try:
            done = await wfe_engine.wait_for_task(task.id, timeout=30)
        finally:
            wfe_engine.stop()
            await running
        try:
            await wfe_engine.resume(task.id, "Yes")
        except TaskStateError as exc:
            late = str(exc)
        return [waiting, done, late]

    waiting, done, late = wfe_run(scenario())
    assert waiting.status is TaskStatus.WAITING_HUMAN
    assert waiting.deadline is not None
    [suspended] = [e for e in waiting.history if e["event"] == "suspended"]
    assert suspended["deadline"] == waiting.deadline.isoformat()
    assert done.status is TaskStatus.COMPLETED, done.error
    assert done.outputs["decide"] == "not approved"
    assert [e["event"] for e in done.history if e["event"] == "deadline_passed"] == [
        "deadline_passed"
    ]
    assert (
        "conversation" not in done.context["openai"]
        or done.context["openai"]["conversation"]["question"] == "Approve the refund of 30 EUR?"
    )
    assert "is COMPLETED, not waiting" in late
    assert len(openai_server.requests) == 1  # the model was not asked again


def test_refused_questions_are_recorded_with_the_reason(openai_server, wfe_engine, wfe_run):
    openai_server.tool_calls(
        ("ask_human", {"question": "Which size?"}),
        ("ask_human", {"question": "Which colour?"}),
        ("ask_human", {"q": "Gift wrap?"}),
    )
    wfe_engine.register_workflow("shop", PHASES)
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter())

    [waiting] = _submit_and_answer(wfe_engine, wfe_run, "shop")

    assert waiting.waiting_reason == "Which size?"
    call_ids = [
        c["id"] for c in waiting.context["openai"]["conversation"]["messages"][-3]["tool_calls"]
    ]
    second, third = call_ids[1:]
    calls = [e for e in waiting.history if e["event"] == "agent_tool_call"]
    assert [(c["tool"], c["call_id"], c["arguments"]) for c in calls] == [
        ("ask_human", second, '{"question": "Which colour?"}'),
        ("ask_human", third, '{"q": "Gift wrap?"}'),
    ]
    results = [e for e in waiting.history if e["event"] == "agent_tool_result"]
    assert [(r["call_id"], r["error"], r["result"]) for r in results] == [
        (second, True, "error: only one question at a time: ask again after the answer"),
        (
            third,
            True,
            "error: invalid arguments for ask_human: (arguments): 'question' is a required "
            "property",
        ),
    ]
    # What the model is told is what the history says.
    tool_messages = waiting.context["openai"]["conversation"]["messages"][-2:]
    assert [m["content"] for m in tool_messages] == [r["result"] for r in results]


def test_a_blank_question_goes_back_to_the_model(openai_server, wfe_engine, wfe_run):
    """A person shown no question cannot answer it: the model is told to ask one."""
    openai_server.tool_calls(("ask_human", {"question": " \n "}))
    openai_server.ask_human("Which size, S or M?")
    wfe_engine.register_workflow("shop", PHASES)
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter())

    [waiting] = _submit_and_answer(wfe_engine, wfe_run, "shop")

    assert waiting.status is TaskStatus.WAITING_HUMAN, waiting.error
    assert waiting.waiting_reason == "Which size, S or M?"
    refusal = (
        "error: invalid arguments for ask_human: question: it is blank; ask a question "
        "a person can answer on its own"
    )
    assert openai_server.messages(1)[-1]["content"] == refusal
    results = [e for e in waiting.history if e["event"] == "agent_tool_result"]
    assert [(r["tool"], r["error"], r["result"]) for r in results] == [("ask_human", True, refusal)]
    asked = [e["question"] for e in waiting.history if e["event"] == "agent_asked_human"]
    assert asked == ["Which size, S or M?"]


def test_each_call_names_its_attempt(openai_server, wfe_engine, wfe_run):
    openai_server.reply("a reply cut o", finish_reason="length")
    openai_server.reply("fine")
    wfe_engine.register_workflow("w", PHASES)
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter())

    [done] = _submit_and_answer(wfe_engine, wfe_run, "w")

    assert done.status is TaskStatus.COMPLETED, done.error
    # Both attempts' calls, each step 1, told apart by their attempt; both counted.
    assert [(c["attempt"], c["step"]) for c in done.context["openai"]["calls"]] == [
        (1, 1),
        (2, 1),
    ]
    assert done.context["openai"]["usage"]["calls"] == 2


def test_steps_count_on_after_an_answer_and_from_1_in_a_new_attempt(
    openai_server, wfe_engine, wfe_run
):
    """(phase, attempt, step) names one call: the run after a person's answer is the
    same attempt, and numbers its calls on; the attempt after a failure starts at 1."""
    openai_server.tool_calls(("lookup_stock", {"item": "cap"}))
    openai_server.ask_human("Which size?")
    openai_server.reply("a reply cut o", finish_reason="length")
    openai_server.reply("Ordered.")
    wfe_engine.register_workflow("w", PHASES)
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter(tools=[lookup_stock]))

    _, done = _submit_and_answer(wfe_engine, wfe_run, "w", "M")

    assert done.status is TaskStatus.COMPLETED, done.error
    calls = [(c["phase"], c["attempt"], c["step"]) for c in done.context["openai"]["calls"]]
    assert calls == [("order", 1, 1), ("order", 1, 2), ("order", 1, 3), ("order", 2, 1)]
    assert done.context["openai"]["usage"]["calls"] == 4


def test_a_long_answer_is_cut_for_the_model_and_kept_whole(openai_server, wfe_engine, wfe_run):
    """As a tool result is: a pasted document must not fill the model's context."""
    openai_server.ask_human("Paste the contract.")
    openai_server.reply("Summarised.")
    seen: list[Any] = []

    def shape(task, request):
        if request.resumed:
            seen.append(task.reply)

    wfe_engine.register_handler("p", shape)
    wfe_engine.register_workflow("w", [Phase("p", assigned_to="agentic")])
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter(max_item_chars=50))
    answer = "clause " * 30

    _, done = _submit_and_answer(wfe_engine, wfe_run, "w", answer)

    assert done.status is TaskStatus.COMPLETED, done.error
    cut = answer[:50] + "\n[cut: showing the first 50 characters of 210 characters]"
    assert openai_server.messages()[-1]["content"] == cut
    # The answer itself is kept whole.
    assert seen == [answer]
    [resumed] = [e for e in done.history if e["event"] == "agent_resumed"]
    assert resumed["answer"] == answer


def _seconds_after(event: dict[str, Any], deadline: Any) -> float:
    """Seconds from a history event to a task's deadline."""
    return (deadline - datetime.fromisoformat(event["at"])).total_seconds()


def test_answer_timeout_is_the_deadline_of_the_wait_not_the_phase_timeout(
    openai_server, wfe_engine, wfe_run
):
    """Two minutes of model time, a day for the person to answer."""
    openai_server.tool_calls(("ask_human", {"question": "Approve the refund of 30 EUR?"}))
    phase = Phase("decide", assigned_to="agentic", timeout=120, on_timeout={"output": "no"})
    wfe_engine.register_workflow("w", [phase])
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter(answer_timeout=86400))

    [waiting] = _submit_and_answer(wfe_engine, wfe_run, "w")
    assert waiting.status is TaskStatus.WAITING_HUMAN, waiting.error
    [suspended] = [e for e in waiting.history if e["event"] == "suspended"]
    assert suspended["deadline"] == waiting.deadline.isoformat()
    # The deadline is set as the task is suspended: a day after the event (whose
    # time is to the millisecond), not the phase's two minutes.
    assert abs(_seconds_after(suspended, waiting.deadline) - 86400) < 60


@pytest.mark.parametrize(
    "settings",
    [
        {},
        # None in phase_options takes the phase back to its timeout.
        {"answer_timeout": 600, "phase_options": {"decide": {"answer_timeout": None}}},
    ],
    ids=["default", "phase_options-None"],
)
def test_without_answer_timeout_the_phase_timeout_stays_the_deadline(
    openai_server, wfe_engine, wfe_run, settings
):
    openai_server.tool_calls(("ask_human", {"question": "Approve?"}))
    wfe_engine.register_workflow("w", [Phase("decide", assigned_to="agentic", timeout=3600)])
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter(**settings))

    [waiting] = _submit_and_answer(wfe_engine, wfe_run, "w")
    assert waiting.status is TaskStatus.WAITING_HUMAN, waiting.error
    [suspended] = [e for e in waiting.history if e["event"] == "suspended"]
    assert abs(_seconds_after(suspended, waiting.deadline) - 3600) < 60


def test_an_unanswered_question_meets_answer_timeout_and_on_timeout_applies(
    openai_server, wfe_engine, wfe_run
):
    """The phase's hour-long timeout does not delay the on_timeout of a 1 s answer_timeout."""
    openai_server.tool_calls(("ask_human", {"question": "Approve the refund of 30 EUR?"}))
    phase = Phase(
        "decide", assigned_to="agentic", timeout=3600, on_timeout={"output": "not approved"}
    )
    wfe_engine.register_workflow("w", [phase, Phase("after", assigned_to="functional")])
    wfe_engine.register_handler("after", lambda task: None)
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter(answer_timeout=1))

    async def scenario() -> Any:
        task = await wfe_engine.submit_task({}, "w")
        await wfe_engine.run_until_idle()
        running = asyncio.ensure_future(wfe_engine.run())
        try:
            return await wfe_engine.wait_for_task(task.id, timeout=30)
        finally:
            wfe_engine.stop()
            await running

    done = wfe_run(scenario())
    assert done.status is TaskStatus.COMPLETED, done.error
    assert done.outputs["decide"] == "not approved"
    assert [e["on_timeout"] for e in done.history if e["event"] == "deadline_passed"] == [
        {"output": "not approved"}
    ]
    assert len(openai_server.requests) == 1


def test_phase_options_answer_timeout_wins_over_the_adapters_and_is_not_sent(
    openai_server, wfe_engine, wfe_run
):
    openai_server.tool_calls(("ask_human", {"question": "Which account?"}))
    openai_server.reply("account 7 it is")
    openai_server.tool_calls(("ask_human", {"question": "Approve paying 10,000 EUR?"}))
    wfe_engine.register_workflow(
        "w",
        [Phase("prepare", assigned_to="agentic"), Phase("decide", assigned_to="agentic")],
    )
    adapter = OpenAIAgentAdapter(
        answer_timeout=600, temperature=0, phase_options={"decide": {"answer_timeout": 86400}}
    )
    wfe_engine.register_adapter(TaskType.AGENTIC, adapter)

    # prepare asks (the adapter's 600 s); its answer completes it; decide asks (a day).
    first, second = _submit_and_answer(wfe_engine, wfe_run, "w", "account 7")
    assert (first.status, first.classification) == (TaskStatus.WAITING_HUMAN, "prepare")
    assert (second.status, second.classification) == (TaskStatus.WAITING_HUMAN, "decide")
    first_wait = [e for e in first.history if e["event"] == "suspended"][-1]
    second_wait = [e for e in second.history if e["event"] == "suspended"][-1]
    assert abs(_seconds_after(first_wait, first.deadline) - 600) < 60
    assert abs(_seconds_after(second_wait, second.deadline) - 86400) < 60
    # Neither value reached the server; the other options did.
    bodies = [r["body"] for r in openai_server.requests]
    assert len(bodies) == 3
    assert all("answer_timeout" not in body for body in bodies)
    assert all(body["temperature"] == 0 for body in bodies)


@pytest.mark.parametrize(
    ("value", "error", "problem"),
    [
        (True, TypeError, "must be a number of seconds (or None: the phase's timeout), not True"),
        (
            "86400",
            TypeError,
            "must be a number of seconds (or None: the phase's timeout), not '86400'",
        ),
        (0, ValueError, "must be a number of seconds > 0 and at most 10 years"),
        (-5, ValueError, "not -5"),
        (float("inf"), ValueError, "not inf"),
        (float("nan"), ValueError, "not nan"),
        (11 * 366 * 86400, ValueError, "at most 10 years"),
    ],
)
def test_a_bad_answer_timeout_is_refused_naming_it(value, error, problem):
    with pytest.raises(error) as adapter_wide:
        OpenAIAgentAdapter(answer_timeout=value)
    assert str(adapter_wide.value).startswith("answer_timeout must be")
    assert problem in str(adapter_wide.value)
    with pytest.raises(error) as for_a_phase:
        OpenAIAgentAdapter(phase_options={"decide": {"answer_timeout": value}})
    assert str(for_a_phase.value).startswith("phase_options['decide'] answer_timeout must be")
    assert problem in str(for_a_phase.value)


def test_a_handler_cannot_send_answer_timeout_to_the_api(openai_server, wfe_engine, wfe_run):
    """request.options go to the API: answer_timeout there is refused, not sent."""
    wfe_engine.register_workflow("w", [Phase("decide", assigned_to="agentic", max_attempts=1)])
    wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter())

    def shape(task, request):
        request.options["answer_timeout"] = 86400

    wfe_engine.register_handler("decide", shape)

    [failed] = _submit_and_answer(wfe_engine, wfe_run, "w")
    assert failed.status is TaskStatus.FAILED
    assert "request.options answer_timeout cannot be set" in failed.error
    assert openai_server.requests == []

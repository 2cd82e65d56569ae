"""Escalation to a person: the built-in ask_human tool, and the task waiting for the answer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wfcore import Task, TaskStatus

from .tools import Tool

if TYPE_CHECKING:
    from wfcore import ECSWorkflowEngine

__all__ = ["ASK_HUMAN", "HUMAN_TOOL"]

#: The name of the built-in tool through which the model asks a person.
ASK_HUMAN = "ask_human"


def _ask_human(question: str) -> str:
    raise AssertionError("ask_human is handled by the adapter, never called")


HUMAN_TOOL = Tool(
    _ask_human,
    name=ASK_HUMAN,
    description=(
        "Ask a person a question and wait for their answer. Use it when you need "
        "information, a decision or an approval that only a person can give. The "
        "question must be complete and understandable on its own."
    ),
    parameters={
        "type": "object",
        "properties": {"question": {"type": "string", "description": "The question to ask."}},
        "required": ["question"],
    },
)


def _wait_for_person(
    task: Task,
    engine: ECSWorkflowEngine,
    conversation: dict[str, Any],
    deadline: float | None,
    repeated: bool = False,
) -> None:
    """Suspend the task until a person answers the conversation's pending question.

    ``deadline``: seconds to wait at most (the adapter's ``answer_timeout``, else the
    phase's ``timeout``; None: no deadline); then wfcore applies the phase's
    ``on_timeout``, as for a human phase.
    """
    question = conversation["question"]
    details = {"repeated": True} if repeated else {}
    task.record(
        "agent_asked_human",
        phase=conversation["phase"],
        question=question,
        call_id=conversation["pending_call_id"],
        **details,
    )
    engine.suspend(
        task, TaskStatus.WAITING_HUMAN, reason=question, deadline=deadline, resume_in_phase=True
    )


def _answered_since_asked(task: Task) -> bool:
    """True if the task was resumed after its last question, even with no answer.

    ``engine.resume(task_id)`` without an answer is a person's choice (and reaches the
    model as "(no answer)"); a retry of a cancelled wait is not an answer.
    """
    for event in reversed(task.history):
        if event.get("event") == "resumed":
            return True
        if event.get("event") == "agent_asked_human":
            return False
    return False

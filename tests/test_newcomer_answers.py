"""A person's answers as a new user gives them: refused answers read as JSON."""

from __future__ import annotations

import pytest

from wfcore import Phase, TaskStatus
from wfcore.errors import InvalidOutputError

SCHEMA = {
    "type": "object",
    "required": ["approved"],
    "properties": {
        "approved": {"type": "boolean"},
        "approver": {"type": "string"},
        "tags": {"type": "array", "maxItems": 1},
    },
}


def test_a_refused_answer_names_its_values_as_json(wfe_engine_factory, wfe_run) -> None:
    """The answer is JSON (wfe resume --output, the dashboard's API), so a refusal
    quotes it as JSON: an answer left out is null, not Python's None; true, not True.
    Strings keep their quotes, as the README shows them ('yes')."""
    engine = wfe_engine_factory()
    engine.register_workflow("w", [Phase("approve", assigned_to="human", input_schema=SCHEMA)])
    answers = [
        None,  # wfe resume ID without --output or --text
        True,
        {"approved": None},
        {"approved": "yes", "approver": False, "tags": [None, {"a": True}]},
    ]

    async def scenario() -> list[list[str]]:
        task = await engine.submit_task({}, "w")
        await engine.run_until_idle()
        refused = []
        for answer in answers:
            with pytest.raises(InvalidOutputError) as caught:
                await engine.resume(task.id, answer)
            refused.append(caught.value.errors)
        stored = await engine.get_task(task.id)
        assert stored is not None and stored.status is TaskStatus.WAITING_HUMAN
        return refused

    assert wfe_run(scenario()) == [
        ["(answer): null is not of type 'object'"],
        ["(answer): true is not of type 'object'"],
        ["approved: null is not of type 'boolean'"],
        [
            "approved: 'yes' is not of type 'boolean'",
            "approver: false is not of type 'string'",
            'tags: [null, {"a": true}] is too long',
        ],
    ]

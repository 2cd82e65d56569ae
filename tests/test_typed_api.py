"""The typed public API as a library user meets it: the wire converter on every
model class, registered workflows that stay as validated, precise types."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs
import cattrs
import pytest

from wfcore import (
    Artifact,
    InvalidWorkflowError,
    Phase,
    Task,
    TaskStatus,
    WorkflowSpec,
)
from wfcore.wire import converter, task_to_dict, workflow_from_dict, workflow_to_dict

# -- the wire converter ----------------------------------------------------------------

PHASE = Phase(
    "approve",
    next_classifications=["a", "b"],
    assigned_to="human",
    instructions="Check it",
    input_schema={"type": "object", "properties": {"ok": {"type": "boolean"}}},
    timeout=60,
    on_timeout={"goto": "a"},
    max_attempts=3,
)
SPEC = WorkflowSpec(
    "flow",
    [PHASE, Phase("a", on_timeout="fail"), Phase("b", command=["echo", "hi"])],
    description="d",
)


def _task() -> Task:
    now = datetime.now(timezone.utc)
    return Task(
        data={"x": "é<b>"},
        workflow_name="flow",
        classification="approve",
        assigned_to="human",
        status=TaskStatus.WAITING_HUMAN,
        context={"k": [1, 2]},
        artifacts=[Artifact("r.txt", 3, "abc", "text/plain", phase="approve", path="/x")],
        output={"o": 1},
        outputs={"approve": 1},
        deadline=now + timedelta(hours=1),
        run_after=now,
        reply="r",
        resume_in_phase=True,
        version=7,
        history=[{"at": now.isoformat(), "event": "submitted"}],
    )


def _fields(task: Task) -> dict[str, Any]:
    # Task compares by identity (eq=False): compare what it holds.
    return {f.name: getattr(task, f.name) for f in attrs.fields(Task)}


@pytest.mark.parametrize(
    "obj", [PHASE, SPEC, SPEC.phases[2], Artifact("a.bin", 0, "00", "application/octet-stream")]
)
def test_the_converter_round_trips_phases_workflows_and_artifacts(obj: Any) -> None:
    cls = type(obj)
    assert converter.structure(converter.unstructure(obj), cls) == obj
    # ... through JSON text too, as the stores, Kafka and the dashboard carry it.
    text = json.dumps(converter.unstructure(obj))
    assert converter.structure(json.loads(text), cls) == obj


def test_the_converter_reads_what_workflow_to_dict_writes() -> None:
    doc = json.loads(json.dumps(workflow_to_dict(SPEC)))
    assert converter.structure(doc, WorkflowSpec) == SPEC
    assert workflow_from_dict(doc) == SPEC


def test_the_converter_round_trips_a_task() -> None:
    task = _task()
    back = converter.structure(json.loads(json.dumps(converter.unstructure(task))), Task)
    assert _fields(back) == _fields(task)
    back = converter.structure(json.loads(json.dumps(task_to_dict(task, internal=True))), Task)
    assert _fields(back) == _fields(task)


@attrs.frozen
class _Request:
    """An app's own request model, holding wfcore's classes."""

    spec: WorkflowSpec
    extra: list[Phase]


def test_an_apps_own_model_nests_workflows_and_phases() -> None:
    request = _Request(SPEC, [Phase("x"), PHASE])
    doc = json.loads(json.dumps(converter.unstructure(request)))
    assert converter.structure(doc, _Request) == request


def test_the_converter_validates_as_workflow_from_dict_does() -> None:
    doc = workflow_to_dict(SPEC)
    doc["phases"][1]["next_classifications"] = ["nowhere"]
    with pytest.raises(
        InvalidWorkflowError, match=r"phases\[1\]\.next_classifications: unknown classification"
    ):
        converter.structure(doc, WorkflowSpec)
    with pytest.raises(InvalidWorkflowError, match=r"^phase\.colour: unknown field"):
        converter.structure({"target_classification": "p", "colour": "red"}, Phase)
    # Nested in an app's model, cattrs collects the error under the field's name.
    with pytest.raises(cattrs.ClassValidationError) as caught:
        converter.structure({"spec": doc, "extra": []}, _Request)
    [error] = caught.value.exceptions
    assert isinstance(error, InvalidWorkflowError)

"""The JSON wire format of tasks and workflows: one cattrs converter for every consumer.

The CLI, the stores, Kafka and the dashboard all go through these functions. Every
document carries ``"format": FORMAT_VERSION``; a document without one is read as
the current version.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import cattrs

from .errors import InvalidTaskError, InvalidWorkflowError
from .model import Phase, Task, TaskStatus, TaskType, WorkflowSpec

__all__ = [
    "FORMAT_VERSION",
    "converter",
    "dumps",
    "task_from_dict",
    "task_to_dict",
    "workflow_from_dict",
    "workflow_to_dict",
]

#: The version of the JSON format written by this release.
FORMAT_VERSION = 1

converter = cattrs.Converter(omit_if_default=False)
converter.register_unstructure_hook(datetime, lambda d: d.isoformat())
converter.register_structure_hook(datetime, lambda v, _: datetime.fromisoformat(v))
converter.register_unstructure_hook(TaskStatus, lambda s: s.value)
converter.register_structure_hook(TaskStatus, lambda v, _: TaskStatus.parse(v))
converter.register_unstructure_hook(TaskType, lambda t: t.value)
converter.register_structure_hook(TaskType, lambda v, _: TaskType.parse(v))
converter.register_structure_hook(Any, lambda v, _: v)

# Fields that only the engine and its store use; they stay out of the wire format.
_INTERNAL_TASK_FIELDS = ("version",)


def dumps(obj: Any) -> str:
    """JSON text for a value already unstructured (dicts, lists, scalars)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def task_to_dict(task: Task, *, internal: bool = False) -> dict[str, Any]:
    """The task as a JSON-ready dict with a ``format`` field."""
    doc = converter.unstructure(task)
    if not internal:
        for name in _INTERNAL_TASK_FIELDS:
            doc.pop(name, None)
    doc["format"] = FORMAT_VERSION
    return doc


def task_from_dict(doc: dict[str, Any]) -> Task:
    """A task from its dict form; unknown keys are ignored, missing ones defaulted."""
    if not isinstance(doc, dict):
        raise InvalidTaskError("a task must be a JSON object")
    _check_format(doc, InvalidTaskError)
    fields = {k: v for k, v in doc.items() if k in _TASK_FIELDS}
    try:
        return converter.structure(fields, Task)
    except InvalidTaskError:
        raise
    except Exception as exc:
        raise InvalidTaskError(f"not a valid task: {_describe(exc)}") from None


def workflow_to_dict(spec: WorkflowSpec) -> dict[str, Any]:
    """The workflow as a JSON-ready dict with a ``format`` field."""
    doc = converter.unstructure(spec)
    doc["format"] = FORMAT_VERSION
    return doc


def workflow_from_dict(doc: Any) -> WorkflowSpec:
    """Validate and build a WorkflowSpec; errors name the bad or missing field."""
    if not isinstance(doc, dict):
        raise InvalidWorkflowError("a workflow spec must be a JSON object")
    _check_format(doc, InvalidWorkflowError)
    unknown = sorted(set(doc) - {"name", "phases", "input", "description", "format"})
    if unknown:
        raise InvalidWorkflowError(f"{unknown[0]}: unknown field")
    if "name" not in doc:
        raise InvalidWorkflowError("name: missing")
    if "phases" not in doc:
        raise InvalidWorkflowError("phases: missing")
    if not isinstance(doc["phases"], list):
        raise InvalidWorkflowError("phases: must be a list of phases")
    phases = [_phase_from_dict(p, f"phases[{i}]") for i, p in enumerate(doc["phases"])]
    return WorkflowSpec(
        name=doc["name"],
        phases=phases,
        input=doc.get("input"),
        description=doc.get("description"),
    )


_PHASE_FIELDS = frozenset(
    {
        "target_classification",
        "next_classifications",
        "assigned_to",
        "command",
        "instructions",
        "input_schema",
        "timeout",
        "on_timeout",
        "max_attempts",
    }
)
_TASK_FIELDS = frozenset(a.name for a in Task.__attrs_attrs__)


def _phase_from_dict(doc: Any, where: str) -> Phase:
    if not isinstance(doc, dict):
        raise InvalidWorkflowError(f"{where}: must be an object")
    unknown = sorted(set(doc) - _PHASE_FIELDS)
    if unknown:
        raise InvalidWorkflowError(f"{where}.{unknown[0]}: unknown field")
    if "target_classification" not in doc:
        raise InvalidWorkflowError(f"{where}.target_classification: missing")
    if doc.get("instructions") is not None and not isinstance(doc["instructions"], str):
        raise InvalidWorkflowError(f"{where}.instructions: must be a string")
    try:
        assigned = doc.get("assigned_to")
        if assigned is not None:
            TaskType.parse(assigned)
    except InvalidTaskError as exc:
        raise InvalidWorkflowError(f"{where}.assigned_to: {exc}") from None
    try:
        return Phase(**doc)
    except InvalidWorkflowError as exc:
        # Re-anchor "phase.x: ..." messages at their place in the spec.
        message = str(exc)
        if message.startswith("phase."):
            message = where + message[len("phase") :]
        raise InvalidWorkflowError(message) from None


def _check_format(doc: dict[str, Any], error: type[Exception]) -> None:
    version = doc.get("format", FORMAT_VERSION)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise error(f"format {version!r} is newer than this wfcore understands ({FORMAT_VERSION})")


def _describe(exc: Exception) -> str:
    if isinstance(exc, cattrs.ClassValidationError):
        parts = cattrs.transform_error(exc)
        return "; ".join(parts)
    return str(exc)

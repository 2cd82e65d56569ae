"""The JSON wire format of tasks and workflows: one cattrs converter for every consumer.

The CLI, the stores, Kafka and the dashboard all go through these functions. Every
document carries ``"format": FORMAT_VERSION``; a document without one is read as
the current version.
"""

from __future__ import annotations

import difflib
import json
import json.encoder as json_encoder
import math
from datetime import datetime, timezone
from typing import Any

import cattrs
from cattrs.gen import make_dict_unstructure_fn, override

from .errors import InvalidTaskError, InvalidWorkflowError
from .model import Artifact, Phase, Task, TaskStatus, TaskType, WorkflowSpec, priority_problem

__all__ = [
    "FORMAT_VERSION",
    "MAX_JSON_DEPTH",
    "MAX_TASK_ID_BYTES",
    "check_task_id",
    "converter",
    "dumps",
    "is_unicode_text",
    "json_kind",
    "json_problem",
    "parse_time",
    "printable",
    "task_body",
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
# By predicate: Any is not a class, and functools.singledispatch (which cattrs
# registers classes with) refuses it on Python 3.10.
converter.register_structure_hook_func(lambda t: t is Any, lambda v, _: v)
# A phase without a limit or permanent exit codes is written without those fields,
# as releases before them wrote every phase: their workers can still read this
# release's workflows.
converter.register_unstructure_hook(
    Phase,
    make_dict_unstructure_fn(
        Phase,
        converter,
        max_concurrency=override(omit_if_default=True),
        permanent_exit_codes=override(omit_if_default=True),
    ),
)


# Task fields a store's document may leave out when they hold their default.
_OMITTABLE: tuple[tuple[str, Any], ...] = (
    ("context", {}),
    ("artifacts", []),
    ("output", None),
    ("outputs", {}),
    ("error", None),
    ("traceback", None),
    ("next_classification", None),
    ("waiting_reason", None),
    ("deadline", None),
    ("reply", None),
    ("resume_in_phase", False),
    ("run_after", None),
    ("priority", 0),
    ("parent_id", None),
    ("children", []),
    ("waiting_for", None),
)


def task_body(task: Task, *, sparse: bool = False) -> dict[str, Any]:
    """The task's fields as JSON-ready values, except its status, version, history
    and times: what a store keeps in one document beside columns of its own.

    ``sparse`` leaves out fields at their defaults (the task reads back the same,
    and a smaller document is quicker to encode and decode).
    """
    # Written out rather than generated: tasks are encoded on every state change,
    # and their data, context, outputs and history already hold plain JSON values
    # (the engine checks them), so they pass through without a recursive walk.
    doc = {
        "id": task.id,
        "data": task.data,
        "workflow_name": task.workflow_name,
        "classification": task.classification,
        "assigned_to": task.assigned_to.value,
        "context": task.context,
        "artifacts": [_unstructure_artifact(a) for a in task.artifacts],
        "output": task.output,
        "outputs": task.outputs,
        "error": task.error,
        "traceback": task.traceback,
        "attempts": task.attempts,
        "next_classification": task.next_classification,
        "waiting_reason": task.waiting_reason,
        "deadline": None if task.deadline is None else task.deadline.isoformat(),
        "reply": task.reply,
        "resume_in_phase": task.resume_in_phase,
        "run_after": None if task.run_after is None else task.run_after.isoformat(),
        "priority": task.priority,
        "parent_id": task.parent_id,
        "children": task.children,
        "waiting_for": task.waiting_for,
    }
    if sparse:
        for name, default in _OMITTABLE:
            value = doc[name]
            # "is" first: most defaults are None; False must not match 0.
            if value is default or (type(value) is type(default) and value == default):
                del doc[name]
    return doc


def _unstructure_task(task: Task) -> dict[str, Any]:
    doc = task_body(task)
    doc["status"] = task.status.value
    doc["history"] = task.history
    doc["created_at"] = task.created_at.isoformat()
    doc["updated_at"] = task.updated_at.isoformat()
    doc["version"] = task.version
    return doc


def _unstructure_artifact(art: Artifact) -> dict[str, Any]:
    return {
        "name": art.name,
        "size": art.size,
        "sha256": art.sha256,
        "media_type": art.media_type,
        "phase": art.phase,
        "path": art.path,
        "created_at": art.created_at.isoformat(),
    }


# The kind each task field read back must be, where a wrong one would not fail
# at once but later, in a worker (``attempts`` of "2" fails the next attempt's
# count, an ``id`` of 5 no store row): a document edited by hand reads as damaged.
_FIELD_KINDS: tuple[tuple[str, type | tuple[type, ...], str], ...] = (
    ("id", str, "text"),
    ("workflow_name", (str, type(None)), "text or null"),
    ("classification", (str, type(None)), "text or null"),
    ("next_classification", (str, type(None)), "text or null"),
    ("waiting_reason", (str, type(None)), "text or null"),
    ("error", (str, type(None)), "text or null"),
    ("traceback", (str, type(None)), "text or null"),
    ("context", dict, "an object"),
    ("outputs", dict, "an object"),
    ("artifacts", list, "an array"),
    ("history", list, "an array"),
    ("resume_in_phase", bool, "true or false"),
    ("parent_id", (str, type(None)), "text or null"),
    ("children", list, "an array"),
    ("waiting_for", (list, type(None)), "an array or null"),
)


def _check_field_kinds(fields: dict[str, Any]) -> None:
    for name, kind, what in _FIELD_KINDS:
        if name in fields and not isinstance(fields[name], kind):
            raise InvalidTaskError(f"not a valid task: {name} must be {what}, not {fields[name]!r}")
    for name in ("attempts", "version"):
        value = fields.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidTaskError(
                f"not a valid task: {name} must be a whole number, 0 or more, not {value!r}"
            )
    problem = priority_problem(fields.get("priority", 0))
    if problem is not None:
        raise InvalidTaskError(f"not a valid task: priority {problem}")


def _structure_task(doc: dict[str, Any], _: Any = None) -> Task:
    fields = dict(doc)
    for name in fields.keys() - _TASK_FIELDS:
        del fields[name]
    _check_field_kinds(fields)
    for name in ("created_at", "updated_at", "deadline", "run_after"):
        value = fields.get(name)
        if value is not None:
            fields[name] = datetime.fromisoformat(value)
    if "artifacts" in fields:
        fields["artifacts"] = [_structure_artifact(a) for a in fields["artifacts"]]
    return Task(**fields)


def _structure_artifact(doc: dict[str, Any], _: Any = None) -> Artifact:
    fields = dict(doc)
    if fields.get("created_at") is not None:
        fields["created_at"] = datetime.fromisoformat(fields["created_at"])
    return Artifact(**fields)


converter.register_unstructure_hook(Task, _unstructure_task)
converter.register_structure_hook(Task, _structure_task)
converter.register_structure_hook(Artifact, _structure_artifact)
converter.register_unstructure_hook(Artifact, _unstructure_artifact)

# Fields that only the engine and its store use; they stay out of the wire format.
_INTERNAL_TASK_FIELDS = ("version",)


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _not_json(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _make_fast_encoder() -> Any:
    # The C encoder json.dumps builds afresh on every call, built once, without
    # the circular-reference bookkeeping: stores encode on every state change.
    # The C accelerator's names are not in typeshed's stubs of json.encoder.
    make_encoder = getattr(json_encoder, "c_make_encoder", None)
    if make_encoder is None:  # pragma: no cover (no C accelerator)
        return None
    encode_string = getattr(json_encoder, "c_encode_basestring")  # noqa: B009
    return make_encoder(None, _not_json, encode_string, None, ":", ",", False, False, False)


_FAST_ENCODER = _make_fast_encoder()


def dumps(obj: Any) -> str:
    """Compact JSON text for plain values; NaN and infinities are refused (not JSON).

    Raises TypeError or ValueError (NaN, a circular reference) for what is not JSON.
    """
    text = _encode(obj)
    if not text.isascii():
        problem = _text_problem(text)
        if problem is not None:
            raise ValueError(problem)
    return text


def _encode(obj: Any) -> str:
    if _FAST_ENCODER is None:  # pragma: no cover
        return _ENCODER.encode(obj)
    try:
        return "".join(_FAST_ENCODER(obj, 0))
    except RecursionError:
        pass
    # A cycle, or absurdly deep nesting: the checking encoder says which.
    try:
        return _ENCODER.encode(obj)
    except RecursionError:
        raise ValueError(f"it is nested deeper than {MAX_JSON_DEPTH} levels") from None


def parse_time(text: str) -> datetime:
    """An ISO 8601 time with a UTC offset (``2026-12-01T09:00:00+01:00``, or ``Z``
    for UTC) as an aware datetime in UTC; ValueError, saying what is expected,
    for anything else. A time without an offset is refused: it would mean a
    different moment on every machine."""
    example = "e.g. 2026-12-01T09:00:00+01:00 or 2026-12-01T08:00:00Z"
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise ValueError(f"{text[:60]!r} is not an ISO 8601 time with a UTC offset ({example})")
    try:
        return when.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError(
            f"{text[:60]!r} is out of range (in UTC it is before year 1 or after year 9999)"
        ) from None


def refuse_json_constant(name: str) -> Any:
    """``parse_constant`` for :func:`json.loads`: NaN and Infinity, which Python reads
    and JSON does not have, raise ValueError naming them."""
    raise ValueError(f"{name} is not a JSON number")


def finite_json_float(text: str) -> float:
    """``parse_float`` for :func:`json.loads`: ValueError for a number past a float's
    range (``1e999``), which Python would read as infinity."""
    number = float(text)
    if math.isinf(number):
        raise ValueError(f"the number {text[:40]} is too large")
    return number


def object_without_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` for :func:`json.loads`: ValueError for a key given twice
    in one object, where json.loads would keep the last value and drop the other
    without a word."""
    made = dict(pairs)
    if len(made) < len(pairs):
        keys = [key for key, _ in pairs]
        repeated = next(key for i, key in enumerate(keys) if key in keys[:i])
        raise ValueError(f"the key {repeated!r} is given twice in one object")
    return made


def is_unicode_text(text: str) -> bool:
    """False for a string holding a lone surrogate (from a bad decode, or from an
    argument or file name in another encoding): it cannot be written as UTF-8."""
    return text.isascii() or _text_problem(text) is None


MAX_TASK_ID_BYTES = 200
"""The longest task id, in UTF-8 bytes: an id names its task's artifact folder."""


def check_task_id(task_id: object) -> None:
    """Raise InvalidTaskError, naming the problem, for what cannot be a task id.

    An id is a non-empty string of printable Unicode text, at most
    :data:`MAX_TASK_ID_BYTES` bytes, without blanks around it, without ``/`` or
    ``\\``, and not ``.`` or ``..`` (it names the task's artifact folder). This is
    the check ``submit_task`` makes; a plugin that takes tasks from elsewhere (a
    topic, a queue) can make it before accepting a message.
    """
    if not isinstance(task_id, str) or not task_id.strip():
        raise InvalidTaskError("task_id must be a non-empty string")
    if not is_unicode_text(task_id):
        raise InvalidTaskError(
            f"task_id {task_id!r} is not Unicode text (an argument in another encoding?)"
        )
    if "/" in task_id or "\\" in task_id or task_id in (".", ".."):
        raise InvalidTaskError(
            f"task_id {task_id!r} may not contain '/' or '\\', or be '.' or '..'"
        )
    if not task_id.isprintable():
        raise InvalidTaskError(f"task_id {task_id!r} may not contain control characters")
    if task_id != task_id.strip():
        # Ids are compared exactly: ' order-17' would be another task than 'order-17'.
        raise InvalidTaskError(f"task_id {task_id!r} may not start or end with blanks")
    if len(task_id.encode("utf-8")) > MAX_TASK_ID_BYTES:
        raise InvalidTaskError(
            f"task_id {task_id[:40]!r}... is too long (at most {MAX_TASK_ID_BYTES} bytes)"
        )


def _text_problem(text: str) -> str | None:
    """Why ``text`` is not valid Unicode (a lone surrogate, e.g. from a bad decode)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        around = text[max(0, exc.start - 20) : exc.end + 20]
        return f"a string holds a lone surrogate {text[exc.start]!r}, not Unicode text: {around!r}"
    return None


# Always valid JSON, so not worth encoding to check (floats may be NaN: they are).
_JSON_SCALARS = frozenset({str, int, bool, type(None)})


def json_problem(value: Any) -> str | None:
    """Why ``value`` cannot be stored as JSON (by :func:`dumps`), or None."""
    kind = type(value)
    if kind is str:
        return None if value.isascii() else _text_problem(value)
    if kind is int and value.bit_length() >= _PLAIN_INT_BITS:
        return _encoding_problem(value)
    if kind in _JSON_SCALARS:
        return None
    # Typical task data and context (a few fields, a dict or two deep) need no
    # encoding either: looking at their types is several times faster.
    if (kind is dict or kind is list) and _small_and_plain(value):
        return None
    problem = _encoding_problem(value)
    if problem is None and isinstance(value, (dict, list, tuple)):
        return _shape_problem(value, MAX_JSON_DEPTH)
    return problem


# Whole numbers this long may have more digits than Python turns into text (4,300 by
# default): they are encoded to find out.
_PLAIN_INT_BITS = 10_000


def _encoding_problem(value: Any) -> str | None:
    """Why :func:`dumps` fails on ``value``, or None."""
    try:
        dumps(value)
    except (TypeError, ValueError) as exc:
        if "integer string conversion" in str(exc):
            # Python's own advice (sys.set_int_max_str_digits) is for the program.
            return "a whole number has more digits than Python turns into text (4,300)"
        return str(exc)
    return None


def _small_and_plain(value: dict[Any, Any] | list[Any]) -> bool:
    """True for a dict or list of at most 64 values in all, nested or not, that are
    ASCII strings, whole or finite numbers, booleans and nulls: JSON for sure.
    False says only "encode it to find out" (a cycle ends here, at the budget)."""
    budget = 64
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is dict:
            for key in item:
                if type(key) is not str or not key.isascii():
                    return False
            children: Any = item.values()
        else:
            children = item
        budget -= len(children)
        if budget < 0:
            return False
        for child in children:
            kind = type(child)
            if kind is str:
                if not child.isascii():
                    return False
            elif kind is dict or kind is list:
                stack.append(child)
            elif kind is float:
                if not math.isfinite(child):
                    return False
            elif kind is int:
                if child.bit_length() >= _PLAIN_INT_BITS:
                    return False
            elif kind not in _JSON_SCALARS:
                return False
    return True


MAX_JSON_DEPTH = 200
"""How deep task data, context and outputs may nest (objects in arrays in ...): more
is refused. Deeper values would exhaust Python's stack in code that walks them."""


def _shape_problem(value: dict[Any, Any] | list[Any] | tuple[Any, ...], limit: int) -> str | None:
    """Why an encodable ``value`` would not come back from JSON as it is: dicts and
    lists nested more than ``limit`` levels, or a dict whose keys are one in JSON
    (``1`` and ``"1"``: JSON keeps one of their values). Walked without recursion."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            if set(map(type, item)) - {str}:
                problem = _colliding_keys(item)
                if problem is not None:
                    return problem
            children: Any = item.values()
        else:
            children = item
        for child in children:
            if isinstance(child, (dict, list, tuple)):
                if depth >= limit:
                    return f"it is nested deeper than {limit} levels"
                stack.append((child, depth + 1))
    return None


def _colliding_keys(mapping: dict[Any, Any]) -> str | None:
    """Two keys of ``mapping`` that JSON writes alike (an int and its digits as a
    string, ``None`` and ``"null"``), or None."""
    seen: dict[str, Any] = {}
    for key in mapping:
        text = key if isinstance(key, str) else dumps(key)
        if text in seen:
            return (
                f"an object has the keys {seen[text]!r} and {key!r}, which are both "
                f"{text!r} in JSON: one of their values would be lost"
            )
        seen[text] = key
    return None


def json_kind(value: Any) -> str:
    """What a decoded JSON value is, in JSON's words ("an array", "null", ...), for
    error messages that people writing JSON in any language understand."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def printable(value: Any) -> Any:
    """``value`` with everything that is not JSON replaced by its ``repr`` (and what
    is not Unicode text by ``?``)."""
    try:
        text = json.dumps(value, default=repr, ensure_ascii=False)
    except (ValueError, RecursionError):  # a cycle, or nesting too deep
        text = json.dumps(repr(value)[:10_000], ensure_ascii=False)
    return json.loads(text.encode("utf-8", "replace").decode("utf-8"))


def task_to_dict(task: Task, *, internal: bool = False) -> dict[str, Any]:
    """The task as a JSON-ready dict with a ``format`` field."""
    doc = _unstructure_task(task)
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
    try:
        return _structure_task(doc)
    except InvalidTaskError:
        raise
    except Exception as exc:
        raise InvalidTaskError(f"not a valid task: {_describe(exc)}") from None


def workflow_to_dict(spec: WorkflowSpec) -> dict[str, Any]:
    """The workflow as a JSON-ready dict with a ``format`` field."""
    doc: dict[str, Any] = converter.unstructure(spec)
    doc["format"] = FORMAT_VERSION
    return doc


def workflow_from_dict(doc: Any) -> WorkflowSpec:
    """Validate and build a WorkflowSpec; errors name the bad or missing field."""
    if not isinstance(doc, dict):
        raise InvalidWorkflowError("a workflow spec must be a JSON object")
    _check_format(doc, InvalidWorkflowError)
    unknown = sorted(set(doc) - _SPEC_FIELDS)
    if unknown:
        raise InvalidWorkflowError(_unknown_field(unknown[0], _SPEC_FIELDS))
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
        start_phases=doc.get("start_phases"),
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
        "max_concurrency",
        "permanent_exit_codes",
    }
)
_TASK_FIELDS = frozenset(a.name for a in Task.__attrs_attrs__)
_SPEC_FIELDS = frozenset({"name", "phases", "input", "description", "start_phases", "format"})


def _unknown_field(name: str, known: frozenset[str]) -> str:
    """``classification: unknown field (did you mean target_classification?)``."""
    # A word of it first, as "classification" is of "target_classification".
    close = [field for field in sorted(known) if name in field.split("_")][:1]
    close = close or difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f"{name}: unknown field" + (f" (did you mean {close[0]}?)" if close else "")


def _phase_from_dict(doc: Any, where: str) -> Phase:
    if not isinstance(doc, dict):
        raise InvalidWorkflowError(f"{where}: must be an object")
    unknown = sorted(set(doc) - _PHASE_FIELDS)
    if unknown:
        raise InvalidWorkflowError(f"{where}.{_unknown_field(unknown[0], _PHASE_FIELDS)}")
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


# Phases and workflows are structured by the functions above, so that the
# converter (in an app's own attrs model, say) checks them as workflow_from_dict
# does, and reads on_timeout's "fail" | {...} union, which cattrs cannot on its own.
converter.register_structure_hook(Phase, lambda doc, _: _phase_from_dict(doc, "phase"))
converter.register_structure_hook(WorkflowSpec, lambda doc, _: workflow_from_dict(doc))


def _check_format(doc: dict[str, Any], error: type[Exception]) -> None:
    version = doc.get("format", FORMAT_VERSION)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise error(f"format {version!r} is newer than this wfcore understands ({FORMAT_VERSION})")


def _describe(exc: Exception) -> str:
    if isinstance(exc, cattrs.ClassValidationError):
        parts = cattrs.transform_error(exc)
        return "; ".join(parts)
    return str(exc)

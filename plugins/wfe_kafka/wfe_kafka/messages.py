"""The Kafka message formats: task messages in, results, lifecycle events and dead letters out.

Every JSON document carries ``"format"`` (:data:`wfcore.wire.FORMAT_VERSION`); a
task message without one is read as the current version. Results are the
task in wfcore's wire format (:func:`wfcore.wire.task_to_dict`), so any consumer
can rebuild it with :func:`wfcore.wire.task_from_dict`.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import json.encoder as json_encoder
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from wfcore import DEFINE_WORKFLOW, Phase, Task, TaskStatus
from wfcore.model import MAX_PRIORITY, MIN_PRIORITY, priority_problem, utcnow
from wfcore.wire import (
    FORMAT_VERSION,
    MAX_JSON_DEPTH,
    dumps,
    finite_json_float,
    json_kind,
    json_problem,
    parse_time,
    refuse_json_constant,
    task_to_dict,
)

__all__ = [
    "FORMAT_VERSION",
    "RESULT_HISTORY_KEPT",
    "TASK_FIELDS",
    "BadMessage",
    "IdInUse",
    "dead_letter_headers",
    "event_message",
    "event_without_bulk",
    "message_digest",
    "parse_task_message",
    "result_message",
    "result_with_recent_history",
    "result_without_bulk",
    "source_id",
    "task_message",
]

#: The fields a task message may carry. A worker ignores others (so that producers
#: may add their own, and a field a later format adds does not stop an older
#: worker), naming each once in its log; publish_task() refuses them, as it would
#: drop them.
TASK_FIELDS = (
    "format",
    "id",
    "workflow_name",
    "data",
    "classification",
    "assigned_to",
    "run_after",
    "priority",
)

_TASK_FIELD_SET = frozenset(TASK_FIELDS)

_OPTIONAL_STRINGS = ("id", "classification", "assigned_to")


class BadMessage(ValueError):
    """A message that can never become a task: not JSON, not a task, or a newer format."""


class IdInUse(BadMessage):
    """A message naming the id of a stored task that came from another message."""


def _dumps(doc: Any) -> bytes:
    return dumps(doc).encode("utf-8")


def parse_task_message(value: bytes | None) -> dict[str, Any]:
    """Decode a task message into ``workflow_name``, ``data``, ``id``, ``classification``,
    ``assigned_to`` and ``run_after`` (a datetime; missing optional fields are None),
    ``priority`` (an int, 0 when missing), and ``ignored``: the names of its other
    fields, which are not read.

    A field that is null is read as absent, whichever it is (producers such as
    Jackson write nulls for the fields they have no value for). The workflow's
    existence, the id's shape and the task type are checked later by
    ``engine.submit_task``. Raises :class:`BadMessage` naming the problem.
    """
    if value is None:
        raise BadMessage("no value (null): not a task message")
    if not value:
        raise BadMessage("empty value (0 bytes): not a task message")
    text = _utf8_text(value)
    try:
        doc = _decode(text)
    except BadMessage:
        raise
    except ValueError as exc:
        raise BadMessage(f"not valid JSON: {exc}") from None
    except RecursionError:
        # Deeper than Python's stack allows, so also deeper than the engine takes
        # (wfcore.wire.MAX_JSON_DEPTH): the same words as the engine's refusal.
        raise BadMessage(f"not a task: it is nested deeper than {MAX_JSON_DEPTH} levels") from None
    if not isinstance(doc, dict):
        raise BadMessage(f"not a task: expected a JSON object, got {json_kind(doc)}")
    if b"\\u" in value:
        # A \uXXXX escape may stand for half of a surrogate pair, which decodes
        # to a str no store can encode: refused here, it cannot stall a batch.
        _check_unicode(doc)
    # Null is absent, for every field alike.
    if None in doc.values():
        doc = {name: field for name, field in doc.items() if field is not None}
    _read_format(doc.get("format", FORMAT_VERSION))
    for name in _OPTIONAL_STRINGS:
        if doc.get(name) is not None and not isinstance(doc[name], str):
            raise BadMessage(f"{name}: must be a string, got {json_kind(doc[name])}")
    if doc.get("id") == "":
        # Not read as "no id": a producer that meant one would get a task it cannot find.
        raise BadMessage("id: must not be empty (leave it out to use <topic>-<partition>-<offset>)")
    workflow = doc.get("workflow_name")
    if workflow is None and doc.get("classification") != DEFINE_WORKFLOW:
        # The dashboard's JSON API calls the field "workflow"; the message does not.
        hint = " (did you mean workflow_name?)" if "workflow" in doc else ""
        raise BadMessage(f"not a task: workflow_name is missing{hint}")
    if workflow is not None and (not isinstance(workflow, str) or not workflow):
        raise BadMessage("workflow_name: must be a non-empty string")
    return {
        "workflow_name": workflow,
        "data": doc.get("data"),
        "id": doc.get("id"),
        "classification": doc.get("classification"),
        "assigned_to": doc.get("assigned_to"),
        "run_after": _start_time(doc.get("run_after")),
        "priority": _priority(doc["priority"]) if "priority" in doc else 0,
        "ignored": (
            [] if _TASK_FIELD_SET.issuperset(doc) else [n for n in doc if n not in _TASK_FIELD_SET]
        ),
    }


def _read_format(version: Any) -> int:
    """A task message's ``format``, if a worker of this version can read it (raises
    BadMessage naming the problem)."""
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise BadMessage(f"format: must be a positive integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise BadMessage(
            f"format {version} is newer than this worker understands ({FORMAT_VERSION})"
        )
    return version


def _check_format_to_send(version: Any) -> None:
    """Refuse a ``format`` other than the one this version writes (None is absent).

    A message says the format it is written in, and task_message() writes only
    :data:`FORMAT_VERSION`: sending a dict that asks for another as that one would
    rewrite what its producer said.
    """
    if version is None or (type(version) is int and version == FORMAT_VERSION):
        return
    try:
        _read_format(version)
    except BadMessage as exc:
        # The consumer's own words, so that both sides name the problem alike.
        worker = f" (a worker of this version would dead-letter it: {exc})"
    else:
        worker = ""
    raise ValueError(
        f"format: this version of wfe_kafka writes format {FORMAT_VERSION}, not "
        f"{version!r}{worker}; leave format out to send format {FORMAT_VERSION}"
    )


#: Byte order marks, longest first (UTF-32-LE's begins with UTF-16-LE's).
_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF8, "UTF-8"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)
_BOM_STARTS = frozenset(bom[0] for bom, _ in _BOMS)


def _utf8_text(value: bytes) -> str:
    """A task message's value as text, strictly UTF-8 (raises BadMessage).

    Python's json would also read UTF-16 and UTF-32 (by their byte order mark or
    the zero bytes of their ASCII characters), skip a UTF-8 byte order mark, and
    take a surrogate written as three UTF-8 bytes: other readers of the topic may
    not, and no store can keep a surrogate.
    """
    for bom, encoding in _BOMS if value and value[0] in _BOM_STARTS else ():
        if value.startswith(bom):
            fix = "send it without one" if encoding == "UTF-8" else "send UTF-8"
            raise BadMessage(
                f"not UTF-8 text: it starts with a {encoding} byte order mark "
                f"({bom.hex(' ')}); {fix}"
            )
    # JSON starts with an ASCII character, which UTF-16 and UTF-32 write with zero
    # bytes (the pattern json.detect_encoding looks for).
    head = value[:4]
    if len(head) == 4 and (head[0] == 0 or head[1] == 0):
        if head[0] == 0:
            encoding = "UTF-16-BE" if head[1] else "UTF-32-BE"
        else:
            encoding = "UTF-16-LE" if head[2] or head[3] else "UTF-32-LE"
        raise BadMessage(
            f"not UTF-8 text: it looks like {encoding} (zero bytes beside its ASCII "
            "characters); send UTF-8"
        )
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = value[exc.start : exc.start + 3]
        if len(bad) == 3 and bad[0] == 0xED and 0xA0 <= bad[1] <= 0xBF:
            raise BadMessage(
                f"not UTF-8 text: the bytes {bad.hex(' ')} at position {exc.start} are a "
                "UTF-16 surrogate, not a character (CESU-8 or Java's modified UTF-8); "
                "UTF-8 writes a character beyond U+FFFF as one 4-byte sequence"
            ) from None
        raise BadMessage(
            f"not UTF-8 text: byte 0x{value[exc.start]:02x} at position {exc.start} ({exc.reason})"
        ) from None


def _start_time(value: Any) -> datetime | None:
    """``run_after``: an ISO 8601 time with a UTC offset (a time without one would
    mean a different moment on every machine)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadMessage(f"run_after: must be an ISO 8601 time string, got {json_kind(value)}")
    try:
        return parse_time(value)
    except ValueError as exc:
        raise BadMessage(f"run_after: {exc}") from None


def _priority(value: Any) -> int:
    """``priority``: an integer from MIN_PRIORITY to MAX_PRIORITY, as submit_task
    takes it (not a boolean, nor a number with a fraction point, such as 5.0)."""
    if priority_problem(value) is None:
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        raise BadMessage(f"priority: must be from {MIN_PRIORITY} to {MAX_PRIORITY}, got {value}")
    shown = json.dumps(value, ensure_ascii=False)
    shown = shown if len(shown) <= 40 else f"{shown[:40]}..."
    raise BadMessage(
        f"priority: must be an integer from {MIN_PRIORITY} to {MAX_PRIORITY}, "
        f"got {json_kind(value)} ({shown})"
    )


# Their ValueErrors become BadMessage("not valid JSON: ...") where messages are decoded.
_TASK_DECODER = json.JSONDecoder(parse_constant=refuse_json_constant, parse_float=finite_json_float)
# The scanner decode() runs (set by JSONDecoder.__init__; not in typeshed's stubs).
_TASK_SCAN = getattr(_TASK_DECODER, "scan_once")  # noqa: B009


def _decode(text: str) -> Any:
    """``_TASK_DECODER.decode(text)``, in half the time for a message that is one
    JSON value with no whitespace around it, as producers write them: decode()
    runs the same scanner after matching whitespace before and after it.
    Anything else (whitespace around it, a problem to report) goes through
    decode(), which says what is wrong in its own words."""
    try:
        doc, end = _TASK_SCAN(text, 0)
    except (StopIteration, ValueError):
        end = -1
    if end != len(text):
        doc = _TASK_DECODER.decode(text)
    return doc


def _check_unicode(doc: Any) -> None:
    try:
        json.dumps(doc, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = exc.object[exc.start : exc.end]
        raise BadMessage(
            f"not a task: {bad.encode('unicode_escape').decode()} is an unpaired UTF-16 "
            "surrogate, not a character"
        ) from None


def message_digest(message: Mapping[str, Any]) -> str:
    """The SHA-256 (hex) of what a parsed task message asks for: its workflow_name,
    data and classification.

    Kept in ``task.context["kafka"]["digest"]`` when the task is stored, so that the
    same message sent again is recognised after the task changed its own data (a
    handler's ``task.data[...] = ...``, a ``define_workflow`` task rebound to the
    workflow it defined).
    """
    canonical = _digest_text(
        [message.get("workflow_name"), message.get("data"), message.get("classification")]
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# Made once rather than at every message (json.loads and json.dumps with arguments
# build a decoder or encoder per call): the very same settings, the same output.
_DIGEST_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _make_digest_encoder() -> Any:
    # JSONEncoder.encode builds this C encoder afresh at every call, with a dict
    # to detect cycles: built once, without it (a cycle, which no parsed message
    # has, ends in a RecursionError, and _digest_text asks _DIGEST_ENCODER then).
    # The C accelerator's names are not in typeshed's stubs of json.encoder.
    make_encoder = getattr(json_encoder, "c_make_encoder", None)
    if make_encoder is None:  # pragma: no cover (no C accelerator)
        return None
    encode_string = getattr(json_encoder, "c_encode_basestring")  # noqa: B009
    settings = _DIGEST_ENCODER
    return make_encoder(
        None,
        settings.default,
        encode_string,
        None,
        settings.key_separator,
        settings.item_separator,
        settings.sort_keys,
        settings.skipkeys,
        settings.allow_nan,
    )


_DIGEST_FAST = _make_digest_encoder()


def _digest_text(value: Any) -> str:
    """``_DIGEST_ENCODER.encode(value)``, about three times faster."""
    if _DIGEST_FAST is not None:
        try:
            return "".join(_DIGEST_FAST(value, 0))
        except RecursionError:
            pass
    return _DIGEST_ENCODER.encode(value)


def source_id(topic: str, partition: int, offset: int) -> str:
    """The task id of a message that names none: stable across redeliveries."""
    return f"{topic}-{partition}-{offset}"


def task_message(task: Task | Mapping[str, Any]) -> bytes:
    """A task message for a task (or a dict with the same fields).

    The message is written in :data:`FORMAT_VERSION`; a dict whose ``format`` is
    another (a newer version, a string) raises ValueError naming it.
    """
    if isinstance(task, Task):
        doc: dict[str, Any] = {
            "id": task.id,
            "workflow_name": task.workflow_name,
            "data": task.data,
            "classification": task.classification,
            "assigned_to": task.assigned_to.value,
        }
        if task.run_after is not None and task.status is TaskStatus.PENDING:
            doc["run_after"] = task.run_after.isoformat()
        if task.priority:
            # Only when it is not the default: a message without the field is one
            # every version of wfe_kafka takes without a word in its log.
            doc["priority"] = task.priority
    else:
        _check_format_to_send(task.get("format"))
        doc = {k: task[k] for k in TASK_FIELDS if k in task and k != "format"}
        if isinstance(doc.get("run_after"), datetime):
            doc["run_after"] = doc["run_after"].isoformat()
        for name, value in doc.items():
            # Named here: JSON's own error ("Object of type set is not JSON
            # serializable") says neither which field nor that it is the message's.
            problem = json_problem(value)
            if problem is not None:
                raise ValueError(f"task message field {name!r}: must be JSON: {problem}")
    doc["format"] = FORMAT_VERSION
    return _dumps(doc)


def result_message(task: Task) -> bytes:
    """The result message of a finished task: the whole task, ``id`` at the top level.

    Artifacts go without their ``path``: a file name on the worker's host, of no
    use to another service (which reads them from the store) and telling it
    about the host's layout.
    """
    doc = task_to_dict(task)
    for artifact in doc.get("artifacts") or []:
        if isinstance(artifact, dict):
            artifact.pop("path", None)
    return _dumps(doc)


#: How many of its last history events a result too large for its topic keeps
#: (see :func:`result_with_recent_history`), as ``wfe show`` prints them.
RESULT_HISTORY_KEPT = 100


def result_with_recent_history(value: bytes) -> bytes | None:
    """A result message that Kafka refused as too large, with only the last
    :data:`RESULT_HISTORY_KEPT` events of its history and ``history_left_out`` set
    to how many earlier ones it goes without; None when its history is no longer
    than that. A task that looped through many phases is mostly history: this
    keeps its output. The task in the store keeps everything."""
    doc = json.loads(value)
    history = doc.get("history")
    if not isinstance(history, list) or len(history) <= RESULT_HISTORY_KEPT:
        return None
    doc["history"] = history[-RESULT_HISTORY_KEPT:]
    doc["history_left_out"] = len(history) - RESULT_HISTORY_KEPT
    return _dumps(doc)


#: Fields of a result message that may be large; a result too large for its topic,
#: even with a short history, is published without them (see
#: :func:`result_without_bulk`).
_BULK: dict[str, Any] = {
    "data": None,
    "output": None,
    "outputs": {},
    "history": [],
    "artifacts": [],
    "reply": None,
    "traceback": None,
    "children": [],
}


def result_without_bulk(value: bytes) -> bytes:
    """A result message that Kafka refused as too large, without its bulk: ``data``,
    ``output``, ``outputs``, ``history``, ``artifacts``, ``reply``, ``traceback`` and
    ``children`` emptied, ``context`` cut to ``kafka``, ``error`` to 1,000 characters, and
    ``result_too_large`` set to the size in bytes of the full result. The task in
    the store keeps everything."""
    doc = json.loads(value)
    doc.update(_BULK)
    context = doc.get("context")
    doc["context"] = (
        {"kafka": context["kafka"]} if isinstance(context, dict) and "kafka" in context else {}
    )
    for name in ("error", "waiting_reason"):
        if isinstance(doc.get(name), str):
            doc[name] = doc[name][:1000]
    doc["result_too_large"] = len(value)
    return _dumps(doc)


def event_message(
    event: str, task: Task, phase: Phase | None = None, at: datetime | None = None
) -> bytes:
    """A lifecycle event of a task (see the README for the fields of each event);
    ``at`` defaults to now.

    ``phase`` is the phase the event is of; for ``suspended``, the phase the task
    waits in, whose ``assigned_to`` (else the task's) the event reports.
    """
    doc: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "event": event,
        "task_id": task.id,
        "at": (at or utcnow()).isoformat(),
        "status": task.status.value,
        "workflow_name": task.workflow_name,
        "classification": task.classification,
        "source": _source(task),
    }
    if phase is not None:
        doc["phase"] = phase.target_classification
    elif event in ("suspended", "resumed"):
        doc["phase"] = task.classification
    if event == "phase_started":
        doc["attempt"] = task.attempts
    elif event == "attempt_failed":
        doc["attempt"] = task.attempts
        doc["error"] = task.error
        # When the phase runs again; null after its last attempt (failed follows).
        retry = task.run_after if task.status is TaskStatus.PENDING else None
        doc["retry_at"] = retry.isoformat() if retry else None
    elif event == "phase_finished" and phase is not None:
        doc["output"] = task.outputs.get(phase.target_classification)
    elif event == "suspended":
        doc["question"] = task.waiting_reason
        # A task waiting for its children has no deadline, only a time to check them.
        due = task.deadline if task.waiting_for is None else None
        doc["deadline"] = due.isoformat() if due else None
        # Who the task waits for: the phase's type, else the task's (as the engine
        # chose the adapter that suspended it).
        waits_for = (phase.assigned_to if phase is not None else None) or task.assigned_to
        doc["assigned_to"] = waits_for.value
    elif event == "completed":
        doc["output"] = task.output
    elif event == "failed":
        doc["error"] = task.error
    return _dumps(doc)


def _source(task: Task) -> dict[str, Any] | None:
    """Where a task's message came from: topic, partition and offset (the digest kept
    beside them is for recognising the message, not for the task's followers)."""
    source = task.context.get("kafka") if isinstance(task.context, dict) else None
    if not isinstance(source, dict):
        return source
    return {k: v for k, v in source.items() if k != "digest"}


def event_without_bulk(value: bytes) -> bytes:
    """An event message that Kafka refused as too large: ``output`` emptied,
    ``question`` and ``error`` cut to 1,000 characters, and ``event_too_large`` set
    to the size in bytes of the full event."""
    doc = json.loads(value)
    if "output" in doc:
        doc["output"] = None
    for name in ("question", "error"):
        if isinstance(doc.get(name), str):
            doc[name] = doc[name][:1000]
    doc["event_too_large"] = len(value)
    return _dumps(doc)


def dead_letter_headers(
    error: BaseException | str,
    topic: str,
    partition: int,
    offset: int,
    original: list[tuple[str, bytes]] | None = None,
    *,
    error_limit: int | None = None,
) -> list[tuple[str, bytes]]:
    """Kafka headers that say why a message was dead-lettered and where it came from.

    The dead letter keeps the original key, value and headers; these come after them.
    ``error_limit`` cuts ``wfe.error`` to that many characters (an error may quote
    a message's bulk, such as a 1 MB workflow name).
    """
    if isinstance(error, BaseException):
        # IdInUse is named as such: a replay tool can tell "id taken" from a broken
        # message without parsing the text; other BadMessage subclasses are details.
        if isinstance(error, IdInUse):
            kind = "IdInUse"
        elif isinstance(error, BadMessage):
            kind = "BadMessage"
        else:
            kind = type(error).__name__
        text = str(error)
    else:
        kind, text = "BadMessage", error
    if error_limit is not None:
        text = text[:error_limit]
    return [
        *(original or []),
        # backslashreplace: an error quoting a lone surrogate must not fail the letter.
        ("wfe.error", text.encode("utf-8", "backslashreplace")),
        ("wfe.error.type", kind.encode("utf-8")),
        ("wfe.source.topic", topic.encode("utf-8")),
        ("wfe.source.partition", str(partition).encode("ascii")),
        ("wfe.source.offset", str(offset).encode("ascii")),
        ("wfe.format", str(FORMAT_VERSION).encode("ascii")),
    ]

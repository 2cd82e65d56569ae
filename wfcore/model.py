"""The data wfcore works on: tasks, their parts, phases and workflows (attrs records)."""

from __future__ import annotations

import copy
import enum
import random
import re
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import attrs

from .errors import LONGEST_WAIT, InvalidTaskError, InvalidWorkflowError

if TYPE_CHECKING:
    # jsonschema is imported where it is used: most processes never check an answer.
    from jsonschema.protocols import Validator

__all__ = [
    "ANSWER_FORMATS",
    "DEFINE_WORKFLOW",
    "MAX_ACTOR_CHARS",
    "MAX_PRIORITY",
    "MIN_PRIORITY",
    "Artifact",
    "Phase",
    "Task",
    "TaskStatus",
    "TaskType",
    "WorkflowSpec",
    "actor_name",
    "answer_validator",
    "check_priority",
    "is_date_time",
    "new_task_id",
    "priority_problem",
    "utcnow",
    "utcnow_iso",
]

#: The built-in classification whose task defines a workflow at run time.
DEFINE_WORKFLOW = "define_workflow"


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(timezone.utc)


def utcnow_iso() -> str:
    """The current UTC time as ISO 8601 text, to the millisecond.

    History entries are stamped with this. A busy engine records hundreds of
    events per millisecond, so the text is made once per millisecond and reused.
    """
    global _stamp_ms, _stamp_text
    ms = int(time.time() * 1000)
    if ms != _stamp_ms:
        moment = datetime.fromtimestamp(ms / 1000, timezone.utc)
        _stamp_ms, _stamp_text = ms, moment.isoformat(timespec="milliseconds")
    return _stamp_text


_stamp_ms = -1
_stamp_text = ""


def new_task_id() -> str:
    """A fresh random task id: 32 hex digits.

    Drawn from ``random`` (seeded from the OS, and reseeded in forked children)
    rather than ``uuid4``: ids must be unique, not secret, and reading the OS's
    random source for every task is measurably slow on busy machines.
    """
    return f"{random.getrandbits(128):032x}"


class TaskStatus(str, enum.Enum):
    """Where a task is in its life cycle."""

    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    WAITING_HUMAN = "waiting_human"
    WAITING_AGENT = "waiting_agent"
    WAITING_IO = "waiting_io"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value

    @property
    def is_waiting(self) -> bool:
        """True for the WAITING_* statuses: the task is suspended until resumed."""
        return self in _WAITING

    @property
    def is_finished(self) -> bool:
        """True for COMPLETED, FAILED and CANCELLED: the task will never run again."""
        return self in _FINISHED

    @classmethod
    def parse(cls, value: str | TaskStatus) -> TaskStatus:
        """Accept a status by value or name, in any case (``completed``, ``COMPLETED``)."""
        if isinstance(value, TaskStatus):
            return value
        exact = _STATUSES.get(value) if type(value) is str else None
        if exact is not None:
            return exact
        text = str(value).strip().lower()
        try:
            return cls(text)
        except ValueError:
            names = ", ".join(s.value for s in cls)
            raise InvalidTaskError(f"unknown status {value!r} (one of: {names})") from None


_STATUSES = {s.value: s for s in TaskStatus}
_WAITING = frozenset({TaskStatus.WAITING_HUMAN, TaskStatus.WAITING_AGENT, TaskStatus.WAITING_IO})
_FINISHED = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})


class TaskType(str, enum.Enum):
    """Who runs a phase: a person, an LLM agent or a program."""

    HUMAN = "human"
    AGENTIC = "agentic"
    FUNCTIONAL = "functional"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, value: str | TaskType) -> TaskType:
        """Accept a task type in any case; ``"ai"`` is an alias of agentic."""
        if isinstance(value, TaskType):
            return value
        exact = _TASK_TYPES.get(value) if type(value) is str else None
        if exact is not None:
            return exact
        text = str(value).strip().lower()
        if text == "ai":
            return cls.AGENTIC
        try:
            return cls(text)
        except ValueError:
            names = ", ".join(t.value for t in cls)
            raise InvalidTaskError(
                f"unknown assigned_to {value!r} (one of: {names}, or ai)"
            ) from None


_TASK_TYPES = {"ai": TaskType.AGENTIC, **{t.value: t for t in TaskType}}


def _task_type(value: str | TaskType) -> TaskType:
    return TaskType.parse(value)


def _task_status(value: str | TaskStatus) -> TaskStatus:
    return TaskStatus.parse(value)


def _optional_task_type(value: str | TaskType | None) -> TaskType | None:
    return None if value is None else TaskType.parse(value)


@attrs.frozen
class Artifact:
    """A file a phase produced, stored beside the task; later phases can read it."""

    name: str
    size: int
    sha256: str
    media_type: str
    phase: str | None = None
    path: str | None = None
    created_at: datetime = attrs.field(factory=utcnow)


@attrs.frozen
class Phase:
    """One step of a workflow.

    ``target_classification`` names the phase. After it runs, ``next_classifications``
    decides where the task goes: None means the next phase in list order, ``[]``
    completes the task, one name goes there, and with several the handler picks by
    setting ``task.next_classification`` (else the first). ``assigned_to`` overrides
    the task's type for this phase. ``command`` (an argv list) makes a functional
    phase run a subprocess (a phase with a command is functional; another
    ``assigned_to`` is refused). ``instructions`` and ``input_schema`` tell a person
    (or an agent) what to do and type the answer. ``timeout`` is a deadline for human phases,
    resolved by ``on_timeout`` (``"fail"``, ``{"output": ...}`` or ``{"goto": name}``),
    and a per-attempt time limit for the others. ``max_attempts`` bounds retries.
    ``max_concurrency`` lets at most that many tasks run the phase at once (a command
    that takes a core, an agent behind a rate limit): across every worker process on
    a store that shares phase slots (``Store.shares_phase_slots``: SQLite), else in
    each worker process; the others wait for a slot, holding their place in the
    worker, and the wait counts toward neither ``timeout`` nor the phase's time.
    ``permanent_exit_codes`` are the exit statuses with which a phase's command says
    that trying again cannot help (bad input, say): such an exit fails the task at
    once, as raising ``PermanentError`` does, whatever attempts remain.
    """

    target_classification: str
    next_classifications: list[str] | None = None
    assigned_to: TaskType | None = attrs.field(default=None, converter=_optional_task_type)
    command: list[str] | None = None
    instructions: str | None = None
    input_schema: dict[str, Any] | None = None
    timeout: float | None = None
    on_timeout: str | dict[str, Any] | None = None
    max_attempts: int = 1
    max_concurrency: int | None = None
    permanent_exit_codes: list[int] | None = None

    def __attrs_post_init__(self) -> None:
        if self.command is not None and self.assigned_to is None:
            # Only functional phases run commands: a task's own type (agentic by
            # default) would leave the command unrun and fail for want of a handler.
            object.__setattr__(self, "assigned_to", TaskType.FUNCTIONAL)
        _check_phase(self, "phase")


# Workflow and phase names show up in ids, URLs, logs and tables: keep them short text.
_MAX_NAME_CHARS = 200


def _check_name(name: object, where: str) -> None:
    """A workflow or phase name: non-empty printable text of a sensible length."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidWorkflowError(f"{where}: must be a non-empty string")
    if len(name) > _MAX_NAME_CHARS:
        raise InvalidWorkflowError(
            f"{where}: {name[:40]!r}... is too long (at most {_MAX_NAME_CHARS} characters)"
        )
    if not name.isprintable():
        raise InvalidWorkflowError(
            f"{where}: {name!r} may not contain control characters or invalid Unicode"
        )
    if name == DEFINE_WORKFLOW:
        raise InvalidWorkflowError(
            f"{where}: {DEFINE_WORKFLOW!r} is reserved (the built-in phase that defines workflows)"
        )


# A deadline this far ahead still fits in a datetime, whenever it is set.
_MAX_TIMEOUT = 10 * 366 * 86400


def _check_phase(phase: Phase, where: str) -> None:
    _check_name(phase.target_classification, f"{where}.target_classification")
    nxt = phase.next_classifications
    if nxt is not None and (
        not isinstance(nxt, list) or not all(isinstance(n, str) and n for n in nxt)
    ):
        raise InvalidWorkflowError(
            f"{where}.next_classifications: must be a list of classification names or null"
        )
    cmd = phase.command
    if cmd is not None and (
        not isinstance(cmd, list) or not cmd or not all(isinstance(c, str) for c in cmd)
    ):
        raise InvalidWorkflowError(f"{where}.command: must be a non-empty list of strings (argv)")
    for index, argument in enumerate(cmd or ()):
        # The operating system takes each argument as a C string, which ends at a NUL.
        if "\x00" in argument:
            raise InvalidWorkflowError(
                f"{where}.command[{index}]: {argument!r} holds a NUL character, "
                "which no program can be given"
            )
    if cmd is not None and phase.assigned_to is not TaskType.FUNCTIONAL:
        raise InvalidWorkflowError(
            f"{where}.command: only functional phases run commands, and this one is "
            f"assigned to {phase.assigned_to.value if phase.assigned_to else None!r} "
            "(leave assigned_to out, or make it 'functional')"
        )
    if phase.timeout is not None and (
        isinstance(phase.timeout, bool)
        or not isinstance(phase.timeout, (int, float))
        or not 0 < phase.timeout <= _MAX_TIMEOUT  # also refuses NaN and infinity
    ):
        raise InvalidWorkflowError(
            f"{where}.timeout: must be a positive number of seconds, at most 10 years, "
            f"not {phase.timeout!r}"
        )
    for field in ("instructions",):
        value = getattr(phase, field)
        if value is not None and not isinstance(value, str):
            raise InvalidWorkflowError(f"{where}.{field}: must be text or null, not {value!r}")
    if (
        isinstance(phase.max_attempts, bool)
        or not isinstance(phase.max_attempts, int)
        or phase.max_attempts < 1
    ):
        raise InvalidWorkflowError(
            f"{where}.max_attempts: must be an integer >= 1, not {phase.max_attempts!r}"
        )
    limit = phase.max_concurrency
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InvalidWorkflowError(
            f"{where}.max_concurrency: must be an integer >= 1 or null, not {limit!r}"
        )
    if limit is not None and phase.assigned_to is TaskType.HUMAN:
        raise InvalidWorkflowError(
            f"{where}.max_concurrency: a human phase waits for a person instead of "
            "running, so there is nothing to limit"
        )
    _check_exit_codes(phase, where)
    on_timeout = phase.on_timeout
    if on_timeout is not None and on_timeout != "fail":
        ok = isinstance(on_timeout, dict) and (
            set(on_timeout) == {"output"}
            or (set(on_timeout) == {"goto"} and isinstance(on_timeout["goto"], str))
        )
        if not ok:
            raise InvalidWorkflowError(
                f'{where}.on_timeout: must be "fail", {{"output": ...}} or '
                f'{{"goto": "<classification>"}}'
            )
    if phase.input_schema is not None:
        import jsonschema

        if not isinstance(phase.input_schema, dict):
            raise InvalidWorkflowError(f"{where}.input_schema: must be a JSON Schema object")
        validator_cls = jsonschema.validators.validator_for(phase.input_schema)
        try:
            validator_cls.check_schema(phase.input_schema)
        except jsonschema.SchemaError as exc:
            raise InvalidWorkflowError(
                f"{where}.input_schema: not a valid JSON Schema: {exc.message}"
            ) from None
        _check_refs(phase.input_schema, phase.input_schema, f"{where}.input_schema")
        # The default answer stands in for a person's, so it must be one they could give.
        if isinstance(on_timeout, dict) and "output" in on_timeout:
            problem = jsonschema.exceptions.best_match(
                answer_validator(phase.input_schema).iter_errors(on_timeout["output"])
            )
            if problem is not None:
                raise InvalidWorkflowError(
                    f"{where}.on_timeout.output: does not match input_schema: {problem.message}"
                )


def _check_exit_codes(phase: Phase, where: str) -> None:
    codes = phase.permanent_exit_codes
    if codes is None:
        return
    if phase.command is None:
        raise InvalidWorkflowError(
            f"{where}.permanent_exit_codes: only a phase with a command exits with a status"
        )
    if not isinstance(codes, list) or not all(
        isinstance(code, int) and not isinstance(code, bool) and 1 <= code <= 255 for code in codes
    ):
        raise InvalidWorkflowError(
            f"{where}.permanent_exit_codes: must be a list of exit statuses from 1 to 255 "
            f"(0 is success), not {codes!r}"
        )


# The formats an answer's ``format`` keywords are checked for: those jsonschema
# checks with no optional package installed, and date-time, checked here. Fixed,
# so that whether an answer passes never depends on what else is installed
# (jsonschema's own checker gains formats with packages such as rfc3339-validator).
ANSWER_FORMATS = (
    "date",
    "date-time",
    "email",
    "idn-email",
    "ip-address",
    "ipv4",
    "ipv6",
    "regex",
    "uuid",
)
_PACKAGE_FREE_FORMATS = frozenset(ANSWER_FORMATS) - {"date-time"}
_format_checkers: dict[type, Any] = {}

# RFC 3339 section 5.6: a full date, "T", a time with seconds, and an offset.
_DATE_TIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.\d+)?"
    r"(?:[Zz]|[+-](\d{2}):(\d{2}))",
    re.ASCII,
)


def is_date_time(value: object) -> bool:
    """True if ``value`` is an RFC 3339 date-time (``2026-12-01T09:00:00Z``, with an
    offset; a leap second is not taken); values that are not text pass, as for
    every JSON Schema format."""
    if not isinstance(value, str):
        return True
    match = _DATE_TIME.fullmatch(value)
    if match is None:
        return False
    year, month, day, hour, minute, second, off_hours, off_minutes = match.groups()
    try:
        datetime(int(year), int(month), int(day), int(hour), int(minute), int(second))
    except ValueError:  # 2026-02-30, 25:00:00 and the like
        return False
    return off_hours is None or (int(off_hours) <= 23 and int(off_minutes) <= 59)


def answer_validator(schema: dict[str, Any]) -> Validator:
    """A jsonschema validator for answers to ``schema`` (a phase's ``input_schema``)
    that checks the :data:`ANSWER_FORMATS`, and only those, whatever is installed."""
    import jsonschema

    validator_cls = jsonschema.validators.validator_for(schema)
    checker = _format_checkers.get(validator_cls)
    if checker is None:
        # The draft's own checks for the package-free formats (draft 4 has no
        # "date", say), then the engine's date-time.
        own = validator_cls.FORMAT_CHECKER.checkers
        checker = jsonschema.FormatChecker(formats=())
        for name in _PACKAGE_FREE_FORMATS & own.keys():
            checker.checkers[name] = own[name]
        checker.checks("date-time")(is_date_time)
        _format_checkers[validator_cls] = checker
    return validator_cls(schema, format_checker=checker)


def resolve_ref(schema: Any, ref: str) -> Any:
    """What a local ``$ref`` (``#/$defs/Name``, a JSON pointer after ``#``) names in
    ``schema``; LookupError when it names nothing there."""
    if not ref.startswith("#"):
        raise LookupError(f"{ref!r} is not a local reference")
    target = schema
    for part in ref[1:].split("/")[1:] if ref[1:] else []:
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(target, Mapping) and part in target:
            target = target[part]
        elif isinstance(target, list) and part.isdigit() and int(part) < len(target):
            target = target[int(part)]
        else:
            raise LookupError(f"{ref!r} names nothing in the schema")
    return target


def _check_refs(node: Any, root: dict[str, Any], where: str) -> None:
    """Every ``$ref`` must point inside the schema: answers are checked where no
    other document can be fetched, and a dangling one would refuse every answer."""
    if isinstance(node, list):
        for item in node:
            _check_refs(item, root, where)
        return
    if not isinstance(node, dict):
        return
    ref = node.get("$ref")
    if isinstance(ref, str):
        if not ref.startswith("#"):
            raise InvalidWorkflowError(
                f"{where}: $ref {ref!r} points outside the schema (only '#...' refs are "
                "resolved; put the definition under $defs)"
            )
        try:
            resolve_ref(root, ref)
        except LookupError:
            raise InvalidWorkflowError(f"{where}: $ref {ref!r} points to nothing") from None
    for key, value in node.items():
        if key not in ("const", "enum", "default", "examples"):  # data, not schemas
            _check_refs(value, root, where)


@attrs.frozen
class WorkflowSpec:
    """A named, ordered list of phases.

    ``input`` is only used by a ``define_workflow`` task: when given, it becomes the
    task's data once the task is rebound to the new workflow. ``start_phases`` names
    the phases a submitted task may start at (its ``classification``): None lets it
    name any, ``[]`` none. Tasks submitted without one start at the first phase, or
    where a classifier sends them, whatever it says.
    """

    name: str
    phases: list[Phase]
    input: Any = None
    description: str | None = None
    start_phases: list[str] | None = None

    def __attrs_post_init__(self) -> None:
        _check_name(self.name, "name")
        if self.name == "-":
            # The command line's word for "no workflow yet" (wfe submit -).
            raise InvalidWorkflowError("name: '-' is reserved; choose another name")
        if self.description is not None and not isinstance(self.description, str):
            raise InvalidWorkflowError("description: must be text or null")
        if not isinstance(self.phases, list) or not self.phases:
            raise InvalidWorkflowError("phases: a workflow needs at least one phase")
        seen: set[str] = set()
        for i, phase in enumerate(self.phases):
            if not isinstance(phase, Phase):
                raise InvalidWorkflowError(
                    f"phases[{i}]: must be a Phase, not {type(phase).__name__}"
                )
            if phase.target_classification in seen:
                raise InvalidWorkflowError(
                    f"phases[{i}].target_classification: duplicate {phase.target_classification!r}"
                )
            seen.add(phase.target_classification)
        for i, phase in enumerate(self.phases):
            for name in phase.next_classifications or ():
                if name not in seen:
                    raise InvalidWorkflowError(
                        f"phases[{i}].next_classifications: unknown classification {name!r}"
                    )
            if isinstance(phase.on_timeout, dict) and "goto" in phase.on_timeout:
                if phase.on_timeout["goto"] not in seen:
                    raise InvalidWorkflowError(
                        f"phases[{i}].on_timeout.goto: unknown classification "
                        f"{phase.on_timeout['goto']!r}"
                    )
        if self.start_phases is not None:
            if not isinstance(self.start_phases, list):
                raise InvalidWorkflowError("start_phases: must be a list of phase names or null")
            for name in self.start_phases:
                if not isinstance(name, str):
                    raise InvalidWorkflowError(
                        f"start_phases: {name!r} is not a phase name (a string)"
                    )
                if name not in seen:
                    raise InvalidWorkflowError(f"start_phases: unknown classification {name!r}")

    def copy(self) -> WorkflowSpec:
        """A deep copy, its phases checked again: changing one never changes the other.

        Phases and workflows are frozen, but the lists and dicts they hold are not:
        the engine registers a copy, so that a caller changing them later cannot
        change a registered workflow without its being checked.
        """
        phases = []
        for i, phase in enumerate(self.phases):
            phase = copy.deepcopy(phase)
            # Checked as it is now: the caller may have changed it since it was made.
            _check_phase(phase, f"phases[{i}]")
            phases.append(phase)
        return WorkflowSpec(
            name=self.name,
            phases=phases,
            input=copy.deepcopy(self.input),
            description=self.description,
            start_phases=None if self.start_phases is None else list(self.start_phases),
        )

    def phase(self, classification: str) -> Phase | None:
        """The phase with this classification, or None."""
        for phase in self.phases:
            if phase.target_classification == classification:
                return phase
        return None

    @property
    def classifications(self) -> list[str]:
        """The phases' classifications, in order."""
        return [p.target_classification for p in self.phases]


# Plain attributes after construction: the engine sets them many times per phase,
# and a converting __setattr__ would double its cost. The constructor still
# converts and checks the status and task type.
@attrs.define(eq=False, on_setattr=attrs.setters.NO_OP)
class Task:
    """A unit of work moving through a workflow, with everything it carries.

    ``output`` is the latest phase's output and ``outputs`` maps each finished
    phase's classification to its output. ``attempts`` counts attempts at the
    current phase. ``history`` holds timestamped events (dicts with ``at`` and
    ``event``). A handler may set ``next_classification`` to choose among several
    next phases. ``waiting_reason``, ``deadline`` and ``reply`` describe a suspended
    task: what it waits for, until when, and the answer given to a phase that
    resumes where it left off. ``priority`` orders the tasks ready to run: a
    worker claims those of the highest first (from ``MIN_PRIORITY`` to
    ``MAX_PRIORITY``; 0 by default), each priority in the order its tasks became
    ready; a phase may change it for the phases after it. ``parent_id`` names the
    task whose phase submitted this one (``submit_task(..., parent=task)``),
    ``children`` the tasks this one's phases submitted so, in order, and
    ``waiting_for`` those a phase waits for (``engine.wait_for_children``) until
    they have all finished. ``version`` is the store's concurrency token.
    """

    data: Any = None
    workflow_name: str | None = None
    classification: str | None = None
    assigned_to: TaskType = attrs.field(default=TaskType.AGENTIC, converter=_task_type)
    id: str = attrs.field(factory=new_task_id)
    status: TaskStatus = attrs.field(default=TaskStatus.PENDING, converter=_task_status)
    context: dict[str, Any] = attrs.field(factory=dict)
    artifacts: list[Artifact] = attrs.field(factory=list)
    output: Any = None
    outputs: dict[str, Any] = attrs.field(factory=dict)
    error: str | None = None
    traceback: str | None = None
    attempts: int = 0
    history: list[dict[str, Any]] = attrs.field(factory=list)
    created_at: datetime = attrs.field(factory=utcnow)
    updated_at: datetime = attrs.field(factory=utcnow)
    next_classification: str | None = None
    waiting_reason: str | None = None
    deadline: datetime | None = None
    reply: Any = None
    resume_in_phase: bool = False
    run_after: datetime | None = None
    priority: int = 0
    parent_id: str | None = None
    children: list[str] = attrs.field(factory=list)
    waiting_for: list[str] | None = None
    version: int = 0

    def copy(self) -> Task:
        """A deep copy, but for the events of its history, which it shares: events
        never change once recorded (the memory store hands out copies of them)."""
        return copy_with_history(self, list(self.history))

    def artifact(self, name: str) -> Artifact | None:
        """The artifact with this name, or None."""
        for art in self.artifacts:
            if art.name == name:
                return art
        return None

    def record(self, event: str, **details: Any) -> None:
        """Append a timestamped event to the history."""
        self.history.append({"at": utcnow_iso(), "event": event, **details})


def copy_with_history(task: Task, history: list[dict[str, Any]]) -> Task:
    """A deep copy of ``task`` but for its history, which is ``history``: the
    memory store keeps one history list per task and adds to it, rather than copy
    thousands of events at every write of a long-looping task (the events it hands
    out of the engine it copies: see ``Task.copy``)."""
    clone: Task = _copy_fields(task)
    # Only containers need copying; checking first saves a call per field.
    if isinstance(task.data, (dict, list)):
        clone.data = copy_json(task.data)
    clone.context = copy_json(task.context) if task.context else {}
    if isinstance(task.output, (dict, list)):
        clone.output = copy_json(task.output)
    clone.outputs = copy_json(task.outputs) if task.outputs else {}
    if task.reply is not None:
        clone.reply = copy_json(task.reply)
    clone.artifacts = list(task.artifacts)
    clone.children = list(task.children)
    if task.waiting_for is not None:
        clone.waiting_for = list(task.waiting_for)
    clone.history = history
    return clone


_SCALARS = frozenset({str, int, float, bool, type(None)})


def copy_json(value: Any) -> Any:
    """Copy nested dicts and lists; other values are shared (JSON scalars are immutable).

    Several times faster than ``copy.deepcopy`` on task data, which matters
    because the memory store copies tasks on every change.
    """
    kind = type(value)
    if kind is dict:
        return {k: v if type(v) in _SCALARS else copy_json(v) for k, v in value.items()}
    if kind is list:
        return [v if type(v) in _SCALARS else copy_json(v) for v in value]
    if isinstance(value, (dict, list)):
        return copy.deepcopy(value)
    return value


def _make_copier() -> Any:
    # One straight-line function copying every slot: Task.copy runs several times
    # per phase in the memory store, and a loop over the fields is three times slower.
    names = [a.name for a in attrs.fields(Task)]
    body = "\n".join(f"    c.{n} = t.{n}" for n in names)
    namespace: dict[str, Any] = {"new": object.__new__, "Task": Task}
    exec(f"def copy_fields(t):\n    c = new(Task)\n{body}\n    return c", namespace)
    return namespace["copy_fields"]


_copy_fields = _make_copier()


MIN_PRIORITY = -1000
"""The lowest priority a task can have."""
MAX_PRIORITY = 1000
"""The highest priority a task can have."""


def priority_problem(value: object) -> str | None:
    """Why ``value`` cannot be a task's priority, or None."""
    if isinstance(value, bool) or not isinstance(value, int):
        return f"must be an integer from {MIN_PRIORITY} to {MAX_PRIORITY}, not {value!r}"
    if not MIN_PRIORITY <= value <= MAX_PRIORITY:
        return f"must be from {MIN_PRIORITY} to {MAX_PRIORITY}, not {value}"
    return None


def check_priority(value: object, what: str = "priority") -> None:
    """Raise InvalidTaskError, ``what`` and then why, for what cannot be a task's
    priority (see :func:`priority_problem`)."""
    problem = priority_problem(value)
    if problem is not None:
        raise InvalidTaskError(f"{what} {problem}")


MAX_ACTOR_CHARS = 200
"""The longest name ``resume``, ``cancel`` and ``retry`` record as who acted."""


def actor_name(by: str) -> str:
    """``by`` as the name a ``resumed``, ``cancelled`` or ``retried`` event records as
    who acted, blanks around it dropped: TypeError for what is not a string,
    ValueError for an empty, unprintable or overlong one."""
    if not isinstance(by, str):
        raise TypeError(f"by must be a name (a string), not {type(by).__name__}")
    name = by.strip()
    if not name or len(name) > MAX_ACTOR_CHARS or not name.isprintable():
        raise ValueError(
            f"by must be a name of 1 to {MAX_ACTOR_CHARS} printable characters, not {by[:60]!r}"
        )
    return name


def delay_seconds(value: Any, what: str) -> float:
    """A delay in seconds, from 0 to 100 years (datetimes cannot go much further)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidTaskError(f"{what} must be a number of seconds, not {type(value).__name__}")
    if not 0 <= value <= LONGEST_WAIT:  # also refuses NaN and infinity
        raise InvalidTaskError(f"{what}: a delay of {value!r} seconds is not 0 to 100 years")
    return float(value)

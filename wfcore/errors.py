"""The exceptions wfcore raises: one base class, a few precise subclasses."""

from __future__ import annotations

import asyncio
import difflib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .model import TaskStatus

__all__ = [
    "AdapterError",
    "ArtifactError",
    "CommandError",
    "InvalidOutputError",
    "InvalidTaskError",
    "InvalidWorkflowError",
    "PermanentError",
    "PluginError",
    "RetryLater",
    "StoreError",
    "TaskStateError",
    "UnknownTaskError",
    "UnknownWorkflowError",
    "WorkflowError",
]


#: Seconds in 100 years: the furthest off anything in wfcore waits for (a delayed
#: start, a retry's backoff, a RetryLater), which a date can still hold.
LONGEST_WAIT = 100 * 365 * 86400.0


class WorkflowError(Exception):
    """Base class of every error wfcore raises on purpose.

    Every one pickles to an equal message and attributes (multiprocessing, a
    process pool, a task queue carry it across processes): a subclass whose
    ``__init__`` takes other arguments than its message defines ``__reduce__``.
    """


class InvalidTaskError(WorkflowError, ValueError):
    """A task's fields are unusable: data that is not JSON, an unknown task type or
    classification."""


class UnknownWorkflowError(WorkflowError, LookupError):
    """A workflow name that no plugin, call or stored definition has registered."""

    def __init__(self, name: str | None, known: list[str] | None = None) -> None:
        self.name = name
        #: The workflow names known where it was looked up, if given.
        self.known = known
        what = (
            "no workflow named (workflow_name is None)"
            if name is None
            else f"unknown workflow {name!r}"
        )
        super().__init__(what + _known_hint(name, known))

    # Unpickling calls cls(*args), and args holds the message, not these arguments.
    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.name, self.known), self.__dict__


# The most workflow names an UnknownWorkflowError lists: stores may hold thousands
# (defined at run time), and the message goes into logs and dead letters' headers.
_MAX_LISTED = 10


def _known_hint(name: str | None, known: list[str] | None) -> str:
    if not known:
        return ""
    if len(known) <= _MAX_LISTED:
        return f" (known: {', '.join(sorted(known))})"
    close = difflib.get_close_matches(name or "", known, n=3) if name else []
    rest = [n for n in sorted(known) if n not in close][: _MAX_LISTED - len(close)]
    more = len(known) - len(close) - len(rest)
    return f" (known: {', '.join(close + rest)} and {more} more; wfe workflows lists them)"


class InvalidWorkflowError(WorkflowError, ValueError):
    """A workflow definition (a WorkflowSpec or a list of phases) is invalid; the
    message names the field at fault."""


class UnknownTaskError(WorkflowError, LookupError):
    """No task with this id exists in the store."""

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        super().__init__(f"unknown task {task_id!r}")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.task_id,), self.__dict__


class TaskStateError(WorkflowError):
    """The task is not in a state that allows the operation, e.g. resuming a task
    that is not waiting, or cancelling one that has finished.

    ``task_id`` and ``status`` (the status the task was found in) are set where
    they are known, else None.
    """

    def __init__(
        self, message: str, *, task_id: str | None = None, status: TaskStatus | None = None
    ) -> None:
        self.task_id = task_id
        self.status = status
        super().__init__(message)


class InvalidOutputError(WorkflowError, ValueError):
    """An answer given to ``resume`` does not match the phase's ``input_schema``.

    ``errors`` lists each violation as ``"<path>: <message>"``; the task keeps
    waiting.
    """

    def __init__(self, message: str, errors: list[str], summary: str | None = None) -> None:
        self.errors = errors
        self.summary = summary or message
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.args[0], self.errors, self.summary), self.__dict__


class ArtifactError(WorkflowError, ValueError):
    """An artifact name is empty, absolute or leaves its folder, or an artifact
    does not exist."""


class AdapterError(WorkflowError):
    """An adapter cannot run a phase, e.g. no handler is registered for it."""


class CommandError(AdapterError):
    """A phase's subprocess exited non-zero; the message ends with its stderr."""

    def __init__(self, message: str, returncode: int | None, stderr: str) -> None:
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.args[0], self.returncode, self.stderr), self.__dict__


class PermanentError(WorkflowError):
    """Raised by a phase (its handler, adapter or a plugin's adapter) that cannot
    succeed however often it is tried: invalid input, a record that does not exist,
    credentials a server refused. Its attempt fails and so does the task, at once,
    whatever attempts the phase's ``max_attempts`` still allows (``task.error``
    starts ``PermanentError:``). ``engine.retry`` still sends such a task back, once
    its cause is fixed."""


class RetryLater(WorkflowError):
    """Raised by a phase that failed for now and knows when trying again can help:
    a rate limit's ``Retry-After``, a service down for maintenance until a time.

    The attempt fails and counts, as any failed attempt does; if ``max_attempts``
    allows another, it starts no sooner than ``after`` seconds later (the engine's
    backoff, when it is longer, applies instead).
    """

    def __init__(self, message: str = "", *, after: float) -> None:
        if isinstance(after, bool) or not isinstance(after, (int, float)):
            raise TypeError(f"RetryLater: after must be a number of seconds, not {after!r}")
        if not 0 <= after <= LONGEST_WAIT:
            raise ValueError(
                f"RetryLater: after must be 0 to {LONGEST_WAIT:.0f} seconds (100 "
                f"years), not {after!r}"
            )
        self.after = float(after)
        super().__init__(message or f"try again in {self.after:g}s")

    def __reduce__(self) -> tuple[Any, ...]:
        # ``after`` is keyword-only: rebuilt through a helper that passes it so.
        return _retry_later, (self.args[0], self.after), self.__dict__


def _retry_later(message: str, after: float) -> RetryLater:
    return RetryLater(message, after=after)


class StoreError(WorkflowError):
    """The store cannot be opened or used: an unknown URL scheme, a file that is not
    a wfcore database, or a database written by a newer version of wfcore.

    A worker meeting one as it claims tasks logs it and tries again, after 1 s
    doubling up to a minute (a full disk, a database server restarting), unless
    the error is ``lasting``: then the worker stops, as trying again cannot help.
    """

    #: This process cannot use the store again (its file was deleted under it,
    #: say): a store raises a subclass that sets it True.
    lasting: bool = False


class PluginError(WorkflowError):
    """A plugin is broken: a duplicate registration or a hook implementation that
    matches no hook specification."""


def exception_text(exc: BaseException) -> str:
    """``Type: message`` for an error message, even for an exception whose
    ``str()`` raises or returns no string: the phase's failure, not the engine's."""
    text = text_of(exc)
    if not text and isinstance(exc, asyncio.CancelledError):
        text = "raised by the phase itself (nothing cancelled it)"
    return f"{type(exc).__name__}: {text}"


def text_of(value: object) -> str:
    """``str(value)``, or a placeholder when that raises."""
    try:
        text = str(value)
    except Exception:
        return "<str() failed>"
    return text


def storable_text(message: str) -> str:
    """An error message as storable text: a lone surrogate (an undecodable file
    name in an OSError, say) is shown escaped rather than making the task unstorable."""
    return message.encode("utf-8", "backslashreplace").decode("utf-8")

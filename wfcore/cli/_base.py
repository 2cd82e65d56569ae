"""What every ``wfe`` command shares: the root group and its options, the
engine and store a command works on, parsing values and printing tables."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import importlib
import inspect
import json
import logging
import math
import os
import re
import signal
import sqlite3
import sys
import sysconfig
import time
import traceback
import unicodedata
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, ClassVar, TextIO, TypeVar

import click

from ..engine import ECSWorkflowEngine
from ..errors import (
    LONGEST_WAIT,
    InvalidOutputError,
    UnknownTaskError,
    WorkflowError,
)
from ..model import Task, TaskStatus
from ..plugins import (
    installed_plugins,
    not_loaded_plugins,
    why_not_loaded,
)
from ..schedules import LatestRun
from ..stores.base import Store, ids_started_by, phase_filter, shown_url
from ..stores.sqlite import SQLiteStore
from ..wire import (
    MAX_JSON_DEPTH,
    finite_json_float,
    is_unicode_text,
    object_without_repeats,
    parse_time,
    refuse_json_constant,
    task_to_dict,
)

F = TypeVar("F", bound=Callable[..., Any])
_T = TypeVar("_T")

_STORE_HELP = (
    "Store URL, e.g. sqlite:///abs/path/wfe.db or memory:// "
    "[env WFE_STORE; default: sqlite:///<cwd>/.wfe/wfe.db]"
)


def _app_option(fn: F) -> F:
    """``--app MODULE:ATTR`` for commands that only read or change stored tasks: the
    store the app's engine names in code (``store=``), as wfe worker would use.
    Kept in the context for :func:`_engine`, as ``--store`` is."""

    def remember(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
        if value is not None:
            ctx.ensure_object(_Context).app = value

    return click.option(
        "--app",
        metavar="MODULE:ATTR",
        expose_value=False,
        callback=remember,
        help="Use the store of this app's engine (its store= in code), unless --store or "
        "WFE_STORE names one.",
    )(fn)


def _store_option(fn: F) -> F:
    # Only the group's option reads WFE_STORE: a subcommand's own --store, then the
    # group's --store, then the environment, in that order.
    return click.option("--store", "store", metavar="URL", help=_STORE_HELP)(fn)


#: Exit statuses besides 0 (success), 1 (the operation failed) and 2 (bad command
#: line): ``wfe wait``'s, and an interrupted command's.
EXIT_TASK_FAILED = 3
EXIT_TIMED_OUT = 4
EXIT_INTERRUPTED = 130

_EXIT_STATUSES = """\b
Exit status:
  0    success
  1    the operation failed: an unknown task, a task in the wrong state,
       a refused answer, a store error
  2    bad command line: a usage error, or a name, value or store the
       command cannot take
  3    wfe wait: the task failed or was cancelled
  4    wfe wait: still going after --timeout
  129  wfe worker: stopped by its terminal closing (SIGHUP)
  130  interrupted (Ctrl-C)
"""

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Log lines to whatever ``sys.stderr`` is when they are written."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    def handleError(self, record: logging.LogRecord) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            _stderr_gone()  # a pipe or terminal closed: logging on would fail again
            return
        super().handleError(record)


def _stderr_gone() -> None:
    """Send what goes to stderr nowhere from now on: it was a pipe or terminal that
    is gone (``wfe worker 2>&1 | head``, a closed ssh session). The worker goes on,
    stops when told and exits as usual, rather than failing on every line and then
    with status 120 as Python cannot flush the old stream at exit."""
    sys.stderr = open(os.devnull, "w", encoding="utf-8")  # open until the process ends


class _PrintableFormatter(logging.Formatter):
    """Log lines with their control characters written out but for newlines and
    tabs: a failed attempt's line carries the task's error, and a worker's stderr is
    often a terminal (see :func:`_printable`). The password of a URL is masked."""

    def format(self, record: logging.LogRecord) -> str:
        return _printable(_URL_PASSWORD.sub(r"\1:***@", super().format(record)), lines=True)


# The password in a URL's user:password@: HTTP clients log each request's URL whole
# at DEBUG (an OPENAI_BASE_URL with credentials, a proxy's URL), and logs are kept
# and shared where passwords must not be.
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/@:]*):[^\s/@]*@")


#: The handler the wfe command logs with, once main() has set it up.
_LOG_HANDLER: list[logging.Handler] = []


# Client libraries that log at INFO what only debugging needs: HTTP clients a line
# per request with its full URL (a password in it too), kafka-python every
# connection, join and retry (hundreds of lines a minute while a broker is away).
_CHATTY_LOGGERS = ("httpx", "httpx2", "httpcore", "httpcore2", "kafka")


def _setup_logging(level: int) -> None:
    """Log to stderr, with the time (UTC), level and logger, at ``level``; the
    wfcore.plugins logger at DEBUG with WFE_TRACE_PLUGINS. Only the wfe command
    does this: an app that imports wfcore configures logging its own way."""
    root = logging.getLogger()
    if not _LOG_HANDLER:
        handler = _StderrHandler()
        formatter = _PrintableFormatter(
            "%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S"
        )
        formatter.converter = time.gmtime
        handler.setFormatter(formatter)
        root.addHandler(handler)
        _LOG_HANDLER.append(handler)
    root.setLevel(level)
    chatty_level = level if level <= logging.DEBUG else max(level, logging.WARNING)
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(chatty_level)
    if os.environ.get("WFE_TRACE_PLUGINS"):
        logging.getLogger("wfcore.plugins").setLevel(logging.DEBUG)


class _Context:
    def __init__(self, store: str | None = None) -> None:
        self.store = store
        self.app: str | None = None  # a command's --app, where it only names the store


def store_url(ctx: click.Context, store: str | None) -> str | None:
    """The store URL a command is to use: its own ``--store``, else the group's (from
    ``wfe --store`` or WFE_STORE), without blanks around it; None for the default.

    A command of a plugin that opens a store calls it as the built-in ones do, so
    that an empty ``--store`` or a blank WFE_STORE is refused alike (a usage error,
    exit status 2).
    """
    shared = ctx.ensure_object(_Context)
    # Blanks around a URL (WFE_STORE=sqlite:///srv/wfe.db<space> in an env file, a
    # paste) are never part of it: kept, they would name another file, which a
    # worker or submit would make anew and the other commands would never see.
    store, given = (None if u is None else u.strip() for u in (store, shared.store))
    source = ctx.find_root().get_parameter_source("store")
    env_blank = given == "" and source is click.core.ParameterSource.ENVIRONMENT
    if env_blank and store is None:
        # Blanks only (an empty WFE_STORE is as if unset: the default store).
        raise _InputError("WFE_STORE is blank: give a store URL, or unset it")
    if store == "" or (given == "" and not env_blank):
        # --store "$STORE" with the variable unset: the default store in the current
        # folder would serve instead (or be made), a store nobody meant.
        raise _InputError(
            "--store is empty (an unset variable?): give a store URL, or leave --store "
            "out for WFE_STORE or the default"
        )
    return store or given


def _engine(
    ctx: click.Context,
    store: str | None,
    app: str | None = None,
    *,
    app_hint: str = "APP",
    existing: bool = False,
    reading: bool = False,
    in_process: bool = False,
) -> ECSWorkflowEngine:
    """The engine a command works with: the app's (``MODULE:ATTR``), else a bare one.

    ``existing``: the command only reads or changes tasks already stored, so a SQLite
    store that does not exist is an error (a wrong --store or WFE_STORE), not a new
    empty database. ``in_process``: the command itself runs the tasks (wfe worker),
    so memory:// is of use; to every other command it is a store that ends with it.
    ``reading``: the command only reads, so a SQLite store of the release before is
    read as it is, not upgraded: that release's workers may still be using it; nor
    are the app's workflows stored (an older checkout's would replace the ones the
    workers run, and a store on read-only credentials could not be read at all).
    """
    shared = ctx.ensure_object(_Context)
    url = store_url(ctx, store)
    if app is None and shared.app is not None:
        app, app_hint = shared.app, "--app"
    if app:
        engine = load_app(app, param_hint=app_hint)
        if url:
            _note_store_replaced(engine, url)
            engine.use_store(url)
    else:
        try:
            engine = ECSWorkflowEngine(store=url)
        except WorkflowError as exc:  # an installed plugin's contribution failed
            raise click.ClickException(str(exc)) from None
    if not in_process and engine.store_url.startswith("memory:"):
        raise _memory_refused()  # from --store, WFE_STORE or the app's own
    # Whose store it is, for an error naming it: the app's code's, or --store's.
    named_by_app = app if app and not url and engine._store_arg else None
    if reading:
        _read_as_is(engine)
        engine._unsaved_workflows.clear()
    if existing:  # the app's own, or the one --store or WFE_STORE names
        _check_store_exists(engine, named_by_app)
    return engine


def _read_as_is(engine: ECSWorkflowEngine) -> None:
    """Have the engine's SQLite store read a store of the schema before as it is
    (``SQLiteStore.upgrade``)."""
    try:
        store = engine._unopened_store()
    except WorkflowError:
        return  # opening the store says what is wrong
    if isinstance(store, SQLiteStore):
        store.upgrade = False
        engine.use_store(store)


def _note_store_replaced(engine: ECSWorkflowEngine, url: str) -> None:
    """Say so when --store or WFE_STORE overrides the store an app names in code: a
    WFE_STORE left in the shell would otherwise quietly serve another store."""
    own = engine._store_arg
    if isinstance(own, str) and own != url:
        click.echo(
            f"wfe: using the store {shown_url(url)} (from --store or WFE_STORE), "
            f"not the app's own {shown_url(own)}",
            err=True,
        )


class _InputError(click.ClickException):
    """Input the command cannot take, found after click parsed it: exit status 2, as
    for click's usage errors, in one line."""

    exit_code = 2


# How many ids starting alike an ambiguous start names.
_IDS_NAMED = 5


async def _full_id(engine: ECSWorkflowEngine, given: str) -> str:
    """The id of the task ``given`` names: ``given`` itself when a task has it, else
    the one id wfcore made up (32 hex digits) that starts with it, given 6 hex
    digits or more, as a listing shows their start. Raises _InputError naming the
    ids when several start so; returns ``given`` when none does, for the command
    to say it is unknown. Ids an app or a client chose are taken whole only: the
    start of one (``order-1``) must never stand for another (``order-1001``)."""
    store = await engine.get_store()
    found = await ids_started_by(store, given, _IDS_NAMED + 1)
    if not found or await store.get_task(given) is not None:
        return given
    if len(found) > 1:
        named = ", ".join(found[:_IDS_NAMED]) + (", ..." if len(found) > _IDS_NAMED else "")
        raise _InputError(
            f"{given!r} starts the ids of several tasks ({named}): give more of the id"
        )
    return found[0]


def _check_names(workflow: str | None, phase: str | None) -> None:
    """Refuse a --workflow or --phase given empty, or that is no UTF-8 text."""
    for option, name in (("--workflow", workflow), ("--phase", phase)):
        if name == "":
            raise click.BadParameter("is empty", param_hint=option)
        if name is not None and not is_unicode_text(name):
            raise click.BadParameter(f"{name!r} is not UTF-8 text", param_hint=option)


async def _refuse_unknown_names(
    engine: ECSWorkflowEngine, workflow: str | None, phase: str | None = None
) -> None:
    """Raise _InputError for a --workflow or --phase that names nothing there is:
    no stored workflow, none of the app's, and no task. Asked when a command found
    nothing to list, retry or purge, where a typo would read as a workflow (or a
    phase) with nothing to show. A workflow or phase that has tasks is never
    refused: a workflow not stored (yet), a phase its workflow no longer has."""
    if workflow is None and phase is None:
        return
    store = await engine.get_store()
    specs = {spec.name: spec for spec in await store.load_workflows()}
    # The app's too (--app), which a command that only reads does not store.
    specs.update(engine.workflows)
    if (
        workflow is not None
        and workflow not in specs
        and not any((await store.count_tasks(workflow)).values())
    ):
        known = ", ".join(sorted(specs)) or "none"
        raise _InputError(f"unknown workflow {workflow!r} (known: {known})")
    if phase is None:
        return
    if workflow is None:
        searched = list(specs.values())
    else:
        searched = [specs[workflow]] if workflow in specs else []
    if any(phase in spec.classifications for spec in searched):
        return
    if any((await store.count_tasks(workflow, **phase_filter(store, phase))).values()):
        return
    if workflow is None:
        raise _InputError(f"no stored workflow has a phase {phase!r} (wfe workflows lists them)")
    if workflow in specs:
        known = ", ".join(specs[workflow].classifications) or "none"
        raise _InputError(f"workflow {workflow!r} has no phase {phase!r} (its phases: {known})")
    raise _InputError(f"no task of workflow {workflow!r} is at a phase {phase!r}")


def _memory_refused() -> click.ClickException:
    return _InputError(
        "memory:// lives in this one command's process and ends with it: "
        "use a store the commands share (sqlite:///path; --store or WFE_STORE)"
    )


def _check_store_exists(engine: ECSWorkflowEngine, named_by_app: str | None = None) -> None:
    """Refuse the engine's store if it does not exist yet: opening it would create
    it empty, and a mistyped --store or WFE_STORE would look like an empty store.
    A store that cannot tell (:meth:`Store.exists` says None) is let through.
    ``named_by_app``: the app (``myapp:engine``) whose code names the store, where
    to look then instead of --store and WFE_STORE."""
    store = _store_to_make(engine)
    if store is not None:
        where = (
            f"the store {named_by_app} names in code, its store=; --store or WFE_STORE "
            "picks another"
            if named_by_app
            else "check --store and WFE_STORE"
        )
        raise click.ClickException(
            f"no store at {store.location}: nothing was submitted or run there ({where})"
        )


def _store_to_make(engine: ECSWorkflowEngine) -> Store | None:
    """The store ``engine`` is to open, if opening it makes it (see
    :meth:`ECSWorkflowEngine.store_to_create`)."""
    return _run(engine.store_to_create())


def _new_store_place(engine: ECSWorkflowEngine) -> str | None:
    """Where the store ``engine`` is to open will be made, if opening makes it."""
    store = _store_to_make(engine)
    return None if store is None else store.location


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist, deepest first."""
    missing = []
    while not folder.exists() and folder.parent != folder:
        missing.append(folder)
        folder = folder.parent
    return missing


def _remove_store_file(path: Path, folders: list[Path]) -> bool:
    """Remove a SQLite store this command created, with its side files and the
    folders made for it (``folders``, deepest first); False when it is left
    because another process uses it now, or stored something in it.

    The store was new when this command began, but a worker or another command
    may have opened it since: its file goes only while SQLite's exclusive lock
    shows nobody else has it open and it holds no task.
    """
    try:
        db = sqlite3.connect(f"{path.as_uri()}?mode=rw", uri=True, timeout=0, isolation_level=None)
    except sqlite3.Error:
        return True  # never made (its folder is a file, say), or gone
    try:
        # Leaving WAL mode needs every other connection closed; then the
        # exclusive lock keeps new ones out while the file goes. Other commands
        # failing at once on the new store close theirs within moments: asked
        # again for a second, the last of them removes it.
        for attempt in range(20):
            try:
                db.execute("PRAGMA journal_mode=DELETE")
                db.execute("BEGIN EXCLUSIVE")
                break
            except sqlite3.OperationalError:
                if attempt == 19:
                    raise
                time.sleep(0.05)
        # Workflows are not looked at: an app's are stored as its engine opens.
        made = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'tasks'").fetchone()
        if made and db.execute("SELECT 1 FROM tasks LIMIT 1").fetchone() is not None:
            db.execute("ROLLBACK")
            db.execute("PRAGMA journal_mode=WAL")  # as the store keeps it
            return False
        for suffix in ("", "-wal", "-shm", "-journal"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
    except (sqlite3.Error, OSError):
        return False  # in use (locked), or not to be touched
    finally:
        db.close()
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            break  # something else is in it now
    return True


def _note_created(place: Path | str | None) -> None:
    """Say that a command created a store (at ``place``, once it opened it): a
    mistyped --store or WFE_STORE would otherwise go unnoticed (the first run on a
    new store needs it made, though)."""
    if place is not None and (not isinstance(place, Path) or place.exists()):
        click.echo(f"wfe: created a new store at {place}", err=True)


def _run(coro: Coroutine[Any, Any, _T], invalid_input: tuple[type[WorkflowError], ...] = ()) -> _T:
    """Run a command's coroutine; a WorkflowError is the one-line Error (exit 1, or
    2 for one of ``invalid_input``: the command line named something that is not)."""
    try:
        return _run_interruptible(coro)
    except invalid_input as exc:
        raise _InputError(str(exc)) from None
    except WorkflowError as exc:
        raise _workflow_error(exc) from None
    finally:
        _close_unstarted(coro)


def _run_interruptible(coro: Coroutine[Any, Any, _T]) -> _T:
    """``asyncio.run(coro)``, where Ctrl-C at any moment is a KeyboardInterrupt
    ("wfe: interrupted", exit 130), never a traceback."""
    if sys.version_info < (3, 11):  # no asyncio.Runner: asyncio.run's own ways
        return asyncio.run(coro)
    try:
        with asyncio.Runner(loop_factory=_new_loop) as runner:
            return runner.run(coro)
    except asyncio.CancelledError:
        # Ctrl-C after the runner made its task but before the task started: the
        # runner cancels the task and lets the cancellation out.
        raise KeyboardInterrupt from None


def _new_loop() -> asyncio.AbstractEventLoop:
    with _sigint_held():
        return _CommandLoop()


class _CommandLoop(asyncio.SelectorEventLoop):
    """The event loop of a command: Ctrl-C is held back while it is made or closed.
    Pressed inside either, it would leave half a loop, whose garbage collection
    prints a traceback ('_UnixSelectorEventLoop' object has no attribute '_ssock')."""

    def close(self) -> None:
        with _sigint_held():
            super().close()


@contextlib.contextmanager
def _sigint_held() -> Iterator[None]:
    """SIGINT waits (it arrives once the block ends) where the system can hold it."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def _close_unstarted(coro: Coroutine[Any, Any, Any]) -> None:
    """Close a command's coroutine that Ctrl-C kept from starting, and the
    coroutines it was given (``_closing(engine, wait())``): else Python warns at
    exit that they were never awaited, where "wfe: interrupted" is all a person
    should see. A coroutine that ran is closed already."""
    frame = getattr(coro, "cr_frame", None)
    if frame is not None and inspect.getcoroutinestate(coro) == inspect.CORO_CREATED:
        for value in frame.f_locals.values():
            if inspect.iscoroutine(value):
                value.close()
    coro.close()


def _workflow_error(exc: WorkflowError) -> click.ClickException:
    """The one-line Error (exit 1) a command shows for a WorkflowError; a refused
    output lists each of its problems on a line of its own."""
    if isinstance(exc, InvalidOutputError):
        lines = "\n".join(f"  - {e}" for e in exc.errors)
        return click.ClickException(f"{exc.summary}:\n{lines}" if lines else str(exc))
    if isinstance(exc, UnknownTaskError):
        return click.ClickException(f"{exc}{_id_hint(exc.task_id)}")
    return click.ClickException(str(exc))


def _id_hint(given: str) -> str:
    """Why a start of an id wfcore made may have named nothing: too short, or not
    in lower case (ids are compared exactly)."""
    if not isinstance(given, str) or not re.fullmatch(r"[0-9a-fA-F]{1,32}", given):
        return ""
    if len(given) < 6:
        return " (the start of an id wfcore made must be 6 characters or more)"
    if given != given.lower():
        return " (the ids wfcore makes are in lower case)"
    return ""


async def _closing(engine: ECSWorkflowEngine, coro: Awaitable[_T]) -> _T:
    try:
        return await coro
    finally:
        await engine.aclose()


def _task_json(task: Task) -> str:
    """A task as every command prints it with --json: with its version, which
    wfe resume --if-version takes back."""
    return _json_out(task_to_dict(task, internal=True), indent=2)


def _tasks_json(tasks: list[Task]) -> str:
    docs = [task_to_dict(task, internal=True) for task in tasks]
    return _json_out(docs, indent=2)


def _json_out(value: Any, indent: int | None = None) -> str:
    """``value`` as JSON for stdout: its text as it is where stdout takes any
    (UTF-8), else written as \\uXXXX escapes, which every JSON reader decodes, rather
    than an error in a terminal or file of another encoding (latin-1, cp1252)."""
    return json.dumps(value, indent=indent, ensure_ascii=not _utf8(sys.stdout))


def _utf8(stream: TextIO) -> bool:
    encoding = getattr(stream, "encoding", None) or ""
    return encoding.lower().replace("_", "-") in ("utf-8", "utf8")


def _unencodable_escaped() -> None:
    """Have stdout and stderr write what their encoding cannot (日本 in latin-1, say)
    as backslash escapes instead of failing with UnicodeEncodeError."""
    for stream in (sys.stdout, sys.stderr):
        if stream is not None and not _utf8(stream) and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def _read_data(value: str, option: str = "--data") -> str:
    """The JSON text of ``option`` (submit's --data, resume's --output): as given,
    from stdin (``-``) or from a file (``@FILE``). Stdin and files are read as UTF-8,
    as JSON is exchanged, whatever the locale (a latin-1 one would turn 日本 into
    mojibake), after a byte order mark if any."""
    if value == "-":
        if sys.stdin is None:  # started with it closed (<&-): Python gives None
            raise click.BadParameter("stdin is closed: no JSON to read", param_hint=option)
        try:
            text = sys.stdin.buffer.read().decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise click.BadParameter(
                f"stdin is not UTF-8 text ({exc})", param_hint=option
            ) from None
        source = "stdin"
    elif value.startswith("@"):
        try:
            text = Path(value[1:]).read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise click.BadParameter(
                f"cannot read {value[1:]!r}: {reason}", param_hint=option
            ) from None
        source = repr(value[1:])
    else:
        return value  # _parse_json names an empty one
    if not text.strip():
        # JSON's own "Expecting value: line 1 column 1 (char 0)" would not say why.
        raise click.BadParameter(f"{source} is empty: no JSON to read", param_hint=option)
    return text


def _parse_json(value: str, option: str) -> Any:
    if not value.strip():
        # As --data "$DATA" gives with the variable unset; "null" is the JSON for none.
        raise click.BadParameter(
            f"{value!r} is empty, not JSON (an unset variable?); null is JSON for no value",
            param_hint=option,
        )
    try:
        return json.loads(
            value,
            parse_constant=refuse_json_constant,
            parse_float=finite_json_float,
            object_pairs_hook=object_without_repeats,
        )
    except ValueError as exc:
        raise click.BadParameter(f"not valid JSON ({exc})", param_hint=option) from None
    except RecursionError:
        # Deeper than Python's stack: deeper than any task may be, too.
        raise click.BadParameter(
            f"it is nested deeper than {MAX_JSON_DEPTH} levels", param_hint=option
        ) from None


def load_app(spec: str, param_hint: str = "APP") -> ECSWorkflowEngine:
    """Import ``MODULE:ATTR`` and return the engine it names (or that its factory makes).

    Every way this can fail (a bad spec, an app that does not import or raises while
    importing, a factory that fails) is a :class:`click.BadParameter` naming
    ``param_hint`` and the cause, in one line.
    """
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise click.BadParameter(f"expected MODULE:ATTR, got {spec!r}", param_hint=param_hint)
    if module_name.startswith("."):
        # importlib's words for it ("the 'package' argument is required") are its own.
        hint = _module_hint(module_name, attr) or (
            ": MODULE is a module's dotted name from the current folder or PYTHONPATH, "
            "not a relative one"
        )
        raise click.BadParameter(f"cannot import {module_name!r}{hint}", param_hint=param_hint)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        # What the app prints as it loads goes to stderr: stdout is the command's own
        # (a submitted task's id, --json), which scripts read.
        with contextlib.redirect_stdout(sys.stderr):
            module = importlib.import_module(module_name)
    except ImportError as exc:
        _log_traceback(exc)
        raise click.BadParameter(
            f"cannot import {module_name!r}: {exc}{_where(exc)}{_module_hint(module_name, attr)}",
            param_hint=param_hint,
        ) from None
    except Exception as exc:  # a SyntaxError, or the app's own code raising
        _log_traceback(exc)
        raise click.BadParameter(
            f"importing {module_name!r} failed: {_describe(exc)}{_where(exc)}"
            f"{_module_hint(module_name, attr)}",
            param_hint=param_hint,
        ) from None
    except SystemExit as exc:
        # Left alone, the app's sys.exit() would end wfe with the app's status and no
        # word of why: 0 for a worker that never ran or a submit that stored nothing.
        _log_traceback(exc)
        raise click.BadParameter(
            f"importing {module_name!r} failed: {_exited(exc, 'as it was imported')}"
            f"{_where(exc, app_only=True)}",
            param_hint=param_hint,
        ) from None
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise click.BadParameter(
            f"module {module_name!r} has no attribute {attr!r}", param_hint=param_hint
        ) from None
    if not isinstance(obj, ECSWorkflowEngine) and callable(obj):
        try:
            with contextlib.redirect_stdout(sys.stderr):
                obj = obj()
        except Exception as exc:
            _log_traceback(exc)
            raise click.BadParameter(
                f"calling {spec}() failed: {_describe(exc)}{_where(exc)}", param_hint=param_hint
            ) from None
        except SystemExit as exc:
            _log_traceback(exc)
            raise click.BadParameter(
                f"calling {spec}() failed: {_exited(exc, 'as it made the engine')}"
                f"{_where(exc, app_only=True)}",
                param_hint=param_hint,
            ) from None
        if inspect.iscoroutine(obj):
            obj.close()  # never to run: Python would warn at exit that it was not awaited
            raise click.BadParameter(
                f"{spec} is an async function: wfe calls a factory without awaiting it; "
                "make it a plain function (def, not async def) that returns the engine",
                param_hint=param_hint,
            )
    if not isinstance(obj, ECSWorkflowEngine):
        raise click.BadParameter(
            f"{spec} is neither an ECSWorkflowEngine nor a factory returning one",
            param_hint=param_hint,
        )
    return obj


def _module_hint(module_name: str, attr: str) -> str:
    """`` (MODULE is a module's dotted name, not a file: pkg.app:engine)`` for a
    file path given as the module, as in ``app.py:engine``; else "". A file outside
    the current folder (``/srv/app/app.py``, ``../app.py``) has no dotted name from
    here: the hint names the folder to import it from instead."""
    is_path = "/" in module_name or os.sep in module_name
    if not module_name.endswith(".py") and not is_path:
        return ""
    said = " (MODULE is a module's dotted name, not a file: "
    if not is_path:  # apps.billing.py
        return f"{said}{module_name.removesuffix('.py').strip('.')}:{attr})"
    path = Path(os.path.abspath(module_name.removesuffix(".py")))
    here = Path(os.getcwd())
    if path.is_relative_to(here) and path != here:
        return f"{said}{'.'.join(path.relative_to(here).parts)}:{attr})"
    return f"{said}{path.name}:{attr}, with PYTHONPATH={path.parent} or run from that folder)"


def _where(exc: BaseException, app_only: bool = False) -> str:
    """`` (at app.py, line 12)``: the app's line the error came from, the innermost
    frame outside wfcore and the import machinery; "" when there is none (a
    SyntaxError says where itself). ``app_only``: outside the standard library too,
    so that an exit names the app's line that called argparse, not argparse's."""
    if isinstance(exc, SyntaxError):
        return ""
    skipped = (str(Path(__file__).resolve().parent.parent), str(Path(importlib.__file__).parent))
    where = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        name = frame.filename
        # "<frozen importlib._bootstrap>", "<attrs generated methods ...>": no file
        if name.startswith("<") or str(Path(name).resolve()).startswith(skipped):
            continue
        if app_only and _in_stdlib(Path(name).resolve()):
            continue
        where = f" (at {name}, line {frame.lineno})"
    return where


def _in_stdlib(path: Path) -> bool:
    """Whether ``path`` is a module of Python's standard library (not of the
    installed packages, which outside a virtualenv live in a folder inside it)."""
    paths = sysconfig.get_paths()
    packages = [Path(paths[key]).resolve() for key in ("purelib", "platlib")]
    return path.is_relative_to(Path(paths["stdlib"]).resolve()) and not any(
        path.is_relative_to(folder) for folder in packages
    )


def _log_traceback(exc: BaseException) -> None:
    # The whole story at --log-level debug; the error line names the app's line.
    logging.getLogger("wfcore").debug("loading the app failed", exc_info=exc)


def _exited(exc: SystemExit, when: str) -> str:
    """What an app's ``sys.exit()`` (argparse's on arguments it does not know among
    them) while wfe loads it says: which status, and where it most often comes from."""
    return (
        f"SystemExit: {exc.code} (the app called sys.exit() {when}; argparse does when "
        "it parses wfe's command line: parse the app's own arguments only under "
        "if __name__ == '__main__')"
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SyntaxError):
        return f"SyntaxError: {exc.msg} ({exc.filename}, line {exc.lineno})"
    return f"{type(exc).__name__}: {exc}"


class _Group(click.Group):
    """The root group: ``wfe ui`` without the dashboard says where it comes from, and
    a plugin's command never replaces another command."""

    #: The plugin whose ``wfe_register_commands`` runs now (set by main()).
    adding_for: str | None = None
    #: The commands plugins added: the plugin that added each.
    added_by: ClassVar[dict[str, str]] = {}

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        name = name or cmd.name
        plugin = self.adding_for
        if plugin is not None and name is not None:
            owner = self.added_by.get(name)
            if name in self.commands and owner != plugin:
                if owner is None:
                    said = (
                        f"plugin {plugin!r} adds a command {name!r}, the name of a built-in "
                        "wfe command; the built-in one is kept and the plugin's left out"
                    )
                else:
                    # Which one comes first depends on the order the plugins load in.
                    said = (
                        f"plugins {owner!r} and {plugin!r} both add a command {name!r}; the "
                        f"one of {owner!r} is kept, as it was added first, and the one of "
                        f"{plugin!r} left out (to choose, disable the other plugin with "
                        "WFE_DISABLED_PLUGINS)"
                    )
                click.echo(f"Warning: {said}", err=True)
                return
            self.added_by[name] = plugin
        super().add_command(cmd, name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.NoSuchOption as exc:
            if exc.option_name != "--log-level":
                raise
            # --store works after the command name; --log-level is the group's only.
            raise click.UsageError(
                exc.message.rstrip(".") + ": it goes before the command name (wfe "
                f"--log-level LEVEL {ctx.invoked_subcommand or 'COMMAND'} ...), or set "
                "WFE_LOG_LEVEL",
                exc.ctx,
            ) from None
        except KeyboardInterrupt:
            # Ctrl-C: 130, as a shell reports a process SIGINT ended, not click's
            # "Aborted!" and 1, which a script cannot tell from a failure.
            click.echo("wfe: interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise  # click's own way to fail or exit: it says what it has to say
        except OSError as exc:
            output_lost = _stdout_write_failed(exc)
            if exc.errno == errno.EPIPE and not (
                output_lost and ctx.invoked_subcommand in _CHANGING_COMMANDS
            ):
                raise  # the reader is gone (| head): click ends quietly
            if output_lost:
                raise _output_lost(ctx.invoked_subcommand or "", exc) from None
            self._plugin_failed(ctx, exc)
            raise
        except Exception as exc:
            self._plugin_failed(ctx, exc)
            raise  # a built-in command's: a bug in wfcore, worth its traceback

    def _plugin_failed(self, ctx: click.Context, exc: Exception) -> None:
        """Raise the Error for ``exc`` if a plugin's command raised it."""
        name = ctx.invoked_subcommand or ""
        plugin = self.added_by.get(name)
        if plugin is not None:
            raise _plugin_command_failed(name, plugin, exc) from None

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except OSError as exc:
            # wfe --help or --version, printed as the options are parsed
            if exc.errno != errno.EPIPE and _stdout_write_failed(exc):
                raise _output_lost(None, exc) from None
            raise

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        if args and args[0] == "ui" and self.get_command(ctx, "ui") is None:
            if not ctx.resilient_parsing:
                ctx.fail(_no_ui())
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as exc:
            # An installed plugin's command, while WFE_LOAD_PLUGINS or
            # WFE_DISABLED_PLUGINS keeps the plugin out: say which are kept out.
            kept_out = not_loaded_plugins()
            if kept_out and exc.message.startswith("No such command"):
                said = f"{exc.message.rstrip('.')} (plugins not loaded: {kept_out})"
                raise click.UsageError(said, exc.ctx) from None
            raise


# The commands that change the store before they print: their output lost to a
# reader gone (| head) is said, so that the change is not taken for one that failed
# and made again. (Those that only read end quietly, as a pipe's writer does.)
_CHANGING_COMMANDS = frozenset({"submit", "resume", "cancel", "retry", "priority", "purge"})


def _stdout_write_failed(exc: OSError) -> bool:
    """Whether ``exc`` came from writing the command's output to stdout (click.echo
    to a file on a full disk, or a device failing), not from what the command did."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    frame = tb.tb_frame
    if frame.f_code is not click.utils.echo.__code__ or frame.f_locals.get("err"):
        return False
    try:
        return bool(frame.f_locals["file"].fileno() == 1)
    except (KeyError, AttributeError, OSError, ValueError):
        return False


def _output_lost(name: str | None, exc: OSError) -> click.ClickException:
    """The one-line Error (exit 1) for output that could not be written to stdout;
    stdout then goes to the null device, so that Python's flush at exit does not
    fail again with a traceback of its own."""
    with contextlib.suppress(OSError):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.close(null)
    said = f"cannot write to stdout: {exc.strerror or exc}"
    if name:
        # Commands print after they act: a submit, cancel or purge is not to be taken
        # for one that failed and run again.
        said += f" (wfe {name} did its work; only its output is lost)"
    return click.ClickException(said)


def _plugin_command_failed(name: str, plugin: str, exc: Exception) -> click.ClickException:
    """The Error (exit 1) for a plugin's command that raised: a WorkflowError as a
    built-in command shows it, anything else in a line naming the command, the
    plugin and the exception. The traceback is for --log-level debug, as the
    plugin's author needs it and a user of the command does not."""
    if isinstance(exc, WorkflowError):
        return _workflow_error(exc)
    log = logging.getLogger("wfcore.cli")
    log.debug("wfe %s (plugin %r) failed", name, plugin, exc_info=exc)
    said = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    hint = "" if log.isEnabledFor(logging.DEBUG) else " (--log-level debug shows the traceback)"
    return click.ClickException(f"wfe {name}, a command of plugin {plugin!r}, failed: {said}{hint}")


def _no_ui() -> str:
    """Why there is no ``wfe ui``: its package is not installed, or not loaded."""
    said = "No such command 'ui': the dashboard is the separate wfe_flaskui package"
    found = [
        (name, dist)
        for name, dist in installed_plugins()
        if dist is not None and dist.replace("_", "-").lower() == "wfe-flaskui"
    ]
    if not found:
        return f"{said}; install it (from a checkout of wfcore: pip install -e plugins/wfe_flaskui)"
    reason = why_not_loaded(*found[0])
    if reason is not None:
        return f"{said}, installed but not loaded: {reason}"
    return f"{said}, installed but it did not add the command (see the warning above)"


def _log_level(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--log-level``, in any case; a wrong one names WFE_LOG_LEVEL when it came from
    there, which the command line does not show."""
    if value is None or value.upper() in _LOG_LEVELS:
        return value
    source = ctx.get_parameter_source("log_level")
    where = "WFE_LOG_LEVEL" if source is click.core.ParameterSource.ENVIRONMENT else None
    choices = ", ".join(repr(level.lower()) for level in _LOG_LEVELS)
    raise click.BadParameter(
        f"{value!r} is not one of {choices}", param_hint=where and f"{where} (--log-level)"
    )


@click.group(
    cls=_Group, context_settings={"help_option_names": ["-h", "--help"]}, epilog=_EXIT_STATUSES
)
@click.version_option(package_name="wfcore", prog_name="wfe")
@click.option("--store", "store", metavar="URL", envvar="WFE_STORE", help=_STORE_HELP)
@click.option(
    "--log-level",
    metavar="[debug|info|warning|error]",
    callback=_log_level,
    envvar="WFE_LOG_LEVEL",
    help="Log lines on stderr from this level up [env WFE_LOG_LEVEL; default: INFO for "
    "wfe worker, else WARNING].",
)
@click.pass_context
def cli(ctx: click.Context, store: str | None, log_level: str | None) -> None:
    """wfe: run and inspect wfcore workflows.

    \b
    Typical use:
      wfe worker myapp:engine              # process tasks (Ctrl-C stops cleanly)
      wfe submit review --data '{"doc": "a.txt"}'
      wfe tasks --status waiting_human
      wfe resume TASK_ID --output '{"approved": true}'
      wfe wait TASK_ID --timeout 10m       # until it finishes; prints its output
      wfe status                           # counts by workflow and status
    """
    ctx.obj = _Context(store)
    if _LOG_HANDLER:  # run as the wfe command (main()), not called by an app
        default = "INFO" if ctx.invoked_subcommand == "worker" else "WARNING"
        _setup_logging(getattr(logging, (log_level or default).upper()))


_WAITING = (TaskStatus.WAITING_HUMAN, TaskStatus.WAITING_AGENT, TaskStatus.WAITING_IO)
_FINISHED = (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)
_STATUS_NAMES = ", ".join(s.value for s in TaskStatus)


def _parse_statuses(
    values: tuple[str, ...],
    option: str = "--status",
    allowed: tuple[TaskStatus, ...] = (),
    done_to: str = "purged",
) -> list[TaskStatus]:
    """``pending``, ``FAILED``, ``waiting`` (the three waiting_* ones), given as a
    repeated option, separated by commas, or both. ``allowed``: the only statuses
    the command takes (else any); ``done_to``, what it does to them, words the
    refusal of another ("completed tasks are never retried")."""
    wanted: list[TaskStatus] = []
    names = [name.strip() for value in values for name in value.split(",")]
    if allowed:
        choices = f"one of: {', '.join(s.value for s in allowed)}"
    else:
        choices = f"one of: {_STATUS_NAMES}; or waiting, for the three waiting_* ones"
    for name in names:
        if not name:
            continue  # "pending," or "pending,,failed"
        if name.lower() == "waiting":
            found: tuple[TaskStatus, ...] = _WAITING
        else:
            try:
                found = (TaskStatus.parse(name),)
            except WorkflowError:
                raise click.BadParameter(
                    f"unknown status {name!r} ({choices}; several separated by commas)",
                    param_hint=option,
                ) from None
        refused = [status for status in found if allowed and status not in allowed]
        if refused:
            what = "waiting" if len(found) > 1 else refused[0].value
            raise click.BadParameter(
                f"{what} tasks are never {done_to}; only {_or(s.value for s in allowed)}",
                param_hint=option,
            )
        wanted += [status for status in found if status not in wanted]
    if not wanted:
        raise click.BadParameter("no status given", param_hint=option)
    return wanted


def _or(names: Iterable[str]) -> str:
    """``a, b or c``."""
    items = list(names)
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _start_option(delay: str | None, at: str | None) -> float | datetime | None:
    """``wfe submit``'s --delay (seconds) or --at (an aware datetime)."""
    if delay is not None and at is not None:
        raise click.UsageError("give --delay or --at, not both")
    # Checked as submit_task checks run_after, but named as the option given, and
    # before a store is opened (or made, and removed again).
    if delay is not None:
        seconds = _parse_age(delay, "--delay", "a duration")
        if seconds > LONGEST_WAIT:
            raise click.BadParameter(f"{delay!r} is more than 100 years", param_hint="--delay")
        return seconds
    if at is None:
        return None
    try:
        when = parse_time(at)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--at") from None
    if when - datetime.now(timezone.utc) > timedelta(seconds=LONGEST_WAIT):
        raise click.BadParameter(f"{at!r} is more than 100 years away", param_hint="--at")
    if when <= datetime.now(timezone.utc):
        click.echo(f"wfe: --at {at} is in the past: the task starts now", err=True)
    return when


def _parse_age(value: str, option: str = "--older-than", noun: str = "an age") -> float:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` (or ``0``) as seconds."""
    text = value.strip()
    if text.endswith("M"):
        # Months or minutes? Guessing wrong would make purge delete months of tasks.
        raise click.BadParameter(
            f"{value!r} is ambiguous: write m for minutes, or days for months (e.g. 90d)",
            param_hint=option,
        )
    text = text.lower()
    number, unit = (text[:-1], text[-1]) if text[-1:] in _AGE_UNITS else (text, "")
    try:
        amount = float(number)
    except ValueError:
        amount = -1.0
    if not 0 <= amount < math.inf or (not unit and amount != 0):  # also refuses NaN
        raise click.BadParameter(
            f"{value!r} is not {noun}: a number with a unit, s, m, h, d or w (e.g. 30d)",
            param_hint=option,
        )
    return amount * _AGE_UNITS.get(unit, 1)


def _starts(task: Task) -> str:
    """When a delayed pending task (submitted with run_after, or between attempts) runs."""
    if task.status is not TaskStatus.PENDING or task.run_after is None:
        return ""
    if task.run_after <= datetime.now(timezone.utc):
        return ""
    return f"runs after {task.run_after.strftime('%Y-%m-%d %H:%M:%S')}"


# Control characters (C0, DEL, C1) as Python writes them in a string literal, and
# the bidirectional embeddings, overrides and isolates, which reorder what follows
# them on the line ("\u202etxt.exe" shows as "exe.txt").
_ESCAPED = {
    code: repr(chr(code))[1:-1] if code < 0xA0 else f"\\u{code:04x}"
    for code in (*range(0x20), *range(0x7F, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A))
}
_ESCAPED_BUT_LINES = {code: text for code, text in _ESCAPED.items() if chr(code) not in "\n\t"}


def _printable(text: str, lines: bool = False) -> str:
    """``text`` with its control characters written out (``\\x1b``, ``\\r``,
    ``\\u202e``), for printing to a terminal: a task's error, question or output may
    come from another program or service, and a terminal would act on them (move
    back over the line, set its title, change colours, reorder the line).
    ``lines``: keep newlines and tabs."""
    return text.translate(_ESCAPED_BUT_LINES if lines else _ESCAPED)


def _schedule_lines(
    engine: ECSWorkflowEngine, latest: dict[str, LatestRun] | None = None
) -> list[str]:
    """A line for each of the engine's schedules: its workflow, the priority of its
    tasks (when not 0), its period and next slot, and how its ``latest`` run stands
    when given; and, for a worker that runs only some workflows (--workflow) but
    not the schedule's, that it submits its tasks for other workers to run."""
    now = datetime.now(timezone.utc)
    only = engine.only_workflows
    lines = []
    for schedule in sorted(engine.schedules.values(), key=lambda s: s.name):
        upcoming = schedule.next_slot(now).astimezone(timezone.utc)
        priority = f" (priority {schedule.priority})" if schedule.priority else ""
        elsewhere = (
            f"; submitted here, run by workers of {schedule.workflow_name}, "
            f"not this one (--workflow: it runs {', '.join(only)})"
            if only is not None and schedule.workflow_name not in only
            else ""
        )
        run = (latest or {}).get(schedule.name)
        last = ""
        if run is not None:
            how = (
                run.status.value
                if run.status
                else "not in the store (no worker ran then or knew its workflow, or purged)"
            )
            last = f"; last at {run.slot.astimezone(timezone.utc):%Y-%m-%d %H:%M:%S} UTC: {how}"
        lines.append(
            _printable(
                f"schedule {schedule.name}: a {schedule.workflow_name} task{priority} every "
                f"{schedule.period}, next at {upcoming:%Y-%m-%d %H:%M:%S} UTC{last}{elsewhere}"
            )
        )
    return lines


def _short(text: str, width: int = 48) -> str:
    text = _printable(" ".join(text.split()))
    return text if len(text) <= width else text[: width - 1] + "…"


def _table(headers: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    rows = [tuple(_printable(str(v)) for v in row) for row in rows]
    widths = [max(_width(str(v)) for v in col) for col in zip(headers, *rows, strict=False)]
    for row in (headers, *rows):
        cells = [str(v) + " " * (w - _width(str(v))) for v, w in zip(row, widths, strict=True)]
        click.echo("  ".join(cells).rstrip())


def _width(text: str) -> int:
    """Columns ``text`` takes in a terminal: wide characters (CJK, most emoji) take
    two, combining marks and joiners none; the rest one."""
    if text.isascii():
        return len(text)
    width = 0
    for char in text:
        if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf"):
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width

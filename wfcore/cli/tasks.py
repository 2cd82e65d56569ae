"""The ``wfe`` commands that change tasks: submit, wait, resume, cancel, retry,
priority and purge."""

from __future__ import annotations

import asyncio
import getpass
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import click

from ..engine import ECSWorkflowEngine
from ..errors import (
    LONGEST_WAIT,
    InvalidTaskError,
    StoreError,
    TaskStateError,
    UnknownTaskError,
    UnknownWorkflowError,
    WorkflowError,
)
from ..model import (
    DEFINE_WORKFLOW,
    MAX_PRIORITY,
    MIN_PRIORITY,
    Task,
    TaskStatus,
    TaskType,
    WorkflowSpec,
    actor_name,
    priority_problem,
)
from ..stores.sqlite import SQLiteStore
from ..wire import workflow_from_dict
from ..worker import _regex_keyword
from ._base import (
    _FINISHED,
    _WAITING,
    EXIT_TASK_FAILED,
    EXIT_TIMED_OUT,
    _app_option,
    _check_names,
    _closing,
    _engine,
    _full_id,
    _InputError,
    _json_out,
    _missing_folders,
    _note_created,
    _parse_age,
    _parse_json,
    _parse_statuses,
    _printable,
    _read_data,
    _refuse_unknown_names,
    _remove_store_file,
    _run,
    _start_option,
    _starts,
    _store_option,
    _store_to_make,
    _task_json,
    cli,
)

# The statuses wfe retry --status takes.
_RETRYABLE = (TaskStatus.FAILED, TaskStatus.CANCELLED)
# The statuses wfe cancel --status takes.
_CANCELLABLE = tuple(status for status in TaskStatus if not status.is_finished)
# wfe retry and cancel: --workflow narrows the tasks --status chose.
_status_workflow_option = click.option(
    "--workflow", "-w", metavar="NAME", help="With --status: only tasks of this workflow."
)

_DEFINE_HINT = f"wfe submit - --classification {DEFINE_WORKFLOW} --data SPEC"


def _priority(ctx: click.Context, param: click.Parameter, value: str) -> int:
    """A priority (``--priority``, ``wfe priority``'s N), checked as submit_task checks
    it (and in its words), before a store is opened or made."""
    hint = "--priority" if isinstance(param, click.Option) else param.human_readable_name
    number = None
    # Digits only: int() would also take 1_000 and other scripts' digits.
    if re.fullmatch(r"\s*[+-]?[0-9]+\s*", value):
        try:
            number = int(value)
        except ValueError:  # more digits than Python converts
            pass
    problem = priority_problem(value if number is None else number)
    if problem is not None or number is None:
        raise click.BadParameter(str(problem), param_hint=hint)
    return number


@cli.command()
@click.argument("workflow")
@click.option(
    "--data",
    "data",
    default="null",
    show_default=True,
    metavar="JSON",
    help="Task data as JSON; - reads it from stdin, @FILE from a file.",
)
@click.option(
    "--phase",
    "--classification",
    "classification",
    metavar="NAME",
    help="Start at this phase instead of classifying.",
)
@click.option(
    "--assigned-to",
    metavar="TYPE",
    default="ai",
    show_default=True,
    help="Task type: human, agentic (ai) or functional.",
)
@click.option(
    "--id", "task_id", metavar="ID", help="Task id; submitting an existing id returns that task."
)
@click.option(
    "--app", metavar="MODULE:ATTR", help="The app whose workflows to know (else the store's)."
)
@click.option(
    "--delay",
    metavar="DURATION",
    help="Start the task this long from now: 30s, 10m, 2h, 1d, 1w.",
)
@click.option(
    "--at",
    "at",
    metavar="TIME",
    help="Start the task at this ISO 8601 time with a UTC offset "
    "(2026-12-01T09:00:00+01:00, or ...Z).",
)
@click.option(
    "--artifact",
    "artifacts",
    multiple=True,
    metavar="[NAME=]FILE",
    help="A file the task starts with, as the artifact NAME (default: the file's "
    "name); repeatable.",
)
@click.option(
    "--priority",
    default="0",
    show_default=True,
    metavar="N",
    callback=_priority,
    help=f"An integer from {MIN_PRIORITY} to {MAX_PRIORITY}: workers take the ready "
    "tasks of the highest priority first.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the task as JSON.")
@_store_option
@click.pass_context
def submit(
    ctx: click.Context,
    workflow: str,
    data: str,
    classification: str | None,
    assigned_to: str,
    task_id: str | None,
    app: str | None,
    delay: str | None,
    at: str | None,
    artifacts: tuple[str, ...],
    priority: int,
    as_json: bool,
    store: str | None,
) -> None:
    """Queue a task for WORKFLOW and print its id.

    A task that defines its own workflow takes "-" as WORKFLOW, with
    --classification define_workflow and the spec as --data. With --delay or
    --at, it waits (pending) until then before its first phase.

    \b
      wfe submit review --data '{"doc": "a.txt"}' --app myapp:engine
      wfe submit review --data @order.json --id order-17 --priority 10
      wfe submit review --data - --delay 2h < order.json
    """
    if workflow == "-" and classification != DEFINE_WORKFLOW:
        given = f", not {classification!r}" if classification is not None else ""
        raise click.UsageError(
            f"WORKFLOW '-' (no workflow) needs --classification {DEFINE_WORKFLOW}{given}: "
            f"{_DEFINE_HINT}"
        )
    payload = _parse_json(_read_data(data), "--data")
    defined = _defined_workflow(payload) if classification == DEFINE_WORKFLOW else None
    run_after = _start_option(delay, at)
    files = _artifact_files(artifacts)
    engine = _engine(ctx, store, app, app_hint="--app")
    # A store this submission makes: a mistyped --store or WFE_STORE, or a first run.
    new_store = _store_to_make(engine)
    # wfcore's SQLite store is a file (and folders) this command can remove again;
    # a plugin's store, even one serving sqlite:// URLs, is the plugin's to remove.
    # (Not an empty file that was there: it is the user's, made into a store or not.)
    new_file = (
        new_store.path
        if isinstance(new_store, SQLiteStore) and not new_store.path.exists()
        else None
    )
    new_folders = _missing_folders(new_file.parent) if new_file is not None else []
    name = None if workflow == "-" else workflow

    submitted: list[Task] = []

    async def submitting() -> Task:
        if defined is not None:
            await _refuse_a_different_definition(engine, defined)
        task = await engine.submit_task(
            payload,
            name,
            classification,
            assigned_to,
            task_id,
            run_after=run_after,
            artifacts=files,
            priority=priority,
        )
        submitted.append(task)
        return task

    try:
        # Input no click option could check: the workflow, classification or type
        # names, data or id the engine refuses.
        task = _run(_closing(engine, submitting()), (UnknownWorkflowError, InvalidTaskError))
    except click.ClickException as exc:
        if submitted:
            # Submitted, then closing the store failed: the task is most likely
            # stored, and submitting it again without --id would make a second one.
            click.echo(_task_json(submitted[0]) if as_json else submitted[0].id)
            click.echo(
                f"wfe: task {submitted[0].id} was submitted, then closing the store "
                f"failed: see whether it is stored (wfe show {submitted[0].id}) before "
                "submitting it again",
                err=True,
            )
            raise
        if new_file is not None:
            # Nothing was stored: a store left behind would make a mistyped path
            # look right to every later command.
            if _remove_store_file(new_file, new_folders):
                click.echo(
                    f"wfe: there is no store at {new_file}; none was left there "
                    "(check --store and WFE_STORE)",
                    err=True,
                )
            else:
                # Another process opened the store this command made, meanwhile.
                _note_created(new_file)
        elif new_store is not None:
            _note_not_made(engine)
        message = exc.message
        if message.startswith("unknown workflow"):
            if workflow == DEFINE_WORKFLOW:
                # define_workflow is the classification that defines one, not a workflow.
                message += f"; to define a workflow: {_DEFINE_HINT}"
            elif app is None:
                message += (
                    " (workers store their app's workflows when they start; "
                    "or name the app with --app MODULE:ATTR)"
                )
        raise type(exc)(message) from None
    if new_store is not None:
        _note_created(new_file if new_file is not None else new_store.location)
    differ = _differences(task, name, payload, classification, assigned_to, run_after, priority)
    if task_id is not None and differ:
        click.echo(
            f"note: task {task_id!r} already exists and was left as it is "
            f"(its {_listed(differ)} {'differs' if len(differ) == 1 else 'differ'} "
            "from this submission)",
            err=True,
        )
    elif files and not _submitted_these(task, files):
        click.echo(
            f"note: task {task_id!r} already exists; its files were left as they were "
            "and the --artifact files were not stored",
            err=True,
        )
    if as_json:
        click.echo(_task_json(task))
    else:
        click.echo(task.id)


def _defined_workflow(spec: Any) -> WorkflowSpec:
    """The workflow a define_workflow task's data defines, checked as the worker
    running the task checks it, so that a spec it would fail is refused here."""
    regex = _regex_keyword(spec)
    if regex is not None:
        where, keyword = regex
        raise click.BadParameter(
            f"{where}: {keyword!r} is not allowed in a workflow defined at run time: a "
            "regular expression from a task could hold a worker's CPU for good; register "
            "the workflow in code to use one",
            param_hint="--data",
        )
    try:
        return workflow_from_dict(spec)
    except WorkflowError as exc:
        raise click.BadParameter(
            f"not a workflow spec, as {DEFINE_WORKFLOW} takes: {exc}", param_hint="--data"
        ) from None


async def _refuse_a_different_definition(engine: ECSWorkflowEngine, spec: WorkflowSpec) -> None:
    """Refuse a spec for a name that an app or an earlier definition gave another
    workflow: the task would fail (a definition never replaces a workflow). The same
    spec again is fine."""
    existing = await engine._workflow(spec.name)
    if existing is None:
        return
    # As the worker compares: all of the spec but its input (start_phases too).
    if existing != attrs.evolve(spec, input=None):
        raise InvalidTaskError(
            f"a different workflow named {spec.name!r} exists already; define this one "
            f"under a new name ({spec.name}-v2, say)"
        )


def _note_not_made(engine: ECSWorkflowEngine) -> None:
    """After a failed submission to a plugin's store that did not exist: say so, and
    whether opening it made one all the same (it cannot be removed from here)."""
    try:
        store = engine._unopened_store()
        now = _run(engine._store_exists(store))
    except (click.ClickException, WorkflowError):
        return  # the submission's own error says what is wrong
    place = store.location
    if now is True:
        click.echo(
            f"wfe: there was no store at {place}; this command made one, with no task in it "
            "(check --store and WFE_STORE)",
            err=True,
        )
    elif now is False:
        click.echo(
            f"wfe: there is no store at {place}; none was left there (check --store and WFE_STORE)",
            err=True,
        )


def _listed(names: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


async def _has_phase(engine: ECSWorkflowEngine, task_id: str, phase: str) -> bool:
    """Whether the workflow of the task has ``phase`` (True when that is unknown)."""
    task = await engine.get_task(task_id)
    spec = None if task is None else await engine._workflow(task.workflow_name)
    return spec is None or spec.phase(phase) is not None


def _differences(
    task: Task,
    workflow: str | None,
    data: Any,
    classification: str | None,
    assigned_to: str,
    run_after: Any,
    priority: int,
) -> list[str]:
    """What of a submission differs from the task already stored under its id, as
    the task was submitted (its phase, priority and start may have changed since)."""
    submitted = _submitted_event(task)
    return [
        what
        for what, same in (
            ("workflow", task.workflow_name == workflow),
            # As JSON: 1 and true, or 1 and 1.0, are other data to another program.
            ("data", _as_json(task.data) == _as_json(data)),
            ("phase", submitted.get("classification", task.classification) == classification),
            # Parsed already by the submission: an unknown type was refused there.
            ("task type", task.assigned_to == TaskType.parse(assigned_to)),
            ("start", ("run_after" in submitted) == (run_after is not None)),
            ("priority", _submitted_priority(task) == priority),
        )
        if not same
    ]


def _as_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _submitted_event(task: Task) -> dict[str, Any]:
    """The task's submitted event (what it was submitted with), or {}."""
    events = task.history[:1]
    if events and isinstance(events[0], dict) and events[0].get("event") == "submitted":
        return events[0]
    return {}


def _submitted_priority(task: Task) -> int:
    """The priority a task was submitted with (its submitted event records one other
    than 0); a phase may have changed the task's own since."""
    submitted = _submitted_event(task)
    if submitted:
        recorded = submitted.get("priority", 0)
        return recorded if isinstance(recorded, int) else task.priority
    return task.priority


def _submitted_these(task: Task, files: dict[str, Any]) -> bool:
    """Whether the task was stored by this submission, files and all (not an
    existing task of the same id)."""
    events = task.history[:1]
    return bool(events) and events[0].get("artifacts") == list(files) and task.version == 0


def _artifact_files(values: tuple[str, ...]) -> dict[str, Any] | None:
    """``--artifact [NAME=]FILE`` values as submit_task's ``artifacts``."""
    files: dict[str, Any] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or _is_file(value):  # a file named k=v.txt is a file
            name, path = Path(value).name, value
        elif not path:
            # Path("") is the current folder: "'.' is not a regular file" said nothing.
            raise click.BadParameter(
                f"{value!r} names no file after '=': give NAME=FILE, or FILE",
                param_hint="--artifact",
            )
        if name in files:
            raise click.BadParameter(f"two files named {name!r}", param_hint="--artifact")
        try:
            Path(path).stat()
        except (FileNotFoundError, NotADirectoryError):
            pass  # submit_task names the file that does not exist
        except OSError as exc:  # a name too long to look up, a folder it may not read
            raise click.BadParameter(
                f"cannot read {path!r}: {exc.strerror or exc}", param_hint="--artifact"
            ) from None
        files[name] = Path(path)
    return files or None


def _is_file(value: str) -> bool:
    """Whether ``value`` names an existing file; a name the file system cannot look
    up (too long, say), for which Path.is_file raises, does not."""
    try:
        return Path(value).is_file()
    except OSError:
        return False


@cli.command()
@click.argument("task_id")
@click.option(
    "--timeout",
    metavar="DURATION",
    help="Give up after this long: 30s, 10m, 2h (default: wait for ever).",
)
@click.option(
    "--waiting",
    is_flag=True,
    help="Also return when the task waits (for a person, an agent, IO).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the task as JSON (as wfe show).")
@_app_option
@_store_option
@click.pass_context
def wait(
    ctx: click.Context,
    task_id: str,
    timeout: str | None,
    waiting: bool,
    as_json: bool,
    store: str | None,
) -> None:
    """Wait until a task finishes; print its output.

    A worker must be running the store's tasks (this command only watches).
    Prints the output of a completed task as JSON (with --waiting, the question
    of a waiting one). Exit status: 0 completed (or waiting, with --waiting);
    3 failed or cancelled, its error on stderr; 4 still running after --timeout;
    1 another error, such as an unknown task.

    \b
      id=$(wfe submit review --data '{"doc": "a.txt"}')
      wfe wait "$id" --timeout 10m
    """
    seconds = None if timeout is None else _parse_age(timeout, "--timeout", "a duration")
    if seconds is not None and seconds > LONGEST_WAIT:
        raise click.BadParameter(f"{timeout!r} is more than 100 years", param_hint="--timeout")
    engine = _engine(ctx, store, existing=True, reading=True)

    async def wait_for_it() -> Task:
        full = await _full_id(engine, task_id)
        if not waiting:
            await _note_waiting(engine, full)
        known = await engine.get_task(full) is not None
        noting = asyncio.ensure_future(_note_unclaimed(engine, full))
        try:
            return await engine.wait_for_task(full, timeout=seconds, waiting=waiting)
        except UnknownTaskError:
            if not known:
                raise
            # Only a finished task is purged: "unknown task" would read as a wrong id.
            raise click.ClickException(
                f"task {full!r} was deleted while this waited for it: it finished and "
                "was purged (wfe purge) before this saw how; wfe wait cannot tell how it "
                "ended now"
            ) from None
        finally:
            noting.cancel()

    try:
        task = _run(_closing(engine, wait_for_it()))
    except TimeoutError as exc:
        click.echo(f"Error: {exc}", err=True)
        ctx.exit(EXIT_TIMED_OUT)
    if as_json:
        click.echo(_task_json(task))
    elif task.status is TaskStatus.COMPLETED:
        click.echo(_json_out(task.output))
    elif task.status.is_waiting:
        question = f": {_printable(task.waiting_reason, lines=True)}" if task.waiting_reason else ""
        click.echo(f"{task.status.value}{_in_phase(task)}{question}")
    if task.status in (TaskStatus.FAILED, TaskStatus.CANCELLED):
        said = f": {_printable(task.error, lines=True)}" if task.error else ""
        click.echo(
            f"task {task.id!r} {task.status.value}{_in_phase(task)}{said}",
            err=True,
        )
        ctx.exit(EXIT_TASK_FAILED)


async def _note_waiting(engine: ECSWorkflowEngine, task_id: str) -> None:
    """Say so when the task waits for an answer, or for its delay, as wfe wait
    starts: it waits on, silent, until someone answers (a person, for a day, say)
    or the time comes, which looks like a hang."""
    try:
        task = await engine.get_task(task_id)
    except WorkflowError:
        return  # the wait itself says what is wrong
    if task is not None and task.status.is_waiting:
        click.echo(
            f"note: task {task.id!r} is {task.status.value}{_in_phase(task)}; this waits "
            "until it is answered (wfe resume) and finishes (--waiting returns now)",
            err=True,
        )
    elif task is not None and _starts(task):
        click.echo(f"note: task {task.id!r} {_starts(task)} UTC; this waits until then", err=True)


#: Seconds a task wfe wait watches may stay pending, due and unclaimed, before it
#: asks whether a worker runs at all.
_UNCLAIMED_AFTER = 5.0


async def _note_unclaimed(engine: ECSWorkflowEngine, task_id: str) -> None:
    """Say once that the task is still pending though due: wfe wait only watches,
    and without a worker on the store it would wait, silent, until --timeout."""
    await asyncio.sleep(_UNCLAIMED_AFTER)
    try:
        task = await engine.get_task(task_id)
    except WorkflowError:
        return  # the wait itself says what is wrong
    if task is not None and task.status is TaskStatus.PENDING and not _starts(task):
        click.echo(
            f"note: task {task.id!r} is still pending after {_UNCLAIMED_AFTER:g} s: no "
            "worker has taken it yet (wfe wait only watches; is a worker, wfe worker "
            "APP, running on this store?)",
            err=True,
        )


def _in_phase(task: Task) -> str:
    """`` in phase 'x'``; nothing before the task has a phase."""
    return f" in phase {task.classification!r}" if task.classification else ""


_hooks_app_option = click.option(
    "--app",
    metavar="MODULE:ATTR",
    help="The app whose callbacks and plugins' hooks (completed, cancelled) see the "
    "change (else only installed plugins' hooks run).",
)


_by_option = click.option(
    "--by",
    metavar="NAME",
    envvar="WFE_USER",
    help="Who does this, recorded in the task's history [default: $WFE_USER, else "
    "your login name].",
)


def _who(by: str | None) -> str | None:
    """--by (checked as the engine checks it), else the login name, if there is a
    usable one (some containers have none)."""
    if by is not None:
        try:
            actor_name(by)
        except ValueError as exc:
            ctx = click.get_current_context(silent=True)
            from_env = ctx is not None and (
                ctx.get_parameter_source("by") is click.core.ParameterSource.ENVIRONMENT
            )
            # Named as it was given: a WFE_USER set long ago is not taken for a --by.
            hint = "WFE_USER (--by)" if from_env else "--by"
            raise click.BadParameter(str(exc), param_hint=hint) from None
        return by
    try:
        login = getpass.getuser()
        actor_name(login)
    except (KeyError, OSError, ValueError):
        return None
    return login


@cli.command()
@click.argument("task_id")
@click.option(
    "--output",
    "output",
    metavar="JSON",
    help="The answer as JSON; - reads it from stdin, @FILE from a file (neither option: null).",
)
@click.option("--text", help="The answer as plain text (instead of --output).")
@click.option(
    "--phase",
    metavar="NAME",
    help="The phase this answers; refused if the task has moved on to another.",
)
@click.option(
    "--if-version",
    "version",
    type=int,
    metavar="N",
    help="The task's version when its question was read (wfe show); refused if it "
    "has changed since, as when a loop asks the same question again.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the task as JSON.")
@_by_option
@_hooks_app_option
@_store_option
@click.pass_context
def resume(
    ctx: click.Context,
    task_id: str,
    output: str | None,
    text: str | None,
    phase: str | None,
    version: int | None,
    as_json: bool,
    by: str | None,
    app: str | None,
    store: str | None,
) -> None:
    """Answer a waiting task; the answer becomes its phase's output, or, for a
    phase that asked and goes on itself (an agent's question), its reply.

    Scripts answering a question they read earlier should name its --phase, so
    that an answer meant for it is never taken for the next one. When the answer
    completes the task, its completion hooks run here: give --app for the app's
    callbacks and plugins to run too.
    """
    if output is not None and text is not None:
        raise click.UsageError("give --output or --text, not both")
    if version is not None and not 0 <= version < 2**63:
        raise click.BadParameter(
            f"must be a task's version, 0 or more (as wfe show prints it), not {version}",
            param_hint="--if-version",
        )
    answer: Any = text
    if output is not None:
        answer = _parse_json(_read_data(output, "--output"), "--output")
    engine = _engine(ctx, store, app, app_hint="--app", existing=True)

    async def resuming() -> Task:
        full = await _full_id(engine, task_id)
        try:
            return await engine.resume(full, answer, phase=phase, version=version, by=_who(by))
        except TaskStateError as exc:
            if phase is not None and not await _has_phase(engine, full, phase):
                # A phase its workflow does not have is the command line's mistake (2),
                # as for --phase of tasks, cancel and retry; not the task's state.
                raise _InputError(str(exc)) from None
            raise

    task = _run(_closing(engine, resuming()))
    if as_json:
        click.echo(_task_json(task))
    else:
        click.echo(f"{task.id} {task.status.value}")


@cli.command()
@click.argument("task_ids", metavar="[TASK_ID]", nargs=-1)
@click.option(
    "--status",
    "statuses",
    multiple=True,
    metavar="S[,S...]",
    help="Instead of an id: every task with this status, pending, in_progress or "
    "waiting_* (waiting: the three; several separated by commas, or the option repeated).",
)
@_status_workflow_option
@click.option(
    "--phase",
    metavar="NAME",
    help="With --status: only tasks at this phase (a task submitted without a phase is "
    "at none until its worker stores the phase it chose: --workflow takes it).",
)
@click.option("--dry-run", is_flag=True, help="With --status: only list what would be cancelled.")
@click.option(
    "--children",
    is_flag=True,
    help="Cancel its unfinished children too (the tasks its phases submitted), and theirs; "
    "with --status, each one's.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the task as JSON (with --status: the ids)."
)
@_by_option
@_hooks_app_option
@_store_option
@click.pass_context
def cancel(
    ctx: click.Context,
    task_ids: tuple[str, ...],
    statuses: tuple[str, ...],
    workflow: str | None,
    phase: str | None,
    dry_run: bool,
    children: bool,
    as_json: bool,
    by: str | None,
    app: str | None,
    store: str | None,
) -> None:
    """Cancel a pending, running or waiting task (--app: with the app's hooks).

    Prints the task's id and its new status, cancelled. With --status instead of
    an id, cancels every such task (a batch submitted by mistake, say) and prints
    the same line for each (--dry-run: its id), then how many on stderr.

    \b
      wfe cancel 4711
      wfe cancel --status pending --workflow invoices --phase pay --dry-run
    """
    filters = {"--workflow": workflow, "--phase": phase, "--dry-run": dry_run or None}
    if not _bulk_asked(statuses, task_ids, filters, "--status pending (say) to cancel"):
        _cancel_one(ctx, task_ids[0], children, as_json, by, app, store)
        return
    _check_names(workflow, phase)
    wanted = _parse_statuses(statuses, allowed=_CANCELLABLE, done_to="cancelled")
    engine = _engine(ctx, store, app, app_hint="--app", existing=True)
    _change_many(
        engine,
        lambda: engine.cancel_tasks(
            wanted,
            workflow_name=workflow,
            phase=phase,
            children=children,
            dry_run=dry_run,
            by=_who(by),
        ),
        workflow,
        phase,
        ("cancel", "cancelled", "cancelled"),
        _statuses_text(wanted),
        as_json=as_json,
        dry_run=dry_run,
        also=" and their unfinished children" if children else "",
    )


def _bulk_asked(
    statuses: tuple[str, ...],
    task_ids: tuple[str, ...],
    filters: Mapping[str, object],
    instead: str,
) -> bool:
    """Whether a wfe retry or cancel changes every task --status names (True) or the
    one task id given (False); a usage error for neither, both, or a filter of
    --status without it."""
    if statuses and task_ids:
        raise click.UsageError("give a task id or --status, not both")
    if statuses:
        return True
    for option, given in filters.items():
        if given is not None:
            raise click.UsageError(f"{option} chooses tasks with --status; give --status too")
    if len(task_ids) != 1:
        raise click.UsageError(f"give one task id, or {instead} every such task")
    return False


def _change_many(
    engine: ECSWorkflowEngine,
    change: Callable[[], Awaitable[list[str]]],
    workflow: str | None,
    phase: str | None,
    verbs: tuple[str, str, str],
    which: str,
    *,
    as_json: bool,
    dry_run: bool,
    also: str = "",
) -> None:
    """Run a wfe retry or cancel of every task --status names: print each id and its
    new status (with --dry-run, only the id), then how many on stderr, and ``also``
    what else was done to them. ``verbs``: what is done, as the summary says it, and
    the tasks' new status."""
    do, done, status = verbs

    async def run() -> list[str]:
        ids = await change()
        if not ids:
            await _refuse_unknown_names(engine, workflow, phase)
        return ids

    ids = _run(_closing(engine, run()))
    if as_json:
        click.echo(json.dumps(ids))
    else:
        for task_id in ids:
            click.echo(task_id if dry_run else f"{task_id} {status}")
    said = (
        f"would {do} {len(ids)} {which} task(s){also} (--dry-run)"
        if dry_run
        else f"{done} {len(ids)} {which} task(s){also}"
    )
    click.echo(said, err=True)


def _statuses_text(statuses: list[TaskStatus]) -> str:
    """Statuses as a summary line names them: the three waiting ones as "waiting"."""
    if not set(_WAITING) <= set(statuses):
        return "/".join(s.value for s in statuses)
    return "/".join([*(s.value for s in statuses if not s.is_waiting), "waiting"])


def _cancel_one(
    ctx: click.Context,
    task_id: str,
    children: bool,
    as_json: bool,
    by: str | None,
    app: str | None,
    store: str | None,
) -> None:
    """wfe cancel TASK_ID."""
    engine = _engine(ctx, store, app, app_hint="--app", existing=True)

    async def cancelling() -> Task:
        full = await _full_id(engine, task_id)
        return await engine.cancel(full, by=_who(by), children=children)

    task = _run(_closing(engine, cancelling()))
    click.echo(_task_json(task) if as_json else f"{task.id} {task.status.value}")
    if children and task.status is not TaskStatus.CANCELLED:
        click.echo(
            f"task {task.id} had {task.status.value} already; its unfinished children "
            "are cancelled",
            err=True,
        )


@cli.command()
@click.argument("task_ids", metavar="[TASK_ID]", nargs=-1)
@click.option(
    "--status",
    "statuses",
    multiple=True,
    metavar="S[,S...]",
    help="Instead of an id: every task with this status, failed or cancelled (both "
    "separated by a comma, or the option repeated).",
)
@_status_workflow_option
@click.option(
    "--phase",
    metavar="NAME",
    help="With --status: only tasks that stopped at this phase (one that stopped in its "
    "first phase, submitted without a phase, is at none: --workflow takes it).",
)
@click.option(
    "--error",
    "error_contains",
    metavar="TEXT",
    help="With --status: only tasks whose error holds TEXT (in its first 1,000 characters).",
)
@click.option("--dry-run", is_flag=True, help="With --status: only list what would be retried.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the task as JSON (with --status: the ids)."
)
@_by_option
@_app_option
@_store_option
@click.pass_context
def retry(
    ctx: click.Context,
    task_ids: tuple[str, ...],
    statuses: tuple[str, ...],
    workflow: str | None,
    phase: str | None,
    error_contains: str | None,
    dry_run: bool,
    as_json: bool,
    by: str | None,
    store: str | None,
) -> None:
    """Run a failed or cancelled task's phase again, with fresh attempts.

    Prints the task's id and its new status, pending. With --status instead of
    an id, retries every such task (after an outage that failed many, say) and
    prints the same line for each (--dry-run: its id), then how many on stderr.

    \b
      wfe retry 4711
      wfe retry --status failed --workflow invoices --phase pay --error ConnectionError --dry-run
    """
    filters = {
        "--workflow": workflow,
        "--phase": phase,
        "--error": error_contains,
        "--dry-run": dry_run or None,
    }
    if error_contains == "":
        raise click.BadParameter("is empty", param_hint="--error")
    if not _bulk_asked(statuses, task_ids, filters, "--status failed (or cancelled) to retry"):
        engine = _engine(ctx, store, existing=True)

        async def retrying() -> Task:
            return await engine.retry(await _full_id(engine, task_ids[0]), by=_who(by))

        task = _run(_closing(engine, retrying()))
        click.echo(_task_json(task) if as_json else f"{task.id} {task.status.value}")
        return
    _check_names(workflow, phase)
    wanted = _parse_statuses(statuses, allowed=_RETRYABLE, done_to="retried")
    engine = _engine(ctx, store, existing=True)
    _change_many(
        engine,
        lambda: engine.retry_tasks(
            wanted,
            workflow_name=workflow,
            phase=phase,
            error_contains=error_contains,
            dry_run=dry_run,
            by=_who(by),
        ),
        workflow,
        phase,
        ("retry", "retried", "pending"),
        _statuses_text(wanted),
        as_json=as_json,
        dry_run=dry_run,
    )


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("task_id")
@click.argument("priority", metavar="N", callback=_priority)
@click.option("--json", "as_json", is_flag=True, help="Print the task as JSON.")
@_by_option
@_app_option
@_store_option
@click.pass_context
def priority(
    ctx: click.Context,
    task_id: str,
    priority: int,
    as_json: bool,
    by: str | None,
    store: str | None,
) -> None:
    """Change the priority of a task that waits (pending, delayed or waiting for
    an answer) to N, from -1000 to 1000 (higher runs first).

    A queued task then lines up among the tasks of priority N as one that became
    ready now; a delayed or waiting one keeps its time. Its history records the
    change. A running or finished task is refused. Prints the task's id and its
    new priority.

    \b
      wfe priority 4711 100
      wfe priority 4711 -10
    """
    engine = _engine(ctx, store, existing=True)

    async def setting() -> Task:
        full = await _full_id(engine, task_id)
        return await engine.set_priority(full, priority, by=_who(by))

    task = _run(_closing(engine, setting()))
    click.echo(_task_json(task) if as_json else f"{task.id} priority {task.priority}")


@cli.command()
@click.option(
    "--older-than",
    "older_than",
    required=True,
    metavar="AGE",
    help="Delete tasks that finished more than AGE ago: 30d, 12h, 90m, 45s, 2w.",
)
@click.option(
    "--status",
    "statuses",
    multiple=True,
    metavar="S[,S...]",
    help="Only tasks with this finished status: completed, failed or cancelled "
    "(several separated by commas or the option repeated; default all three).",
)
@click.option("--workflow", "-w", metavar="NAME", help="Only tasks of this workflow.")
@click.option("--dry-run", is_flag=True, help="Only count what would be deleted.")
@click.option(
    "--compact",
    is_flag=True,
    help="Then give the freed space back to the file system (SQLite: VACUUM; other "
    "processes' writes wait meanwhile).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print what was done as one JSON object (count, dry_run, statuses, "
    "older_than_seconds, workflow, kept_by_outbox, compacted).",
)
@_app_option
@_store_option
@click.pass_context
def purge(
    ctx: click.Context,
    older_than: str,
    statuses: tuple[str, ...],
    workflow: str | None,
    dry_run: bool,
    compact: bool,
    as_json: bool,
    store: str | None,
) -> None:
    """Delete finished tasks and their artifact files, to keep a store's work recent.

    Pending, running and waiting tasks are never deleted, nor are finished ones
    whose result the Kafka plugin (or another outbox consumer) has not published,
    nor finished child tasks whose parent has not finished.
    The store's file keeps its size (new tasks reuse the space) unless --compact.
    """
    if compact and dry_run:
        raise click.UsageError("--compact deletes nothing to compact with --dry-run")
    seconds = _parse_age(older_than)
    if seconds > LONGEST_WAIT:
        # No task is that old: a mistyped age (1e308w), refused as --delay refuses it.
        raise click.BadParameter(
            f"{older_than!r} is more than 100 years", param_hint="--older-than"
        )
    wanted = _parse_statuses(statuses or ("completed,failed,cancelled",), allowed=_FINISHED)
    engine = _engine(ctx, store, existing=True)

    async def purge_and_look() -> tuple[int, dict[str, int], tuple[int, int] | None]:
        count = await engine.purge(
            seconds, statuses=wanted, workflow_name=workflow, dry_run=dry_run
        )
        opened = await engine.get_store()
        if not count and workflow is not None:
            await _refuse_unknown_names(engine, workflow)
        try:
            consumers = await opened.outbox_consumers()
        except StoreError:
            consumers = {}  # a store without an outbox listing keeps nothing back
        return count, consumers, (await opened.compact() if compact else None)

    count, consumers, sizes = _run(_closing(engine, purge_and_look()))
    waiting = {name: n for name, n in consumers.items() if n}
    if as_json:
        compacted = None if sizes is None else {"before": sizes[0], "after": sizes[1]}
        said = {
            "count": count,
            "dry_run": dry_run,
            "statuses": [s.value for s in wanted],
            "older_than_seconds": seconds,
            "workflow": workflow,
            "kept_by_outbox": waiting,
            "compacted": compacted,
        }
        click.echo(json.dumps(said, indent=2))
        return
    which = "/".join(s.value for s in wanted)
    verb = "would delete" if dry_run else "deleted"
    age = older_than.strip().lower()
    click.echo(f"{verb} {count} {which} task(s) that finished more than {age} ago")
    if waiting:
        # Else a store that does not shrink is a mystery: a consumer long gone
        # (a renamed results topic, say) keeps every task it never published.
        listed = ", ".join(f"{name} ({n})" for name, n in waiting.items())
        click.echo(
            f"kept: finished tasks not yet published by outbox consumer(s) {listed}; see wfe outbox"
        )
    if compact:
        if sizes is None:
            click.echo("this store has nothing to compact")
        else:
            click.echo(f"compacted the store: {_size(sizes[0])} -> {_size(sizes[1])}")


def _size(count: int) -> str:
    return f"{count / 1e6:.1f} MB" if count >= 100_000 else f"{count:,} bytes"

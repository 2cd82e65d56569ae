"""The ``wfe`` commands that read the store: tasks, show, status, workflows,
metrics and outbox."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click

from .._processes import worker_died_here
from ..children import stored_children, wait_ends
from ..metrics import render_metrics
from ..model import Phase, Task, TaskStatus, WorkflowSpec
from ..schedules import LatestRun, latest_runs
from ..stores.base import Store, phase_filter, summarized
from ..wire import workflow_to_dict
from ._base import (
    _STATUS_NAMES,
    _WAITING,
    _app_option,
    _check_names,
    _check_store_exists,
    _closing,
    _engine,
    _full_id,
    _id_hint,
    _new_store_place,
    _parse_statuses,
    _printable,
    _refuse_unknown_names,
    _run,
    _schedule_lines,
    _short,
    _starts,
    _store_option,
    _table,
    _task_json,
    _tasks_json,
    cli,
)


@cli.command()
@click.option(
    "--status",
    "statuses",
    multiple=True,
    metavar="S[,S...]",
    help=f"Only tasks with this status, in any case: {_STATUS_NAMES}; waiting for "
    "any of the waiting_* ones; several separated by commas (pending,failed) "
    "or the option repeated.",
)
@click.option("--workflow", "-w", metavar="NAME", help="Only tasks of this workflow.")
@click.option(
    "--phase",
    metavar="NAME",
    help="Only tasks at this phase (wfe status counts them; a task submitted without "
    "a phase is at none until its worker stores the phase it chose, once that "
    "phase has run a second or as it ends or waits).",
)
@click.option(
    "--parent",
    metavar="ID",
    help="Only the children of task ID (submitted by its phases), in the order submitted.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    metavar="N",
    help="Show at most this many (the newest).",
)
@click.option(
    "--offset",
    type=click.IntRange(min=0),
    default=0,
    metavar="N",
    help="Skip this many of the newest first.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of tasks.")
@_app_option
@_store_option
@click.pass_context
def tasks(
    ctx: click.Context,
    statuses: tuple[str, ...],
    workflow: str | None,
    phase: str | None,
    parent: str | None,
    limit: int,
    offset: int,
    as_json: bool,
    store: str | None,
) -> None:
    """List tasks, newest first (--parent: a task's children, in the order submitted).

    \b
      wfe tasks --status waiting
      wfe tasks --status failed,cancelled --workflow review --limit 50
      wfe tasks --workflow review --phase approve --json
    """
    _check_names(workflow, phase)
    wanted = _parse_statuses(statuses) if statuses else None
    engine = _engine(ctx, store, existing=True, reading=True)

    async def fetch() -> tuple[list[Task], int]:
        st = await engine.get_store()
        if parent is not None:
            return await _children(
                st,
                await _full_id(engine, parent),
                wanted,
                workflow,
                phase,
                limit,
                offset,
                whole=as_json,
            )
        # The table shows a line a task: summaries leave each task's payload unread.
        listing = st.list_tasks if as_json else st.list_task_summaries
        by_phase = phase_filter(st, phase)
        found = await listing(
            status=wanted, workflow_name=workflow, limit=limit, offset=offset, **by_phase
        )
        if not found:
            await _refuse_unknown_names(engine, workflow, phase)
        if as_json or (offset == 0 and len(found) < limit):
            return found, len(found)  # all of them, or nobody reads the total
        counts = await st.count_tasks(workflow, **by_phase)
        return found, sum(n for status, n in counts.items() if wanted is None or status in wanted)

    found, total = _run(_closing(engine, fetch()))
    if as_json:
        click.echo(_tasks_json(found))
        return
    if not found:
        click.echo(f"no tasks (--offset {offset} of {total})" if offset and total else "no tasks")
        return
    # PRIORITY only where a listed task has one other than 0, and just before NOTE:
    # the columns scripts read by position (ID to UPDATED) stay where they were.
    prioritized = any(t.priority for t in found)
    rows = [
        (
            t.id,
            t.workflow_name or "-",
            t.classification or "-",
            t.status.value,
            t.updated_at.strftime("%Y-%m-%d %H:%M:%S"),
            *((t.priority,) if prioritized else ()),
            _short(t.error or t.waiting_reason or _starts(t)),
        )
        for t in found
    ]
    headers = ("ID", "WORKFLOW", "PHASE", "STATUS", "UPDATED (UTC)")
    _table((*headers, *(("PRIORITY",) if prioritized else ()), "NOTE"), rows)
    last = offset + len(found)
    if last < total:
        which = str(last) if offset == 0 else f"{offset + 1} to {last}"
        click.echo(f"({which} of {total} shown; --limit N or --offset N for more)")


def _lease_text(owner: str, expires: datetime) -> str:
    """Who holds a task and until when, for ``wfe show``: what an operator asks of
    a task that seems stuck."""
    until = expires.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    if worker_died_here(owner):
        return f"{owner} (dead: the next claim takes the task over)"
    if expires <= datetime.now(timezone.utc):
        return f"{owner} (its lease ran out at {until}: the next claim takes the task over)"
    return f"{owner} (lease until {until}, renewed while it runs)"


# How many history events `wfe show` prints unless told: all of a task of a few
# dozen phases, the end of one that loops through thousands.
_HISTORY_SHOWN = 100


def _history_count(ctx: click.Context, param: click.Parameter, value: str) -> int | None:
    """--history's value: a count of events, or None for all of them (``all``, in
    any case, as status names are taken)."""
    if value.strip().lower() == "all":
        return None
    try:
        count = int(value)
    except ValueError:
        count = -1
    if count < 0:
        raise click.BadParameter(f"{value!r} is neither a number of events (0 or more) nor 'all'")
    return count


@cli.command()
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True, help="Print the task as JSON.")
@click.option(
    "--history",
    "history_count",
    default=str(_HISTORY_SHOWN),
    show_default=True,
    metavar="N|all",
    callback=_history_count,
    help="Show the task's last N history events, or all of them (--json prints all).",
)
@_app_option
@_store_option
@click.pass_context
def show(
    ctx: click.Context, task_id: str, as_json: bool, history_count: int | None, store: str | None
) -> None:
    """Show one task: status, data, outputs, artifacts and history.

    A waiting task shows the input_schema its answer must match; a failed one its
    error and traceback. A long history shows its last events, after a line saying
    how many earlier ones --history all would show.

    \b
      wfe show 3f2a9c          (the start of an id wfcore made, 6 characters or more)
      wfe show order-17 --json
    """
    engine = _engine(ctx, store, existing=True, reading=True)

    async def fetch() -> tuple[Task | None, Phase | None, tuple[str, datetime] | None, Path | None]:
        task = await engine.get_task(await _full_id(engine, task_id))
        if as_json or task is None:
            return task, None, None, None
        store = await engine.get_store()
        phase = await _current_phase(store, task)
        return task, phase, await store.lease_of(task.id), store.artifacts_dir

    task, phase, lease, artifacts_dir = _run(_closing(engine, fetch()))
    if task is None:
        raise click.ClickException(f"unknown task {task_id!r}{_id_hint(task_id)}")
    if as_json:
        # With its version, which wfe resume --if-version takes back.
        click.echo(_task_json(task))
        return
    click.echo(f"task      {task.id}")
    click.echo(f"workflow  {task.workflow_name or '-'}")
    click.echo(f"phase     {_phase_text(task)}")
    click.echo(f"status    {task.status.value}")
    if lease is not None:
        click.echo(f"worker    {_lease_text(*lease)}")
    click.echo(f"type      {_type_text(task, phase)}")
    click.echo(f"priority  {task.priority}")
    click.echo(f"attempts  {task.attempts}")
    click.echo(f"version   {task.version}")
    click.echo(f"created   {task.created_at.isoformat()}")
    click.echo(f"updated   {task.updated_at.isoformat()}")
    if task.waiting_reason:
        click.echo(f"waiting   {_cut(task.waiting_reason)}")
    if task.deadline and task.waiting_for is not None:
        # Not a deadline: when a worker looks at the children, should none report.
        click.echo(f"checks    {task.deadline.isoformat()} (its children, if none reports first)")
        until = wait_ends(task)
        if until is not None:
            ends = until.isoformat()
            click.echo(f"until     {ends} (then it goes on, its children finished or not)")
    elif task.deadline:
        passed = task.status.is_waiting and task.deadline <= datetime.now(timezone.utc)
        click.echo(f"deadline  {task.deadline.isoformat()}{' (deadline passed)' if passed else ''}")
    if task.parent_id is not None:
        click.echo(f"parent    {_printable(task.parent_id)}")
    if task.children:
        shown = ", ".join(task.children[:_CHILDREN_SHOWN])
        more = len(task.children) - _CHILDREN_SHOWN
        click.echo(
            f"children  {len(task.children)}: {_printable(shown)}"
            + (f" and {more} more (wfe show --json lists them all)" if more > 0 else "")
        )
    if task.status.is_waiting and phase is not None and phase.input_schema is not None:
        click.echo(f"schema    {_shown(phase.input_schema)}")
    if task.run_after is not None and _starts(task):
        click.echo(f"starts    {task.run_after.isoformat()}")
    if task.error:
        click.echo(f"error     {_cut(task.error)}")
    if task.traceback:
        click.echo("traceback")
        for line in task.traceback.rstrip("\n").splitlines():
            click.echo(f"  {_printable(line)}")
    click.echo(f"data      {_shown(task.data)}")
    if task.context:
        click.echo(f"context   {_shown(task.context)}")
    for name, value in task.outputs.items():
        click.echo(f"output    {name}: {_shown(value)}")
    for art in task.artifacts:
        # Where the store keeps it now, as read_artifact and command phases find it:
        # the path recorded when it was written is wrong for a store restored elsewhere.
        where = artifacts_dir / task.id / art.name if artifacts_dir is not None else art.path
        shown = f"{art.name} ({art.size} bytes, {art.media_type}) {where}"
        click.echo(f"artifact  {_printable(shown)}")
    click.echo("history")
    events = task.history
    if history_count is not None and len(events) > history_count:
        earlier = len(events) - history_count
        click.echo(f"  ... {earlier:,} earlier events (--history all shows them)")
        events = events[earlier:]
    for event in events:
        if not isinstance(event, dict):  # a damaged store's; shown as it is
            click.echo(f"  {_shown(event)}")
            continue
        details = {k: v for k, v in event.items() if k not in ("at", "event")}
        extra = " ".join(f"{k}={_detail(v)}" for k, v in details.items() if v is not None)
        at, name = (
            _printable(str(event.get("at", "?"))[:23]),
            _printable(str(event.get("event", "?"))),
        )
        click.echo(f"  {at}  {name:<16} {extra}")


def _detail(value: Any) -> str:
    """A history event's value as a person reads it: JSON but for plain text."""
    return _cut(value, _EVENT_INDENT) if isinstance(value, str) else _shown(value)


# The most characters of one value `wfe show` prints; --json prints everything.
_SHOWN_CHARS = 2000
# Where the further lines of a multi-line value start: under a field's value
# ("error     ..."), and deeper than the history's events ("  2026-...").
_FIELD_INDENT = len("error     ")
_EVENT_INDENT = 4


def _shown(value: Any) -> str:
    """A value as JSON, cut where a terminal stops being readable."""
    return _cut(json.dumps(value, ensure_ascii=False))


def _cut(text: str, indent: int = _FIELD_INDENT) -> str:
    """``text`` (its control characters written out, newlines kept) up to
    _SHOWN_CHARS characters, then how long it is. Its further lines start
    ``indent`` spaces in, under the text's first: a text from another program (a
    command's error output) is then never taken for a field or event of its own,
    and cannot pass off a line of its own as one."""
    if len(text) <= _SHOWN_CHARS:
        shown = _printable(text, lines=True)
    else:
        cut = _printable(text[:_SHOWN_CHARS], lines=True)
        shown = f"{cut}… ({len(text):,} characters; --json shows all)"
    return shown.replace("\n", "\n" + " " * indent)


async def _current_phase(store: Store, task: Task) -> Phase | None:
    """The phase a task is at, from its stored workflow (None if unknown); for a
    task not classified yet, the workflow's first, where it starts unless a
    classifier picks another."""
    spec = await store.load_workflow(task.workflow_name) if task.workflow_name else None
    if spec is None:
        return None
    if task.classification is None:
        return spec.phases[0] if spec.phases else None
    return spec.phase(task.classification)


def _phase_text(task: Task) -> str:
    if task.classification is not None:
        return task.classification
    # The worker stores the phase it chose once it has run a second (or as it ends).
    if task.status is TaskStatus.IN_PROGRESS:
        return "- (the first; named once it has run a second)"
    return "-"


def _type_text(task: Task, phase: Phase | None) -> str:
    """Who runs the task's phase: the phase's type, else the task's own."""
    own = task.assigned_to.value
    if phase is None:
        return f"{own} (the task's own)"
    if phase.assigned_to is None or phase.assigned_to is task.assigned_to:
        return own
    whose = "this phase's" if task.classification is not None else "the first phase's"
    return f"{phase.assigned_to.value} ({whose}; the task's own: {own})"


def _outbox_consumers(ctx: click.Context, store: str | None) -> dict[str, int]:
    engine = _engine(ctx, store, existing=True, reading=True)

    async def fetch() -> dict[str, int]:
        return await (await engine.get_store()).outbox_consumers()

    return _run(_closing(engine, fetch()))


@cli.command()
@click.option(
    "--drop",
    metavar="CONSUMER",
    help="Unregister this consumer and forget the results it has not published.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the consumers as JSON.")
@_app_option
@_store_option
@click.pass_context
def outbox(ctx: click.Context, drop: str | None, as_json: bool, store: str | None) -> None:
    """List the consumers of the results outbox and what each has not published.

    A consumer (the Kafka plugin registers one per results topic) gets a row for
    every task that finishes, until it acknowledges the task; purge keeps such
    tasks. A consumer nothing runs any more (a renamed topic, a retired pool)
    holds on to them for ever: --drop it. Stop the workers that use a consumer
    before dropping it; a worker registers its consumer again when it starts.
    """
    if drop is None:
        consumers = _outbox_consumers(ctx, store)
        if as_json:
            click.echo(json.dumps(consumers, indent=2))
        elif not consumers:
            click.echo("no outbox consumers (the Kafka plugin registers one when it starts)")
        else:
            _table(("CONSUMER", "UNPUBLISHED"), list(consumers.items()))
        return
    engine = _engine(ctx, store, existing=True)

    async def unregister() -> int | None:
        return await (await engine.get_store()).outbox_unregister(drop)

    forgotten = _run(_closing(engine, unregister()))
    if forgotten is None:
        known = ", ".join(_outbox_consumers(ctx, store)) or "none"
        raise click.BadParameter(
            f"no outbox consumer named {drop!r} (registered: {known})", param_hint="--drop"
        )
    if as_json:
        click.echo(json.dumps({"dropped": drop, "unpublished": forgotten}))
    else:
        click.echo(
            f"dropped outbox consumer {drop!r}; "
            f"{forgotten} result(s) it had not published will not be published"
        )


_STATUS_COLUMNS = (
    ("PENDING", (TaskStatus.PENDING,)),
    ("IN_PROGRESS", (TaskStatus.IN_PROGRESS,)),
    ("WAITING", _WAITING),
    ("COMPLETED", (TaskStatus.COMPLETED,)),
    ("FAILED", (TaskStatus.FAILED,)),
    ("CANCELLED", (TaskStatus.CANCELLED,)),
)


# Tasks by status.
_Counts = dict[TaskStatus, int]


def _by_phase(
    orders: dict[str, list[str]],
    counted: dict[str, dict[str, int]],
    by_workflow: dict[str, _Counts],
) -> tuple[dict[str, dict[str, int]], dict[str, int]]:
    """Where each workflow's unfinished tasks are: how many at each phase, in the
    workflow's order (``orders``: its phases; a phase it no longer has, after
    them), for the workflows that have any; and how many of each no worker has
    classified yet (submitted without a phase, not claimed yet)."""
    phases: dict[str, dict[str, int]] = {}
    unclassified: dict[str, int] = {}
    for name, known in orders.items():
        counts = counted.get(name, {})
        order = [*known, *sorted(set(counts) - set(known))]
        shown = {phase: counts[phase] for phase in order if counts.get(phase)}
        unfinished = sum(n for status, n in by_workflow[name].items() if not status.is_finished)
        if shown:
            phases[name] = shown
        if unfinished > sum(shown.values()):
            unclassified[name] = unfinished - sum(shown.values())
    return phases, unclassified


@cli.command()
@click.option(
    "--workflow",
    "-w",
    metavar="NAME",
    help="Only this workflow: its counts and where its unfinished tasks are.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@_app_option
@_store_option
@click.pass_context
def status(ctx: click.Context, workflow: str | None, as_json: bool, store: str | None) -> None:
    """Count the store's tasks by workflow and status, and name the busy workers.

    Then the unfinished tasks (pending, in progress, waiting) of each workflow by
    the phase they are at, in the workflow's order. WAITING adds up tasks waiting
    for a person, an agent or I/O (wfe tasks --status waiting lists them).
    "(other)" counts tasks of no stored workflow: define_workflow tasks not run
    yet, say. A worker is busy while it holds a task (of any workflow).

    \b
      wfe status
      wfe status --workflow review --json
    """
    _check_names(workflow, None)
    engine = _engine(ctx, store, existing=True, reading=True)

    async def fetch() -> tuple[
        dict[str, _Counts], _Counts, tuple[dict[str, dict[str, int]], dict[str, int]], list[str]
    ]:
        st = await engine.get_store()
        # Each workflow's phases, in its order. One with tasks but not stored
        # (only an app not run here knows it) has its phases in name order.
        orders = {spec.name: spec.classifications for spec in await st.load_workflows()}
        if workflow is not None:
            await _refuse_unknown_names(engine, workflow)
            orders = {workflow: orders.get(workflow, [])}
        by_workflow = {name: await st.count_tasks(name) for name in orders}
        if workflow is None:
            total, counted = await st.count_tasks(), await st.count_all_by_phase()
        else:
            total, counted = by_workflow[workflow], {workflow: await st.count_by_phase(workflow)}
        return (
            by_workflow,
            total,
            _by_phase(orders, counted, by_workflow),
            sorted(await st.lease_owners()),
        )

    by_workflow, total, (by_phase, unclassified), workers = _run(_closing(engine, fetch()))
    if as_json:
        doc = {
            "workflows": {
                name: {s.value: counts.get(s, 0) for s in TaskStatus}
                for name, counts in by_workflow.items()
            },
            "total": {s.value: total.get(s, 0) for s in TaskStatus},
            "unfinished_by_phase": by_phase,
            "unclassified": unclassified,
            "busy_workers": workers,
            "workers": [{"id": w, "dead": worker_died_here(w)} for w in workers],
        }
        click.echo(json.dumps(doc, indent=2))
        return

    def row(name: str, counts: dict[TaskStatus, int]) -> tuple[Any, ...]:
        return (name, *(sum(counts.get(s, 0) for s in group) for _, group in _STATUS_COLUMNS))

    rows = [row(name, counts) for name, counts in by_workflow.items() if counts or workflow]
    if workflow is None:
        # Tasks of no stored workflow: define_workflow ones not yet run, or a
        # workflow only an app not run here knows.
        unlisted = {
            s: n - sum(counts.get(s, 0) for counts in by_workflow.values())
            for s, n in total.items()
        }
        if any(unlisted.values()):
            rows.append(row("(other)", unlisted))
        rows.append(row("(all)", total))
    _table(("WORKFLOW", *(title for title, _ in _STATUS_COLUMNS)), rows)
    if by_phase or unclassified:
        click.echo("unfinished tasks by phase:")
        for name in by_workflow:
            parts = [f"not classified yet {unclassified[name]}"] if name in unclassified else []
            parts += [f"{phase} {n}" for phase, n in by_phase.get(name, {}).items()]
            if parts:
                click.echo(_printable(f"  {name}: {', '.join(parts)}"))
    shown = [
        f"{w} (dead: its tasks go to the next claim)" if worker_died_here(w) else w for w in workers
    ]
    click.echo(
        f"busy workers: {', '.join(shown)}" if shown else "busy workers: none (no task held)"
    )


@cli.command()
@_app_option
@_store_option
@click.pass_context
def metrics(ctx: click.Context, store: str | None) -> None:
    """Print the store's metrics once, in the Prometheus text format.

    For cron and node_exporter's textfile collector; wfe worker --metrics
    serves the same over HTTP, with that worker's own wfcore_engine_* metrics.
    """
    engine = _engine(ctx, store, existing=True, reading=True)
    # Not this command's engine's counters: it runs no task, and its zeros would
    # look like the workers' counters reset.
    text = _run(_closing(engine, render_metrics(engine, engine_metrics=False)))
    click.echo(text, nl=False)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the workflows as JSON.")
@_app_option
@_store_option
@click.pass_context
def workflows(ctx: click.Context, as_json: bool, store: str | None) -> None:
    """List the workflows in the store (registered by workers or defined at run time),
    and with --app the app's own, also before anything made the store."""
    engine = _engine(ctx, store, reading=True)
    own = engine.workflows  # the app's (--app), which a command that reads never stores
    place = _new_store_place(engine)
    if place is not None:
        if not own:
            _check_store_exists(engine)  # no store, no app: a mistyped --store, say
        click.echo(f"wfe: no store at {place} yet: these are the app's workflows", err=True)

    async def fetch() -> tuple[list[WorkflowSpec], dict[str, LatestRun]]:
        if place is not None:
            return list(own.values()), {}
        st = await engine.get_store()
        # The app's version of a workflow it registers: the one asked about.
        found = {spec.name: spec for spec in await st.load_workflows()} | own
        if as_json:  # the specs only
            return list(found.values()), {}
        now = datetime.now(timezone.utc)
        return list(found.values()), await latest_runs(st, engine.schedules.values(), now)

    found, latest = _run(_closing(engine, fetch()))
    if as_json:
        click.echo(json.dumps([workflow_to_dict(w) for w in found], indent=2))
        return
    if not found:
        click.echo("no workflows (a worker stores its app's workflows when it starts)")
        return
    rows = []
    for spec in found:
        for i, phase in enumerate(spec.phases):
            kind = phase.assigned_to.value if phase.assigned_to else "(the task's)"
            if phase.max_concurrency is not None:
                kind += f", {phase.max_concurrency} at once"
            name = phase.target_classification
            if spec.start_phases is not None and name in spec.start_phases:
                name += " (start)"  # one of the only phases a submitted task may name
            rows.append(("" if i else spec.name, name, kind, _then(spec, i)))
    _table(("WORKFLOW", "PHASE", "TYPE", "THEN"), rows)
    for line in _schedule_lines(engine, latest):
        click.echo(line)


# The children wfe show names; --json lists them all.
_CHILDREN_SHOWN = 5


async def _children(
    store: Store,
    parent_id: str,
    wanted: list[TaskStatus] | None,
    workflow: str | None,
    phase: str | None,
    limit: int,
    offset: int,
    *,
    whole: bool,
) -> tuple[list[Task], int]:
    """The children of task ``parent_id`` that the filters keep, the page of them
    asked for and how many there are (those a running phase or a failed attempt
    submitted too, by their default ids); a child deleted since is left out."""
    parent = await store.get_task(parent_id)
    if parent is None:
        raise click.ClickException(f"unknown task {parent_id!r} (--parent){_id_hint(parent_id)}")
    kept = []
    async for child in stored_children(store, parent):
        if wanted is not None and child.status not in wanted:
            continue
        if phase is not None and child.classification != phase:
            continue
        if workflow is None or child.workflow_name == workflow:
            kept.append(child if whole else summarized(child))
    return kept[offset : offset + limit], len(kept)


def _then(spec: WorkflowSpec, index: int) -> str:
    """Where the phase at ``index`` goes: its routes, as the worker takes them, and
    what its on_timeout does when its wait's deadline passes."""
    phase = spec.phases[index]
    routes = phase.next_classifications
    if routes is None:
        last = index + 1 == len(spec.phases)
        then = "done" if last else spec.phases[index + 1].target_classification
    elif not routes:
        then = "done"
    elif len(routes) == 1:
        then = routes[0]
    else:
        then = " or ".join(routes) + " (the phase picks; else the first)"
    rule = phase.on_timeout
    if isinstance(rule, dict) and "goto" in rule:
        then += f"; on timeout: {rule['goto']}"
    elif isinstance(rule, dict):
        then += "; on timeout: a set output"
    return then

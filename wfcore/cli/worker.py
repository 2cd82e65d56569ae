"""``wfe worker``: run an app's engine, in one process or several, with progress
lines and a metrics endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

import click

from .._processes import end_with_parent
from ..engine import MAX_CONCURRENCY, ECSWorkflowEngine
from ..metrics import MetricsServer
from ..model import TaskStatus
from ..plugins import (
    report_header,
)
from ..stores.base import Store, StoreBusyError
from ._base import (
    EXIT_INTERRUPTED,
    _closing,
    _describe,
    _engine,
    _new_store_place,
    _note_created,
    _run,
    _schedule_lines,
    _stderr_gone,
    _store_option,
    cli,
)


@cli.command()
@click.argument("app")
@_store_option
@click.option(
    "--concurrency",
    type=click.IntRange(1, MAX_CONCURRENCY),
    metavar="N",
    help="Tasks run at once [default: the app's max_concurrency, 100 unless it sets one].",
)
@click.option(
    "--shutdown-timeout",
    type=click.FloatRange(0, 86400),
    metavar="SECONDS",
    help="On Ctrl-C or SIGTERM, how long running phases get to finish before they go "
    "back to the store [default: the app's shutdown_timeout, 10 unless it sets one].",
)
@click.option(
    "--until-idle",
    is_flag=True,
    help="Exit once no task is pending (delayed ones and retries included) or running; "
    "waiting tasks don't count.",
)
@click.option(
    "--workflow",
    "-w",
    "workflows",
    multiple=True,
    metavar="NAME",
    help="Run only tasks of this workflow (repeatable); other workers on the store run the rest.",
)
@click.option(
    "--allow-command",
    "allowed_commands",
    multiple=True,
    metavar="PROGRAM",
    help="Let workflows defined at run time (not in the app's code) run this program "
    "in their command phases (repeatable; '*' for any).",
)
@click.option("--quiet", "-q", is_flag=True, help="Don't print progress.")
@click.option(
    "--processes",
    "-p",
    metavar="N",
    type=click.IntRange(1, 1024),
    default=1,
    show_default=True,
    help="Worker processes to run on the store (one per core uses the whole machine).",
)
@click.option(
    "--metrics",
    "metrics_at",
    metavar="[HOST:]PORT",
    help="Serve Prometheus metrics at http://HOST:PORT/metrics, and /healthz (HOST "
    "defaults to 127.0.0.1). With --processes N, the processes take PORT, PORT+1, ... "
    "PORT+N-1.",
)
@click.option("--supervisor-pid", type=int, hidden=True)  # set by --processes for its children
@click.pass_context
def worker(
    ctx: click.Context,
    app: str,
    store: str | None,
    concurrency: int | None,
    shutdown_timeout: float | None,
    until_idle: bool,
    workflows: tuple[str, ...],
    allowed_commands: tuple[str, ...],
    quiet: bool,
    processes: int,
    metrics_at: str | None,
    supervisor_pid: int | None,
) -> None:
    """Run a worker for the engine at APP (MODULE:ATTR, an engine or a factory).

    It claims runnable tasks from the store, runs their phases and shows
    progress on stderr. Start several on one store to share the work, or
    let --processes start them. Ctrl-C or SIGTERM stops it: running phases get
    the engine's shutdown_timeout to finish, then go back to the store for
    another worker; a second Ctrl-C or SIGTERM hands them back at once. It then
    exits 130 after a Ctrl-C (SIGINT), 0 after SIGTERM. Its terminal closing
    (SIGHUP) stops it so too, with status 129, unless it runs under nohup.
    Started while another process holds the store's write lock (a long purge or
    compaction), it says so and waits for it.
    """
    if shutdown_timeout is not None and math.isnan(shutdown_timeout):
        # FloatRange lets NaN through (no comparison with it is false); the engine
        # would wait for its running phases for no definite time.
        raise click.BadParameter(
            "nan is not a number of seconds (0 to 86400)", param_hint="--shutdown-timeout"
        )
    # Each of --processes' workers says which it is: their lines share one stderr.
    label = f"[worker {os.getpid()}] " if supervisor_pid is not None else ""
    if supervisor_pid is not None:
        _stop_with_supervisor(supervisor_pid)
        _label_log_lines(label)
    with _errors_labelled(label):
        metrics_host, metrics_port = (None, 0) if metrics_at is None else _host_port(metrics_at)
        if metrics_port and metrics_port + processes - 1 > 65535:
            raise click.BadParameter(
                f"ports {metrics_port} to {metrics_port + processes - 1} do not all exist",
                param_hint="--metrics",
            )
        engine = _engine(ctx, store, app, in_process=True)
        if processes > 1:
            url = engine.store_url
            if url.startswith("memory:"):
                raise click.UsageError(
                    "--processes needs a store the processes share; memory:// lives in one "
                    "process (use a sqlite:// store, or one process)"
                )
            args = [
                app,
                "--store",
                url,
                *(["--concurrency", str(concurrency)] if concurrency else []),
            ]
            if shutdown_timeout is not None:
                args += ["--shutdown-timeout", repr(shutdown_timeout)]
            args += ["--until-idle"] * until_idle + ["--quiet"] * quiet
            args += [arg for name in workflows for arg in ("--workflow", name)]
            args += [arg for name in allowed_commands for arg in ("--allow-command", name)]
            ports = None if metrics_host is None else (metrics_host, metrics_port)
            created = _new_store_place(engine)
            if created is not None:
                # Made here, so that it is noted once and not by each process.
                _run(_closing(engine, engine.get_store()))
                _note_created(created)
            log_level = ctx.find_root().params.get("log_level")
            sys.exit(_supervise(processes, args, log_level, ports))
        if concurrency:
            engine.max_concurrency = concurrency
        if shutdown_timeout is not None:
            engine.shutdown_timeout = shutdown_timeout
        if allowed_commands:
            if not all(allowed_commands):
                raise click.BadParameter(
                    "a program name may not be empty", param_hint="--allow-command"
                )
            engine.allowed_commands = engine.allowed_commands | set(allowed_commands)
        if workflows:
            if not all(name.strip() for name in workflows):
                raise click.BadParameter(
                    "a workflow name may not be empty", param_hint="--workflow"
                )
            engine.only_workflows = workflows
        server = None if metrics_host is None else MetricsServer(engine, metrics_host, metrics_port)
        _tune_gc()
        stopped_by = _run(
            _worker(engine, until_idle, quiet, _new_store_place(engine), server, label)
        )
        if stopped_by == signal.SIGINT:
            # Interrupted, as every wfe command is by Ctrl-C (the exit statuses of wfe
            # --help); SIGTERM, a service manager's way to stop it, is a clean exit (0).
            sys.exit(EXIT_INTERRUPTED)
        if stopped_by is not None and stopped_by != signal.SIGTERM:
            sys.exit(128 + stopped_by)  # SIGHUP: 129, as a shell reports a process it ended


@contextlib.contextmanager
def _errors_labelled(label: str) -> Iterator[None]:
    """Start the error line of a worker that ends on an error with ``label``, as
    its other lines are (a usage error keeps click's form: --processes, which
    starts labelled workers, has checked their command line)."""
    try:
        yield
    except click.UsageError:
        raise
    except click.ClickException as exc:
        if not label:
            raise
        click.echo(f"{label}Error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)


# Python's own collector thresholds, which an app that tunes its own changes.
_DEFAULT_GC_THRESHOLD = (700, 10, 10)
# Collect the young objects of a busy worker (a few per task in flight) in batches
# ten times larger than Python's default, which spent about 7% of a Kafka worker's CPU.
_WORKER_GC_THRESHOLD = (7000, 10, 10)


def _tune_gc() -> None:
    """Tune the garbage collector of this worker process, whose app is loaded: what
    is there now (the app, its imports) is left out of every later collection
    (``gc.freeze``), and young objects are collected in larger batches. An app that
    set thresholds of its own keeps them."""
    if gc.get_threshold() != _DEFAULT_GC_THRESHOLD:
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(*_WORKER_GC_THRESHOLD)


def _stop_signals() -> list[signal.Signals]:
    """The signals that stop a worker cleanly: SIGINT and SIGTERM, and SIGHUP (its
    terminal closed) unless the worker was started ignoring it, as ``nohup`` does:
    else closing the terminal would end it at once, its running phases held until
    another worker takes them over."""
    signals = [signal.SIGINT, signal.SIGTERM]
    hangup = getattr(signal, "SIGHUP", None)
    if hangup is not None and signal.getsignal(hangup) is signal.SIG_DFL:
        signals.append(hangup)
    return signals


def _supervise(
    count: int,
    args: list[str],
    log_level: str | None = None,
    ports: tuple[str, int] | None = None,
) -> int:
    """Run ``count`` ``wfe worker`` processes with ``args`` until all have exited.

    SIGINT and SIGTERM are passed on, so each stops as a lone worker would. A
    process that dies is not restarted (leave that to a process manager), but is
    named; the others go on. Returns the first non-zero exit status, else 0.
    """
    level = ["--log-level", log_level] if log_level else []
    command = [sys.executable, "-m", "wfcore.cli", *level, "worker", *args]
    command += ["--supervisor-pid", str(os.getpid())]

    # In sessions of their own: a Ctrl-C in the terminal reaches them once, passed
    # on from here (twice would stop them at once). PR_SET_PDEATHSIG ends them if
    # this process dies without passing a signal on.
    def metrics_of(i: int) -> list[str]:
        if ports is None:
            return []
        host, port = ports
        host = f"[{host}]" if ":" in host else host
        return ["--metrics", f"{host}:{port + i if port else 0}"]  # 0: each picks a port

    started = (
        subprocess.Popen([*command, *metrics_of(i)], start_new_session=True) for i in range(count)
    )
    children = {child.pid: child for child in started}

    passed: set[int] = set()

    def pass_on(signum: int, _frame: Any) -> None:
        passed.add(signum)
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signum)

    previous = {sig: signal.signal(sig, pass_on) for sig in (signal.SIGINT, signal.SIGTERM)}
    codes: list[int] = []
    try:
        while len(codes) < count:
            pid, code = _wait_any(list(children.values()))
            if code < 0 and -code in passed:
                # Ended by the signal passed on to it before it could handle it (still
                # importing the app, say): as it would have ended had it handled it.
                code = 0 if -code == signal.SIGTERM else 128 - code
            codes.append(code)
            # A worker interrupted by the Ctrl-C passed on to it exits 130, as asked.
            if code != 0 and not (code == EXIT_INTERRUPTED and signal.SIGINT in passed):
                running = count - len(codes)
                _say(f"wfe: worker process {pid} {_ended_how(code)}; {running} still running")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    failed = [code for code in codes if code != 0]
    if not failed:
        return 0
    # A child killed by a signal reports -N; a shell would say 128 + N.
    return failed[0] if failed[0] > 0 else 128 - failed[0]


def _wait_any(children: list[subprocess.Popen[bytes]]) -> tuple[int, int]:
    """Wait for the first of ``children`` still running to exit: (pid, returncode)."""
    running = {child.pid: child for child in children if child.returncode is None}
    if not hasattr(os, "waitpid") or sys.platform == "win32":
        child = next(iter(running.values()))
        return child.pid, child.wait()
    while True:
        pid, status = os.waitpid(-1, 0)  # retried after a signal handler (PEP 475)
        if pid in running:
            child = running[pid]
            child.returncode = os.waitstatus_to_exitcode(status)
            return pid, child.returncode


def _ended_how(code: int) -> str:
    if code >= 0:
        return f"exited with status {code}"
    try:
        return f"was killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"was killed by signal {-code}"


def _stop_with_supervisor(supervisor_pid: int) -> None:
    """Have Linux send this worker SIGTERM when its supervisor (wfe worker
    --processes) dies, killed or not: a process manager that signals only the
    supervisor would otherwise leave it running. Elsewhere, nothing."""
    if end_with_parent(signal.SIGTERM) and os.getppid() != supervisor_pid:
        os.kill(os.getpid(), signal.SIGTERM)  # it died before prctl took effect


class _WorkerLabel(logging.Filter):
    """Starts the message of every log line with ``label``: the lines of the
    processes of ``--processes`` share one stderr (and one journal)."""

    def __init__(self, label: str) -> None:
        super().__init__()
        self.label = label

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "wfe_worker_label", False):  # once, whatever the handlers
            record.msg = f"{self.label}{record.msg}"
            record.wfe_worker_label = True
        return True


def _label_log_lines(label: str) -> None:
    """Label this process's log lines as its progress lines are."""
    worker_label = _WorkerLabel(label)
    for handler in logging.getLogger().handlers:
        handler.addFilter(worker_label)


def _host_port(text: str) -> tuple[str, int]:
    """``[HOST:]PORT`` (an IPv6 host in brackets) as (host, port)."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]") if sep else "127.0.0.1"
    try:
        number = int(port)
    except ValueError:
        number = -1
    if number > 65535 and host:
        raise click.BadParameter(
            f"{text!r}: port {number} does not exist (ports are 0 to 65535; 0: any free one)",
            param_hint="--metrics",
        )
    if not 0 <= number <= 65535 or not host:
        raise click.BadParameter(
            f"{text!r} is not [HOST:]PORT (e.g. 9100 or 0.0.0.0:9100)", param_hint="--metrics"
        )
    return host, number


async def _worker(
    engine: ECSWorkflowEngine,
    until_idle: bool,
    quiet: bool,
    new_store: str | None = None,
    server: MetricsServer | None = None,
    label: str = "",
) -> int | None:
    """Run the worker until it is stopped or idle; return the signal that stopped
    it first (SIGINT or SIGTERM), or None."""
    loop = asyncio.get_running_loop()

    stops = 0
    first: int | None = None
    asked_to_stop = asyncio.Event()

    def stop(signum: int) -> None:
        nonlocal stops, first
        stops += 1
        asked_to_stop.set()
        if first is None:
            first = signum
        if stops > 1 and engine.running:
            # Asked again: the phases go back to the store now, as a cancelled shutdown.
            handed = engine.active_count
            engine.stop(now=True)
            _say(f"{label}stopping now: {handed} running phase(s) go back to the store")
            return
        if not quiet and engine.active_count and engine.running:
            waiting = engine.waiting_for_slots
            running = engine.active_count - waiting
            said = []
            if running:
                said.append(
                    f"{running} running phase(s) get up to {engine.shutdown_timeout:g}s to "
                    "finish, then go back to the store"
                )
            if waiting:
                said.append(f"{waiting} waiting for a phase's slot go back now")
            _say(f"{label}stopping: {'; '.join(said)} (a second Ctrl-C or SIGTERM: at once)")
        engine.stop()

    for sig in _stop_signals():
        try:
            loop.add_signal_handler(sig, stop, sig)
        except (NotImplementedError, RuntimeError):
            pass
    store = await _open_store(engine, asked_to_stop, label)
    if store is None:
        await engine.aclose()
        return first
    _note_created(new_store)
    if server is not None:
        picked = server.port == 0
        try:
            await server.start()
        except OSError as exc:
            await engine.aclose()
            where = f"{server.host}:{server.port}"
            raise click.ClickException(
                f"cannot serve metrics on {where}: {exc.strerror or exc}"
            ) from None
        if quiet and picked:
            # The start-up lines that name it are not said, and nothing else would
            # tell the port the system picked.
            _say(f"{label}metrics at {server.url}")
    try:
        await _work(engine, store, until_idle, quiet, server, lambda: stops > 0, label)
    finally:
        if server is not None:
            await server.close()
    return first


# Seconds between tries to open a store another process holds locked: doubling
# from the first to the last, each try itself waiting up to the store's timeout.
_STORE_RETRY_FIRST = 1.0
_STORE_RETRY_MOST = 30.0


async def _open_store(
    engine: ECSWorkflowEngine, asked_to_stop: asyncio.Event, label: str = ""
) -> Store | None:
    """The engine's store, opened; tried again for as long as another process holds
    it locked (a long purge or submission), rather than exit and be restarted in a
    loop by a service manager. None: told to stop before it could be opened. Any
    other error (not a wfcore store, a newer one, no access) ends the worker at once."""
    delay = _STORE_RETRY_FIRST
    started = time.monotonic()
    waiting = False
    while True:
        opening = asyncio.ensure_future(engine.get_store())
        stopping = asyncio.ensure_future(asked_to_stop.wait())
        await asyncio.wait({opening, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not opening.done():
            # Told to stop while a try waits for the lock: it is given up.
            opening.cancel()
            await asyncio.gather(opening, return_exceptions=True)
            return None
        try:
            store = opening.result()
        except StoreBusyError as exc:
            # Opened again from the start next time (the store closed, the workflows
            # saved again), as a worker started then would.
            await engine.aclose()
            if not waiting:
                waiting = True
                _say(
                    f"{label}waiting for the store: {exc}; "
                    f"trying again after {_STORE_RETRY_FIRST:g} s, doubling up to "
                    f"{_STORE_RETRY_MOST:g} s (Ctrl-C to stop)"
                )
        else:
            if waiting:
                waited = time.monotonic() - started
                _say(f"{label}the store is free again (waited {waited:.0f} s)")
            return store
        if asked_to_stop.is_set():
            return None
        try:
            await asyncio.wait_for(asked_to_stop.wait(), delay)
            return None
        except asyncio.TimeoutError:
            delay = min(delay * 2, _STORE_RETRY_MOST)


async def _work(
    engine: ECSWorkflowEngine,
    store: Store,
    until_idle: bool,
    quiet: bool,
    server: MetricsServer | None,
    stopped: Callable[[], bool],
    label: str = "",
) -> None:
    only = engine.only_workflows
    if only:
        # A misspelt name would leave this worker idle for good: say so.
        known = {spec.name for spec in await store.load_workflows()} | set(engine.workflows)
        for name in only:
            if name not in known:
                hint = f" (known: {', '.join(sorted(known))})" if known else ""
                _say(
                    f"{label}warning: no workflow named {name!r} is registered or stored "
                    f"yet{hint}; this worker waits for its tasks"
                )
    if not quiet:
        scope = f"; workflows {', '.join(only)}" if only else ""
        _say(
            f"{label}wfe worker {engine.worker_id} on {store.url} "
            f"(concurrency {engine.max_concurrency}{scope}); Ctrl-C to stop"
        )
        if server is not None:
            _say(f"{label}  metrics at {server.url}")
        for line in [*_schedule_lines(engine), *report_header(engine)]:
            _say(f"{label}  {line}")
    said = await _note_delayed_only(store, only) if until_idle else None
    progress = _Progress(terminal=sys.stderr is not None and sys.stderr.isatty(), label=label)
    reporter = None if quiet else asyncio.create_task(_report(engine, progress))
    noting = None
    if until_idle and quiet:
        # No progress line will show the delayed tasks it then waits for, hours off
        # perhaps: a script would see it hang without a word.
        noting = asyncio.create_task(_note_when_only_delayed(engine, store, only, said))
    try:
        # A Ctrl-C or SIGTERM while the store opened came before any run to stop.
        if stopped():
            pass
        elif until_idle:
            await engine.run_until_idle()
        else:
            await engine.run()
    finally:
        if noting is not None:
            noting.cancel()
            await asyncio.gather(noting, return_exceptions=True)
        if reporter is not None:
            reporter.cancel()
            await asyncio.gather(reporter, return_exceptions=True)
            progress.echo(_progress_line(engine, None, None), always=True)
        await engine.aclose()


async def _note_delayed_only(store: Store, only: tuple[str, ...] | None) -> str | None:
    """Say so when --until-idle has nothing due but delayed tasks: it waits for
    them, however far off they are. The note said, or None."""
    try:
        if await store.count_due(workflows=only):
            return None
        count, first = await store.count_delayed(workflows=only)
    except Exception:  # the progress line says what is wrong with the store
        return None
    if not count:
        return None
    when = f", the next at {_utc_text(first)}" if first is not None else ""
    note = (
        f"note: no task is due yet; --until-idle waits for {count} delayed "
        f"task(s){when} (Ctrl-C to stop)"
    )
    _say(note)
    return note


async def _note_when_only_delayed(
    engine: ECSWorkflowEngine,
    store: Store,
    only: tuple[str, ...] | None,
    said: str | None,
    every: float = 2.0,
) -> None:
    """For a --quiet --until-idle worker: each time it has run what was due and
    only delayed tasks are left, say that it waits for them (as it says on
    starting with nothing due). ``said``: the note said as it started."""
    while True:
        await asyncio.sleep(every)
        if engine.active_count:
            said = None  # at work: the next wait is worth a word again
            continue
        try:
            due = await store.count_due(workflows=only)
        except Exception:  # the store's own errors are logged by the engine
            continue
        if due:
            said = None
        elif said is None:
            said = await _note_delayed_only(store, only)


def _utc_text(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _progress_line(
    engine: ECSWorkflowEngine,
    rate: float | None,
    store_counts: dict[TaskStatus, int] | None,
    delayed: tuple[int, datetime | None] = (0, None),
) -> str:
    """The worker's progress: its own counts, then the store's by status, the
    pending ones with how many of them are delayed (``delayed``, as
    ``Store.count_delayed`` gives it) and when the next is due."""
    s = engine.stats
    line = (
        f"this worker: completed {s['completed']}  failed {s['failed']}  "
        f"suspended {s['suspended']}  retried {s['retried']}  running {engine.active_count}"
    )
    if rate is not None:
        line += f"  {rate:.1f} tasks/s"
    if store_counts:
        parts = []
        for status in TaskStatus:
            if status not in store_counts:
                continue
            part = f"{status.value} {store_counts[status]}"
            if status is TaskStatus.PENDING and delayed[0]:
                count, first = delayed
                when = f", next at {_utc_text(first)}" if first is not None else ""
                part += f" ({count} delayed{when})"
            parts.append(part)
        line += " | store: " + "  ".join(parts)
    return line


class _Progress:
    """Where the worker's progress lines go. To a terminal: every line, as it
    comes. Elsewhere (a log file, journald): a line only when it says something
    new, at most every ``changes_every`` seconds (a busy worker, or a schedule
    firing every second, changes it at every line), or once a minute when nothing
    changed, each after the UTC time."""

    def __init__(
        self,
        terminal: bool,
        quiet_for: float = 60.0,
        label: str = "",
        changes_every: float = 10.0,
    ) -> None:
        self.terminal = terminal
        self.label = label
        self.quiet_for = quiet_for
        self.changes_every = changes_every
        self._last: str | None = None
        self._last_at = -math.inf

    def show(self, line: str, now: float | None = None, always: bool = False) -> str | None:
        """The text to print for ``line`` at monotonic time ``now``, or None to skip it."""
        line = self.label + line
        if self.terminal:
            return line
        now = time.monotonic() if now is None else now
        wait = self.quiet_for if line == self._last else self.changes_every
        if not always and now - self._last_at < wait:
            return None
        self._last, self._last_at = line, now
        return f"{datetime.now(timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')} {line}"

    def echo(self, line: str, now: float | None = None, always: bool = False) -> None:
        """Print ``line`` on stderr, if :meth:`show` says to."""
        said = self.show(line, now, always)
        if said is not None:
            _say(said)


def _say(line: str) -> None:
    """Print ``line`` on stderr, if stderr is still there (see :func:`_stderr_gone`):
    a failing write here would keep a signal handler from stopping the worker."""
    try:
        click.echo(line, err=True)
    except OSError:  # EPIPE, EIO
        _stderr_gone()


async def _report(engine: ECSWorkflowEngine, progress: _Progress, every: float = 2.0) -> None:
    last, last_t = 0, time.monotonic()
    while True:
        await asyncio.sleep(every)
        now = time.monotonic()
        done = engine.stats["completed"] + engine.stats["failed"]
        try:
            store = await engine.get_store()
            counts = await store.count_tasks()
            # Only asked while some task is pending: the delayed are among them.
            delayed = await store.count_delayed() if counts.get(TaskStatus.PENDING) else (0, None)
        except Exception as exc:  # the store is busy or broken: the worker says so
            progress.echo(f"progress: cannot count the store's tasks ({_describe(exc)})")
            continue
        rate = (done - last) / (now - last_t)
        progress.echo(_progress_line(engine, rate, counts, delayed), now)
        last, last_t = done, now

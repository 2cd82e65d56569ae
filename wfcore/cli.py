"""The ``wfe`` command line: run workers, submit, inspect, answer and cancel tasks."""

from __future__ import annotations

import asyncio
import getpass
import importlib
import json
import logging
import math
import os
import re
import signal
import subprocess
import sys
import time
import unicodedata
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar, TextIO, TypeVar

import click

from ._processes import worker_died_here
from .engine import _MAX_SECONDS, ECSWorkflowEngine, default_store_url
from .errors import (
    InvalidOutputError,
    InvalidTaskError,
    StoreError,
    UnknownWorkflowError,
    WorkflowError,
)
from .metrics import MetricsServer, render_metrics
from .model import DEFINE_WORKFLOW, Phase, Task, TaskStatus, actor_name
from .plugins import (
    call_impl,
    hook_impls,
    installed_plugins,
    make_plugin_manager,
    plugin_infos,
    report_header,
    why_not_loaded,
)
from .stores.base import Store
from .stores.sqlite import SQLiteStore, new_store_file
from .wire import is_unicode_text, parse_time, task_to_dict, workflow_to_dict

__all__ = ["cli", "load_app", "main"]

F = TypeVar("F", bound=Callable[..., Any])
_T = TypeVar("_T")

_STORE_HELP = (
    "Store URL, e.g. sqlite:///abs/path/wfe.db or memory:// "
    "[env WFE_STORE; default: sqlite:///<cwd>/.wfe/wfe.db]"
)


def _store_option(fn: F) -> F:
    # Only the group's option reads WFE_STORE: a subcommand's own --store, then the
    # group's --store, then the environment, in that order.
    return click.option("--store", "store", help=_STORE_HELP)(fn)


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
        formatter = logging.Formatter(
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
    def __init__(self, store: str | None) -> None:
        self.store = store


def _engine(
    ctx: click.Context,
    store: str | None,
    app: str | None = None,
    *,
    app_hint: str = "APP",
    existing: bool = False,
    in_process: bool = False,
) -> ECSWorkflowEngine:
    """The engine a command works with: the app's (``MODULE:ATTR``), else a bare one.

    ``existing``: the command only reads or changes tasks already stored, so a SQLite
    store that does not exist is an error (a wrong --store or WFE_STORE), not a new
    empty database. ``in_process``: the command itself runs the tasks (wfe worker),
    so memory:// is of use; to every other command it is a store that ends with it.
    """
    url = store or ctx.find_object(_Context).store  # type: ignore[union-attr]
    if existing:
        _check_store_exists(url or default_store_url())
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
    return engine


def _note_store_replaced(engine: ECSWorkflowEngine, url: str) -> None:
    """Say so when --store or WFE_STORE overrides the store an app names in code: a
    WFE_STORE left in the shell would otherwise quietly serve another store."""
    own = engine._store_arg
    if isinstance(own, str) and own != url:
        click.echo(
            f"wfe: using the store {_shown_url(url)} (from --store or WFE_STORE), "
            f"not the app's own {_shown_url(own)}",
            err=True,
        )


def _shown_url(url: str) -> str:
    """A store URL to print: a password in it (a database server's) masked."""
    return re.sub(r"//[^/@]*@", "//***@", url, count=1)


class _InputError(click.ClickException):
    """Input the command cannot take, found after click parsed it: exit status 2, as
    for click's usage errors, in one line."""

    exit_code = 2


def _memory_refused() -> click.ClickException:
    return _InputError(
        "memory:// lives in this one command's process and ends with it: "
        "use a store the commands share (sqlite:///path; --store or WFE_STORE)"
    )


def _check_store_exists(url: str) -> None:
    if not url.startswith("sqlite:"):
        return  # other stores are services (or memory://): opening creates nothing
    try:
        path = SQLiteStore.from_url(url).path
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    if not path.exists():
        raise click.ClickException(
            f"no store at {path}: nothing was submitted or run there (check --store and WFE_STORE)"
        )


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist, deepest first."""
    missing = []
    while not folder.exists() and folder.parent != folder:
        missing.append(folder)
        folder = folder.parent
    return missing


def _remove_store_file(path: Path, folders: list[Path]) -> None:
    """Remove a SQLite store this command created, with its side files and the
    folders made for it (``folders``, deepest first)."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            path.with_name(path.name + suffix).unlink(missing_ok=True)
        except OSError:
            return  # never made: its folder is a file, say
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return  # something else is in it now


def _note_created(path: Path | None) -> None:
    """Say that a command created a store: a mistyped --store or WFE_STORE would
    otherwise go unnoticed (the first run on a new store needs it made, though)."""
    if path is not None and path.exists():
        click.echo(f"wfe: created a new store at {path}", err=True)


def _run(coro: Coroutine[Any, Any, _T], invalid_input: tuple[type[WorkflowError], ...] = ()) -> _T:
    """Run a command's coroutine; a WorkflowError is the one-line Error (exit 1, or
    2 for one of ``invalid_input``: the command line named something that is not)."""
    try:
        return asyncio.run(coro)
    except invalid_input as exc:
        raise _InputError(str(exc)) from None
    except InvalidOutputError as exc:
        lines = "\n".join(f"  - {e}" for e in exc.errors)
        raise click.ClickException(f"{exc.summary}:\n{lines}" if lines else str(exc)) from None
    except WorkflowError as exc:
        raise click.ClickException(str(exc)) from None


async def _closing(engine: ECSWorkflowEngine, coro: Awaitable[_T]) -> _T:
    try:
        return await coro
    finally:
        await engine.aclose()


def _task_json(task: Task) -> str:
    """A task as every command prints it with --json: with its version, which
    wfe resume --if-version takes back."""
    return json.dumps(task_to_dict(task, internal=True), indent=2, ensure_ascii=False)


def _tasks_json(tasks: list[Task]) -> str:
    docs = [task_to_dict(task, internal=True) for task in tasks]
    return json.dumps(docs, indent=2, ensure_ascii=False)


def _read_data(value: str) -> str:
    """``--data``'s text: as given, from stdin (``-``) or from a file (``@FILE``)."""
    if value == "-":
        return sys.stdin.read()
    if not value.startswith("@"):
        return value
    try:
        return Path(value[1:]).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise click.BadParameter(
            f"cannot read {value[1:]!r}: {reason}", param_hint="--data"
        ) from None


def _parse_json(value: str, option: str) -> Any:
    try:
        return json.loads(value)
    except ValueError as exc:
        raise click.BadParameter(f"not valid JSON ({exc})", param_hint=option) from None


def load_app(spec: str, param_hint: str = "APP") -> ECSWorkflowEngine:
    """Import ``MODULE:ATTR`` and return the engine it names (or that its factory makes).

    Every way this can fail (a bad spec, an app that does not import or raises while
    importing, a factory that fails) is a :class:`click.BadParameter` naming
    ``param_hint`` and the cause, in one line.
    """
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise click.BadParameter(f"expected MODULE:ATTR, got {spec!r}", param_hint=param_hint)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise click.BadParameter(
            f"cannot import {module_name!r}: {exc}", param_hint=param_hint
        ) from None
    except Exception as exc:  # a SyntaxError, or the app's own code raising
        raise click.BadParameter(
            f"importing {module_name!r} failed: {_describe(exc)}", param_hint=param_hint
        ) from None
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise click.BadParameter(
            f"module {module_name!r} has no attribute {attr!r}", param_hint=param_hint
        ) from None
    if not isinstance(obj, ECSWorkflowEngine) and callable(obj):
        try:
            obj = obj()
        except Exception as exc:
            raise click.BadParameter(
                f"calling {spec}() failed: {_describe(exc)}", param_hint=param_hint
            ) from None
    if not isinstance(obj, ECSWorkflowEngine):
        raise click.BadParameter(
            f"{spec} is neither an ECSWorkflowEngine nor a factory returning one",
            param_hint=param_hint,
        )
    return obj


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
                kept = "the built-in" if owner is None else f"plugin {owner!r}'s"
                click.echo(
                    f"Warning: plugin {plugin!r} adds a command {name!r}, which wfe has "
                    f"already; it is left out and {kept} kept",
                    err=True,
                )
                return
            self.added_by[name] = plugin
        super().add_command(cmd, name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            # Ctrl-C: 130, as a shell reports a process SIGINT ended, not click's
            # "Aborted!" and 1, which a script cannot tell from a failure.
            click.echo("wfe: interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        if args and args[0] == "ui" and self.get_command(ctx, "ui") is None:
            if not ctx.resilient_parsing:
                ctx.fail(_no_ui())
        return super().resolve_command(ctx, args)


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


@click.group(
    cls=_Group, context_settings={"help_option_names": ["-h", "--help"]}, epilog=_EXIT_STATUSES
)
@click.version_option(package_name="wfcore", prog_name="wfe")
@click.option("--store", "store", envvar="WFE_STORE", help=_STORE_HELP)
@click.option(
    "--log-level",
    type=click.Choice(_LOG_LEVELS, case_sensitive=False),
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


@cli.command()
@click.argument("app")
@_store_option
@click.option(
    "--concurrency",
    type=click.IntRange(1, 1_000_000),
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
    another worker; a second Ctrl-C or SIGTERM hands them back at once.
    """
    if supervisor_pid is not None:
        _stop_with_supervisor(supervisor_pid)
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
        args = [app, "--store", url, *(["--concurrency", str(concurrency)] if concurrency else [])]
        if shutdown_timeout is not None:
            args += ["--shutdown-timeout", repr(shutdown_timeout)]
        args += ["--until-idle"] * until_idle + ["--quiet"] * quiet
        args += [arg for name in workflows for arg in ("--workflow", name)]
        args += [arg for name in allowed_commands for arg in ("--allow-command", name)]
        ports = None if metrics_host is None else (metrics_host, metrics_port)
        created = new_store_file(url)
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
            raise click.BadParameter("a workflow name may not be empty", param_hint="--workflow")
        engine.only_workflows = workflows
    server = None if metrics_host is None else MetricsServer(engine, metrics_host, metrics_port)
    _run(_worker(engine, until_idle, quiet, new_store_file(engine.store_url), server))


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

    def pass_on(signum: int, _frame: Any) -> None:
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signum)

    previous = {sig: signal.signal(sig, pass_on) for sig in (signal.SIGINT, signal.SIGTERM)}
    codes: list[int] = []
    try:
        while len(codes) < count:
            pid, code = _wait_any(list(children.values()))
            codes.append(code)
            if code != 0:
                running = count - len(codes)
                click.echo(
                    f"wfe: worker process {pid} {_ended_how(code)}; {running} still running",
                    err=True,
                )
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
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != supervisor_pid:
        os.kill(os.getpid(), signal.SIGTERM)  # it died before prctl took effect


def _host_port(text: str) -> tuple[str, int]:
    """``[HOST:]PORT`` (an IPv6 host in brackets) as (host, port)."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]") if sep else "127.0.0.1"
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not 0 <= number <= 65535 or not host:
        raise click.BadParameter(
            f"{text!r} is not [HOST:]PORT (e.g. 9100 or 0.0.0.0:9100)", param_hint="--metrics"
        )
    return host, number


async def _worker(
    engine: ECSWorkflowEngine,
    until_idle: bool,
    quiet: bool,
    new_file: Path | None = None,
    server: MetricsServer | None = None,
) -> None:
    loop = asyncio.get_running_loop()

    stops = 0

    def stop() -> None:
        nonlocal stops
        stops += 1
        if stops > 1 and engine.running:
            # Asked again: the phases go back to the store now, as a cancelled shutdown.
            handed = engine.active_count
            engine.stop(now=True)
            click.echo(f"stopping now: {handed} running phase(s) go back to the store", err=True)
            return
        if not quiet and engine.active_count and engine.running:
            click.echo(
                f"stopping: {engine.active_count} running phase(s) get up to "
                f"{engine.shutdown_timeout:g}s to finish, then go back to the store "
                "(Ctrl-C again: at once)",
                err=True,
            )
        engine.stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop)
        except (NotImplementedError, RuntimeError):
            pass
    store = await engine.get_store()
    _note_created(new_file)
    if server is not None:
        try:
            await server.start()
        except OSError as exc:
            await engine.aclose()
            where = f"{server.host}:{server.port}"
            raise click.ClickException(
                f"cannot serve metrics on {where}: {exc.strerror or exc}"
            ) from None
    try:
        await _work(engine, store, until_idle, quiet, server, lambda: stops > 0)
    finally:
        if server is not None:
            await server.close()


async def _work(
    engine: ECSWorkflowEngine,
    store: Store,
    until_idle: bool,
    quiet: bool,
    server: MetricsServer | None,
    stopped: Callable[[], bool],
) -> None:
    only = engine.only_workflows
    if only:
        # A misspelt name would leave this worker idle for good: say so.
        known = {spec.name for spec in await store.load_workflows()} | set(engine.workflows)
        for name in only:
            if name not in known:
                hint = f" (known: {', '.join(sorted(known))})" if known else ""
                click.echo(
                    f"warning: no workflow named {name!r} is registered or stored yet{hint}; "
                    "this worker waits for its tasks",
                    err=True,
                )
    if not quiet:
        scope = f"; workflows {', '.join(only)}" if only else ""
        click.echo(
            f"wfe worker {engine.worker_id} on {store.url} "
            f"(concurrency {engine.max_concurrency}{scope}); Ctrl-C to stop",
            err=True,
        )
        if server is not None:
            click.echo(f"  metrics at {server.url}", err=True)
        for line in report_header(engine):
            click.echo(f"  {line}", err=True)
    if until_idle:
        await _note_delayed_only(store, only)
    progress = _Progress(terminal=sys.stderr.isatty())
    reporter = None if quiet else asyncio.create_task(_report(engine, progress))
    try:
        # A Ctrl-C or SIGTERM while the store opened came before any run to stop.
        if stopped():
            pass
        elif until_idle:
            await engine.run_until_idle()
        else:
            await engine.run()
    finally:
        if reporter is not None:
            reporter.cancel()
            await asyncio.gather(reporter, return_exceptions=True)
            progress.echo(_progress_line(engine, None, None), always=True)
        await engine.aclose()


async def _note_delayed_only(store: Store, only: tuple[str, ...] | None) -> None:
    """Say so once when --until-idle starts with nothing due but delayed tasks:
    it waits for them, however far off they are."""
    try:
        if await store.count_due(workflows=only):
            return
        count, first = await store.count_delayed(workflows=only)
    except Exception:  # the progress line says what is wrong with the store
        return
    if count:
        when = f", the next at {_utc_text(first)}" if first is not None else ""
        click.echo(
            f"note: no task is due yet; --until-idle waits for {count} delayed "
            f"task(s){when} (Ctrl-C to stop)",
            err=True,
        )


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
    new, or once a minute when nothing changed, each after the UTC time."""

    def __init__(self, terminal: bool, quiet_for: float = 60.0) -> None:
        self.terminal = terminal
        self.quiet_for = quiet_for
        self._last: str | None = None
        self._last_at = 0.0

    def show(self, line: str, now: float | None = None, always: bool = False) -> str | None:
        """The text to print for ``line`` at monotonic time ``now``, or None to skip it."""
        if self.terminal:
            return line
        now = time.monotonic() if now is None else now
        if not always and line == self._last and now - self._last_at < self.quiet_for:
            return None
        self._last, self._last_at = line, now
        return f"{datetime.now(timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')} {line}"

    def echo(self, line: str, now: float | None = None, always: bool = False) -> None:
        """Print ``line`` on stderr, if :meth:`show` says to."""
        said = self.show(line, now, always)
        if said is not None:
            click.echo(said, err=True)


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


_DEFINE_HINT = f"wfe submit - --classification {DEFINE_WORKFLOW} --data SPEC"


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
@click.option("--classification", help="Start at this phase instead of classifying.")
@click.option(
    "--assigned-to",
    default="ai",
    show_default=True,
    help="Task type: human, agentic (ai) or functional.",
)
@click.option("--id", "task_id", help="Task id; submitting an existing id returns that task.")
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
    as_json: bool,
    store: str | None,
) -> None:
    """Queue a task for WORKFLOW and print its id.

    A task that defines its own workflow takes "-" as WORKFLOW, with
    --classification define_workflow and the spec as --data. With --delay or
    --at, it waits (pending) until then before its first phase.
    """
    if workflow == "-" and classification != DEFINE_WORKFLOW:
        given = f", not {classification!r}" if classification is not None else ""
        raise click.UsageError(
            f"WORKFLOW '-' (no workflow) needs --classification {DEFINE_WORKFLOW}{given}: "
            f"{_DEFINE_HINT}"
        )
    payload = _parse_json(_read_data(data), "--data")
    run_after = _start_option(delay, at)
    engine = _engine(ctx, store, app, app_hint="--app")
    new_file = new_store_file(engine.store_url)
    new_folders = _missing_folders(new_file.parent) if new_file is not None else []
    name = None if workflow == "-" else workflow
    submitting = engine.submit_task(
        payload, name, classification, assigned_to, task_id, run_after=run_after
    )
    try:
        # Input no click option could check: the workflow, classification or type
        # names, data or id the engine refuses.
        task = _run(_closing(engine, submitting), (UnknownWorkflowError, InvalidTaskError))
    except click.ClickException as exc:
        if new_file is not None:
            # Nothing was stored: a store left behind would make a mistyped path
            # look right to every later command.
            _remove_store_file(new_file, new_folders)
            click.echo(
                f"wfe: there is no store at {new_file}; none was left there "
                "(check --store and WFE_STORE)",
                err=True,
            )
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
    _note_created(new_file)
    if task_id is not None and (task.data != payload or task.workflow_name != name):
        click.echo(
            f"note: task {task_id!r} already exists and was left as it is "
            "(its workflow or data differ from this submission)",
            err=True,
        )
    if as_json:
        click.echo(_task_json(task))
    else:
        click.echo(task.id)


_WAITING = (TaskStatus.WAITING_HUMAN, TaskStatus.WAITING_AGENT, TaskStatus.WAITING_IO)
_FINISHED = (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)
_STATUS_NAMES = ", ".join(s.value for s in TaskStatus)


def _parse_statuses(
    values: tuple[str, ...], option: str = "--status", allowed: tuple[TaskStatus, ...] = ()
) -> list[TaskStatus]:
    """``pending``, ``FAILED``, ``waiting`` (the three waiting_* ones), given as a
    repeated option, separated by commas, or both. ``allowed``: the only statuses
    the command takes (else any)."""
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
                f"{what} tasks are never purged; only {_or(s.value for s in allowed)}",
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
@_store_option
@click.pass_context
def tasks(
    ctx: click.Context,
    statuses: tuple[str, ...],
    workflow: str | None,
    limit: int,
    offset: int,
    as_json: bool,
    store: str | None,
) -> None:
    """List tasks, newest first."""
    if workflow is not None and not is_unicode_text(workflow):
        raise click.BadParameter(f"{workflow!r} is not UTF-8 text", param_hint="--workflow")
    wanted = _parse_statuses(statuses) if statuses else None
    engine = _engine(ctx, store, existing=True)

    async def fetch() -> tuple[list[Task], int]:
        st = await engine.get_store()
        found = await st.list_tasks(
            status=wanted, workflow_name=workflow, limit=limit, offset=offset
        )
        if not found and workflow is not None:
            known = sorted(spec.name for spec in await st.load_workflows())
            if workflow not in known:  # a typo, not a workflow without tasks
                raise _InputError(
                    f"unknown workflow {workflow!r} (known: {', '.join(known) or 'none'})"
                )
        if as_json or (offset == 0 and len(found) < limit):
            return found, len(found)  # all of them, or nobody reads the total
        counts = await st.count_tasks(workflow)
        return found, sum(n for status, n in counts.items() if wanted is None or status in wanted)

    found, total = _run(_closing(engine, fetch()))
    if as_json:
        click.echo(_tasks_json(found))
        return
    if not found:
        click.echo(f"no tasks (--offset {offset} of {total})" if offset and total else "no tasks")
        return
    rows = [
        (
            t.id,
            t.workflow_name or "-",
            t.classification or "-",
            t.status.value,
            t.updated_at.strftime("%Y-%m-%d %H:%M:%S"),
            _short(t.error or t.waiting_reason or _starts(t)),
        )
        for t in found
    ]
    _table(("ID", "WORKFLOW", "PHASE", "STATUS", "UPDATED (UTC)", "NOTE"), rows)
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


@cli.command()
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True, help="Print the task as JSON.")
@_store_option
@click.pass_context
def show(ctx: click.Context, task_id: str, as_json: bool, store: str | None) -> None:
    """Show one task: status, data, outputs, artifacts and history.

    A waiting task shows the input_schema its answer must match; a failed one its
    error and traceback.
    """
    engine = _engine(ctx, store, existing=True)

    async def fetch() -> tuple[Task | None, Phase | None, tuple[str, datetime] | None]:
        task = await engine.get_task(task_id)
        if as_json or task is None:
            return task, None, None
        store = await engine.get_store()
        return task, await _current_phase(store, task), await store.lease_of(task.id)

    task, phase, lease = _run(_closing(engine, fetch()))
    if task is None:
        raise click.ClickException(f"unknown task {task_id!r}")
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
    click.echo(f"attempts  {task.attempts}")
    click.echo(f"version   {task.version}")
    click.echo(f"created   {task.created_at.isoformat()}")
    click.echo(f"updated   {task.updated_at.isoformat()}")
    if task.waiting_reason:
        click.echo(f"waiting   {task.waiting_reason}")
    if task.deadline:
        passed = task.status.is_waiting and task.deadline <= datetime.now(timezone.utc)
        click.echo(f"deadline  {task.deadline.isoformat()}{' (deadline passed)' if passed else ''}")
    if task.status.is_waiting and phase is not None and phase.input_schema is not None:
        click.echo(f"schema    {json.dumps(phase.input_schema, ensure_ascii=False)}")
    if task.run_after is not None and _starts(task):
        click.echo(f"starts    {task.run_after.isoformat()}")
    if task.error:
        click.echo(f"error     {task.error}")
    if task.traceback:
        click.echo("traceback")
        for line in task.traceback.rstrip("\n").splitlines():
            click.echo(f"  {line}")
    click.echo(f"data      {json.dumps(task.data, ensure_ascii=False)}")
    if task.context:
        click.echo(f"context   {json.dumps(task.context, ensure_ascii=False)}")
    for name, value in task.outputs.items():
        click.echo(f"output    {name}: {json.dumps(value, ensure_ascii=False)}")
    for art in task.artifacts:
        click.echo(f"artifact  {art.name} ({art.size} bytes, {art.media_type}) {art.path}")
    click.echo("history")
    for event in task.history:
        if not isinstance(event, dict):  # a damaged store's; shown as it is
            click.echo(f"  {json.dumps(event, ensure_ascii=False)}")
            continue
        details = {k: v for k, v in event.items() if k not in ("at", "event")}
        extra = " ".join(f"{k}={_detail(v)}" for k, v in details.items() if v is not None)
        click.echo(f"  {str(event.get('at', '?'))[:23]}  {event.get('event', '?')!s:<16} {extra}")


def _detail(value: Any) -> str:
    """A history event's value as a person reads it: JSON but for plain text."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


async def _current_phase(store: Store, task: Task) -> Phase | None:
    """The phase a task is at, from its stored workflow (None if unknown); for a
    task not classified yet, the workflow's first, where it starts unless a
    classifier picks another."""
    for spec in await store.load_workflows():
        if spec.name == task.workflow_name:
            if task.classification is None:
                return spec.phases[0] if spec.phases else None
            return spec.phase(task.classification)
    return None


def _phase_text(task: Task) -> str:
    if task.classification is not None:
        return task.classification
    # The store learns the first phase's name when it ends (or waits).
    return "- (the first; named when it ends)" if task.status is TaskStatus.IN_PROGRESS else "-"


def _type_text(task: Task, phase: Phase | None) -> str:
    """Who runs the task's phase: the phase's type, else the task's own."""
    own = task.assigned_to.value
    if phase is None:
        return f"{own} (the task's own)"
    if phase.assigned_to is None or phase.assigned_to is task.assigned_to:
        return own
    whose = "this phase's" if task.classification is not None else "the first phase's"
    return f"{phase.assigned_to.value} ({whose}; the task's own: {own})"


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
    if seconds is not None and seconds > _MAX_SECONDS:
        raise click.BadParameter(f"{timeout!r} is more than 100 years", param_hint="--timeout")
    engine = _engine(ctx, store, existing=True)
    try:
        task = _run(
            _closing(engine, engine.wait_for_task(task_id, timeout=seconds, waiting=waiting))
        )
    except TimeoutError as exc:
        click.echo(f"Error: {exc}", err=True)
        ctx.exit(EXIT_TIMED_OUT)
    if as_json:
        click.echo(_task_json(task))
    elif task.status is TaskStatus.COMPLETED:
        click.echo(json.dumps(task.output, ensure_ascii=False))
    elif task.status.is_waiting:
        question = f": {task.waiting_reason}" if task.waiting_reason else ""
        click.echo(f"{task.status.value}{_in_phase(task)}{question}")
    if task.status in (TaskStatus.FAILED, TaskStatus.CANCELLED):
        said = f": {task.error}" if task.error else ""
        click.echo(
            f"task {task.id!r} {task.status.value}{_in_phase(task)}{said}",
            err=True,
        )
        ctx.exit(EXIT_TASK_FAILED)


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
            raise click.BadParameter(str(exc), param_hint="--by") from None
        return by
    try:
        login = getpass.getuser()
        actor_name(login)
    except (KeyError, OSError, ValueError):
        return None
    return login


@cli.command()
@click.argument("task_id")
@click.option("--output", "output", help="The answer as JSON (neither option: null).")
@click.option("--text", help="The answer as plain text (instead of --output).")
@click.option(
    "--phase",
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
    answer = (
        text if text is not None else (None if output is None else _parse_json(output, "--output"))
    )
    engine = _engine(ctx, store, app, app_hint="--app", existing=True)
    resuming = engine.resume(task_id, answer, phase=phase, version=version, by=_who(by))
    task = _run(_closing(engine, resuming))
    if as_json:
        click.echo(_task_json(task))
    else:
        click.echo(f"{task.id} {task.status.value}")


@cli.command()
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True, help="Print the task as JSON.")
@_by_option
@_hooks_app_option
@_store_option
@click.pass_context
def cancel(
    ctx: click.Context,
    task_id: str,
    as_json: bool,
    by: str | None,
    app: str | None,
    store: str | None,
) -> None:
    """Cancel a pending, running or waiting task (--app: with the app's hooks).

    Prints the task's id and its new status, cancelled.
    """
    engine = _engine(ctx, store, app, app_hint="--app", existing=True)
    task = _run(_closing(engine, engine.cancel(task_id, by=_who(by))))
    click.echo(_task_json(task) if as_json else f"{task.id} {task.status.value}")


@cli.command()
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True, help="Print the task as JSON.")
@_by_option
@_store_option
@click.pass_context
def retry(
    ctx: click.Context, task_id: str, as_json: bool, by: str | None, store: str | None
) -> None:
    """Run a failed or cancelled task's phase again, with fresh attempts.

    Prints the task's id and its new status, pending.
    """
    engine = _engine(ctx, store, existing=True)
    task = _run(_closing(engine, engine.retry(task_id, by=_who(by))))
    click.echo(_task_json(task) if as_json else f"{task.id} {task.status.value}")


_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _start_option(delay: str | None, at: str | None) -> float | datetime | None:
    """``wfe submit``'s --delay (seconds) or --at (an aware datetime)."""
    if delay is not None and at is not None:
        raise click.UsageError("give --delay or --at, not both")
    if delay is not None:
        return _parse_age(delay, "--delay", "a duration")
    if at is None:
        return None
    try:
        when = parse_time(at)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--at") from None
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
@_store_option
@click.pass_context
def purge(
    ctx: click.Context,
    older_than: str,
    statuses: tuple[str, ...],
    workflow: str | None,
    dry_run: bool,
    store: str | None,
) -> None:
    """Delete finished tasks and their artifact files, to keep a store small.

    Pending, running and waiting tasks are never deleted, nor are finished ones
    whose result the Kafka plugin (or another outbox consumer) has not published.
    """
    seconds = _parse_age(older_than)
    wanted = _parse_statuses(statuses or ("completed,failed,cancelled",), allowed=_FINISHED)
    engine = _engine(ctx, store, existing=True)

    async def purge_and_look() -> tuple[int, dict[str, int]]:
        count = await engine.purge(
            seconds, statuses=wanted, workflow_name=workflow, dry_run=dry_run
        )
        try:
            consumers = await (await engine.get_store()).outbox_consumers()
        except StoreError:
            consumers = {}  # a store without an outbox listing keeps nothing back
        return count, consumers

    count, consumers = _run(_closing(engine, purge_and_look()))
    which = "/".join(s.value for s in wanted)
    verb = "would delete" if dry_run else "deleted"
    age = older_than.strip().lower()
    click.echo(f"{verb} {count} {which} task(s) that finished more than {age} ago")
    waiting = {name: n for name, n in consumers.items() if n}
    if waiting:
        # Else a store that does not shrink is a mystery: a consumer long gone
        # (a renamed results topic, say) keeps every task it never published.
        listed = ", ".join(f"{name} ({n})" for name, n in waiting.items())
        click.echo(
            f"kept: finished tasks not yet published by outbox consumer(s) {listed}; see wfe outbox"
        )


def _outbox_consumers(ctx: click.Context, store: str | None) -> dict[str, int]:
    engine = _engine(ctx, store, existing=True)

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


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@_store_option
@click.pass_context
def status(ctx: click.Context, as_json: bool, store: str | None) -> None:
    """Count the store's tasks by workflow and status, and name the busy workers.

    WAITING adds up tasks waiting for a person, an agent or I/O (wfe tasks --status
    waiting lists them). "(other)" counts tasks of no stored
    workflow: define_workflow tasks not run yet, say. A worker is busy while it
    holds a task.
    """
    engine = _engine(ctx, store, existing=True)

    async def fetch() -> tuple[dict[str, dict[TaskStatus, int]], dict[TaskStatus, int], list[str]]:
        st = await engine.get_store()
        names = [spec.name for spec in await st.load_workflows()]
        by_workflow = {name: await st.count_tasks(name) for name in names}
        return by_workflow, await st.count_tasks(), sorted(await st.lease_owners())

    by_workflow, total, workers = _run(_closing(engine, fetch()))
    if as_json:
        doc = {
            "workflows": {
                name: {s.value: counts.get(s, 0) for s in TaskStatus}
                for name, counts in by_workflow.items()
            },
            "total": {s.value: total.get(s, 0) for s in TaskStatus},
            "busy_workers": workers,
            "workers": [{"id": w, "dead": worker_died_here(w)} for w in workers],
        }
        click.echo(json.dumps(doc, indent=2))
        return

    def row(name: str, counts: dict[TaskStatus, int]) -> tuple[Any, ...]:
        return (name, *(sum(counts.get(s, 0) for s in group) for _, group in _STATUS_COLUMNS))

    rows = [row(name, counts) for name, counts in by_workflow.items() if counts]
    # Tasks of no stored workflow: define_workflow ones not yet run, or a
    # workflow only an app not run here knows.
    unlisted = {
        s: n - sum(counts.get(s, 0) for counts in by_workflow.values()) for s, n in total.items()
    }
    if any(unlisted.values()):
        rows.append(row("(other)", unlisted))
    rows.append(row("(all)", total))
    _table(("WORKFLOW", *(title for title, _ in _STATUS_COLUMNS)), rows)
    shown = [
        f"{w} (dead: its tasks go to the next claim)" if worker_died_here(w) else w for w in workers
    ]
    click.echo(
        f"busy workers: {', '.join(shown)}" if shown else "busy workers: none (no task held)"
    )


@cli.command()
@_store_option
@click.pass_context
def metrics(ctx: click.Context, store: str | None) -> None:
    """Print the store's metrics once, in the Prometheus text format.

    For cron and node_exporter's textfile collector; wfe worker --metrics
    serves the same, with that worker's counters, over HTTP.
    """
    engine = _engine(ctx, store, existing=True)
    click.echo(_run(_closing(engine, render_metrics(engine))), nl=False)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the workflows as JSON.")
@_store_option
@click.pass_context
def workflows(ctx: click.Context, as_json: bool, store: str | None) -> None:
    """List the workflows in the store (registered by workers or defined at run time)."""
    engine = _engine(ctx, store, existing=True)

    async def fetch() -> list[Any]:
        st = await engine.get_store()
        return await st.load_workflows()

    found = _run(_closing(engine, fetch()))
    if as_json:
        click.echo(json.dumps([workflow_to_dict(w) for w in found], indent=2))
        return
    if not found:
        click.echo("no workflows (a worker stores its app's workflows when it starts)")
        return
    rows = []
    for spec in found:
        phases = " -> ".join(
            f"{p.target_classification}[{p.assigned_to.value if p.assigned_to else 'task'}]"
            for p in spec.phases
        )
        rows.append((spec.name, phases))
    _table(("WORKFLOW", "PHASES [type]"), rows)


@cli.command()
@click.option("--all", "show_all", is_flag=True, help="Include the built-in plugins.")
@click.option("--hook", help="Only plugins implementing this hook.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def plugins(show_all: bool, hook: str | None, as_json: bool) -> None:
    """List loaded plugins: package, version and the hooks each implements."""
    pm = _plugin_manager()
    infos = plugin_infos(pm, include_builtins=show_all)
    if hook:
        hooks = sorted(name for name in vars(pm.hook) if name.startswith("wfe_"))
        if hook not in hooks:
            raise click.BadParameter(
                f"no hook named {hook!r} (hooks: {', '.join(hooks)})", param_hint="--hook"
            )
        infos = [i for i in infos if hook in i["hooks"]]
    if as_json:
        click.echo(json.dumps(infos, indent=2))
        return
    if not infos:
        kept_out = "" if plugin_infos(pm) else _kept_out()
        if hook:
            what = f"no plugins implement {hook}" + (f"; {kept_out}" if kept_out else "")
        else:
            what = kept_out or "no plugins installed"
        click.echo(what + ("" if show_all else " (--all shows the built-ins)"))
        return
    rows = [
        (i["name"], i["package"] or "-", i["version"] or "-", ", ".join(i["hooks"])) for i in infos
    ]
    _table(("NAME", "PACKAGE", "VERSION", "HOOKS"), rows)


def _kept_out() -> str:
    """Why no installed plugin is loaded, when WFE_LOAD_PLUGINS or
    WFE_DISABLED_PLUGINS is the cause: "no plugins loaded: ..."; else ""."""
    kept: dict[str, list[str]] = {}
    for name, dist in installed_plugins():
        reason = why_not_loaded(name, dist)
        if reason is not None:
            same = dist is None or dist.replace("_", "-").lower() == name.replace("_", "-").lower()
            kept.setdefault(reason, []).append(name if same else f"{name} ({dist})")
    parts = []
    for reason, names in kept.items():
        listed = ", ".join(names)
        if reason == "WFE_LOAD_PLUGINS is empty":
            parts.append(f"WFE_LOAD_PLUGINS is empty; installed: {listed}")
        elif reason.startswith("WFE_LOAD_PLUGINS"):
            parts.append(f"WFE_LOAD_PLUGINS names none of the installed {listed}")
        else:
            parts.append(f"{listed} {reason}")
    return "no plugins loaded: " + "; ".join(parts) if parts else ""


def _plugin_manager() -> Any:
    if _PM_CACHE:
        return _PM_CACHE[0]
    pm = make_plugin_manager()
    _PM_CACHE.append(pm)
    return pm


_PM_CACHE: list[Any] = []


def _starts(task: Task) -> str:
    """When a delayed pending task (submitted with run_after, or between attempts) runs."""
    if task.status is not TaskStatus.PENDING or task.run_after is None:
        return ""
    if task.run_after <= datetime.now(timezone.utc):
        return ""
    return f"runs after {task.run_after.strftime('%Y-%m-%d %H:%M:%S')}"


def _short(text: str, width: int = 48) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _table(headers: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
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


def main() -> None:
    """Entry point of the ``wfe`` console script."""
    try:
        _main()
    except KeyboardInterrupt:  # before a command runs (loading plugins, say)
        click.echo("wfe: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)


def _main() -> None:
    # Before the plugins load, for what they log; the command sets its own level.
    level = os.environ.get("WFE_LOG_LEVEL", "").upper()
    _setup_logging(getattr(logging, level) if level in _LOG_LEVELS else logging.WARNING)
    try:
        pm = _plugin_manager()
    except WorkflowError as exc:
        message = f"{exc}{_skip_hint(str(exc))}"
        if sys.argv[1:] in ([], ["--help"], ["-h"], ["--version"]):
            # These need no plugin: they answer, after saying what is wrong.
            click.echo(f"Warning: {message}", err=True)
            cli(prog_name="wfe")  # exits
            return
        click.echo(f"Error: {message}", err=True)
        sys.exit(1)
    _add_plugin_commands(pm)
    cli(prog_name="wfe")


def _skip_hint(message: str) -> str:
    """How to run wfe without the installed plugin ``message`` names, if it names one."""
    found = re.search(r"plugin '([^']+)'", message)
    if found is None:
        return ""
    name = found.group(1)
    installed = {ep_name for ep_name, _ in installed_plugins()}
    if name not in installed and name.rpartition(":")[2] not in installed:
        return ""
    already = os.environ.get("WFE_DISABLED_PLUGINS", "").strip().strip(",")
    value = f"{already},{name}" if already else name
    return f" (set WFE_DISABLED_PLUGINS={value} to skip it)"


def _add_plugin_commands(pm: Any) -> None:
    """Let each installed plugin add its commands (``wfe_register_commands``).

    One plugin at a time, so that a command taking a name wfe has can name the
    plugin (see :meth:`_Group.add_command`), and one failing plugin leaves the
    others' commands and the built-ins working (wfe plugins among them, to look
    into it).
    """
    for impl in hook_impls(pm, "wfe_register_commands"):
        cli.adding_for = impl.plugin_name
        try:
            call_impl(impl, cli=cli)
        except Exception as exc:
            said = str(exc) if isinstance(exc, WorkflowError) else f"{type(exc).__name__}: {exc}"
            click.echo(
                f"Warning: plugin {impl.plugin_name!r} failed in wfe_register_commands: {said}",
                err=True,
            )
        finally:
            cli.adding_for = None


if __name__ == "__main__":
    main()

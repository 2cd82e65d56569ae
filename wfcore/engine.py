"""The engine: the public API to register, submit, query, answer and run tasks.

What ``run()`` does (claiming tasks and driving their phases) is in ``worker``.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar, overload

import pluggy

from ._bulk import (
    check_workflow_filter,
    ids_matching,
    names_can_match,
    parse_statuses,
    statuses_among,
)
from ._purged import begin_purge, end_purge, finish_interrupted_purges
from ._wakeup import wake
from .adapters import Adapter, run_handler
from .artifacts import (
    StagedArtifact,
    SubmittedFile,
    check_artifact_name,
    listed_artifact,
    remove_artifact_dirs,
    write_artifact,
)
from .children import (
    Joins,
    adopt_children,
    first_check,
    stored_children,
)
from .errors import (
    LONGEST_WAIT,
    ArtifactError,
    InvalidOutputError,
    InvalidTaskError,
    InvalidWorkflowError,
    PluginError,
    StoreError,
    TaskStateError,
    UnknownTaskError,
    UnknownWorkflowError,
    WorkflowError,
)
from .model import (
    Artifact,
    Phase,
    Task,
    TaskStatus,
    TaskType,
    WorkflowSpec,
    actor_name,
    answer_validator,
    check_priority,
    delay_seconds,
    utcnow,
)
from .plugins import (
    call_first,
    contribute,
    hooks_needing_self,
    make_plugin_manager,
    not_loaded_plugins,
    trace_call,
)
from .routing import advance
from .schedules import EPOCH, Schedule
from .stores.base import Store, phase_filter, shown_url, unreadable
from .submission import child_request, new_task, write_submitted
from .wire import is_unicode_text, json_problem, workflow_to_dict
from .worker import Worker, other_engine_hint, running_engine

__all__ = ["ECSWorkflowEngine", "default_store_url"]

logger = logging.getLogger("wfcore")

#: The most tasks an engine runs at once (``max_concurrency``; ``wfe worker
#: --concurrency`` has the same limit).
MAX_CONCURRENCY = 1_000_000

T = TypeVar("T")
#: A phase's handler: ``async def handler(task)``, or a plain function.
Handler = Callable[[Task], Awaitable[None] | None]
CompletedHook = Callable[[Task], Awaitable[None]]


def default_store_url() -> str:
    """``WFE_STORE`` if set, else a SQLite file in ``.wfe/`` under the current folder.

    Blanks around the URL are not part of it (an env file's trailing space would
    name another file); a blank one is refused with StoreError."""
    url = os.environ.get("WFE_STORE")
    if url:
        if not url.strip():
            raise StoreError("WFE_STORE is blank: give a store URL, or unset it")
        return url.strip()
    return "sqlite://" + str(Path.cwd() / ".wfe" / "wfe.db")


# The built-in store plugins and the URLs they take, for errors about a URL.
_BUILTIN_STORES = {"wfcore.stores.sqlite": "sqlite:///path", "wfcore.stores.memory": "memory://"}

# How often resume, cancel and retry re-read a task that changed under them.
_CHANGE_TRIES = 50

_FINISHED = (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)
_RETRYABLE = (TaskStatus.FAILED, TaskStatus.CANCELLED)
_UNFINISHED = tuple(status for status in TaskStatus if not status.is_finished)
# Tasks deleted per write transaction by purge().
_PURGE_BATCH = 1000


class ECSWorkflowEngine:
    """An asyncio workflow engine.

    :param store: a store URL (``sqlite:///abs/path.db``, ``memory://``, or any
        scheme a plugin handles) or a :class:`~wfcore.stores.Store`. None means
        ``WFE_STORE``, else ``sqlite:///<cwd>/.wfe/wfe.db``. The store is opened
        lazily, at first use. A Store object is opened by the engine if need be but
        not closed by :meth:`aclose`: close it yourself when done.
    :param max_concurrency: how many tasks this engine runs at once.
    :param load_plugins: load plugins installed through the ``wfcore`` entry-point
        group (the built-ins are always there).
    :param plugins: extra plugin objects or modules to register.
    :param lease_seconds: how long a claimed task stays ours without renewal; a
        dead worker's tasks become runnable again after this.
    :param retry_delay: base of the exponential backoff between attempts, in
        seconds (``retry_delay * 2 ** (attempt - 1)``).
    :param poll_interval: how often an idle worker looks for work other processes
        submitted, and for passed deadlines.
    :param shutdown_timeout: how long ``stop()`` lets running phases finish before
        they are interrupted and handed back to the store.
    :param only_workflows: run only tasks of these workflows, leaving the others
        to other workers on the store (None: every task). Tasks that name no
        workflow yet (``define_workflow`` ones) are then left to the others too.
    :param allowed_commands: programs (a phase command's first item, compared as
        written) that workflows *not* registered in code may run: those defined at
        run time, by whoever can submit a task. ``"*"`` allows any program. By
        default they may run none; commands of workflows registered in code always
        run.
    :param max_takeovers: how many times in a row a phase may lose its worker (killed,
        out of memory, paused past its lease) before its task fails with
        ``WorkerLostError`` instead of running it again: a phase that kills its worker
        would otherwise take down every worker that claims it, for ever. A failed
        attempt, a hand-back (``stop()``, SIGTERM), an answer or a retry starts the
        count again. None: no limit.
    """

    def __init__(
        self,
        store: str | Store | None = None,
        max_concurrency: int = 100,
        *,
        load_plugins: bool = True,
        plugins: Sequence[Any] = (),
        lease_seconds: float = 30.0,
        retry_delay: float = 1.0,
        poll_interval: float = 0.2,
        shutdown_timeout: float = 10.0,
        only_workflows: Iterable[str] | None = None,
        allowed_commands: Iterable[str] = (),
        max_takeovers: int | None = 3,
    ) -> None:
        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int):
            raise TypeError(f"max_concurrency must be a whole number, not {max_concurrency!r}")
        if not 1 <= max_concurrency <= MAX_CONCURRENCY:
            # Past SQLite's 64-bit integers, run() failed deep in the store.
            raise ValueError(
                f"max_concurrency must be from 1 to {MAX_CONCURRENCY:,}, not {max_concurrency}"
            )
        if store is not None:
            _check_store_arg(store)
        # Zero would make an idle worker spin, a lease of zero be taken over at once.
        for name, value, zero_ok in (
            ("lease_seconds", lease_seconds, False),
            ("poll_interval", poll_interval, False),
            ("retry_delay", retry_delay, True),
            ("shutdown_timeout", shutdown_timeout, True),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a number of seconds, not {value!r}")
            if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
                least = "0 or more" if zero_ok else "more than 0"
                raise ValueError(f"{name} must be {least} seconds (and finite), not {value!r}")
        # Once: a generator would be used up by the check.
        plugins = _check_plugins(plugins)
        self.only_workflows: tuple[str, ...] | None = (
            None
            if only_workflows is None
            else _list_of("only_workflows", only_workflows, "workflow names")
        )
        if self.only_workflows is not None and not all(
            isinstance(name, str) and name.strip() and is_unicode_text(name)
            for name in self.only_workflows
        ):
            raise ValueError(
                "only_workflows must be non-empty workflow names, in Unicode text, "
                f"not {self.only_workflows!r}"
            )
        if self.only_workflows == ():
            raise ValueError("only_workflows must name at least one workflow (None: all)")
        self.allowed_commands: frozenset[str] = frozenset(
            _list_of("allowed_commands", allowed_commands, "programs")
        )
        if not all(isinstance(name, str) and name for name in self.allowed_commands):
            raise ValueError("allowed_commands must be non-empty program names")
        if max_takeovers is not None and (
            isinstance(max_takeovers, bool) or not isinstance(max_takeovers, int)
        ):
            raise TypeError(f"max_takeovers must be a whole number or None, not {max_takeovers!r}")
        if max_takeovers is not None and max_takeovers < 1:
            raise ValueError(
                f"max_takeovers must be at least 1 (None: no limit), not {max_takeovers}"
            )
        self.max_takeovers: int | None = max_takeovers
        self._store_arg: str | Store | None = store
        self._store: Store | None = None
        self.max_concurrency: int = max_concurrency
        self.lease_seconds: float = lease_seconds
        self.retry_delay: float = retry_delay
        self.poll_interval: float = poll_interval
        self.shutdown_timeout: float = shutdown_timeout
        #: Names this engine in leases and history: host/pid/random.
        self.worker_id: str = f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"
        self.plugin_manager: pluggy.PluginManager = make_plugin_manager(
            load_entry_points=load_plugins, plugins=plugins
        )
        self._loads_installed_plugins = load_plugins
        self._handlers: dict[str, Handler] = {}
        self._workflows: dict[str, WorkflowSpec] = {}
        self._adapters: dict[TaskType, Adapter] = {}
        self._completed_hooks: list[CompletedHook] = []
        # Parents moved on when their children have finished.
        self._joins = Joins(self)
        self._schedules: dict[str, Schedule] = {}
        self._unsaved_workflows: set[str] = set()
        # Workflows registered in code, whose commands the app's author wrote.
        self._code_workflows: set[str] = set()
        self._worker = Worker(self)
        # Opening the store: callers from several event loops (a web app's request
        # threads) may ask at once. One opens it; the others wait, each in its own
        # loop (an asyncio.Lock belongs to one loop, and would fail or hang in
        # another), then look again. None while nobody is opening it.
        self._open_guard = threading.Lock()
        self._open_waiters: set[tuple[asyncio.Event, asyncio.AbstractEventLoop]] | None = None
        # wait_for_task calls by task id, each an event and the loop it waits in:
        # this engine's writes wake them.
        self._waiters: dict[str, set[tuple[asyncio.Event, asyncio.AbstractEventLoop]]] = {}
        #: Counters a worker shows: completed, failed, suspended, phases, retried.
        self.stats: dict[str, int] = dict.fromkeys(
            ("completed", "failed", "suspended", "phases", "retried", "cancelled"), 0
        )
        self._load_contributions()

    # -- registration ----------------------------------------------------------------

    def _load_contributions(self) -> None:
        from .plugins import DEFAULT_PLUGINS

        # Task type -> the plugin (not a built-in) whose adapter runs it.
        adapters_by: dict[TaskType, str] = {}

        def register_adapter(plugin: str, task_type: Any, adapter: Any) -> None:
            self.register_adapter(task_type, adapter)
            if plugin in DEFAULT_PLUGINS:
                return
            kind = TaskType.parse(task_type)
            earlier = adapters_by.get(kind)
            adapters_by[kind] = plugin
            if earlier is not None and earlier != plugin:
                # Allowed (the last registration wins), but which plugin that is
                # depends on the order they were installed or passed in: say so.
                logger.warning(
                    "plugins %r and %r both register an adapter for %s phases; the one "
                    "of %r (%s) is used, as it registered last: to choose, disable the other "
                    "with WFE_DISABLED_PLUGINS, or call engine.register_adapter() in code",
                    earlier,
                    plugin,
                    kind.value,
                    plugin,
                    type(adapter).__name__,
                )

        # Built-ins first, so that later-registered (third-party) adapters replace them.
        contribute(
            self.plugin_manager, "wfe_register_adapters", register_adapter, builtins_first=True
        )

        handlers_by: dict[str, str] = {}

        def register_handler(plugin: str, classification: str, handler: Handler) -> None:
            _check_handler(classification, handler)
            if classification in handlers_by:
                what = f"handler for {classification!r}"
                raise PluginError(_twice(what, handlers_by[classification], plugin))
            handlers_by[classification] = plugin
            self.register_handler(classification, handler)

        contribute(self.plugin_manager, "wfe_register_handlers", register_handler)

        workflows_by: dict[str, str] = {}

        def register_workflow(plugin: str, name: str, phases: list[Phase]) -> None:
            if isinstance(name, str) and name in workflows_by:
                raise PluginError(_twice(f"workflow {name!r}", workflows_by[name], plugin))
            try:
                self.register_workflow(name, phases)
            except InvalidWorkflowError as exc:
                raise InvalidWorkflowError(f"workflow {name!r}: {exc}") from exc
            workflows_by[name] = plugin

        contribute(self.plugin_manager, "wfe_register_workflows", register_workflow)

    def register_handler(self, classification: str, handler: Handler) -> None:
        """Run ``handler(task)`` for phases with this classification.

        A handler is ``async def handler(task) -> None``; it sets ``task.output``
        and may call :meth:`suspend`, the artifact methods, or set
        ``task.next_classification``. A plain function works too: it runs in a
        worker thread (``asyncio.to_thread``), so it may block without holding up
        other tasks, but must not use the event loop.
        """
        _check_handler(classification, handler)
        self._handlers[classification] = handler

    def handler_for(self, classification: str | None) -> Handler | None:
        """The handler registered for a classification, or None."""
        if classification is None:
            return None
        return self._handlers.get(classification)

    def register_workflow(
        self,
        name: str,
        phases: Sequence[Phase] | WorkflowSpec,
        description: str | None = None,
        *,
        start_phases: Sequence[str] | None = None,
    ) -> WorkflowSpec:
        """Register (or replace) a workflow; it is persisted when the store opens.

        ``start_phases``: the phases a submitted task may name to start at (None:
        any). Whoever can submit tasks (through Kafka, the dashboard) could otherwise
        start one past a person's approval.

        The engine keeps a copy of the phases (:meth:`WorkflowSpec.copy`): changing
        the phases, their lists or the returned spec later does not change the
        registered workflow.
        """
        if isinstance(phases, (str, bytes, Mapping)) or not isinstance(
            phases, (WorkflowSpec, Iterable)
        ):
            # list() would take a string for its letters, a dict for its keys.
            raise InvalidWorkflowError(
                f"phases must be a list of Phase, not {type(phases).__name__}"
            )
        if isinstance(start_phases, str):
            raise InvalidWorkflowError("start_phases takes a list of phase names, not one string")
        starts = None if start_phases is None else list(start_phases)
        if isinstance(phases, WorkflowSpec):
            spec = WorkflowSpec(
                name=name,
                phases=list(phases.phases),
                description=phases.description if description is None else description,
                start_phases=phases.start_phases if starts is None else starts,
            )
        else:
            spec = WorkflowSpec(
                name=name, phases=list(phases), description=description, start_phases=starts
            )
        _check_storable(spec)
        self._workflows[name] = spec.copy()
        self._unsaved_workflows.add(name)
        self._code_workflows.add(name)
        return spec

    def registered_in_code(self, workflow_name: str | None) -> bool:
        """True for a workflow this engine's app (or a plugin) registered, False for one
        defined at run time (``define_workflow``) or unknown: whoever could submit a
        task may have written those."""
        return workflow_name in self._code_workflows

    def command_refused(self, workflow_name: str | None, command: Sequence[str]) -> str | None:
        """Why a phase of this workflow may not run ``command`` here, or None if it may.

        Commands of workflows registered in code always run. Any other workflow
        was defined at run time, by whoever could submit a task (through Kafka or
        the dashboard, say): its commands run only if :attr:`allowed_commands`
        names the program, or holds ``"*"``.
        """
        if self.registered_in_code(workflow_name):
            return None
        program = command[0] if command else ""
        if "*" in self.allowed_commands or program in self.allowed_commands:
            return None
        allowed = ", ".join(sorted(self.allowed_commands)) or "none"
        return (
            f"workflow {workflow_name!r} is not registered in code, and this engine lets "
            f"workflows defined at run time run only the programs in allowed_commands "
            f"({allowed}), not {program!r} (wfe worker --allow-command PROGRAM)"
        )

    @property
    def workflows(self) -> dict[str, WorkflowSpec]:
        """The workflows this engine knows, by name."""
        return dict(self._workflows)

    def register_adapter(self, task_type: TaskType | str, adapter: Adapter) -> None:
        """Run phases of this task type with ``adapter``.

        An adapter has ``async def run(self, task, phase, engine) -> None``
        (:class:`wfcore.adapters.Adapter`).
        """
        try:
            kind = TaskType.parse(task_type)
        except InvalidTaskError:
            names = ", ".join(t.value for t in TaskType)
            raise InvalidTaskError(
                f"an adapter for unknown task type {task_type!r} (one of: {names}, or ai)"
            ) from None
        # Checked now: an adapter that cannot run would fail every task of its type.
        if isinstance(adapter, type):
            raise TypeError(
                f"the {kind} adapter is the class {adapter.__name__}, not an instance of it"
            )
        if not callable(getattr(adapter, "run", None)):
            raise TypeError(
                f"the {kind} adapter ({type(adapter).__name__}) has no run method: an "
                "adapter needs async def run(self, task, phase, engine)"
            )
        self._adapters[kind] = adapter

    def adapter_for(self, task_type: TaskType | str) -> Adapter | None:
        """The adapter that runs phases of this task type (None if there is none:
        the built-ins are blocked, say)."""
        return self._adapters.get(TaskType.parse(task_type))

    def register_schedule(
        self,
        name: str,
        workflow_name: str,
        *,
        every: float | timedelta,
        start: datetime | None = None,
        data: Any = None,
        classification: str | None = None,
        assigned_to: TaskType | str = "ai",
        grace: float | timedelta | None = None,
        priority: int = 0,
    ) -> Schedule:
        """Submit a task to ``workflow_name`` every ``every`` (seconds or a timedelta,
        whole seconds), at ``start + k * every``: ``start`` is timezone-aware, by
        default 1970-01-01 UTC (an hourly schedule runs on the hour; a daily one at
        midnight UTC). The task's id is ``<name>@<slot time in UTC>``, so however many
        workers run the schedule, each slot is submitted once; its context has
        ``schedule`` and ``slot`` (the time, ISO 8601). A slot that came while no
        worker ran is submitted by the first to start within ``grace`` of it
        (default: ``every``, at most an hour), else skipped. A worker submits slots
        while it runs (``run()``, ``run_until_idle()``). ``data``, ``classification``,
        ``assigned_to`` and ``priority`` are the task's, as in :meth:`submit_task`.
        """
        try:
            # Here, named: the Schedule reads it before it knows its own name.
            TaskType.parse(assigned_to)
        except InvalidTaskError as exc:
            raise InvalidTaskError(f"schedule {name!r}: {exc}") from None
        schedule = Schedule(
            name,
            workflow_name,
            every=every,
            start=start if start is not None else EPOCH,
            data=data,
            classification=classification,
            assigned_to=assigned_to,
            grace=grace,
            priority=priority,
        )
        if name in self._schedules:
            raise InvalidWorkflowError(f"schedule {name!r} is registered already")
        # A workflow registered later, or defined at run time, is checked as a
        # worker starts (preflight), and each slot's submission refuses a bad one.
        spec = self._workflows.get(schedule.workflow_name)
        problem = None if spec is None else schedule.phase_problem(spec)
        if problem is not None:
            raise InvalidWorkflowError(f"schedule {name!r}: {problem}")
        self._schedules[name] = schedule
        self._worker.schedules_changed()
        return schedule

    @property
    def schedules(self) -> dict[str, Schedule]:
        """The registered schedules, by name (a copy)."""
        return dict(self._schedules)

    def register_task_completed_hook(self, callback: CompletedHook) -> None:
        """Call ``callback(task)`` after each task completes (and is durable).

        A coroutine function is awaited on the event loop; a plain function runs in a
        thread. Either way the task holds its place among the ``max_concurrency``
        running ones until the callback returns: bound slow calls with a timeout.
        """
        if not callable(callback):
            raise TypeError("the completed hook must be callable")
        self._completed_hooks.append(callback)

    # -- the store -------------------------------------------------------------------

    @property
    def store_url(self) -> str:
        """The URL of the store this engine uses (or will open)."""
        if isinstance(self._store_arg, Store):
            return self._store_arg.url
        return self._store_arg or default_store_url()

    def use_store(self, store: str | Store) -> None:
        """Point the engine at another store; only before the store is first opened.

        This is how ``wfe worker --store`` applies to an app that builds its engine
        at import time.
        """
        _check_store_arg(store)
        if self._store is not None:
            raise StoreError("the engine's store is already open; call use_store() before use")
        self._store_arg = store

    async def get_store(self) -> Store:
        """The opened store, opening it (and saving registered workflows) on first use."""
        while self._store is None:
            woken = asyncio.Event()
            waiter = (woken, asyncio.get_running_loop())
            with self._open_guard:
                if self._store is not None:
                    break
                opener = self._open_waiters is None
                if opener:
                    self._open_waiters = set()
                else:
                    assert self._open_waiters is not None
                    self._open_waiters.add(waiter)
            if not opener:
                try:
                    await woken.wait()
                finally:
                    with self._open_guard:
                        if self._open_waiters is not None:
                            self._open_waiters.discard(waiter)
                # Opened, or the opener failed (or was cancelled): a caller whose
                # open failed gets its own error, so the next waiter tries again.
                continue
            try:
                await self._open_store()
            finally:
                with self._open_guard:
                    waiting, self._open_waiters = self._open_waiters or set(), None
                for event, loop in waiting:
                    wake(event, loop)
        if self._unsaved_workflows:
            await self._save_workflows()
        return self._store

    async def _open_store(self) -> None:
        """Open the store and read its workflows; only one caller at a time."""
        url = self.store_url
        store = self._store_arg if isinstance(self._store_arg, Store) else None
        if store is None:
            store = self._store_for(url)
        try:
            await store.open()
        except WorkflowError:
            raise  # a deliberate refusal (StoreError), already saying what is wrong
        except Exception as exc:
            # A store's own words, in the one line the wfe commands print.
            raise StoreError(f"cannot open the store {url!r}: {type(exc).__name__}: {exc}") from exc
        folder = getattr(store, "artifacts_dir", None)
        if not isinstance(folder, Path) or not folder.is_absolute():
            # A relative folder follows the working folder (a daemon's "/"): files
            # one process writes, the next would not find. A plugin's mistake.
            await store.close()
            what = (
                f"{str(folder)!r}, a relative path"
                if isinstance(folder, Path)
                else f"{folder!r}, not a pathlib.Path"
            )
            raise StoreError(
                f"cannot open the store {url!r}: {type(store).__name__}.artifacts_dir is "
                f"{what}, once open() returned: set it to the absolute path of the folder "
                "the store's artifact files go in"
            )
        for spec in await store.load_workflows():
            self._workflows.setdefault(spec.name, spec)
        if self._store_arg is None:
            # The default (WFE_STORE, else under the current folder) is settled once
            # opened: a later chdir (a daemon's to "/") or change of WFE_STORE must
            # not make store_url name, or a reopen after aclose() open, another store.
            self._store_arg = url
        self._store = store

    async def store_to_create(self) -> Store | None:
        """The store that opening this engine's store would create, unopened: one
        whose :meth:`~wfcore.stores.base.Store.exists` says it is not there yet.
        None when it exists, is open already, cannot tell (``exists()`` says None)
        or forgets everything anyway (not ``durable``: ``memory://``). Creates
        nothing.

        A program that only reads a store can refuse a mistyped URL with it rather
        than make an empty store there; one that writes can say where it made one
        (``store.location``), as the ``wfe`` commands and ``wfe ui`` do. Raises
        StoreError for a URL no plugin serves, or when the store cannot tell
        whether it exists because its storage cannot be reached.
        """
        if self._store is not None:
            return None
        store = self._unopened_store()
        if not store.durable or await self._store_exists(store) is not False:
            return None
        return store

    def _unopened_store(self) -> Store:
        """The store this engine is to open: the Store object it was given, or one
        from the plugin that serves its URL (asked again when the store opens; the
        hook builds a store without touching it)."""
        if isinstance(self._store_arg, Store):
            return self._store_arg
        return self._store_for(self.store_url)

    @staticmethod
    async def _store_exists(store: Store) -> bool | None:
        """:meth:`Store.exists`, which a store may define as a plain method too; an
        answer other than True or False is "cannot tell", and an error other than
        a StoreError becomes one naming the store."""
        try:
            said: Any = store.exists()
            if inspect.isawaitable(said):
                said = await said
        except WorkflowError:
            raise  # a StoreError, naming the store and the problem
        except Exception as exc:
            raise StoreError(
                f"cannot tell whether the store {shown_url(store.url)} exists: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        return said if isinstance(said, bool) else None

    def _store_for(self, url: str) -> Store:
        """The store the first plugin (``wfe_open_store``) that handles ``url`` gives."""
        found = call_first(self.plugin_manager, "wfe_open_store", url=url)
        if found is None:
            raise StoreError(
                f"no storage backend handles {url!r} ({self._store_schemes()})"
                f"{self._path_hint(url)}"
            )
        plugin, store = found
        if isinstance(store, type):
            raise PluginError(
                f"plugin {plugin!r}: wfe_open_store must return a Store instance, "
                f"not the class {store.__name__}"
            )
        if not isinstance(store, Store):
            raise PluginError(
                f"plugin {plugin!r}: wfe_open_store must return a Store, not {type(store).__name__}"
            )
        return store

    def _path_hint(self, url: str) -> str:
        """For a file path given as the store (``--store /srv/wfe.db``,
        ``WFE_STORE=./wfe.db``), the SQLite URL of that file; else ""."""
        if ":" in url or url.lower().startswith(("sqlite", "memory")):
            return ""  # a mistyped URL (sqlite//srv/wfe.db), not a path
        if not self.plugin_manager.get_plugin("wfcore.stores.sqlite"):
            return ""
        if not url.startswith(("/", ".", "~")) and not url.endswith((".db", ".sqlite", ".sqlite3")):
            return ""
        path = os.path.abspath(os.path.expanduser(url))
        return f"; a file path is not a store URL: for a SQLite file there, sqlite://{path}"

    def _store_schemes(self) -> str:
        """What the registered store plugins handle, for an error about a URL none does."""
        pm = self.plugin_manager
        builtin = [url for name, url in _BUILTIN_STORES.items() if pm.get_plugin(name)]
        parts = [f"built-in: {', '.join(builtin) or 'none'}"]
        disabled = [
            f"{url} ({name})" for name, url in _BUILTIN_STORES.items() if pm.is_blocked(name)
        ]
        if disabled:
            parts.append(f"disabled by WFE_DISABLED_PLUGINS: {', '.join(disabled)}")
        # Other plugins' schemes cannot be listed (the hook takes a URL and
        # answers or not): name the plugins instead.
        others = [
            impl.plugin_name
            for impl in pm.hook.wfe_open_store.get_hookimpls()
            if impl.plugin_name not in _BUILTIN_STORES
        ]
        if others:
            parts.append(f"store plugins: {', '.join(others)}")
        kept_out = not_loaded_plugins() if self._loads_installed_plugins else ""
        if kept_out:
            # The plugin for this URL may be installed and kept out.
            parts.append(f"plugins not loaded: {kept_out}")
        return "; ".join(parts)

    async def _save_workflows(self) -> None:
        assert self._store is not None
        pending = sorted(self._unsaved_workflows)
        self._unsaved_workflows = set()
        try:
            while pending:
                spec = self._workflows[pending[0]]
                stored = await self._store.load_workflow(spec.name)
                if stored is not None:
                    await self._warn_of_stranded(stored, spec)
                await self._store.save_workflow(spec)
                pending.pop(0)
        except BaseException:
            # A save that failed (the store locked, say) is tried again at the
            # next get_store, with those not reached yet.
            self._unsaved_workflows.update(pending)
            raise

    async def _warn_of_stranded(self, old: WorkflowSpec, new: WorkflowSpec) -> None:
        """A new definition (a deployment) that drops phases of the stored one strands
        the tasks in them: no answer or worker can take them on. Say so as it replaces it."""
        assert self._store is not None
        gone = [name for name in old.classifications if new.phase(name) is None]
        if not gone:
            return
        counts = await self._store.count_by_phase(new.name)
        stranded = {name: counts[name] for name in gone if counts.get(name)}
        if stranded:
            listed = ", ".join(f"{n} in {name!r}" for name, n in stranded.items())
            logger.warning(
                "workflow %r: this app's definition has no phase %s, where unfinished "
                "tasks are (%s); they cannot go on: put the phases back, or cancel "
                "them (wfe tasks -w %s)",
                new.name,
                " or ".join(repr(name) for name in stranded),
                listed,
                new.name,
            )

    async def aclose(self) -> None:
        """Close the store (it reopens at next use); a running ``run()`` is stopped
        first, as :meth:`stop` would, and waited for. A :class:`~wfcore.stores.Store`
        object given as ``store=`` stays open: it is its giver's to close (other
        engines may share it). Raises WorkflowError from inside a phase this engine
        runs: waiting for the run to end would wait for that phase too (call
        :meth:`stop` there instead). A store that fails to close raises StoreError
        (its last writes may be lost), and is closed for this engine all the same."""
        if self._worker.running and running_engine() is self:
            raise WorkflowError(
                "aclose() inside a phase of this engine would wait for its own phase to "
                "end; call engine.stop() to stop after it, and aclose() where run() "
                "was awaited"
            )
        await self._worker.stop_and_wait()
        if self._store is not None and not isinstance(self._store_arg, Store):
            store, self._store = self._store, None
            try:
                await store.close()
            except WorkflowError:
                raise
            except Exception as exc:
                # A plugin store's own words, as for a failed open: its last writes
                # may be lost (a flush to a full disk), and whoever closes should say so.
                raise StoreError(
                    f"cannot close the store {self.store_url!r}: {type(exc).__name__}: {exc}"
                ) from exc

    async def __aenter__(self) -> ECSWorkflowEngine:
        await self.get_store()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _workflow(self, name: str | None) -> WorkflowSpec | None:
        if name is None:
            return None
        if name in self._workflows:
            return self._workflows[name]
        if not isinstance(name, str) or not is_unicode_text(name):
            return None  # no workflow has such a name (a store could not even look it up)
        # Another process may have defined it at run time: read that one, not all.
        store = await self.get_store()
        spec = await store.load_workflow(name)
        return None if spec is None else self._workflows.setdefault(name, spec)

    # -- tasks -----------------------------------------------------------------------

    async def submit_task(
        self,
        data: Any,
        workflow_name: str | None,
        classification: str | None = None,
        assigned_to: TaskType | str = "ai",
        task_id: str | None = None,
        *,
        context: dict[str, Any] | None = None,
        run_after: datetime | timedelta | float | None = None,
        artifacts: Mapping[str, SubmittedFile] | None = None,
        priority: int = 0,
        parent: Task | None = None,
    ) -> Task:
        """Queue a task and return it once it is durable.

        With ``task_id`` given and already stored, the stored task is returned and
        nothing new is queued (idempotent submission). ``context`` seeds
        ``task.context`` (e.g. where the task came from). ``run_after`` delays the
        task's first phase: a timezone-aware datetime, or a delay (a timedelta, or
        seconds); until then it is PENDING and no worker claims it. ``artifacts``
        gives the task files to start with, by artifact name: bytes, or a
        :class:`~pathlib.Path` to copy; they are stored before the task, so its first
        phase finds them. ``priority`` (an integer from -1000 to 1000, 0 by default)
        puts it ahead of the ready tasks of lower priority: workers claim the highest
        first, and the tasks of one priority in the order they became ready.
        ``parent``, the Task object of a phase this engine is running, makes the new
        task its child: its id is added to ``parent.children`` and, unless
        ``task_id`` is given, is the parent's id and the child's number
        (``<parent id>.1``, ``.2``, ...), so that the phase run again after a crash
        or a failed attempt finds the children its earlier run submitted instead of
        submitting more. :meth:`wait_for_children` then makes the phase wait for them.
        """
        [task] = await self.submit_tasks(
            [
                {
                    "data": data,
                    "workflow_name": workflow_name,
                    "classification": classification,
                    "assigned_to": assigned_to,
                    "task_id": task_id,
                    "context": context,
                    "run_after": run_after,
                    "artifacts": artifacts,
                    "priority": priority,
                    "parent": parent,
                }
            ]
        )
        return task

    @overload
    async def submit_tasks(
        self, requests: Iterable[Mapping[str, Any]], *, return_exceptions: Literal[False] = ...
    ) -> list[Task]: ...

    @overload
    async def submit_tasks(
        self, requests: Iterable[Mapping[str, Any]], *, return_exceptions: bool
    ) -> list[Task | InvalidTaskError | UnknownWorkflowError]: ...

    async def submit_tasks(
        self, requests: Iterable[Mapping[str, Any]], *, return_exceptions: bool = False
    ) -> list[Task] | list[Task | InvalidTaskError | UnknownWorkflowError]:
        """Queue many tasks with one store write; return them, in order, once durable.

        Each request is a dict of :meth:`submit_task`'s arguments (``data`` and
        ``workflow_name``, and optionally ``classification``, ``assigned_to``,
        ``task_id``, ``context``, ``run_after``, ``artifacts``, ``priority``,
        ``parent``). A
        ``task_id`` already stored, or given earlier in the same call, returns that
        first task (with its files; the later request's are not stored). A bad
        request (InvalidTaskError, UnknownWorkflowError) raises before anything is
        stored; with ``return_exceptions=True`` its error takes its place in the result
        instead and the good requests are stored. Store failures always raise. An
        error raised for a bad request among several starts with its place in
        ``requests`` (``requests[317]: ...``), and its id when it has one.
        """
        if isinstance(requests, (str, bytes, Mapping)):
            raise InvalidTaskError(
                "submit_tasks takes a list of requests (dicts of submit_task's arguments), "
                f"not one {type(requests).__name__}"
            )
        store = await self.get_store()
        results: list[Task | InvalidTaskError | UnknownWorkflowError] = []
        new: list[tuple[int, Task]] = []  # the tasks to insert, and where they stand
        files: dict[str, dict[str, SubmittedFile]] = {}  # by task id
        batch_ids: set[str] = set()
        parents: list[tuple[int, Task]] = []  # requests of child tasks, and their parent
        numbered: dict[int, int] = {}  # children given a default id, by id() of parent
        requests = list(requests)
        # A list of one (what submit_task sends) needs no place named.
        say_which = len(requests) > 1
        for index, request in enumerate(requests):
            parent = request.get("parent") if isinstance(request, Mapping) else None
            try:
                if parent is not None:
                    request = child_request(self, request, parent, numbered)
                task, is_new, task_files = await new_task(self, store, request)
            except (InvalidTaskError, UnknownWorkflowError) as exc:
                if not return_exceptions:
                    if say_which:
                        _say_which_request(exc, index, request)
                    raise
                results.append(exc)
                continue
            if parent is not None:
                parents.append((len(results), parent))
                numbered[id(parent)] = numbered.get(id(parent), 0) + 1
            if is_new:
                # A second request of an id in this batch gets the first one's task
                # back from the insert, as a resubmission does: its files are not
                # stored, nor may they replace the first one's.
                if task_files and task.id not in batch_ids:
                    files[task.id] = task_files
                batch_ids.add(task.id)
                new.append((len(results), task))
            results.append(task)
        written = await write_submitted(store, [task for _, task in new], files)
        try:
            inserted = await store.insert_tasks([task for _, task in new])
        except BaseException:
            await asyncio.to_thread(remove_artifact_dirs, store.artifacts_dir, written)
            raise
        for (i, _), (task, created) in zip(new, inserted, strict=True):
            results[i] = task
            if created:
                await self._fire("wfe_task_submitted", task=task)
        if inserted:
            self._worker.poke()
        adopt_children(self._worker, results, parents, return_exceptions)
        return results

    async def get_task(self, task_id: str) -> Task | None:
        """The task with this id, or None."""
        if not _could_be_stored(task_id):
            return None
        store = await self.get_store()
        return await store.get_task(task_id)

    async def list_tasks(
        self,
        status: TaskStatus | str | Iterable[TaskStatus | str] | None = None,
        limit: int = 100,
        *,
        workflow_name: str | None = None,
        phase: str | None = None,
        offset: int = 0,
        summary: bool = False,
    ) -> list[Task]:
        """The newest ``limit`` tasks (0 or more), optionally only those with one status
        (or any of a list of them, ``["failed", "cancelled"]``; ``"waiting"`` for the
        three waiting ones), of one workflow, or
        at one ``phase`` (its name: the task's classification; a task submitted without
        one is at none until its worker stores the phase it chose: see
        ``Store.note_phases``); ``offset`` skips the
        newest ones first (to page). With ``summary``, each task
        without what may be megabytes (its data, context, earlier outputs; the start
        only of its output and error): see ``Store.list_task_summaries``."""
        _check_flags(summary=summary)
        for name, value in (("limit", limit), ("offset", offset)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a whole number, 0 or more, not {value!r}")
        can_match = names_can_match(workflow_name, phase)
        # SQLite's integers end at 2**63.
        limit, offset = min(limit, _MAX_LIMIT), min(offset, _MAX_LIMIT)
        wanted: TaskStatus | list[TaskStatus] | None = None
        if status is not None:
            statuses = parse_statuses(status, "status")
            if not statuses:
                return []  # none of no status
            wanted = statuses[0] if len(statuses) == 1 else statuses
        if not can_match:
            return []
        store = await self.get_store()
        listing = store.list_task_summaries if summary else store.list_tasks
        return await listing(
            status=wanted,
            workflow_name=workflow_name,
            limit=limit,
            offset=offset,
            **phase_filter(store, phase),
        )

    async def wait_for_task(
        self,
        task_id: str,
        *,
        timeout: float | timedelta | None = None,
        waiting: bool = False,
    ) -> Task:
        """Wait until a task is finished (COMPLETED, FAILED or CANCELLED) and return it.

        With ``waiting=True`` it also returns when the task waits (for a person, an
        agent, IO): the moment to answer it. Any process may be running the task.
        Changes this engine makes (its worker, ``resume``, ``cancel``) end the wait at
        once; those of other processes are seen when the store is next read: every
        ``poll_interval`` at first, then less often while the task does not change,
        down to once a second.

        ``timeout``: seconds (or a timedelta) to wait at most; None waits for ever.
        Raises UnknownTaskError if there is no such task, or it is deleted (purged)
        meanwhile, and TimeoutError when ``timeout`` passes first.
        """
        seconds = _wait_timeout(timeout)
        if not _could_be_stored(task_id):
            raise UnknownTaskError(task_id)
        store = await self.get_store()
        loop = asyncio.get_running_loop()
        deadline = None if seconds is None else loop.time() + seconds
        woken = asyncio.Event()
        waiter = (woken, loop)
        self._waiters.setdefault(task_id, set()).add(waiter)
        try:
            interval = self.poll_interval
            seen = None
            while True:
                woken.clear()
                task = await store.get_task(task_id)
                if task is None:
                    raise UnknownTaskError(task_id)
                if task.status.is_finished or (waiting and task.status.is_waiting):
                    return task
                if task.version != seen:
                    seen, interval = task.version, self.poll_interval
                else:
                    interval = min(interval * 2, max(self.poll_interval, _SLOWEST_LOOK))
                pause = interval
                if deadline is not None:
                    pause = min(pause, deadline - loop.time())
                    if pause <= 0:
                        where = (
                            f" (in phase {task.classification!r})"
                            if task.classification is not None
                            else ""
                        )
                        raise TimeoutError(
                            f"task {task_id!r} is still {task.status.value} after "
                            f"{seconds:g}s{where}"
                        )
                try:
                    await asyncio.wait_for(woken.wait(), pause)
                except asyncio.TimeoutError:
                    pass
        finally:
            watching = self._waiters.get(task_id)
            if watching is not None:
                watching.discard(waiter)
                if not watching:
                    del self._waiters[task_id]

    def _task_written(self, task_id: str) -> None:
        """Wake the :meth:`wait_for_task` calls waiting on a task this engine just stored."""
        # A copy: a wait in another thread may end (and leave the set) meanwhile.
        for woken, loop in tuple(self._waiters.get(task_id, ())):
            wake(woken, loop)

    def suspend(
        self,
        task: Task,
        status: TaskStatus | str = TaskStatus.WAITING_HUMAN,
        reason: str | None = None,
        *,
        deadline: float | timedelta | None = None,
        resume_in_phase: bool = False,
    ) -> None:
        """Make the running phase wait; call from inside a handler or adapter.

        When the handler returns, the task is stored with this WAITING_* status
        until :meth:`resume`. ``reason`` says what it waits for (shown to people).
        ``deadline`` (seconds from now, or a timedelta) defaults to the phase's
        ``timeout`` for human phases. Outside a phase this engine runs it raises
        InvalidTaskError: the change would reach no store. With ``resume_in_phase``
        the same phase runs again on resume with ``task.reply`` set to the answer
        (an agent continuing its conversation); otherwise the answer becomes the
        phase's output. Suspending clears ``task.reply``: it only ever holds the
        answer to the question the task waits on now.
        """
        _check_phase_task(task, "suspend")
        waiting = TaskStatus.parse(status)
        if not waiting.is_waiting:
            raise TaskStateError(f"suspend needs a WAITING_* status, not {waiting.name}")
        if reason is not None:
            problem = json_problem(reason) if isinstance(reason, str) else "it is not a string"
            if problem is not None:
                raise InvalidTaskError(f"suspend's reason must be text or None: {problem}")
        if not isinstance(resume_in_phase, bool):
            # Stored as it is given, a value other than a bool made the task one
            # the store could not read back.
            raise TypeError(
                f"suspend's resume_in_phase must be True or False, not {resume_in_phase!r}"
            )
        if isinstance(deadline, timedelta):
            deadline = deadline.total_seconds()
        if deadline is not None:
            deadline = delay_seconds(deadline, "suspend's deadline")
        if not self._worker.runs_phase_of(task):
            hint = other_engine_hint(self, task)
            raise InvalidTaskError(
                "suspend() is for a task whose phase this engine is running, called from "
                "inside that phase"
                + (hint or " (to make a stored task wait, a phase must suspend it)")
            )
        task.status = waiting
        task.waiting_reason = reason
        task.waiting_for = None
        task.resume_in_phase = resume_in_phase
        # A new question: the answer to an earlier one (a resume_in_phase reply)
        # must never be taken for its answer, after a cancel and retry say.
        task.reply = None
        task.deadline = None if deadline is None else utcnow() + timedelta(seconds=deadline)

    def wait_for_children(self, task: Task, *, timeout: float | timedelta | None = None) -> None:
        """Make the running phase wait for the tasks it submitted with
        ``submit_task(..., parent=task)``; call from inside a handler.

        When the handler returns, the task is stored as WAITING_IO until every one
        of those children has finished (COMPLETED, FAILED or CANCELLED). Then the
        phase ends with their results as its output, in the order they were
        submitted: a list of ``{"id", "status", "output", "error"}`` (a child
        deleted meanwhile has ``"status": None``), and the task moves on. A failed
        child does not fail the phase: the next phase reads the statuses and
        decides. A phase that submitted no children goes on at once, its output
        ``[]``. ``resume`` ends the wait early, with the answer as the output.
        ``timeout`` (seconds, or a timedelta) ends it at the latest that long after,
        finished or not: the children that have not finished are in the output too,
        with the status they have then (and no output or error).

        Raises InvalidTaskError outside a phase this engine runs, or for a timeout
        that is not 0 to 100 years.
        """
        _check_phase_task(task, "wait_for_children")
        if not self._worker.runs_phase_of(task):
            raise InvalidTaskError(
                "wait_for_children() is for a task whose phase this engine is running, "
                "called from inside that phase" + other_engine_hint(self, task)
            )
        until = None
        if timeout is not None:
            if isinstance(timeout, timedelta):
                timeout = timeout.total_seconds()
            until = utcnow() + timedelta(
                seconds=delay_seconds(timeout, "wait_for_children's timeout")
            )
        self._worker.note_wait_end(task, until)  # None: an earlier call's no longer holds
        waited = self._worker.children_of_phase(task)
        task.status = TaskStatus.WAITING_IO
        task.waiting_reason = f"waiting for {len(waited)} child task(s) to finish"
        task.waiting_for = waited
        task.resume_in_phase = False
        task.reply = None
        task.deadline = first_check(until)

    async def checkpoint(self, task: Task) -> None:
        """Store a running phase's task as it is now; call from inside a handler.

        A long phase keeps its progress this way (in ``task.context``, say): if the
        worker dies, the phase runs again from what was last checkpointed rather
        than from its start. The attempt is not counted twice for that. Raises
        InvalidTaskError outside a phase this engine's worker is running (or when the
        task holds a value that is not JSON), and TaskStateError when the task was
        cancelled or taken over meanwhile (the phase should stop). When the store
        cannot take it (locked too long, say), StoreError; let it end the phase, and
        the task goes back to the queue, its attempt uncounted, rather than failing.
        """
        _check_phase_task(task, "checkpoint")
        await self._worker.checkpoint(task)

    async def resume(
        self,
        task_id: str,
        output: Any = None,
        *,
        phase: str | None = None,
        version: int | None = None,
        by: str | None = None,
    ) -> Task:
        """Answer a waiting task; the answer becomes the phase's output and the task
        moves on (or, for a phase suspended with ``resume_in_phase``, the phase runs
        again with ``task.reply``).

        ``phase``: the phase the answer is for (the question the person saw). When
        given and the task waits in another phase (someone else answered first and
        it moved on), the answer is refused rather than taken for the new question.
        ``version``: the task's ``version`` when the question was read. A waiting
        task is written only when it is answered, cancelled, past its deadline,
        given an artifact or a new priority (:meth:`set_priority`), so a change
        refuses the answer, also when a workflow that loops has brought the task
        back to the same phase and question: read the version again after such a
        change.
        ``by``: who answered (a user name, say), recorded in the ``resumed`` event.

        Raises UnknownTaskError, TaskStateError if it is not waiting (or waits in
        another ``phase``) or is past its deadline, and InvalidOutputError if the
        answer breaks the phase's ``input_schema``.
        """
        problem = json_problem(output)
        if problem is not None:
            raise InvalidOutputError(f"the answer must be JSON-serializable: {problem}", [])
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
            raise TypeError(f"version must be a whole number (task.version), not {version!r}")
        if phase is not None and not isinstance(phase, str):
            raise TypeError(f"phase must be the name of a phase or None, not {phase!r}")
        who = _by_field(by)
        expected = phase

        async def answer(task: Task) -> Phase | None:
            """Record the answer; return the phase it finished (None: the phase reruns)."""
            if expected is not None and task.classification != expected:
                spec = await self._workflow(task.workflow_name)
                if spec is not None and spec.phase(expected) is None:
                    raise TaskStateError(
                        f"workflow {spec.name!r} of task {task_id!r} has no phase "
                        f"{expected!r} (phases: {', '.join(spec.classifications)})",
                        task_id=task_id,
                        status=task.status,
                    )
                where = "waits in" if task.status.is_waiting else "is at"
                been_there = any(event.get("phase") == expected for event in task.history)
                question = "it has moved past" if been_there else "it has not come to"
                raise TaskStateError(
                    f"task {task_id!r} {where} phase {task.classification!r} now, not "
                    f"{expected!r}: the answer was for a question {question}",
                    task_id=task_id,
                    status=task.status,
                )
            if version is not None and task.version != version:
                raise TaskStateError(
                    f"task {task_id!r} has changed since version {version} was read "
                    f"(it is at version {task.version}, {task.status.value} in phase "
                    f"{task.classification!r}): the answer was for a question it has "
                    "moved past",
                    task_id=task_id,
                    status=task.status,
                )
            if not task.status.is_waiting:
                raise TaskStateError(
                    f"task {task_id!r} is {task.status.name}, not waiting; only a waiting "
                    "task can be resumed",
                    task_id=task_id,
                    status=task.status,
                )
            spec = await self._workflow(task.workflow_name)
            phase = spec.phase(task.classification) if spec and task.classification else None
            if spec is None or phase is None:
                where = (
                    f"workflow {task.workflow_name!r}, which no app registered or store holds"
                    if spec is None
                    else f"phase {task.classification!r}, which workflow "
                    f"{task.workflow_name!r} no longer has"
                )
                raise TaskStateError(
                    f"task {task_id!r} waits in {where}: no answer can go on from there. "
                    "Put the phase back (a deployment that dropped it strands its waiting "
                    "tasks), or cancel the task",
                    task_id=task_id,
                    status=task.status,
                )
            # Past the deadline the phase's on_timeout rule decides, whether or not
            # a worker has got round to applying it yet. (A task waiting for its
            # children has no such deadline: only when a worker next checks them.)
            joining = task.waiting_for is not None
            if not joining and task.deadline is not None and task.deadline <= utcnow():
                raise TaskStateError(
                    f"task {task_id!r} is past its deadline ({task.deadline.isoformat()}); "
                    f"its phase's on_timeout ({_on_timeout_text(phase)}) applies instead",
                    task_id=task_id,
                    status=task.status,
                )
            if phase.input_schema is not None and not task.resume_in_phase:
                _validate_answer(phase, output)
            task.record("resumed", phase=phase.target_classification, **who)
            task.waiting_reason = None
            task.waiting_for = None
            task.deadline = None
            if task.resume_in_phase:
                task.reply = output
                task.status = TaskStatus.PENDING
                task.run_after = None
                return None
            advance(task, spec, phase, output)
            return phase

        task, finished_phase = await self._change_stored(task_id, answer)
        await self._fire("wfe_task_resumed", task=task)
        if finished_phase is not None:
            await self._after_phase(task, finished_phase)
        self._worker.poke()
        return task

    async def cancel(self, task_id: str, *, by: str | None = None, children: bool = False) -> Task:
        """Cancel a pending, running or waiting task, wherever it runs.

        A worker running it loses its lease and its later writes are dropped.
        ``by``: who cancelled it, recorded in the ``cancelled`` event. With
        ``children``, its children that have not finished (and theirs) are cancelled
        after it; also when it has finished (cancelled before without them, or
        completed after a wait with a timeout), which is then returned as it is.
        Raises UnknownTaskError, or TaskStateError for a finished task (with
        ``children``, one without unfinished children).
        """
        _check_flags(children=children)
        who = _by_field(by)

        async def mark_cancelled(task: Task) -> None:
            if task.status.is_finished:
                raise TaskStateError(
                    f"task {task_id!r} is already {task.status.name}",
                    task_id=task_id,
                    status=task.status,
                )
            task.status = TaskStatus.CANCELLED
            task.waiting_reason = None
            task.waiting_for = None
            task.deadline = None
            # A delayed task, or one waiting out a retry's backoff, will not start at
            # that time any more; its submitted or retry_scheduled event keeps it.
            task.run_after = None
            # The phase it was at (running, waiting or next), when stored: a task
            # cancelled while running shows where, not only that it ended.
            at = {} if task.classification is None else {"phase": task.classification}
            task.record("cancelled", **at, **who)

        try:
            task, _ = await self._change_stored(task_id, mark_cancelled)
        except TaskStateError as exc:
            if not children or exc.status is None or not exc.status.is_finished:
                raise
            # Cancelled before without its children, say: they are cancelled now,
            # as asked, rather than left running behind the refusal.
            finished = await self.get_task(task_id)
            if finished is None or not await self._cancel_children(finished, by):
                raise
            return finished
        self._worker.interrupt(task_id)
        self.stats["cancelled"] += 1
        await self._fire("wfe_task_cancelled", task=task)
        if task.parent_id is not None:
            await self._joins.report(task)
        if children:
            await self._cancel_children(task, by)
        return task

    async def _cancel_children(self, task: Task, by: str | None) -> int:
        """Cancel the unfinished children of the cancelled ``task``, and theirs;
        return how many of its own."""
        store = await self.get_store()
        cancelled = 0
        async for child in stored_children(store, task):
            if child.status.is_finished:
                continue
            try:
                await self.cancel(child.id, by=by, children=True)
            except (UnknownTaskError, TaskStateError):
                continue  # finished or deleted since it was read
            cancelled += 1
        return cancelled

    async def retry(self, task_id: str, *, by: str | None = None) -> Task:
        """Run a FAILED (or CANCELLED) task's phase again, with fresh attempts.

        The task becomes PENDING at the phase where it stopped, its error is
        cleared and a ``retried`` event joins its history (with ``by``, who asked,
        when given); any worker on the store picks it up. Raises UnknownTaskError,
        or TaskStateError for other statuses.
        """
        who = _by_field(by)

        async def requeue(task: Task) -> None:
            if task.status not in _RETRYABLE:
                raise TaskStateError(
                    f"task {task_id!r} is {task.status.name}; only a FAILED or CANCELLED "
                    "task can be retried",
                    task_id=task_id,
                    status=task.status,
                )
            task.record(
                "retried",
                phase=task.classification,
                previous=task.status.value,
                previous_error=task.error,
                **who,
            )
            task.status = TaskStatus.PENDING
            task.attempts = 0
            task.error = None
            task.traceback = None
            task.run_after = None

        task, _ = await self._change_stored(task_id, requeue)
        self._worker.poke()
        return task

    async def retry_tasks(
        self,
        statuses: Iterable[TaskStatus | str] = (TaskStatus.FAILED,),
        *,
        workflow_name: str | None = None,
        phase: str | None = None,
        error_contains: str | None = None,
        dry_run: bool = False,
        by: str | None = None,
    ) -> list[str]:
        """:meth:`retry` every FAILED task (or CANCELLED, or both: ``statuses``),
        after an outage that failed many, say; return the ids of those retried.

        ``workflow_name`` narrows it to one workflow, ``phase`` to the tasks that
        stopped at that phase (their classification), ``error_contains`` to the tasks
        whose error holds that text in its first 1,000 characters
        (``"ConnectionError"``). With ``dry_run`` nothing changes: the ids are of
        the tasks that would be retried. A task changed meanwhile (retried or
        deleted by someone else) is left out. Raises ValueError for a status that
        cannot be retried.
        """
        _check_flags(dry_run=dry_run)
        wanted = statuses_among(
            statuses, _RETRYABLE, "retry_tasks retries only failed and cancelled tasks"
        )
        if error_contains is not None and (
            not isinstance(error_contains, str) or not error_contains
        ):
            raise TypeError(
                f"error_contains must be non-empty text or None, not {error_contains!r}"
            )
        found = await ids_matching(self, wanted, workflow_name, phase, error_contains)
        if dry_run:
            return found
        retried = []
        for task_id in found:
            try:
                await self.retry(task_id, by=by)
            except (UnknownTaskError, TaskStateError):
                continue  # retried, deleted or changed by someone else since listed
            retried.append(task_id)
        return retried

    async def cancel_tasks(
        self,
        statuses: TaskStatus | str | Iterable[TaskStatus | str],
        *,
        workflow_name: str | None = None,
        phase: str | None = None,
        children: bool = False,
        dry_run: bool = False,
        by: str | None = None,
    ) -> list[str]:
        """:meth:`cancel` every task with one of ``statuses`` (pending, in progress or
        waiting ones: there is no default, so as not to cancel more than meant);
        return the ids of those cancelled.

        ``workflow_name`` and ``phase`` narrow it to one workflow and to the tasks at
        one phase; ``children`` cancels each one's unfinished children too. With
        ``dry_run`` nothing changes: the ids are of the tasks that would be
        cancelled. A task finished or deleted meanwhile is left out. Raises
        ValueError for a finished status.
        """
        _check_flags(children=children, dry_run=dry_run)
        wanted = statuses_among(
            statuses,
            _UNFINISHED,
            "cancel_tasks cancels only unfinished tasks (pending, in progress, waiting)",
        )
        found = await ids_matching(self, wanted, workflow_name, phase)
        if dry_run:
            return found
        cancelled = []
        for task_id in found:
            try:
                task = await self.cancel(task_id, by=by, children=children)
            except (UnknownTaskError, TaskStateError):
                continue  # finished, cancelled or deleted since listed
            if task.status is TaskStatus.CANCELLED:
                cancelled.append(task_id)
        return cancelled

    async def set_priority(self, task_id: str, priority: int, *, by: str | None = None) -> Task:
        """Change the priority of a task that waits: PENDING (queued, delayed, or
        waiting out a retry's backoff) or waiting for an answer.

        A queued task then lines up among those of its new priority as one that
        became ready now; a delayed or waiting one keeps its time. A
        ``priority_changed`` event records the previous priority and the new one
        (and ``by``, who asked); the same priority again changes nothing. Raises
        InvalidTaskError for a bad priority, UnknownTaskError, or TaskStateError for
        a running task (its phase may set ``task.priority``) or a finished one.
        """
        check_priority(priority)
        who = _by_field(by)

        async def change(task: Task) -> None:
            if task.status is TaskStatus.IN_PROGRESS or task.status.is_finished:
                running = task.status is TaskStatus.IN_PROGRESS
                # A claimed task may not have started its phase yet: it may wait for
                # a slot of a phase with max_concurrency, which the worker that
                # holds it orders by the priority it claimed it with.
                raise TaskStateError(
                    f"task {task_id!r} is {task.status.name}; only a PENDING or waiting "
                    "task's priority can be changed"
                    + (
                        " (a worker holds it, running its phase or waiting for a slot of "
                        "a phase with max_concurrency; its phase may set task.priority)"
                        if running
                        else ""
                    ),
                    task_id=task_id,
                    status=task.status,
                )
            task.record("priority_changed", previous=task.priority, priority=priority, **who)
            task.priority = priority

        current = await self.get_task(task_id)
        if current is not None and current.priority == priority and not unreadable(current):
            await change(current.copy())  # refused as a change would be; else nothing to do
            return current
        task, _ = await self._change_stored(task_id, change)
        self._worker.poke()
        return task

    async def _change_stored(
        self, task_id: str, change: Callable[[Task], Awaitable[T]]
    ) -> tuple[Task, T]:
        """Read a task, apply ``change`` and compare-and-set it, re-reading on conflict.

        ``change`` raises to refuse the operation; a worker writing the task at the
        same moment only makes it run again on the fresh copy.
        """
        if not _could_be_stored(task_id):
            raise UnknownTaskError(task_id)
        store = await self.get_store()
        for _ in range(_CHANGE_TRIES):
            task = await store.get_task(task_id)
            if task is None:
                raise UnknownTaskError(task_id)
            if unreadable(task):
                # Writing the stand-in back would replace what is left of the row.
                raise TaskStateError(
                    f"task {task_id!r} cannot be changed: its stored row cannot be read "
                    f"({task.error}); repair the row in the store first",
                    task_id=task_id,
                    status=task.status,
                )
            result = await change(task)
            if await store.update_task(task):
                self._task_written(task_id)
                return task, result
        raise TaskStateError(f"task {task_id!r} kept changing; try again", task_id=task_id)

    async def purge(
        self,
        older_than: float | timedelta,
        *,
        statuses: Iterable[TaskStatus | str] = _FINISHED,
        workflow_name: str | None = None,
        dry_run: bool = False,
    ) -> int:
        """Delete finished tasks last changed more than ``older_than`` ago (seconds,
        or a timedelta), and their artifact files; return how many.

        ``statuses`` narrows it to some of COMPLETED, FAILED and CANCELLED (all
        three by default), ``workflow_name`` to one workflow. Tasks whose result a
        consumer of the outbox (such as the Kafka plugin) has not published yet are
        kept. With ``dry_run`` nothing is deleted: the count is of what would be.
        Raises ValueError for a negative age or a status that is not finished.
        """
        _check_flags(dry_run=dry_run)
        if isinstance(older_than, timedelta):
            seconds = older_than.total_seconds()
        elif isinstance(older_than, (int, float)) and not isinstance(older_than, bool):
            seconds = float(older_than)
        else:
            raise TypeError(
                "older_than must be a number of seconds or a timedelta, "
                f"not {type(older_than).__name__} {older_than!r}"
            )
        check_workflow_filter(workflow_name)
        if not seconds >= 0:  # also NaN
            raise ValueError(f"older_than must be 0 or more seconds, not {older_than!r}")
        wanted = statuses_among(
            statuses, _FINISHED, "purge deletes only finished tasks (completed, failed, cancelled)"
        )
        before = time.time() - seconds
        if workflow_name is not None and not is_unicode_text(workflow_name):
            return 0  # no stored workflow has such a name
        store = await self.get_store()
        if dry_run:
            return await store.count_finished(before, wanted, workflow_name=workflow_name)
        root = store.artifacts_dir

        async def is_stored(task_id: str) -> bool:
            return await store.get_task(task_id) is not None

        await finish_interrupted_purges(root, is_stored)
        mark = await asyncio.to_thread(begin_purge, root)
        deleted = 0
        try:
            while True:
                # Batches keep each write short: workers on the store go on meanwhile.
                ids = await store.delete_finished(
                    before, wanted, workflow_name=workflow_name, limit=_PURGE_BATCH
                )
                await asyncio.to_thread(remove_artifact_dirs, root, ids)
                deleted += len(ids)
                if len(ids) < _PURGE_BATCH:
                    return deleted
        finally:
            end_purge(mark)  # not when killed: the next purge then finishes this one

    # -- artifacts -------------------------------------------------------------------

    async def add_artifact_text(
        self,
        task: Task | str,
        name: str,
        text: str,
        encoding: str = "utf-8",
        *,
        by: str | None = None,
    ) -> Artifact:
        """Store ``text`` as an artifact of the task (see :meth:`add_artifact_bytes`),
        encoded with ``encoding``. Raises ArtifactError for text that is not a str or
        that the encoding cannot encode, or an unknown encoding."""
        if not isinstance(text, str):
            raise ArtifactError(
                f"artifact {name!r}: text must be a str, not {type(text).__name__}"
                + (" (add_artifact_bytes takes bytes)" if isinstance(text, bytes) else "")
            )
        try:
            data = text.encode(encoding)
        except (LookupError, UnicodeError) as exc:
            raise ArtifactError(f"artifact {name!r}: cannot encode its text: {exc}") from None
        return await self.add_artifact_bytes(task, name, data, by=by)

    async def add_artifact_bytes(
        self, task: Task | str, name: str, data: bytes, *, by: str | None = None
    ) -> Artifact:
        """Store ``data`` as the task's artifact ``name`` (a relative path).

        The file is written atomically beside the store, and its metadata joins
        ``task.artifacts`` (replacing one of the same name). Inside a running phase
        (``task`` being the phase's own Task) it is stored with the task when the
        phase ends. Otherwise (a task waiting for a person, pending or finished,
        given as a Task or an id) it is stored at once, with an ``artifact_added``
        event naming ``by``, who added it, when given. Raises UnknownTaskError for an
        unknown task, and TaskStateError for a task running outside this call's phase
        (add its artifacts from its phase).
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ArtifactError(f"artifact {name!r}: data must be bytes")
        who = _by_field(by)
        store = await self.get_store()
        if isinstance(task, Task) and self._worker.runs_phase_of(task):
            await self._worker.check_lease(task)
            art = await asyncio.to_thread(
                write_artifact, store.artifacts_dir, task.id, name, bytes(data), task.classification
            )
            task.artifacts = [a for a in task.artifacts if a.name != name] + [art]
            return art
        task_id = task.id if isinstance(task, Task) else task
        stored = await self.get_task(task_id)
        if stored is None:
            hint = other_engine_hint(self, task) if isinstance(task, Task) else ""
            if hint:
                raise InvalidTaskError(
                    f"cannot add artifact {name!r} to task {task_id!r} here{hint}"
                )
            raise UnknownTaskError(task_id)
        # Its id, or a copy of its Task, from a phase this engine runs here: the
        # phase's own Task object is what stores artifacts with the phase.
        ours = self._worker._in_phase.get(task_id) is not None
        _check_not_running(stored, name, ours)
        # Written beside its place, and put there only as the metadata is stored: a
        # task that starts running meanwhile (a worker claims it) keeps the file
        # its phase is about to read.
        staged = await asyncio.to_thread(
            StagedArtifact,
            store.artifacts_dir,
            task_id,
            name,
            bytes(data),
            stored.classification,
        )
        art = staged.artifact

        async def attach(current: Task) -> None:
            _check_not_running(current, name, ours)
            # False when another add of this name (another process) has replaced the
            # file since: its description goes with the file, stored by that add
            # (before or after this one), so this one's would be wrong.
            if await asyncio.to_thread(staged.place):
                current.artifacts = [a for a in current.artifacts if a.name != name] + [art]
            current.record("artifact_added", name=name, phase=current.classification, **who)

        try:
            stored, _ = await self._change_stored(task_id, attach)
        except BaseException:
            await asyncio.to_thread(staged.undo)
            raise
        await asyncio.to_thread(staged.settle)
        if isinstance(task, Task):
            task.artifacts, task.history, task.version = (
                stored.artifacts,
                stored.history,
                stored.version,
            )
        return art

    async def read_artifact(self, task: Task | str, name: str) -> bytes:
        """The bytes of one of the task's artifacts.

        Raises ArtifactError for a bad or missing name, UnknownTaskError for a task
        id that does not exist.
        """
        path = await self.artifact_path(task, name)
        return await asyncio.to_thread(path.read_bytes)

    async def artifact_path(self, task: Task | str, name: str) -> Path:
        """The local path of one of the task's artifacts (checked to exist, and to be
        one the task lists: a file a killed attempt left behind is not)."""
        if not isinstance(task, Task) and not _could_be_stored(task):
            raise UnknownTaskError(task)
        store = await self.get_store()
        given = task if isinstance(task, Task) else None
        if isinstance(task, str):
            found = await store.get_task(task)
            if found is None:
                raise UnknownTaskError(task)
            task = found
        if not any(artifact.name == name for artifact in task.artifacts):
            check_artifact_name(name)  # a name no artifact can have says why
            raise ArtifactError(f"task {task.id!r} has no artifact {name!r}")
        # Listed, as wfe show says: a file that is gone is not "no artifact".
        try:
            return listed_artifact(store.artifacts_dir, task.id, name)
        except ArtifactError:
            # A Task kept from before the task was purged: its files went with it.
            if given is not None and await store.get_task(task.id) is None:
                raise UnknownTaskError(task.id) from None
            raise

    # -- running ---------------------------------------------------------------------

    def run(self) -> Coroutine[Any, Any, None]:
        """Process tasks until :meth:`stop` is called: await it, or run it as a task.

        A stop() that comes after this call, before the run has started (a run
        handed to another thread's event loop, a task not scheduled yet), stops it
        as soon as it starts; one from before the call does not.
        """
        return self._worker.serve(until_idle=False, stops_seen=self._worker.stops_asked)

    def run_until_idle(self) -> Coroutine[Any, Any, None]:
        """Process tasks until none is runnable or running anywhere in the store.

        Waiting tasks don't count; a task waiting out a retry backoff does. With
        ``only_workflows``, only tasks of those workflows count. A stop() after this
        call ends it early, as for :meth:`run`.
        """
        return self._worker.serve(until_idle=True, stops_seen=self._worker.stops_asked)

    def stop(self, *, now: bool = False, error: BaseException | None = None) -> None:
        """Ask a running ``run()`` to stop: running phases get ``shutdown_timeout``
        seconds to finish, then are handed back to the store. With ``now`` (a second
        Ctrl-C, say), they are handed back at once, even during that grace time.

        ``error``: why the engine cannot go on (a plugin whose part of the work
        stopped for good); once stopped, ``run()`` raises it instead of returning,
        so ``wfe worker`` says so and exits 1. The first error given wins.
        Raises TypeError for an ``error`` that is not an exception (checked here:
        ``run()`` could not raise it, and it would win over a later real one).
        """
        if error is not None and not (
            isinstance(error, BaseException)
            or (isinstance(error, type) and issubclass(error, BaseException))
        ):
            raise TypeError(f"stop(error=...) takes an exception, not {type(error).__name__}")
        self._worker.stop(now=now, error=error)

    @property
    def running(self) -> bool:
        """True while ``run()`` or ``run_until_idle()`` is processing."""
        return self._worker.running

    @property
    def active_count(self) -> int:
        """How many tasks this engine is driving now."""
        return self._worker.active_count

    @property
    def waiting_for_slots(self) -> int:
        """How many of those wait for a slot of a phase with ``max_concurrency``."""
        return sum(self._worker.waiting_for_slots().values())

    # -- hooks -----------------------------------------------------------------------

    def _fire(self, hook_name: str, **kwargs: Any) -> Awaitable[None]:
        """Call every implementation of a lifecycle hook, isolating failures.

        Each implementation is called on its own so that one failing plugin is
        logged with its name and neither stops the others nor touches the task.
        Returns an awaitable; with no implementations, one that costs nothing
        (lifecycle hooks fire several times per phase).
        """
        impls = getattr(self.plugin_manager.hook, hook_name).get_hookimpls()
        if not impls:
            return _NOTHING
        kwargs.setdefault("engine", self)
        return self._call_impls(impls, hook_name, kwargs)

    async def _call_impls(self, impls: list[Any], hook_name: str, kwargs: dict[str, Any]) -> None:
        for impl in reversed(impls):
            trace_call(self.plugin_manager, hook_name, impl)
            try:
                result = impl.function(*[kwargs[name] for name in impl.argnames])
                if inspect.isawaitable(result):
                    await result
            except PluginError as exc:
                if hook_name == "wfe_engine_started":  # a plugin refusing the start
                    raise PluginError(f"plugin {impl.plugin_name!r}: {exc}") from exc
                logger.exception("plugin %r failed in %s", impl.plugin_name, hook_name)
            except (KeyboardInterrupt, asyncio.CancelledError):
                raise
            except BaseException:
                # SystemExit too (a hook built on argparse or click exits on bad
                # input): one plugin's failure must not end the worker.
                logger.exception("plugin %r failed in %s", impl.plugin_name, hook_name)

    async def _after_phase(self, task: Task, phase: Phase) -> None:
        """Announce a finished phase, and the task's completion when it completed
        (from the worker, or from ``resume`` when the answer finished the phase)."""
        await self._fire("wfe_phase_finished", task=task, phase=phase)
        if task.status is TaskStatus.COMPLETED:
            if task.parent_id is not None:
                await self._joins.report(task)
            self.stats["completed"] += 1
            await self._fire("wfe_task_completed", task=task)
            for callback in self._completed_hooks:
                try:
                    # As a phase's handler runs: a plain function (a webhook posted
                    # with requests) in a thread, holding its task's slot, not the loop.
                    await run_handler(callback, task, phase=False)
                except (KeyboardInterrupt, asyncio.CancelledError):
                    raise
                except BaseException:  # SystemExit too, as for a lifecycle hook
                    logger.exception(
                        "task %s: completed hook %r failed", task.id, _name_of(callback)
                    )


def current_engine() -> ECSWorkflowEngine:
    """The engine running the phase this code is part of: for a handler written as
    ``handler(task)`` that needs its engine (artifacts, ``checkpoint``, ``suspend``)
    without reaching for a module-level one, which a test's engine would not be.

    Works in the phase's handler or adapter, in asyncio tasks it starts and in the
    thread a plain handler runs in; raises WorkflowError anywhere else.
    """
    engine = running_engine()
    if engine is None:
        raise WorkflowError("current_engine() is for code a phase runs; no phase runs here")
    return engine


class _Nothing:
    """An awaitable that is already done (cheaper than a coroutine)."""

    __slots__ = ()

    def __await__(self) -> Any:
        return iter(())


_NOTHING = _Nothing()


def _by_field(by: str | None) -> dict[str, str]:
    """The ``by`` field of a resumed, cancelled or retried event: who acted, if given."""
    return {} if by is None else {"by": actor_name(by)}


def _validate_answer(phase: Phase, output: Any) -> None:
    assert phase.input_schema is not None
    validator = answer_validator(phase.input_schema)
    problems = sorted(validator.iter_errors(output), key=lambda e: list(e.absolute_path))
    if problems:
        errors = [
            f"{'/'.join(str(p) for p in e.absolute_path) or '(answer)'}: {_json_message(e)}"
            for e in problems
        ]
        summary = (
            f"answer for phase {phase.target_classification!r} does not match its input_schema"
        )
        raise InvalidOutputError(summary + ": " + "; ".join(errors), errors, summary=summary)


def _json_message(error: Any) -> str:
    """A jsonschema violation's message with the value it starts with as JSON, as
    the answer was written: ``null is not of type 'object'`` (an answer left out),
    not Python's ``None``; ``true``, not ``True``. A string keeps its quotes."""
    message: str = error.message
    value = error.instance
    if isinstance(value, str) or not message.startswith(repr(value)):
        return message
    try:
        shown = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return message
    return shown + message[len(repr(value)) :]


# wait_for_task reads an unchanging task at least this often (seconds).
_SLOWEST_LOOK = 1.0
_MAX_LIMIT = 2**62


def _check_storable(spec: WorkflowSpec) -> None:
    """Refuse a workflow the store cannot keep as JSON (bytes or a set in an
    ``input_schema``, NaN as an ``on_timeout`` output): saved as the store opens,
    it failed every call of the engine from then on, with no name."""
    doc = workflow_to_dict(spec)
    for phase in doc["phases"]:
        for field, value in phase.items():
            problem = json_problem(value)
            if problem is not None:
                raise InvalidWorkflowError(
                    f"phase {phase['target_classification']!r}: {field} cannot be stored "
                    f"as JSON: {problem}"
                )
    problem = json_problem(doc)
    if problem is not None:
        raise InvalidWorkflowError(f"the workflow cannot be stored as JSON: {problem}")


def _check_phase_task(task: object, what: str) -> None:
    """suspend() and checkpoint() change the phase's own Task object: an id (as the
    other methods take) or anything else cannot be it."""
    if not isinstance(task, Task):
        raise TypeError(
            f"{what}() takes the running phase's Task object (the handler's task), "
            f"not {type(task).__name__}" + (" (a task id)" if isinstance(task, str) else "")
        )


def _check_not_running(task: Task, name: str, in_this_engine: bool = False) -> None:
    if task.status is TaskStatus.IN_PROGRESS:
        how = (
            "pass the phase's own Task object (the handler's task), not its id or a copy"
            if in_this_engine
            else "add them from inside the phase"
        )
        raise TaskStateError(
            f"cannot add artifact {name!r}: task {task.id!r} is running, and its phase "
            f"stores its artifacts when it ends; {how}",
            task_id=task.id,
            status=task.status,
        )


def _wait_timeout(value: Any) -> float | None:
    """wait_for_task's ``timeout`` in seconds (None: no limit)."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"timeout must be a number of seconds or a timedelta, not {type(value).__name__}"
        )
    if not 0 <= value <= LONGEST_WAIT:  # also refuses NaN and infinity (None waits for ever)
        raise ValueError(f"timeout must be 0 to 100 years of seconds, not {value!r}")
    return float(value)


def _check_flags(**flags: object) -> None:
    """TypeError for a yes-or-no argument that is not True or False: ``"no"`` would
    be taken as yes."""
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, not {value!r}")


def _list_of(argument: str, value: object, what: str) -> tuple[Any, ...]:
    """``value`` as a tuple; TypeError naming ``argument`` for one string or
    anything that is not a list (a string would be taken for its letters)."""
    if isinstance(value, str):
        raise TypeError(f"{argument} takes a list of {what}, not one string")
    if not isinstance(value, Iterable):
        raise TypeError(f"{argument} takes a list of {what}, not {value!r}")
    return tuple(value)


def _say_which_request(exc: WorkflowError, index: int, request: object) -> None:
    """Start *exc*'s message with the place of the request it is about in a
    submit_tasks call (and its id, when given): one bad row of hundreds is found."""
    task_id = request.get("task_id") if isinstance(request, Mapping) else None
    where = f"requests[{index}]"
    if isinstance(task_id, str) and task_id.isprintable() and len(task_id) <= 200:
        where += f" (task id {task_id!r})"
    exc.args = (f"{where}: {exc}", *exc.args[1:])


def _could_be_stored(task_id: object) -> bool:
    """Type-check a task id argument; False for text no stored id can be."""
    if not isinstance(task_id, str):
        raise TypeError(f"a task id is a string, not {type(task_id).__name__}")
    return is_unicode_text(task_id)


def _on_timeout_text(phase: Phase) -> str:
    rule = phase.on_timeout or "fail"
    return rule if isinstance(rule, str) else json.dumps(rule)


def _check_handler(classification: str, handler: Handler) -> None:
    if not isinstance(classification, str) or not classification:
        raise InvalidTaskError("classification must be a non-empty string")
    if not callable(handler):
        raise TypeError(f"handler for {classification!r} is not callable")


def _check_store_arg(store: object) -> None:
    """Refuse a store argument that is neither a URL nor a Store, or an empty URL,
    which would otherwise mean the default store in the current folder: a store
    nobody meant, made wherever the program happens to run."""
    if not isinstance(store, (str, Store)):
        hint = ""
        if isinstance(store, os.PathLike):
            hint = f" (for a SQLite file: 'sqlite://{Path(store).absolute()}')"
        raise TypeError(
            f"store must be a URL (e.g. 'sqlite:///path/wfe.db', 'memory://') or a "
            f"Store, not {type(store).__name__}{hint}"
        )
    if isinstance(store, str) and not store.strip():
        raise ValueError(
            f"store is an empty URL ({store!r}: an unset variable?): give a store URL "
            "(None, when the engine is built, means WFE_STORE or the default)"
        )


def _check_plugins(plugins: Any) -> tuple[Any, ...]:
    """``plugins`` as a tuple, refusing what would register nothing, silently: a
    name where the plugin object belongs, or a class whose hooks need an instance."""
    if isinstance(plugins, (str, bytes)) or not isinstance(plugins, Iterable):
        raise TypeError(
            "plugins takes a list of plugin objects or modules, "
            f"not {type(plugins).__name__} {plugins!r}"
        )
    given: tuple[Any, ...] = tuple(plugins)
    for plugin in given:
        if plugin is None or isinstance(plugin, (str, bytes, int, float)):
            hint = (
                f": pass the plugin object or module itself (import {plugin}), not its name"
                if isinstance(plugin, str)
                else ""
            )
            raise TypeError(
                f"plugins takes plugin objects or modules, not {type(plugin).__name__} "
                f"{plugin!r}{hint}"
            )
        if isinstance(plugin, type):
            # pluggy would register the class and call its hooks without ``self``:
            # the first call would fail with a missing argument.
            needs_self = hooks_needing_self(plugin)
            if needs_self:
                raise TypeError(
                    f"plugin {plugin.__name__} is a class whose hook {needs_self[0]} takes "
                    f"self: pass an instance, plugins=[{plugin.__name__}()]"
                )
    return given


def _twice(what: str, first: str, second: str) -> str:
    if first == second:
        return f"{what} registered twice by plugin {first!r}"
    return f"{what} registered twice (by plugin {first!r} and plugin {second!r})"


def _name_of(obj: Any) -> str:
    return getattr(obj, "__qualname__", None) or repr(obj)

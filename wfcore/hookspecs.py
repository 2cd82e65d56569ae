"""The hook specifications: every way a plugin can extend or observe wfcore.

Implement a hook with ``from wfcore import hookimpl`` and a function named after it.
An implementation may accept fewer arguments than its specification names; specs
only ever gain arguments, so plugins written today keep working. Lifecycle hooks
may be ``async def``: the engine awaits whatever they return. Contribution hooks
and "pick one" hooks (``firstresult``) must be plain functions: an ``async def``
implementation of one is refused with a PluginError naming the plugin and the hook
when the plugin is registered (``wfcore.plugins.SYNC_ONLY_HOOKS`` lists them), as
is an implementation whose name matches no hook or that takes an argument its
hook does not pass, also for a plugin registered with ``engine.plugin_manager``
later. The contribution hooks are called once, for the plugins registered by
then: a plugin registered later is not asked for them, and a warning says so.

Lifecycle hooks (``wfe_task_*``, ``wfe_phase_*``, ``wfe_engine_*``):

- Order: their implementations are called one at a time, in pluggy's order:
  ``tryfirst`` ones first, then the last registered first, then ``trylast`` ones.
  Plugins passed in ``ECSWorkflowEngine(plugins=[a, b])`` are registered after
  the installed ones, in that order: ``b`` is called before ``a``, and both
  before the installed plugins.
- Waiting: an ``async def`` implementation is awaited before the next one is
  called and before the engine goes on. A slow ``wfe_phase_started`` delays its
  phase, and a slow implementation of any hook a worker fires holds the task's
  ``max_concurrency`` slot meanwhile; ``submit_task``, ``resume`` and ``cancel``
  return only once the hooks they fire have returned. Hand slow work (a network
  call, say) to a task or queue of the plugin's own.
- Failures: an implementation that raises is logged with its plugin's name and
  the traceback (logger ``wfcore``, ERROR) and the others are still called;
  the task and the call that fired the hook go on as if it had not. The one
  exception: a :class:`~wfcore.PluginError` from ``wfe_engine_started`` refuses
  the start (see there).
- Tasks: the lifecycle hooks are given the engine's own :class:`~wfcore.Task`, to
  read. What a hook changes in it is not undone when the hook raises, and is no
  way to change a task: whether it is stored depends on the hook (with the phase's
  end for ``wfe_phase_started``, not at all for ``wfe_task_submitted`` or
  ``wfe_task_completed``). Handlers, adapters and the engine's methods change tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import click

    from .adapters import Adapter
    from .engine import ECSWorkflowEngine, Handler
    from .metrics import Metric
    from .model import Phase, Task, TaskType
    from .stores.base import Store

__all__ = ["RegisterAdapter", "RegisterHandler", "RegisterWorkflow", "hookimpl", "hookspec"]

hookspec = pluggy.HookspecMarker("wfcore")
hookimpl = pluggy.HookimplMarker("wfcore")

# The ``register`` callbacks of the contribution hooks, for a plugin to annotate its
# implementations with. Quoted: the classes they name import this module.

#: ``register(task_type, adapter)`` of :func:`wfe_register_adapters`.
RegisterAdapter = Callable[["TaskType | str", "Adapter"], None]
#: ``register(classification, handler)`` of :func:`wfe_register_handlers`; a handler
#: is ``async def handler(task) -> None`` (or a plain function).
RegisterHandler = Callable[[str, "Handler"], None]
#: ``register(name, phases)`` of :func:`wfe_register_workflows`.
RegisterWorkflow = Callable[[str, Sequence["Phase"]], None]


# -- contributions -------------------------------------------------------------------


@hookspec
def wfe_register_adapters(register: RegisterAdapter) -> None:
    """Contribute adapters, the objects that run a phase for one task type.

    Called once per engine, as it is built, for the plugins it is built with.

    :param register: call ``register(task_type, adapter)`` for each adapter
        (annotate it :data:`RegisterAdapter`); ``task_type`` is a
        :class:`~wfcore.TaskType` or its name. An adapter has an
        ``async def run(self, task, phase, engine)`` method.

    Every implementation is called, in registration order (``trylast`` ones
    first, ``tryfirst`` ones last); a later registration for the same task type
    replaces an earlier one, so an installed plugin overrides a built-in adapter
    (the built-ins are registered ``trylast``). When two plugins other than the
    built-ins register an adapter for one task type, a warning names both and the
    one used.
    Adapters registered with :meth:`ECSWorkflowEngine.register_adapter` win over
    all plugins. An unknown task type, or an adapter without a ``run`` method (or
    a class instead of an instance), is refused with a
    :class:`~wfcore.errors.PluginError` naming the plugin and the hook.
    Must not be async (refused when registered).
    """


@hookspec
def wfe_register_handlers(register: RegisterHandler) -> None:
    """Contribute handlers for classifications.

    Called once per engine, as it is built, for the plugins it is built with.

    :param register: call ``register(classification, handler)`` (annotate it
        :data:`RegisterHandler`); a handler is ``async def handler(task) -> None``.

    Every implementation is called; registering the same classification twice is
    a :class:`~wfcore.errors.PluginError` naming both plugins, and so is a handler
    ``register`` refuses (one that is not callable, say), naming the plugin and
    the hook. :meth:`ECSWorkflowEngine.register_handler` replaces a plugin's
    handler. Must not be async (refused when registered).
    """


@hookspec
def wfe_register_workflows(register: RegisterWorkflow) -> None:
    """Contribute workflows.

    Called once per engine, as it is built, for the plugins it is built with.

    :param register: call ``register(name, phases)`` with a list of
        :class:`~wfcore.Phase` (annotate it :data:`RegisterWorkflow`).

    Every implementation is called; registering the same name twice is a
    :class:`~wfcore.errors.PluginError` naming both plugins, and so is a workflow
    ``register`` refuses (phases that are not a list of Phase, say), naming the
    plugin, the hook and the workflow. :meth:`ECSWorkflowEngine.register_workflow`
    replaces a plugin's workflow. Must not be async (refused when registered).
    """


@hookspec(firstresult=True)
def wfe_open_store(url: str) -> Store | None:
    """Return a store for ``url``, or None if this plugin does not handle its scheme.

    Called when an engine first needs its store (lazily, at first use), for the
    plugins registered by then.

    :param url: the store URL, e.g. ``sqlite:///abs/path/wfe.db``,
        ``memory://`` or ``postgresql://...``.

    Stops at the first non-None result: the plugin registered last is asked
    first, the built-in ``sqlite`` and ``memory`` stores (registered ``trylast``)
    after all others. The plugins after the one that answered are asked too, only
    to warn (once per process, naming both, the scheme and the one that wins) of
    another that serves the URL as well; what they return is left unopened. A
    store may say whether it exists already (:meth:`Store.exists`): the ``wfe``
    commands on stored tasks ask before they open it. Must not be async (refused when
    registered): return an unopened :class:`~wfcore.stores.base.Store` instance
    (anything else, its class say, is a :class:`~wfcore.errors.PluginError`
    naming the plugin); the engine awaits its ``open()``, where an exception
    other than a :class:`~wfcore.errors.WorkflowError` becomes a
    :class:`~wfcore.errors.StoreError` naming the URL. It may be called more than
    once for one URL (a ``wfe`` command asks one store whether it exists and opens
    another; every other engine has its own): keep making a store cheap, and
    connect in ``open()``.
    """


@hookspec
def wfe_register_commands(cli: click.Group) -> None:
    """Add commands to the ``wfe`` command line.

    Called when the ``wfe`` CLI starts, for installed plugins.

    :param cli: the root ``click.Group``; use ``@cli.command()``.

    Every implementation is called. Must not be async (refused when registered).
    """


@hookspec
def wfe_report_header(engine: ECSWorkflowEngine) -> str | list[str] | None:
    """Say what this plugin does for an engine, in the lines ``wfe worker`` (and the
    dashboard's ``wfe ui``) print as they start, after their own.

    Called once per command, before the engine runs: report what the plugin will do
    from its settings (the Kafka topics a worker consumes, the model agents run
    on), without connecting anywhere; a problem worth a warning may be said here too.

    :param engine: the engine about to run.

    Every implementation is called; return a line, a list of lines or None (nothing
    to say). One that raises or returns anything else is named in a line of its own
    (``<plugin>: cannot report (...)``) and the command goes on. Must not be async
    (refused when registered).
    """


@hookspec
def wfe_metrics(engine: ECSWorkflowEngine) -> list[Metric] | None:
    """Add this plugin's figures to the engine's Prometheus metrics.

    Called at every scrape of ``/metrics`` (``wfe worker --metrics``, the
    dashboard, ``wfe metrics``), on the engine's event loop, after wfcore has read
    its own: report counters and gauges the plugin keeps in memory (messages
    consumed, requests made), without I/O that could make the scrape slow.

    :param engine: the engine whose metrics are read.

    Every implementation is called; return a list of
    :class:`wfcore.metrics.Metric` or None. A plugin that raises or returns
    something else is logged and left out; the scrape goes on. Name metrics after
    the plugin (``wfe_kafka_...``). Must not be async (refused when registered).
    """


# -- decisions -----------------------------------------------------------------------


@hookspec(firstresult=True)
def wfe_classify(task: Task, engine: ECSWorkflowEngine) -> str | None:
    """Choose the first phase of an unclassified task.

    Called when a worker picks up a task whose ``classification`` is None.

    :param task: the task; read its ``data`` and ``workflow_name``.
    :param engine: the engine running it.

    Stops at the first non-None result: return a classification of the task's
    workflow, or None to pass. With no answer the task starts at the workflow's
    first phase; an answer the workflow does not have fails the task with an
    error naming it. Must not be async: an ``async def`` implementation is refused
    when its plugin is registered (a coroutine is not None, so it would stop the
    chain without an answer).
    """


# -- lifecycle -----------------------------------------------------------------------


@hookspec
def wfe_task_submitted(task: Task, engine: ECSWorkflowEngine) -> None:
    """A task was stored, right after ``submit_task`` made it durable.

    Not called again for an idempotent resubmission of the same id.

    :param task: the new task, PENDING.
    :param engine: the engine that accepted it.

    Every implementation is called, in the order above (``tryfirst``, then the
    last registered first); one that raises is logged and the others still run;
    results are ignored; may be async, and ``submit_task`` returns only once every
    implementation has returned.
    """


@hookspec
def wfe_phase_started(task: Task, phase: Phase, engine: ECSWorkflowEngine) -> None:
    """A worker is about to run a phase of a task (each attempt).

    :param task: the task, IN_PROGRESS, with ``attempts`` already counting this one.
    :param phase: the phase about to run.
    :param engine: the engine running it.

    Every implementation is called, in the order above (``tryfirst``, then the
    last registered first); one that raises is logged and the others still run;
    results are ignored; may be async, and the phase runs only once every
    implementation has returned (the wait is not part of the phase's ``timeout``,
    but holds the task's ``max_concurrency`` slot).
    """


@hookspec
def wfe_phase_finished(task: Task, phase: Phase, engine: ECSWorkflowEngine) -> None:
    """A phase ran to its end and its output is durable.

    Called once the task has moved on (to its next phase, or COMPLETED); not for
    a failed attempt nor a suspension.

    :param task: the task, with ``outputs[phase.target_classification]`` set.
    :param phase: the phase that finished.
    :param engine: the engine running it.

    Every implementation is called, in the order above (``tryfirst``, then the
    last registered first); one that raises is logged and the others still run;
    results are ignored; may be async, and the task goes on (or ``resume``
    returns, when an answer finished the phase) only once every implementation
    has returned.
    """


@hookspec
def wfe_attempt_failed(task: Task, phase: Phase, engine: ECSWorkflowEngine) -> None:
    """An attempt of a phase failed (an exception, a timeout, a command's non-zero
    exit) and what came of it is durable. Called for every failed attempt: the task
    is PENDING when the phase will run again (at ``run_after``, after the
    ``retry_delay`` backoff), FAILED after its last attempt (``wfe_task_failed``
    follows). Not for a phase whose worker was lost (the rerun is not an attempt).

    :param task: the task, with ``error``, ``traceback`` and ``attempts`` (the
        attempts made so far of this phase) set.
    :param phase: the phase whose attempt failed (``phase.max_attempts`` of them
        are made).
    :param engine: the engine whose worker ran it.

    Every implementation is called, in the order above (``tryfirst``, then the
    last registered first); one that raises is logged and the others still run;
    results are ignored; may be async, and the task's ``max_concurrency`` slot is
    held until every implementation has returned.
    """


@hookspec
def wfe_task_suspended(task: Task, engine: ECSWorkflowEngine) -> None:
    """A task now waits for a person, an agent or I/O (a WAITING_* status), or for
    its children (``engine.wait_for_children``).

    :param task: the task, with ``waiting_reason`` and ``deadline`` set (for a task
        waiting for its children, ``waiting_for`` too, and ``deadline`` is only when
        a worker next checks on them).
    :param engine: the engine that suspended it.

    Every implementation is called, in the order above (``tryfirst``, then the
    last registered first); one that raises is logged and the others still run;
    results are ignored; may be async, and the task's ``max_concurrency`` slot
    is held until every implementation has returned.
    """


@hookspec
def wfe_task_resumed(task: Task, engine: ECSWorkflowEngine) -> None:
    """A waiting task was resumed with an answer and moved on.

    Called by ``resume`` once the answer is durable, before the hooks the answer
    leads to: ``wfe_phase_finished`` for the phase it answered, then
    ``wfe_task_completed`` when that was the workflow's last phase. (A phase that
    takes the answer itself, suspended with ``resume_in_phase``, runs again on a
    worker and finishes there. A task whose children have all finished is not
    resumed but moved on: ``wfe_phase_finished`` tells of it.)

    :param task: the task after the answer was recorded.
    :param engine: the engine that resumed it.

    Every implementation is called, in the order above (``tryfirst``, then the
    last registered first); one that raises is logged and the others still run;
    results are ignored; may be async, and ``resume`` returns only once every
    implementation has returned.
    """


@hookspec
def wfe_task_completed(task: Task, engine: ECSWorkflowEngine) -> None:
    """A task finished its workflow; it is COMPLETED and durable.

    Called once per task under normal operation (see the README on delivery after
    a crash). Callbacks given to ``register_task_completed_hook`` run next to it.

    :param task: the completed task.
    :param engine: the engine that completed it.

    Every implementation is called, in the order above (``tryfirst``, then the
    last registered first); one that raises is logged and the others still run;
    results are ignored; may be async, and the task holds its ``max_concurrency``
    slot (or ``resume``, when an answer completed it, does not return) until every
    implementation has returned.
    """


@hookspec
def wfe_task_failed(task: Task, engine: ECSWorkflowEngine) -> None:
    """A task failed for good: its last attempt failed, or it could not be routed.

    :param task: the task, FAILED, with ``error`` set.
    :param engine: the engine that failed it.

    Every implementation is called, in the order above (``tryfirst``, then the
    last registered first); one that raises is logged and the others still run;
    results are ignored; may be async, and the task's ``max_concurrency`` slot is
    held until every implementation has returned.
    """


@hookspec
def wfe_task_cancelled(task: Task, engine: ECSWorkflowEngine) -> None:
    """A task was cancelled with ``engine.cancel``.

    :param task: the task, CANCELLED.
    :param engine: the engine that cancelled it.

    Every implementation is called, in the order above (``tryfirst``, then the
    last registered first); one that raises is logged and the others still run;
    results are ignored; may be async, and ``cancel`` returns only once every
    implementation has returned.
    """


@hookspec
def wfe_engine_started(engine: ECSWorkflowEngine) -> None:
    """An engine starts processing: ``run()`` or ``run_until_idle()`` was entered
    and the store is open.

    A good place to start background work (consumers, schedulers). An
    implementation that finds its plugin unusable (a misconfiguration, say) raises
    :class:`~wfcore.PluginError` to refuse the start: ``wfe_engine_stopping`` is
    called, so that what other plugins started stops again, and ``run()`` raises
    it (``wfe worker`` exits with its message). Any other exception is logged.

    :param engine: the engine.

    Implementations are called in the order above (``tryfirst``, then the last
    registered first) until one refuses; another exception is logged and the
    others still run; results are ignored; may be async, and the engine claims
    tasks only once every implementation has returned.
    """


@hookspec
def wfe_engine_stopping(engine: ECSWorkflowEngine) -> None:
    """An engine stops processing; its store is still open.

    Stop what ``wfe_engine_started`` started. It is called also when the start was
    refused (a plugin raised :class:`~wfcore.errors.PluginError` in
    ``wfe_engine_started``), for every plugin, including those whose
    ``wfe_engine_started`` was not called: stop only what is there to stop.

    :param engine: the engine.

    Every implementation is called, in the order above (``tryfirst``, then the
    last registered first); one that raises is logged and the others still run;
    results are ignored; may be async, and ``run()`` returns only once every
    implementation has returned.
    """

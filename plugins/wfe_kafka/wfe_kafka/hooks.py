"""The engine hooks an attached KafkaMQInterface registers: each task's life as
seen by the interface (work at hand for backpressure, results and events to publish),
and its counters among the engine's metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING

from wfcore import ECSWorkflowEngine, Phase, Task, hookimpl
from wfcore.metrics import Metric
from wfcore.model import utcnow

if TYPE_CHECKING:
    from .interface import KafkaMQInterface


#: wfe_metrics: each counter of ``KafkaMQInterface.stats``, and what it counts.
_COUNTERS = {
    "received": "Messages polled from the tasks topic.",
    "consumed": "Task messages handled: stored as tasks or dead-lettered.",
    "submitted": "New tasks stored from messages (redeliveries are not new).",
    "dead_lettered": "Messages sent to the dead-letter topic.",
    "results_published": "Finished tasks published to the results topic.",
    "events_published": "Lifecycle events published to the events topic.",
    "publish_errors": "Sends to Kafka that failed (and are retried from the outbox).",
    "events_dropped": "Events dropped while Kafka did not take them.",
}


class _Hooks:
    """The hook implementations an attached interface registers on its engine."""

    def __init__(self, iface: KafkaMQInterface) -> None:
        self._iface = iface

    @hookimpl
    def wfe_metrics(self) -> list[Metric]:
        """The interface's counters, among the engine's Prometheus metrics."""
        iface = self._iface
        metrics = [
            Metric(f"wfe_kafka_{key}_total", "counter", text, iface.stats.get(key, 0))
            for key, text in _COUNTERS.items()
        ]
        metrics.append(
            Metric(
                "wfe_kafka_paused",
                "gauge",
                "1 while consuming waits for the engine's backlog (backpressure).",
                int(iface.paused),
            )
        )
        metrics.append(
            Metric(
                "wfe_kafka_partitions_assigned",
                "gauge",
                "Partitions of the tasks topic this worker consumes.",
                len(iface.assignment),
            )
        )
        return metrics

    @hookimpl
    def wfe_task_submitted(self, task: Task) -> None:
        if task.run_after is None or task.run_after <= utcnow():
            self._iface._outstanding += 1  # a task delayed is no work at hand yet
        if "kafka" in task.context:
            self._iface.stats["submitted"] += 1
        self._iface._event("submitted", task)

    @hookimpl
    def wfe_task_suspended(self, task: Task, engine: ECSWorkflowEngine) -> None:
        self._iface._settled()
        # The phase it waits in: its assigned_to, not the task's, says who answers.
        spec = engine.workflows.get(task.workflow_name or "")
        phase = spec.phase(task.classification) if spec and task.classification else None
        self._iface._event("suspended", task, phase)

    @hookimpl
    def wfe_task_completed(self, task: Task) -> None:
        self._iface._settled()
        self._iface._event("completed", task)
        self._iface._queue_result(task)

    @hookimpl
    def wfe_task_failed(self, task: Task) -> None:
        self._iface._settled()
        self._iface._event("failed", task)
        self._iface._queue_result(task)

    @hookimpl
    def wfe_task_cancelled(self, task: Task) -> None:
        self._iface._settled()
        self._iface._event("cancelled", task)
        self._iface._queue_result(task)


class _EventHooks:
    """The hooks that only emit events: registered only when there is an events topic."""

    def __init__(self, iface: KafkaMQInterface) -> None:
        self._iface = iface

    @hookimpl
    def wfe_phase_started(self, task: Task, phase: Phase) -> None:
        self._iface._event("phase_started", task, phase)

    @hookimpl
    def wfe_phase_finished(self, task: Task, phase: Phase) -> None:
        self._iface._event("phase_finished", task, phase)

    @hookimpl
    def wfe_attempt_failed(self, task: Task, phase: Phase) -> None:
        self._iface._event("attempt_failed", task, phase)

    @hookimpl
    def wfe_task_resumed(self, task: Task) -> None:
        self._iface._event("resumed", task)

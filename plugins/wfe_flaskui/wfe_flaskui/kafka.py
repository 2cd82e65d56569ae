"""Kafka for the dashboard: submissions go to the tasks topic, results come from the results topic.

Active when ``KAFKA_BROKERS`` is set and ``wfe_kafka`` is installed. Topic names
and client settings come from wfe_kafka's own variables (``WFE_KAFKA_TASKS_TOPIC``,
``WFE_KAFKA_RESULTS_TOPIC``, ``WFE_KAFKA_CLIENT_CONFIG``...), so the dashboard
talks to the same topics as the workers.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from wfcore import WorkflowError
from wfcore.wire import MAX_JSON_DEPTH

if TYPE_CHECKING:
    from .app import Dashboard

__all__ = ["KafkaLink", "KafkaSettingsError", "kafka_interface"]

logger = logging.getLogger("wfe_flaskui.kafka")

_KEEP = 500
#: Seconds kafka-python may take to reach the brokers (or a topic's metadata) for the
#: dashboard, unless the Kafka settings choose their own ``bootstrap_timeout_ms`` /
#: ``max_block_ms``: its defaults (30 s and 60 s) would hold a person's submission
#: that long when Kafka is down. A submission gets a little longer in all.
PUBLISH_TIMEOUT = 10.0
_WAITS = ("bootstrap_timeout_ms", "max_block_ms")
#: Seconds without a result after which the results reader asks Kafka for the
#: topic's end offsets: kafka-python's poll() returns nothing, without an error, when
#: the brokers it was reading from stop answering.
CHECK_EVERY = 5.0
#: The deepest a result message may nest. A task's data, context and outputs nest up to
#: wfcore's MAX_JSON_DEPTH, which the message wraps in a few levels of its own
#: (``outputs`` / phase / output, ``history`` / event / answer). A deeper one did not
#: come from a worker, and showing it would exhaust the stack of the request that
#: renders it (Python's JSON encoder recurses), so it is skipped.
RESULT_DEPTH = MAX_JSON_DEPTH + 10


class KafkaSettingsError(WorkflowError):
    """The dashboard's Kafka settings cannot work; the message names the setting."""


def kafka_interface(brokers: str, from_env: bool = True) -> Any:
    """The dashboard's ``KafkaMQInterface`` for ``brokers`` (nothing connects yet), or
    None (logged) without wfe_kafka.

    Raises KafkaSettingsError naming the setting at fault (``KAFKA_BROKERS``, or
    ``kafka_brokers`` when ``from_env`` is false; ``WFE_KAFKA_*``) when the settings
    cannot work, as a ``wfe worker`` refuses to start with them.
    """
    try:
        import wfe_kafka
    except ImportError:
        logger.warning(
            "KAFKA_BROKERS is set but wfe_kafka is not installed; "
            "tasks are submitted to the store directly (pip install wfe-kafka)"
        )
        return None
    try:
        settings = wfe_kafka.kafka_settings() or {}
        settings["bootstrap_servers"] = brokers
        producer = dict(settings.get("producer_config") or {})
        for key in _WAITS:
            if key not in settings and key not in producer:
                producer[key] = int(PUBLISH_TIMEOUT * 1000)
        settings["producer_config"] = producer
        return wfe_kafka.KafkaMQInterface(**settings)
    except (ValueError, TypeError) as exc:
        raise KafkaSettingsError(
            f"Kafka settings cannot be used: {_name_the_setting(exc, from_env)}"
        ) from None


def _name_the_setting(error: Exception, from_env: bool) -> str:
    """``error`` (which names an interface argument) naming the variable that set it,
    as wfe_kafka's own refusal does."""
    from wfe_kafka.settings import CLIENT_CONFIG_VAR, ENV_VARS

    text = str(error)
    names = {argument: variable for variable, (argument, _convert) in ENV_VARS.items()}
    if not from_env:
        names["bootstrap_servers"] = "kafka_brokers"
    for argument, variable in names.items():
        if text.startswith((f"{argument}=", f"{argument}:")):
            return variable + text[len(argument) :]
    if "kafka-python setting" in text:
        return f"{CLIENT_CONFIG_VAR}: {text}"
    return text


class KafkaLink:
    """The dashboard's Kafka producer (for submissions) and results reader.

    Results are read without a consumer group (each dashboard sees all of
    them), starting with the last ``backlog`` messages of each partition; the
    newest ``_KEEP`` stay in memory for the pages.
    """

    def __init__(self, dashboard: Dashboard, interface: Any, backlog: int = 50) -> None:
        self.dashboard = dashboard
        self.interface = interface
        self.tasks_topic: str = interface.tasks_topic
        self.results_topic: str = interface.results_topic
        #: The bootstrap servers, comma-separated.
        self.brokers = ",".join(interface.bootstrap_servers)
        self.backlog = backlog
        # What has been failing ("reading results", "publishing"): since when, and
        # the latest error. Cleared by the next success of the same.
        self._failing: dict[str, tuple[datetime, str]] = {}
        self._refused: str | None = None  # kafka-python refused the settings
        self._results: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        self._published: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read_results, name="wfe-ui-kafka", daemon=True)
        #: True once the results reader follows its partitions.
        self.ready = threading.Event()

    def start(self) -> None:
        """Start reading the results topic in a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop reading and close the producer (waiting for unsent tasks)."""
        self._stop.set()
        self._thread.join(10)
        if self.dashboard.bridge.started:
            try:
                self.dashboard.bridge.call(self.interface.close(), timeout=30)
            except Exception:
                logger.exception("closing the Kafka producer failed")

    @property
    def summary(self) -> str:
        """What the dashboard does with Kafka, in a line."""
        return (
            f"submitted tasks are published to Kafka topic {self.tasks_topic} at "
            f"{self.brokers}; results are read from {self.results_topic}"
        )

    def trouble(self) -> dict[str, str] | None:
        """None while Kafka answers; else ``{"label", "title"}`` for the header's chip:
        since when reading results or publishing has been failing, and why."""
        with self._lock:
            refused = self._refused
            failing = dict(self._failing)
        if refused is not None:
            return {
                "label": "kafka settings refused",
                "title": f"Kafka settings cannot be used: {refused}; results are not read",
            }
        if not failing:
            return None
        since = min(at for at, _error in failing.values())
        why = "; ".join(f"{what}: {error}" for what, (_at, error) in failing.items())
        return {
            "label": "kafka unreachable",
            "title": (
                f"Kafka cannot be reached at {self.brokers} since "
                f"{since:%Y-%m-%d %H:%M:%S} UTC ({why})"
            ),
        }

    def _failed(self, what: str, exc: BaseException) -> None:
        with self._lock:
            since = self._failing.get(what, (datetime.now(timezone.utc), ""))[0]
            self._failing[what] = (since, _describe(exc))

    def _worked(self, what: str) -> None:
        if what in self._failing:
            with self._lock:
                self._failing.pop(what, None)

    # -- submitting --------------------------------------------------------------------

    def publish(
        self,
        workflow_name: str | None,
        data: Any,
        classification: str | None = None,
        assigned_to: str | None = None,
        task_id: str | None = None,
        run_after: datetime | None = None,
        priority: int = 0,
    ) -> dict[str, Any]:
        """Send a task message to the tasks topic and wait for Kafka's acknowledgement.

        Returns ``{"id", "topic", "partition", "offset", "at", "message"}``; the task
        exists in a store once a worker consuming the topic takes it (and with
        ``run_after``, an aware datetime, starts no sooner than that; a ``priority``
        other than 0 goes in the message's ``priority`` field). Raises what
        kafka-python raises, or TimeoutError when Kafka does not acknowledge the task
        in time.
        """
        doc = {
            "id": task_id or uuid.uuid4().hex,
            "workflow_name": workflow_name,
            "data": data,
            "classification": classification,
            "assigned_to": assigned_to,
        }
        if run_after is not None:
            # The worker that consumes the message stores the task to start then.
            doc["run_after"] = run_after.isoformat()
        if priority:
            # Only when given: a task message without the field is one every
            # version of wfe_kafka takes.
            doc["priority"] = priority
        wait = PUBLISH_TIMEOUT + 2.0
        try:
            try:
                meta = self.dashboard.bridge.call(
                    asyncio.wait_for(self.interface.publish_task(doc), wait), timeout=wait + 5.0
                )
            except asyncio.TimeoutError:
                raise TimeoutError(f"Kafka did not acknowledge it within {wait:g}s") from None
        except Exception as exc:
            if _unreachable(exc):
                self._failed("publishing", exc)
            raise
        self._worked("publishing")
        record = {
            "id": doc["id"],
            "topic": getattr(meta, "topic", self.tasks_topic),
            "partition": getattr(meta, "partition", None),
            "offset": getattr(meta, "offset", None),
            "at": datetime.now(timezone.utc).isoformat(),
            "message": doc,
        }
        with self._lock:
            self._published[doc["id"]] = record
            while len(self._published) > _KEEP:
                self._published.popitem(last=False)
        return record

    def published(self, task_id: str) -> dict[str, Any] | None:
        """What was published for this task id by this dashboard, if anything."""
        with self._lock:
            return self._published.get(task_id)

    # -- results -----------------------------------------------------------------------

    def result(self, task_id: str) -> dict[str, Any] | None:
        """The latest result message for a task (wfcore's wire format), or None."""
        with self._lock:
            entry = self._results.get(task_id)
            return None if entry is None else entry["doc"]

    def recent(self, limit: int = 20) -> list[dict[str, Any]]:
        """The newest results: ``id``, ``status``, ``workflow_name``, ``output``, ``error``,
        ``received``."""
        with self._lock:
            entries = list(self._results.values())[-limit:]
        return [{k: v for k, v in entry.items() if k != "doc"} for entry in reversed(entries)]

    def _remember(self, value: bytes | None) -> None:
        try:
            doc = json.loads(value or b"")
        except ValueError:
            logger.warning("skipping a result message that is not JSON")
            return
        except RecursionError:
            # Deeper than Python's stack: garbage like the above, not Kafka failing.
            logger.warning("skipping a result message nested deeper than %d levels", RESULT_DEPTH)
            return
        if isinstance(doc, dict) and _deeper_than(doc, RESULT_DEPTH):
            logger.warning("skipping a result message nested deeper than %d levels", RESULT_DEPTH)
            return
        if not isinstance(doc, dict) or not isinstance(doc.get("id"), str):
            logger.warning("skipping a result message without a task id")
            return
        entry = {
            "id": doc["id"],
            "status": str(doc.get("status") or "completed"),
            "workflow_name": doc.get("workflow_name"),
            "output": doc.get("output"),
            "error": doc.get("error"),
            "received": datetime.now(timezone.utc).isoformat(),
            "doc": doc,
        }
        with self._lock:
            self._results.pop(doc["id"], None)
            self._results[doc["id"]] = entry
            while len(self._results) > _KEEP:
                self._results.popitem(last=False)

    def _read_one(self, record: Any) -> None:
        # One message that cannot be read is skipped: an error escaping from here
        # would be taken for Kafka failing, and the same message read again for ever.
        try:
            self._remember(record.value)
        except Exception:
            logger.exception(
                "skipping result message %s-%s at offset %s",
                record.topic,
                record.partition,
                record.offset,
            )

    def _read_results(self) -> None:
        consumer = None
        delay = 0.5
        heard = time.monotonic()  # when Kafka last answered the reader
        while not self._stop.is_set():
            try:
                if consumer is None:
                    consumer = self._open()
                    if consumer is None:
                        continue
                    heard = time.monotonic()
                batches = consumer.poll(timeout_ms=300)
                for records in batches.values():
                    for record in records:
                        self._read_one(record)
                if not batches and time.monotonic() - heard >= CHECK_EVERY:
                    # Raises KafkaTimeoutError when the brokers do not answer.
                    consumer.end_offsets(
                        list(consumer.assignment()), timeout_ms=int(PUBLISH_TIMEOUT * 1000)
                    )
                    heard = time.monotonic()
                elif batches:
                    heard = time.monotonic()
                self._worked("reading results")
                delay = 0.5
            except _SettingsRefused as exc:
                # kafka-python refusing a setting: trying again cannot help.
                with self._lock:
                    self._refused = str(exc)
                logger.error("Kafka settings cannot be used: %s; results are not read", exc)
                return
            except Exception as exc:
                self._failed("reading results", exc)
                logger.warning(
                    "cannot reach Kafka at %s (%s); retrying", self.brokers, _describe(exc)
                )
                if consumer is not None:
                    _close_quietly(consumer)
                    consumer = None
                self.ready.clear()
                self._stop.wait(delay)
                delay = min(10.0, delay * 2)
        if consumer is not None:
            _close_quietly(consumer)

    def _open(self) -> Any:
        from kafka import KafkaConsumer, TopicPartition
        from kafka.errors import KafkaConfigurationError

        settings = self.interface.consumer_settings()
        # wfe_kafka's consumer settings already make each try short (5 s) while
        # Kafka is down, so that stop() is not held up by one.
        settings.update(group_id=None, enable_auto_commit=False, client_id="wfe-flaskui-results")
        try:
            consumer = KafkaConsumer(**settings)
        except (TypeError, ValueError, AssertionError, KafkaConfigurationError) as exc:
            raise _SettingsRefused(f"kafka-python refused them ({_describe(exc)})") from None
        partitions = consumer.partitions_for_topic(self.results_topic)
        self._worked("reading results")  # Kafka answered
        if not partitions:
            # The topic does not exist yet: no worker has published a result.
            _close_quietly(consumer)
            self._stop.wait(1.0)
            return None
        assigned = [TopicPartition(self.results_topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        ends = consumer.end_offsets(assigned)
        starts = consumer.beginning_offsets(assigned)
        for tp in assigned:
            consumer.seek(tp, max(starts[tp], ends[tp] - self.backlog))
        self.ready.set()
        return consumer


def _deeper_than(value: Any, limit: int) -> bool:
    """True if dicts and lists nest more than ``limit`` levels (walked without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, (dict, list)):
                if depth >= limit:
                    return True
                stack.append((child, depth + 1))
    return False


class _SettingsRefused(Exception):
    """kafka-python refused the settings of the results reader."""


def _unreachable(exc: BaseException) -> bool:
    """Kafka not answering (as opposed to refusing one message): a timeout, a network
    error, or one of kafka-python's errors that retrying may cure."""
    from kafka.errors import KafkaError

    if isinstance(exc, KafkaError):
        return bool(getattr(exc, "retriable", False))
    return isinstance(exc, (TimeoutError, OSError))


def _describe(exc: BaseException) -> str:
    """An error in a line: its message, else its class's name."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _close_quietly(consumer: Any) -> None:
    try:
        consumer.close()
    except Exception:
        logger.debug("closing the results consumer failed", exc_info=True)

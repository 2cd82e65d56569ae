"""KafkaMQInterface: tasks in from a Kafka topic, results and lifecycle events out.

kafka-python is a blocking client, so each client lives on its own thread: the
producer on a sender thread, the consumer on a polling thread. The event loop
only hands them work and awaits the outcome.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import math
import queue
import re
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from wfcore import (
    ECSWorkflowEngine,
    InvalidTaskError,
    InvalidWorkflowError,
    Phase,
    Store,
    Task,
    TaskStatus,
    UnknownWorkflowError,
    hookimpl,
)
from wfcore.model import utcnow

from .messages import (
    BadMessage,
    dead_letter_headers,
    event_message,
    event_without_bulk,
    parse_task_message,
    result_message,
    result_without_bulk,
    source_id,
    task_message,
)

__all__ = ["KafkaMQInterface"]

logger = logging.getLogger("wfe_kafka")
T = TypeVar("T")

# Errors that say the message itself is at fault: retrying can never help.
_BAD_MESSAGE = (BadMessage, InvalidTaskError, UnknownWorkflowError, InvalidWorkflowError)

_MAX_QUEUED_RESULTS = 20_000
_MAX_QUEUED_EVENTS = 50_000
_PUBLISH_BATCH = 1000
_MAX_BATCHES_IN_HAND = 4

# The lifecycle event announcing each finished status.
_FINAL_EVENTS = {
    TaskStatus.COMPLETED: "completed",
    TaskStatus.FAILED: "failed",
    TaskStatus.CANCELLED: "cancelled",
}

# Engine -> the interface attached to it (auto-wiring leaves such engines alone).
ATTACHED: weakref.WeakKeyDictionary[ECSWorkflowEngine, KafkaMQInterface] = (
    weakref.WeakKeyDictionary()
)

Record = tuple[str, "bytes | None", "bytes | None", "list[tuple[str, bytes]] | None"]


class _SenderThread:
    """A daemon thread running callables in order (a ThreadPoolExecutor would be
    joined at interpreter exit, even while a client hangs on a dead broker)."""

    def __init__(self, name: str) -> None:
        self._queue: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], None]) -> None:
        self._queue.put(fn)

    def stop(self) -> None:
        self._queue.put(None)

    def _run(self) -> None:
        while True:
            fn = self._queue.get()
            if fn is None:
                return
            try:
                fn()
            except Exception:
                logger.exception("wfe_kafka sender thread: unexpected error")


def _settle(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


class _Producer:
    """One KafkaProducer, created lazily and used only from its own thread."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._config = config
        self._producer: Any = None
        self._thread = _SenderThread("wfe-kafka-producer")
        self.closed = False

    def _ensure(self) -> Any:
        if self._producer is None:
            from kafka import KafkaProducer

            self._producer = _new_client(KafkaProducer, self._config)
        return self._producer

    async def send_many(self, records: Sequence[Record]) -> list[Any]:
        """Send records and wait until each is acknowledged (acks=all) or has failed.

        Returns one item per record: its RecordMetadata, or the exception.
        """
        if not records:
            return []
        if self.closed:
            raise RuntimeError("the Kafka producer is closed")
        loop = asyncio.get_running_loop()
        done: asyncio.Future[list[Any]] = loop.create_future()
        self._thread.submit(lambda: self._send(records, loop, done))
        return await done

    def _send(
        self, records: Sequence[Record], loop: asyncio.AbstractEventLoop, done: asyncio.Future[Any]
    ) -> None:
        results: list[Any] = [None] * len(records)
        remaining = [len(records)]
        lock = threading.Lock()

        def finish(index: int, outcome: Any) -> None:
            with lock:
                results[index] = outcome
                remaining[0] -= 1
                last = remaining[0] == 0
            if last:
                try:
                    loop.call_soon_threadsafe(_settle, done, results)
                except RuntimeError:
                    pass  # the loop is gone; nobody waits any more

        if self._producer is not None and _broken(self._producer):
            # kafka-python 3.0.x turns an idempotent producer's first non-retriable
            # send error (a record too large for its topic, say) into a fatal state
            # in which every later send fails: start afresh instead.
            logger.warning("the Kafka producer failed for good; replacing it")
            try:
                self._producer.close(timeout=1)
            except Exception:
                logger.debug("closing a failed Kafka producer", exc_info=True)
            self._producer = None
        try:
            producer = self._ensure()
        except Exception as exc:
            for i in range(len(records)):
                finish(i, exc)
            return
        for i, (topic, key, value, headers) in enumerate(records):
            try:
                future = producer.send(topic, key=key, value=value, headers=headers)
            except Exception as exc:
                finish(i, exc)
                continue
            future.add_callback(lambda meta, i=i: finish(i, meta))
            future.add_errback(lambda exc, i=i: finish(i, exc))

    async def close(self, timeout: float) -> bool:
        """Flush and close the producer, waiting at most ``timeout`` seconds.

        Returns False when records were still unsent then (Kafka unreachable): they
        are dropped, and the producer is closed all the same.
        """
        if self.closed:
            return True
        self.closed = True
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bool] = loop.create_future()

        def close() -> None:
            flushed = True
            try:
                if self._producer is not None:
                    flushed = _close_producer(self._producer, timeout)
            except Exception:
                logger.exception("closing the Kafka producer failed")
            finally:
                try:
                    loop.call_soon_threadsafe(_settle, done, flushed)
                except RuntimeError:
                    pass

        self._thread.submit(close)
        self._thread.stop()
        try:
            # The thread may still be inside a send that waits for metadata
            # (max_block_ms): it is a daemon, nobody needs to wait for it.
            return await asyncio.wait_for(asyncio.shield(done), timeout + 1)
        except asyncio.TimeoutError:
            return False


def _close_producer(producer: Any, timeout: float) -> bool:
    """Close a KafkaProducer, giving its unsent records at most ``timeout`` seconds.

    kafka-python's ``close`` raises KafkaTimeoutError from its flush when records
    are left, before it closes anything; its ``__del__`` then tries again, with a
    traceback. Flushing first and closing with no flush leaves it closed either way.
    """
    from kafka.errors import KafkaTimeoutError

    try:
        producer.flush(timeout=max(0.0, timeout))
        flushed = True
    except KafkaTimeoutError:
        flushed = False
    # With timeout 0, close() stops the sender at once, failing what is unsent.
    producer.flush = lambda timeout=None: None
    producer.close(timeout=0)
    return flushed


#: A finished task as published: its id and the store version it finished with. A
#: task finishes again after a retry, with a new version, and that result is new.
ResultKey = tuple[str, int]


class _Recent:
    """The last results (or final events) published, by task id and version, to
    drop a second publish of the same finish (and only of the same finish)."""

    def __init__(self, size: int = 50_000) -> None:
        self._order: collections.deque[ResultKey] = collections.deque()
        self._keys: set[ResultKey] = set()
        self._size = size

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def add(self, key: ResultKey) -> None:
        if key in self._keys:
            return
        self._keys.add(key)
        self._order.append(key)
        if len(self._order) > self._size:
            self._keys.discard(self._order.popleft())


class _Batches:
    """Consumed batches in poll order with the offsets they cover; commits only a
    prefix of handled batches, so an offset never passes an unhandled message."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._batches: collections.deque[tuple[concurrent.futures.Future[Any], dict[Any, int]]] = (
            collections.deque()
        )
        self.failed: BaseException | None = None

    def add(self, future: concurrent.futures.Future[Any], offsets: dict[Any, int]) -> None:
        with self._lock:
            self._batches.append((future, offsets))

    def __len__(self) -> int:
        return len(self._batches)

    def take_handled(self) -> dict[Any, int]:
        """Remove the handled prefix; return the next offset to commit per partition."""
        offsets: dict[Any, int] = {}
        with self._lock:
            while self._batches and self._batches[0][0].done():
                future, batch_offsets = self._batches[0]
                error = future.exception() if not future.cancelled() else None
                if future.cancelled() or error is not None:
                    self.failed = error or concurrent.futures.CancelledError()
                    break
                self._batches.popleft()
                for tp, offset in batch_offsets.items():
                    offsets[tp] = max(offset, offsets.get(tp, 0))
        return offsets

    def wait_oldest(self, timeout: float) -> None:
        with self._lock:
            oldest = self._batches[0][0] if self._batches else None
        if oldest is not None:
            concurrent.futures.wait([oldest], timeout=timeout)

    def wait_all(self, timeout: float) -> None:
        with self._lock:
            futures = [f for f, _ in self._batches]
        if futures:
            concurrent.futures.wait(futures, timeout=timeout)


class _Hooks:
    """The hook implementations an attached interface registers on its engine."""

    def __init__(self, iface: KafkaMQInterface) -> None:
        self._iface = iface

    @hookimpl
    def wfe_task_submitted(self, task: Task) -> None:
        if task.run_after is None or task.run_after <= utcnow():
            self._iface._outstanding += 1  # a task delayed is no work at hand yet
        if "kafka" in task.context:
            self._iface.stats["submitted"] += 1
        self._iface._event("submitted", task)

    @hookimpl
    def wfe_task_suspended(self, task: Task) -> None:
        self._iface._settled()
        self._iface._event("suspended", task)

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
    def wfe_task_resumed(self, task: Task) -> None:
        self._iface._event("resumed", task)


_TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]{1,249}")


def _check_topic(argument: str, topic: object) -> None:
    """Refuse a name Kafka would refuse as a topic (its own rule: ASCII letters,
    digits, '.', '_' and '-', at most 249 characters, not '.' or '..')."""
    if not isinstance(topic, str) or not _TOPIC_NAME.fullmatch(topic) or topic in (".", ".."):
        raise ValueError(
            f"{argument}={topic!r} is not a valid Kafka topic name (1 to 249 ASCII "
            "letters, digits, '.', '_' or '-'; not '.' or '..')"
        )


def _check_servers(servers: Sequence[str]) -> None:
    from kafka.cluster import get_ip_port_afi

    if not servers:
        raise ValueError("bootstrap_servers: no broker given (expected host:port,...)")
    for server in servers:
        try:
            # kafka-python's own parser, after the protocol prefix it ignores.
            _host, port, _family = get_ip_port_afi(re.sub("^.*://", "", server))
        except ValueError:
            port = -1
        if not 0 < port < 65536 or not _host or any(c.isspace() for c in server):
            raise ValueError(f"bootstrap_servers: {server!r} is not host:port")


def _check_client_config(
    client: Mapping[str, Any], producer: Mapping[str, Any], consumer: Mapping[str, Any]
) -> None:
    """Refuse settings no kafka-python client knows: a misspelled setting (say,
    ``sasl_plain_pasword``) would otherwise be dropped without a word."""
    from kafka import KafkaConsumer, KafkaProducer

    known = {**KafkaProducer.DEFAULT_CONFIG, **KafkaConsumer.DEFAULT_CONFIG}
    for key in client:
        if key not in known:
            raise ValueError(
                f"unknown kafka-python setting {key!r} (not a KafkaProducer or "
                "KafkaConsumer setting)"
            )
    for argument, settings, cls in (
        ("producer_config", producer, KafkaProducer),
        ("consumer_config", consumer, KafkaConsumer),
    ):
        for key in settings:
            if key not in cls.DEFAULT_CONFIG:
                raise ValueError(f"{argument}: unknown {cls.__name__} setting {key!r}")
    # The values too: kafka-python checks some only when a client connects, on
    # the consumer's thread, where a bad one looked like Kafka being unreachable.
    for settings, cls in ((client, None), (producer, KafkaProducer), (consumer, KafkaConsumer)):
        for key, value in settings.items():
            _check_value(key, value, (cls.DEFAULT_CONFIG if cls else known).get(key))
    for settings in ({**client, **producer}, {**client, **consumer}):
        _check_security(settings)


_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
# Settings whose kafka-python default's type is not the only one it takes.
_ANY_TYPE = {"acks", "bootstrap_servers", "api_version"}


def _check_value(key: str, value: Any, default: Any) -> None:
    """Refuse a value whose type cannot be right for the setting: one of the
    default's type (a number for a number, true/false for a flag, a string)."""
    if key in _ANY_TYPE or default is None:
        return
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"kafka-python setting {key}={value!r}: expected true or false")
    elif isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ValueError(f"kafka-python setting {key}={value!r}: expected a number >= 0")
    elif isinstance(default, str):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"kafka-python setting {key}={value!r}: expected a string")


def _check_security(settings: Mapping[str, Any]) -> None:
    """Refuse security settings that cannot work together (one client's view)."""
    from kafka.net.sasl import SASL_MECHANISMS

    protocol = settings.get("security_protocol", "PLAINTEXT")
    if protocol not in _SECURITY_PROTOCOLS:
        raise ValueError(
            f"kafka-python setting security_protocol={protocol!r}: expected one of "
            + ", ".join(_SECURITY_PROTOCOLS)
        )
    mechanism = settings.get("sasl_mechanism")
    if not protocol.startswith("SASL_"):
        if mechanism is not None:
            raise ValueError(
                f"kafka-python setting sasl_mechanism={mechanism!r} has no effect with "
                f"security_protocol={protocol!r} (use SASL_PLAINTEXT or SASL_SSL)"
            )
        return
    if mechanism not in SASL_MECHANISMS:
        raise ValueError(
            f"kafka-python setting sasl_mechanism={mechanism!r}: expected one of "
            + ", ".join(sorted(SASL_MECHANISMS))
            + f" with security_protocol={protocol!r}"
        )
    assert isinstance(mechanism, str)  # a key of SASL_MECHANISMS: a mechanism's name
    if mechanism == "PLAIN" or mechanism.startswith("SCRAM-"):
        for companion in ("sasl_plain_username", "sasl_plain_password"):
            if not settings.get(companion):
                raise ValueError(
                    f"kafka-python setting sasl_mechanism={mechanism!r} needs {companion}"
                )
    elif mechanism == "OAUTHBEARER" and settings.get("sasl_oauth_token_provider") is None:
        raise ValueError(
            "kafka-python setting sasl_mechanism='OAUTHBEARER' needs sasl_oauth_token_provider"
        )


def _client_config(defaults: Mapping[str, Any], *layers: Mapping[str, Any]) -> dict[str, Any]:
    """Merge config layers, keeping only the keys this kafka-python client knows."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update({k: v for k, v in layer.items() if k in defaults})
    return merged


class KafkaMQInterface:
    """Feed an engine from a Kafka topic and publish its results (and events) to Kafka.

    :param bootstrap_servers: ``host:port`` of one or more brokers (a comma-separated
        string or a list).
    :param tasks_topic: where task messages come from (see the README for their
        JSON format; the minimum is ``{"workflow_name": ..., "data": ...}``).
    :param results_topic: where every finished task (completed, failed or
        cancelled) is published, keyed by task id, in wfcore's wire format.
    :param group_id: the consumer group; workers sharing it split the partitions
        of ``tasks_topic``.
    :param dead_letter_topic: where messages that can never become a task go, with
        their original key, value and headers plus ``wfe.error*`` headers. None
        means ``<tasks_topic>.dlq``; ``""`` logs and skips them instead.
    :param events_topic: when set, every lifecycle change of a task (submitted,
        phase_started, phase_finished, suspended, resumed, completed, failed,
        cancelled) is published there, keyed by task id.
    :param max_pending: stop taking messages while the engine has this many
        pending or running tasks (backpressure; the backlog stays in Kafka).
    :param max_poll_records: messages handed to the engine per batch.
    :param outbox_grace: seconds a finished task may sit unpublished in the
        store's outbox before the background sweep publishes it (the worker that
        finished it normally does so at once).
    :param outbox_consumer: the name under which the store records unpublished
        results (default ``kafka:<results_topic>``).
    :param producer_config: extra settings for the ``KafkaProducer`` only.
    :param consumer_config: extra settings for the ``KafkaConsumer`` only.
    :param close_timeout: how long :meth:`close` waits in all for Kafka to take
        what is in flight; what it has not taken stays in the outbox.
    :param client_config: any other kafka-python setting, passed to both clients
        where they accept it: ``security_protocol``, ``sasl_mechanism``,
        ``sasl_plain_username``, ``sasl_plain_password``, ``ssl_cafile``,
        ``session_timeout_ms``, ...

    The producer always uses ``acks="all"`` and retries; the consumer commits an
    offset only after the message's task is durably stored (or dead-lettered).

    Usage::

        import asyncio
        from wfcore import ECSWorkflowEngine, Phase
        from wfe_kafka import KafkaMQInterface

        async def echo(task):
            task.output = task.data

        engine = ECSWorkflowEngine("sqlite:///tmp/worker.db")
        engine.register_handler("echo", echo)
        engine.register_workflow("echo", [Phase("echo", assigned_to="functional")])
        kafka = KafkaMQInterface(bootstrap_servers="127.0.0.1:9092")
        engine.register_task_completed_hook(kafka.publish_result)

        async def main():
            consumer = asyncio.create_task(kafka.consume_tasks(engine))
            try:
                await engine.run()          # until engine.stop()
            finally:
                kafka.stop_consuming()      # commit what was handled, leave the group
                await consumer
                await kafka.close()         # publish what is left, close the producer

        asyncio.run(main())
    """

    def __init__(
        self,
        bootstrap_servers: str | Sequence[str] = "localhost:9092",
        tasks_topic: str = "wfe.tasks",
        results_topic: str = "wfe.results",
        group_id: str = "wfe-workers",
        dead_letter_topic: str | None = None,
        events_topic: str | None = None,
        *,
        max_pending: int = 1000,
        max_poll_records: int = 500,
        outbox_grace: float = 5.0,
        outbox_consumer: str | None = None,
        producer_config: Mapping[str, Any] | None = None,
        consumer_config: Mapping[str, Any] | None = None,
        close_timeout: float = 5.0,
        **client_config: Any,
    ) -> None:
        for argument, count in (
            ("max_pending", max_pending),
            ("max_poll_records", max_poll_records),
        ):
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise ValueError(f"{argument}={count!r}: expected a whole number, at least 1")
        if (
            isinstance(outbox_grace, bool)
            or not isinstance(outbox_grace, (int, float))
            or not math.isfinite(outbox_grace)
            or outbox_grace < 0
        ):
            raise ValueError(
                f"outbox_grace={outbox_grace!r}: expected a finite number of seconds, at least 0"
            )
        if isinstance(bootstrap_servers, str):
            bootstrap_servers = [s.strip() for s in bootstrap_servers.split(",") if s.strip()]
        # Checked here, once, with a message naming the setting: kafka-python would
        # only fail later, on the consumer's thread, and the consumer would retry
        # a setting that can never work for as long as the worker runs.
        _check_servers(bootstrap_servers)
        for argument, topic in (
            ("tasks_topic", tasks_topic),
            ("results_topic", results_topic),
            ("dead_letter_topic", dead_letter_topic or "-"),  # "" or None: no check
            ("events_topic", events_topic or "-"),
        ):
            _check_topic(argument, topic)
        if not isinstance(group_id, str) or not group_id:
            raise ValueError(f"group_id must be a non-empty string, got {group_id!r}")
        _check_client_config(client_config, producer_config or {}, consumer_config or {})
        self.bootstrap_servers = list(bootstrap_servers)
        self.tasks_topic = tasks_topic
        self.results_topic = results_topic
        self.group_id = group_id
        self.dead_letter_topic = (
            f"{tasks_topic}.dlq" if dead_letter_topic is None else dead_letter_topic
        )
        self.events_topic = events_topic or None
        self.max_pending = max_pending
        self.max_poll_records = max_poll_records
        self.outbox_grace = outbox_grace
        self.outbox_consumer = outbox_consumer or f"kafka:{results_topic}"
        self.close_timeout = close_timeout
        self.sweep_interval = 1.0
        # An outage is reported once results have waited this long for Kafka, and
        # again at most this often while it lasts.
        self.outage_warn_after = 10.0
        self.outage_warn_every = 30.0
        self._client_config = dict(client_config)
        self._producer_config = dict(producer_config or {})
        self._consumer_config = dict(consumer_config or {})
        #: Counters: received (messages polled), consumed (handled: stored or
        #: dead-lettered), submitted (new tasks), dead_lettered, results_published,
        #: events_published, publish_errors.
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "received",
                "consumed",
                "submitted",
                "dead_lettered",
                "results_published",
                "events_published",
                "publish_errors",
            ),
            0,
        )
        self._producer: _Producer | None = None
        self._engine: ECSWorkflowEngine | None = None
        self._hooks: list[Any] = []
        # Results queued or being sent, and those published lately, by (id, version).
        self._results: collections.deque[tuple[ResultKey, bytes]] = collections.deque()
        self._results_ids: set[ResultKey] = set()
        self._recent = _Recent()
        # Finishes whose final event (completed, failed, cancelled) this process sent.
        self._final_events = _Recent()
        self._events: collections.deque[tuple[bytes, bytes]] = collections.deque()
        self._wake: asyncio.Event | None = None
        self._events_wake: asyncio.Event | None = None
        self._publisher: asyncio.Task[None] | None = None
        self._events_publisher: asyncio.Task[None] | None = None
        self._closing = False
        self._backoff = 0.0
        self._degraded_until = 0.0
        self._trouble_since: float | None = None
        self._outage_warned_at: float | None = None
        self._outstanding = 0
        self._consume_stop = threading.Event()
        self._consuming: asyncio.Future[None] | None = None
        self._consumer_task: asyncio.Task[None] | None = None
        self._assignment: frozenset[tuple[str, int]] = frozenset()
        self._paused = False

    def __repr__(self) -> str:
        return (
            f"KafkaMQInterface({','.join(self.bootstrap_servers)!r}, tasks={self.tasks_topic!r}, "
            f"results={self.results_topic!r}, group={self.group_id!r})"
        )

    # -- configuration ---------------------------------------------------------------

    def producer_settings(self) -> dict[str, Any]:
        """The settings the ``KafkaProducer`` is created with."""
        from kafka import KafkaProducer

        defaults = {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": "wfe-kafka-producer",
            "acks": "all",
            "linger_ms": 5,
            "batch_size": 128 * 1024,
            "metrics_enabled": False,
        }
        config = _client_config(
            KafkaProducer.DEFAULT_CONFIG, defaults, self._client_config, self._producer_config
        )
        config["acks"] = "all"  # the outbox only marks what every replica has
        return config

    def consumer_settings(self) -> dict[str, Any]:
        """The settings the ``KafkaConsumer`` is created with."""
        from kafka import KafkaConsumer

        defaults = {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": "wfe-kafka-consumer",
            "group_id": self.group_id,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "max_poll_records": self.max_poll_records,
            "session_timeout_ms": 10_000,
            "heartbeat_interval_ms": 2_000,
            # One connection attempt holds up stop_consuming() while Kafka is down
            # (kafka-python's default is 30 s); failed attempts are retried.
            "bootstrap_timeout_ms": 5_000,
            "metrics_enabled": False,
        }
        config = _client_config(
            KafkaConsumer.DEFAULT_CONFIG, defaults, self._client_config, self._consumer_config
        )
        config["enable_auto_commit"] = False  # offsets follow the store, never a timer
        return config

    def _get_producer(self) -> _Producer:
        if self._producer is None or self._producer.closed:
            self._producer = _Producer(self.producer_settings())
        return self._producer

    # -- publishing ------------------------------------------------------------------

    async def publish_task(self, task: Task | Mapping[str, Any]) -> Any:
        """Send a task to the tasks topic (key = task id) and wait until Kafka has it.

        ``task`` is a :class:`~wfcore.Task` (e.g. one returned by ``submit_task``)
        or a dict with the task message fields. Returns kafka-python's
        ``RecordMetadata`` (topic, partition, offset).
        """
        task_id = task.id if isinstance(task, Task) else task.get("id")
        key = task_id.encode("utf-8") if isinstance(task_id, str) else None
        [outcome] = await self._get_producer().send_many(
            [(self.tasks_topic, key, task_message(task), None)]
        )
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def publish_result(self, task: Task) -> None:
        """Publish a finished task to the results topic (key = task id).

        Use it as ``engine.register_task_completed_hook(kafka.publish_result)``.
        Once the interface is attached to an engine (:meth:`attach`,
        :meth:`consume_tasks`, :meth:`start`) this only queues the task for the
        outbox publisher and returns; a task published once is not published
        again. Unattached, it sends and waits for the acknowledgement.
        """
        if self._publisher is not None and not self._publisher.done():
            self._queue_result(task)
            return
        [outcome] = await self._get_producer().send_many(
            [(self.results_topic, task.id.encode("utf-8"), result_message(task), None)]
        )
        if isinstance(outcome, BaseException):
            self.stats["publish_errors"] += 1
            raise outcome
        self.stats["results_published"] += 1

    def _queue_result(self, task: Task) -> None:
        # The same finish is published once; a later finish of the same task (after
        # a retry) has another version and is a new result.
        key = (task.id, task.version)
        if key in self._results_ids or key in self._recent:
            return
        if len(self._results) >= _MAX_QUEUED_RESULTS or time.monotonic() < self._degraded_until:
            return  # the store's outbox has it; the sweep publishes it later
        self._results.append((key, result_message(task)))
        self._results_ids.add(key)
        if self._wake is not None:
            self._wake.set()

    def _event(
        self, event: str, task: Task, phase: Phase | None = None, at: datetime | None = None
    ) -> None:
        if self.events_topic is None or self._events_wake is None:
            return
        if event in _FINAL_EVENTS.values():
            self._final_events.add((task.id, task.version))
        if len(self._events) >= _MAX_QUEUED_EVENTS:
            self._events.popleft()
            self.stats["publish_errors"] += 1
        self._events.append((task.id.encode("utf-8"), event_message(event, task, phase, at)))
        self._events_wake.set()

    def _settled(self) -> None:
        self._outstanding = max(0, self._outstanding - 1)

    # -- attaching to an engine ------------------------------------------------------

    @property
    def engine(self) -> ECSWorkflowEngine | None:
        """The engine this interface is attached to, or None."""
        return self._engine

    async def attach(self, engine: ECSWorkflowEngine) -> None:
        """Publish this engine's finished tasks (and events) through the store's outbox.

        Registers the outbox consumer in the engine's store, so that from now on
        every task reaching COMPLETED, FAILED or CANCELLED is recorded as
        unpublished in the same transaction, and starts the publisher, which
        sends them, waits for ``acks=all`` and only then marks them published.
        Unpublished ones left by a crash or a Kafka outage are swept up. Called
        by :meth:`consume_tasks` and :meth:`start`; idempotent.
        """
        if self._engine is engine:
            return
        if self._engine is not None:
            raise RuntimeError("this KafkaMQInterface is already attached to another engine")
        store = await engine.get_store()
        await store.outbox_register(self.outbox_consumer)
        self._engine = engine
        ATTACHED[engine] = self
        self._closing = False
        self._hooks = [_Hooks(self)]
        if self.events_topic is not None:
            self._hooks.append(_EventHooks(self))
        for i, hooks in enumerate(self._hooks):
            engine.plugin_manager.register(hooks, name=f"wfe_kafka.interface.{id(self)}.{i}")
        self._wake = asyncio.Event()
        self._publisher = asyncio.create_task(self._publish_loop(store))
        if self.events_topic is not None:
            self._events_wake = asyncio.Event()
            self._events_publisher = asyncio.create_task(self._events_loop())

    async def start(self, engine: ECSWorkflowEngine) -> None:
        """Attach to the engine and consume the tasks topic in the background."""
        await self.attach(engine)
        if self._consumer_task is None or self._consumer_task.done():
            self._consumer_task = asyncio.create_task(self.consume_tasks(engine))

    async def close(self) -> None:
        """Stop consuming, publish what is queued, detach and close the producer.

        Waits at most ``close_timeout`` seconds for Kafka in all: what it has not
        taken by then stays in the outbox for the next start.
        """
        deadline = time.monotonic() + self.close_timeout
        self.stop_consuming()
        if self._consumer_task is not None:
            try:
                await self._consumer_task
            except _SettingsRefused:
                pass  # said when it stopped
            except Exception:
                logger.exception("the Kafka consumer failed")
            self._consumer_task = None
        elif self._consuming is not None:
            await asyncio.gather(self._consuming, return_exceptions=True)
        self._closing = True
        timed_out = False
        for name in ("_publisher", "_events_publisher"):
            task = getattr(self, name)
            if task is None:
                continue
            if self._wake is not None:
                self._wake.set()
            if self._events_wake is not None:
                self._events_wake.set()
            try:
                await asyncio.wait_for(task, max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                timed_out = True
            except Exception:
                logger.exception("the Kafka publisher failed")
            setattr(self, name, None)
        unsent_events = len(self._events)
        unpublished = await self._unpublished() if self._engine is not None else None
        if self._engine is not None:
            for hooks in self._hooks:
                self._engine.plugin_manager.unregister(hooks)
            if ATTACHED.get(self._engine) is self:
                del ATTACHED[self._engine]
        self._engine = None
        self._hooks = []
        self._wake = self._events_wake = None
        self._results.clear()
        self._results_ids.clear()
        self._events.clear()
        flushed = True
        if self._producer is not None:
            flushed = await self._producer.close(max(0.0, deadline - time.monotonic()))
        if timed_out or not flushed or (unpublished and self._trouble_since is not None):
            # One line, not a traceback: Kafka being away at shutdown loses nothing.
            logger.warning(
                "Kafka did not take everything within %.0f s: %s stay in the outbox; "
                "they are published at the next start%s",
                self.close_timeout,
                "unpublished results" if unpublished is None else f"{unpublished} result(s)",
                f" ({unsent_events} lifecycle event(s) are dropped)" if unsent_events else "",
            )
        self._consume_stop.clear()

    async def __aenter__(self) -> KafkaMQInterface:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- the results publisher -------------------------------------------------------

    async def _publish_loop(self, store: Store) -> None:
        assert self._wake is not None
        next_sweep = 0.0
        while True:
            now = time.monotonic()
            if self._results and now >= self._degraded_until:
                try:
                    await self._publish_queued(store)
                except Exception:
                    logger.exception("publishing results failed")
                    self._degrade()
                continue
            if self._closing:
                return
            if now >= next_sweep and now >= self._degraded_until:
                try:
                    await self._sweep(store)
                except _PublishFailed:
                    pass
                except Exception:
                    logger.exception("publishing the results outbox failed")
                    self._degrade()
                next_sweep = time.monotonic() + self.sweep_interval
            wait = max(next_sweep, self._degraded_until) - time.monotonic()
            self._wake.clear()
            if self._results and time.monotonic() >= self._degraded_until:
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.01, wait))
            except asyncio.TimeoutError:
                pass

    async def _publish_queued(self, store: Store) -> None:
        batch = [self._results.popleft() for _ in range(min(_PUBLISH_BATCH, len(self._results)))]
        try:
            await self._publish(store, batch)
        except _PublishFailed:
            # Everything still queued stays in the outbox; the sweep sends it
            # once the broker is back.
            for key, _ in self._results:
                self._results_ids.discard(key)
            self._results.clear()
        finally:
            for key, _ in batch:
                self._results_ids.discard(key)

    async def _publish(
        self,
        store: Store,
        batch: list[tuple[ResultKey, bytes]],
        swept: Mapping[ResultKey, Task] | None = None,
    ) -> None:
        """Send results, wait for acks=all, then mark them published in the outbox.

        ``swept``: the tasks of a batch the sweep found in the outbox. Their rows
        are marked only while they still stand for the finish that was sent, and
        each gets its final lifecycle event unless this process sent it already
        (the task finished in another process, or before a restart).
        """
        records: list[Record] = [
            (self.results_topic, task_id.encode("utf-8"), value, None)
            for (task_id, _), value in batch
        ]
        started = time.monotonic()
        outcomes = await self._send_watched(records)
        outcomes = await self._smaller_if_too_large(outcomes, records, self._result_without_bulk)
        sent = [
            key
            for (key, _), o in zip(batch, outcomes, strict=True)
            if not isinstance(o, BaseException)
        ]
        if sent:
            for key in sent:
                self._recent.add(key)
            self.stats["results_published"] += len(sent)
            try:
                # By version: a task retried and finished again while this result
                # was being sent keeps its outbox row for the new result.
                await store.outbox_ack(
                    self.outbox_consumer,
                    [task_id for task_id, _ in sent],
                    versions=[version for _, version in sent],
                )
            except Exception:
                # Published but not marked: the sweep will publish these again.
                logger.exception("marking %d published results in the outbox failed", len(sent))
            if swept is not None and self.events_topic is not None:
                for key in sent:
                    task = swept[key]
                    if key not in self._final_events:
                        self._event(_FINAL_EVENTS[task.status], task, at=task.updated_at)
        if len(sent) < len(batch):
            error = next(o for o in outcomes if isinstance(o, BaseException))
            self.stats["publish_errors"] += len(batch) - len(sent)
            if self._trouble_since is None:
                self._trouble_since = started
            await self._warn_outage(
                f"could not publish {len(batch) - len(sent)} result(s) to "
                f"{self.results_topic!r} ({_describe(error)})"
            )
            self._degrade()
            raise _PublishFailed
        self._backoff = 0.0
        self._delivered()

    async def _send_watched(self, records: Sequence[Record]) -> list[Any]:
        """``send_many``, warning while Kafka leaves the results unacknowledged: to a
        broker that is down, a send waits ``delivery_timeout_ms`` (2 min by default)
        before it fails, and the worker would say nothing all that time."""
        sending = asyncio.ensure_future(self._get_producer().send_many(records))
        started = time.monotonic()
        try:
            while True:
                done, _ = await asyncio.wait({sending}, timeout=1.0)
                if done:
                    return sending.result()
                if time.monotonic() - started >= self.outage_warn_after:
                    if self._trouble_since is None:
                        self._trouble_since = started
                    await self._warn_outage(
                        f"Kafka at {','.join(self.bootstrap_servers)} has not acknowledged "
                        f"results for {time.monotonic() - started:.0f} s"
                    )
        finally:
            sending.cancel()  # when the publisher itself is cancelled (close)

    async def _warn_outage(self, what: str) -> None:
        """Warn, at most every ``outage_warn_every`` seconds, that results are not
        reaching Kafka, with how many wait in the outbox."""
        now = time.monotonic()
        if self._outage_warned_at is not None and now - self._outage_warned_at < (
            self.outage_warn_every
        ):
            return
        self._outage_warned_at = now
        waiting = await self._unpublished()
        logger.warning(
            "%s; %s wait in the outbox and are published once Kafka takes them",
            what,
            "results" if waiting is None else f"{waiting} result(s)",
        )

    def _delivered(self) -> None:
        """Results reach Kafka again: say so when their absence was reported."""
        if self._outage_warned_at is not None and self._trouble_since is not None:
            logger.warning(
                "Kafka takes results again: publishing resumed after %.0f s",
                time.monotonic() - self._trouble_since,
            )
        self._trouble_since = None
        self._outage_warned_at = None

    async def _unpublished(self) -> int | None:
        """How many finished tasks wait in the outbox (None: the store cannot tell)."""
        if self._engine is None:
            return None
        try:
            store = await self._engine.get_store()
            return (await store.outbox_consumers()).get(self.outbox_consumer)
        except Exception:
            return None

    async def _smaller_if_too_large(
        self,
        outcomes: list[Any],
        records: Sequence[Record],
        smaller: Callable[[Record], Record],
    ) -> list[Any]:
        """Send again, alone, each record that failed as too large, and if Kafka
        refuses it again, its ``smaller`` form: Kafka will never take it, and
        retrying it would hold up everything behind it for ever.

        Alone, because kafka-python fails the whole producer after such an error,
        so its batch-mates fail with the same error without being too large.
        """
        outcomes = list(outcomes)
        for i, outcome in enumerate(outcomes):
            if not _too_large(outcome):
                continue
            [outcome] = await self._get_producer().send_many([records[i]])
            if _too_large(outcome):
                [outcome] = await self._get_producer().send_many([smaller(records[i])])
            outcomes[i] = outcome
        return outcomes

    async def _resend_failed(self, outcomes: list[Any], records: Sequence[Record]) -> list[Any]:
        """Send once more the records that failed other than as too large."""
        again = [
            i for i, o in enumerate(outcomes) if isinstance(o, BaseException) and not _too_large(o)
        ]
        if not again:
            return outcomes
        outcomes = list(outcomes)
        retried = await self._get_producer().send_many([records[i] for i in again])
        for i, outcome in zip(again, retried, strict=True):
            outcomes[i] = outcome
        return outcomes

    def _result_without_bulk(self, record: Record) -> Record:
        topic, key, value, headers = record
        logger.warning(
            "the result of task %s (%d bytes) is too large for %r; publishing it "
            "without data, outputs and history",
            (key or b"").decode("utf-8", "replace"),
            len(value or b""),
            topic,
        )
        return topic, key, result_without_bulk(value or b"{}"), headers

    def _degrade(self) -> None:
        self._backoff = min(30.0, max(0.5, self._backoff * 2))
        self._degraded_until = time.monotonic() + self._backoff

    async def _sweep(self, store: Store) -> None:
        """Publish finished tasks the outbox still holds: left by a crash, an
        outage, or finished by another process."""
        limit = 200
        while True:
            cutoff = utcnow() - timedelta(seconds=self.outbox_grace)
            pending = await store.outbox_pending(self.outbox_consumer, limit)
            # A row whose task is, as stored, the very finish published lately was
            # sent; its mark was lost (or raced the publish). Any other is sent.
            already = [t for t in pending if (t.id, t.version) in self._recent]
            if already:
                await store.outbox_ack(
                    self.outbox_consumer,
                    [t.id for t in already],
                    versions=[t.version for t in already],
                )
            swept = {
                (t.id, t.version): t
                for t in pending
                if (t.id, t.version) not in self._results_ids
                and (t.id, t.version) not in self._recent
                and t.updated_at <= cutoff
                and t.status in _FINAL_EVENTS
            }
            if not swept:
                return
            todo = [(key, result_message(task)) for key, task in swept.items()]
            self._results_ids.update(swept)
            try:
                await self._publish(store, todo, swept)
            finally:
                self._results_ids.difference_update(swept)
            if len(pending) < limit:
                return

    async def _events_loop(self) -> None:
        assert self._events_wake is not None and self.events_topic is not None
        while True:
            if not self._events:
                if self._closing:
                    return
                self._events_wake.clear()
                await self._events_wake.wait()
                continue
            batch = [self._events.popleft() for _ in range(min(_PUBLISH_BATCH, len(self._events)))]
            records: list[Record] = [(self.events_topic, key, value, None) for key, value in batch]
            try:
                started = time.monotonic()
                outcomes = await self._get_producer().send_many(records)
                if time.monotonic() - started < 5.0:
                    # Failed at once, not after delivery_timeout_ms: most likely for a
                    # record too large (kafka-python then fails the sends of the whole
                    # producer, results' included): once more, on a fresh producer.
                    outcomes = await self._resend_failed(outcomes, records)
                outcomes = await self._smaller_if_too_large(outcomes, records, _event_without_bulk)
            except Exception as exc:
                outcomes = [exc] * len(batch)
            failed = sum(isinstance(o, BaseException) for o in outcomes)
            self.stats["events_published"] += len(batch) - failed
            if failed:
                self.stats["publish_errors"] += failed
                error = next(o for o in outcomes if isinstance(o, BaseException))
                logger.warning(
                    "could not publish %d event(s) to %r (%s)",
                    failed,
                    self.events_topic,
                    _describe(error),
                )

    # -- consuming -------------------------------------------------------------------

    @property
    def assignment(self) -> frozenset[tuple[str, int]]:
        """The ``(topic, partition)`` pairs this consumer holds now."""
        return self._assignment

    @property
    def paused(self) -> bool:
        """True while consumption is paused because the engine has ``max_pending``
        pending or running tasks."""
        return self._paused

    def stop_consuming(self) -> None:
        """Ask :meth:`consume_tasks` to finish: it lets the batches in hand be stored,
        commits their offsets, leaves the consumer group and returns."""
        self._consume_stop.set()

    async def consume_tasks(self, engine: ECSWorkflowEngine) -> None:
        """Consume the tasks topic until :meth:`stop_consuming`, storing each polled
        batch of messages with one ``engine.submit_tasks`` call.

        Run it in the background: ``asyncio.create_task(kafka.consume_tasks(engine))``.
        Each message becomes a task whose id is the message's ``"id"`` or, without
        one, ``<topic>-<partition>-<offset>``; ``task.context["kafka"]`` records
        topic, partition and offset. An offset is committed only once its task
        is durably stored (or the message was dead-lettered); a redelivered
        message finds its task already stored and creates nothing.
        """
        await self.attach(engine)
        if self._consuming is not None and not self._consuming.done():
            raise RuntimeError("this KafkaMQInterface is already consuming")
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._consuming = done
        thread = threading.Thread(
            target=self._consume_thread,
            args=(loop, engine, done),
            name="wfe-kafka-consumer",
            daemon=True,
        )
        thread.start()
        try:
            await asyncio.shield(done)
        except asyncio.CancelledError:
            self._consume_stop.set()
            await asyncio.gather(done, return_exceptions=True)
            raise
        finally:
            if done.done():
                # Stopped: a later consume_tasks() starts afresh.
                self._consume_stop.clear()

    def _consume_thread(
        self,
        loop: asyncio.AbstractEventLoop,
        engine: ECSWorkflowEngine,
        done: asyncio.Future[None],
    ) -> None:
        outcome: BaseException | None = None
        delay = 1.0
        try:
            while not self._consume_stop.is_set():
                try:
                    self._consume(loop, engine)
                except _Rejoin as exc:
                    logger.warning("the Kafka consumer has %s", exc)
                    continue
                except _SettingsRefused as exc:
                    logger.error("%s; the consumer stops", exc)
                    outcome = exc
                    break
                except Exception:
                    if self._consume_stop.is_set():
                        raise
                    # A fresh consumer rejoins the group and starts again from the
                    # committed offsets; redelivered messages find their tasks.
                    logger.exception("the Kafka consumer failed; restarting it in %.0f s", delay)
                    self._consume_stop.wait(delay)
                    delay = min(30.0, delay * 2)
        except BaseException as exc:
            logger.exception("the Kafka consumer stopped with an error")
            outcome = exc
        finally:
            self._assignment = frozenset()
            self._paused = False

        def finish() -> None:
            if done.done():
                return
            if outcome is None:
                done.set_result(None)
            else:
                done.set_exception(outcome)

        try:
            loop.call_soon_threadsafe(finish)
        except RuntimeError:
            pass

    def _open_consumer(self) -> Any:
        from kafka import KafkaConsumer
        from kafka.errors import KafkaConfigurationError

        delay = 0.5
        while not self._consume_stop.is_set():
            try:
                return _new_client(KafkaConsumer, self.consumer_settings())
            except (TypeError, ValueError, AssertionError, KafkaConfigurationError) as exc:
                # kafka-python refusing a setting: retrying cannot help.
                raise _SettingsRefused(
                    f"Kafka settings cannot be used: kafka-python refused them ({_describe(exc)})"
                ) from None
            except Exception as exc:
                logger.warning(
                    "cannot reach Kafka at %s (%s); trying again in %.1f s",
                    ",".join(self.bootstrap_servers),
                    _describe(exc),
                    delay,
                )
                self._consume_stop.wait(delay)
                delay = min(10.0, delay * 2)
        return None

    def _consume(self, loop: asyncio.AbstractEventLoop, engine: ECSWorkflowEngine) -> None:
        consumer = self._open_consumer()
        if consumer is None:
            return
        batches = _Batches()
        try:
            consumer.subscribe(
                [self.tasks_topic], listener=_rebalance_listener(self, consumer, batches)
            )
        except BaseException:
            consumer.close(autocommit=False)
            raise
        try:
            # Fetch metadata once subscribed, before the first poll joins the group:
            # kafka-python records the topic's partitions only from a metadata update
            # that comes after subscribe(), and a first assignment made without them
            # is redone at the next update, a needless rebalance.
            consumer.topics()
        except Exception as exc:
            logger.warning("no metadata yet for topic %r: %s", self.tasks_topic, exc)
        session = self.consumer_settings().get("session_timeout_ms", 10_000) / 1000
        # Longer than a rebalance waiting out a dead member's session, short
        # enough that a rebalance kafka-python never completes (seen with 3.0.x:
        # a leader whose SyncGroup answer never arrives) stalls briefly.
        stuck_after = max(15.0, 1.5 * session)
        last_stable = time.monotonic()
        next_resync = 0.0
        try:
            while not self._consume_stop.is_set():
                if _group_state(consumer) == _STABLE:
                    last_stable = time.monotonic()
                elif time.monotonic() - last_stable > stuck_after:
                    # A member that cannot complete a rebalance holds no partitions;
                    # a fresh consumer joins the group anew.
                    raise _Rejoin(
                        f"no stable group membership for {stuck_after:.0f} s; reconnecting"
                    )
                self._commit(consumer, batches.take_handled())
                if batches.failed is not None:
                    raise RuntimeError("handling a batch of task messages failed") from (
                        batches.failed
                    )
                assigned = consumer.assignment()
                self._assignment = frozenset((tp.topic, tp.partition) for tp in assigned)
                full = len(batches) >= _MAX_BATCHES_IN_HAND
                busy = self._outstanding >= self.max_pending
                if full or busy:
                    # Paused partitions fetch nothing, but poll() still runs the
                    # group protocol: a rebalance never waits for this worker.
                    if assigned:
                        consumer.pause(*assigned)
                    self._paused = busy and bool(assigned)
                    if full:
                        batches.wait_oldest(0.1)
                    if busy and time.monotonic() >= next_resync:
                        next_resync = time.monotonic() + 1.0
                        asyncio.run_coroutine_threadsafe(
                            self._resync(engine), loop
                        ).add_done_callback(_log_failure)
                elif consumer.paused():
                    consumer.resume(*consumer.paused())
                    self._paused = False
                records = consumer.poll(
                    timeout_ms=0 if full else 200, max_records=self.max_poll_records
                )
                if not records:
                    continue
                batch = [r for rs in records.values() for r in rs]
                self.stats["received"] += len(batch)
                offsets = {tp: rs[-1].offset + 1 for tp, rs in records.items() if rs}
                future = asyncio.run_coroutine_threadsafe(self._handle_batch(engine, batch), loop)
                batches.add(future, offsets)
        finally:
            batches.wait_all(self.close_timeout)
            try:
                self._commit(consumer, batches.take_handled(), sync=True)
            except Exception:
                logger.exception("committing offsets on stop failed")
            try:
                consumer.close(autocommit=False)
            except Exception:
                logger.exception("closing the Kafka consumer failed")

    def _commit(self, consumer: Any, offsets: dict[Any, int], sync: bool = False) -> None:
        """Commit handled offsets of the partitions this consumer still holds."""
        if not offsets:
            return
        from kafka.structs import OffsetAndMetadata

        held = consumer.assignment()
        commit = {
            tp: OffsetAndMetadata(offset, "", -1) for tp, offset in offsets.items() if tp in held
        }
        if not commit:
            return
        if sync:
            consumer.commit(commit)
        else:
            consumer.commit_async(commit, callback=_log_commit_error)

    async def _resync(self, engine: ECSWorkflowEngine) -> None:
        """Recount the engine's work at hand (for backpressure): running tasks and
        pending ones that are due, of its own workflows when it runs only some (the
        others' tasks, or tasks delayed until tomorrow, would keep it from taking
        messages)."""
        store = await engine.get_store()
        self._outstanding = await store.count_due(workflows=engine.only_workflows)

    async def _handle_batch(self, engine: ECSWorkflowEngine, records: list[Any]) -> None:
        """Store the batch's tasks in one write, then dead-letter its bad messages
        in their original order."""
        problems: list[BaseException | None] = [None] * len(records)
        requests: list[dict[str, Any]] = []
        positions: list[int] = []
        for index, record in enumerate(records):
            try:
                requests.append(_submit_request(record))
            except Exception as exc:
                # Reading a message depends on its bytes alone: whatever fails here
                # would fail on every redelivery, so the message is dead-lettered
                # instead of stalling its partition.
                problems[index] = exc
            else:
                positions.append(index)
        if requests:
            # Ids make a retry idempotent: a batch stored in part is stored once.
            outcomes = await self._retrying(
                "storing",
                records[positions[0]],
                lambda: engine.submit_tasks(requests, return_exceptions=True),
            )
            for index, request, outcome in zip(positions, requests, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    problems[index] = outcome
                else:
                    problems[index] = _id_taken(request, outcome)
        letters = [(r, p) for r, p in zip(records, problems, strict=True) if p is not None]
        if letters:
            await self._retrying(
                "dead-lettering", letters[0][0], lambda: self._dead_letter(letters)
            )
        self.stats["consumed"] += len(records)

    async def _retrying(self, doing: str, record: Any, attempt: Callable[[], Awaitable[T]]) -> T:
        """``await attempt()`` until it succeeds, backing off in between.

        A failure here means the store or Kafka is in trouble, not the messages, so
        they are kept (their offsets stay uncommitted). Raises the error instead
        once consumption is stopping.
        """
        delay = 0.1
        while True:
            try:
                return await attempt()
            except Exception as exc:
                if self._consume_stop.is_set():
                    raise
                logger.warning(
                    "%s task message %s/%d@%d failed (%s: %s); retrying",
                    doing,
                    record.topic,
                    record.partition,
                    record.offset,
                    type(exc).__name__,
                    exc,
                )
                await asyncio.sleep(delay)
                delay = min(5.0, delay * 2)

    async def _dead_letter(self, letters: list[tuple[Any, BaseException]]) -> None:
        for record, error in letters:
            logger.warning(
                "task message %s/%d@%d dead-lettered: %s",
                record.topic,
                record.partition,
                record.offset,
                error,
            )
        if self.dead_letter_topic:
            records = [
                (
                    self.dead_letter_topic,
                    record.key,
                    record.value,
                    dead_letter_headers(
                        error,
                        record.topic,
                        record.partition,
                        record.offset,
                        list(record.headers or []),
                    ),
                )
                for record, error in letters
            ]
            outcomes = await self._get_producer().send_many(records)
            outcomes = await self._smaller_if_too_large(outcomes, records, _letter_without_value)
            failed = [o for o in outcomes if isinstance(o, BaseException)]
            if failed:
                raise failed[0]
        self.stats["dead_lettered"] += len(letters)


def _submit_request(record: Any) -> dict[str, Any]:
    """The ``submit_tasks`` request for one task message (raises BadMessage)."""
    message = parse_task_message(record.value)
    return {
        "data": message["data"],
        "workflow_name": message["workflow_name"],
        "classification": message["classification"],
        "assigned_to": message["assigned_to"] or "ai",
        "task_id": message["id"] or source_id(record.topic, record.partition, record.offset),
        "run_after": message["run_after"],
        "context": {
            "kafka": {"topic": record.topic, "partition": record.partition, "offset": record.offset}
        },
    }


class IdInUse(BadMessage):
    """A message naming the id of a stored task that came from another message."""


def _id_taken(request: Mapping[str, Any], stored: Task) -> IdInUse | None:
    """Why the task stored under the request's id is not this message's, or None.

    Submission is idempotent by id, so a message whose id is taken gets the stored
    task back. That is right for the same task: the same message delivered again,
    or sent twice (same workflow and data). Any other message would vanish without
    a trace: one reusing another task's id, or one without an id at an offset an
    earlier incarnation of the tasks topic had used.
    """
    if request["workflow_name"] in (None, stored.workflow_name) and stored.data == request["data"]:
        return None  # (a define_workflow message names its workflow in its data)
    source = stored.context.get("kafka") if isinstance(stored.context, dict) else None
    where = (
        f"from {source['topic']}/{source['partition']}@{source['offset']}"
        if isinstance(source, dict) and {"topic", "partition", "offset"} <= source.keys()
        else "not from Kafka"
    )
    return IdInUse(
        f"id {stored.id!r} already used by another task (workflow {stored.workflow_name!r}, "
        f"{where}); send this message with an id of its own"
    )


def _event_without_bulk(record: Record) -> Record:
    """An event too large for its topic, without its output (the store keeps it)."""
    topic, key, value, headers = record
    logger.warning(
        "an event of task %s (%d bytes) is too large for %r; publishing it without its output",
        (key or b"").decode("utf-8", "replace"),
        len(value or b""),
        topic,
    )
    return topic, key, event_without_bulk(value or b"{}"), headers


def _letter_without_value(record: Record) -> Record:
    """A dead letter too large for its topic, without its value (which stays in the
    tasks topic at the offset its headers name)."""
    topic, key, value, headers = record
    logger.warning(
        "a dead letter of %d bytes is too large for %r; sending it without its value",
        len(value or b""),
        topic,
    )
    omitted = ("wfe.value.omitted", str(len(value or b"")).encode("ascii"))
    return topic, key, None, [*(headers or []), omitted]


def _too_large(outcome: Any) -> bool:
    """Whether a send failed because Kafka never takes a record that large."""
    from kafka.errors import MessageSizeTooLargeError, RecordListTooLargeError

    return isinstance(outcome, (MessageSizeTooLargeError, RecordListTooLargeError))


def _broken(producer: Any) -> bool:
    """Whether a KafkaProducer is in kafka-python's fatal state (every send fails)."""
    transactions = getattr(producer, "_transaction_manager", None)
    has_fatal_error = getattr(transactions, "has_fatal_error", None)
    return bool(has_fatal_error is not None and has_fatal_error())


def _describe(exc: BaseException) -> str:
    """``Type: message``, once (kafka-python's errors already start with their type)."""
    text = str(exc)
    name = type(exc).__name__
    return text if text.startswith(name) else f"{name}: {text}"


def _new_client(cls: Any, settings: dict[str, Any]) -> Any:
    """``cls(**settings)``, a KafkaConsumer or KafkaProducer. When it fails (Kafka
    unreachable), the network client it had started is closed: kafka-python 3.0.x
    leaves its IO thread and sockets behind, one more at every retry."""
    base = settings.get("kafka_client") or cls.DEFAULT_CONFIG.get("kafka_client")
    if base is None:
        return cls(**settings)
    made: list[Any] = []

    def kafka_client(**kwargs: Any) -> Any:
        client = base(**kwargs)
        made.append(client)
        return client

    try:
        return cls(**{**settings, "kafka_client": kafka_client})
    except BaseException:
        for client in made:
            try:
                client.close()
            except Exception:
                logger.debug("closing a Kafka client that failed to start", exc_info=True)
        raise


_STABLE = "<stable>"  # kafka.structs.MemberState.STABLE


def _group_state(consumer: Any) -> str:
    try:
        return str(consumer.group_metadata().state)
    except Exception:
        return _STABLE  # no way to tell: never restart on account of it


class _SettingsRefused(Exception):
    """kafka-python refused a setting when making a client: no retry can help."""


class _Rejoin(Exception):
    """The consumer is stuck outside its group; it is replaced by a fresh one."""


class _PublishFailed(Exception):
    """Some results could not be published; they stay in the outbox."""


def _log_failure(future: concurrent.futures.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.warning("recounting pending tasks failed: %s", future.exception())


def _log_commit_error(offsets: Any, response: Any) -> None:
    if isinstance(response, BaseException):
        logger.warning("committing offsets failed (%s); a later commit covers them", response)


def _rebalance_listener(iface: KafkaMQInterface, consumer: Any, batches: _Batches) -> Any:
    """A listener that, before partitions move to another worker, lets the batches
    in hand be stored and commits them, so the new owner does not see them again."""
    from kafka import ConsumerRebalanceListener
    from kafka.structs import OffsetAndMetadata

    session = iface.consumer_settings().get("session_timeout_ms", 10_000)
    wait = max(0.5, min(5.0, session / 2000))

    class Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # kafka-python is untyped
        def on_partitions_revoked(self, revoked: Any) -> None:
            if not revoked:
                return
            # This runs on kafka-python's IO thread, which also heartbeats: wait
            # well within the session timeout, and never block on a commit.
            batches.wait_all(wait)
            offsets = batches.take_handled()
            if not offsets:
                return
            commit = {tp: OffsetAndMetadata(offset, "", -1) for tp, offset in offsets.items()}
            try:
                consumer.commit_async(commit, callback=_log_commit_error)
            except Exception as exc:
                logger.warning("committing offsets before a rebalance failed: %s", exc)

        def on_partitions_assigned(self, assigned: Any) -> None:
            iface._assignment = frozenset((tp.topic, tp.partition) for tp in assigned)

        def on_partitions_lost(self, lost: Any) -> None:
            # The group moved on without us: a commit would be rejected, and the
            # new owners redeliver what we did not commit.
            batches.take_handled()

    return Rebalance()

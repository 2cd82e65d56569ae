"""KafkaMQInterface: tasks in from a Kafka topic, results and lifecycle events out.

kafka-python is a blocking client, so each client lives on its own thread: the
producer on a sender thread, the consumer on a polling thread. The event loop
only hands them work and awaits the outcome.

This module is the interface as its users see it: its arguments, each client's
settings, publishing, attaching to an engine, consuming and closing. The work is
done by its parts: :mod:`wfe_kafka.consumer` (task messages in: backpressure,
rebalances, dead letters), :mod:`wfe_kafka.results` (finished tasks out through
the store's outbox, lifecycle events), :mod:`wfe_kafka.hooks` (the engine hooks
an attached interface registers), :mod:`wfe_kafka.clients` (the blocking clients
on their threads) and :mod:`wfe_kafka.validation` (checks of the arguments and
kafka-python settings).
"""

from __future__ import annotations

import asyncio
import difflib
import logging
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from wfcore import ECSWorkflowEngine, InvalidTaskError, Store, Task, TaskType
from wfcore.wire import check_task_id

from .clients import Record as Record
from .clients import _client_config, _Producer, _quiet_connection_errors, _smaller_if_too_large
from .consumer import _SettingsRefused, _TaskConsumer
from .hooks import _EventHooks, _Hooks
from .messages import TASK_FIELDS, BadMessage, parse_task_message, result_message, task_message
from .messages import IdInUse as IdInUse
from .results import ResultKey as ResultKey
from .results import _ResultsPublisher
from .validation import _check_arguments, _check_consumer

__all__ = ["KafkaMQInterface"]

logger = logging.getLogger("wfe_kafka")

# Engine -> the interface attached to it (auto-wiring leaves such engines alone).
ATTACHED: weakref.WeakKeyDictionary[ECSWorkflowEngine, KafkaMQInterface] = (
    weakref.WeakKeyDictionary()
)


class KafkaMQInterface(_ResultsPublisher, _TaskConsumer):
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
    :param max_poll_records: messages handed to the engine per batch (at most; fewer
        when only fewer fit under ``max_pending``).
    :param outbox_grace: seconds a finished task may sit unpublished in the
        store's outbox before the background sweep publishes it (the worker that
        finished it normally does so at once).
    :param allow_volatile_store: consume into an engine whose store does not outlive
        the process (``memory://``). Refused by default: an offset is committed once
        its task is stored, and such a store loses the task when the process ends.
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
        allow_volatile_store: bool = False,
        outbox_consumer: str | None = None,
        producer_config: Mapping[str, Any] | None = None,
        consumer_config: Mapping[str, Any] | None = None,
        close_timeout: float = 5.0,
        **client_config: Any,
    ) -> None:
        self.bootstrap_servers = _check_arguments(
            bootstrap_servers=bootstrap_servers,
            tasks_topic=tasks_topic,
            results_topic=results_topic,
            group_id=group_id,
            dead_letter_topic=dead_letter_topic,
            events_topic=events_topic,
            max_pending=max_pending,
            max_poll_records=max_poll_records,
            outbox_grace=outbox_grace,
            close_timeout=close_timeout,
            allow_volatile_store=allow_volatile_store,
            outbox_consumer=outbox_consumer,
            producer_config=producer_config,
            consumer_config=consumer_config,
            client_config=client_config,
        )
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
        self.allow_volatile_store = allow_volatile_store
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
        #: events_published, publish_errors (sends that failed), events_dropped
        #: (the oldest queued events, past 50,000 while Kafka does not take them).
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "received",
                "consumed",
                "submitted",
                "dead_lettered",
                "results_published",
                "events_published",
                "publish_errors",
                "events_dropped",
            ),
            0,
        )
        # A producer for each stream (results, events, dead letters, and the tasks
        # publish_task sends), each made at its stream's first record: kafka-python
        # fails every record in flight on a producer when Kafka refuses one as too
        # large, and an event or a letter too large must not have a result that fits
        # its topic published without its bulk, nor the reverse.
        self._producers: dict[str, _Producer] = {}
        self._engine: ECSWorkflowEngine | None = None
        self._hooks: list[Any] = []
        self._consumer_task: asyncio.Task[None] | None = None
        self._init_results()
        self._init_consumer()
        # The store consumed into, when it does not outlive the process (allowed).
        self._volatile: Store | None = None
        _check_consumer(
            self.consumer_settings(),
            {**self._client_config, **self._consumer_config},
            self._consumer_defaults(),
        )

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

        config = _client_config(
            KafkaConsumer.DEFAULT_CONFIG,
            self._consumer_defaults(),
            self._client_config,
            self._consumer_config,
        )
        config["enable_auto_commit"] = False  # offsets follow the store, never a timer
        return config

    def _consumer_defaults(self) -> dict[str, Any]:
        """wfe_kafka's own defaults for the consumer (over kafka-python's)."""
        return {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": "wfe-kafka-consumer",
            "group_id": self.group_id,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "max_poll_records": self.max_poll_records,
            "session_timeout_ms": 10_000,
            "heartbeat_interval_ms": 2_000,
            # Partitions added to the tasks topic are given out at the consumer's
            # next metadata refresh: every 30 s, not kafka-python's 5 minutes (one
            # small request, for the subscribed topic).
            "metadata_max_age_ms": 30_000,
            # One connection attempt holds up stop_consuming() while Kafka is down
            # (kafka-python's default is 30 s); failed attempts are retried.
            "bootstrap_timeout_ms": 5_000,
            "metrics_enabled": False,
        }

    def _producer_for(self, stream: str) -> _Producer:
        """The producer of ``stream``; a new one after the last was closed."""
        producer = self._producers.get(stream)
        if producer is None or producer.closed:
            producer = self._producers[stream] = _Producer(self.producer_settings())
        return producer

    def _get_producer(self) -> _Producer:
        """The results' producer."""
        return self._producer_for("results")

    def _get_events_producer(self) -> _Producer:
        return self._producer_for("events")

    def _get_dead_letter_producer(self) -> _Producer:
        return self._producer_for("dead letters")

    def _get_tasks_producer(self) -> _Producer:
        return self._producer_for("tasks")

    # -- publishing ------------------------------------------------------------------

    async def publish_task(self, task: Task | Mapping[str, Any]) -> Any:
        """Send a task to the tasks topic (key = task id) and wait until Kafka has it.

        ``task`` is a :class:`~wfcore.Task` (e.g. one returned by ``submit_task``)
        or a dict with the task message fields. Returns kafka-python's
        ``RecordMetadata`` (topic, partition, offset).

        The message is read back as a worker reads it before it is sent: one a
        worker would dead-letter (no ``workflow_name``, an id that is not a string
        or that ``submit_tasks`` refuses, an unknown ``assigned_to``, a ``run_after``
        that is not an ISO 8601 time with an offset, a ``priority`` that is not an
        integer from -1000 to 1000...) raises
        ValueError naming the problem, as does a field task messages do not have
        (a misspelt ``classifcation``, say: it would be dropped here, and a worker
        ignores such a field in another producer's message, only naming it in its
        log), and a ``format`` other than the one this version writes
        (:data:`wfcore.wire.FORMAT_VERSION`): the message would say a format it is
        not written in. A ``task`` that is neither a Task nor a mapping raises
        TypeError.
        A field that is None is sent as null, which a worker reads as absent.
        Whether the workflow exists is for the worker to say.
        """
        if isinstance(task, Task):
            task_id: Any = task.id
        elif isinstance(task, Mapping):
            _check_fields(task)
            task_id = task.get("id")
        else:
            raise TypeError(
                "publish_task takes a Task or a mapping of task message fields, "
                f"not {type(task).__name__}"
            )
        value = task_message(task)
        try:
            _check_submittable(parse_task_message(value))
        except (BadMessage, InvalidTaskError) as exc:
            raise ValueError(f"not a task message a worker can take: {exc}") from None
        key = task_id.encode("utf-8") if isinstance(task_id, str) else None
        [outcome] = await self._get_tasks_producer().send_many(
            [(self.tasks_topic, key, value, None)]
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
        again. Unattached, it sends and waits for the acknowledgement; a result too
        large for the topic goes as the outbox publisher sends it (with the end of
        its history, else without its bulk).
        """
        if self._publisher is not None and not self._publisher.done():
            self._queue_result(task)
            return
        records = [(self.results_topic, task.id.encode("utf-8"), result_message(task), None)]
        [outcome] = await _smaller_if_too_large(
            self._get_producer,
            await self._refused.send(self._get_producer().send_many, records),
            records,
            self._result_with_recent_history,
            self._result_without_bulk,
            refused=self._refused,
        )
        if isinstance(outcome, BaseException):
            self.stats["publish_errors"] += 1
            raise outcome
        self.stats["results_published"] += 1

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
        # The last sends may wait for a topic that does not exist or a broker that
        # is away, and kafka-python logs each retry: as few of those lines as while
        # the consumer runs.
        with _quiet_connection_errors():
            await self._close()

    async def _close(self) -> None:
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
        await self._warn_volatile_loss()
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
        for producer in list(self._producers.values()):
            left = max(0.0, deadline - time.monotonic())
            flushed = await producer.close(left) and flushed
        if timed_out or not flushed or (unpublished and self._trouble_since is not None):
            # One line, not a traceback: Kafka being away at shutdown loses nothing.
            logger.warning(
                "Kafka did not take everything within %.0f s: %s stay in the outbox; "
                "they are published at the next start%s",
                self.close_timeout,
                "unpublished results" if unpublished is None else f"{unpublished} result(s)",
                f" ({unsent_events} lifecycle event(s) are dropped)" if unsent_events else "",
            )
        # A new event, not the old one cleared: a polling thread left behind (see
        # _bound_stop) must still see its own set when it wakes.
        self._consume_stop = threading.Event()

    async def _warn_volatile_loss(self) -> None:
        """Say how many tasks go with a store that does not outlive the process."""
        store, self._volatile = self._volatile, None
        if store is None:
            return
        try:
            counts = await store.count_tasks()
        except Exception:
            return
        unfinished = sum(n for status, n in counts.items() if not status.is_finished)
        if unfinished:
            logger.warning(
                "%d unfinished task(s) are lost with the store %s, which does not outlive "
                "this process; the offsets of their messages were committed",
                unfinished,
                store.url,
            )

    async def __aenter__(self) -> KafkaMQInterface:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

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
        commits their offsets, leaves the consumer group and returns.

        Whatever Kafka's state, it returns within about ``close_timeout`` seconds
        (each step waits for Kafka that long at most), and ``close_timeout`` + 5 s at
        the very most: a consumer thread still waiting inside kafka-python then is
        left behind, with a warning, and the messages whose offsets it had not
        committed are delivered again (they find their tasks stored).

        It stops the consume_tasks() under way (or the one :meth:`start` began);
        with none, it does nothing, and a later consume_tasks() consumes.
        """
        starting = self._consumer_task is not None and not self._consumer_task.done()
        if self._consume_calls or starting:
            self._consume_stop.set()
            self._bound_stop()

    async def consume_tasks(self, engine: ECSWorkflowEngine) -> None:
        """Consume the tasks topic until :meth:`stop_consuming`, storing each polled
        batch of messages with one ``engine.submit_tasks`` call.

        Run it in the background: ``asyncio.create_task(kafka.consume_tasks(engine))``.
        Each message becomes a task whose id is the message's ``"id"`` or, without
        one, ``<topic>-<partition>-<offset>``; ``task.context["kafka"]`` records
        topic, partition and offset. An offset is committed only once its task
        is durably stored (or the message was dead-lettered); a redelivered
        message finds its task already stored and creates nothing.

        Refused (RuntimeError) for an engine whose store does not outlive the
        process (``memory://``) unless the interface was made with
        ``allow_volatile_store=True``: the offsets of tasks lost with it are committed.
        """
        self._consume_calls += 1
        try:
            await self._consume_tasks(engine)
        finally:
            self._consume_calls -= 1

    async def _consume_tasks(self, engine: ECSWorkflowEngine) -> None:
        store = await engine.get_store()
        if not store.durable:
            if not self.allow_volatile_store:
                # Logged too: run in the background, as it is, the error would only
                # show when its task is awaited, while nothing is consumed.
                logger.error(
                    "not consuming %s: %s", self.tasks_topic, volatile_store_problem(store.url)
                )
                raise RuntimeError(volatile_store_problem(store.url))
            if self._volatile is None:
                logger.warning(
                    "consuming %s into the store %s, which does not outlive this process: "
                    "tasks it holds when the process ends are lost, and their messages "
                    "are not delivered again (allow_volatile_store)",
                    self.tasks_topic,
                    store.url,
                )
            self._volatile = store
        await self.attach(engine)
        if self._consuming is not None and not self._consuming.done():
            raise RuntimeError("this KafkaMQInterface is already consuming")
        if self._consume_stop.is_set():
            # stop_consuming() came while this call started: nothing to consume.
            self._consume_stop = threading.Event()
            return
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._consuming = done
        # A lock belongs to the loop it first waited in: one for this loop.
        self._dead_letters_lock = asyncio.Lock()
        stop = self._consume_stop
        thread = threading.Thread(
            target=self._consume_thread,
            args=(loop, engine, done, stop),
            name="wfe-kafka-consumer",
            daemon=True,
        )
        thread.start()
        try:
            await asyncio.shield(done)
        except asyncio.CancelledError:
            stop.set()
            self._bound_stop()
            await asyncio.gather(done, return_exceptions=True)
            raise
        finally:
            if done.done() and self._consume_stop is stop:
                # Stopped: a later consume_tasks() starts afresh, with an event of
                # its own (a thread left behind keeps seeing its own set).
                self._consume_stop = threading.Event()


def volatile_store_problem(url: str) -> str:
    """Why consuming into the store at ``url`` (which does not outlive the process)
    is refused, and what to do."""
    return (
        f"the store {url} does not outlive this process, and a message's offset is "
        "committed once its task is stored: tasks it holds when the process ends would "
        "be lost for good; use a store that persists (sqlite:///path/worker.db), or "
        "allow_volatile_store=True to accept that (tests, demos)"
    )


def _check_submittable(message: Mapping[str, Any]) -> None:
    """Raise the InvalidTaskError a worker's ``submit_tasks`` would raise for a parsed
    task message whatever its workflows: for the id's shape (a '/', control
    characters, too long...) and an unknown ``assigned_to``."""
    if message["id"] is not None:
        check_task_id(message["id"])
    if message["assigned_to"] is not None:
        TaskType.parse(message["assigned_to"])


def _check_fields(fields: Mapping[str, Any]) -> None:
    """Refuse a field task messages do not have: task_message() would drop it, and
    the worker would not read it (a misspelling would go unnoticed)."""
    for name in fields:
        if name not in TASK_FIELDS:
            close = difflib.get_close_matches(str(name), TASK_FIELDS, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ValueError(
                f"{name!r} is not a task message field{hint}; the fields are "
                + ", ".join(TASK_FIELDS)
            )

"""kafka-python's blocking clients, kept off the event loop.

The producer lives on its own sender thread (:class:`_Producer`); the event loop
hands it records and awaits their acknowledgements. Both clients are made by
:func:`_new_client` from settings merged by :func:`_client_config`. The send
helpers here know kafka-python's ways with records too large for their topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any

logger = logging.getLogger("wfe_kafka")

#: A record to send: topic, key, value, headers.
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


def _outcome_of(sent: Any) -> Any:
    """A record's outcome: its RecordMetadata, or the exception of its send (raised
    by ``send()``, or its future's failure)."""
    if isinstance(sent, BaseException):
        return sent
    return sent.value if sent.exception is None else sent.exception


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
        # Holds kafka-python's missing-topic errors to one line per topic from the
        # producer's first send until its thread has closed it, which may be after
        # close() returned (a send still waiting for a topic): an app that only
        # publishes results, with no consumer, is spared ten lines a second too.
        self._quiet: contextlib.ExitStack | None = None

    @property
    def made(self) -> bool:
        """Whether its KafkaProducer exists: after a send, False means making it
        failed (Kafka unreachable, a setting refused), which is no record's fault."""
        return self._producer is not None

    def _ensure(self) -> Any:
        if self._producer is None:
            from kafka import KafkaProducer

            if self._quiet is None:
                self._quiet = contextlib.ExitStack()
                self._quiet.enter_context(_quiet_missing_topics())
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
        # Each record's kafka-python future, or the error its send() raised. One
        # callback for all: the outcomes are read from the futures once the last
        # one is done (a future is done before its callbacks run).
        sent: list[Any] = [None] * len(records)
        remaining = [len(records)]
        lock = threading.Lock()

        def finish(_outcome: Any = None) -> None:
            with lock:
                remaining[0] -= 1
                last = remaining[0] == 0
            if last:
                results = [_outcome_of(each) for each in sent]
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
                sent[i] = exc
                finish()
            return
        send = producer.send
        # kafka-python's send() waits up to max_block_ms for the metadata of a topic
        # it does not know (one Kafka does not have, or a broker away), for each
        # record: a batch of 1,000 results held this thread 1,000 times that long
        # (60 s by default) before any of them was reported. Once one send to a
        # topic timed out, the batch's other records to it fail with the same error
        # at once; so do the records not yet handed over when a close is asked for.
        timed_out: dict[str, BaseException] = {}
        for i, (topic, key, value, headers) in enumerate(records):
            early = timed_out.get(topic) or (RuntimeError(_CLOSING) if self.closed else None)
            if early is not None:
                sent[i] = early
                finish()
                continue
            try:
                future = send(topic, key=key, value=value, headers=headers)
            except Exception as exc:
                if _is_timeout(exc):
                    timed_out[topic] = exc
                sent[i] = exc
                finish()
                continue
            sent[i] = future
            future.add_callback(finish)
            future.add_errback(finish)

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
                if self._quiet is not None:
                    self._quiet.close()
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
            self._leave_behind()
            return False

    def _leave_behind(self) -> None:
        """Give up on a producer whose thread did not get to close it (stuck in a
        send waiting for a topic's metadata while Kafka hangs).

        kafka-python registers an exit handler for each producer that closes it
        with a 1 s flush: at the exit of a worker stopped during such an outage it
        waited that second more for records Kafka was not taking, then printed a
        KafkaTimeoutError traceback. What those records carry is not lost: results
        stay in the outbox, and unsent lifecycle events are dropped at any close.
        """
        producer = self._producer
        unregister = getattr(producer, "_unregister_cleanup", None)
        if callable(unregister):
            unregister()


#: Why a record a close came before was not sent.
_CLOSING = "the Kafka producer was closed before this record was sent"


def _is_timeout(error: BaseException) -> bool:
    """Whether a send failed waiting for Kafka (``KafkaTimeoutError``: no metadata
    for its topic, or no room in the buffer, within max_block_ms)."""
    from kafka.errors import KafkaTimeoutError

    return isinstance(error, KafkaTimeoutError)


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
    _closed_producers.add(producer)
    producer.flush = lambda timeout=None: None
    producer.close(timeout=0)
    # close(0) returns as soon as it has told the I/O thread to stop, and that
    # thread's last round may still log (a missing topic's metadata, ten times a
    # second): once it has ended, the log filters wfe_kafka holds for it can go.
    sender = getattr(producer, "_sender", None)
    if sender is not None:
        sender.join(_SENDER_STOP_WAIT)
    return flushed


#: Seconds a closed producer's I/O thread is given to end (it is woken at once).
_SENDER_STOP_WAIT = 2.0


#: kafka-python's message (kafka.producer.sender) for a produce request that failed.
_PRODUCE_FAILED = "%s: Error sending produce request to node %d: %s"


class _ClosedProducers(logging.Filter):
    """Keeps out of the log kafka-python's ERROR for the produce requests that the
    close of one of wfe_kafka's producers cancels (``Error sending produce request
    to node 1: Cancelled``): in flight only when Kafka did not take them in time,
    which the interface says itself (``N result(s) stay in the outbox``). Logged at
    DEBUG when kafka-python's logger is at DEBUG. The sender logs it from its own
    thread after ``close()`` returned, so the filter stays on its logger, for the
    senders of the producers closed so far (named by their client id).
    """

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._senders: set[str] = set()
        self._installed = False

    def add(self, producer: Any) -> None:
        sender = getattr(producer, "_sender", None)
        if sender is None:
            return
        with self._lock:
            self._senders.add(str(sender))
            if not self._installed:
                logging.getLogger("kafka.producer.sender").addFilter(self)
                self._installed = True

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        if record.msg != _PRODUCE_FAILED or len(args) != 3 or args[0] not in self._senders:
            return True
        from kafka.errors import Cancelled

        if not isinstance(args[2], Cancelled):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).getEffectiveLevel() <= logging.DEBUG


_closed_producers = _ClosedProducers()


def _broken(producer: Any) -> bool:
    """Whether a KafkaProducer is in kafka-python's fatal state (every send fails)."""
    transactions = getattr(producer, "_transaction_manager", None)
    has_fatal_error = getattr(transactions, "has_fatal_error", None)
    return bool(has_fatal_error is not None and has_fatal_error())


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


class _BootstrapErrors(logging.Filter):
    """Keeps the errors of kafka-python's failed bootstrap connections, from its log
    (it keeps them nowhere else): its own error then only says "Unable to bootstrap".

    Records below ``shown`` (the level the logger had: say, an app that keeps
    kafka-python's warnings out of its log) are kept here and not emitted.
    """

    def __init__(self, shown: int) -> None:
        super().__init__()
        self.shown = shown
        self.seen: list[BaseException] = []

    def filter(self, record: logging.LogRecord) -> bool:
        # kafka.net.manager: 'Bootstrap connection to %s failed: %s (backoff %.2f secs)'
        if str(record.msg).startswith("Bootstrap connection to") and isinstance(record.args, tuple):
            for arg in record.args:
                if isinstance(arg, BaseException):
                    self.seen.append(arg)
                    del self.seen[:-1]
        return record.levelno >= self.shown


# Consumers of several interfaces may bootstrap at once, each on its thread: the
# first to watch lowers the logger's level, the last one sets it back.
_watch_lock = threading.Lock()
# One entry per watcher: the logger's own and effective levels before the first.
_watching: list[tuple[int, int]] = []


@contextlib.contextmanager
def _last_bootstrap_error() -> Iterator[list[BaseException]]:
    """While in the block, collect the connection errors kafka-python logs as it
    bootstraps (a refused connection, a failed SASL handshake, an SSL error); the
    list yielded holds the last one once the block is left."""
    manager = logging.getLogger("kafka.net.manager")
    with _watch_lock:
        _watching.append(
            _watching[0] if _watching else (manager.level, manager.getEffectiveLevel())
        )
        level, shown = _watching[0]
        watch = _BootstrapErrors(shown)
        # First: the _ConnectionErrors filter may leave the record out of the log.
        manager.filters.insert(0, watch)
        if shown > logging.WARNING:
            manager.setLevel(logging.WARNING)  # made, seen here, and dropped
    try:
        yield watch.seen
    finally:
        with _watch_lock:
            manager.removeFilter(watch)
            _watching.pop()
            if not _watching:
                manager.setLevel(level)


#: kafka-python's loggers that report connections failing. Each gets the filter of
#: its own (a logger's filters do not see the records of the loggers below it).
_CONNECTION_LOGGERS = (
    "kafka.net.manager",
    "kafka.net.connection",
    "kafka.net.transport",
    "kafka.net.inet",
    "kafka.cluster",
    "kafka.coordinator",
    "kafka.coordinator.heartbeat",
    "kafka.consumer.fetcher",
    "kafka.producer.kafka",
    "kafka.producer.sender",
    "kafka.net.selector",
)

#: kafka-python's messages (their format strings) that report a connection failing
#: without the error among their arguments.
_CONNECTION_MESSAGES = frozenset(
    {
        "%s: socket disconnected",
        "%s: Request timed out after %d ms. Closing connection.",
        "No node available for metadata refresh - backoff/retry",
        "Bootstrap %s not ready; waiting %.2f secs",
        "Marking the coordinator dead (node %s) for group %s: %s.",
        "Heartbeat session expired, marking coordinator dead",
        # A metadata answer of a broker shutting down, which lists no brokers.
        "No broker metadata found in MetadataResponse -- ignoring.",
    }
)

#: Part of kafka-python's warning (kafka.net.selector, formatted before it is logged)
#: that a step of its network loop was slow: "Task <...> ran for 1.523s (>0.100s
#: threshold). It is blocking the event loop -- likely a tight sync loop inside a
#: coroutine. Other pollers will time out." Its own clients do it while a broker
#: hangs (connections open, requests unanswered), several times in ten seconds, and
#: its advice points at a bug that is not there: it counts as a connection error.
_SLOW_STEP = "threshold). It is blocking the event loop"

#: The start of kafka-python's warning (kafka.net.inet, formatted before it is
#: logged) that a broker's host name does not resolve: "DNS lookup failed for
#: kafka1:9092, gaierror(-2, 'Name or service not known')". It comes at every
#: connection attempt, several a second, while the name is unknown (a mistyped
#: host, a broker's DNS record gone while it is replaced): a connection error.
_DNS_FAILED = "DNS lookup failed for "

#: Seconds between two of kafka-python's connection errors let into the log while
#: no outage is reported by wfe_kafka (while one is, none are).
_CONNECTION_ERRORS_EVERY = 300.0


class _ConnectionErrors(logging.Filter):
    """Keeps kafka-python's connection errors from flooding the log while a
    consumer runs, and the last of them for wfe_kafka's own line.

    kafka-python logs every failed connection, reconnection and request, several
    lines a second while a broker is away. While wfe_kafka reports an outage itself
    (``cannot reach Kafka at ...``, see :meth:`outage_began`), none of them are
    logged; otherwise one every ``_CONNECTION_ERRORS_EVERY`` seconds (a broker of
    several that cannot be reached still shows). Its other records (authentication
    and authorization failures, fatal group errors) pass as they are, and with
    kafka-python's loggers at DEBUG (``wfe worker --log-level debug``) everything does.
    """

    def __init__(self) -> None:
        super().__init__()
        self._kinds = _connection_error_types()
        self._lock = threading.Lock()
        self._outages = 0
        self._shown_at: float | None = None
        #: The last connection error kafka-python logged (None: none yet).
        self.last: BaseException | None = None
        #: Connection errors left out of the log.
        self.left_out = 0

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        errors = [arg for arg in args if isinstance(arg, self._kinds)]
        if record.exc_info and isinstance(record.exc_info[1], self._kinds):
            errors.append(record.exc_info[1])  # log.exception("... closing socket")
        if not errors and not (
            isinstance(record.msg, str)
            and (
                record.msg in _CONNECTION_MESSAGES
                or _SLOW_STEP in record.msg
                or record.msg.startswith(_DNS_FAILED)
            )
        ):
            return True
        if errors:
            self.last = errors[-1]
        if logging.getLogger(record.name).getEffectiveLevel() <= logging.DEBUG:
            return True
        now = time.monotonic()
        with self._lock:
            if self._outages or (
                self._shown_at is not None and now - self._shown_at < _CONNECTION_ERRORS_EVERY
            ):
                self.left_out += 1
                return False
            self._shown_at = now
        return True

    def outage_began(self) -> None:
        """wfe_kafka reports an outage: leave kafka-python's connection errors out."""
        with self._lock:
            self._outages += 1

    def outage_ended(self) -> None:
        with self._lock:
            self._outages = max(0, self._outages - 1)


def _connection_error_types() -> tuple[type[BaseException], ...]:
    """The errors of a connection to Kafka failing (refused, lost, timed out, no
    broker to ask), as opposed to Kafka refusing something."""
    from kafka.errors import (
        KafkaConnectionError,
        KafkaTimeoutError,
        NodeNotReadyError,
        RequestTimedOutError,
    )

    return (
        KafkaConnectionError,
        KafkaTimeoutError,
        NodeNotReadyError,
        RequestTimedOutError,
        OSError,
    )


def _is_connection_error(error: BaseException) -> bool:
    """Whether an error is one of :func:`_connection_error_types`."""
    return isinstance(error, _connection_error_types())


#: kafka-python's message (kafka.cluster) for a topic Kafka does not have.
_TOPIC_NOT_FOUND = "Topic %s not found in cluster metadata"


class _MissingTopicErrors(logging.Filter):
    """Keeps kafka-python's ``Topic ... not found in cluster metadata`` to one line
    per topic every ``_CONNECTION_ERRORS_EVERY`` seconds.

    kafka-python logs it as an ERROR at every metadata update while a client waits
    for a topic that does not exist, ten times a second for each (a producer
    sending results to a topic not made yet, on brokers that do not create topics
    on first use). The consumer says itself which configured topics are missing,
    naming their settings (see :meth:`~wfe_kafka.consumer._TaskConsumer._check_topics`).
    With kafka-python's loggers at DEBUG every one passes.
    """

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        # Topic -> when its last line was let through.
        self._shown: dict[str, float] = {}
        #: Lines left out of the log.
        self.left_out = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != _TOPIC_NOT_FOUND or not isinstance(record.args, tuple):
            return True
        if logging.getLogger(record.name).getEffectiveLevel() <= logging.DEBUG:
            return True
        topic = str(record.args[0]) if record.args else ""
        now = time.monotonic()
        with self._lock:
            shown = self._shown.get(topic)
            if shown is not None and now - shown < _CONNECTION_ERRORS_EVERY:
                self.left_out += 1
                return False
            self._shown[topic] = now
        return True


_connection_lock = threading.Lock()
# The filter on _CONNECTION_LOGGERS while consumers run, and how many do.
_connection_errors: list[_ConnectionErrors] = []
_connection_users = 0
# The filter on kafka.cluster while consumers or producers run, and how many do: one
# for the process, so that a topic said to be missing while consuming is not said
# again as the interface closes.
_missing_topic_errors = _MissingTopicErrors()
_missing_topic_users = 0


@contextlib.contextmanager
def _quiet_missing_topics() -> Iterator[None]:
    """While in the block, kafka-python's missing-topic errors go through the
    :class:`_MissingTopicErrors` filter (the first to enter installs it, the last
    to leave removes it)."""
    global _missing_topic_users
    with _connection_lock:
        if not _missing_topic_users:
            logging.getLogger("kafka.cluster").addFilter(_missing_topic_errors)
        _missing_topic_users += 1
    try:
        yield
    finally:
        with _connection_lock:
            _missing_topic_users -= 1
            if not _missing_topic_users:
                logging.getLogger("kafka.cluster").removeFilter(_missing_topic_errors)


@contextlib.contextmanager
def _quiet_connection_errors() -> Iterator[_ConnectionErrors]:
    """While in the block, kafka-python's connection errors go through one
    :class:`_ConnectionErrors` filter, and its missing-topic errors through the
    :class:`_MissingTopicErrors` one (shared by the consumers of the process: the
    first to enter installs them, the last to leave removes them)."""
    global _connection_users
    with _connection_lock:
        if not _connection_errors:
            _connection_errors.append(_ConnectionErrors())
            for name in _CONNECTION_LOGGERS:
                logging.getLogger(name).addFilter(_connection_errors[0])
        _connection_users += 1
        watch = _connection_errors[0]
    try:
        with _quiet_missing_topics():
            yield watch
    finally:
        with _connection_lock:
            _connection_users -= 1
            if not _connection_users:
                for name in _CONNECTION_LOGGERS:
                    logging.getLogger(name).removeFilter(watch)
                _connection_errors.clear()


#: kafka-python's message (kafka.cluster) for a metadata refresh that failed.
_REFRESH_FAILED = "Metadata refresh: failed %s"
#: kafka-python's message (kafka.cluster) for its refresh loop failing as it waits;
#: a close stops its network selector under it: "NetworkSelector closed!".
_REFRESH_LOOP_FAILED = "Metadata refresh loop error: %s"
_SELECTOR_CLOSED = "NetworkSelector closed"
#: kafka-python's message (kafka.coordinator) for a LeaveGroup that failed or timed out.
_LEAVE_FAILED = "LeaveGroup request failed: %s"
#: kafka-python's message (kafka.coordinator) for a request to the group coordinator
#: that failed: a heartbeat in flight as a close cancels it, say.
_COORDINATOR_REQUEST_FAILED = "Error sending %s to node %s [%s]"
#: kafka-python's warning (kafka.coordinator) for an offset commit the group refused
#: (the member was dropped from it: UnknownMemberIdError); it raises it too.
_COMMIT_FAILED = "OffsetCommit for group %s failed: %s"
#: kafka-python's messages (kafka.coordinator) for a LeaveGroup the coordinator
#: refused, for the group or one member: UnknownMemberIdError from a member whose
#: session had already ended is the leave done.
_GROUP_LEAVE_REFUSED = "LeaveGroup request for group %s failed with error: %s"
_MEMBER_LEAVE_REFUSED = "LeaveGroup request for member %s / group instance %s failed with error: %s"


class _ClosingConsumer(logging.Filter):
    """Keeps kafka-python's report of a close we asked for out of the log.

    Closing a KafkaConsumer closes its connections, failing the requests still in
    flight on them with ``kafka.errors.Cancelled``. Its fetcher says so at INFO,
    but a metadata refresh logs ``Metadata refresh: failed Cancelled`` at ERROR;
    one is often in flight, queued behind a fetch that waits for records (a broker
    answers a connection's requests in order). So does its coordinator, ``Error
    sending HeartbeatRequest to node coordinator-1 [Cancelled]``, for a heartbeat
    still unanswered (a broker that hangs). Only those records, from the threads
    of the consumer being closed, while it closes: each is logged at DEBUG when
    kafka-python's logger is at DEBUG, and left out otherwise. So is its refresh
    loop's ``Metadata refresh loop error: NetworkSelector closed!``, when the close
    stops the loop's network selector while the loop waits for its next refresh.
    Any other failure of a refresh (a timeout, a lost connection) is an error like
    any other.

    Its WARNING ``OffsetCommit for group ... failed`` for the last commit, which
    raises too, is left out the same way: wfe_kafka says that commit failed, and
    what that means, itself. So is its ERROR ``LeaveGroup request for member ...
    failed with error: [Error 25] UnknownMemberIdError``: the member's session had
    already ended, and it was out of the group before it asked to leave.

    Its ERROR ``LeaveGroup request failed`` is said as a warning of wfe_kafka's, in
    words that say what it means: the coordinator answers a connection's requests
    in order, so a consumer whose JoinGroup still waits (for a member that died
    without leaving, until its session ends) cannot leave before close_timeout, and
    its partitions move once its own session ends.
    """

    def __init__(self, threads: frozenset[int]) -> None:
        super().__init__()
        self._threads = threads
        from kafka.errors import Cancelled, UnknownMemberIdError

        self._cancelled = Cancelled
        self._unknown_member = UnknownMemberIdError

    def filter(self, record: logging.LogRecord) -> bool:
        if record.thread not in self._threads:
            return True
        if record.msg == _LEAVE_FAILED and isinstance(record.args, tuple) and record.args:
            logger.warning(
                "the Kafka consumer closed without leaving its group (%s): the group "
                "gives its partitions to other workers once its session times out",
                _describe(record.args[0])
                if isinstance(record.args[0], BaseException)
                else record.args[0],
            )
            return False
        args = record.args if isinstance(record.args, tuple) else ()
        if record.msg in (_REFRESH_FAILED, _COORDINATOR_REQUEST_FAILED):
            closed = any(isinstance(arg, self._cancelled) for arg in args)
        elif record.msg == _COMMIT_FAILED:
            closed = True
        elif record.msg == _REFRESH_LOOP_FAILED:
            closed = any(_SELECTOR_CLOSED in str(arg) for arg in args)
        elif record.msg in (_GROUP_LEAVE_REFUSED, _MEMBER_LEAVE_REFUSED):
            closed = any(isinstance(arg, self._unknown_member) for arg in args)
        else:
            closed = False
        if not closed:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).getEffectiveLevel() <= logging.DEBUG


@contextlib.contextmanager
def _closing_consumer(consumer: Any) -> Iterator[None]:
    """Around a consumer's last commit and ``consumer.close()``: kafka-python's error
    for the requests the close cancels, and its warning for a last commit that
    failed, are left out of the log, and its error for a LeaveGroup that failed is
    said in wfe_kafka's words (see :class:`_ClosingConsumer`)."""
    threads = {threading.get_ident()}
    # Its IO thread, where the refresh runs (kafka-python 3.0.x's KafkaNetClient);
    # not found, the filter only covers this thread and hides nothing of another.
    network = getattr(getattr(consumer, "_client", None), "_net", None)
    io_thread = getattr(network, "_io_thread", None)
    if isinstance(io_thread, threading.Thread) and io_thread.ident is not None:
        threads.add(io_thread.ident)
    closing = _ClosingConsumer(frozenset(threads))
    loggers = [logging.getLogger(name) for name in ("kafka.cluster", "kafka.coordinator")]
    for each in loggers:
        each.addFilter(closing)
    try:
        yield
    finally:
        for each in loggers:
            each.removeFilter(closing)


def _client_config(defaults: Mapping[str, Any], *layers: Mapping[str, Any]) -> dict[str, Any]:
    """Merge config layers, keeping only the keys this kafka-python client knows."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged.update({k: v for k, v in layer.items() if k in defaults})
    return merged


class _Refused:
    """The smallest record Kafka refused as too large lately, by topic: one at least
    as large is known to be refused too, and goes in its smaller form without being
    sent first. Each refusal fails every record in flight on its producer, which is
    then replaced (about 130 ms, and a few ERROR lines of kafka-python's): a
    workflow whose every event is too large for its topic would pay that at each.
    Forgotten after a minute, so that a topic whose limit was raised meanwhile
    takes whole records again."""

    #: Seconds a refusal is remembered.
    REMEMBERED = 60.0

    def __init__(self) -> None:
        self._smallest: dict[str, tuple[int, float]] = {}

    def note(self, record: Record) -> None:
        """Kafka refused ``record``, sent alone, as too large."""
        size, now = _size(record), time.monotonic()
        known = self._smallest.get(record[0])
        if known is None or now - known[1] > self.REMEMBERED or size <= known[0]:
            self._smallest[record[0]] = (size, now)

    def known(self, record: Record) -> bool:
        """Whether Kafka refused a record of this topic this large or smaller lately."""
        known = self._smallest.get(record[0])
        return (
            known is not None
            and time.monotonic() - known[1] <= self.REMEMBERED
            and _size(record) >= known[0]
        )

    async def send(
        self, send: Callable[[Sequence[Record]], Awaitable[list[Any]]], records: Sequence[Record]
    ) -> list[Any]:
        """``send(records)``'s outcomes, but for the records known to be refused:
        not sent, their outcome a MessageSizeTooLargeError for _smaller_if_too_large
        to send their smaller forms."""
        known = [self.known(record) for record in records]
        if not any(known):
            return await send(records)
        from kafka.errors import MessageSizeTooLargeError

        sent = iter(await send([r for r, k in zip(records, known, strict=True) if not k]))
        refused = MessageSizeTooLargeError("refused at this size before (not sent again)")
        return [refused if k else next(sent) for k in known]


def _size(record: Record) -> int:
    _, key, value, headers = record
    return len(key or b"") + len(value or b"") + sum(len(k) + len(v) for k, v in headers or ())


async def _smaller_if_too_large(
    producer: Callable[[], _Producer],
    outcomes: list[Any],
    records: Sequence[Record],
    *smaller: Callable[[Record], Record | None],
    refused: _Refused | None = None,
) -> list[Any]:
    """Send again, alone, each record that failed as too large, and if Kafka
    refuses it again, its ``smaller`` forms, in turn, until one is taken: Kafka
    will never take the record, and retrying it would hold up everything behind it
    for ever. Each form is made from the record as it was; one that gives None
    cannot make that record smaller, and the next is tried. A record or form
    ``refused`` knows to be too large is not sent, and those Kafka refuses alone it
    is told of.

    Alone, because kafka-python fails the whole producer after such an error,
    so its batch-mates fail with the same error without being too large.
    """
    outcomes = list(outcomes)
    for i, outcome in enumerate(outcomes):
        if not _too_large(outcome):
            continue
        if refused is None or not refused.known(records[i]):
            [outcome] = await producer().send_many([records[i]])
            if refused is not None and _too_large(outcome):
                refused.note(records[i])
        for make in smaller:
            if not _too_large(outcome):
                break
            form = make(records[i])
            if form is None or (refused is not None and refused.known(form)):
                continue
            [outcome] = await producer().send_many([form])
            if refused is not None and _too_large(outcome):
                refused.note(form)
        outcomes[i] = outcome
    return outcomes


async def _resend_failed(
    producer: Callable[[], _Producer], outcomes: list[Any], records: Sequence[Record]
) -> list[Any]:
    """Send once more the records that failed other than as too large."""
    again = [
        i for i, o in enumerate(outcomes) if isinstance(o, BaseException) and not _too_large(o)
    ]
    if not again:
        return outcomes
    outcomes = list(outcomes)
    retried = await producer().send_many([records[i] for i in again])
    for i, outcome in zip(again, retried, strict=True):
        outcomes[i] = outcome
    return outcomes


def _too_large(outcome: Any) -> bool:
    """Whether a send failed because Kafka never takes a record that large."""
    if not isinstance(outcome, BaseException):
        return False  # sent (the common case: no import to look up)
    from kafka.errors import MessageSizeTooLargeError, RecordListTooLargeError

    return isinstance(outcome, (MessageSizeTooLargeError, RecordListTooLargeError))


def _describe(exc: BaseException) -> str:
    """``Type: message``, once (kafka-python's errors already start with their type)."""
    text = str(exc)
    name = type(exc).__name__
    return text if text.startswith(name) else f"{name}: {text}"

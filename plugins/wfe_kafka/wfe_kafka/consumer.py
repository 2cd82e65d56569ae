"""The consumer side of KafkaMQInterface: task messages in from the tasks topic.

kafka-python's consumer lives on its own polling thread, one consumer at a time,
replaced by a fresh one when it fails or cannot settle in its group. Each polled
batch is stored on the event loop with one ``submit_tasks`` call; its offsets are
committed only once it is handled, and before its partitions move to another
worker in a rebalance. Consumption pauses while the engine has ``max_pending``
tasks at hand (backpressure). A message that can never become a task goes to the
dead-letter topic instead of stalling its partition.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import difflib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from wfcore import ECSWorkflowEngine, Task

from .clients import (
    Record,
    _closing_consumer,
    _ConnectionErrors,
    _describe,
    _is_connection_error,
    _last_bootstrap_error,
    _new_client,
    _Producer,
    _quiet_connection_errors,
    _too_large,
)
from .messages import (
    TASK_FIELDS,
    BadMessage,
    IdInUse,
    dead_letter_headers,
    message_digest,
    parse_task_message,
    source_id,
)

logger = logging.getLogger("wfe_kafka")
T = TypeVar("T")

_MAX_BATCHES_IN_HAND = 4
#: Seconds a paused consumer waits for room before it polls again (the group
#: protocol runs at each poll).
_PAUSED_LOOK = 0.2
# Seconds after connecting before the first look for the configured topics (a
# tasks topic the brokers create on first use exists by then), and between looks
# while one of them is missing (the tasks topic, whose tasks wait: more often).
_TOPICS_FIRST_CHECK = 5.0
_TOPICS_RECHECK = 30.0
_TASKS_TOPIC_RECHECK = 3.0
# Seconds a look at the topics waits for Kafka's answer (see _list_topics).
_TOPICS_WAIT = 5.0
# Seconds each step of a consumer's stop (commit, leaving the group) may take even
# when waiting for the batches in hand used up close_timeout.
_STEP_AT_LEAST = 0.5
# Seconds past close_timeout that a stopping consumer thread is waited for before
# consume_tasks() returns without it (see _TaskConsumer._bound_stop).
_STOP_GRACE = 5.0
# Seconds a running consumer may have no live connection to any broker before it
# says Kafka cannot be reached (a connection dropped and made again at once, as
# when a partition leader moves, is no outage).
_OFFLINE_AFTER = 3.0
# Field names of task messages that a worker says it ignores, once each, at most.
_IGNORED_NAMES_SAID = 1000
# Seconds a consumer must have run before failing for its restart delay to start
# again from 1 s (else it doubles, up to 30 s, while the failures go on).
_HEALTHY_RUN = 60.0


class _TaskConsumer:
    """Consuming the tasks topic for a KafkaMQInterface (part of the interface).

    KafkaMQInterface sets the attributes declared here and calls
    :meth:`_init_consumer` from its constructor;
    :meth:`~KafkaMQInterface.consume_tasks` runs :meth:`_consume_thread`.
    """

    # Set by KafkaMQInterface.
    bootstrap_servers: list[str]
    tasks_topic: str
    results_topic: str
    dead_letter_topic: str
    events_topic: str | None
    max_pending: int
    max_poll_records: int
    close_timeout: float
    stats: dict[str, int]
    consumer_settings: Callable[[], dict[str, Any]]
    _get_dead_letter_producer: Callable[[], _Producer]

    def _init_consumer(self) -> None:
        # Tasks at hand in the engine, for backpressure: counted by the hooks as
        # they are submitted and settle, recounted from the store while paused.
        self._outstanding = 0
        # Set when a paused consumer has room again (the backlog fell to half of
        # max_pending), so that it resumes at once rather than at its next look.
        self._room = threading.Event()
        # Batches being stored now, and how many ever began: a recount taken while
        # one was being stored would count its tasks twice (stored, then counted
        # by the hook), so it is dropped.
        self._storing = 0
        self._batches_begun = 0
        # Set to stop the polling thread; the future resolves once it has stopped.
        self._consume_stop = threading.Event()
        self._consuming: asyncio.Future[None] | None = None
        self._assignment: frozenset[tuple[str, int]] = frozenset()
        self._paused = False
        # The configured topics Kafka did not list at the last look (see
        # _check_topics); the publishers name them when sends to them fail.
        self._missing_topics: frozenset[str] = frozenset()
        # consume_tasks() calls under way (from their first line, before they attach).
        self._consume_calls = 0
        # Held while a batch's dead letters are sent (see _dead_letter).
        self._dead_letters_lock = asyncio.Lock()
        # Names of fields task messages do not have that were said to be ignored.
        self._ignored_said: set[str] = set()

    def _settled(self) -> None:
        self._outstanding = max(0, self._outstanding - 1)
        # Once set, the flag stays until the consumer clears it before its next
        # count: setting it again at every settle only takes its lock.
        if (
            self._paused
            and not self._room.is_set()
            and self._outstanding <= self.max_pending - self._resume_room
        ):
            self._room.set()

    @property
    def _resume_room(self) -> int:
        """The room a paused consumer waits for: half of max_pending, at least one."""
        return max(1, (self.max_pending + 1) // 2)

    def _bound_stop(self) -> None:
        """Give the polling thread of the consume_tasks() call under way
        ``close_timeout`` seconds and a grace to stop; past that, the call returns
        without it.

        Each step of a stop is bounded (see :meth:`_close_consumer` and
        :func:`_list_topics`), but a wait inside kafka-python may still outlast
        them (making a consumer waits up to ``bootstrap_timeout_ms``), and a worker
        must end on SIGTERM whatever Kafka's state. A thread left behind is a daemon:
        it ends when its wait does, or with the process; the messages whose offsets
        it had not committed are delivered again and find their tasks stored.
        """
        done = self._consuming
        if done is None or done.done():
            return
        loop = done.get_loop()
        wait = self.close_timeout + _STOP_GRACE

        def arm() -> None:
            loop.call_later(wait, self._left_behind, done, wait)

        try:
            loop.call_soon_threadsafe(arm)
        except RuntimeError:
            pass  # the loop is closed: nobody waits for the thread

    def _left_behind(self, done: asyncio.Future[None], wait: float) -> None:
        if done.done():
            return
        logger.warning(
            "the Kafka consumer did not stop within %.0f s (is Kafka reachable?); going on "
            "without it: messages whose offsets it had not committed are delivered again "
            "and find their tasks stored",
            wait,
        )
        done.set_result(None)

    def _consume_thread(
        self,
        loop: asyncio.AbstractEventLoop,
        engine: ECSWorkflowEngine,
        done: asyncio.Future[None],
        stop: threading.Event,
    ) -> None:
        """The polling thread of one consume_tasks() call, until ``stop`` is set.

        ``stop`` is this call's own: a thread left behind by a stop that took too
        long (see :meth:`_bound_stop`) still sees it set once it wakes, whatever
        later calls do.
        """
        outcome: BaseException | None = None
        with _quiet_connection_errors() as errors:
            protocol = self.consumer_settings().get("security_protocol", "PLAINTEXT")
            reach = _Reachability(",".join(self.bootstrap_servers), errors, protocol)
            try:
                outcome = self._consume_until_stopped(loop, engine, stop, reach)
            except BaseException as exc:
                logger.exception("the Kafka consumer stopped with an error")
                outcome = exc
            finally:
                reach.close()
                if self._consuming is done:  # not a later call's state
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

    def _consume_until_stopped(
        self,
        loop: asyncio.AbstractEventLoop,
        engine: ECSWorkflowEngine,
        stop: threading.Event,
        reach: _Reachability,
    ) -> BaseException | None:
        """Consume with one consumer after another until ``stop``; the error that
        stopped consuming for good (a setting kafka-python refuses), if any."""
        delay = 1.0
        while not stop.is_set():
            started = time.monotonic()
            try:
                self._consume(loop, engine, stop, reach)
            except _Rejoin as exc:
                # Expected while Kafka is away, which is said already.
                logger.log(
                    logging.DEBUG if reach.reported else logging.WARNING,
                    "the Kafka consumer has %s",
                    exc,
                )
                continue
            except _SettingsRefused as exc:
                logger.error("%s; the consumer stops", exc)
                return exc
            except Exception as exc:
                if stop.is_set():
                    raise
                refused = self._refused_by_brokers(exc)
                if refused is not None:
                    logger.error("%s; the consumer stops", refused)
                    return refused
                # A fresh consumer rejoins the group and starts again from the
                # committed offsets; redelivered messages find their tasks.
                if time.monotonic() - started > _HEALTHY_RUN:
                    delay = 1.0  # it worked a while: a new failure, not the same one
                if _is_connection_error(exc):
                    # Kafka went away under the consumer (its group coordinator
                    # cannot be found, say): said once, without a traceback.
                    reach.lost(exc)
                else:
                    logger.exception("the Kafka consumer failed; restarting it in %.0f s", delay)
                stop.wait(delay)
                delay = min(30.0, delay * 2)
        return None

    def _refused_by_brokers(self, error: BaseException) -> _SettingsRefused | None:
        """The setting the brokers refuse for good, as ``error`` says, if it says so
        (or a codec this worker lacks: no retry can help either).

        A session timeout outside what the brokers allow (their
        group.min.session.timeout.ms and group.max.session.timeout.ms, 6 s and 30
        min by default) fails every attempt to join the group: retried, it only
        gave a traceback every 30 s while the worker took no message.
        """
        from kafka.errors import InvalidSessionTimeoutError, UnsupportedCodecError

        if isinstance(error, UnsupportedCodecError):
            # A batch compressed with a codec whose library is missing: every new
            # consumer meets it again at the same offset.
            return _SettingsRefused(
                f"a batch of the tasks topic cannot be read: {_describe(error)}; install "
                "lz4, python-snappy and zstandard (wfe_kafka's dependencies) for the "
                "codecs producers compress with"
            )
        if not isinstance(error, InvalidSessionTimeoutError):
            return None
        session = self.consumer_settings().get("session_timeout_ms", 10_000)
        return _SettingsRefused(
            f"Kafka settings cannot be used: the brokers refused session_timeout_ms={session} "
            "(InvalidSessionTimeoutError): they take a session timeout from their "
            "group.min.session.timeout.ms to their group.max.session.timeout.ms (6000 to "
            "1800000 by default)"
        )

    def _open_consumer(self, stop: threading.Event, reach: _Reachability) -> Any:
        from kafka import KafkaConsumer
        from kafka.errors import KafkaConfigurationError

        delay = 0.5
        while not stop.is_set():
            try:
                with _last_bootstrap_error() as seen:
                    consumer = _new_client(KafkaConsumer, self.consumer_settings())
                reach.back()
                return consumer
            except (TypeError, ValueError, AssertionError, KafkaConfigurationError) as exc:
                # kafka-python refusing a setting: retrying cannot help.
                raise _SettingsRefused(
                    f"Kafka settings cannot be used: kafka-python refused them ({_describe(exc)})"
                ) from None
            except Exception as exc:
                if stop.is_set():
                    break  # a stop came during the attempt: nothing to say
                # "Unable to bootstrap" says nothing of why: the last connection
                # error does (refused, a failed SASL handshake, an SSL error).
                reach.lost(seen[-1] if seen else exc, retry_in=delay)
                stop.wait(delay)
                delay = min(10.0, delay * 2)
        return None

    def _consume(
        self,
        loop: asyncio.AbstractEventLoop,
        engine: ECSWorkflowEngine,
        stop: threading.Event,
        reach: _Reachability,
    ) -> None:
        consumer = self._open_consumer(stop, reach)
        if consumer is None:
            return
        batches = _Batches()
        try:
            consumer.subscribe(
                [self.tasks_topic], listener=_rebalance_listener(self, consumer, batches)
            )
        except BaseException:
            with _closing_consumer(consumer):
                consumer.close(autocommit=False)
            raise
        try:
            # Fetch metadata once subscribed, before the first poll joins the group:
            # kafka-python records the topic's partitions only from a metadata update
            # that comes after subscribe(), and a first assignment made without them
            # is redone at the next update, a needless rebalance.
            _list_topics(consumer, stop)
        except Exception as exc:
            if not stop.is_set():
                logger.warning("no metadata yet for topic %r: %s", self.tasks_topic, exc)
        next_topics_check: float | None = time.monotonic() + _TOPICS_FIRST_CHECK
        session = self.consumer_settings().get("session_timeout_ms", 10_000) / 1000
        # Longer than a rebalance waiting out a dead member's session, short
        # enough that a rebalance kafka-python never completes (seen with 3.0.x:
        # a leader whose SyncGroup answer never arrives) stalls briefly.
        stuck_after = max(15.0, 1.5 * session)
        last_stable = time.monotonic()
        next_resync = 0.0
        try:
            while not stop.is_set():
                reach.check(consumer)
                if _group_state(consumer) == _STABLE:
                    last_stable = time.monotonic()
                elif time.monotonic() - last_stable > stuck_after:
                    # A member that cannot complete a rebalance holds no partitions;
                    # a fresh consumer joins the group anew.
                    raise _Rejoin(
                        f"no stable group membership for {stuck_after:.0f} s; reconnecting"
                    )
                if (
                    next_topics_check is not None
                    and time.monotonic() >= next_topics_check
                    and reach.reported is None  # no answer to wait for while Kafka is away
                ):
                    try:
                        self._check_topics(_list_topics(consumer, stop))
                    except Exception as exc:
                        logger.debug("listing the topics failed: %s", exc)
                    # A missing tasks topic is looked for often: that look is what
                    # has the group assign its partitions once it is made (its
                    # answer ends kafka-python's own asking for the topic).
                    wait = _TOPICS_RECHECK
                    if self.tasks_topic in self._missing_topics:
                        wait = _TASKS_TOPIC_RECHECK
                    next_topics_check = time.monotonic() + wait if self._missing_topics else None
                self._commit(consumer, batches.take_handled())
                if batches.failed is not None:
                    raise RuntimeError("handling a batch of task messages failed") from (
                        batches.failed
                    )
                assigned = consumer.assignment()
                self._assignment = frozenset((tp.topic, tp.partition) for tp in assigned)
                full = len(batches) >= _MAX_BATCHES_IN_HAND
                # Messages polled but not stored yet count as work at hand: else
                # a poll of max_poll_records (500) would pass max_pending by far.
                self._room.clear()  # before the count: a settle after it wakes the wait
                room = self.max_pending - self._outstanding - batches.in_hand()
                # Paused, it waits until half of max_pending is free, so that the
                # engine has work in hand while the next messages are fetched.
                busy = room < self._resume_room if self._paused else room <= 0
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
                # A paused or full consumer only runs the group protocol at its
                # polls; while a rebalance goes on they wait for it (paused
                # partitions fetch nothing), so that its answer comes in a poll.
                waits = not (full or self._paused) or _group_state(consumer) != _STABLE
                records = _poll(
                    consumer,
                    timeout_ms=200 if waits else 0,
                    max_records=max(1, min(self.max_poll_records, room)),
                    stop=stop,
                )
                if self._paused and not records:
                    # The poll ran the group protocol; the settled tasks wake it.
                    self._room.wait(_PAUSED_LOOK)
                    continue
                if not records:
                    continue
                batch = [r for rs in records.values() for r in rs]
                self.stats["received"] += len(batch)
                offsets = {tp: rs[-1].offset + 1 for tp, rs in records.items() if rs}
                future = asyncio.run_coroutine_threadsafe(
                    self._handle_batch(engine, batch, stop), loop
                )
                batches.add(future, offsets, len(batch))
        finally:
            self._close_consumer(consumer, batches)

    def _close_consumer(self, consumer: Any, batches: _Batches) -> None:
        """Let the batches in hand be stored, commit them and leave the group, in
        about ``close_timeout`` seconds whatever Kafka's state: kafka-python's own
        waits are 30 s (request_timeout_ms) for each step. What is not committed
        is delivered again, and finds its tasks stored."""
        from kafka.errors import KafkaError

        deadline = time.monotonic() + self.close_timeout

        def left_ms() -> int:
            # Each step gets a moment even when waiting for the batches took it all.
            return int(max(_STEP_AT_LEAST, deadline - time.monotonic()) * 1000)

        batches.wait_all(self.close_timeout)
        with _closing_consumer(consumer):
            try:
                self._commit(consumer, batches.take_handled(), sync=True, timeout_ms=left_ms())
            except KafkaError as exc:
                # One line, not a traceback: Kafka away as a consumer closes loses nothing.
                logger.warning(
                    "committing offsets as the Kafka consumer closes failed (%s); their "
                    "messages are delivered again and find their tasks stored",
                    _describe(exc),
                )
            except Exception:
                logger.exception("committing offsets on stop failed")
            try:
                consumer.close(autocommit=False, timeout_ms=left_ms())
            except Exception:
                logger.exception("closing the Kafka consumer failed")

    def _topic_settings(self) -> list[tuple[str, str, str]]:
        """(topic, its setting, what waits while it is missing) for each topic used."""
        topics = [
            (
                self.tasks_topic,
                "tasks_topic, WFE_KAFKA_TASKS_TOPIC",
                "this worker gets no task messages",
            ),
            (
                self.results_topic,
                "results_topic, WFE_KAFKA_RESULTS_TOPIC",
                "results wait in the outbox",
            ),
        ]
        if self.dead_letter_topic:
            topics.append(
                (
                    self.dead_letter_topic,
                    "dead_letter_topic, WFE_KAFKA_DLQ_TOPIC",
                    "a bad message waits to be dead-lettered, and its partition's "
                    "offsets are not committed past it (a few batches after it still run)",
                )
            )
        if self.events_topic:
            topics.append(
                (
                    self.events_topic,
                    "events_topic, WFE_KAFKA_EVENTS_TOPIC",
                    "lifecycle events are not published",
                )
            )
        return topics

    def _check_topics(self, existing: set[str]) -> None:
        """Say, once per topic, that a configured topic does not exist: kafka-python
        only repeats "not found in cluster metadata", and sends wait for it, which
        looks like Kafka being slow or down.

        A missing tasks topic is a warning (brokers that create topics on first use
        would have made it as the consumer subscribed); a topic this worker only
        writes to is made at its first send by such brokers, so it is only noted,
        and named again in the warnings of sends that fail for want of it.
        """
        missing = set()
        for topic, setting, waiting in self._topic_settings():
            if topic in existing:
                if topic in self._missing_topics:
                    logger.info("topic %r (%s) exists now", topic, setting)
                continue
            missing.add(topic)
            if topic in self._missing_topics:
                continue
            if topic == self.tasks_topic:
                logger.warning(
                    "Kafka has no topic %r (%s): %s until it exists; create it",
                    topic,
                    setting,
                    waiting,
                )
            else:
                logger.info(
                    "Kafka has no topic %r (%s) yet: %s until it exists; brokers that "
                    "create topics on first use (auto.create.topics.enable) make it then, "
                    "others need it created",
                    topic,
                    setting,
                    waiting,
                )
        self._missing_topics = frozenset(missing)

    def _missing(self, topic: str | None) -> str:
        """``; Kafka has no topic '...' (its setting)`` when ``topic`` was missing at
        the last look (see :meth:`_check_topics`), else ``""``."""
        if topic and topic in self._missing_topics:
            for name, setting, _waiting in self._topic_settings():
                if name == topic:
                    return f"; Kafka has no topic {topic!r} ({setting})"
        return ""

    def _commit(
        self,
        consumer: Any,
        offsets: dict[Any, int],
        sync: bool = False,
        timeout_ms: int | None = None,
    ) -> None:
        """Commit handled offsets of the partitions this consumer still holds
        (``sync``: waiting for Kafka's answer at most ``timeout_ms``)."""
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
            consumer.commit(commit, timeout_ms=timeout_ms)
        else:
            consumer.commit_async(commit, callback=_log_commit_error)

    async def _resync(self, engine: ECSWorkflowEngine) -> None:
        """Recount the engine's work at hand (for backpressure): running tasks and
        pending ones that are due, of its own workflows when it runs only some (the
        others' tasks, or tasks delayed until tomorrow, would keep it from taking
        messages)."""
        if self._storing:
            return
        begun = self._batches_begun
        store = await engine.get_store()
        due = await store.count_due(workflows=engine.only_workflows)
        if not self._storing and self._batches_begun == begun:
            self._outstanding = due

    async def _handle_batch(
        self, engine: ECSWorkflowEngine, records: list[Any], stop: threading.Event
    ) -> None:
        """Store the batch's tasks in one write, then dead-letter its bad messages
        in their original order."""
        problems: list[BaseException | None] = [None] * len(records)
        requests: list[dict[str, Any]] = []
        positions: list[int] = []
        for index, record in enumerate(records):
            try:
                message = _read_message(record)
                requests.append(_submit_request(record, message))
            except Exception as exc:
                # Reading a message depends on its bytes alone: whatever fails here
                # would fail on every redelivery, so the message is dead-lettered
                # instead of stalling its partition.
                problems[index] = exc
            else:
                positions.append(index)
                self._say_ignored(record, message["ignored"])
        if requests:
            self._storing += 1
            self._batches_begun += 1
            try:
                # Ids make a retry idempotent: a batch stored in part is stored once.
                outcomes = await self._retrying(
                    "storing",
                    records[positions[0]],
                    lambda: engine.submit_tasks(requests, return_exceptions=True),
                    stop,
                )
            finally:
                self._storing -= 1
            for index, request, outcome in zip(positions, requests, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    problems[index] = outcome
                else:
                    problems[index] = _id_taken(request, outcome, records[index])
        letters = [(r, p) for r, p in zip(records, problems, strict=True) if p is not None]
        if letters:
            await self._retrying(
                "dead-lettering", letters[0][0], lambda: self._dead_letter(letters), stop
            )
        self.stats["consumed"] += len(records)

    def _say_ignored(self, record: Any, names: list[str]) -> None:
        """Say, once for each name, that a message has a field task messages do not
        have, which is ignored: as a warning when it resembles one they have (a
        misspelt ``classifcation`` would start the task at its first phase), else
        as information (producers may add fields of their own)."""
        for name in names:
            if name in self._ignored_said or len(self._ignored_said) >= _IGNORED_NAMES_SAID:
                continue
            self._ignored_said.add(name)
            close = difflib.get_close_matches(name, TASK_FIELDS, n=1)
            logger.log(
                logging.WARNING if close else logging.INFO,
                "task message %s/%d@%d: %s is not a task message field%s and is ignored "
                "(said once for each field name)",
                record.topic,
                record.partition,
                record.offset,
                repr(name)[:100],
                f" (did you mean {close[0]}?)" if close else "",
            )

    async def _retrying(
        self,
        doing: str,
        record: Any,
        attempt: Callable[[], Awaitable[T]],
        stop: threading.Event,
    ) -> T:
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
                if stop.is_set():
                    raise
                logger.warning(
                    "%s task message %s/%d@%d failed (%s: %s)%s; retrying",
                    doing,
                    record.topic,
                    record.partition,
                    record.offset,
                    type(exc).__name__,
                    exc,
                    self._missing(self.dead_letter_topic) if doing == "dead-lettering" else "",
                )
                await asyncio.sleep(delay)
                delay = min(5.0, delay * 2)

    async def _dead_letter(self, letters: list[tuple[Any, BaseException]]) -> None:
        # Without a dead-letter topic (dead_letter_topic="", WFE_KAFKA_DLQ_TOPIC=none)
        # this line is all that is left of the message: it must not say it went to one.
        done = "dead-lettered" if self.dead_letter_topic else "passed over (no dead-letter topic)"
        for record, error in letters:
            logger.warning(
                "task message %s/%d@%d %s: %s",
                record.topic,
                record.partition,
                record.offset,
                done,
                error,
            )
        if self.dead_letter_topic:
            # One batch's letters at a time: a letter Kafka refuses as too large
            # fails every record in flight on the producer, and another batch's
            # letters would be taken for too large as well.
            async with self._dead_letters_lock:
                await self._send_letters(letters)
        self.stats["dead_lettered"] += len(letters)

    async def _send_letters(self, letters: list[tuple[Any, BaseException]]) -> None:
        """Send the dead letters of a batch; raise the first error of Kafka's.

        A letter refused for what it is (see :func:`_letter_refused`) would be
        refused on every retry, holding up its partition for ever: it is sent in
        a smaller form (:func:`_letter_forms`), and when Kafka takes none, logged
        as an ERROR and passed over.
        """
        producer = self._get_dead_letter_producer

        def refused(outcome: Any) -> bool:
            # A ValueError from making the producer (a setting kafka-python
            # refuses) is no letter's fault: retried like Kafka being away.
            return _letter_refused(outcome) and producer().made

        forms = [_letter_forms(self.dead_letter_topic, r, e) for r, e in letters]
        outcomes = await producer().send_many([f[0][1] for f in forms])
        for i, outcome in enumerate(outcomes):
            if not refused(outcome):
                continue
            record = letters[i][0]
            # A letter too large fails its batch-mates on the producer with the
            # same error: each is first sent again as it is, alone.
            first = 0 if _too_large(outcome) else 1
            for left_out, letter in forms[i][first:]:
                if left_out:
                    logger.warning(
                        "the dead letter of task message %s/%d@%d was refused (%s); "
                        "sending it to %r without %s",
                        record.topic,
                        record.partition,
                        record.offset,
                        _describe(outcome),
                        self.dead_letter_topic,
                        left_out,
                    )
                [outcome] = await producer().send_many([letter])
                if not refused(outcome):
                    break
            else:
                # Kafka takes no letter from this topic (its max.message.bytes is
                # smaller than a letter's few headers, say). The message itself stays
                # in the tasks topic, at the offset named here.
                logger.error(
                    "task message %s/%d@%d cannot be dead-lettered to %r in any form (%s): "
                    "it is passed over and its offset committed; it stays in its topic at "
                    "that offset while the topic's retention keeps it",
                    record.topic,
                    record.partition,
                    record.offset,
                    self.dead_letter_topic,
                    _describe(outcome),
                )
                outcome = None
            outcomes[i] = outcome
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        if failed:
            raise failed[0]


class _Batches:
    """Consumed batches in poll order with the offsets they cover; commits only a
    prefix of handled batches, so an offset never passes an unhandled message."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (handling, next offset per partition, how many messages)
        self._batches: collections.deque[
            tuple[concurrent.futures.Future[Any], dict[Any, int], int]
        ] = collections.deque()
        self.failed: BaseException | None = None

    def add(
        self, future: concurrent.futures.Future[Any], offsets: dict[Any, int], size: int
    ) -> None:
        with self._lock:
            self._batches.append((future, offsets, size))

    def __len__(self) -> int:
        return len(self._batches)

    def in_hand(self) -> int:
        """Messages of batches not handled yet (their tasks are not all stored)."""
        with self._lock:
            return sum(size for future, _, size in self._batches if not future.done())

    def take_handled(self) -> dict[Any, int]:
        """Remove the handled prefix; return the next offset to commit per partition."""
        offsets: dict[Any, int] = {}
        with self._lock:
            while self._batches and self._batches[0][0].done():
                future, batch_offsets, _ = self._batches[0]
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
            futures = [f for f, _, _ in self._batches]
        if futures:
            concurrent.futures.wait(futures, timeout=timeout)


def _read_message(record: Any) -> dict[str, Any]:
    """A record's task message, parsed (raises BadMessage)."""
    if record.value is None and record.key is not None:
        # Kafka's mark that its key is deleted (in a compacted topic): no task.
        raise BadMessage("a tombstone (a key with a null value), not a task message")
    return parse_task_message(record.value)


def _submit_request(record: Any, message: Mapping[str, Any]) -> dict[str, Any]:
    """The ``submit_tasks`` request for one parsed task message."""
    return {
        "data": message["data"],
        "workflow_name": message["workflow_name"],
        "classification": message["classification"],
        "assigned_to": message["assigned_to"] or "ai",
        "task_id": message["id"] or source_id(record.topic, record.partition, record.offset),
        "run_after": message["run_after"],
        "priority": message["priority"],
        "context": {
            "kafka": {
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "digest": message_digest(message),
            }
        },
    }


def _id_taken(request: Mapping[str, Any], stored: Task, record: Any) -> IdInUse | None:
    """Why the task stored under the request's id is not this message's, or None.

    Submission is idempotent by id, so a message whose id is taken gets the stored
    task back. That is right for the same task: the same message delivered again,
    or sent twice. Any other message would vanish without a trace: one reusing
    another task's id, or one without an id at an offset an earlier incarnation
    of the tasks topic had used.

    What was submitted is compared, not the task as it is now (a handler may
    change ``task.data``; a ``define_workflow`` task is rebound to the workflow it
    defines, with the spec's input as its data): the digest of the message the
    task was stored from (:func:`~wfe_kafka.messages.message_digest`).
    """
    source = stored.context.get("kafka") if isinstance(stored.context, dict) else None
    same_workflow = request["workflow_name"] in (None, stored.workflow_name)
    if isinstance(source, dict) and isinstance(source.get("digest"), str):
        # The digest alone decides: the same record always gives the same one, and
        # a message of a tasks topic made anew, at an offset the old topic had
        # used, gives another.
        if source["digest"] == request["context"]["kafka"]["digest"]:
            return None
    elif same_workflow and (
        _coordinates(source) == (record.topic, record.partition, record.offset)
        or stored.data == request["data"]
    ):
        # Stored before digests were kept: this very record is the task's own
        # message (its data may have changed since), else the same workflow and
        # data make the same task. (A define_workflow message names its workflow
        # in its data.)
        return None
    coordinates = _coordinates(source)
    where = (
        f"from {coordinates[0]}/{coordinates[1]}@{coordinates[2]}"
        if coordinates is not None
        else "not from Kafka"
    )
    return IdInUse(
        f"id {stored.id!r} already used by another task (workflow {stored.workflow_name!r}, "
        f"{where}); send this message with an id of its own"
    )


def _coordinates(source: Any) -> tuple[Any, Any, Any] | None:
    """The (topic, partition, offset) a stored task's ``context["kafka"]`` names."""
    if isinstance(source, dict) and {"topic", "partition", "offset"} <= source.keys():
        return source["topic"], source["partition"], source["offset"]
    return None


#: The characters of ``wfe.error`` a dead letter keeps once cut to its least.
_ERROR_LIMIT = 1000


def _letter_forms(topic: str, record: Any, error: BaseException) -> list[tuple[str, Record]]:
    """The forms in which a message's dead letter is sent, each when the one before
    was refused for what it is: (what it leaves out, the letter).

    First the message's key, value and headers with the ``wfe.*`` headers after
    them; a header whose value is null goes with an empty one (kafka-python sends
    no null header value), and ``wfe.headers.null`` lists the positions (from 0,
    comma-separated) of such headers among the original ones. Then without the
    larger of its value and its headers, the value sent as ``b""`` (a null one is
    a tombstone to a compacted topic, and kafka-python sends no record without a
    key nor a value); then without both, ``wfe.error`` cut to 1,000 characters;
    last without its key too. What is left out is named in ``wfe.value.omitted``,
    ``wfe.headers.omitted`` and ``wfe.key.omitted`` (its size in bytes); the
    ``wfe.source.*`` headers say where to read it.
    """
    key, value, original = record.key, record.value, list(record.headers or [])
    where = dead_letter_headers(error, record.topic, record.partition, record.offset)
    # kafka-python sends no record without a key nor a value: an empty value says
    # the same as none.
    sendable = b"" if key is None and value is None else value
    headers = [(name, b"" if field is None else field) for name, field in original]
    nulls = [str(i) for i, (_name, field) in enumerate(original) if field is None]
    null = [("wfe.headers.null", ",".join(nulls).encode("ascii"))] if nulls else []
    forms: list[tuple[str, Record]] = [("", (topic, key, sendable, headers + where + null))]
    short = dead_letter_headers(
        error, record.topic, record.partition, record.offset, error_limit=_ERROR_LIMIT
    )
    value_size, headers_size = len(value or b""), _headers_size(headers)
    no_value = [("wfe.value.omitted", str(value_size).encode("ascii"))] if value_size else []
    no_headers = [("wfe.headers.omitted", str(headers_size).encode("ascii"))] if headers else []
    if value_size >= headers_size and value_size:
        forms.append(("its value", (topic, key, b"", headers + where + null + no_value)))
    elif headers:
        forms.append(("its headers", (topic, key, sendable, where + no_headers)))
    forms.append(("its value and headers", (topic, key, b"", short + no_value + no_headers)))
    if key:
        no_key = [("wfe.key.omitted", str(len(key)).encode("ascii"))]
        forms.append(
            (
                "its key, value and headers",
                (topic, None, b"", short + no_value + no_headers + no_key),
            )
        )
    return forms


def _headers_size(headers: list[tuple[str, Any]]) -> int:
    """The bytes of Kafka headers' names and values."""
    return sum(
        len(name.encode("utf-8", "surrogateescape")) + len(value or b"") for name, value in headers
    )


def _letter_refused(outcome: Any) -> bool:
    """Whether a dead letter's send failed for what the letter is, so that sending
    it again as it is would fail again: kafka-python refusing it (ValueError,
    TypeError: a header that is not bytes, say) or Kafka (too large for the topic
    or the producer's max_request_size, or a record the topic does not take, such
    as one without a key to a compacted topic)."""
    from kafka.errors import InvalidRecordError

    return isinstance(outcome, (ValueError, TypeError, InvalidRecordError)) or _too_large(outcome)


_STABLE = "<stable>"  # kafka.structs.MemberState.STABLE
_REBALANCING = "<rebalancing>"  # kafka.structs.MemberState.REBALANCING


def _list_topics(consumer: Any, stop: threading.Event, timeout: float = _TOPICS_WAIT) -> set[str]:
    """The topics Kafka has, as ``consumer.topics()`` lists them, waiting at most
    ``timeout`` seconds for Kafka's answer and no longer once ``stop`` is set.

    kafka-python's ``topics()`` waits for the answer without a deadline, and while
    no broker can be reached its request is never sent, so it never fails either:
    a consumer thread in it would never stop (a worker would not end on SIGTERM).
    This asks for the same metadata update (every topic, not only the subscribed
    ones) and waits for it in short steps. Raises KafkaTimeoutError when the
    answer does not come in time.
    """
    from kafka.errors import KafkaTimeoutError

    cluster, net, manager = consumer._cluster, consumer._net, consumer._manager
    deadline = time.monotonic() + timeout

    def wait(update: Any) -> None:
        while not update.is_done:
            left = deadline - time.monotonic()
            if stop.is_set() or left <= 0:
                raise KafkaTimeoutError(f"Kafka did not list its topics within {timeout:.0f} s")
            try:
                net.run(manager.wait_for, update, int(min(left, 0.25) * 1000) + 1)
            except KafkaTimeoutError:
                if update.is_done:
                    raise  # the update's own failure, not the wait's
        if update.exception is not None:
            raise update.exception

    if cluster.metadata_refresh_in_progress:
        # That refresh may be of the subscribed topics only: the next one lists all.
        wait(cluster.request_update())
    every_topic = cluster.need_all_topic_metadata
    cluster.need_all_topic_metadata = True
    try:
        wait(cluster.request_update())
    finally:
        cluster.need_all_topic_metadata = every_topic
    return set(cluster.topics())


def _keep_join_awaited(consumer: Any) -> None:
    """Before a poll: have kafka-python apply a group join it started and lost.

    kafka-python 3.0.12 leaves a JoinGroup/SyncGroup round running when the poll
    that started it returns first (a poll of 0 ms while the consumer is paused, or
    one whose 200 ms ran out), and the next poll awaits the round only if the
    member still needs to rejoin. When the rejoin was for new metadata (partitions
    added, a topic created, the first assignment made before the leader knew the
    partitions), the leader's assignment has already cleared that need: the
    round's result is never applied, and the member stays rebalancing with no
    partitions and no heartbeat, fetching nothing (seen for 15 s, until the
    consumer was made anew, each time a paused worker's topic grew). Asking to
    rejoin again makes the next poll await the round, or run another one if it
    ended.
    """
    coordinator: Any = getattr(consumer, "_coordinator", None)
    if getattr(coordinator, "_join_task", None) is None or getattr(
        coordinator, "rejoin_needed", True
    ):
        return
    if _group_state(consumer) == _REBALANCING:
        logger.debug("kafka-python left a group join unapplied; asking to rejoin")
        coordinator.request_rejoin()


def _group_state(consumer: Any) -> str:
    try:
        return str(consumer.group_metadata().state)
    except Exception:
        return _STABLE  # no way to tell: never restart on account of it


def _security_refused(error: BaseException) -> bool:
    """Whether a connection failed in its SASL or SSL handshake (a listener of
    another security protocol), rather than for want of a broker."""
    return "Sasl" in type(error).__name__ or "SSL" in str(error)


class _Reachability:
    """Says once that the consumer cannot reach Kafka, and once that it can again
    (the attempts in between at DEBUG); kafka-python's own connection errors are
    left out of the log meanwhile (see :class:`~wfe_kafka.clients._ConnectionErrors`)."""

    def __init__(self, servers: str, errors: _ConnectionErrors, protocol: str) -> None:
        self.servers = servers
        self.errors = errors
        self.protocol = protocol
        # Since when the running consumer has had no live connection (None: it has one).
        self.offline_since: float | None = None
        # When the outage said to be under way began (None: none is).
        self.reported: float | None = None

    def check(self, consumer: Any) -> None:
        """Look at a running consumer's connections; say what changed."""
        connected = _connected(consumer)
        if connected is None:
            return
        if connected:
            self.offline_since = None
            self.back()
        elif self.offline_since is None:
            self.offline_since = time.monotonic()
        elif self.reported is None and time.monotonic() - self.offline_since >= _OFFLINE_AFTER:
            self.lost(self.errors.last)

    def lost(self, error: BaseException | None, retry_in: float | None = None) -> None:
        """Kafka cannot be reached (``retry_in``: making a consumer failed, and is
        tried again in so many seconds; else a running consumer lost it)."""
        why = _describe(error) if error is not None else "no broker answers"
        if error is not None and _security_refused(error):
            # Kafka answers, but not in this protocol: no retry will change that.
            why += (
                f"; the broker does not take security_protocol {self.protocol} on this "
                "listener: check it, and the sasl_* and ssl_* settings"
            )
        level = logging.WARNING if self.reported is None else logging.DEBUG
        if self.reported is None:
            self.reported = self.offline_since or time.monotonic()
            self.errors.outage_began()
        if retry_in is not None:
            logger.log(
                level,
                "cannot reach Kafka at %s (%s); trying again in %.1f s",
                self.servers,
                why,
                retry_in,
            )
        else:
            logger.log(
                level,
                "cannot reach Kafka at %s (%s): the connection is lost; no task messages "
                "until it is back (kafka-python's connection errors are left out of the "
                "log meanwhile)",
                self.servers,
                why,
            )

    def back(self) -> None:
        """Kafka answers again: say so if its absence was said."""
        if self.reported is None:
            return
        logger.warning(
            "Kafka at %s can be reached again, after %.0f s",
            self.servers,
            time.monotonic() - self.reported,
        )
        self.close()

    def close(self) -> None:
        """No more is said about this outage (it ended, or the consumer stopped)."""
        self.offline_since = None
        if self.reported is not None:
            self.reported = None
            self.errors.outage_ended()


#: A poll that returns no record after using the CPU for more than this share of
#: its time spun inside kafka-python (see :func:`_poll`).
_SPIN_SHARE = 0.2
#: Seconds the consumer rests after such a poll.
_SPIN_REST = 1.0


def _poll(
    consumer: Any, timeout_ms: int, max_records: int, stop: threading.Event | None = None
) -> dict[Any, list[Any]]:
    """``consumer.poll()``, first handing back to kafka-python the records it set
    aside for a partition that was paused and is not any more, and resting (until
    ``stop``) after a poll that spun.

    While a broker hangs (its connections open, its requests unanswered: a frozen
    process, a network that drops packets), the group's heartbeat is overdue, and
    kafka-python 3.0.12's poll then loops without waiting for as long as its
    timeout: the consumer's thread and kafka-python's own used most of a core until
    the request timed out (30 s) and again after each reconnection. A poll that
    returns nothing after using the CPU for most of its time is followed by a
    rest of ``_SPIN_REST`` seconds; heartbeats go on meanwhile (kafka-python sends
    them from its own thread), and a poll that waits as it should is not affected.

    kafka-python 3.0.12 keeps the records it fetched for a paused partition aside
    (``_paused_partition_records``) and fetches nothing more for that partition
    until they are returned; it returns them only at a poll whose in-line records
    (``_next_partition_records``) are None, but a poll that used those up leaves
    them there, empty, not None. A partition paused (backpressure) while the
    consumer held records of it could then get nothing more for as long as the
    consumer lived: its messages stayed in Kafka, never stored, with every worker
    idle (seen after rebalances, when a worker left or died). Emptied in-line
    records are the same to kafka-python as none, so setting them to None changes
    nothing else.
    """
    _keep_join_awaited(consumer)
    fetcher: Any = getattr(consumer, "_fetcher", None)
    if fetcher is not None and getattr(fetcher, "_paused_partition_records", None):
        in_line = getattr(fetcher, "_next_partition_records", None)
        if in_line is not None and not in_line:
            fetcher._next_partition_records = None
    started, cpu = time.monotonic(), time.thread_time()
    records: dict[Any, list[Any]] = consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
    if not records and stop is not None and timeout_ms > 0:
        took, used = time.monotonic() - started, time.thread_time() - cpu
        if took < timeout_ms / 2000:
            # kafka-python gave up early (no group coordinator to ask, say) and
            # would be asked again at once: wait out the rest of the timeout here.
            stop.wait(timeout_ms / 1000 - took)
        elif _group_state(consumer) == _STABLE and (
            used > _SPIN_SHARE * took or _heartbeat_overdue(consumer)
        ):
            # Only in a stable group: a consumer joining or rejoining it (after an
            # outage, say) makes progress at each poll, and must not be slowed.
            logger.debug(
                "kafka-python's poll used the CPU for %.2f s of %.2f s and returned no "
                "message (a broker that does not answer?); resting %.0f s",
                used,
                took,
                _SPIN_REST,
            )
            stop.wait(_SPIN_REST)
    return records


def _heartbeat_overdue(consumer: Any) -> bool:
    """Whether the group's heartbeat is overdue (sent, unanswered, the next one
    due), which makes kafka-python's poll loop without waiting; False when that
    cannot be told."""
    try:
        return bool(consumer._coordinator.time_to_next_poll() <= 0)
    except Exception:
        return False  # kafka-python changed, or no group


def _connected(consumer: Any) -> bool | None:
    """Whether a consumer has a live connection to a broker (to its group's
    coordinator, which it heartbeats, at least); None when that cannot be told."""
    try:
        return bool(consumer._manager.least_used_connections())
    except Exception:
        return None  # kafka-python changed, or its IO thread changed the list meanwhile


class _SettingsRefused(Exception):
    """kafka-python refused a setting when making a client: no retry can help."""


class _Rejoin(Exception):
    """The consumer is stuck outside its group; it is replaced by a fresh one."""


def _log_failure(future: concurrent.futures.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.warning("recounting pending tasks failed: %s", future.exception())


def _log_commit_error(offsets: Any, response: Any) -> None:
    if isinstance(response, BaseException):
        logger.warning("committing offsets failed (%s); a later commit covers them", response)


def _rebalance_listener(iface: _TaskConsumer, consumer: Any, batches: _Batches) -> Any:
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

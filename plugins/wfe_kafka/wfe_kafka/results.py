"""The results side of KafkaMQInterface: finished tasks out through the store's
outbox, and lifecycle events out to their own topic.

The hooks queue each finished task; the publisher sends it at once, waits until
every replica has it (``acks=all``) and only then marks it published in the
outbox. A sweep publishes what the outbox still holds: left by a crash or an
outage, or finished by another process. While Kafka is away, publishing backs off
and says so, once in a while, with how many results wait. Lifecycle events are
sent from a bounded queue, as they come, with no outbox behind them.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from wfcore import ECSWorkflowEngine, Phase, Store, Task, TaskStatus
from wfcore.model import utcnow

from .clients import (
    Record,
    _describe,
    _Producer,
    _Refused,
    _resend_failed,
    _smaller_if_too_large,
)
from .messages import (
    RESULT_HISTORY_KEPT,
    event_message,
    event_without_bulk,
    result_message,
    result_with_recent_history,
    result_without_bulk,
)

logger = logging.getLogger("wfe_kafka")

_MAX_QUEUED_RESULTS = 20_000
_MAX_QUEUED_EVENTS = 50_000
_PUBLISH_BATCH = 1000

# The lifecycle event announcing each finished status.
_FINAL_EVENTS = {
    TaskStatus.COMPLETED: "completed",
    TaskStatus.FAILED: "failed",
    TaskStatus.CANCELLED: "cancelled",
}

#: A finished task as published: its id and the store version it finished with. A
#: task finishes again after a retry, with a new version, and that result is new.
ResultKey = tuple[str, int]


class _ResultsPublisher:
    """Publishing a KafkaMQInterface's results and events (part of the interface).

    KafkaMQInterface sets the attributes declared here and calls
    :meth:`_init_results` from its constructor; :meth:`~KafkaMQInterface.attach`
    starts :meth:`_publish_loop` and :meth:`_events_loop`.
    """

    # Set by KafkaMQInterface.
    bootstrap_servers: list[str]
    results_topic: str
    events_topic: str | None
    outbox_grace: float
    outbox_consumer: str
    sweep_interval: float
    outage_warn_after: float
    outage_warn_every: float
    stats: dict[str, int]
    _engine: ECSWorkflowEngine | None
    _get_producer: Callable[[], _Producer]
    _get_events_producer: Callable[[], _Producer]
    _missing: Callable[[str | None], str]

    def _init_results(self) -> None:
        # Results queued or being sent, and those published lately, by (id, version).
        self._results: collections.deque[tuple[ResultKey, bytes]] = collections.deque()
        self._results_ids: set[ResultKey] = set()
        self._recent = _Recent()
        # Finishes whose final event (completed, failed, cancelled) this process sent.
        self._final_events = _Recent()
        self._events: collections.deque[tuple[bytes, bytes]] = collections.deque()
        # Records Kafka refused as too large lately, results' and events' alike.
        self._refused = _Refused()
        self._wake: asyncio.Event | None = None
        self._events_wake: asyncio.Event | None = None
        self._publisher: asyncio.Task[None] | None = None
        self._events_publisher: asyncio.Task[None] | None = None
        self._closing = False
        self._backoff = 0.0
        self._degraded_until = 0.0
        self._trouble_since: float | None = None
        self._outage_warned_at: float | None = None

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
            self.stats["events_dropped"] += 1
        self._events.append((task.id.encode("utf-8"), event_message(event, task, phase, at)))
        self._events_wake.set()

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
        outcomes = await self._refused.send(self._send_watched, records)
        outcomes = await _smaller_if_too_large(
            self._get_producer,
            outcomes,
            records,
            self._result_with_recent_history,
            self._result_without_bulk,
            refused=self._refused,
        )
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
                f"{self.results_topic!r} ({_describe(error)}){self._missing(self.results_topic)}"
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
                    missing = self._missing(self.results_topic)
                    await self._warn_outage(
                        f"results to {self.results_topic!r} are not acknowledged{missing}"
                        if missing
                        else f"Kafka at {','.join(self.bootstrap_servers)} has not "
                        f"acknowledged results for {time.monotonic() - started:.0f} s"
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

    def _result_with_recent_history(self, record: Record) -> Record | None:
        topic, key, value, headers = record
        smaller = result_with_recent_history(value or b"{}")
        if smaller is None:
            return None
        _say_too_large(
            record, "the result", f"with the last {RESULT_HISTORY_KEPT} events of its history"
        )
        return topic, key, smaller, headers

    def _result_without_bulk(self, record: Record) -> Record:
        topic, key, value, headers = record
        _say_too_large(record, "the result", "without its bulk (data, output, outputs, history...)")
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
                outcomes = await self._refused.send(self._get_events_producer().send_many, records)
                if time.monotonic() - started < 5.0:
                    # Failed at once, not after delivery_timeout_ms: most likely for a
                    # record too large (kafka-python then fails the sends of the whole
                    # producer, the batch's other events included): once more, on a
                    # fresh producer.
                    outcomes = await _resend_failed(self._get_events_producer, outcomes, records)
                outcomes = await _smaller_if_too_large(
                    self._get_events_producer,
                    outcomes,
                    records,
                    _event_without_bulk,
                    refused=self._refused,
                )
            except Exception as exc:
                outcomes = [exc] * len(batch)
            failed = sum(isinstance(o, BaseException) for o in outcomes)
            self.stats["events_published"] += len(batch) - failed
            if failed:
                self.stats["publish_errors"] += failed
                error = next(o for o in outcomes if isinstance(o, BaseException))
                logger.warning(
                    "could not publish %d event(s) to %r (%s)%s",
                    failed,
                    self.events_topic,
                    _describe(error),
                    self._missing(self.events_topic),
                )


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


def _say_too_large(record: Record, what: str, how: str) -> None:
    """Say that a record (``what``: "the result", "an event") goes smaller than it
    is (``how``), as Kafka refused it."""
    topic, key, value, _ = record
    logger.warning(
        "%s of task %s (%d bytes) is too large for %r; publishing it %s",
        what,
        (key or b"").decode("utf-8", "replace"),
        len(value or b""),
        topic,
        how,
    )


def _event_without_bulk(record: Record) -> Record:
    """An event too large for its topic, without its output (the store keeps it)."""
    topic, key, value, headers = record
    _say_too_large(record, "an event", "without its output")
    return topic, key, event_without_bulk(value or b"{}"), headers


class _PublishFailed(Exception):
    """Some results could not be published; they stay in the outbox."""

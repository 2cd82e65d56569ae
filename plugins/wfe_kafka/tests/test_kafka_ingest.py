"""Tasks in from a real broker, results and events out, dead letters, delivery guarantees."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaTimeoutError, TopicAlreadyExistsError
from wfe_kafka import BadMessage, KafkaMQInterface
from wfe_kafka.consumer import _poll
from wfe_kafka.messages import message_digest
from wfe_kafka_util import (
    FAST_GROUP,
    TopicReader,
    committed,
    group_state,
    produce,
    task_json,
    wait_until,
)

from wfcore import ECSWorkflowEngine, Phase, Task, TaskStatus
from wfcore.errors import StoreError
from wfcore.metrics import render_metrics
from wfcore.plugins import report_header
from wfcore.wire import task_from_dict

TopicFactory = Callable[..., str]


async def until(condition: Callable[[], Any], timeout: float = 30.0, what: str = "") -> None:
    """Await a condition inside the event loop, polling with a deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.02)


def interface(bootstrap: str, tasks: str, results: str, **kwargs: Any) -> KafkaMQInterface:
    kwargs.setdefault("group_id", f"g-{uuid.uuid4().hex[:10]}")
    kwargs.setdefault("outbox_grace", 0.5)
    kwargs.setdefault("close_timeout", 5.0)
    for key, value in FAST_GROUP.items():
        kwargs.setdefault(key, value)
    return KafkaMQInterface(bootstrap, tasks_topic=tasks, results_topic=results, **kwargs)


@dataclass(frozen=True)
class Topics:
    """One test's own topics on the test broker: tasks in, results out, and the
    dead-letter and events topics of the tests that ask for them ("" otherwise)."""

    bootstrap: str
    tasks: str
    results: str
    dlq: str = ""
    events: str = ""

    def send(self, messages: list[Any]) -> list[Any]:
        """Produce ``(key, value)`` or ``(key, value, headers)`` messages to the tasks
        topic; their RecordMetadata."""
        return produce(self.bootstrap, self.tasks, messages)

    def interface(self, **kwargs: Any) -> KafkaMQInterface:
        """An interface consuming the tasks topic and publishing results to the
        results topic, in a group of its own (see :func:`interface`)."""
        return interface(self.bootstrap, self.tasks, self.results, **kwargs)

    def reader(self, topic: str) -> TopicReader:
        """A :class:`TopicReader` of ``topic`` from its beginning."""
        return TopicReader(self.bootstrap, topic)


MakeTopics = Callable[..., Topics]


@pytest.fixture
def kafka_topics(kafka_bootstrap: str, kafka_topic: TopicFactory) -> MakeTopics:
    """``kafka_topics(partitions=1, dlq=False, events=False)``: fresh tasks and results
    topics of ``partitions`` partitions, and a dead-letter or events topic of one
    partition when asked for; all deleted after the test."""

    def make(partitions: int = 1, *, dlq: bool = False, events: bool = False) -> Topics:
        return Topics(
            kafka_bootstrap,
            tasks=kafka_topic(partitions, "tasks"),
            results=kafka_topic(partitions, "results"),
            dlq=kafka_topic(1, "dlq") if dlq else "",
            events=kafka_topic(1, "events") if events else "",
        )

    return make


async def double(task: Task) -> None:
    task.output = {"doubled": task.data["n"] * 2}


async def pad(task: Task) -> None:
    """An output of ``size`` characters: larger than a topic takes, say."""
    task.output = "y" * task.data["size"]


async def boom(task: Task) -> None:
    raise RuntimeError("the handler gave up")


def echo_engine(make: Callable[..., ECSWorkflowEngine], **kwargs: Any) -> ECSWorkflowEngine:
    engine = make(**kwargs)
    engine.register_handler("double", double)
    engine.register_workflow("double", [Phase("double", assigned_to="functional")])
    engine.register_handler("boom", boom)
    engine.register_workflow("boom", [Phase("boom", assigned_to="functional")])
    engine.register_handler("pad", pad)
    engine.register_workflow("pad", [Phase("pad", assigned_to="functional")])
    engine.register_workflow(
        "approve",
        [
            Phase("approve", assigned_to="human", instructions="Approve the refund?", timeout=3600),
            Phase("double", assigned_to="functional"),
        ],
    )
    return engine


@contextlib.asynccontextmanager
async def running(engine: ECSWorkflowEngine, kafka: KafkaMQInterface) -> AsyncIterator[None]:
    """Consume and run while the block runs, then stop both the way an app would."""
    consumer = asyncio.create_task(kafka.consume_tasks(engine))
    runner = asyncio.create_task(engine.run())
    try:
        yield
    finally:
        engine.stop()
        await runner
        kafka.stop_consuming()
        await consumer
        await kafka.close()


async def serve(
    engine: ECSWorkflowEngine,
    kafka: KafkaMQInterface,
    done: Callable[[], Any] | None = None,
    what: str = "",
    then: Callable[[], Awaitable[Any]] | None = None,
    **stats: int,
) -> Any:
    """Consume and run until ``done()`` and each of ``kafka.stats`` named in ``stats``
    has that value (``results_published=2``), await ``then()`` (returning what it
    returns), then stop both the way an app would."""
    counts = ", ".join(f"{name} {count}" for name, count in stats.items())

    def finished() -> bool:
        if any(kafka.stats[name] != count for name, count in stats.items()):
            return False
        return done is None or bool(done())

    async with running(engine, kafka):
        await until(finished, 60, " and ".join(w for w in (what, counts) if w))
        return None if then is None else await then()


def test_messages_become_tasks_and_results_come_back(
    kafka_topics: MakeTopics, wfe_engine_factory: Any, wfe_run: Any
) -> None:
    topics = kafka_topics(3)
    sent = topics.send(
        [
            (b"a", task_json(workflow_name="double", data={"n": 1})),
            (b"b", task_json(id="order-2", workflow_name="double", data={"n": 2}, format=1)),
            (None, task_json(id="order-3", workflow_name="double", data={"n": 3})),
        ]
    )
    ids = [f"{topics.tasks}-{sent[0].partition}-{sent[0].offset}", "order-2", "order-3"]
    engine = echo_engine(wfe_engine_factory)
    kafka = topics.interface()
    engine.register_task_completed_hook(kafka.publish_result)

    async def scenario() -> list[Task]:
        await serve(engine, kafka, results_published=3)
        return [await engine.get_task(i) for i in ids]  # type: ignore[misc]

    stored = wfe_run(scenario())
    for n, (task, meta) in enumerate(zip(stored, sent, strict=True), 1):
        assert task.status is TaskStatus.COMPLETED
        assert task.context["kafka"] == {
            "topic": topics.tasks,
            "partition": meta.partition,
            "offset": meta.offset,
            # What the message asked for, to know it again if it is sent again.
            "digest": message_digest(
                {"workflow_name": "double", "data": {"n": n}, "classification": None}
            ),
        }

    with topics.reader(topics.results) as reader:
        records = reader.wait_for(3)
        assert sorted(r.key.decode() for r in records) == sorted(ids)
        by_id = {doc["id"]: doc for doc in reader.values()}
    assert by_id["order-2"]["status"] == "completed"
    assert by_id["order-2"]["output"] == {"doubled": 4}
    assert by_id["order-2"]["outputs"] == {"double": {"doubled": 4}}
    assert by_id["order-3"]["context"]["kafka"]["offset"] == sent[2].offset
    assert task_from_dict(by_id[ids[0]]).output == {"doubled": 2}

    # The consumer committed everything it handled and left the group.
    ends = {p: 0 for p in range(3)}
    for meta in sent:
        ends[meta.partition] = max(ends[meta.partition], meta.offset + 1)
    handled = committed(
        topics.bootstrap, kafka.group_id, topics.tasks, [p for p, e in ends.items() if e]
    )
    assert handled == {p: e for p, e in ends.items() if e}
    assert group_state(topics.bootstrap, kafka.group_id) == ("Empty", 0)


def test_failed_and_cancelled_tasks_are_published_with_their_status(
    kafka_topics: MakeTopics, wfe_engine_factory: Any, wfe_run: Any
) -> None:
    topics = kafka_topics()
    topics.send(
        [
            (None, task_json(id="fails", workflow_name="boom", data=None)),
            (None, task_json(id="waits", workflow_name="approve", data={"n": 1})),
        ]
    )
    engine = echo_engine(wfe_engine_factory)
    kafka = topics.interface()

    async def scenario() -> None:
        async with running(engine, kafka):

            async def waiting() -> bool:
                task = await engine.get_task("waits")
                return task is not None and task.status is TaskStatus.WAITING_HUMAN

            deadline = time.monotonic() + 30
            while not await waiting():
                assert time.monotonic() < deadline, "the human task never started waiting"
                await asyncio.sleep(0.02)
            await engine.cancel("waits")
            await until(lambda: kafka.stats["results_published"] == 2, 30, "2 results")

    wfe_run(scenario())
    with topics.reader(topics.results) as reader:
        reader.wait_for(2)
        by_id = {doc["id"]: doc for doc in reader.values()}
    assert by_id["fails"]["status"] == "failed"
    assert by_id["fails"]["error"] == "RuntimeError: the handler gave up"
    assert by_id["waits"]["status"] == "cancelled"


def test_bad_messages_go_to_the_dead_letter_topic_and_the_rest_goes_on(
    kafka_topics: MakeTopics, wfe_engine_factory: Any, wfe_run: Any
) -> None:
    topics = kafka_topics(dlq=True)
    bad = [
        (b"k-json", b"{not json"),
        (b"k-list", b"[1, 2, 3]"),
        (b"k-nowf", task_json(data={"n": 1})),
        # The dashboard's JSON API calls it "workflow"; a task message does not.
        (b"k-workflow", task_json(workflow="double", data={"n": 1})),
        (b"k-unknown", task_json(workflow_name="no-such-workflow", data={"n": 1})),
        (b"k-future", task_json(workflow_name="double", data={"n": 1}, format=99)),
        (b"k-phase", task_json(workflow_name="double", data={"n": 1}, classification="nope")),
        # Each of these once stalled the partition: the consumer restarted or the
        # batch's write was retried for ever.
        (b"k-deep", b'{"workflow_name": "double", "data": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"),
        # Deep enough for the engine to refuse, not for the JSON parser.
        (b"k-deep-900", b'{"workflow_name": "double", "data": ' + b"[" * 900 + b"]" * 900 + b"}"),
        (b"k-surrogate", b'{"workflow_name": "double", "data": {"n": "\\ud800"}}'),
        (b"k-nan", b'{"workflow_name": "double", "data": {"n": NaN}}'),
        (b"k-empty-id", task_json(id="", workflow_name="double", data={"n": 1})),
        # Messages are UTF-8: Python's json would read these as the same task.
        (b"k-utf16", '{"workflow_name": "double", "data": {"n": 1}}'.encode("utf-16")),
        (b"k-utf16be", '{"workflow_name": "double", "data": {"n": 1}}'.encode("utf-16-be")),
        (b"k-utf32", '{"workflow_name": "double", "data": {"n": 1}}'.encode("utf-32")),
        (b"k-utf8-bom", '{"workflow_name": "double", "data": {"n": 1}}'.encode("utf-8-sig")),
        # A surrogate written as UTF-8 bytes (CESU-8), not as a \u escape.
        (b"k-cesu", b'{"workflow_name": "double", "data": {"n": "\xed\xa0\x80"}}'),
    ]
    topics.send(
        [
            *bad[:4],
            (b"ok-1", task_json(id="ok-1", workflow_name="double", data={"n": 5})),
            *bad[4:],
        ]
    )
    engine = echo_engine(wfe_engine_factory)
    kafka = topics.interface(dead_letter_topic=topics.dlq)

    async def scenario() -> str:
        return await serve(
            engine,
            kafka,
            consumed=18,
            results_published=1,
            then=lambda: render_metrics(engine),
        )

    metrics = wfe_run(scenario())
    assert kafka.stats["dead_lettered"] == 17
    # The plugin's counters are among the engine's Prometheus metrics (wfe_metrics).
    for line in [
        "wfe_kafka_consumed_total 18",
        "wfe_kafka_dead_lettered_total 17",
        "wfe_kafka_submitted_total 1",
        "wfe_kafka_results_published_total 1",
        "wfe_kafka_paused 0",
        "wfe_kafka_partitions_assigned 1",
    ]:
        assert f"\n{line}\n" in metrics, line
    with topics.reader(topics.dlq) as reader:
        letters = reader.wait_for(17)
    assert [(r.key, r.value) for r in letters] == bad  # original bytes, in order
    errors = {r.key: dict(r.headers) for r in letters}
    assert b"not valid JSON" in errors[b"k-json"]["wfe.error"]
    assert errors[b"k-list"]["wfe.error"] == b"not a task: expected a JSON object, got an array"
    assert errors[b"k-nowf"]["wfe.error"] == b"not a task: workflow_name is missing"
    assert errors[b"k-workflow"]["wfe.error"] == (
        b"not a task: workflow_name is missing (did you mean workflow_name?)"
    )
    assert errors[b"k-unknown"]["wfe.error.type"] == b"UnknownWorkflowError"
    assert b"no-such-workflow" in errors[b"k-unknown"]["wfe.error"]
    assert b"newer" in errors[b"k-future"]["wfe.error"]
    assert errors[b"k-phase"]["wfe.error.type"] == b"InvalidTaskError"
    assert errors[b"k-deep"]["wfe.error"] == b"not a task: it is nested deeper than 200 levels"
    assert errors[b"k-deep-900"]["wfe.error.type"] == b"InvalidTaskError"
    assert errors[b"k-deep-900"]["wfe.error"].endswith(b"it is nested deeper than 200 levels")
    assert b"unpaired UTF-16 surrogate" in errors[b"k-surrogate"]["wfe.error"]
    assert errors[b"k-nan"]["wfe.error"] == b"not valid JSON: NaN is not a JSON number"
    assert errors[b"k-empty-id"]["wfe.error"].startswith(b"id: must not be empty")
    for key, said in [
        (b"k-utf16", b"not UTF-8 text: it starts with a UTF-16 byte order mark"),
        (b"k-utf16be", b"not UTF-8 text: it looks like UTF-16-BE"),
        (b"k-utf32", b"not UTF-8 text: it starts with a UTF-32 byte order mark"),
        (b"k-utf8-bom", b"not UTF-8 text: it starts with a UTF-8 byte order mark"),
        (b"k-cesu", b"not UTF-8 text: the bytes ed a0 80 at position 43 are a UTF-16 surrogate"),
    ]:
        assert errors[key]["wfe.error.type"] == b"BadMessage", key
        assert errors[key]["wfe.error"].startswith(said), errors[key]["wfe.error"]
    assert errors[b"k-json"]["wfe.source.topic"] == topics.tasks.encode()
    assert errors[b"k-json"]["wfe.source.offset"] == b"0"
    with topics.reader(topics.results) as reader:
        [result] = [json.loads(r.value) for r in reader.wait_for(1)]
    assert (result["id"], result["output"]) == ("ok-1", {"doubled": 10})


def test_a_tombstone_is_dead_lettered_as_one_and_unknown_fields_are_named_once(
    kafka_topics: MakeTopics,
    wfe_engine_factory: Any,
    wfe_run: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A tombstone's letter said "empty message"; a misspelt field (classifcation)
    was ignored without a word, and the task started at its first phase."""
    topics = kafka_topics(dlq=True)
    topics.send(
        [
            (b"order-1", None),
            (
                b"typo-1",
                task_json(
                    id="typo-1",
                    workflow_name="double",
                    data={"n": 1},
                    classifcation="double",
                    producer="billing",
                ),
            ),
            (
                b"typo-2",
                task_json(id="typo-2", workflow_name="double", data={"n": 2}, classifcation=1),
            ),
        ]
    )
    engine = echo_engine(wfe_engine_factory)
    kafka = topics.interface(dead_letter_topic=topics.dlq)
    caplog.set_level(logging.INFO, logger="wfe_kafka")
    wfe_run(serve(engine, kafka, consumed=3, results_published=2))
    with topics.reader(topics.dlq) as reader:
        [letter] = reader.wait_for(1)
    assert (letter.key, letter.value) == (b"order-1", None)  # as it came
    headers = dict(letter.headers)
    assert headers["wfe.error"] == b"a tombstone (a key with a null value), not a task message"
    assert headers["wfe.error.type"] == b"BadMessage"
    # Unknown fields are ignored (the tasks ran), each name said once: a warning
    # for one like a task message field, information for another.
    ignored = [r for r in caplog.records if "is not a task message field" in r.getMessage()]
    assert [(r.levelno, r.getMessage()) for r in ignored] == [
        (
            logging.WARNING,
            f"task message {topics.tasks}/0@1: 'classifcation' is not a task message field "
            "(did you mean classification?) and is ignored (said once for each field name)",
        ),
        (
            logging.INFO,
            f"task message {topics.tasks}/0@1: 'producer' is not a task message field and is "
            "ignored (said once for each field name)",
        ),
    ]


def test_redelivered_messages_do_not_create_second_tasks(
    kafka_topics: MakeTopics, wfe_engine_factory: Any, wfe_run: Any
) -> None:
    topics = kafka_topics(2)
    messages = [(None, task_json(workflow_name="double", data={"n": i})) for i in range(10)]
    messages += [
        (None, task_json(id=f"named-{i}", workflow_name="double", data={"n": i})) for i in range(10)
    ]
    # The same task sent twice (a producer's retry): one task.
    messages.append((None, task_json(id="named-0", workflow_name="double", data={"n": 0})))
    topics.send(messages)
    engine = echo_engine(wfe_engine_factory)
    first = topics.interface()

    async def count() -> int:
        store = await engine.get_store()
        return sum((await store.count_tasks()).values())

    async def scenario() -> tuple[int, int]:
        await serve(engine, first, results_published=20)
        before = await count()
        # A second group reads the whole topic again: every message is redelivered.
        second = topics.interface()
        await serve(engine, second, consumed=21)
        assert second.stats["submitted"] == 0
        assert second.stats["results_published"] == 0
        return before, await count()

    before, after = wfe_run(scenario())
    assert before == after == 20  # the duplicate "named-0" in the topic was one task too
    assert first.stats["submitted"] == 20
    with topics.reader(topics.results) as reader:
        reader.wait_for(20)
        time_limit = time.monotonic() + 1.0
        while time.monotonic() < time_limit:  # nothing more trickles in
            reader.poll()
        assert len(reader.records) == 20
        assert len({r.key for r in reader.records}) == 20


def test_offsets_are_committed_only_once_tasks_are_stored(
    kafka_topics: MakeTopics,
    wfe_engine_factory: Any,
    wfe_store_url: str,
    wfe_run: Any,
) -> None:
    topics = kafka_topics()
    engine = echo_engine(wfe_engine_factory)
    kafka = topics.interface()
    db_path = wfe_store_url.removeprefix("sqlite://")

    async def scenario() -> None:
        await kafka.attach(engine)
        # Another connection holds the database's write lock: nothing can be stored.
        blocker = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        blocker.execute("BEGIN EXCLUSIVE")
        consumer = asyncio.create_task(kafka.consume_tasks(engine))
        try:
            await asyncio.to_thread(
                topics.send,
                [
                    (None, task_json(id=f"t{i}", workflow_name="double", data={"n": i}))
                    for i in range(5)
                ],
            )
            await until(lambda: kafka.stats["received"] == 5, 30, "the consumer to receive 5")
            offsets = await asyncio.to_thread(
                committed, topics.bootstrap, kafka.group_id, topics.tasks, [0]
            )
            assert offsets[0] in (-1, None), f"committed {offsets} before the tasks were stored"
            assert await engine.get_task("t0") is None
            blocker.execute("ROLLBACK")
            await until(lambda: kafka.stats["consumed"] == 5, 60, "5 tasks stored")

            def all_committed() -> bool:
                return committed(topics.bootstrap, kafka.group_id, topics.tasks, [0]) == {0: 5}

            deadline = time.monotonic() + 30
            while not await asyncio.to_thread(all_committed):
                assert time.monotonic() < deadline, "offsets were not committed"
                await asyncio.sleep(0.05)
            assert all([await engine.get_task(f"t{i}") for i in range(5)])
        finally:
            if blocker.in_transaction:
                blocker.execute("ROLLBACK")
            blocker.close()
            kafka.stop_consuming()
            await consumer
            await kafka.close()

    wfe_run(scenario(), timeout=120)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_events_queued_while_kafka_is_down_are_capped_and_counted_as_dropped(
    monkeypatch: pytest.MonkeyPatch, wfe_engine_factory: Any, wfe_run: Any
) -> None:
    import wfe_kafka.results

    monkeypatch.setattr(wfe_kafka.results, "_MAX_QUEUED_EVENTS", 5)
    engine = echo_engine(wfe_engine_factory)
    unreachable = KafkaMQInterface(
        f"127.0.0.1:{_closed_port()}",
        events_topic="wfe.events",
        close_timeout=1.0,
        producer_config={"bootstrap_timeout_ms": 300, "max_block_ms": 300},
    )

    async def scenario() -> tuple[int, int]:
        await unreachable.attach(engine)
        for i in range(12):
            await engine.submit_task({"n": i}, "double")
        await engine.run_until_idle()
        counts = unreachable.stats["events_dropped"], unreachable.stats["publish_errors"]
        await unreachable.close()
        return counts

    dropped, failed = wfe_run(scenario(), timeout=60)
    # 12 tasks make 48 events (submitted, phase started and finished, completed).
    # At most 5 wait, and at most 5 more are in a send that has not failed yet;
    # the others were dropped (counted apart) or failed to send.
    assert dropped > 0
    assert dropped + failed >= 48 - 5 - 5
    assert unreachable.stats["events_published"] == 0


def test_results_survive_kafka_being_down_and_a_worker_restart(
    kafka_bootstrap: str, kafka_topic: TopicFactory, wfe_engine_factory: Any, wfe_run: Any
) -> None:
    results = kafka_topic(2, "results")
    engine = echo_engine(wfe_engine_factory)
    unreachable = KafkaMQInterface(
        f"127.0.0.1:{_closed_port()}",
        results_topic=results,
        outbox_grace=0.0,
        close_timeout=2.0,
        producer_config={"bootstrap_timeout_ms": 300, "max_block_ms": 300},
    )
    engine.register_task_completed_hook(unreachable.publish_result)

    async def while_down() -> int:
        await unreachable.attach(engine)
        for i in range(12):
            await engine.submit_task({"n": i}, "double", task_id=f"d{i}")
        await engine.submit_task(None, "boom", task_id="d-failed")
        await engine.run_until_idle()
        await until(lambda: unreachable.stats["publish_errors"] > 0, 30, "a failed publish")
        await unreachable.close()
        store = await engine.get_store()
        return len(await store.outbox_pending(unreachable.outbox_consumer, 100))

    assert wfe_run(while_down()) == 13  # every finished task waits in the outbox

    # The worker comes back with Kafka reachable: the outbox is sent.
    restarted = interface(kafka_bootstrap, "unused", results, outbox_grace=0.0)

    async def when_back() -> int:
        await restarted.attach(engine)
        await until(lambda: restarted.stats["results_published"] == 13, 30, "13 results")
        await restarted.close()
        store = await engine.get_store()
        return len(await store.outbox_pending(restarted.outbox_consumer, 100))

    assert wfe_run(when_back()) == 0
    with TopicReader(kafka_bootstrap, results) as reader:
        reader.wait_for(13)
        docs = {doc["id"]: doc for doc in reader.values()}
    assert len(docs) == 13
    assert docs["d-failed"]["status"] == "failed"
    assert all(docs[f"d{i}"]["output"] == {"doubled": 2 * i} for i in range(12))


def test_lifecycle_events_share_the_task_key(
    kafka_topics: MakeTopics, wfe_engine_factory: Any, wfe_run: Any
) -> None:
    topics = kafka_topics(events=True)
    [sent] = topics.send([(b"refund-7", task_json(workflow_name="approve", data={"n": 7}))])
    task_id = f"{topics.tasks}-0-{sent.offset}"
    engine = echo_engine(wfe_engine_factory)
    kafka = topics.interface(events_topic=topics.events)

    async def scenario() -> None:
        async with running(engine, kafka):
            await until(lambda: engine.stats["suspended"] == 1, 30, "the task to wait")
            await engine.resume(task_id, {"approved": True})
            await until(lambda: kafka.stats["results_published"] == 1, 30, "the result")
            await until(lambda: kafka.stats["events_published"] >= 8, 30, "the events")

    wfe_run(scenario())
    with topics.reader(topics.events) as reader:
        records = reader.wait_for(8)
        docs = reader.values()
    assert {r.key for r in records} == {task_id.encode()}
    names = [d["event"] for d in docs]
    assert names == [
        "submitted",
        "phase_started",
        "suspended",
        "resumed",
        "phase_finished",
        "phase_started",
        "phase_finished",
        "completed",
    ]
    source = {"topic": topics.tasks, "partition": 0, "offset": sent.offset}
    assert all(d["source"] == source and d["task_id"] == task_id for d in docs)
    suspended = docs[names.index("suspended")]
    assert suspended["question"] == "Approve the refund?"
    assert suspended["deadline"] is not None
    assert suspended["phase"] == "approve"
    # The task is agentic ("ai", the default); the phase it waits in is a person's.
    assert suspended["assigned_to"] == "human"
    assert docs[-1]["output"] == {"doubled": 14}
    with topics.reader(topics.results) as reader:
        [result] = reader.wait_for(1)
    assert result.key == task_id.encode()
    # The task's context as stored: the source, and the digest of what was asked.
    stored = json.loads(result.value)["context"]["kafka"]
    assert stored == {**source, "digest": stored["digest"]} and len(stored["digest"]) == 64


def test_a_failed_attempt_is_an_event_before_the_retry(
    kafka_topics: MakeTopics, wfe_engine_factory: Any, wfe_run: Any
) -> None:
    topics = kafka_topics(events=True)
    engine = wfe_engine_factory(retry_delay=0.01)
    tries: list[int] = []

    async def flaky(task: Any) -> None:
        tries.append(1)
        if len(tries) == 1:
            raise ConnectionError("the service was down")
        task.output = "fetched"

    engine.register_handler("fetch", flaky)
    engine.register_workflow("fetch", [Phase("fetch", assigned_to="functional", max_attempts=2)])
    [sent] = topics.send([(b"f-1", task_json(workflow_name="fetch"))])
    kafka = topics.interface(events_topic=topics.events)
    wfe_run(serve(engine, kafka, lambda: kafka.stats["events_published"] >= 6, "the events"))
    with topics.reader(topics.events) as reader:
        reader.wait_for(6)
        docs = reader.values()
    assert [d["event"] for d in docs] == [
        "submitted",
        "phase_started",
        "attempt_failed",
        "phase_started",
        "phase_finished",
        "completed",
    ]
    failed = docs[2]
    assert (failed["phase"], failed["attempt"], failed["status"]) == ("fetch", 1, "pending")
    assert failed["error"] == "ConnectionError: the service was down"
    assert failed["retry_at"] is not None
    assert failed["task_id"] == f"{topics.tasks}-0-{sent.offset}"


def test_publish_task_hands_a_task_to_another_worker(
    kafka_topics: MakeTopics,
    wfe_engine_factory: Any,
    tmp_path: Any,
    wfe_run: Any,
) -> None:
    topics = kafka_topics(2)
    front = echo_engine(wfe_engine_factory, store=f"sqlite://{tmp_path}/front.db")
    worker = echo_engine(wfe_engine_factory, store=f"sqlite://{tmp_path}/worker.db")
    sender = topics.interface()
    kafka = topics.interface()

    async def scenario() -> str:
        task = await front.submit_task({"n": 21}, "double", task_id="handed-over")
        meta = await sender.publish_task(task)
        assert meta.topic == topics.tasks
        await sender.close()
        await serve(worker, kafka, results_published=1)
        done = await worker.get_task("handed-over")
        assert done is not None
        return done.status.value

    assert wfe_run(scenario()) == "completed"
    with topics.reader(topics.tasks) as reader:
        [message] = reader.wait_for(1)
    assert message.key == b"handed-over"
    assert json.loads(message.value)["format"] == 1


def test_a_message_s_priority_is_the_stored_task_s_and_a_bad_one_is_dead_lettered(
    kafka_topics: MakeTopics, wfe_engine_factory: Any, wfe_run: Any
) -> None:
    """A task message's priority (missing or null: 0) becomes the task's, through
    publish_task too; one submit_task would refuse is dead-lettered naming it."""
    topics = kafka_topics(dlq=True)
    bad = [
        (b"p-text", task_json(workflow_name="double", data={"n": 1}, priority="high")),
        (b"p-float", task_json(workflow_name="double", data={"n": 1}, priority=5.0)),
        (b"p-bool", task_json(workflow_name="double", data={"n": 1}, priority=True)),
        (b"p-big", task_json(workflow_name="double", data={"n": 1}, priority=5000)),
    ]
    topics.send(
        [
            (None, task_json(id="low", workflow_name="double", data={"n": 1}, priority=-3)),
            *bad[:2],
            (None, task_json(id="null", workflow_name="double", data={"n": 2}, priority=None)),
            *bad[2:],
        ]
    )
    engine = echo_engine(wfe_engine_factory)
    sender = topics.interface()
    kafka = topics.interface(dead_letter_topic=topics.dlq)
    engine.register_task_completed_hook(kafka.publish_result)

    async def scenario() -> dict[str, int]:
        await sender.publish_task(
            Task(data={"n": 3}, workflow_name="double", id="high", priority=100)
        )
        await sender.publish_task(
            {"id": "dict", "workflow_name": "double", "data": {"n": 4}, "priority": 7}
        )
        await sender.close()
        await serve(engine, kafka, consumed=8, results_published=4)
        return {t.id: t.priority for t in await engine.list_tasks()}

    assert wfe_run(scenario()) == {"low": -3, "null": 0, "high": 100, "dict": 7}
    assert kafka.stats["dead_lettered"] == 4
    with topics.reader(topics.dlq) as reader:
        letters = reader.wait_for(4)
    assert [(r.key, r.value) for r in letters] == bad
    errors = {r.key: dict(r.headers)["wfe.error"].decode() for r in letters}
    integer = "priority: must be an integer from -1000 to 1000, got "
    assert errors == {
        b"p-text": integer + 'a string ("high")',
        b"p-float": integer + "a number (5.0)",
        b"p-bool": integer + "a boolean (true)",
        b"p-big": "priority: must be from -1000 to 1000, got 5000",
    }
    assert {dict(r.headers)["wfe.error.type"] for r in letters} == {b"BadMessage"}
    with topics.reader(topics.results) as reader:
        reader.wait_for(4)
        results = {doc["id"]: doc["priority"] for doc in reader.values()}
    assert results == {"low": -3, "null": 0, "high": 100, "dict": 7}
    with topics.reader(topics.tasks) as reader:
        sent = [json.loads(r.value) for r in reader.wait_for(8)[-2:]]
    assert [doc.get("priority") for doc in sent] == [100, 7]


def test_consumption_pauses_while_the_engine_has_many_pending_tasks(
    kafka_topics: MakeTopics, wfe_engine_factory: Any, wfe_run: Any
) -> None:
    topics = kafka_topics(2)
    # Five times max_pending, and more than the most a paused consumer may have taken
    # in (max_pending plus the batches in hand, 60): one that did not pause takes all.
    topics.send([(None, task_json(workflow_name="double", data={"n": i})) for i in range(100)])
    engine = echo_engine(wfe_engine_factory)
    kafka = topics.interface(max_pending=20, max_poll_records=10)

    async def stored() -> int:
        store = await engine.get_store()
        return sum((await store.count_tasks()).values())

    async def scenario() -> int:
        consumer = asyncio.create_task(kafka.consume_tasks(engine))
        try:
            # No worker runs yet: the consumer must stop taking messages.
            await until(
                lambda: kafka.paused and kafka.stats["consumed"] == kafka.stats["received"],
                30,
                "the consumer to pause with what it received stored",
            )
            backlog_in_store = await stored()
            runner = asyncio.create_task(engine.run())
            await until(lambda: kafka.stats["results_published"] == 100, 60, "100 results")
            engine.stop()
            await runner
        finally:
            kafka.stop_consuming()
            await consumer
            await kafka.close()
        return backlog_in_store

    backlog_in_store = wfe_run(scenario(), timeout=120)
    # At most max_pending plus the batches already in hand were taken in.
    assert 20 <= backlog_in_store <= 20 + 4 * 10
    assert kafka.stats["submitted"] == 100


def test_a_paused_consumer_resumes_once_half_of_max_pending_has_settled(
    kafka_topics: MakeTopics, wfe_engine_factory: Any, wfe_run: Any
) -> None:
    """Paused, the consumer takes messages again once half of max_pending is free,
    not at the first free place: the engine has work in hand while the next
    messages are fetched, rather than pausing and resuming for each task."""
    topics = kafka_topics(2)
    topics.send([(None, task_json(workflow_name="gated", data={})) for _ in range(60)])
    engine = wfe_engine_factory(max_concurrency=1)
    kafka = topics.interface(max_pending=10, max_poll_records=5)

    async def scenario() -> None:
        permits = asyncio.Semaphore(0)

        async def gated(task: Task) -> None:
            await permits.acquire()  # one task completes per permit

        engine.register_handler("gated", gated)
        engine.register_workflow("gated", [Phase("gated", assigned_to="functional")])
        store = await engine.get_store()

        async def completed(count: int) -> None:
            while (await store.count_tasks()).get(TaskStatus.COMPLETED, 0) < count:
                await asyncio.sleep(0.02)

        async with running(engine, kafka):
            await until(
                lambda: kafka.paused and kafka.stats["consumed"] == kafka.stats["received"],
                30,
                "the consumer to pause with what it received stored",
            )
            held = kafka.stats["received"]
            for _ in range(held - 6):
                permits.release()
            await asyncio.wait_for(completed(held - 6), 30)
            # 6 at hand, more than half of max_pending: several looks of the consumer
            # (each 0.2 s at most) later it still takes nothing.
            watch_until = time.monotonic() + 1.0
            while time.monotonic() < watch_until:
                assert kafka.paused and kafka.stats["received"] == held
                await asyncio.sleep(0.05)
            permits.release()  # 5 at hand: half of max_pending is free
            await until(lambda: kafka.stats["received"] > held, 30, "consumption to resume")
            for _ in range(60):
                permits.release()
            await asyncio.wait_for(completed(60), 60)

    wfe_run(scenario(), timeout=120)
    assert kafka.stats["submitted"] == 60


def test_a_max_pending_of_one_holds_one_task(
    kafka_topics: MakeTopics, wfe_engine_factory: Any, wfe_run: Any
) -> None:
    topics = kafka_topics(1)
    topics.send([(None, task_json(workflow_name="double", data={"n": i})) for i in range(5)])
    engine = echo_engine(wfe_engine_factory)
    kafka = topics.interface(max_pending=1, max_poll_records=1)

    async def scenario() -> None:
        store = await engine.get_store()
        consumer = asyncio.create_task(kafka.consume_tasks(engine))
        try:
            # No worker runs: once it holds one task, the consumer takes no more.
            await until(
                lambda: kafka.paused and kafka.stats["consumed"] == kafka.stats["received"] > 0,
                30,
                "the consumer to pause with what it received stored",
            )
            watch_until = time.monotonic() + 1.0  # several looks of the consumer
            while time.monotonic() < watch_until:
                assert sum((await store.count_tasks()).values()) == 1
                await asyncio.sleep(0.05)
        finally:
            kafka.stop_consuming()
            await consumer
            await kafka.close()

    wfe_run(scenario(), timeout=60)


def test_a_partition_paused_with_records_in_hand_is_fetched_again_once_resumed(
    kafka_bootstrap: str, kafka_topic: TopicFactory
) -> None:
    """kafka-python 3.0.12 sets aside the records it holds for a partition that is
    paused, and fetches nothing more for that partition until it returns them: only
    at a poll whose in-line records are None, which a poll that used them up does
    not leave. A partition paused for backpressure while the consumer held records
    of it then got nothing more for as long as the consumer lived (seen as a
    partition left unconsumed, its messages never stored, after workers joined and
    left a group). The consumer's poll (``_poll``) hands the records back."""
    topic = kafka_topic(partitions=2)
    for partition in (0, 1):
        produce(
            kafka_bootstrap,
            topic,
            [(None, f"{partition}-{n}".encode()) for n in range(10)],
            partition=partition,
        )
    consumer = KafkaConsumer(
        bootstrap_servers=kafka_bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    got: dict[int, list[int]] = {0: [], 1: []}

    def poll(max_records: int) -> dict[Any, list[Any]]:
        records = _poll(consumer, timeout_ms=100, max_records=max_records)
        for tp, batch in records.items():
            got[tp.partition].extend(r.offset for r in batch)
        return records

    try:
        consumer.assign([TopicPartition(topic, 0), TopicPartition(topic, 1)])
        # One record of one partition; the rest of its fetch stays in hand.
        [held] = wait_until(lambda: poll(1), 30, "a first record")
        consumer.pause(held)
        poll(1)  # sets the paused partition's records aside, takes the other's
        consumer.resume(held)
        wait_until(
            lambda: poll(100) is not None and sum(map(len, got.values())) == 20,
            30,
            "all 20 records, those of the resumed partition too",
        )
    finally:
        consumer.close()
    assert got == {0: list(range(10)), 1: list(range(10))}


def test_a_worker_of_some_workflows_counts_only_their_tasks_for_backpressure(
    kafka_topics: MakeTopics, wfe_engine_factory: Any, wfe_run: Any
) -> None:
    """Pending tasks of workflows it never runs must not keep it from taking messages."""
    topics = kafka_topics(2)
    engine = echo_engine(wfe_engine_factory, only_workflows=["double"])
    kafka = topics.interface(max_pending=3, max_poll_records=2)

    def send(numbers: range) -> None:
        topics.send(
            [
                (f"d{i}".encode(), task_json(id=f"d{i}", workflow_name="double", data={"n": i}))
                for i in numbers
            ]
        )

    async def scenario() -> list[Task | None]:
        # Other workers' backlog in the shared store: more than max_pending.
        await engine.submit_tasks([{"data": {}, "workflow_name": "boom"}] * 5)
        async with running(engine, kafka):
            send(range(12))  # a burst: the consumer gets busy and recounts
            await until(lambda: kafka.stats["results_published"] == 12, 60, "12 results")
            send(range(12, 16))  # taken only if the recount left out the others' tasks
            await until(lambda: kafka.stats["results_published"] == 16, 30, "16 results")
        return [await engine.get_task(f"d{i}") for i in range(16)]

    done = wfe_run(scenario(), timeout=120)
    assert [t.status for t in done] == [TaskStatus.COMPLETED] * 16


def test_auto_wiring_from_the_environment(
    kafka_topics: MakeTopics,
    wfe_engine_factory: Any,
    wfe_run: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from wfe_kafka.plugin import interface_for

    topics = kafka_topics(2)
    group = f"auto-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("WFE_LOAD_PLUGINS", "wfe_kafka")
    monkeypatch.setenv("KAFKA_BROKERS", topics.bootstrap)
    monkeypatch.setenv("WFE_KAFKA_TASKS_TOPIC", topics.tasks)
    monkeypatch.setenv("WFE_KAFKA_RESULTS_TOPIC", topics.results)
    monkeypatch.setenv("WFE_KAFKA_GROUP", group)
    monkeypatch.setenv("WFE_KAFKA_CLIENT_CONFIG", json.dumps(FAST_GROUP))
    topics.send(
        [(None, task_json(id=f"auto-{i}", workflow_name="double", data={"n": i})) for i in range(8)]
    )
    engine = echo_engine(wfe_engine_factory, load_plugins=True)
    seen: list[Any] = []

    async def scenario() -> None:
        runner = asyncio.create_task(engine.run())
        await until(lambda: interface_for(engine) is not None, 10, "the plugin to wire Kafka")
        kafka = interface_for(engine)
        assert kafka is not None
        seen.append(kafka)
        # What the worker's start-up lines say is what it was wired to.
        assert report_header(engine) == [
            f"kafka: consuming {topics.tasks} (group {group}) at {topics.bootstrap}; "
            f"results to {topics.results}; dead letters to {topics.tasks}.dlq"
        ]
        await until(lambda: kafka.stats["results_published"] == 8, 30, "8 results")
        engine.stop()
        await runner
        assert interface_for(engine) is None

    wfe_run(scenario())
    assert seen[0].engine is None  # closed when the engine stopped
    # Every partition that holds messages is committed up to its end.
    ends = {p: end for p, end in enumerate(_ends(topics.bootstrap, topics.tasks)) if end}
    assert committed(topics.bootstrap, group, topics.tasks, list(ends)) == ends
    with topics.reader(topics.results) as reader:
        reader.wait_for(8)
        assert sorted(d["id"] for d in reader.values()) == sorted(f"auto-{i}" for i in range(8))


def _ends(bootstrap: str, topic: str) -> list[int]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        parts = [TopicPartition(topic, p) for p in (0, 1)]
        ends = consumer.end_offsets(parts)
        return [ends[p] for p in parts]
    finally:
        consumer.close()


def test_a_store_failure_while_storing_a_batch_is_retried_not_dead_lettered(
    kafka_topics: MakeTopics, wfe_engine_factory: Any, wfe_run: Any
) -> None:
    """The store refusing writes (a full disk, a locked file) is not the messages'
    fault: the batch is stored once the store recovers, and nothing is dead-lettered."""
    topics = kafka_topics()
    topics.send([(None, task_json(workflow_name="double", data={"n": i})) for i in range(5)])
    engine = echo_engine(wfe_engine_factory)
    kafka = topics.interface()
    refusals: list[int] = []

    async def scenario() -> int:
        store = await engine.get_store()
        insert_tasks = store.insert_tasks

        async def refuse_twice(batch: Any) -> Any:
            if batch and len(refusals) < 2:
                refusals.append(len(batch))
                raise StoreError("database is locked")
            return await insert_tasks(batch)

        store.insert_tasks = refuse_twice  # type: ignore[method-assign]
        await serve(engine, kafka, results_published=5)
        return sum((await store.count_tasks()).values())

    assert wfe_run(scenario()) == 5
    assert len(refusals) == 2
    assert kafka.stats["dead_lettered"] == 0
    assert kafka.stats["submitted"] == 5
    assert kafka.stats["received"] == 5  # retried in place: no consumer restart, no redelivery


def test_a_result_too_large_for_its_history_keeps_its_output_and_last_events(
    kafka_bootstrap: str, kafka_topic: TopicFactory, wfe_engine_factory: Any, wfe_run: Any
) -> None:
    """A task that looped through many phases is mostly history: its result goes
    with the last 100 events and its output; one too large even so goes without
    its bulk."""
    tasks = kafka_topic(1, "tasks")
    results = kafka_topic(1, "results", {"max.message.bytes": "20000"})
    produce(
        kafka_bootstrap,
        tasks,
        [
            (b"loop", task_json(id="loop", workflow_name="loop", data={"rounds": 150})),
            (
                b"loop-big",
                task_json(id="loop-big", workflow_name="loop", data={"rounds": 150, "pad": 30_000}),
            ),
        ],
    )
    engine = wfe_engine_factory()

    async def step(task: Task) -> None:
        n = task.context.get("n", 0) + 1
        task.context["n"] = n
        task.next_classification = "step" if n < task.data["rounds"] else "end"

    async def end(task: Task) -> None:
        task.output = {"rounds": task.context["n"], "pad": "y" * task.data.get("pad", 0)}

    engine.register_handler("step", step)
    engine.register_handler("end", end)
    engine.register_workflow(
        "loop", [Phase("step", next_classifications=["step", "end"]), Phase("end")]
    )
    kafka = interface(kafka_bootstrap, tasks, results)

    async def scenario() -> dict[str, Task]:
        await serve(engine, kafka, results_published=2)
        return {i: await engine.get_task(i) for i in ("loop", "loop-big")}

    stored = wfe_run(scenario())
    with TopicReader(kafka_bootstrap, results) as reader:
        reader.wait_for(2)
        by_id = {doc["id"]: doc for doc in reader.values()}
    loop = by_id["loop"]
    assert loop["output"] == {"rounds": 150, "pad": ""}
    assert loop["outputs"]["end"] == loop["output"]
    assert "result_too_large" not in loop
    history = stored["loop"].history
    assert len(history) > 300
    assert loop["history_left_out"] == len(history) - 100
    assert loop["history"] == history[-100:]
    assert loop["history"][-1]["event"] == "completed"
    big = by_id["loop-big"]
    assert big["result_too_large"] > 30_000
    assert big["output"] is None and big["history"] == []
    assert "history_left_out" not in big

    # publish_result as a completed hook, the interface attached to no engine: alike.
    hooked = interface(kafka_bootstrap, tasks, results)

    async def publish() -> None:
        try:
            await hooked.publish_result(stored["loop"])
        finally:
            await hooked.close()

    wfe_run(publish())
    with TopicReader(kafka_bootstrap, results) as reader:
        [*_, again] = reader.wait_for(3)
    assert json.loads(again.value) == loop


def test_tasks_compressed_by_their_producer_are_consumed(
    kafka_bootstrap: str, kafka_topic: TopicFactory, wfe_engine_factory: Any, wfe_run: Any
) -> None:
    """Producers in other languages compress their batches (a Java producer's
    compression.type): each codec Kafka has is read, rather than the consumer failing
    on the batch for ever."""
    codecs = ["gzip", "snappy", "lz4", "zstd"]
    tasks, results = kafka_topic(1, "tasks"), kafka_topic(1, "results")
    for n, codec in enumerate(codecs):
        # Large enough to compress: kafka-python sends a batch compression does not
        # make smaller as it is.
        message = task_json(id=codec, workflow_name="double", data={"n": n, "pad": "x" * 2000})
        produce(kafka_bootstrap, tasks, [(None, message)], compression_type=codec)
    engine = echo_engine(wfe_engine_factory)
    kafka = interface(kafka_bootstrap, tasks, results)
    wfe_run(serve(engine, kafka, results_published=len(codecs)))
    with TopicReader(kafka_bootstrap, results) as reader:
        reader.wait_for(len(codecs))
        outputs = {doc["id"]: doc["output"] for doc in reader.values()}
    assert outputs == {codec: {"doubled": 2 * n} for n, codec in enumerate(codecs)}


def test_events_too_large_for_their_topic_never_shrink_a_result(
    kafka_bootstrap: str, kafka_topic: TopicFactory, wfe_run: Any
) -> None:
    """Kafka refusing a record as too large fails every record in flight on its
    producer. Events have a producer of their own: results sent while events too
    large for their topic are refused, as the events publisher sends them, go whole
    (on one producer, a third of them went without their output)."""
    results = kafka_topic(1, "results")
    events = kafka_topic(1, "events", {"max.message.bytes": "600"})
    kafka = interface(kafka_bootstrap, kafka_topic(1, "tasks"), results, events_topic=events)

    def finished(n: int) -> Task:
        return Task(
            id=f"r{n}", data=n, workflow_name="w", status=TaskStatus.COMPLETED, output="y" * 300
        )

    async def refused_events() -> None:
        for _ in range(30):
            await kafka._get_events_producer().send_many([(events, b"e", b"x" * 2000, None)])

    async def published_results() -> None:
        for n in range(30):
            await kafka.publish_result(finished(n))

    async def scenario() -> None:
        try:
            await asyncio.gather(refused_events(), published_results())
        finally:
            await kafka.close()

    wfe_run(scenario())
    with TopicReader(kafka_bootstrap, results) as reader:
        reader.wait_for(30)
        outputs = {doc["id"]: doc["output"] for doc in reader.values()}
    assert outputs == {f"r{n}": "y" * 300 for n in range(30)}


def test_records_known_too_large_go_smaller_without_being_sent_first(
    kafka_bootstrap: str,
    kafka_topic: TopicFactory,
    wfe_engine_factory: Any,
    wfe_run: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Kafka refusing a record breaks its producer (replaced in about 130 ms, with a
    few ERROR lines of kafka-python's). Once it has refused one of a size, those at
    least as large go in their smaller form at once: a workflow whose every event
    is too large for the events topic does not replace the producer at each."""
    count = 30
    tasks, results = kafka_topic(1, "tasks"), kafka_topic(1, "results")
    events = kafka_topic(1, "events", {"max.message.bytes": "600"})
    produce(
        kafka_bootstrap,
        tasks,
        [
            (None, task_json(id=f"t{i}", workflow_name="pad", data={"size": 700}))
            for i in range(count)
        ],
    )
    engine = echo_engine(wfe_engine_factory)
    kafka = interface(kafka_bootstrap, tasks, results, events_topic=events)
    caplog.set_level(logging.WARNING, logger="wfe_kafka")
    wfe_run(serve(engine, kafka, results_published=count, events_published=count * 4))
    replaced = [r for r in caplog.records if "failed for good; replacing it" in r.getMessage()]
    shrunk = [r for r in caplog.records if "without its output" in r.getMessage()]
    # The phase_finished and completed events of every task are too large: each
    # goes without its output, and the producer is replaced a few times, not 60.
    assert len(shrunk) == 2 * count
    assert len(replaced) <= 4, [r.getMessage() for r in replaced]
    with TopicReader(kafka_bootstrap, events) as reader:
        reader.wait_for(count * 4)
        cut = [doc for doc in reader.values() if doc.get("event_too_large")]
    assert len(cut) == 2 * count and all(doc["output"] is None for doc in cut)


def test_messages_too_large_for_kafka_neither_stall_nor_slow_the_others(
    kafka_bootstrap: str, kafka_topic: TopicFactory, wfe_engine_factory: Any, wfe_run: Any
) -> None:
    """A result bigger than its topic takes is published without its bulk (and says
    so), a dead letter bigger than its topic takes without its value, an event
    without its output; none is retried for ever, and those after them are not
    held back."""
    small = {"max.message.bytes": "20000"}
    tasks = kafka_topic(1, "tasks")
    results, dlq = kafka_topic(1, "results", small), kafka_topic(1, "dlq", small)
    events = kafka_topic(1, "events", small)
    produce(
        kafka_bootstrap,
        tasks,
        [
            (
                b"big",
                task_json(id="big", workflow_name="double", data={"n": 1, "pad": "x" * 30_000}),
            ),
            (b"bad", b"not json " + b"x" * 30_000),
            (b"big-out", task_json(id="big-out", workflow_name="pad", data={"size": 30_000})),
            *[
                (None, task_json(id=f"small-{i}", workflow_name="double", data={"n": i}))
                for i in range(3)
            ],
        ],
    )
    engine = echo_engine(wfe_engine_factory)
    kafka = interface(kafka_bootstrap, tasks, results, dead_letter_topic=dlq, events_topic=events)

    async def scenario() -> list[Any]:
        await serve(engine, kafka, results_published=5, dead_lettered=1, events_published=5 * 4)
        store = await engine.get_store()
        return await store.outbox_pending(kafka.outbox_consumer, 10)

    started = time.monotonic()
    assert wfe_run(scenario()) == []
    assert time.monotonic() - started < 20  # no backoff grew on the big one's account
    with TopicReader(kafka_bootstrap, results) as reader:
        reader.wait_for(5)
        by_id = {doc["id"]: doc for doc in reader.values()}
    assert by_id["big-out"]["result_too_large"] > 30_000
    with TopicReader(kafka_bootstrap, events) as reader:
        reader.wait_for(20)
        big_out = [doc for doc in reader.values() if doc["task_id"] == "big-out"]
    assert [d["event"] for d in big_out] == [
        "submitted",
        "phase_started",
        "phase_finished",
        "completed",
    ]
    for doc in big_out[2:]:
        assert doc["output"] is None and doc["event_too_large"] > 30_000
        assert doc["status"] == "completed"
    big = by_id["big"]
    assert big["status"] == "completed"
    assert big["result_too_large"] > 20_000
    assert big["data"] is None and big["output"] is None and big["outputs"] == {}
    assert big["context"]["kafka"]["topic"] == tasks
    assert task_from_dict(big).status is TaskStatus.COMPLETED
    assert by_id["small-2"]["output"] == {"doubled": 4}
    with TopicReader(kafka_bootstrap, dlq) as reader:
        [letter] = reader.wait_for(1)
    headers = dict(letter.headers)
    assert letter.key == b"bad" and letter.value == b""
    assert int(headers["wfe.value.omitted"]) == 30_009
    assert b"not valid JSON" in headers["wfe.error"]


def test_a_bad_message_as_large_as_its_topic_takes_does_not_stall_its_partition(
    kafka_topics: MakeTopics, wfe_engine_factory: Any, wfe_run: Any
) -> None:
    """Keyless bad messages of 1 MB, the most the tasks topic (and the dead-letter
    topic) takes, whose dead letters are a few headers too large: one is
    dead-lettered with an empty value, the other, whose bulk is in its headers,
    without its headers. The task behind them runs and the group's committed offset
    passes all three. (Kafka-python refused a keyless letter without its value, and
    Kafka one whose headers stayed 1 MB; each was retried for ever, and the
    partition's offsets were never committed again.)"""
    topics = kafka_topics(dlq=True)
    # Nearly the most a topic (max.message.bytes 1,048,588) and kafka-python's
    # producer (max_request_size 1,048,576) take; a dead letter's headers pass it.
    size = 1_048_450
    topics.send(
        [
            (None, b"x" * size),
            (None, b"not json", [("trace", b"t-1"), ("pad", b"y" * size)]),
            (None, task_json(id="good", workflow_name="double", data={"n": 4})),
        ]
    )
    engine = echo_engine(wfe_engine_factory)
    kafka = topics.interface(dead_letter_topic=topics.dlq)
    wfe_run(serve(engine, kafka, consumed=3, results_published=1))
    assert kafka.stats["dead_lettered"] == 2
    assert committed(topics.bootstrap, kafka.group_id, topics.tasks, [0]) == {0: 3}
    with topics.reader(topics.results) as reader:
        [result] = reader.wait_for(1)
    assert json.loads(result.value)["output"] == {"doubled": 8}
    with topics.reader(topics.dlq) as reader:
        big_value, big_headers = reader.wait_for(2)
    # Where it came from and why, so the value can be read at its offset.
    source = topics.tasks.encode()
    headers = dict(big_value.headers)
    assert (big_value.key, big_value.value) == (None, b"")
    assert int(headers["wfe.value.omitted"]) == size
    assert "wfe.headers.omitted" not in headers
    assert headers["wfe.error.type"] == b"BadMessage"
    assert headers["wfe.error"].startswith(b"not valid JSON")
    assert (headers["wfe.source.topic"], headers["wfe.source.offset"]) == (source, b"0")
    # The value is kept when the headers are the bulk; they alone are left out.
    headers = dict(big_headers.headers)
    assert (big_headers.key, big_headers.value) == (None, b"not json")
    assert int(headers["wfe.headers.omitted"]) == len("trace") + 3 + len("pad") + size
    assert "pad" not in headers and "trace" not in headers and "wfe.value.omitted" not in headers
    assert headers["wfe.error"].startswith(b"not valid JSON")
    assert (headers["wfe.source.topic"], headers["wfe.source.offset"]) == (source, b"1")


def test_a_bad_message_whose_dead_letter_kafka_refuses_in_every_form_is_logged_and_passed(
    kafka_bootstrap: str,
    kafka_topic: TopicFactory,
    wfe_engine_factory: Any,
    wfe_run: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A dead-letter topic that takes no letter, however small (here: one of 64
    bytes at most): the bad message is logged as an ERROR naming where it is, and
    the consumer goes on, its offset committed, instead of retrying for ever."""
    tasks, results = kafka_topic(1, "tasks"), kafka_topic(1, "results")
    dlq = kafka_topic(1, "dlq", {"max.message.bytes": "64"})
    produce(
        kafka_bootstrap,
        tasks,
        [
            (b"bad", b"not json"),
            (None, task_json(id="good", workflow_name="double", data={"n": 4})),
        ],
    )
    caplog.set_level(logging.WARNING, logger="wfe_kafka")
    engine = echo_engine(wfe_engine_factory)
    kafka = interface(kafka_bootstrap, tasks, results, dead_letter_topic=dlq)
    wfe_run(serve(engine, kafka, consumed=2, results_published=1))
    assert committed(kafka_bootstrap, kafka.group_id, tasks, [0]) == {0: 2}
    assert end_offset(kafka_bootstrap, dlq) == 0
    [error] = [r for r in caplog.records if r.levelno == logging.ERROR]
    said = error.getMessage()
    assert f"task message {tasks}/0@0 cannot be dead-lettered to {dlq!r}" in said, said
    assert "MessageSizeTooLargeError" in said, said


def test_without_a_dead_letter_topic_a_bad_message_is_logged_as_passed_over(
    kafka_bootstrap: str,
    kafka_topic: TopicFactory,
    wfe_engine_factory: Any,
    wfe_run: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """dead_letter_topic="" (WFE_KAFKA_DLQ_TOPIC=none): the warning is all that is
    left of a bad message, and it said "dead-lettered", sending the operator to
    look for a dead-letter topic there is none of."""
    tasks, results = kafka_topic(1, "tasks"), kafka_topic(1, "results")
    produce(
        kafka_bootstrap,
        tasks,
        [
            (b"bad", b"not json"),
            (None, task_json(id="good", workflow_name="double", data={"n": 4})),
        ],
    )
    caplog.set_level(logging.WARNING, logger="wfe_kafka")
    engine = echo_engine(wfe_engine_factory)
    kafka = interface(kafka_bootstrap, tasks, results, dead_letter_topic="")
    wfe_run(serve(engine, kafka, consumed=2, results_published=1))
    assert committed(kafka_bootstrap, kafka.group_id, tasks, [0]) == {0: 2}
    said = [r.getMessage() for r in caplog.records if r.name == "wfe_kafka"]
    assert [m for m in said if m.startswith(f"task message {tasks}/0@0 ")] == [
        f"task message {tasks}/0@0 passed over (no dead-letter topic): not valid JSON: "
        "Expecting value: line 1 column 1 (char 0)"
    ], said
    assert not [m for m in said if "dead-letter" in m and "no dead-letter topic" not in m], said


def test_a_dead_letter_keeps_headers_without_a_value_and_a_record_without_key_or_value(
    kafka_topics: MakeTopics, wfe_run: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Headers without a value, and a message with neither key nor value (Java
    producers send such records; kafka-python sends neither): each letter used to
    be refused, then sent without the message's headers. Now the headers go with an
    empty value for a null one, named in wfe.headers.null, and the key and value
    as they were (an empty value for a record with neither)."""
    topics = kafka_topics(dlq=True)
    kafka = topics.interface(dead_letter_topic=topics.dlq)
    caplog.set_level(logging.WARNING, logger="wfe_kafka")
    # As kafka-python's consumer gives such records.
    bare = SimpleNamespace(
        topic=topics.tasks, partition=0, offset=7, key=None, value=None, headers=[("trace", None)]
    )
    mixed = SimpleNamespace(
        topic=topics.tasks,
        partition=0,
        offset=8,
        key=b"order-1",
        value=b"{not json",
        headers=[("trace", b"abc"), ("empty", None), ("trace", None)],
    )

    async def scenario() -> None:
        try:
            await kafka._dead_letter(
                [(bare, BadMessage("no value (null)")), (mixed, BadMessage("not valid JSON"))]
            )
        finally:
            await kafka.close()

    wfe_run(scenario())
    with topics.reader(topics.dlq) as reader:
        first, second = reader.wait_for(2)
    assert (first.key, first.value) == (None, b"")
    assert first.headers[0] == ("trace", b"")
    headers = dict(first.headers)
    assert headers["wfe.headers.null"] == b"0" and "wfe.headers.omitted" not in headers
    assert headers["wfe.error"] == b"no value (null)"
    assert headers["wfe.source.offset"] == b"7"
    assert (second.key, second.value) == (b"order-1", b"{not json")
    assert second.headers[:3] == [("trace", b"abc"), ("empty", b""), ("trace", b"")]
    assert dict(second.headers)["wfe.headers.null"] == b"1,2"
    assert not [r for r in caplog.records if "was refused" in r.getMessage()]


def wfe_cli(store_url: str, *args: str) -> None:
    """Run ``wfe ARGS --store URL`` in a process of its own, without Kafka."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "WFE_KAFKA_"))}
    subprocess.run(
        [sys.executable, "-m", "wfcore.cli", *args, "--store", store_url],
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )


def test_a_task_retried_after_its_failure_was_published_publishes_its_new_result(
    kafka_topics: MakeTopics,
    wfe_engine_factory: Any,
    wfe_store_url: str,
    wfe_run: Any,
) -> None:
    topics = kafka_topics()
    topics.send([(None, task_json(id="fl-1", workflow_name="flaky"))])
    engine = echo_engine(wfe_engine_factory)
    fixed = False

    async def flaky(task: Task) -> None:
        if not fixed:
            raise RuntimeError("not yet")
        task.output = "fine now"

    engine.register_handler("flaky", flaky)
    engine.register_workflow("flaky", [Phase("flaky", assigned_to="functional")])
    kafka = topics.interface()

    async def scenario() -> int:
        nonlocal fixed
        async with running(engine, kafka):
            await until(lambda: kafka.stats["results_published"] == 1, 30, "the failure")
            fixed = True
            # Retried by another process, run again by this worker.
            await asyncio.to_thread(wfe_cli, wfe_store_url, "retry", "fl-1")
            await until(lambda: kafka.stats["results_published"] == 2, 30, "the new result")
        store = await engine.get_store()
        return len(await store.outbox_pending(kafka.outbox_consumer, 10))

    assert wfe_run(scenario()) == 0
    with topics.reader(topics.results) as reader:
        docs = [json.loads(r.value) for r in reader.wait_for(2)]
    assert [(d["id"], d["status"]) for d in docs] == [("fl-1", "failed"), ("fl-1", "completed")]
    assert docs[1]["output"] == "fine now"


def test_a_task_finished_by_another_process_gets_its_result_and_final_event(
    kafka_topics: MakeTopics,
    wfe_engine_factory: Any,
    wfe_store_url: str,
    wfe_run: Any,
) -> None:
    topics = kafka_topics(events=True)
    topics.send([(None, task_json(id="asks", workflow_name="approve", data={"n": 1}))])
    engine = echo_engine(wfe_engine_factory)
    kafka = topics.interface(events_topic=topics.events)

    async def scenario() -> None:
        async with running(engine, kafka):
            await until(lambda: engine.stats["suspended"] == 1, 30, "the task to wait")
            await asyncio.to_thread(wfe_cli, wfe_store_url, "cancel", "asks")
            await until(lambda: kafka.stats["results_published"] == 1, 30, "the swept result")
            await until(lambda: kafka.stats["events_published"] == 4, 30, "4 events")

    wfe_run(scenario())
    with topics.reader(topics.results) as reader:
        [result] = [json.loads(r.value) for r in reader.wait_for(1)]
    assert result["status"] == "cancelled"
    with topics.reader(topics.events) as reader:
        records = reader.wait_for(4)
        docs = reader.values()
    assert [d["event"] for d in docs] == ["submitted", "phase_started", "suspended", "cancelled"]
    assert {r.key for r in records} == {b"asks"}
    assert docs[-1]["status"] == "cancelled"
    assert docs[-1]["source"] == {"topic": topics.tasks, "partition": 0, "offset": 0}


def end_offset(bootstrap: str, topic: str) -> int | None:
    """The end offset of partition 0 of ``topic`` (None: no such topic yet)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        if not consumer.partitions_for_topic(topic):
            return None
        tp = TopicPartition(topic, 0)
        return consumer.end_offsets([tp])[tp]
    finally:
        consumer.close()


def test_a_message_whose_id_another_task_has_is_dead_lettered_not_swallowed(
    kafka_topics: MakeTopics,
    wfe_engine_factory: Any,
    wfe_run: Any,
    caplog: pytest.LogCaptureFixture,
    broker_tools: Any,
) -> None:
    kafka_broker = broker_tools
    topics = kafka_topics(dlq=True)
    topics.send(
        [
            (b"a", task_json(id="m-ok", workflow_name="double", data={"n": 1})),
            (b"b", task_json(workflow_name="double", data={"n": 2})),  # id tasks-0-1
            (b"c", task_json(id="m-ok", workflow_name="boom", data="dup")),
        ]
    )
    engine = echo_engine(wfe_engine_factory)
    caplog.set_level(logging.WARNING, logger="wfe_kafka")
    first = topics.interface(dead_letter_topic=topics.dlq)
    wfe_run(serve(engine, first, consumed=3, results_published=2))
    assert first.stats["dead_lettered"] == 1
    # The tasks topic is deleted and made again: its offsets start over, so a
    # message without an id maps to the id of a task from the old topic.
    kafka_broker.delete_topics(topics.bootstrap, [topics.tasks])

    def made_again() -> bool:
        try:
            kafka_broker.create_topic(topics.bootstrap, topics.tasks, 1, timeout=5)
        except TopicAlreadyExistsError:
            pass  # the deletion is still going on, or a client's metadata request made it
        except KafkaTimeoutError:
            pass  # made, but its partition has no leader yet (a busy broker): not yet
        return end_offset(topics.bootstrap, topics.tasks) == 0

    wait_until(made_again, 60, "the tasks topic to be made again")
    topics.send(
        [
            (b"d", task_json(workflow_name="double", data={"n": 3})),
            (b"e", task_json(workflow_name="double", data={"n": 4})),  # id tasks-0-1 again
        ]
    )
    second = topics.interface(dead_letter_topic=topics.dlq)
    wfe_run(serve(engine, second, consumed=2, dead_lettered=1))
    with topics.reader(topics.dlq) as reader:
        letters = reader.wait_for(2)
    assert [r.key for r in letters] == [b"c", b"e"]
    errors = [dict(r.headers)["wfe.error"].decode() for r in letters]
    assert errors[0].startswith("id 'm-ok' already used by another task (workflow 'double', from ")
    assert errors[1].startswith(f"id '{topics.tasks}-0-1' already used by another task")
    assert sum("already used by another task" in r.getMessage() for r in caplog.records) == 2


def test_a_message_with_run_after_starts_its_task_no_sooner(
    kafka_topics: MakeTopics, wfe_engine_factory: Any, wfe_run: Any
) -> None:
    from datetime import datetime, timedelta, timezone

    topics = kafka_topics()
    start_at = datetime.now(timezone.utc) + timedelta(seconds=0.5)
    topics.send([
        (None, task_json(id="later", workflow_name="double", data={"n": 1},
                         run_after=start_at.isoformat())),
        (None, task_json(id="now", workflow_name="double", data={"n": 2})),
    ])  # fmt: skip
    engine = echo_engine(wfe_engine_factory)
    kafka = topics.interface()
    engine.register_task_completed_hook(kafka.publish_result)

    async def scenario() -> list[Task]:
        await serve(engine, kafka, results_published=2)
        return [await engine.get_task(i) for i in ("later", "now")]  # type: ignore[misc]

    later, now = wfe_run(scenario())
    assert later.status is TaskStatus.COMPLETED and now.status is TaskStatus.COMPLETED
    assert later.history[0]["run_after"] == start_at.isoformat()
    [started] = [e["at"] for e in later.history if e["event"] == "phase_started"]
    assert datetime.fromisoformat(started) >= start_at.replace(
        microsecond=start_at.microsecond // 1000 * 1000
    )


def test_tasks_delayed_for_later_do_not_hold_up_consumption(
    kafka_topics: MakeTopics, wfe_engine_factory: Any, wfe_run: Any
) -> None:
    """A backlog of tasks due tomorrow is no work at hand: the consumer takes the
    messages after them, however many there are."""
    from datetime import datetime, timedelta, timezone

    tomorrow = (datetime.now(timezone.utc) + timedelta(days=1)).isoformat()
    topics = kafka_topics()
    topics.send(
        [
            (None, task_json(workflow_name="double", data={"n": i}, run_after=tomorrow))
            for i in range(50)
        ]
        + [
            (None, task_json(id=f"now-{i}", workflow_name="double", data={"n": i}))
            for i in range(5)
        ]
    )
    engine = echo_engine(wfe_engine_factory)
    kafka = topics.interface(max_pending=20, max_poll_records=10)

    async def scenario() -> list[Task]:
        async with running(engine, kafka):
            await until(lambda: kafka.stats["results_published"] == 5, 60, "the 5 due tasks")
        return await engine.list_tasks(status="pending", limit=100)

    later = wfe_run(scenario(), timeout=120)
    assert len(later) == 50


async def mark_seen(task: Task) -> None:
    # A handler changing its task's data: what is stored is no longer what was sent.
    task.data["seen"] = True
    task.output = "marked"


def test_a_message_delivered_again_is_its_own_task_after_the_task_changed_its_data(
    kafka_topics: MakeTopics,
    wfe_engine_factory: Any,
    wfe_run: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A replay, and the same messages sent again, are absorbed, not dead-lettered
    as clashing with themselves: a handler that changes ``task.data``, and a
    ``define_workflow`` task (rebound to the workflow it defines, its data replaced
    by the spec's input), leave the stored task unlike the message."""
    topics = kafka_topics(dlq=True)
    spec = {"name": "greet2", "phases": [{"target_classification": "mark"}], "input": {"who": 1}}
    messages = [
        (b"m", task_json(id="mut-1", workflow_name="mark", data={"n": 1})),
        (b"d", task_json(id="def-1", classification="define_workflow", data=spec)),
    ]
    topics.send(messages)
    engine = echo_engine(wfe_engine_factory)
    engine.register_handler("mark", mark_seen)
    engine.register_workflow("mark", [Phase("mark", assigned_to="functional")])
    caplog.set_level(logging.WARNING, logger="wfe_kafka")
    first = topics.interface(dead_letter_topic=topics.dlq)

    async def changed() -> tuple[Any, Any]:
        mut, defined = await engine.get_task("mut-1"), await engine.get_task("def-1")
        assert mut is not None and defined is not None
        return mut, defined

    async def first_run() -> tuple[Any, Any]:
        await serve(engine, first, results_published=2)
        return await changed()

    mut, defined = wfe_run(first_run())
    # The stored tasks are no longer what their messages said.
    assert mut.data == {"n": 1, "seen": True}
    assert defined.workflow_name == "greet2" and defined.data == {"who": 1, "seen": True}

    # A replay from the start (a new group), and the same two messages sent again.
    topics.send(messages)
    replay = topics.interface(dead_letter_topic=topics.dlq)
    wfe_run(serve(engine, replay, consumed=4))
    assert replay.stats["dead_lettered"] == 0
    assert replay.stats["submitted"] == 0
    assert not [r for r in caplog.records if "dead-lettered" in r.getMessage()]
    assert end_offset(topics.bootstrap, topics.dlq) == 0

    # A message that really is another task under a taken id is still refused.
    topics.send([(b"x", task_json(id="mut-1", workflow_name="mark", data=2))])
    late = topics.interface(dead_letter_topic=topics.dlq)
    wfe_run(serve(engine, late, dead_lettered=1))
    with topics.reader(topics.dlq) as reader:
        [letter] = reader.wait_for(1)
    headers = dict(letter.headers)
    assert headers["wfe.error.type"] == b"IdInUse"
    assert headers["wfe.source.offset"] == b"4"
    assert (
        headers["wfe.error"]
        .decode()
        .startswith(
            f"id 'mut-1' already used by another task (workflow 'mark', from {topics.tasks}/0@0)"
        )
    )


def test_max_pending_holds_however_many_messages_wait(
    kafka_topics: MakeTopics, wfe_engine_factory: Any, wfe_run: Any
) -> None:
    """A poll takes no more than the room left under max_pending: a backlog stays
    in Kafka, where other workers can take it, not in this worker's store."""
    topics = kafka_topics(2)
    # Ten times what max_pending lets in, and fewer than a poll may take (500).
    topics.send([(None, task_json(workflow_name="double", data={"n": i})) for i in range(50)])
    concurrency = 2
    engine = echo_engine(wfe_engine_factory, max_concurrency=concurrency)
    kafka = topics.interface(max_pending=5)  # max_poll_records 500
    most: list[int] = [0]

    async def unfinished() -> int:
        store = await engine.get_store()
        counts = await store.count_tasks()
        return sum(n for status, n in counts.items() if not status.is_finished)

    async def watch() -> None:
        while True:
            most[0] = max(most[0], await unfinished())
            await asyncio.sleep(0.005)

    async def scenario() -> int:
        watcher = asyncio.create_task(watch())
        try:
            await serve(engine, kafka, results_published=50)
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        store = await engine.get_store()
        return (await store.count_tasks()).get(TaskStatus.COMPLETED, 0)

    completed = wfe_run(scenario(), timeout=120)
    assert completed == 50
    assert 1 <= most[0] <= 5 + concurrency, f"the store held {most[0]} unfinished tasks"


def test_stop_consuming_with_nothing_consuming_does_not_stop_the_next_consume(
    kafka_topics: MakeTopics, wfe_engine_factory: Any, wfe_run: Any
) -> None:
    topics = kafka_topics()
    topics.send([(None, task_json(id="s-1", workflow_name="double", data={"n": 1}))])
    engine = echo_engine(wfe_engine_factory)
    kafka = topics.interface()
    kafka.stop_consuming()  # e.g. a cleanup before a retry: there is nothing to stop
    wfe_run(serve(engine, kafka, results_published=1))
    assert kafka.stats["submitted"] == 1


def test_a_memory_store_is_refused_unless_allowed_and_its_losses_are_said(
    kafka_topics: MakeTopics,
    wfe_engine_factory: Any,
    wfe_run: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A message's offset is committed once its task is stored: in memory://, the
    task is gone when the process ends, and Kafka never delivers it again."""
    topics = kafka_topics()
    engine = echo_engine(wfe_engine_factory, store="memory://")
    refused = topics.interface()

    async def refuse() -> None:
        with pytest.raises(RuntimeError, match=r"^the store memory:// does not outlive"):
            await refused.consume_tasks(engine)
        assert refused.engine is None  # nothing attached, nothing consumed
        await refused.close()

    wfe_run(refuse())

    topics.send([(None, task_json(workflow_name="approve", data={"n": i})) for i in range(3)])
    caplog.set_level(logging.WARNING, logger="wfe_kafka")
    allowed = topics.interface(allow_volatile_store=True)

    async def waiting() -> int:
        store = await engine.get_store()
        return (await store.count_tasks()).get(TaskStatus.WAITING_HUMAN, 0)

    async def consume() -> None:
        async with running(engine, allowed):
            deadline = time.monotonic() + 30
            while await waiting() < 3:
                assert time.monotonic() < deadline, "the 3 tasks never started waiting"
                await asyncio.sleep(0.02)

    wfe_run(consume())
    said = [r.getMessage() for r in caplog.records]
    assert any(
        m.startswith(f"consuming {topics.tasks} into the store memory://, which does not outlive")
        for m in said
    )
    assert any(m.startswith("3 unfinished task(s) are lost with the store memory://") for m in said)


def test_stopping_a_consumer_logs_no_error_from_kafka_python(
    kafka_bootstrap: str,
    kafka_topic: TopicFactory,
    wfe_engine_factory: Any,
    wfe_run: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Closing a consumer cancels its requests in flight, and kafka-python logged a
    metadata refresh cancelled so as ``Metadata refresh: failed Cancelled`` at
    ERROR, at most stops soon after the partitions were assigned."""
    tasks, results = kafka_topic(2, "tasks"), kafka_topic(1, "results")
    engine = echo_engine(wfe_engine_factory)
    caplog.set_level(logging.INFO, logger="kafka")
    # At DEBUG the cancelled refresh shows, so the test knows the stop met one.
    caplog.set_level(logging.DEBUG, logger="kafka.cluster")

    def cancelled_refreshes() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.getMessage() == "Metadata refresh: failed Cancelled"]

    async def start_and_stop() -> None:
        # The refresh waits behind a fetch for records, here up to 5 s (not 0.5 s):
        # a stop on a busy machine still meets it in flight.
        kafka = interface(
            kafka_bootstrap, tasks, results, consumer_config={"fetch_max_wait_ms": 5000}
        )
        await kafka.start(engine)
        await until(lambda: kafka.assignment, 30, "the partitions assigned")
        await kafka.close()

    # Not at every stop (the first consumer on a new broker may miss it): a few
    # stops until one met it.
    for _ in range(5):
        wfe_run(start_and_stop())
        if cancelled_refreshes():
            break
    assert cancelled_refreshes(), "no stop met a metadata refresh in flight"
    assert {r.levelno for r in cancelled_refreshes()} == {logging.DEBUG}
    errors = [
        r for r in caplog.records if r.name.startswith("kafka") and r.levelno >= logging.ERROR
    ]
    assert errors == [], [r.getMessage() for r in errors]


_STALE_MEMBER = """
import sys
from kafka import KafkaConsumer
consumer = KafkaConsumer(
    sys.argv[2], bootstrap_servers=sys.argv[1], group_id=sys.argv[3],
    session_timeout_ms=45000, heartbeat_interval_ms=3000,
)
while not consumer.assignment():
    consumer.poll(timeout_ms=200)
print("assigned", flush=True)
sys.stdin.read()  # until killed
"""


def test_a_consumer_stopped_while_its_group_waits_for_a_dead_member_stops_quietly(
    kafka_topics: MakeTopics,
    wfe_engine_factory: Any,
    wfe_run: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A worker restarted after a crash joins a group that waits for its dead
    member's session to end; stopped meanwhile, its LeaveGroup queued behind its
    pending JoinGroup at the coordinator, and kafka-python logged after
    close_timeout: ``LeaveGroup request failed: KafkaTimeoutError``."""
    topics = kafka_topics()
    group = f"g-{uuid.uuid4().hex[:10]}"
    dead = subprocess.Popen(
        [sys.executable, "-c", _STALE_MEMBER, topics.bootstrap, topics.tasks, group],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert dead.stdout is not None and dead.stdout.readline() == "assigned\n"
    finally:
        dead.kill()  # gone without leaving the group
        dead.wait()
    engine = echo_engine(wfe_engine_factory)
    caplog.set_level(logging.INFO, logger="kafka")
    kafka = topics.interface(group_id=group)

    async def scenario() -> None:
        await kafka.start(engine)
        # Our JoinGroup waits at the coordinator for the dead member to rejoin.
        await until(
            lambda: group_state(topics.bootstrap, group)[0] == "PreparingRebalance",
            30,
            "the group to wait for its dead member",
        )
        await kafka.close()

    wfe_run(scenario())
    errors = [
        r for r in caplog.records if r.name.startswith("kafka") and r.levelno >= logging.ERROR
    ]
    assert errors == [], [r.getMessage() for r in errors]
    # Said once, in words that say what it means.
    [left] = [r for r in caplog.records if "without leaving its group" in r.getMessage()]
    assert (left.name, left.levelno) == ("wfe_kafka", logging.WARNING)
    said = left.getMessage()
    assert said.startswith(
        "the Kafka consumer closed without leaving its group (KafkaTimeoutError: Timed out "
    ), said
    assert said.endswith(
        " ms): the group gives its partitions to other workers once its session times out"
    ), said

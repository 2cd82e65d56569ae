"""Prometheus metrics: what a scrape reads from the store and the engine, over real HTTP."""

from __future__ import annotations

import asyncio
import socket
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from core_util import damage_tasks_table, db_path
from prometheus_client.parser import text_string_to_metric_families

from wfcore import Phase, Task, TaskStatus, hookimpl
from wfcore.metrics import CONTENT_TYPE, Metric, MetricsServer, render_metrics
from wfcore.stores.sqlite import SQLiteStore


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample, parsed by Prometheus's own client: {(name, labels): value}."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _get(url: str, method: str = "GET") -> tuple[int, str, str]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def _engine(factory: Any) -> Any:
    engine = factory()

    async def double(task: Task) -> None:
        if task.data == "boom":
            raise ValueError("boom")
        task.output = task.data * 2

    engine.register_handler("double", double)
    engine.register_workflow(
        'sums "quoted"',
        [Phase("double", assigned_to="functional"), Phase("check", assigned_to="human")],
    )
    return engine


def test_a_scrape_counts_the_queue_and_the_engine(wfe_engine_factory, wfe_run) -> None:
    engine = _engine(wfe_engine_factory)
    flow = 'sums "quoted"'
    later = datetime.now(timezone.utc) + timedelta(hours=2)

    async def scenario() -> str:
        store = await engine.get_store()
        await store.outbox_register("kafka:results")
        for n in (1, 2, 3):
            await engine.submit_task(n, flow)
        await engine.submit_task("boom", flow)
        await engine.run_until_idle()
        await engine.submit_task(5, flow, run_after=later)
        return await render_metrics(engine)

    samples = _samples(wfe_run(scenario()))

    def tasks(status: str) -> float:
        return samples[("wfcore_tasks", (("status", status), ("workflow", 'sums "quoted"')))]

    assert tasks("waiting_human") == 3
    assert tasks("failed") == 1
    assert tasks("pending") == 1  # the delayed one
    assert tasks("completed") == 0
    phase = ("wfcore_tasks_in_phase", (("phase", "check"), ("workflow", 'sums "quoted"')))
    assert samples[phase] == 3
    assert samples[("wfcore_tasks_delayed", ())] == 1
    due = samples[("wfcore_tasks_next_due_timestamp_seconds", ())]
    assert abs(due - later.timestamp()) < 1
    assert samples[("wfcore_outbox_unpublished", (("consumer", "kafka:results"),))] == 1
    # Two phases started for each of three tasks (the second waits for a person), one for boom.
    assert samples[("wfcore_engine_phases_total", ())] == 7
    assert samples[("wfcore_engine_tasks_failed_total", ())] == 1
    assert samples[("wfcore_engine_tasks_suspended_total", ())] == 3
    assert samples[("wfcore_engine_running", ())] == 0
    assert samples[("wfcore_workers", ())] == 0


class _Traced(SQLiteStore):
    """A SQLite store that records the statements its connections run."""

    def __init__(self, url: str) -> None:
        super().__init__(db_path(url))
        self.statements: list[str] = []

    def _connect(self) -> Any:
        conn = super()._connect()
        conn.set_trace_callback(self.statements.append)
        return conn


def test_a_scrape_counts_every_workflow_at_once(wfe_engine_factory, wfe_store_url, wfe_run):
    """Tasks by workflow and status, and by phase, are counted with one query each:
    a store of thousands of workflows (defined at run time) costs a scrape as many
    queries as one of three. Tasks of a workflow not known count under workflow=""."""
    store = _Traced(wfe_store_url)
    engine = _engine(lambda: wfe_engine_factory(store=store))
    flow = 'sums "quoted"'

    async def scrape() -> tuple[dict[Any, float], int]:
        store.statements.clear()
        text = await render_metrics(engine)
        return _samples(text), sum("FROM tasks" in sql for sql in store.statements)

    async def scenario() -> tuple[Any, ...]:
        try:
            for n in (1, 2, 3):
                await engine.submit_task(n, flow)
            await engine.run_until_idle()
            await (await engine.get_store()).insert_task(Task(data=0, workflow_name="gone"))
            few, few_queries = await scrape()
            for n in range(40):
                engine.register_workflow(f"more-{n}", [Phase("double", assigned_to="functional")])
            many, many_queries = await scrape()
            return few, few_queries, many, many_queries
        finally:
            await engine.aclose()
            await store.close()

    few, few_queries, many, many_queries = wfe_run(scenario())
    assert many_queries == few_queries
    for samples in (few, many):
        assert samples[("wfcore_tasks", (("status", "waiting_human"), ("workflow", flow)))] == 3
        assert samples[("wfcore_tasks", (("status", "pending"), ("workflow", "")))] == 1
        assert samples[("wfcore_tasks_in_phase", (("phase", "check"), ("workflow", flow)))] == 3
    assert many[("wfcore_tasks", (("status", "pending"), ("workflow", "more-39")))] == 0


def test_a_workflow_defined_at_run_time_drops_out_once_its_tasks_are_purged(
    wfe_engine_factory, wfe_run
) -> None:
    """Workflows defined at run time pile up (a changed spec takes a new name): one
    whose tasks are all gone has no series, or every scrape would carry eight zeros
    for each of thousands. One registered in the app's code keeps its zeros."""
    engine = _engine(wfe_engine_factory)
    spec = {"name": "one-off", "phases": [{"target_classification": "double"}], "input": 2}

    async def scenario() -> tuple[dict[Any, float], dict[Any, float]]:
        await engine.submit_task(spec, None, classification="define_workflow")
        await engine.run_until_idle()
        with_tasks = _samples(await render_metrics(engine))
        await engine.purge(0)
        return with_tasks, _samples(await render_metrics(engine))

    with_tasks, purged = wfe_run(scenario())
    assert with_tasks[("wfcore_tasks", (("status", "completed"), ("workflow", "one-off")))] == 1
    assert [key for key in purged if ("workflow", "one-off") in key[1]] == []
    registered = ("wfcore_tasks", (("status", "pending"), ("workflow", 'sums "quoted"')))
    assert (with_tasks[registered], purged[registered]) == (0, 0)


def test_the_server_answers_metrics_and_health_over_http(wfe_engine_factory, wfe_run) -> None:
    engine = _engine(wfe_engine_factory)

    async def scenario() -> dict[str, Any]:
        server = MetricsServer(engine, "127.0.0.1", 0)
        await server.start()
        seen: dict[str, Any] = {"url": server.url}
        try:
            health = server.url.replace("metrics", "healthz")
            seen["stopped"] = await asyncio.to_thread(_get, health)
            await engine.submit_task(1, 'sums "quoted"')
            running = asyncio.create_task(engine.run())
            await engine.wait_for_task(
                (await engine.list_tasks(limit=1))[0].id, waiting=True, timeout=30
            )
            seen["healthy"] = await asyncio.to_thread(_get, health)
            seen["metrics"] = await asyncio.to_thread(_get, server.url)
            seen["head"] = await asyncio.to_thread(_get, server.url, "HEAD")
            seen["post"] = await asyncio.to_thread(_get, server.url, "POST")
            seen["other"] = await asyncio.to_thread(_get, server.url.replace("metrics", "x"))
            engine.stop()
            await running
        finally:
            await server.close()
        return seen

    seen = wfe_run(scenario())
    assert seen["url"].startswith("http://127.0.0.1:") and seen["url"].endswith("/metrics")
    assert seen["stopped"][0] == 503
    assert seen["stopped"][2] == "the engine is not processing tasks\n"
    assert seen["healthy"] == (200, "text/plain; charset=utf-8", "ok\n")
    status, media, body = seen["metrics"]
    assert (status, media) == (200, CONTENT_TYPE)
    samples = _samples(body)
    assert samples[("wfcore_engine_running", ())] == 1
    assert samples[("wfcore_workers", ())] == 0  # the waiting task holds no lease
    assert seen["head"] == (200, CONTENT_TYPE, "")
    assert seen["post"][0] == 405
    assert seen["other"][0] == 404 and "try /metrics or /healthz" in seen["other"][2]


def test_a_garbled_request_gets_400_and_the_server_goes_on(wfe_engine_factory, wfe_run) -> None:
    engine = _engine(wfe_engine_factory)

    def raw(port: int, data: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(data)
            chunks = []
            while chunk := sock.recv(4096):
                chunks.append(chunk)
            return b"".join(chunks)

    async def scenario() -> tuple[bytes, tuple[int, str, str]]:
        server = MetricsServer(engine)
        await server.start()
        try:
            garbled = await asyncio.to_thread(raw, server.port, b"\x00\xff nonsense\r\n\r\n")
            after = await asyncio.to_thread(_get, server.url)
        finally:
            await server.close()
        return garbled, after

    garbled, after = wfe_run(scenario())
    assert garbled.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert after[0] == 200
    assert TaskStatus.PENDING.value in after[2]


class _Queue:
    """A plugin with figures of its own."""

    @hookimpl
    def wfe_metrics(self, engine):
        return [
            Metric("myplugin_sent_total", "counter", "Messages sent.", 12),
            Metric("myplugin_queue", "gauge", "Queued, by queue.", [({"queue": 'a"b'}, 3)]),
        ]


class _Broken:
    @hookimpl
    def wfe_metrics(self):
        raise RuntimeError("no figures today")


class _Sloppy:
    @hookimpl
    def wfe_metrics(self):
        return ["myplugin_sent_total 3", Metric("x", "gauge", "x", 1)]


class _Copycat:
    @hookimpl
    def wfe_metrics(self):
        return [
            Metric("wfcore_tasks", "gauge", "Not wfcore's.", 1),
            Metric("myplugin_sent_total", "counter", "Again.", 1),
        ]


def test_plugins_add_their_own_metrics_and_a_failing_one_is_left_out(
    wfe_engine_factory, wfe_run, caplog
) -> None:
    engine = wfe_engine_factory(plugins=[_Queue(), _Broken(), _Sloppy(), _Copycat()])
    text = wfe_run(render_metrics(engine))
    samples = _samples(text)
    assert samples[("myplugin_sent_total", ())] == 12
    assert samples[("myplugin_queue", (("queue", 'a"b'),))] == 3
    assert ("x", ()) not in samples  # its plugin returned something else beside it
    assert "Not wfcore's" not in text and "Again." not in text
    warnings = sorted(r.getMessage() for r in caplog.records if r.name == "wfcore.metrics")
    assert warnings == [
        "plugin '_Broken': wfe_metrics failed: RuntimeError: no figures today",
        "plugin '_Copycat': metric myplugin_sent_total is reported already; left out",
        "plugin '_Copycat': metric wfcore_tasks is reported already; left out",
        "plugin '_Sloppy': wfe_metrics failed: TypeError: returned str, not a Metric",
    ]


def test_a_metric_that_prometheus_could_not_read_is_refused_when_made() -> None:
    for args, message in [
        (("my metric", "gauge", "x", 1), "not a Prometheus metric name: 'my metric'"),
        (("m", "histogram", "x", 1), "metric m: kind must be 'counter' or 'gauge'"),
        (("m", "gauge", "x", [({"le-1": "a"}, 1)]), "metric m: bad label le-1='a'"),
        (("m", "gauge", "x", [({"a": 1}, 1)]), "metric m: bad label a=1"),
        (("m", "gauge", "x", [({}, "3")]), "metric m: a value must be a number, not '3'"),
    ]:
        with pytest.raises(ValueError) as refused:
            Metric(*args)
        assert str(refused.value) == message


def test_tasks_in_their_first_phase_count_under_phase_empty(wfe_engine_factory, wfe_run) -> None:
    """Until the store learns the phase a task submitted without one runs (at a lease
    renewal, 10 s on here, or as the phase ends), the task still counts among the
    unfinished ones by phase, under phase="", so
    that the phases add up to the unfinished tasks of the workflow."""
    engine = wfe_engine_factory()
    started = asyncio.Event()
    release = asyncio.Event()

    async def hold(task: Task) -> None:
        started.set()
        await release.wait()

    engine.register_handler("hold", hold)
    engine.register_workflow("held", [Phase("hold", assigned_to="functional")])
    later = datetime.now(timezone.utc) + timedelta(hours=2)

    async def scenario() -> dict[Any, float]:
        await engine.submit_task(0, "held", run_after=later)  # pending, not due
        await engine.submit_task(1, "held")
        running = asyncio.create_task(engine.run())
        try:
            await asyncio.wait_for(started.wait(), 30)
            return _samples(await render_metrics(engine))
        finally:
            release.set()
            engine.stop()
            await running

    samples = wfe_run(scenario())
    assert samples[("wfcore_tasks", (("status", "in_progress"), ("workflow", "held")))] == 1
    assert samples[("wfcore_tasks", (("status", "pending"), ("workflow", "held")))] == 1
    assert samples[("wfcore_tasks_in_phase", (("phase", ""), ("workflow", "held")))] == 2


class _Wordy:
    @hookimpl
    def wfe_metrics(self):
        return [Metric("wordy_total", "counter", "Sent.\nSee C:\\logs.", 4)]


def test_a_plugins_help_text_is_escaped(wfe_engine_factory, wfe_run) -> None:
    """A line feed or backslash in a plugin's help would break the whole scrape."""
    engine = wfe_engine_factory(plugins=[_Wordy()])
    text = wfe_run(render_metrics(engine))
    assert "# HELP wordy_total Sent.\\nSee C:\\\\logs.\n" in text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["wordy"].documentation == "Sent.\nSee C:\\logs."
    assert _samples(text)[("wordy_total", ())] == 4


def test_a_damaged_store_fails_a_scrape_with_one_log_line(
    wfe_engine_factory, wfe_store_url, wfe_run, caplog
) -> None:
    """Prometheus scrapes every 15 s or so: a store that fails each scrape (here its
    file damaged) gets a 500 and one warning line each time, not a traceback."""
    path = db_path(wfe_store_url)

    async def fill() -> None:
        store = SQLiteStore(path)
        engine = _engine(lambda: wfe_engine_factory(store=store))
        try:
            await engine.submit_task(1, 'sums "quoted"')
        finally:
            await engine.aclose()
            await store.close()

    wfe_run(fill())
    damage_tasks_table(path)

    async def scrape() -> tuple[int, str, str]:
        store = SQLiteStore(path)
        engine = wfe_engine_factory(store=store)
        server = MetricsServer(engine)
        await server.start()
        try:
            return await asyncio.to_thread(_get, server.url)
        finally:
            await server.close()
            await engine.aclose()
            await store.close()

    status, _, body = wfe_run(scrape())
    assert status == 500
    failed = (
        f"cannot read {path}: database disk image is malformed (the file is damaged: "
        f"check it with sqlite3 {path} 'PRAGMA integrity_check' and restore it from a backup)"
    )
    assert body == f"cannot read the metrics: {failed}\n"
    logged = [r for r in caplog.records if r.name == "wfcore.metrics"]
    assert [(r.levelname, r.getMessage(), r.exc_info) for r in logged] == [
        ("WARNING", f"reading the metrics failed: the store failed: {failed}", None)
    ]

"""Metrics and health pushed at their edges: odd requests, dead workers."""

from __future__ import annotations

import asyncio
import logging
import socket
import urllib.request
from pathlib import Path

import pytest
from core_util import background_wfe, wait_until, with_pythonpath
from prometheus_client.parser import text_string_to_metric_families

from wfcore import hookimpl
from wfcore.metrics import Metric, MetricsServer


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample, parsed by Prometheus's own client: {(name, labels): value}."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _raw(port: int, data: bytes) -> bytes:
    """Send ``data``, return what the server answers (its first bytes, if it resets
    the connection over the unread rest of the request)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        answer = b""
        try:
            while chunk := sock.recv(4096):
                answer += chunk
        except ConnectionResetError:
            pass
        return answer


def test_an_over_long_request_is_answered_431_without_a_traceback_in_the_log(
    wfe_engine_factory, wfe_run, caplog
) -> None:
    engine = wfe_engine_factory()

    async def scenario() -> tuple[list[bytes], int]:
        server = MetricsServer(engine)
        await server.start()
        try:
            answers = [
                await asyncio.to_thread(_raw, server.port, request)
                for request in (
                    b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\n\r\n",
                    b"GET /metrics HTTP/1.1\r\nX-Big: " + b"b" * 70_000 + b"\r\n\r\n",
                    b"GET /metrics HTTP/1.1\r\n" + b"X: y\r\n" * 500 + b"\r\n",
                )
            ]

            def get() -> int:
                with urllib.request.urlopen(server.url, timeout=10) as response:
                    return int(response.status)

            after = await asyncio.to_thread(get)
        finally:
            await server.close()
        return answers, after

    with caplog.at_level(logging.WARNING):
        answers, after = wfe_run(scenario())
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), answer[:80]
    assert after == 200  # and the server goes on
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


_HANGING_APP = """
import asyncio, os
from pathlib import Path
from wfcore import ECSWorkflowEngine, Phase

engine = ECSWorkflowEngine(poll_interval=0.05)

async def hang(task):
    Path(os.environ["WFE_TEST_DIR"], "started").write_text(str(os.getpid()))
    await asyncio.sleep(3600)

engine.register_handler("hang", hang)
engine.register_workflow("hangs", [Phase("hang", assigned_to="functional")])
"""


def test_a_worker_killed_mid_task_is_not_counted_as_a_live_worker(
    tmp_path: Path, worker_env, wfe
) -> None:
    (tmp_path / "hang_app.py").write_text(_HANGING_APP)
    env = with_pythonpath(worker_env, tmp_path)
    args = ("worker", "hang_app:engine", "--quiet")
    with background_wfe(*args, cwd=tmp_path, env=env, log=tmp_path / "worker.log") as worker:
        wfe("submit", "hangs", "--app", "hang_app:engine", env=env)
        wait_until((tmp_path / "started").exists, timeout=30, what="the task to start")
        live = _samples(wfe("metrics").stdout)
        worker.kill()  # SIGKILL: its task keeps its lease
        worker.wait(10)
    dead = _samples(wfe("metrics").stdout)
    assert (live[("wfcore_workers", ())], live[("wfcore_workers_dead", ())]) == (1, 0)
    assert (dead[("wfcore_workers", ())], dead[("wfcore_workers_dead", ())]) == (0, 1)
    assert dead[("wfcore_tasks", (("status", "in_progress"), ("workflow", "hangs")))] == 1


class _NotUnicode:
    """A plugin whose label text came from bytes decoded with surrogateescape."""

    @hookimpl
    def wfe_metrics(self, engine):
        return [Metric("myplugin_files", "gauge", "Files, by name.", [({"name": "a\udcff"}, 1)])]


def test_a_metric_with_text_that_is_not_unicode_is_refused_and_scrapes_go_on(
    wfe_engine_factory, wfe_run, caplog
) -> None:
    with pytest.raises(ValueError, match=r"^metric m: bad label a='\\udcff'$"):
        Metric("m", "gauge", "x", [({"a": "\udcff"}, 1)])
    with pytest.raises(ValueError, match=r"^metric m: help must be Unicode text"):
        Metric("m", "gauge", "help \udcff", 1)

    engine = wfe_engine_factory(plugins=[_NotUnicode()])

    async def scenario() -> tuple[int, str]:
        server = MetricsServer(engine)
        await server.start()
        try:

            def get() -> tuple[int, str]:
                with urllib.request.urlopen(server.url, timeout=10) as response:
                    return int(response.status), response.read().decode()

            return await asyncio.to_thread(get)
        finally:
            await server.close()

    # Not a connection closed without an answer at every scrape, and a traceback
    # in the log.
    with caplog.at_level(logging.WARNING):
        status, body = wfe_run(scenario())
    assert status == 200 and "wfcore_tasks_delayed 0" in body
    assert "myplugin_files" not in body
    said = [r.getMessage() for r in caplog.records]
    assert said == [
        "plugin '_NotUnicode': wfe_metrics failed: ValueError: metric "
        "myplugin_files: bad label name='a\\udcff'"
    ], said


def test_a_metric_with_two_samples_of_one_series_is_refused_when_made() -> None:
    # Prometheus would keep one of the two, whichever, and warn of every scrape.
    with pytest.raises(ValueError, match=r"^metric m: two samples with labels \{'q': 'a'\}$"):
        Metric("m", "gauge", "x", [({"q": "a"}, 1), ({"q": "b"}, 2), ({"q": "a"}, 3)])
    with pytest.raises(ValueError, match=r"^metric m: two samples with labels \{\}$"):
        Metric("m", "gauge", "x", [({}, 1), ({}, 2)])
    # The same labels in another order are the same series.
    with pytest.raises(ValueError, match=r"two samples"):
        Metric("m", "gauge", "x", [({"a": "1", "b": "2"}, 1), ({"b": "2", "a": "1"}, 2)])
    assert len(Metric("m", "gauge", "x", [({"q": "a"}, 1), ({"q": "b"}, 2)]).samples) == 2

"""wfe worker --metrics and wfe metrics, read as Prometheus reads them."""

from __future__ import annotations

import re
import socket
from pathlib import Path

from core_util import background_wfe, free_port, http_get, metrics_url, submit_with_app
from prometheus_client.parser import text_string_to_metric_families
from test_cli import _wait_for

APP = "split_app:engine"


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _completed(url: str) -> float | None:
    key = ("wfcore_tasks", (("status", "completed"), ("workflow", "left")))
    return _samples(http_get(url)[1]).get(key)


def test_worker_serves_metrics_over_http(wfe, tmp_path: Path) -> None:
    submit_with_app(APP, "left", [None, None], env=wfe.env, cwd=tmp_path)
    log = tmp_path / "worker.err"
    # Port 0: the system picks a free one, and the start-up lines name it (a port the
    # test picked could be taken before the worker binds it).
    args = ["worker", APP, "--metrics", "0"]
    with background_wfe(*args, cwd=tmp_path, env=wfe.env, log=log) as proc:
        url = _wait_for(lambda: metrics_url(log), what="the start-up lines")
        assert f"  metrics at {url}\n" in log.read_text()
        found = re.fullmatch(r"http://127\.0\.0\.1:([1-9][0-9]*)/metrics", url)
        assert found, url
        port = int(found[1])
        assert _wait_for(lambda: _completed(url) == 2, what="both tasks in the metrics")
        samples = _samples(http_get(url)[1])
        assert samples[("wfcore_engine_tasks_completed_total", ())] == 2
        assert samples[("wfcore_engine_running", ())] == 1
        assert http_get(f"http://127.0.0.1:{port}/healthz") == (200, "ok\n")

        # The port is taken now: another worker says so in one line.
        taken = wfe("worker", APP, "--metrics", f"127.0.0.1:{port}", check=False)
        assert taken.returncode == 1
        assert taken.stderr.startswith(f"Error: cannot serve metrics on 127.0.0.1:{port}: ")
        assert taken.stderr.count("\n") == 1 and "Traceback" not in taken.stderr
        proc.terminate()
        assert proc.wait(timeout=30) == 0
    bad = wfe("worker", APP, "--metrics", "localhost:http", check=False)
    assert bad.returncode == 2 and "'localhost:http' is not [HOST:]PORT" in bad.stderr


def test_metrics_command_prints_the_stores_metrics_once(wfe) -> None:
    wfe("submit", "left", "--app", APP)
    # --quiet says no start-up lines, but the one naming the port the system picked.
    quiet = wfe("worker", APP, "--until-idle", "--quiet", "--metrics", "0").stderr
    assert re.fullmatch(r"metrics at http://127\.0\.0\.1:[1-9][0-9]*/metrics\n", quiet)
    wfe("submit", "right", "--app", APP)
    samples = _samples(wfe("metrics").stdout)
    assert samples[("wfcore_tasks", (("status", "completed"), ("workflow", "left")))] == 1
    assert samples[("wfcore_tasks", (("status", "pending"), ("workflow", "right")))] == 1
    assert samples[("wfcore_workers", ())] == 0
    # This command's engine runs no task: no wfcore_engine_* counters at 0, which
    # Prometheus would take for the workers' counters reset.
    assert not [name for name, _ in samples if name.startswith("wfcore_engine_")]


def _two_free_ports() -> int:
    """A port that is free, with the next one free too."""
    while True:
        port = free_port()
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port


def test_worker_processes_serve_metrics_on_ports_one_after_another(wfe, tmp_path) -> None:
    port = _two_free_ports()
    log = tmp_path / "workers.err"
    args = ["worker", APP, "-p", "2", "--metrics", str(port)]
    with background_wfe(*args, cwd=tmp_path, env=wfe.env, log=log) as proc:
        urls = [f"http://127.0.0.1:{p}/metrics" for p in (port, port + 1)]
        _wait_for(
            lambda: all(f"metrics at {url}" in log.read_text() for url in urls),
            what="both processes' start-up lines",
        )
        for url in urls:
            assert ("wfcore_engine_running", ()) in _samples(http_get(url)[1])
        proc.terminate()
        assert proc.wait(timeout=30) == 0
    assert "PORT+1" in wfe("worker", "--help").stdout


def test_a_worker_process_that_cannot_serve_its_metrics_says_which_it_is(wfe) -> None:
    """--processes' workers share one stderr: the error line of the one whose port is
    taken, and the start-up lines of the other, each start with their [worker PID]."""
    port = _two_free_ports()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port + 1))
        taken.listen()
        both = wfe("worker", APP, "-p", "2", "--metrics", str(port), "--until-idle", check=False)
    assert both.returncode == 1, both.stderr
    failed = re.search(
        rf"^\[worker (\d+)\] Error: cannot serve metrics on 127\.0\.0\.1:{port + 1}: ",
        both.stderr,
        re.M,
    )
    assert failed, both.stderr
    assert f"wfe: worker process {failed[1]} exited with status 1" in both.stderr
    served = re.search(r"^\[worker (\d+)\] wfe worker \S+ on sqlite://", both.stderr, re.M)
    assert served and served[1] != failed[1], both.stderr
    assert f"[worker {served[1]}]   metrics at http://127.0.0.1:{port}/metrics" in both.stderr

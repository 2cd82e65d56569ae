"""Metrics in the Prometheus text format: the store's queue and this engine's counters,
rendered for a scrape and served over HTTP by ``wfe worker --metrics``."""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import re
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import attrs

from ._processes import worker_died_here
from .errors import StoreError
from .model import TaskStatus
from .plugins import call_impl, hook_impls
from .wire import is_unicode_text

if TYPE_CHECKING:
    from .engine import ECSWorkflowEngine

__all__ = ["CONTENT_TYPE", "Metric", "MetricsServer", "render_metrics"]

logger = logging.getLogger("wfcore.metrics")

#: The media type of what :func:`render_metrics` returns.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")


_Labels = tuple[tuple[str, str], ...]


def _samples(
    value: float | Iterable[tuple[Mapping[str, str], float]],
) -> tuple[tuple[_Labels, float], ...]:
    # A lone number is one sample without labels.
    if isinstance(value, (int, float)):
        return (((), value),)
    return tuple((tuple(sorted(dict(labels).items())), number) for labels, number in value)


@attrs.frozen
class Metric:
    """A metric family a plugin reports through ``wfe_metrics``.

    ``samples`` is one number, or ``(labels, value)`` pairs:
    ``Metric("wfe_kafka_consumed_total", "counter", "Messages consumed.", 12)`` or
    ``Metric("wfe_x_queue", "gauge", "Queued.", [({"queue": "a"}, 3)])``.
    """

    name: str
    kind: str
    help: str
    samples: tuple[tuple[_Labels, float], ...] = attrs.field(converter=_samples)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(f"not a Prometheus metric name: {self.name!r}")
        if self.kind not in ("counter", "gauge"):
            raise ValueError(f"metric {self.name}: kind must be 'counter' or 'gauge'")
        # Text that is not Unicode (a lone surrogate, from bytes decoded with
        # surrogateescape) cannot be written as UTF-8: every scrape would fail.
        if not isinstance(self.help, str) or not is_unicode_text(self.help):
            raise ValueError(f"metric {self.name}: help must be Unicode text, not {self.help!r}")
        for labels, value in self.samples:
            for key, text in labels:
                if (
                    not _LABEL.match(key)
                    or key.startswith("__")
                    or not isinstance(text, str)
                    or not is_unicode_text(text)
                ):
                    raise ValueError(f"metric {self.name}: bad label {key}={text!r}")
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"metric {self.name}: a value must be a number, not {value!r}")
        # Two samples of one series: Prometheus keeps one, and warns of the scrape.
        seen: set[_Labels] = set()
        for labels, _ in self.samples:
            if labels in seen:
                raise ValueError(f"metric {self.name}: two samples with labels {dict(labels)}")
            seen.add(labels)


_ENGINE_COUNTERS = (
    ("phases", "wfcore_engine_phases_total", "Phase attempts this engine started."),
    ("completed", "wfcore_engine_tasks_completed_total", "Tasks this engine completed."),
    ("failed", "wfcore_engine_tasks_failed_total", "Tasks this engine failed for good."),
    ("suspended", "wfcore_engine_tasks_suspended_total", "Phases this engine left waiting."),
    ("retried", "wfcore_engine_retries_total", "Failed attempts this engine scheduled again."),
    ("cancelled", "wfcore_engine_tasks_cancelled_total", "Tasks cancelled through this engine."),
)


async def render_metrics(engine: ECSWorkflowEngine, *, engine_metrics: bool = True) -> str:
    """The metrics of ``engine`` and its store, in the Prometheus text format.

    From the store, whoever runs the tasks: tasks by workflow and status,
    unfinished ones by phase, delayed ones and when the next is due, results not
    yet published by each outbox consumer, and how many workers hold leases.
    From this engine (this process): its counters since it started and the tasks
    it is running; ``engine_metrics=False`` leaves those out, for an engine that
    only reads the store (``wfe metrics``): its counters, all 0, would read as
    facts about the workers, and to Prometheus as the workers' counters reset.
    Reading the store costs a few counting queries, however many workflows there
    are (``Store.count_all_by_workflow`` and ``count_all_by_phase``).
    """
    started = time.monotonic()
    store = await engine.get_store()
    out = _Lines()

    by_workflow = await store.count_all_by_workflow()
    # The app's workflows, with their zeros; those defined at run time only while
    # they have tasks: they pile up (a changed spec takes a new name), and thousands
    # of all-zero series would swell every scrape.
    known = {spec.name for spec in await store.load_workflows()} | set(engine.workflows)
    names = sorted(
        name
        for name in known
        if engine.registered_in_code(name) or any(by_workflow.get(name, {}).values())
    )
    out.family("wfcore_tasks", "gauge", "Tasks in the store, by workflow and status.")
    unfinished = {
        name: sum(n for status, n in counts.items() if not status.is_finished)
        for name, counts in by_workflow.items()
    }
    for name in names:
        counts = by_workflow.pop(name, {})
        for status in TaskStatus:
            out.sample("wfcore_tasks", counts.get(status, 0), workflow=name, status=status.value)
    # Tasks bound to no registered workflow: defining one, or of one not known here.
    rest: dict[TaskStatus, int] = dict.fromkeys(TaskStatus, 0)
    for counts in by_workflow.values():
        for status, count in counts.items():
            rest[status] += count
    for status, count in rest.items():
        if count > 0:
            out.sample("wfcore_tasks", count, workflow="", status=status.value)

    out.family(
        "wfcore_tasks_in_phase",
        "gauge",
        'Unfinished tasks, by workflow and phase (phase="": the first, not chosen yet).',
    )
    by_phase = await store.count_all_by_phase()
    for name in names:
        phases = by_phase.get(name, {})
        for phase, count in sorted(phases.items()):
            out.sample("wfcore_tasks_in_phase", count, workflow=name, phase=phase)
        # A task submitted without a phase has none stored until its worker
        # stores the one it chose (Store.note_phases, or the phase's end), so it
        # counts here; without this line the sum over phases would leave it out.
        # The two counts are separate reads, so a task moving between them may
        # make the difference negative for one scrape: nothing is shown then.
        unplaced = unfinished.get(name, 0) - sum(phases.values())
        if unplaced > 0:
            out.sample("wfcore_tasks_in_phase", unplaced, workflow=name, phase="")

    delayed, first = await store.count_delayed()
    out.family("wfcore_tasks_delayed", "gauge", "Pending tasks not due yet.")
    out.sample("wfcore_tasks_delayed", delayed)
    if first is not None:
        out.family(
            "wfcore_tasks_next_due_timestamp_seconds",
            "gauge",
            "When the first delayed task is due (UNIX time).",
        )
        out.sample("wfcore_tasks_next_due_timestamp_seconds", first.timestamp())

    try:
        consumers = await store.outbox_consumers()
    except StoreError:  # a store that cannot tell
        consumers = None
    if consumers is not None:
        out.family(
            "wfcore_outbox_unpublished",
            "gauge",
            "Finished tasks an outbox consumer (a results topic) has not published yet.",
        )
        for consumer, count in consumers.items():
            out.sample("wfcore_outbox_unpublished", count, consumer=consumer)

    # A worker killed mid-task (kill -9, the machine's OOM killer) keeps its leases
    # until another worker's claim takes its tasks over: with no worker left to do
    # that, counting it would show workers for ever where none runs. Those of this
    # host are known dead; another host's cannot be checked from here.
    owners = await store.lease_owners()
    dead = sum(1 for owner in owners if worker_died_here(owner))
    out.family("wfcore_workers", "gauge", "Live worker processes holding task leases.")
    out.sample("wfcore_workers", len(owners) - dead)
    out.family(
        "wfcore_workers_dead",
        "gauge",
        "Dead worker processes of this host whose tasks still hold leases, for the next "
        "claim to take over.",
    )
    out.sample("wfcore_workers_dead", dead)

    if engine_metrics:
        _engine_metrics(engine, out)

    for reported in _plugin_metrics(engine):
        out.family(reported.name, reported.kind, reported.help)
        for labels, value in reported.samples:
            out.sample(reported.name, value, **dict(labels))

    out.family("wfcore_scrape_duration_seconds", "gauge", "Seconds these metrics took to read.")
    out.sample("wfcore_scrape_duration_seconds", round(time.monotonic() - started, 6))
    return out.text()


def _engine_metrics(engine: ECSWorkflowEngine, out: _Lines) -> None:
    """The families of this process's engine: its counters and what it runs now."""
    # No worker label: a worker's id changes at every start, and the scrape's own
    # instance label already tells the processes apart.
    for key, metric, text in _ENGINE_COUNTERS:
        out.family(metric, "counter", text)
        out.sample(metric, engine.stats.get(key, 0))
    out.family("wfcore_engine_running_tasks", "gauge", "Tasks this engine is driving now.")
    out.sample("wfcore_engine_running_tasks", engine.active_count)
    out.family(
        "wfcore_engine_tasks_waiting_for_slot",
        "gauge",
        "Tasks this engine holds that wait for a slot of a phase with max_concurrency.",
    )
    for (workflow, phase), count in sorted(engine._worker.waiting_for_slots().items()):
        out.sample("wfcore_engine_tasks_waiting_for_slot", count, workflow=workflow, phase=phase)
    out.family("wfcore_engine_running", "gauge", "1 while this engine processes tasks.")
    out.sample("wfcore_engine_running", int(engine.running))


def _plugin_metrics(engine: ECSWorkflowEngine) -> list[Metric]:
    """What the plugins report (``wfe_metrics``); one that fails is logged and left
    out, and so is a name wfcore or an earlier plugin reports already."""
    found: list[Metric] = []
    taken: set[str] = set()
    for impl in hook_impls(engine.plugin_manager, "wfe_metrics", registration_order=True):
        try:
            metrics = list(call_impl(impl, engine=engine) or [])
            bad = [m for m in metrics if not isinstance(m, Metric)]
            if bad:
                raise TypeError(f"returned {type(bad[0]).__name__}, not a Metric")
        except Exception as exc:
            logger.warning(
                "plugin %r: wfe_metrics failed: %s: %s", impl.plugin_name, type(exc).__name__, exc
            )
            continue
        for metric in metrics:
            if metric.name.startswith("wfcore_") or metric.name in taken:
                logger.warning(
                    "plugin %r: metric %s is reported already; left out",
                    impl.plugin_name,
                    metric.name,
                )
                continue
            taken.add(metric.name)
            found.append(metric)
    return found


class _Lines:
    """Metric families and samples, as the Prometheus text format writes them."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def family(self, name: str, kind: str, text: str) -> None:
        # HELP text escapes only backslash and line feed (a plugin's help may
        # hold either); a raw line feed would end the line and break the scrape.
        help_text = text.replace("\\", "\\\\").replace("\n", "\\n")
        self._lines.append(f"# HELP {name} {help_text}")
        self._lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float, **labels: str) -> None:
        self._lines.append(f"{name}{_labels(labels.items())} {_number(value)}")

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{key}="{_escape(value)}"' for key, value in pairs)
    return f"{{{inner}}}" if inner else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")
    return repr(value) if isinstance(value, float) else str(value)


#: The most header lines a request to :class:`MetricsServer` may have.
_MAX_HEADERS = 100


async def _read_head(reader: asyncio.StreamReader) -> bytes:
    """A request's first line, its headers read and dropped (nothing here depends on
    them). Raises ValueError for a line over the reader's limit or too many lines."""
    request = await reader.readline()
    for _ in range(_MAX_HEADERS + 1):
        if not (await reader.readline()).strip():
            return request
    raise ValueError(f"more than {_MAX_HEADERS} header lines")


# How many ports to try for port 0 on a host of several addresses, each of which may
# have the port the first address got taken already.
_REBIND_TRIES = 10


class MetricsServer:
    """A small HTTP server for Prometheus beside an engine, on its event loop.

    ``GET /metrics`` answers :func:`render_metrics`; ``GET /healthz`` answers 200
    ``ok`` while the engine processes tasks and its store answers, else 503 with
    the reason (the store failing the worker's claims, its file deleted). Anything
    else gets 404 (405 for a method other than GET/HEAD).
    """

    def __init__(self, engine: ECSWorkflowEngine, host: str = "127.0.0.1", port: int = 0) -> None:
        self.engine = engine
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Listen; ``port`` 0 picks a free port, which :attr:`port` then holds.

        A host name of several addresses (``localhost``: 127.0.0.1 and ::1) is
        served on each of them, on one port: with port 0 the system would pick one
        for each address, and the URL could name only one of them.
        """
        server = await asyncio.start_server(self._serve, self.host, self.port)
        ports = {sock.getsockname()[1] for sock in server.sockets}
        for _ in range(_REBIND_TRIES):
            if len(ports) == 1:
                break
            # Port 0 on several addresses: again, all on the port the first got.
            port = server.sockets[0].getsockname()[1]
            server.close()
            await server.wait_closed()
            try:
                server = await asyncio.start_server(self._serve, self.host, port)
                ports = {port}
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                # Taken on another address (or since): let the system pick again.
                server = await asyncio.start_server(self._serve, self.host, 0)
                ports = {sock.getsockname()[1] for sock in server.sockets}
        if len(ports) != 1:
            server.close()
            await server.wait_closed()
            raise OSError(
                errno.EADDRINUSE,
                f"found no port free on every address of {self.host} in {_REBIND_TRIES} "
                "tries: give a port, or an address instead of the name",
            )
        self._server = server
        self.port = ports.pop()

    async def close(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    @property
    def url(self) -> str:
        """Where the metrics are: ``http://HOST:PORT/metrics``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                request = await asyncio.wait_for(_read_head(reader), 10)
            except ValueError:
                # A line over the reader's limit (64 KiB), or headers without end: a
                # scanner or a broken client, not Prometheus. An answer, and no
                # traceback in the worker's log for each such request.
                request = b""
                status, body, media = (
                    "431 Request Header Fields Too Large",
                    "the request line or headers are too long\n",
                    "text/plain; charset=utf-8",
                )
            else:
                status, body, media = await self._answer(request.decode("latin-1").split())
            head = request.startswith(b"HEAD ")
            # "replace": text that is not Unicode from a store (a name no check saw) is
            # one "?" for Prometheus, not a scrape that fails for ever.
            payload = body.encode("utf-8", "replace")
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {media}\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode("latin-1")
                + (b"" if head else payload)
            )
            await writer.drain()
        except (asyncio.TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _answer(self, parts: list[str]) -> tuple[str, str, str]:
        text = "text/plain; charset=utf-8"
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return "400 Bad Request", "bad request\n", text
        method, target = parts[0], parts[1].split("?", 1)[0]
        if target not in ("/metrics", "/healthz"):
            return "404 Not Found", "not found: try /metrics or /healthz\n", text
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", "only GET\n", text
        if target == "/healthz":
            return await self._health()
        try:
            return "200 OK", await render_metrics(self.engine), CONTENT_TYPE
        except StoreError as exc:
            # The store's trouble (locked, its disk full, its file damaged): one line
            # for each scrape, every 15 s or so, not a traceback of our own code.
            logger.warning("reading the metrics failed: the store failed: %s", exc)
            return "500 Internal Server Error", f"cannot read the metrics: {exc}\n", text
        except Exception as exc:
            logger.exception("reading the metrics failed")
            return "500 Internal Server Error", f"cannot read the metrics: {exc}\n", text

    async def _health(self) -> tuple[str, str, str]:
        text = "text/plain; charset=utf-8"
        # What the engine's own worker met at its last look at the store (its file
        # deleted, the disk full): a worker that reads fine may not write.
        problem = self.engine._worker.store_problem
        if not self.engine.running:
            why = f": {problem}" if problem else ""
            return "503 Service Unavailable", f"the engine is not processing tasks{why}\n", text
        if problem:
            return "503 Service Unavailable", f"{problem}\n", text
        try:
            store = await self.engine.get_store()
            await asyncio.wait_for(store.has_active_tasks(), 5)
        except Exception as exc:
            return "503 Service Unavailable", f"the store does not answer: {exc}\n", text
        return "200 OK", "ok\n", text

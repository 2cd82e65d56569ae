"""A real single-node Apache Kafka broker (KRaft mode) for the wfe_kafka tests.

The broker jars come from Maven Central: ``pom.xml`` beside this file names
``org.apache.kafka:kafka_2.13`` (plus a log4j2 backend), and :func:`fetch_jars`
copies it with all its runtime dependencies into a cache folder once. A
:class:`KafkaBroker` then runs ``java -cp 'libs/*' kafka.Kafka server.properties``
as a combined broker+controller on free loopback ports, in a temporary folder
that :meth:`KafkaBroker.stop` removes again.

Needs: Java 17 or newer (Kafka 4.x brokers refuse older ones) and Maven 3 on
``PATH`` (``JAVA_HOME/bin/java`` is preferred when ``JAVA_HOME`` is set). When
either is missing, or the jars cannot be fetched, :class:`BrokerUnavailable` is
raised so that a test fixture can skip. The module itself uses only the
standard library; kafka-python is imported lazily by the topic helpers and by
the final readiness check, which is skipped when kafka-python is absent.

Environment:

``WFE_KAFKA_CACHE``
    Base cache folder; jars go to ``$WFE_KAFKA_CACHE/kafka-<version>/libs``.
    Default base: ``~/.cache/wfcore``.
``KAFKA_HEAP_OPTS``
    JVM heap options for the broker, as in Kafka's own scripts.
    Default ``-Xmx512m -Xms256m``.
``WFE_KAFKA_BOOTSTRAP``
    ``host:port`` of a running broker for :func:`shared_bootstrap` to return
    instead of starting one.

Command line::

    python kafka_broker.py fetch            # download the jars, print the libs folder
    python kafka_broker.py start            # start a detached broker, print its bootstrap
    python kafka_broker.py start --foreground   # run until Ctrl-C / SIGTERM
    python kafka_broker.py stop             # stop the detached broker

A detached broker is recorded in a state file, by default one per checkout
(:func:`default_state_file`); ``--state FILE`` names another.

kafka-python and Kafka 4.x:

* kafka-python 3.0.12 produces, fetches, joins consumer groups and commits
  against Kafka 4.1.1 with no special setting. Leave ``api_version`` unset
  (it is then detected through ApiVersions) or set it to ``(0, 11)`` or newer.
  Kafka 4.0 removed the oldest protocol versions (KIP-896), so
  ``api_version=(0, 10, x)`` or older makes the client send Produce v2 and
  ListOffsets v0, which the broker answers by closing the connection
  (``UnsupportedVersionException`` in the broker log): sends then time out
  with ``KafkaTimeoutError`` and consumers get no records, although such a
  consumer still joins its group.
* kafka-python joins groups with the classic JoinGroup/SyncGroup protocol. Kafka
  4.x brokers serve it next to the new KIP-848 ``consumer`` protocol, so two
  ``KafkaConsumer`` instances with one ``group_id`` share the partitions as with
  older brokers; nothing (no ``group.protocol``) needs configuring.
* kafka-python 3.x deprecates plain callables as ``key_serializer`` /
  ``value_deserializer`` etc. (DeprecationWarning; wrap them in
  ``kafka.serializer.Serializer`` / ``Deserializer`` subclasses or pass bytes).
* ``KafkaAdminClient.create_topics`` in 3.x takes
  ``{name: {"num_partitions": n, "replication_factor": r}}`` (``NewTopic`` is
  deprecated) and new topics should be awaited with ``wait_for_topics`` before
  use, as :func:`create_topic` does.
* ``group.initial.rebalance.delay.ms=0`` (set here) avoids the default 3 s wait
  before the first rebalance of a new group completes.
* The broker advertises ``127.0.0.1``; clients must use exactly the returned
  :attr:`KafkaBroker.bootstrap` string.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

__all__ = [
    "KAFKA_VERSION",
    "BrokerStartError",
    "BrokerUnavailable",
    "KafkaBroker",
    "cache_root",
    "create_topic",
    "delete_topics",
    "fetch_jars",
    "find_java",
    "find_maven",
    "metadata_broker_count",
    "shared_bootstrap",
    "stop_detached",
]

KAFKA_VERSION = "4.1.1"
"""The Kafka release that :func:`fetch_jars` resolves by default."""

MIN_JAVA = 17
"""Oldest Java feature release that Kafka 4.x brokers run on."""

POM = Path(__file__).resolve().with_name("pom.xml")
"""The Maven project that lists the broker jars."""

DEFAULT_HEAP_OPTS = ("-Xmx512m", "-Xms256m")
"""JVM heap options used when ``KAFKA_HEAP_OPTS`` is not set."""

_MARKER = ".complete"
_LOG_TAIL_LINES = 60


class BrokerUnavailable(RuntimeError):
    """Java or Maven is missing or too old, or the broker jars cannot be fetched.

    Tests should skip (or, in CI, fail) on this: no broker can be run here.
    """


class BrokerStartError(RuntimeError):
    """The broker process was launched but did not become ready (or died)."""


# ---------------------------------------------------------------------------
# Tools: java and mvn
# ---------------------------------------------------------------------------


def find_java() -> str:
    """Return the path of a ``java`` executable of version 17 or newer.

    ``$JAVA_HOME/bin/java`` is preferred, then ``java`` on ``PATH``.

    Raises:
        BrokerUnavailable: no java found, or it is older than Java 17.
    """
    candidates: list[str] = []
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        exe = Path(java_home, "bin", "java")
        if exe.is_file():
            candidates.append(str(exe))
    on_path = shutil.which("java")
    if on_path:
        candidates.append(on_path)
    if not candidates:
        raise BrokerUnavailable("java not found (install a JDK/JRE >= 17 or set JAVA_HOME)")
    java = candidates[0]
    try:
        out = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BrokerUnavailable(f"cannot run {java} -version: {exc}") from exc
    text = out.stderr + out.stdout
    match = re.search(r'version "(\d+)(?:\.(\d+))?', text)
    if not match:
        raise BrokerUnavailable(f"cannot parse the output of {java} -version: {text.strip()!r}")
    major = int(match.group(1))
    if major == 1 and match.group(2):
        major = int(match.group(2))
    if major < MIN_JAVA:
        raise BrokerUnavailable(
            f"{java} is Java {major}; Kafka {KAFKA_VERSION} needs Java >= {MIN_JAVA}"
        )
    return java


def find_maven() -> str:
    """Return the path of ``mvn`` on ``PATH``.

    Raises:
        BrokerUnavailable: Maven is not installed.
    """
    mvn = shutil.which("mvn")
    if not mvn:
        raise BrokerUnavailable("mvn (Apache Maven 3) not found on PATH; it fetches the Kafka jars")
    return mvn


# ---------------------------------------------------------------------------
# Jars
# ---------------------------------------------------------------------------


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the base cache folder: *cache_dir*, ``$WFE_KAFKA_CACHE`` or ``~/.cache/wfcore``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("WFE_KAFKA_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "wfcore"


def _libs_complete(libs: Path, version: str) -> bool:
    return (libs / _MARKER).is_file() and (libs / f"kafka_2.13-{version}.jar").is_file()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on *path* (no-op where ``fcntl`` is missing)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _tail(text: str, lines: int = _LOG_TAIL_LINES) -> str:
    return "\n".join(text.splitlines()[-lines:])


def fetch_jars(
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    version: str = KAFKA_VERSION,
    timeout: float = 900.0,
) -> Path:
    """Make sure the broker jars of Kafka *version* are cached and return their folder.

    The folder is ``<base>/kafka-<version>/libs`` where ``<base>`` is
    *cache_dir*, ``$WFE_KAFKA_CACHE`` or ``~/.cache/wfcore``. Maven runs only
    when that folder is not complete yet: it copies into a fresh temporary
    folder that gets a marker file and is then renamed into place, under an
    exclusive file lock, so concurrent callers (e.g. pytest-xdist workers)
    download once and never see a half-filled folder.

    Raises:
        BrokerUnavailable: Maven is missing, fails or times out.
    """
    base = cache_root(cache_dir) / f"kafka-{version}"
    libs = base / "libs"
    if _libs_complete(libs, version):
        return libs
    mvn = find_maven()
    base.mkdir(parents=True, exist_ok=True)
    with _file_lock(base / ".fetch.lock"):
        if _libs_complete(libs, version):
            return libs
        staging = Path(tempfile.mkdtemp(prefix="libs.tmp-", dir=base))
        try:
            cmd = [
                mvn,
                "-q",
                "-B",
                "-Dstyle.color=never",
                "-f",
                str(POM),
                f"-Dkafka.version={version}",
                f"-DoutputDirectory={staging}",
                "dependency:copy-dependencies",
            ]
            try:
                proc = subprocess.run(
                    cmd,
                    cwd=base,
                    capture_output=True,
                    text=True,
                    timeout=timeout,
                    check=False,
                    stdin=subprocess.DEVNULL,
                )
            except subprocess.TimeoutExpired as exc:
                raise BrokerUnavailable(
                    f"fetching Kafka {version} jars with Maven took over {timeout:.0f} s"
                ) from exc
            except OSError as exc:
                raise BrokerUnavailable(f"cannot run {mvn}: {exc}") from exc
            if proc.returncode != 0:
                raise BrokerUnavailable(
                    f"Maven could not fetch Kafka {version} jars (exit {proc.returncode}):\n"
                    + _tail(re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr))
                )
            jars = sorted(p.name for p in staging.glob("*.jar"))
            if f"kafka_2.13-{version}.jar" not in jars:
                raise BrokerUnavailable(
                    f"Maven finished but kafka_2.13-{version}.jar is missing in {staging}"
                )
            (staging / _MARKER).write_text(
                json.dumps({"version": version, "jars": jars}, indent=1), encoding="utf-8"
            )
            if libs.exists():
                shutil.rmtree(libs, ignore_errors=True)
            try:
                os.rename(staging, libs)
            except OSError:
                if not _libs_complete(libs, version):
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return libs


# ---------------------------------------------------------------------------
# Probing
# ---------------------------------------------------------------------------


def _free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Return *count* distinct currently free TCP ports on *host*."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    buf = bytearray()
    while len(buf) < size:
        chunk = sock.recv(size - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by broker")
        buf += chunk
    return bytes(buf)


def metadata_broker_count(host: str, port: int, timeout: float = 2.0) -> int:
    """Ask the broker at *host*:*port* for metadata and return how many brokers it lists.

    Sends a raw MetadataRequest v4 (the oldest version Kafka 4.x accepts and one
    that older brokers accept too) with the standard library only. Returns 0
    when the broker is not reachable or answers unexpectedly, so it can be
    polled while the broker is starting.
    """
    client_id = b"wfe-kafka-probe"
    correlation_id = 1
    request = (
        struct.pack(">hhih", 3, 4, correlation_id, len(client_id))
        + client_id
        + struct.pack(">ib", -1, 0)
    )
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(struct.pack(">i", len(request)) + request)
            (size,) = struct.unpack(">i", _recv_exact(sock, 4))
            if size < 12:
                return 0
            corr, _throttle, brokers = struct.unpack(">iii", _recv_exact(sock, 12))
    except (OSError, ConnectionError, struct.error):
        return 0
    if corr != correlation_id or brokers < 0:
        return 0
    return int(brokers)


def _kafka_python_ready(bootstrap: str, timeout: float) -> bool:
    """Return True once kafka-python's admin client sees a broker (True if it is absent)."""
    try:
        from kafka import KafkaAdminClient
    except ImportError:
        return True
    ms = max(1000, int(timeout * 1000))
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            client_id="wfe-kafka-readiness",
            bootstrap_timeout_ms=ms,
            request_timeout_ms=ms,
        )
    except Exception:
        return False
    try:
        return bool(admin.describe_cluster().get("brokers"))
    except Exception:
        return False
    finally:
        admin.close()


# ---------------------------------------------------------------------------
# Topic helpers (kafka-python)
# ---------------------------------------------------------------------------


def create_topic(
    bootstrap: str,
    name: str,
    partitions: int = 1,
    *,
    replication_factor: int = 1,
    configs: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> str:
    """Create topic *name* with kafka-python and wait until every partition has a leader.

    Returns the topic name. Needs kafka-python 3.x.
    """
    from kafka import KafkaAdminClient

    ms = int(timeout * 1000)
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="wfe-kafka-admin",
        bootstrap_timeout_ms=ms,
        request_timeout_ms=ms,
    )
    try:
        admin.create_topics(
            {
                name: {
                    "num_partitions": partitions,
                    "replication_factor": replication_factor,
                    "configs": dict(configs or {}),
                }
            },
            timeout_ms=ms,
        )
        admin.wait_for_topics([name], timeout_ms=ms)
    finally:
        admin.close()
    return name


def delete_topics(bootstrap: str, names: Sequence[str], *, timeout: float = 30.0) -> None:
    """Delete the topics *names* with kafka-python, ignoring per-topic errors."""
    if not names:
        return
    from kafka import KafkaAdminClient

    ms = int(timeout * 1000)
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="wfe-kafka-admin",
        bootstrap_timeout_ms=ms,
        request_timeout_ms=ms,
    )
    try:
        admin.delete_topics(list(names), timeout_ms=ms, raise_errors=False)
    finally:
        admin.close()


# ---------------------------------------------------------------------------
# The broker
# ---------------------------------------------------------------------------


def _random_cluster_id() -> str:
    """Return a Kafka cluster id: 16 random bytes, URL-safe base64 without padding."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not cid.startswith("-"):
            return cid


_LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.out.ref = STDOUT
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


def _ends_with_this_process() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has Linux end the child when this process dies (or the
    thread that starts it ends): wfcore's, where it is installed; else None."""
    try:
        from wfcore._processes import ending_with_parent
    except ImportError:
        return None
    return ending_with_parent()


class _PortInUse(BrokerStartError):
    """The broker could not bind one of its ports (another process took it)."""


class KafkaBroker:
    """A single-node KRaft Kafka broker+controller on free ports of 127.0.0.1.

    Usage::

        with KafkaBroker() as broker:
            producer = KafkaProducer(bootstrap_servers=broker.bootstrap)

    :meth:`start` fetches the jars if needed, writes ``server.properties`` into
    a fresh temporary folder, formats the storage, launches the JVM (output in
    ``broker.log`` there) and waits until the broker serves metadata;
    :meth:`stop` ends the JVM and removes the folder.
    """

    def __init__(
        self,
        *,
        version: str = KAFKA_VERSION,
        libs_dir: str | os.PathLike[str] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        heap_opts: Sequence[str] | None = None,
        properties: Mapping[str, str] | None = None,
        start_timeout: float = 90.0,
        stop_timeout: float = 30.0,
        log_level: str = "INFO",
        detach: bool = False,
    ) -> None:
        """Configure a broker; nothing runs until :meth:`start`.

        Args:
            version: Kafka release to fetch (ignored when *libs_dir* is given).
            libs_dir: a folder of broker jars to use instead of :func:`fetch_jars`.
            cache_dir: base cache folder passed to :func:`fetch_jars`.
            heap_opts: JVM heap options; default ``$KAFKA_HEAP_OPTS`` or
                :data:`DEFAULT_HEAP_OPTS`.
            properties: extra ``server.properties`` entries, overriding the defaults.
            start_timeout: seconds :meth:`start` waits for the broker to be ready.
            stop_timeout: seconds :meth:`stop` waits after SIGTERM before SIGKILL.
            log_level: log4j2 root level of the broker log.
            detach: run the JVM in its own session and do not stop it when this
                Python process exits (used by the ``start`` command). Otherwise it
                ends with this process, killed too (on Linux, with wfcore
                installed): start it from a thread that lives as long.
        """
        self.version = version
        self._libs_dir = Path(libs_dir) if libs_dir is not None else None
        self._cache_dir = cache_dir
        if heap_opts is None:
            env_heap = os.environ.get("KAFKA_HEAP_OPTS")
            heap_opts = env_heap.split() if env_heap else DEFAULT_HEAP_OPTS
        self._heap_opts = list(heap_opts)
        self._extra_properties = dict(properties or {})
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._log_level = log_level
        self._detach = detach
        self._proc: subprocess.Popen[bytes] | None = None
        # The java and jars it was started with (for up() after down()).
        self._java_libs: tuple[str, Path] | None = None
        self._log_handle: IO[bytes] | None = None
        self._workdir: Path | None = None
        self._port: int | None = None
        self._controller_port: int | None = None
        self.cluster_id: str | None = None

    # -- public properties ---------------------------------------------------

    @property
    def bootstrap(self) -> str:
        """The ``host:port`` bootstrap string of the running broker."""
        if self._port is None:
            raise RuntimeError("the broker is not started")
        return f"127.0.0.1:{self._port}"

    @property
    def port(self) -> int:
        """The PLAINTEXT client port."""
        if self._port is None:
            raise RuntimeError("the broker is not started")
        return self._port

    @property
    def controller_port(self) -> int:
        """The KRaft controller port."""
        if self._controller_port is None:
            raise RuntimeError("the broker is not started")
        return self._controller_port

    @property
    def workdir(self) -> Path:
        """The temporary folder holding config, data and ``broker.log``."""
        if self._workdir is None:
            raise RuntimeError("the broker is not started")
        return self._workdir

    @property
    def log_path(self) -> Path:
        """The broker's combined stdout/stderr log file."""
        return self.workdir / "broker.log"

    @property
    def pid(self) -> int | None:
        """The JVM's process id, or None when not running."""
        return self._proc.pid if self._proc is not None else None

    def is_running(self) -> bool:
        """Return True while the JVM process is alive."""
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> KafkaBroker:
        """Start the broker and block until it serves cluster metadata.

        Retries with new ports (up to three times) when a port was taken
        between choosing and binding it.

        Raises:
            BrokerUnavailable: Java/Maven missing or the jars cannot be fetched.
            BrokerStartError: the broker died or was not ready within
                *start_timeout*; the message holds the tail of its log.
        """
        if self._proc is not None:
            raise RuntimeError("the broker is already started")
        java = find_java()
        libs = self._libs_dir or fetch_jars(self._cache_dir, version=self.version)
        attempts = 3
        for attempt in range(1, attempts + 1):
            try:
                self._launch(java, libs)
                self._wait_ready()
            except _PortInUse:
                self._cleanup()
                if attempt == attempts:
                    raise
                continue
            except BaseException:
                self._cleanup()
                raise
            break
        self._java_libs = (java, libs)
        if not self._detach:
            atexit.register(self.stop)
        return self

    def down(self) -> None:
        """Stop the JVM (SIGTERM, then SIGKILL after *stop_timeout*) but keep its
        folder and ports: :meth:`up` starts it again, with its topics, at the same
        address (a broker that goes away and comes back)."""
        proc = self._proc
        if proc is None or self._workdir is None:
            raise RuntimeError("the broker is not started")
        self._end_jvm()

    def up(self) -> None:
        """Start again, at the same address and with the same data, a broker that
        :meth:`down` stopped; wait until it serves metadata again."""
        if self._java_libs is None or self._workdir is None:
            raise RuntimeError("the broker was never started")
        if self.is_running():
            raise RuntimeError("the broker is running")
        java, libs = self._java_libs
        self._run_jvm(java, libs)
        try:
            self._wait_ready()
        except BaseException:
            self._end_jvm()
            raise

    def stop(self) -> None:
        """Stop the JVM (SIGTERM, then SIGKILL after *stop_timeout*) and delete its folder.

        Safe to call more than once.
        """
        atexit.unregister(self.stop)
        self._cleanup()

    def __enter__(self) -> KafkaBroker:
        """Start the broker (if not running) and return it."""
        if self._proc is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the broker."""
        self.stop()

    def create_topic(
        self,
        name: str,
        partitions: int = 1,
        *,
        configs: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> str:
        """Create topic *name* on this broker (see the module-level :func:`create_topic`)."""
        return create_topic(self.bootstrap, name, partitions, configs=configs, timeout=timeout)

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """Return the last *lines* lines of the format and broker logs."""
        if self._workdir is None:
            return ""
        parts = []
        for name in ("format.log", "broker.log"):
            path = self._workdir / name
            if path.is_file():
                text = path.read_text(encoding="utf-8", errors="replace")
                parts.append(f"--- {name} (tail) ---\n{_tail(text, lines)}")
        return "\n".join(parts)

    def state(self) -> dict[str, Any]:
        """Return a JSON-able description (pid, folder, ports) of the running broker."""
        return {
            "pid": self.pid,
            "workdir": str(self.workdir),
            "bootstrap": self.bootstrap,
            "controller_port": self.controller_port,
            "version": self.version,
            "cluster_id": self.cluster_id,
        }

    # -- internals -----------------------------------------------------------

    def server_properties(self) -> dict[str, str]:
        """Return the ``server.properties`` entries for the chosen ports and folder."""
        port, cport, workdir = self.port, self.controller_port, self.workdir
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{cport}",
            "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(workdir / "data"),
            "num.partitions": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "auto.create.topics.enable": "true",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "log.retention.check.interval.ms": "300000",
            "num.network.threads": "2",
            "num.io.threads": "4",
            "num.recovery.threads.per.data.dir": "1",
        }
        props.update(self._extra_properties)
        return props

    def _java_cmd(self, java: str, libs: Path, main: str, *args: str) -> list[str]:
        return [
            java,
            *self._heap_opts,
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.workdir / 'logs'}",
            "-cp",
            f"{libs}{os.sep}*",
            main,
            *args,
        ]

    def _launch(self, java: str, libs: Path) -> None:
        self._workdir = Path(tempfile.mkdtemp(prefix="wfe-kafka-"))
        self._port, self._controller_port = _free_ports(2)
        self.cluster_id = _random_cluster_id()
        workdir = self._workdir
        (workdir / "logs").mkdir()
        props_path = workdir / "server.properties"
        props_path.write_text(
            "".join(f"{k}={v}\n" for k, v in self.server_properties().items()), encoding="utf-8"
        )
        (workdir / "log4j2.properties").write_text(
            _LOG4J2.format(level=self._log_level), encoding="utf-8"
        )
        fmt_cmd = self._java_cmd(
            java,
            libs,
            "kafka.tools.StorageTool",
            "format",
            "-t",
            self.cluster_id,
            "-c",
            str(props_path),
            "--standalone",
        )
        with open(workdir / "format.log", "wb") as fmt_log:
            try:
                rc = subprocess.run(
                    fmt_cmd,
                    stdout=fmt_log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    timeout=max(30.0, self.start_timeout),
                    check=False,
                ).returncode
            except subprocess.TimeoutExpired as exc:
                raise BrokerStartError(
                    "formatting the Kafka storage timed out\n" + self.log_tail()
                ) from exc
        if rc != 0:
            raise BrokerStartError(
                f"formatting the Kafka storage failed (exit {rc})\n" + self.log_tail()
            )
        self._run_jvm(java, libs)

    def _run_jvm(self, java: str, libs: Path) -> None:
        """Launch the broker's JVM on the formatted folder (its log appended to)."""
        workdir = self.workdir
        self._log_handle = open(workdir / "broker.log", "ab")
        self._proc = subprocess.Popen(
            self._java_cmd(java, libs, "kafka.Kafka", str(workdir / "server.properties")),
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=workdir,
            start_new_session=self._detach,
            # Killed, this process never runs its atexit stop: the JVM would be
            # left serving nobody, with its heap, until someone kills it.
            preexec_fn=None if self._detach else _ends_with_this_process(),
        )

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.start_timeout
        interval = 0.1
        while True:
            rc = self._proc.poll()
            if rc is not None:
                tail = self.log_tail()
                if "Address already in use" in tail or "BindException" in tail:
                    raise _PortInUse(f"the broker could not bind its ports\n{tail}")
                raise BrokerStartError(f"the Kafka broker exited with code {rc}\n{tail}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrokerStartError(
                    f"the Kafka broker was not ready within {self.start_timeout:.0f} s\n"
                    + self.log_tail()
                )
            if metadata_broker_count("127.0.0.1", self.port, timeout=min(2.0, remaining)) > 0:
                if _kafka_python_ready(self.bootstrap, timeout=min(10.0, max(1.0, remaining))):
                    return
            time.sleep(interval)
            interval = min(interval * 1.5, 1.0)

    def _end_jvm(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None

    def _cleanup(self) -> None:
        self._end_jvm()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        self._port = self._controller_port = None

    def _release(self) -> None:
        """Forget the running JVM without stopping it (it is left detached)."""
        atexit.unregister(self.stop)
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None
        if self._proc is not None:
            self._proc.returncode = 0
        self._proc = None


# ---------------------------------------------------------------------------
# Detached brokers (command line)
# ---------------------------------------------------------------------------


_shared: KafkaBroker | None = None


def shared_bootstrap() -> str:
    """The bootstrap address of the one broker every test in this process uses.

    ``$WFE_KAFKA_BOOTSTRAP`` when set; else a :class:`KafkaBroker` started on the
    first call and stopped when the process exits. Test suites that load this
    module under the same name (``wfe_kafka_test_broker``) share it, so one
    pytest run starts the JVM once. Raises what :meth:`KafkaBroker.start` raises.
    """
    global _shared
    external = os.environ.get("WFE_KAFKA_BOOTSTRAP", "").strip()
    if external:
        return external
    if _shared is None or not _shared.is_running():
        broker = KafkaBroker()
        broker.start()
        _shared = broker
    return _shared.bootstrap


def default_state_file() -> Path:
    """Return where ``start`` records a detached broker without ``--state``:
    ``<cache base>/brokers/<checkout>-<hash>.json``, one file per checkout (the
    folder this script is in), so that ``start`` in one clone does not answer with,
    nor ``stop`` end, the broker another clone started."""
    here = Path(__file__).resolve().parent
    digest = hashlib.sha256(str(here).encode("utf-8")).hexdigest()[:12]
    # The checkout's folder name (plugins/wfe_kafka/broker is three levels down),
    # to tell the files apart by eye.
    name = re.sub(r"[^A-Za-z0-9._-]", "_", here.parents[2].name if len(here.parents) > 2 else "")
    return cache_root() / "brokers" / f"{name or 'broker'}-{digest}.json"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_our_broker(pid: int, workdir: str) -> bool:
    """Return True if *pid* still looks like the broker started in *workdir*."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.parent.exists():
        return _pid_alive(pid)
    try:
        args = cmdline.read_bytes().split(b"\0")
    except OSError:
        return False
    return b"kafka.Kafka" in args and any(workdir.encode() in a for a in args)


def stop_detached(state_file: Path, *, timeout: float = 30.0) -> bool:
    """Stop the broker recorded in *state_file* and remove its folder and the file.

    Returns False when no broker was recorded.
    """
    if not state_file.is_file():
        return False
    state = json.loads(state_file.read_text(encoding="utf-8"))
    pid = int(state["pid"])
    workdir = str(state["workdir"])
    if _is_our_broker(pid, workdir):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    shutil.rmtree(workdir, ignore_errors=True)
    state_file.unlink(missing_ok=True)
    return True


def _seconds(text: str) -> float:
    """``--timeout``: 0 or less started a broker only to give up on it at once."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0, got {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point: ``fetch``, ``start`` or ``stop``."""
    parser = argparse.ArgumentParser(description="Run a local Apache Kafka broker for tests.")
    parser.add_argument("--version", default=KAFKA_VERSION, help="Kafka release")
    parser.add_argument("--cache-dir", default=None, help="base cache folder")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch", help="download the broker jars and print their folder")
    start = sub.add_parser("start", help="start a broker and print its bootstrap address")
    state_help = "state file of the broker (default: one per checkout, in <cache>/brokers)"
    start.add_argument("--state", type=Path, default=None, help=state_help)
    start.add_argument("--timeout", type=_seconds, default=90.0, help="seconds to wait for it")
    start.add_argument(
        "--foreground", action="store_true", help="keep running until Ctrl-C or SIGTERM"
    )
    stop = sub.add_parser("stop", help="stop the broker started by 'start'")
    stop.add_argument("--state", type=Path, default=None, help=state_help)
    args = parser.parse_args(argv)

    try:
        if args.command == "fetch":
            print(fetch_jars(args.cache_dir, version=args.version))
            return 0
        if args.command == "stop":
            state_file = args.state or default_state_file()
            if not stop_detached(state_file):
                print(f"no broker recorded in {state_file}", file=sys.stderr)
                legacy = cache_root() / "broker.json"
                if args.state is None and legacy.is_file():
                    # Where the default was before it was made per checkout.
                    print(
                        f"(a broker started by an earlier version is recorded in {legacy}: "
                        f"stop it with --state {legacy})",
                        file=sys.stderr,
                    )
            return 0

        if args.foreground:
            broker = KafkaBroker(
                version=args.version, cache_dir=args.cache_dir, start_timeout=args.timeout
            )
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
            with broker:
                print(broker.bootstrap, flush=True)
                print(f"broker log: {broker.log_path}", file=sys.stderr, flush=True)
                try:
                    while broker.is_running():
                        time.sleep(1.0)
                except KeyboardInterrupt:
                    pass
            return 0

        state_file = args.state or default_state_file()
        if state_file.is_file():
            state = json.loads(state_file.read_text(encoding="utf-8"))
            if _is_our_broker(int(state["pid"]), str(state["workdir"])):
                print(f"already running (state in {state_file})", file=sys.stderr)
                print(state["bootstrap"])
                return 0
            stop_detached(state_file)
        broker = KafkaBroker(
            version=args.version,
            cache_dir=args.cache_dir,
            start_timeout=args.timeout,
            detach=True,
        )
        broker.start()
        state_file.parent.mkdir(parents=True, exist_ok=True)
        state_file.write_text(json.dumps(broker.state(), indent=1), encoding="utf-8")
        print(f"broker log: {broker.log_path}; state: {state_file}", file=sys.stderr)
        print(broker.bootstrap)
        broker._release()
        return 0
    except (BrokerUnavailable, BrokerStartError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""wfe worker --metrics HOST:0 where HOST names several addresses (``localhost``:
127.0.0.1 and ::1 on most systems): one port, reachable on every address, and
the one the worker names.

This machine's /etc/hosts may give ``localhost`` one address only, and a test
cannot change it; so the worker, a real process, resolves ``localhost`` as most
systems do (``::1`` first, then ``127.0.0.1``), and serves on the real loopback
addresses of both families.
"""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from core_util import end_process, free_port, http_get, metrics_url, wait_until

from wfcore import ECSWorkflowEngine
from wfcore.metrics import MetricsServer

# Resolve "localhost" to both loopback addresses, as a typical /etc/hosts does.
_RESOLVE_BOTH = """
import socket

_real = socket.getaddrinfo


def _getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
    if host != "localhost":
        return _real(host, port, family, type, proto, flags)
    found = []
    for address in ("::1", "127.0.0.1"):
        for info in _real(address, port, family, type, proto, flags | socket.AI_NUMERICHOST):
            found.append(info)
    return found


socket.getaddrinfo = _getaddrinfo
"""


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback (::1) here")


@needs_ipv6
def test_port_0_on_a_name_of_two_addresses_is_one_port_served_on_both(wfe, tmp_path: Path) -> None:
    log = tmp_path / "worker.err"
    run_cli = _RESOLVE_BOTH + "import runpy; runpy.run_module('wfcore.cli', run_name='__main__')"
    command = [sys.executable, "-c", run_cli, "worker", "split_app:engine"]
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [*command, "--metrics", "localhost:0"], cwd=tmp_path, env=wfe.env, stderr=err
        )
    try:
        url = wait_until(lambda: metrics_url(log), 20, "the worker to name its metrics URL")
        found = re.fullmatch(r"http://localhost:([1-9][0-9]*)/metrics", url)
        assert found, url
        port = found[1]
        # The URL itself, on whichever address this machine gives the name; and the
        # port on each address the worker was given for it.
        assert http_get(url)[0] == 200
        assert http_get(f"http://127.0.0.1:{port}/healthz") == (200, "ok\n")
        assert http_get(f"http://[::1]:{port}/healthz") == (200, "ok\n")
        proc.terminate()
        assert proc.wait(timeout=30) == 0, log.read_text()
    finally:
        end_process(proc)


@needs_ipv6
def test_a_given_port_is_served_on_every_address_of_the_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    namespace: dict[str, object] = {}
    exec(_RESOLVE_BOTH, namespace)
    monkeypatch.setattr(socket, "getaddrinfo", namespace["_getaddrinfo"])
    port = free_port()

    async def bound() -> tuple[int, list[tuple[str, int]]]:
        server = MetricsServer(ECSWorkflowEngine(load_plugins=False), "localhost", port)
        await server.start()
        try:
            assert server._server is not None
            return server.port, sorted(s.getsockname()[:2] for s in server._server.sockets)
        finally:
            await server.close()

    assert asyncio.run(bound()) == (port, [("127.0.0.1", port), ("::1", port)])

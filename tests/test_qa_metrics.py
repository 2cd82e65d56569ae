"""Metrics and health pushed at their edges: odd requests, dead workers."""

from __future__ import annotations

import asyncio
import logging
import socket
import urllib.request

from wfcore.metrics import MetricsServer


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

"""Running the dashboard as a server: the address check, the engine set-up, the serve loop."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable

from werkzeug.serving import make_server

from wfcore import ECSWorkflowEngine

from .app import Dashboard, create_app
from .security import is_loopback

__all__ = ["UnsafeBindError", "build_dashboard", "check_bind", "serve"]


class UnsafeBindError(ValueError):
    """Listening beyond this machine was asked for without an access token."""


def check_bind(host: str, token: str | None) -> None:
    """Refuse a non-loopback address unless an access token is set.

    A token of blanks is none: it would let anyone in who sends a blank header.
    """
    if not is_loopback(host) and not (token or "").strip():
        raise UnsafeBindError(
            f"refusing to listen on {host}: other machines could reach the dashboard. "
            "Set WFE_UI_TOKEN to an access token (every request must then present it), "
            "or listen on 127.0.0.1."
        )


def build_dashboard(
    store: str | None = None, worker: str | None = None, token: str | None = None
) -> Dashboard:
    """A Dashboard on ``store``; with ``worker`` (``MODULE:ATTR``) it runs that app's engine."""
    if worker:
        from wfcore.cli import load_app

        engine = load_app(worker)
        if store:
            engine.use_store(store)
    else:
        engine = ECSWorkflowEngine(store=store)
    return Dashboard(engine, run_worker=bool(worker), token=token)


def serve(
    host: str = "127.0.0.1",
    port: int = 5000,
    store: str | None = None,
    worker: str | None = None,
    token: str | None = None,
    *,
    access_log: bool = False,
    announce: Callable[[str], None] = print,
) -> None:
    """Serve the dashboard until Ctrl-C or SIGTERM, then stop its worker cleanly.

    :param token: the access token; None reads ``WFE_UI_TOKEN``. Required when
        ``host`` is not a loopback address.
    :param announce: called once with the line saying where the dashboard listens.
    """
    token = (os.environ.get("WFE_UI_TOKEN", "") if token is None else token).strip()
    check_bind(host, token)
    logging.getLogger("werkzeug").setLevel(logging.INFO if access_log else logging.WARNING)
    dashboard = build_dashboard(store, worker, token)
    app = create_app(dashboard)
    try:
        server = make_server(host, port, app, threaded=True)
    except BaseException:
        dashboard.stop()
        raise
    previous = None
    if threading.current_thread() is threading.main_thread():

        def on_term(signum: int, frame: object) -> None:
            threading.Thread(target=server.shutdown, daemon=True).start()

        previous = signal.signal(signal.SIGTERM, on_term)
    shown_host = f"[{host}]" if ":" in host else host
    mode = "running a worker" if dashboard.bridge.run_worker else "no worker in this process"
    announce(
        f"wfe dashboard on http://{shown_host}:{server.server_port}/ "
        f"(store {dashboard.store_url}; {mode}{'; token required' if token else ''})"
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        dashboard.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)

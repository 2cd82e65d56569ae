"""Fixtures for the dashboard tests: a dashboard on a real SQLite store, an API client,
a live server beside a real ``wfe worker`` process, and headless Chromium."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))

from flaskui_demo_app import make_engine  # noqa: E402
from flaskui_helpers import (  # noqa: E402
    Api,
    demo_workflows_stored,
    serving,
    start_demo_worker,
    stop_process,
    wait_for,
)
from wfe_flaskui import Dashboard, create_app  # noqa: E402

from wfcore import ECSWorkflowEngine  # noqa: E402

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def demo_engine(wfe_store_url: str) -> ECSWorkflowEngine:
    """The demo app's engine on the test's SQLite store."""
    engine = make_engine()
    engine.use_store(wfe_store_url)
    return engine


@pytest.fixture
def dashboard(demo_engine: ECSWorkflowEngine) -> Iterator[Dashboard]:
    """A dashboard that also runs the demo engine's worker (the one-process set-up),
    taking define_workflow tasks."""
    dash = Dashboard(demo_engine, run_worker=True, token="", kafka_brokers="", allow_define=True)
    yield dash
    dash.stop()


@pytest.fixture
def app(dashboard: Dashboard) -> Any:
    """The standalone Flask app around the dashboard."""
    return create_app(dashboard, secret_key="test-secret")


@pytest.fixture
def api(app: Any) -> Api:
    """A JSON API client for the app."""
    return Api(app.test_client())


# -- the live server and the browser ------------------------------------------------------


def _chromium() -> str | None:
    found = [shutil.which("chromium"), shutil.which("chromium-browser")]
    for candidate in ("/usr/bin/chromium", *found):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so the browser tests must run)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium from the system package, driven by Playwright.

    Module scope: Playwright's sync API keeps an event loop running in the main
    thread while it is open, which would break ``asyncio.run`` in later tests.
    """
    path = _chromium()
    if path is None:
        _unavailable(
            "no Chromium found at /usr/bin/chromium or on PATH; install it with "
            "`apt-get install -y chromium` (Debian/Ubuntu)"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright Python package is not installed (pip install playwright)")
    manager = sync_playwright().start()
    try:
        chromium = manager.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
    except Exception as exc:
        manager.stop()
        _unavailable(f"Chromium at {path} did not start: {exc}")
    yield chromium
    chromium.close()
    manager.stop()


class Live:
    """A dashboard served over real HTTP, beside a ``wfe worker`` subprocess."""

    def __init__(self, url: str, app: Any, dashboard: Dashboard, store: str) -> None:
        self.url = url
        self.app = app
        self.dashboard = dashboard
        self.store = store
        self.api = Api(app.test_client())


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """The dashboard (its own engine, no worker) on a free port, and one worker process."""
    folder = tmp_path_factory.mktemp("live")
    store = f"sqlite:///{folder / 'wfe.db'}"
    log = (folder / "worker.log").open("wb")
    worker = start_demo_worker(store, log)
    dash = Dashboard(
        ECSWorkflowEngine(store=store, load_plugins=False),
        token="",
        kafka_brokers="",
        refresh_seconds=0.5,
        allow_define=True,
    )
    app = create_app(dash, secret_key="live-secret")
    try:
        with serving(app) as port:
            live = Live(f"http://127.0.0.1:{port}", app, dash, store)

            # The worker saves its workflows to the store when it starts.
            def registered() -> bool:
                if worker.poll() is not None:
                    log.flush()
                    output = (folder / "worker.log").read_text()
                    raise AssertionError(f"the worker exited: {output}")
                return demo_workflows_stored(live.api)

            wait_for(registered, 30, "the worker to register its workflows")
            yield live
    finally:
        stop_process(worker, 15)
        log.close()
        dash.stop()


@pytest.fixture
def page(browser: Any, live: Live) -> Iterator[Any]:
    """A fresh browser tab; dialogs (confirmations) are accepted."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.on("dialog", lambda dialog: dialog.accept())
    tab.set_default_timeout(15000)
    yield tab
    context.close()

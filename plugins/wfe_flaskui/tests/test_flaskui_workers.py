"""Who runs the tasks: the worker holding a task and until when, a worker whose process
died (a real ``wfe worker`` killed with SIGKILL), the busy workers, and a pending task
no worker takes."""

from __future__ import annotations

import html
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flaskui_demo_app import make_engine
from flaskui_helpers import Api, demo_workflows_stored, start_demo_worker, wait_for
from wfe_flaskui import Dashboard, create_app, workers

from wfcore import ECSWorkflowEngine


@pytest.fixture
def beside(tmp_path: Path) -> Iterator[tuple[Api, str]]:
    """A dashboard without a worker of its own, on a store workers may share."""
    store = f"sqlite:///{tmp_path / 'wfe.db'}"
    dash = Dashboard(ECSWorkflowEngine(store=store, load_plugins=False), token="", kafka_brokers="")
    app = create_app(dash, secret_key="workers-secret")
    try:
        yield Api(app.test_client()), store
    finally:
        dash.stop()


def _text(response: Any) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", response.get_data(as_text=True)))


def test_a_running_task_names_its_worker_and_says_when_that_worker_died(
    beside: tuple[Api, str], tmp_path: Path
) -> None:
    api, store = beside
    log = (tmp_path / "worker.log").open("wb")
    worker = start_demo_worker(store, log)
    try:
        wait_for(lambda: demo_workflows_stored(api), 30, "the worker to store its workflows")
        task = api.submit("gated", {"gate": str(tmp_path / "never-opened")})
        api.wait_status(task["id"], "in_progress")
        owner_pattern = rf"\S+/{worker.pid}/\w+"

        page = _text(api.get(f"/tasks/{task['id']}"))
        held = re.search(rf"Worker\s*({owner_pattern}) \(lease until [^)]+, renewed while", page)
        assert held, page
        owner = held[1]
        listing = api.get("/").get_data(as_text=True)
        assert f'data-worker="{owner}" data-dead="false"' in listing

        worker.send_signal(signal.SIGKILL)
        worker.wait(30)

        # The store still says in progress: the page says the worker is gone.
        page = _text(api.get(f"/tasks/{task['id']}"))
        assert api.task(task["id"])["status"] == "in_progress"
        assert (
            f"Worker{owner} (dead: its process is gone, and the next claim takes the task over)"
            in page
        )
        listing = api.get("/").get_data(as_text=True)
        assert f'data-worker="{owner}" data-dead="true"' in listing
        assert "(dead: its tasks go to the next claim)" in listing
        row = listing.split(f'data-task-id="{task["id"]}"', 1)[1].split("</tr>", 1)[0]
        assert "worker dead: the next claim takes it over" in row
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(30)
        log.close()


def test_no_busy_worker_and_a_pending_task_nobody_took(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The app's workflows, but no worker runs them anywhere.
    engine = make_engine()
    engine.use_store(f"sqlite:///{tmp_path / 'wfe.db'}")
    dash = Dashboard(engine, token="", kafka_brokers="")
    api = Api(create_app(dash, secret_key="s").test_client())
    try:
        task = api.submit("numbers", {"n": 1})
        listing = _text(api.get("/"))
        assert "Busy workers: none (no worker holds a task now)" in listing
        # Just submitted: nothing to say yet.
        assert "No worker has taken this task" not in _text(api.get(f"/tasks/{task['id']}"))

        # Once it has waited long enough (here: at once), its page and row say so.
        monkeypatch.setattr(workers, "UNCLAIMED_AFTER", 0.0)
        page = _text(api.get(f"/tasks/{task['id']}"))
        assert re.search(
            r"No worker has taken this task for \d+ ms: the workers may all be busy, "
            r"or none runs workflow numbers on this store\.",
            page,
        ), page
        row = api.get("/").get_data(as_text=True).split(f'data-task-id="{task["id"]}"', 1)[1]
        assert 'data-note="unclaimed">no worker has taken it for ' in row.split("</tr>", 1)[0]
    finally:
        dash.stop()

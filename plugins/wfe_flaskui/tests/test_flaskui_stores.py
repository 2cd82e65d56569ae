"""`wfe ui` on a store that does not exist yet, of any kind: with --worker it says it
made the store, as `wfe worker` does; without one it notes that it made it empty
(a dashboard may start before its workers, but a mistyped --store must show). And a
store that fails under a running dashboard (a full disk, its file deleted): 503 with
the store's own words, the forms keeping what was typed.

The store plugins are installed as pip lays one out (a module and a dist-info folder
with an entry point in wfcore's group) and loaded by the real dashboard processes.
"""

from __future__ import annotations

import asyncio
import json
import os
import textwrap
import urllib.request
from pathlib import Path

import pytest
from flaskui_demo_app import make_engine
from flaskui_helpers import REPO, TESTS, Api, wait_for
from markupsafe import escape
from test_flaskui_cli import Http, _env, refused_start, running
from wfe_flaskui import Dashboard, create_app

from wfcore import TaskStatus

# Store plugins, as a third party would write them (see their docstrings): the
# ones the core's CLI tests install.
STORE_PLUGINS = REPO / "tests" / "store_plugins"
DIRSTORE = (STORE_PLUGINS / "dirstore.py").read_text()
SQLITE_IN_FOLDERS = (STORE_PLUGINS / "sqlite_in_folders.py").read_text()

# An app whose engine loads the installed plugins, as an app's engine does by default.
APP = """
from wfcore import ECSWorkflowEngine, Phase


async def double(task):
    task.output = {"n": task.data["n"] * 2}


def make(**kwargs):
    engine = ECSWorkflowEngine(poll_interval=0.05, shutdown_timeout=2.0, **kwargs)
    engine.register_handler("double", double)
    engine.register_workflow("numbers", [Phase("double", assigned_to="functional")])
    return engine


def own_store():
    # A Store object of the app's own, in a folder named by OWN_STORE; no plugin
    # is loaded that would open its URL.
    import os

    from dirstore import DirStore

    folder = os.environ["OWN_STORE"]
    return make(store=DirStore(f"dirstore://{folder}", folder), load_plugins=False)
"""


@pytest.fixture
def plugin_env(tmp_path: Path) -> dict[str, str]:
    """The dashboard's environment with the store plugins installed (dirstore loaded;
    add sqlite_in_folders to WFE_LOAD_PLUGINS to load it too) and the app importable."""
    site = tmp_path / "site"
    modules = {"dirstore": DIRSTORE, "sqlite_in_folders": SQLITE_IN_FOLDERS, "store_app": APP}
    for name, source in modules.items():
        site.mkdir(exist_ok=True)
        (site / f"{name}.py").write_text(textwrap.dedent(source))
        if name != "store_app":
            info = site / f"{name}-1.0.dist-info"
            info.mkdir()
            (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
            (info / "entry_points.txt").write_text(f"[wfcore]\n{name} = {name}\n")
    path = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])
    return dict(_env(PYTHONPATH=path), WFE_LOAD_PLUGINS="dirstore")


def test_a_worker_says_it_made_a_plugin_store(tmp_path: Path, plugin_env: dict[str, str]) -> None:
    url = f"dirstore://{tmp_path / 'jobs'}"
    args = ["--port", "0", "--store", url, "--worker", "store_app:make"]
    output: list[str] = []
    with running(args, plugin_env, output) as (_, base):
        client = Http(base)
        task = client.submit("numbers", {"n": 4})
        wait_for(
            lambda: client.request("GET", f"/api/tasks/{task['id']}")[1]["status"] == "completed",
            what="the task to complete",
        )
    assert output[0] == f"wfe: created a new store at {url}\n"
    assert (tmp_path / "jobs" / "tasks.db").exists()  # the plugin's store, where it says
    # Once: the next start finds it.
    output.clear()
    with running(args, plugin_env, output):
        pass
    assert output[0].startswith("wfe dashboard on "), output
    assert "new store" not in "".join(output)


def test_a_worker_says_it_made_the_store_object_its_app_gave(
    tmp_path: Path, plugin_env: dict[str, str]
) -> None:
    """The store asked is the one the engine opens: the app's own Store object, which
    no plugin would give for its URL."""
    folder = tmp_path / "own"
    env = dict(plugin_env, OWN_STORE=str(folder))
    env.pop("WFE_STORE", None)  # which would replace the app's store
    output: list[str] = []
    with running(["--port", "0", "--worker", "store_app:own_store"], env, output):
        pass
    assert output[0] == f"wfe: created a new store at dirstore://{folder}\n", output
    assert (folder / "tasks.db").exists()


def test_a_plugin_serving_sqlite_urls_is_named_by_its_url_not_taken_for_a_file(
    tmp_path: Path, plugin_env: dict[str, str]
) -> None:
    """The store the engine opens is the plugin's (a folder beside the path), so the
    path is not where it was made, and it is there at the next start."""
    env = dict(plugin_env, WFE_LOAD_PLUGINS="dirstore,sqlite_in_folders")
    path = tmp_path / "jobs.db"
    url = f"sqlite://{path}"
    args = ["--port", "0", "--store", url, "--worker", "store_app:make"]
    output: list[str] = []
    with running(args, env, output):
        pass
    made = [line for line in output if "new store" in line]
    assert made == [f"wfe: created a new store at {url}\n"], output
    assert (tmp_path / "jobs.db.d").is_dir() and not path.exists()
    output.clear()
    with running(args, env, output):
        pass
    assert "new store" not in "".join(output), output


def test_without_a_worker_a_plugin_store_that_does_not_exist_is_noted(
    tmp_path: Path, plugin_env: dict[str, str]
) -> None:
    typo = tmp_path / "typo"
    url = f"dirstore://{typo}"
    for extra in ([], ["--app", "store_app:make"]):
        output: list[str] = []
        with running(["--port", "0", "--store", url, *extra], plugin_env, output):
            pass
        assert output[0] == (
            f"note: no store at {url} yet; the dashboard made an empty one "
            "(check --store and WFE_STORE if your workers use another)\n"
        ), (extra, output)
        assert typo.is_dir()  # made by the plugin, where the note says
        typo.rename(tmp_path / f"seen{len(extra)}")
    # A store whose exists() fails: one line naming it, before anything is served.
    far = f"brokendir://{tmp_path / 'far'}"
    refusal = refused_start(["--port", "0", "--store", far], plugin_env)
    assert (refusal.returncode, refusal.stderr) == (
        1,
        f"Error: cannot tell whether the store {far} exists: "
        "OSError: the file server does not answer\n",
    )
    # A store that cannot tell (written before Store.exists()) is opened without a note.
    folder = tmp_path / "old"
    output = []
    with running(["--port", "0", "--store", f"olddir://{folder}"], plugin_env, output) as (_, url):
        status, body = Http(url).request("GET", "/api/tasks")
        assert status == 200 and body["total"] == 0
    assert output[0].startswith("wfe dashboard on "), output
    assert folder.is_dir()


def test_a_password_in_the_store_url_is_shown_masked(
    tmp_path: Path, plugin_env: dict[str, str]
) -> None:
    """The start-up lines and every page name the store: never with its password."""
    folder = tmp_path / "jobs"
    url = f"dirstore://bob:hunter2@{folder}"
    args = ["--port", "0", "--store", url, "--worker", "store_app:make"]
    output: list[str] = []
    with running(args, plugin_env, output) as (_, base):
        page = urllib.request.urlopen(base).read().decode()
    masked = f"dirstore://***@{folder}"
    assert output[0] == f"wfe: created a new store at {masked}\n", output
    assert f"(store {masked}; " in output[1], output
    assert masked in page
    assert "hunter2" not in "".join(output) + page


# -- a store that fails under a running dashboard -------------------------------------

# `python -m wfe_flaskui`, allowed to write files of FILE_LIMIT bytes at most: a
# write to the store past that fails in SQLite as on a disk that has filled up, while
# reading it works. (Python ignores SIGXFSZ, so the write fails instead of the process.)
LIMITED = """
import os
import resource
import runpy

hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
resource.setrlimit(resource.RLIMIT_FSIZE, (int(os.environ["FILE_LIMIT"]), hard))
runpy.run_module("wfe_flaskui", run_name="__main__", alter_sys=True)
"""


async def _waiting_question(store: str) -> str:
    """A task of the demo app's `question` workflow, waiting for its answer, on ``store``."""
    engine = make_engine()
    engine.use_store(store)
    try:
        task = await engine.submit_task({"q": "Ship it?"}, "question")
        await engine.run_until_idle()
        waiting = await engine.get_task(task.id)
        assert waiting is not None and waiting.status is TaskStatus.WAITING_HUMAN, waiting
        return task.id
    finally:
        await engine.aclose()


def test_a_write_the_store_fails_is_503_and_the_forms_keep_what_was_typed(tmp_path: Path) -> None:
    """A store that takes no more writes (a full disk): the API answers 503 with the
    store's own words, not 400 as if the request were at fault, and the submit and
    answer forms come back (503) with those words and what was typed in them."""
    db = tmp_path / "wfe.db"
    store = f"sqlite:///{db}"
    task_id = asyncio.run(_waiting_question(store))
    (tmp_path / "limited.py").write_text(LIMITED)
    env = _env(
        PYTHONPATH=os.pathsep.join([str(tmp_path), str(TESTS)]),
        PYTHONDONTWRITEBYTECODE="1",
        FILE_LIMIT=str(256 * 1024),
    )
    big = "x" * 400_000  # larger than any file the dashboard may write; under max_body
    args = ["--port", "0", "--store", store, "--app", "flaskui_demo_app:make_engine"]
    output: list[str] = []
    with running(args, env, output, command=("limited",)) as (_, url):
        client = Http(url)
        csrf = client.csrf_header()
        status, body = client.request(
            "POST", "/api/tasks", {"workflow": "question", "data": {"q": big}}, **csrf
        )
        assert status == 503, body
        assert body["error"].startswith(f"cannot write to {db}: "), body
        status, body = client.request("GET", f"/api/tasks/{task_id}")
        assert (status, body["status"]) == (200, "waiting_human")  # reading still works

        typed = json.dumps({"q": big})
        status, page, _ = client.multipart(
            "/submit",
            {"csrf_token": csrf["X-CSRF-Token"], "workflow": "question", "data": typed},
            {},
        )
        assert status == 503
        assert f"The store did not take the task: cannot write to {db}: " in page
        assert "Nothing was submitted; send this form again once the store works." in page
        assert escape(typed) in page  # in the data field, to send again

        answer = {"csrf_token": csrf["X-CSRF-Token"], "phase": "ask", "answer": f"yes {big}"}
        status, page, _ = client.multipart(f"/tasks/{task_id}/answer", answer, {})
        assert status == 503
        assert f"The store did not take your answer: cannot write to {db}: " in page
        assert "It was not recorded; send it again once the store works." in page
        assert f">yes {big}</textarea>" in page
        status, body = client.request("GET", f"/api/tasks/{task_id}")
        assert (status, body["status"]) == (200, "waiting_human")
    # The log says what failed, a line each, without a traceback.
    failed = [line.partition(": cannot write to ")[0] for line in output if "store failed" in line]
    assert failed == [
        "the store failed POST /api/tasks",
        "the store failed POST /submit",
        f"the store failed POST /tasks/{task_id}/answer",
    ], output
    assert "Traceback" not in "".join(output)


def test_a_store_deleted_under_the_dashboard_is_named_on_every_page_with_503(
    tmp_path: Path,
) -> None:
    """Its file deleted (`rm wfe.db`), the store refuses every read and write: each page
    and API call says so with 503, rather than a 500 page that names nothing or an
    API 400."""
    db = tmp_path / "wfe.db"
    engine = make_engine()
    engine.use_store(f"sqlite:///{db}")
    dash = Dashboard(engine, token="", kafka_brokers="")  # its worker does not run
    try:
        api = Api(create_app(dash, secret_key="x").test_client())
        task = api.submit("numbers", {"n": 1})  # pending: no worker runs here
        for path in tmp_path.glob("wfe.db*"):
            path.unlink()
        refused = wait_for(
            lambda: (answer := api.get("/api/tasks")).status_code != 200 and answer,
            what="the store to notice its file is gone",
        )
        lost = f"the store file {db} was deleted while this process had it open"
        assert refused.status_code == 503
        assert refused.get_json()["error"].startswith(lost)
        submitted = api.post("/api/tasks", {"workflow": "numbers", "data": {}})
        assert submitted.status_code == 503 and submitted.get_json()["error"].startswith(lost)
        for path in ("/", "/inbox", "/workflows", "/submit", f"/tasks/{task['id']}"):
            page = api.get(path)
            assert page.status_code == 503, path
            assert lost in page.text, path
        # The cancel button: nothing changed, and the page it returns to says why.
        cancel = api.client.post(f"/tasks/{task['id']}/cancel", data={"csrf_token": api.csrf})
        assert cancel.status_code == 303
        page = api.get(cancel.headers["Location"])
        assert page.status_code == 503
        assert f"The store did not take the cancel of task {task['id'][:8]}: {lost}" in page.text
    finally:
        dash.stop()


def test_a_store_that_cannot_be_opened_yet_is_tried_again_at_each_request(tmp_path: Path) -> None:
    """A dashboard started by its first request (mounted in an app, or
    ``create_app(..., start=False)``) whose store cannot be opened then (its folder is
    not there yet: a file stands in its place) says why at each request, and opens
    it at the first request after it can: it does not give up for good."""
    blocker = tmp_path / "data"
    blocker.write_text("not a folder")
    db = blocker / "wfe.db"
    dash = Dashboard(store=f"sqlite:///{db}", token="", kafka_brokers="")
    try:
        client = create_app(dash, secret_key="x", start=False).test_client()
        for path in ("/", "/api/tasks", "/", "/api/tasks"):
            answer = client.get(path)
            assert answer.status_code == 503, path
            assert f"cannot use {db}: " in answer.text, (path, answer.text)
        blocker.unlink()
        assert client.get("/api/tasks").get_json()["total"] == 0
        assert client.get("/").status_code == 200
    finally:
        dash.stop()

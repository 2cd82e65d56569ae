"""`wfe ui` on a store that does not exist yet, of any kind: with --worker it says it
made the store, as `wfe worker` does; without one it notes that it made it empty
(a dashboard may start before its workers, but a mistyped --store must show).

The store plugins are installed as pip lays one out (a module and a dist-info folder
with an entry point in wfcore's group) and loaded by the real dashboard processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest
from flaskui_helpers import REPO, TESTS, wait_for
from test_flaskui_cli import Http, _env, running

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


def _ui(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`python -m wfe_flaskui ARGS`, expected to stop before it serves."""
    return subprocess.run(
        [sys.executable, "-m", "wfe_flaskui", "--port", "0", *args],
        cwd=TESTS,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_worker_says_it_made_a_plugin_store(tmp_path: Path, plugin_env: dict[str, str]) -> None:
    url = f"dirstore://{tmp_path / 'jobs'}"
    args = ["--port", "0", "--store", url, "--worker", "store_app:make"]
    output: list[str] = []
    with running(args, plugin_env, output) as (_, base):
        client = Http(base)
        _, csrf = client.request("GET", "/api/csrf")
        status, task = client.request(
            "POST",
            "/api/tasks",
            {"workflow": "numbers", "data": {"n": 4}},
            **{"X-CSRF-Token": csrf["csrf_token"]},
        )
        assert status == 201
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
    refused = _ui(["--store", far], plugin_env)
    assert (refused.returncode, refused.stderr) == (
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

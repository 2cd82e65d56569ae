"""wfe commands on a third-party store plugin's URLs: a store that does not exist is
refused by the commands that only read or change stored tasks (when the store can
tell, ``Store.exists()``), and a plugin that serves ``sqlite://`` URLs is warned
about and not taken for wfcore's SQLite store.

The plugin is installed as pip lays one out (a module and a dist-info folder with
an entry point in wfcore's group), and run by the real ``wfe`` in subprocesses.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from core_util import wfe_at_once, with_pythonpath
from test_cli import APP

# Store plugins, as a third party would write them (see their docstrings).
STORE_PLUGINS = Path(__file__).parent / "store_plugins"
DIRSTORE = (STORE_PLUGINS / "dirstore.py").read_text()
SQLITE_IN_FOLDERS = (STORE_PLUGINS / "sqlite_in_folders.py").read_text()


def _site(tmp_path: Path, modules: dict[str, str]) -> Path:
    """A folder with each module installed as a plugin of its own name."""
    site = tmp_path / "site"
    for name, source in modules.items():
        info = site / f"{name}-1.0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(f"[wfcore]\n{name} = {name}\n")
        (site / f"{name}.py").write_text(source)
    return site


@pytest.fixture
def plugin_env(wfe, tmp_path: Path) -> dict[str, str]:
    """wfe's environment with the dirstore plugin installed and loaded."""
    site = _site(tmp_path, {"dirstore": DIRSTORE})
    return with_pythonpath(wfe.env, site, WFE_LOAD_PLUGINS="dirstore")


# Every command that only reads or changes stored tasks.
READ_ONLY = [
    ("tasks",),
    ("show", "x"),
    ("status",),
    ("workflows",),
    ("wait", "x", "--timeout", "1s"),
    ("cancel", "x"),
    ("outbox",),
    ("metrics",),
    ("purge", "--older-than", "1d"),
]


def test_commands_on_stored_tasks_refuse_a_plugin_store_that_does_not_exist(
    wfe, tmp_path: Path, plugin_env: dict[str, str]
) -> None:
    typo = tmp_path / "typo"
    url = f"dirstore://{typo}"
    results = wfe_at_once(wfe, *READ_ONLY, env=dict(plugin_env, WFE_STORE=url))
    for args, result in zip(READ_ONLY, results, strict=True):
        assert (result.returncode, result.stderr) == (
            1,
            f"Error: no store at {url}: nothing was submitted or run there "
            "(check --store and WFE_STORE)\n",
        ), args
    assert not typo.exists()  # not created empty, by any of them
    # --app names an app whose engine uses wfcore's default store: --store wins.
    result = wfe("tasks", "--app", APP, "--store", url, env=plugin_env, check=False)
    assert result.returncode == 1 and f"no store at {url}:" in result.stderr

    # A first submission makes the store, and says so; then the commands use it.
    made = wfe("submit", "review", "--app", APP, "--store", url, env=plugin_env)
    assert made.stderr == f"wfe: created a new store at {url}\n"
    task_id = made.stdout.strip()
    again = wfe("submit", "review", "--app", APP, "--store", url, env=plugin_env)
    assert again.stderr == ""
    listed = json.loads(wfe("tasks", "--json", "--store", url, env=plugin_env).stdout)
    assert task_id in [task["id"] for task in listed]
    assert wfe("show", task_id, "--store", url, env=plugin_env).returncode == 0


def test_a_store_plugin_that_cannot_tell_is_opened_as_before(
    wfe, tmp_path: Path, plugin_env: dict[str, str]
) -> None:
    """A plugin written before Store.exists() keeps working: it cannot say, so the
    command opens its store, which creates it."""
    folder = tmp_path / "old"
    url = f"olddir://{folder}"
    listed = wfe("tasks", "--json", "--store", url, env=plugin_env)
    assert (listed.stdout, listed.stderr) == ("[]\n", "")
    assert folder.is_dir()
    task_id = wfe("submit", "review", "--app", APP, "--store", url, env=plugin_env).stdout.strip()
    assert json.loads(wfe("show", task_id, "--json", "--store", url, env=plugin_env).stdout)


def test_a_store_whose_exists_fails_is_one_line_naming_it(
    wfe, tmp_path: Path, plugin_env: dict[str, str]
) -> None:
    url = f"brokendir://{tmp_path / 'far'}"
    result = wfe("status", "--store", url, env=plugin_env, check=False)
    assert (result.returncode, result.stderr) == (
        1,
        f"Error: cannot tell whether the store {url} exists: "
        "OSError: the file server does not answer\n",
    )
    # An exists() that is a plain method answers all the same.
    url = f"plaindir://{tmp_path / 'typo'}"
    result = wfe("status", "--store", url, env=plugin_env, check=False)
    assert result.returncode == 1 and f"no store at {url}:" in result.stderr
    assert not (tmp_path / "typo").exists()


def test_a_failed_submission_says_it_made_a_plugin_store(
    wfe, tmp_path: Path, plugin_env: dict[str, str]
) -> None:
    """wfe submit cannot remove a plugin's store as it removes a SQLite file: it says
    that there was none, and that one was made."""
    url = f"dirstore://{tmp_path / 'typo'}"
    refused = wfe("submit", "nope", "--store", url, env=plugin_env, check=False)
    assert refused.returncode == 2  # a workflow the store does not have
    assert refused.stderr.startswith(
        f"wfe: there was no store at {url}; this command made one, with no task in it "
        "(check --store and WFE_STORE)\nError: unknown workflow 'nope'"
    ), refused.stderr


def test_a_submission_whose_store_then_fails_to_close_names_the_task(
    wfe, tmp_path: Path, plugin_env: dict[str, str]
) -> None:
    """The task was submitted: its id is printed and the error says what failed after,
    never that the store has no task in it (a resubmission would make a second)."""
    url = f"faultydir://{tmp_path / 'store'}"
    result = wfe(
        "submit",
        "review",
        "--data",
        "{}",
        "--app",
        APP,
        "--store",
        url,
        env=plugin_env,
        check=False,
    )
    task_id = result.stdout.strip()
    assert result.returncode == 1 and len(task_id) == 32, result
    assert result.stderr.splitlines()[-2:] == [
        f"wfe: task {task_id} was submitted, then closing the store failed: see whether "
        f"it is stored (wfe show {task_id}) before submitting it again",
        f"Error: cannot close the store {url!r}: OSError: [Errno 28] No space left on device",
    ], result.stderr
    conn = sqlite3.connect(tmp_path / "store" / "tasks.db")
    try:
        assert conn.execute("SELECT id FROM tasks").fetchall() == [(task_id,)]
    finally:
        conn.close()


def test_a_plugin_serving_sqlite_urls_is_warned_about_and_not_taken_for_sqlite(
    wfe, tmp_path: Path
) -> None:
    site = _site(tmp_path, {"dirstore": DIRSTORE, "sqlite_in_folders": SQLITE_IN_FOLDERS})
    env = with_pythonpath(wfe.env, site, WFE_LOAD_PLUGINS="dirstore,sqlite_in_folders")
    path = tmp_path / "jobs.db"
    url = f"sqlite://{path}"
    warning = (
        "WARNING wfcore.plugins: plugins 'sqlite_in_folders' and 'wfcore.stores.sqlite' both "
        "open sqlite:// stores; 'sqlite_in_folders' wins (wfcore asks the plugin "
        "registered last first, and the built-in stores after all others); "
        "WFE_DISABLED_PLUGINS=wfcore.stores.sqlite keeps that and ends this warning"
    )

    missing = wfe("tasks", "--store", url, env=env, check=False)
    assert missing.returncode == 1
    lines = missing.stderr.splitlines()
    # Once, though the command asks for the store twice (to check, then to open).
    assert [line.split(" ", 1)[1] for line in lines[:-1]] == [warning]
    assert lines[-1] == (
        f"Error: no store at {url}: nothing was submitted or run there "
        "(check --store and WFE_STORE)"
    )

    # The store made is the plugin's folder, not a SQLite file at the path; wfe
    # submit says so, by the URL.
    made = wfe("submit", "review", "--app", APP, "--store", url, env=env)
    assert made.stderr.splitlines()[-1] == f"wfe: created a new store at {url}"
    assert (tmp_path / "jobs.db.d").is_dir() and not path.exists()
    failed_url = f"sqlite://{tmp_path / 'other.db'}"
    refused = wfe("submit", "nope", "--store", failed_url, env=env, check=False)
    assert f"wfe: there was no store at {failed_url}; this command made one" in refused.stderr
    assert (tmp_path / "other.db.d").is_dir()

    # Disabling the built-in keeps the plugin's store and ends the warning.
    one_store = dict(env, WFE_DISABLED_PLUGINS="wfcore.stores.sqlite")
    quiet = wfe("tasks", "--json", "--store", url, env=one_store)
    assert quiet.stderr == "" and len(json.loads(quiet.stdout)) == 1

    shown = json.loads(wfe("plugins", "--all", "--json", env=env).stdout)
    schemes = {info["name"]: info.get("store_schemes") for info in shown}
    assert schemes == {
        "dirstore": [],  # its own schemes: not known without asking it about a URL
        "sqlite_in_folders": ["sqlite://"],
        "wfcore.adapters": None,  # no store
        "wfcore.stores.memory": ["memory://"],
        "wfcore.stores.sqlite": ["sqlite://"],
    }


def test_wfe_plugins_shows_the_schemes_each_store_plugin_opens(
    wfe, tmp_path: Path, plugin_env: dict[str, str]
) -> None:
    """The table gets a STORES column; the store in use (--store) is asked about
    too, so a plugin's own scheme shows for it."""
    url = f"dirstore://{tmp_path / 'jobs'}"
    table = wfe("--store", url, "plugins", "--all", env=plugin_env).stdout.splitlines()
    assert table[0].split() == ["NAME", "PACKAGE", "VERSION", "HOOKS", "STORES"]
    stores = {line.split()[0]: line.split()[-1] for line in table[1:]}
    assert stores == {
        "dirstore": "dirstore://",
        "wfcore.adapters": "-",
        "wfcore.stores.memory": "memory://",
        "wfcore.stores.sqlite": "sqlite://",
    }
    assert not (tmp_path / "jobs").exists()  # asked, never opened
    # Without --all, no plugin listed opens a built-in scheme: no STORES column, and a
    # note on how to see which URLs the store plugin opens.
    plain = wfe("plugins", env=plugin_env)
    assert plain.stdout.splitlines()[0].split() == ["NAME", "PACKAGE", "VERSION", "HOOKS"]
    assert plain.stderr == (
        "note: dirstore opens stores of schemes only it knows: "
        "wfe --store URL plugins says which plugin opens URL\n"
    )
    assert wfe("--store", url, "plugins", env=plugin_env).stderr == ""


def test_a_worker_says_when_it_made_a_plugin_store(
    wfe, tmp_path: Path, plugin_env: dict[str, str]
) -> None:
    """wfe worker, with one process or several, says once that it made a plugin's
    store, as it does for a SQLite file; a store that cannot tell says nothing."""
    for processes in ("1", "2"):
        url = f"dirstore://{tmp_path / f'jobs-{processes}'}"
        args = ("worker", APP, "--store", url, "-p", processes, "--until-idle", "--quiet")
        assert wfe(*args, env=plugin_env).stderr == f"wfe: created a new store at {url}\n"
        assert wfe(*args, env=plugin_env).stderr == ""
    old = f"olddir://{tmp_path / 'old'}"
    made = wfe("worker", APP, "--store", old, "--until-idle", "--quiet", env=plugin_env)
    assert made.stderr == "" and (tmp_path / "old").is_dir()


def test_store_to_create_names_the_store_opening_would_make_and_makes_nothing(
    tmp_path: Path, wfe_run
) -> None:
    from wfcore import ECSWorkflowEngine, StoreError
    from wfcore.stores.base import Store
    from wfcore.stores.sqlite import SQLiteStore

    path = tmp_path / "new" / "jobs.db"
    engine = ECSWorkflowEngine(store=f"sqlite://{path}", load_plugins=False)
    store = wfe_run(engine.store_to_create())
    assert isinstance(store, SQLiteStore) and store.location == str(path)
    assert not path.parent.exists()  # asking made nothing
    wfe_run(engine.get_store())
    assert wfe_run(engine.store_to_create()) is None  # open: it exists
    wfe_run(engine.aclose())
    assert wfe_run(ECSWorkflowEngine(store=f"sqlite://{path}").store_to_create()) is None
    assert wfe_run(ECSWorkflowEngine(store="memory://").store_to_create()) is None

    class Remote(Store):
        """A store whose exists() answers as given; nothing else is called."""

        def __init__(self, url: str, answer: object) -> None:
            self.url, self.answer = url, answer

        async def exists(self):  # type: ignore[override]
            if isinstance(self.answer, Exception):
                raise self.answer
            return self.answer

    Remote.__abstractmethods__ = frozenset()
    url = "pg://bob:hunter2@db/wf"
    made = wfe_run(ECSWorkflowEngine(store=Remote(url, False)).store_to_create())
    assert made is not None and made.location == "pg://***@db/wf"
    for cannot_tell in (None, "yes"):
        assert wfe_run(ECSWorkflowEngine(store=Remote(url, cannot_tell)).store_to_create()) is None
    with pytest.raises(StoreError) as failed:
        wfe_run(ECSWorkflowEngine(store=Remote(url, OSError("no route"))).store_to_create())
    assert str(failed.value) == (
        "cannot tell whether the store pg://***@db/wf exists: OSError: no route"
    )
    with pytest.raises(StoreError, match="no storage backend handles 'pg://"):
        wfe_run(ECSWorkflowEngine(store=url, load_plugins=False).store_to_create())

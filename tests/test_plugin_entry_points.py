"""Installed plugins as the ``wfe`` command and an engine see them: two distributions
with an entry point of the same name, and a plugin whose hook takes an argument its
hook does not pass.

Each distribution is laid out in a folder of its own as pip installs one (its
module and a ``.dist-info`` folder with its metadata and entry points), and the
folders are put on the path in order: the one found first is the earlier one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from wfcore import ECSWorkflowEngine
from wfcore.plugins import DEFAULT_PLUGINS

# Each twin registers a handler of its own, so an engine shows which of them loaded.
TWIN = """
from wfcore import hookimpl


@hookimpl
def wfe_register_handlers(register):
    register("{handler}", lambda task: None)
"""


def install(site: Path, dist: str, module: str, entry_points: dict[str, str], code: str) -> Path:
    """Lay out distribution ``dist`` (version 1.0) in ``site`` as pip would."""
    site.mkdir(parents=True)
    (site / f"{module}.py").write_text(code)
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = "".join(f"{name} = {value}\n" for name, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[wfcore]\n{lines}")
    return site


@pytest.fixture
def twins(tmp_path: Path) -> list[Path]:
    """wfe-twin-a, then wfe-twin-b, both with an entry point named ``plugin``."""
    return [
        install(
            tmp_path / f"site-{key}",
            f"wfe-twin-{key}",
            f"wfe_twin_{key}",
            {"plugin": f"wfe_twin_{key}"},
            TWIN.format(handler=f"from-{key}"),
        )
        for key in ("a", "b")
    ]


def wfe(sites: list[Path], *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``wfe ARGS`` with ``sites`` first on the path, the plugin switches as given."""
    environ = {
        k: v
        for k, v in os.environ.items()
        if k not in ("WFE_LOAD_PLUGINS", "WFE_DISABLED_PLUGINS", "WFE_TRACE_PLUGINS")
    }
    path = [str(site) for site in sites]
    environ["PYTHONPATH"] = os.pathsep.join([*path, environ.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", "wfcore.cli", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


def listed(sites: list[Path], **env: str) -> list[tuple[str, str]]:
    """(name, package) of each plugin ``wfe plugins`` lists (the twins only loaded)."""
    env.setdefault("WFE_LOAD_PLUGINS", "wfe-twin-a, wfe-twin-b")
    done = wfe(sites, "plugins", "--json", **env)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # nothing dropped, no name that matches nothing
    return [(p["name"], p["package"]) for p in json.loads(done.stdout)]


def test_two_distributions_with_one_entry_point_name_both_load(twins):
    assert listed(twins) == [("plugin", "wfe-twin-a"), ("wfe-twin-b:plugin", "wfe-twin-b")]
    # The earlier distribution on the path keeps the plain name.
    assert listed(twins[::-1]) == [("plugin", "wfe-twin-b"), ("wfe-twin-a:plugin", "wfe-twin-a")]


@pytest.mark.parametrize(
    ("disabled", "left"),
    [
        ("wfe-twin-b", [("plugin", "wfe-twin-a")]),
        ("WFE_Twin_A", [("wfe-twin-b:plugin", "wfe-twin-b")]),
        ("wfe-twin-b:plugin", [("plugin", "wfe-twin-a")]),
        ("plugin", []),  # an entry-point name disables it in every distribution
    ],
)
def test_disabling_one_distribution_leaves_the_other(twins, disabled, left):
    assert listed(twins, WFE_DISABLED_PLUGINS=disabled) == left


def test_both_contribute_to_an_engine(twins, monkeypatch):
    for site in reversed(twins):
        monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("WFE_LOAD_PLUGINS", "wfe-twin-a,wfe-twin-b")
    engine = ECSWorkflowEngine("memory://")
    assert engine.handler_for("from-a") is not None
    assert engine.handler_for("from-b") is not None


def test_loading_twice_registers_nothing_twice(twins, monkeypatch):
    from wfcore.plugins import _entry_points, _load_entry_points, make_plugin_manager

    for site in reversed(twins):
        monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("WFE_LOAD_PLUGINS", "wfe-twin-a,wfe-twin-b")
    pm = make_plugin_manager()

    def names() -> list[str]:
        return sorted(name for name, _ in pm.list_name_plugin() if name not in DEFAULT_PLUGINS)

    assert names() == ["plugin", "wfe-twin-b:plugin"]
    _load_entry_points(pm, _entry_points())
    assert names() == ["plugin", "wfe-twin-b:plugin"]


def test_an_installed_plugin_with_a_wrong_argument_name_is_one_line(tmp_path: Path):
    """Every wfe command used to die with pluggy's traceback."""
    code = "from wfcore import hookimpl\n\n\n@hookimpl\ndef wfe_classify(tsk, engine):\n    pass\n"
    site = install(
        tmp_path / "site", "wfe-careless", "wfe_careless", {"careless": "wfe_careless"}, code
    )
    done = wfe([site], "plugins", WFE_LOAD_PLUGINS="wfe-careless")
    assert done.returncode == 1
    assert done.stderr.startswith(
        "Error: plugin 'careless': wfe_classify takes 'tsk', which the hook does not pass "
        "(it passes: task, engine)"
    )
    assert done.stderr.count("\n") == 1, done.stderr


def test_an_entry_point_name_that_is_no_plugin_is_still_warned_about(twins):
    """The twins' qualified names count as plugin names; a typo still does not."""
    done = wfe(twins, "plugins", WFE_LOAD_PLUGINS="wfe-twin-a", WFE_DISABLED_PLUGINS="wfe-twin-c")
    assert done.returncode == 0
    assert "WFE_DISABLED_PLUGINS names 'wfe-twin-c', which is no plugin" in done.stderr


STORE_PLUGIN = """
from wfcore import hookimpl
from wfcore.stores.memory import MemoryStore


@hookimpl
def wfe_open_store(url):
    return MemoryStore(url) if url.startswith("acme://") else None
"""


def test_a_store_url_whose_plugin_is_kept_out_names_the_plugin(tmp_path: Path):
    """The one plugin that serves acme:// is installed but disabled, or not named in
    WFE_LOAD_PLUGINS: the error says so, as an unknown command's does."""
    site = install(tmp_path / "site", "wfe-acme", "wfe_acme", {"acme": "wfe_acme"}, STORE_PLUGIN)
    served = wfe([site], "--store", "acme://x", "workflows", WFE_LOAD_PLUGINS="wfe-acme")
    assert "no storage backend" not in served.stderr
    for env, why in [
        ({"WFE_DISABLED_PLUGINS": "acme"}, "acme (wfe-acme) disabled by WFE_DISABLED_PLUGINS"),
        ({"WFE_LOAD_PLUGINS": "wfe-kafka"}, "WFE_LOAD_PLUGINS names none of the installed"),
    ]:
        kept_out = wfe([site], "--store", "acme://x", "tasks", **env)
        assert kept_out.returncode == 1
        assert "Error: no storage backend handles 'acme://x' (built-in: " in kept_out.stderr
        assert f"; plugins not loaded: {why}" in kept_out.stderr, kept_out.stderr

"""wfe with a broken or clashing installed plugin: one-line errors, the built-ins kept."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from core_util import wfe_at_once
from test_cli import APP


def _installed(wfe, tmp_path: Path, name: str, source: str) -> dict[str, str]:
    """The environment of a wfe with ``source`` installed as plugin ``name``, laid out
    as pip lays one out: a module plus dist-info with an entry point in wfcore's group."""
    site = tmp_path / "site"
    info = site / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[wfcore]\n{name} = {name}\n")
    (site / f"{name}.py").write_text(source)
    env = dict(wfe.env, PYTHONPATH=f"{site}{os.pathsep}{wfe.env['PYTHONPATH']}")
    env.pop("WFE_LOAD_PLUGINS")
    return env


def test_a_plugin_failing_to_contribute_is_one_line_on_store_commands(wfe, tmp_path) -> None:
    wfe("submit", "review", "--app", APP)  # the store, made without the plugin
    env = _installed(
        wfe,
        tmp_path,
        "broken",
        "from wfcore import hookimpl\n\n"
        "@hookimpl\ndef wfe_register_handlers(register):\n"
        "    raise RuntimeError('register boom')\n",
    )
    commands = (("status",), ("tasks",), ("show", "x"), ("workflows",), ("submit", "review"))
    for args, result in zip(commands, wfe_at_once(wfe, *commands, env=env), strict=True):
        assert result.returncode == 1, args
        assert result.stderr == (
            "Error: plugin 'broken' failed in wfe_register_handlers: RuntimeError: register boom\n"
        ), args


def test_a_plugin_that_does_not_import_says_how_to_skip_it(wfe, tmp_path) -> None:
    wfe("submit", "review", "--app", APP)
    env = _installed(wfe, tmp_path, "broken", "import does_not_exist_xyz\n")
    said = (
        "cannot load plugin 'broken' (broken): No module named 'does_not_exist_xyz' "
        "(set WFE_DISABLED_PLUGINS=broken to skip it)\n"
    )
    status = wfe("status", env=env, check=False)
    assert status.returncode == 1 and status.stderr == f"Error: {said}"
    more = wfe("status", env=dict(env, WFE_DISABLED_PLUGINS="other"), check=False)
    assert "(set WFE_DISABLED_PLUGINS=other,broken to skip it)" in more.stderr
    # Help and the version answer all the same.
    helped = wfe("--help", env=env)
    assert helped.stderr == f"Warning: {said}" and "Usage: wfe" in helped.stdout
    assert "version" in wfe("--version", env=env).stdout
    skipped = wfe("status", env=dict(env, WFE_DISABLED_PLUGINS="broken"))
    assert skipped.stdout.startswith("WORKFLOW")


def test_a_plugin_command_never_replaces_a_built_in_one(wfe, tmp_path) -> None:
    wfe("submit", "review", "--app", APP)
    env = _installed(
        wfe,
        tmp_path,
        "clash",
        "import click\nfrom wfcore import hookimpl\n\n"
        "@hookimpl\ndef wfe_register_commands(cli):\n"
        "    @cli.command('status')\n    def status():\n        click.echo(\"plugin's status\")\n"
        "    @cli.command('clash-hello')\n    def hello():\n        click.echo('hello')\n",
    )
    result = wfe("status", env=env)
    assert result.stdout.startswith("WORKFLOW")
    assert result.stderr == (
        "Warning: plugin 'clash' adds a command 'status', the name of a built-in wfe "
        "command; the built-in one is kept and the plugin's left out\n"
    )
    assert wfe("clash-hello", env=env).stdout == "hello\n"  # its other commands are added
    # Disabled, its command is unknown: the error says which plugin is kept out.
    kept_out = wfe("clash-hello", env=dict(env, WFE_DISABLED_PLUGINS="clash"), check=False)
    assert kept_out.returncode == 2
    assert kept_out.stderr.endswith(
        "Error: No such command 'clash-hello' (plugins not loaded: clash disabled by "
        "WFE_DISABLED_PLUGINS)\n"
    )
    assert wfe("nope", env=env, check=False).stderr.endswith("Error: No such command 'nope'.\n")


_TWIN = """import click
from wfcore import hookimpl
from wfcore.errors import WorkflowError

@hookimpl
def wfe_register_commands(cli):
    @cli.command('twin')
    def twin():
        click.echo('{name}')

    @cli.command('{name}-fails')
    @click.option('--how')
    def fails(how):
        if how == 'workflow':
            raise WorkflowError('no task abc')
        raise KeyError('abc')
"""


def test_two_plugins_one_command_name_and_a_plugin_command_that_raises(wfe, tmp_path) -> None:
    env = _installed(wfe, tmp_path, "twin_a", _TWIN.format(name="twin_a"))
    (tmp_path / "site" / "twin_b.py").write_text(_TWIN.format(name="twin_b"))
    info = tmp_path / "site" / "twin_b-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: twin_b\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[wfcore]\ntwin_b = twin_b\n")

    # Which plugin adds its command first depends on the order they load in.
    twin = wfe("twin", env=env)
    kept = twin.stdout.strip()
    other = {"twin_a": "twin_b", "twin_b": "twin_a"}[kept]
    assert twin.stderr == (
        f"Warning: plugins '{kept}' and '{other}' both add a command 'twin'; the one of "
        f"'{kept}' is kept, as it was added first, and the one of '{other}' left out (to "
        "choose, disable the other plugin with WFE_DISABLED_PLUGINS)\n"
    )
    env["WFE_DISABLED_PLUGINS"] = other  # one plugin from here on: no warning
    # Its output read by a program that stops early (| head) ends it quietly, as it
    # does a built-in command: not as a plugin's command that failed.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        closed = subprocess.run(
            [sys.executable, "-m", "wfcore.cli", "twin"],
            env=env,
            cwd=tmp_path,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert (closed.returncode, closed.stderr) == (1, "")

    # A plugin's command that raises: one line naming the command and the plugin,
    # exit 1, as the built-in commands fail; the traceback at --log-level debug.
    failed = wfe(f"{kept}-fails", env=env, check=False)
    assert (failed.returncode, failed.stdout) == (1, "")
    assert failed.stderr == (
        f"Error: wfe {kept}-fails, a command of plugin '{kept}', failed: KeyError: 'abc' "
        "(--log-level debug shows the traceback)\n"
    )
    debug = wfe("--log-level", "debug", f"{kept}-fails", env=env, check=False)
    assert debug.returncode == 1
    assert f"wfcore.cli: wfe {kept}-fails (plugin '{kept}') failed\nTraceback" in debug.stderr
    assert debug.stderr.endswith(f"'{kept}', failed: KeyError: 'abc'\n")
    # A WorkflowError is shown as a built-in command shows its own.
    refused = wfe(f"{kept}-fails", "--how", "workflow", env=env, check=False)
    assert (refused.returncode, refused.stderr) == (1, "Error: no task abc\n")

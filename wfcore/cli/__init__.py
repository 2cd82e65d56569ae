"""The ``wfe`` command line: run workers, submit, inspect, answer and cancel tasks.

The root group and what the commands share are in :mod:`._base`; each further
module adds its commands to the group as it is imported."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from typing import Any

import click

from ..errors import WorkflowError
from ..plugins import (
    call_impl,
    closest_hook,
    hook_impls,
    installed_plugins,
    make_plugin_manager,
    not_loaded_plugins,
    plugin_infos,
)
from . import inspection, tasks, worker  # noqa: F401  (each adds its commands to cli)
from ._base import (
    _LOG_LEVELS,
    EXIT_INTERRUPTED,
    _Context,
    _setup_logging,
    _stderr_gone,
    _table,
    _unencodable_escaped,
    cli,
    load_app,
)

__all__ = ["cli", "load_app", "main"]


@cli.command()
@click.option("--all", "show_all", is_flag=True, help="Include the built-in plugins.")
@click.option("--hook", metavar="NAME", help="Only plugins implementing this hook.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def plugins(ctx: click.Context, show_all: bool, hook: str | None, as_json: bool) -> None:
    """List loaded plugins: package, version, the hooks each implements and the
    store URL schemes each opens (of sqlite://, memory:// and the --store in use)."""
    pm = _plugin_manager()
    # The group's --store (or WFE_STORE) is asked about too, so that a plugin's own
    # scheme shows for the store in use.
    store = ctx.find_object(_Context)
    store_urls = [store.store] if store and store.store else []
    infos = plugin_infos(pm, include_builtins=show_all, store_urls=store_urls)
    if hook is not None:  # --hook "" names no hook: refused below, not every plugin
        hooks = sorted(name for name in vars(pm.hook) if name.startswith("wfe_"))
        # In any case, and without the prefix every hook has: classify, WFE_CLASSIFY.
        spelled = hook.strip().lower()
        hook = next((h for h in (spelled, f"wfe_{spelled}") if h in hooks), hook)
        if hook not in hooks:
            close = closest_hook(hook, hooks)
            said = f"did you mean {close!r}? " if close else ""
            raise click.BadParameter(
                f"no hook named {hook!r} ({said}hooks: {', '.join(hooks)})", param_hint="--hook"
            )
        infos = [i for i in infos if hook in i["hooks"]]
    if as_json:
        click.echo(json.dumps(infos, indent=2))
        return
    if not infos:
        kept_out = "" if plugin_infos(pm) else _kept_out()
        if hook:
            what = f"no plugins implement {hook}" + (f"; {kept_out}" if kept_out else "")
        else:
            what = kept_out or "no plugins installed"
        click.echo(what + ("" if show_all else " (--all shows the built-ins)"))
        return
    headers: tuple[str, ...] = ("NAME", "PACKAGE", "VERSION", "HOOKS")
    rows: list[tuple[str, ...]] = [
        (i["name"], i["package"] or "-", i["version"] or "-", ", ".join(i["hooks"])) for i in infos
    ]
    # A STORES column only when a listed plugin opens stores: most listings have none.
    if any(i.get("store_schemes") for i in infos):
        headers += ("STORES",)
        rows = [
            (*row, ", ".join(i.get("store_schemes", [])) or "-")
            for row, i in zip(rows, infos, strict=True)
        ]
    _table(headers, rows)
    # A store plugin's own schemes cannot be listed, only asked about URL by URL.
    unshown = [
        i["name"] for i in infos if "wfe_open_store" in i["hooks"] and not i.get("store_schemes")
    ]
    if unshown:
        one = len(unshown) == 1
        click.echo(
            f"note: {', '.join(unshown)} {'opens' if one else 'open'} stores of schemes only "
            f"{'it knows' if one else 'they know'}: wfe --store URL plugins says which "
            "plugin opens URL",
            err=True,
        )


def _kept_out() -> str:
    """Why no installed plugin is loaded, when WFE_LOAD_PLUGINS or
    WFE_DISABLED_PLUGINS is the cause: "no plugins loaded: ..."; else ""."""
    kept_out = not_loaded_plugins()
    return f"no plugins loaded: {kept_out}" if kept_out else ""


def _plugin_manager() -> Any:
    if _PM_CACHE:
        return _PM_CACHE[0]
    pm = make_plugin_manager()
    _PM_CACHE.append(pm)
    return pm


_PM_CACHE: list[Any] = []


def main() -> None:
    """Entry point of the ``wfe`` console script."""
    try:
        _main()
    except KeyboardInterrupt:  # before a command runs (loading plugins, say)
        click.echo("wfe: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)


def _main() -> None:
    if sys.stderr is None:
        # Started with stderr closed (2>&-, a daemon launcher): Python gives None,
        # which every log line, note and error would fail on; they go nowhere instead.
        _stderr_gone()
    _unencodable_escaped()
    # Before the plugins load, for what they log; the command sets its own level.
    level = os.environ.get("WFE_LOG_LEVEL", "").upper()
    _setup_logging(getattr(logging, level) if level in _LOG_LEVELS else logging.WARNING)
    try:
        pm = _plugin_manager()
    except WorkflowError as exc:
        message = f"{exc}{_skip_hint(str(exc))}"
        if sys.argv[1:] in ([], ["--help"], ["-h"], ["--version"]):
            # These need no plugin: they answer, after saying what is wrong.
            click.echo(f"Warning: {message}", err=True)
            cli(prog_name="wfe")  # exits
            return
        click.echo(f"Error: {message}", err=True)
        sys.exit(1)
    _add_plugin_commands(pm)
    cli(prog_name="wfe")


def _skip_hint(message: str) -> str:
    """How to run wfe without the installed plugin ``message`` names, if it names one."""
    found = re.search(r"plugin '([^']+)'", message)
    if found is None:
        return ""
    name = found.group(1)
    installed = {ep_name for ep_name, _ in installed_plugins()}
    if name not in installed and name.rpartition(":")[2] not in installed:
        return ""
    already = os.environ.get("WFE_DISABLED_PLUGINS", "").strip().strip(",")
    value = f"{already},{name}" if already else name
    return f" (set WFE_DISABLED_PLUGINS={value} to skip it)"


def _add_plugin_commands(pm: Any) -> None:
    """Let each installed plugin add its commands (``wfe_register_commands``).

    One plugin at a time, so that a command taking a name wfe has can name the
    plugin (see :meth:`wfcore.cli._base._Group.add_command`), and one failing plugin leaves the
    others' commands and the built-ins working (wfe plugins among them, to look
    into it).
    """
    for impl in hook_impls(pm, "wfe_register_commands"):
        cli.adding_for = impl.plugin_name
        try:
            call_impl(impl, cli=cli)
        except Exception as exc:
            said = str(exc) if isinstance(exc, WorkflowError) else f"{type(exc).__name__}: {exc}"
            click.echo(
                f"Warning: plugin {impl.plugin_name!r} failed in wfe_register_commands: {said}",
                err=True,
            )
        finally:
            cli.adding_for = None

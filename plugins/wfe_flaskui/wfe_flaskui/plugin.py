"""The wfcore plugin entry point of wfe_flaskui: it adds the ``wfe ui`` command."""

from __future__ import annotations

from typing import TYPE_CHECKING

from wfcore import hookimpl

if TYPE_CHECKING:
    import click

__all__ = ["wfe_register_commands"]


@hookimpl
def wfe_register_commands(cli: click.Group) -> None:
    """Add ``ui`` (the dashboard) to the ``wfe`` command line."""
    from .cli import ui_command

    if "ui" not in cli.commands:
        cli.add_command(ui_command, name="ui")

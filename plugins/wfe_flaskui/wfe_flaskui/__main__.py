"""``python -m wfe_flaskui``: start the dashboard (the same command as ``wfe ui``)."""

from __future__ import annotations

from .cli import ui_command

if __name__ == "__main__":
    ui_command(prog_name="python -m wfe_flaskui")

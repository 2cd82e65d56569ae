"""wfe_report_header answers a line, a list of lines or None; anything else is said
in a line naming the plugin, as a plugin that raises is, rather than a traceback
that stops ``wfe worker`` as it starts (a number) or lines made of a dict's keys."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from wfcore import ECSWorkflowEngine, hookimpl
from wfcore.plugins import report_header


class Says:
    def __init__(self, said: Any) -> None:
        self.said = said

    @hookimpl
    def wfe_report_header(self, engine: Any) -> Any:
        return self.said


@pytest.mark.parametrize(
    ("said", "lines"),
    [
        ("one line", ["one line"]),
        (["a", "b"], ["a", "b"]),
        (("a", 2), ["a", "2"]),
        (None, []),
        (
            42,
            [
                "Says: cannot report (wfe_report_header returned int 42, "
                "not a line or a list of lines)"
            ],
        ),
        (
            {"topic": "x"},
            [
                "Says: cannot report (wfe_report_header returned dict {'topic': 'x'}, "
                "not a line or a list of lines)"
            ],
        ),
    ],
)
def test_what_a_plugin_reports_becomes_lines(said: Any, lines: list[str]) -> None:
    engine = ECSWorkflowEngine("memory://", load_plugins=False, plugins=[Says(said)])
    assert report_header(engine) == lines


APP = """
from wfcore import ECSWorkflowEngine, hookimpl


class Odd:
    @hookimpl
    def wfe_report_header(self, engine):
        return 42


engine = ECSWorkflowEngine(store="sqlite:///{db}", load_plugins=False, plugins=[Odd()])
"""


def test_a_worker_starts_despite_an_odd_report(tmp_path: Path) -> None:
    (tmp_path / "oddapp.py").write_text(APP.format(db=tmp_path / "wfe.db"))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "wfcore.cli", "worker", "oddapp:engine", "--until-idle"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "Odd: cannot report (wfe_report_header returned int 42" in done.stderr
    assert "Traceback" not in done.stderr

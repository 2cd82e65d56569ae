"""The wfe command line as a new user meets it: mistakes and what the errors advise."""

from __future__ import annotations

from pathlib import Path

APP = """\
from wfcore import ECSWorkflowEngine, Phase

engine = ECSWorkflowEngine()
engine.register_workflow("intake", [Phase("approve", assigned_to="human")])
"""


def test_an_app_file_outside_the_current_folder_gets_a_hint_that_works(wfe, tmp_path: Path) -> None:
    """``wfe worker /srv/app/invoices.py:engine`` (a systemd unit, a file one folder
    up) has no dotted name from the current folder: the hint names the module and
    the folder to import it from, and following it works, where it used to offer
    ``srv.app.invoices:engine``, which does not import."""
    srv = tmp_path / "srv" / "app"
    srv.mkdir(parents=True)
    (srv / "invoices.py").write_text(APP)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    hint = (
        "(MODULE is a module's dotted name, not a file: invoices:engine, "
        f"with PYTHONPATH={srv} or run from that folder)\n"
    )
    for spec in (f"{srv}/invoices.py:engine", "../srv/app/invoices.py:engine"):
        run = wfe("workflows", "--app", spec, cwd=elsewhere, check=False)
        assert run.returncode == 2, (spec, run.stderr)
        assert run.stderr.endswith(hint), (spec, run.stderr)
    # A file under the current folder keeps its dotted name from here.
    inside = wfe("workflows", "--app", "srv/app/invoices.py:engine", check=False)
    assert inside.stderr.endswith(
        "(MODULE is a module's dotted name, not a file: srv.app.invoices:engine)\n"
    ), inside.stderr
    # Following the hint: the module name, its folder on PYTHONPATH, from elsewhere.
    env = {**wfe.env, "PYTHONPATH": str(srv)}
    submitted = wfe("submit", "intake", "--app", "invoices:engine", cwd=elsewhere, env=env)
    assert submitted.stdout.strip()

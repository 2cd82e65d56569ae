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
        # importlib's own words for a name starting with dots are not for the user.
        assert "TypeError" not in run.stderr and "'package' argument" not in run.stderr
    relative = wfe("workflows", "--app", ".invoices:engine", cwd=srv, check=False)
    assert (relative.returncode, relative.stderr.splitlines()[-1]) == (
        2,
        "Error: Invalid value for --app: cannot import '.invoices': MODULE is a module's "
        "dotted name from the current folder or PYTHONPATH, not a relative one",
    )
    # A file under the current folder keeps its dotted name from here.
    inside = wfe("workflows", "--app", "srv/app/invoices.py:engine", check=False)
    assert inside.stderr.endswith(
        "(MODULE is a module's dotted name, not a file: srv.app.invoices:engine)\n"
    ), inside.stderr
    # Following the hint: the module name, its folder on PYTHONPATH, from elsewhere.
    env = {**wfe.env, "PYTHONPATH": str(srv)}
    submitted = wfe("submit", "intake", "--app", "invoices:engine", cwd=elsewhere, env=env)
    assert submitted.stdout.strip()


def test_a_file_path_given_as_the_store_gets_its_sqlite_url(wfe, tmp_path: Path) -> None:
    """``--store ./wfe.db`` or ``WFE_STORE=/srv/wfe.db`` (a path, the first thing a
    new user tries) is refused with the URL to write instead, which then works."""
    (tmp_path / "invoices.py").write_text(APP)
    url = f"sqlite://{tmp_path / 'jobs.db'}"
    said = f"a file path is not a store URL: for a SQLite file there, {url}\n"
    for store in ("./jobs.db", str(tmp_path / "jobs.db")):
        refused = wfe("submit", "intake", "--app", "invoices:engine", "--store", store, check=False)
        assert refused.returncode == 1, refused.stderr
        assert refused.stderr.endswith(said), refused.stderr
        assert f"no storage backend handles {store!r}" in refused.stderr, refused.stderr
    assert not (tmp_path / "jobs.db").exists()
    # A mistyped URL is no path: no URL is made of it.
    typo = wfe("tasks", "--store", "sqlite//srv/jobs.db", check=False)
    assert typo.returncode == 1 and "file path" not in typo.stderr, typo.stderr
    wfe("submit", "intake", "--app", "invoices:engine", "--store", url)
    assert (tmp_path / "jobs.db").is_file()

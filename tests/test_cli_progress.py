"""The worker's progress lines in a terminal and elsewhere (a log file, journald)."""

from __future__ import annotations

import re

from wfcore.cli.worker import _Progress

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ "


def test_progress_elsewhere_is_printed_on_change_or_once_a_minute() -> None:
    progress = _Progress(terminal=False)
    assert re.fullmatch(STAMP + "a", progress.show("a", now=0.0) or "")
    assert progress.show("a", now=2.0) is None  # nothing new
    assert progress.show("a", now=58.0) is None
    assert re.fullmatch(STAMP + "b", progress.show("b", now=59.0) or "")  # changed
    assert progress.show("b", now=61.0) is None
    assert re.fullmatch(STAMP + "b", progress.show("b", now=119.0) or "")  # a minute on
    assert re.fullmatch(STAMP + "b", progress.show("b", now=120.0, always=True) or "")


def test_progress_elsewhere_that_changes_at_every_line_is_printed_every_ten_seconds() -> None:
    """A busy worker, or a schedule firing every second, changes the counts at every
    line: a log file gets one every ten seconds, not every two (8 MB a day)."""
    progress = _Progress(terminal=False)
    shown = [t for t in range(0, 60, 2) if progress.show(f"completed {t}", now=float(t))]
    assert shown == [0, 10, 20, 30, 40, 50]


def test_progress_in_a_terminal_is_every_line_as_it_is() -> None:
    progress = _Progress(terminal=True)
    assert [progress.show("a", now=t) for t in (0.0, 2.0, 4.0)] == ["a", "a", "a"]


def test_a_worker_logging_to_a_file_stamps_its_progress(wfe) -> None:
    lines = wfe("worker", "split_app:engine", "--until-idle").stderr.splitlines()
    assert re.fullmatch(STAMP + r"this worker: completed 0 .*", lines[-1]), lines
    assert lines[1].startswith("wfe worker ")  # the start-up lines are as they were

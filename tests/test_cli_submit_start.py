"""wfe submit --delay / --at beyond what a task may wait is refused naming the
option given, before any store is made."""

from __future__ import annotations

from pathlib import Path


def test_a_start_more_than_100_years_off_names_the_option(wfe, tmp_path: Path) -> None:
    cases = [
        (("--delay", "99999999w"), "--delay: '99999999w' is more than 100 years"),
        (
            ("--at", "9999-12-31T23:59:59Z"),
            "--at: '9999-12-31T23:59:59Z' is more than 100 years away",
        ),
    ]
    for option, message in cases:
        result = wfe("submit", "review", *option, check=False)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("Usage: wfe submit"), result.stderr
        assert result.stderr.endswith(f"Error: Invalid value for {message}\n"), result.stderr
        assert "run_after" not in result.stderr  # submit_task's name, not the command's
    assert not (tmp_path / "wfe.db").exists()

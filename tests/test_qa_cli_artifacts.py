"""wfe submit --artifact at its edges."""

from __future__ import annotations

from pathlib import Path

from test_cli import APP


def test_an_artifact_option_with_nothing_after_its_equals_sign_says_so(wfe, tmp_path: Path) -> None:
    # Not "artifact 'report': '.' is not a regular file" (Path("") is ".").
    result = wfe("submit", "review", "--app", APP, "--artifact", "report=", check=False)
    assert result.returncode == 2
    assert "--artifact: 'report=' names no file after '=': give NAME=FILE, or FILE" in (
        result.stderr
    )
    assert not (tmp_path / "wfe.db").exists()  # nothing was submitted

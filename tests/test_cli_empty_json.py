"""An empty --data or --output (an unset variable, an empty file or pipe) is named
as empty, not as JSON's "Expecting value: line 1 column 1 (char 0)"; --data - with
stdin closed is one line too."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_empty_json_input_is_named_as_empty(wfe, tmp_path: Path) -> None:
    (tmp_path / "empty.json").write_text("\n")
    cases = [
        (("submit", "review", "--data", ""), {}, "--data: '' is empty, not JSON"),
        (("submit", "review", "--data", " "), {}, "--data: ' ' is empty, not JSON"),
        (("submit", "review", "--data", "@empty.json"), {}, "--data: 'empty.json' is empty"),
        (("submit", "review", "--data", "-"), {"input": ""}, "--data: stdin is empty"),
        (("resume", "x", "--output", ""), {}, "--output: '' is empty, not JSON"),
        (("resume", "x", "--output", "@empty.json"), {}, "--output: 'empty.json' is empty"),
    ]
    for args, kwargs, message in cases:
        result = wfe(*args, check=False, **kwargs)
        assert result.returncode == 2, (args, result.stderr)
        assert f"Error: Invalid value for {message}" in result.stderr, (args, result.stderr)
        assert "Expecting value" not in result.stderr
    assert not (tmp_path / "wfe.db").exists()  # refused before a store was made


def test_data_from_a_closed_stdin_is_one_line(wfe, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "wfcore.cli", "submit", "review", "--data", "-"],
        cwd=tmp_path,
        env=wfe.env,
        capture_output=True,
        text=True,
        preexec_fn=lambda: os.close(0),
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.endswith(
        "Error: Invalid value for --data: stdin is closed: no JSON to read\n"
    )
    assert "Traceback" not in result.stderr


def test_numbers_json_does_not_have_are_refused_as_the_option_s(wfe, tmp_path: Path) -> None:
    """Python's json reads NaN, Infinity and 1e999 (as inf): the engine then refused the
    data in words of its own, without naming --data ("Out of range float values"); and
    it reads a key given twice as the last of its values."""
    cases = [
        (
            ("submit", "review", "--data", "NaN"),
            "--data: not valid JSON (NaN is not a JSON number)",
        ),
        (
            ("submit", "review", "--data", '{"x": -Infinity}'),
            "--data: not valid JSON (-Infinity is not a JSON number)",
        ),
        (
            ("resume", "x", "--output", "[1e999]"),
            "--output: not valid JSON (the number 1e999 is too large)",
        ),
        # Python's json keeps the last of a key given twice, dropping the other value.
        (
            ("submit", "review", "--data", '{"n": 1, "opts": {"fast": true, "fast": false}}'),
            "--data: not valid JSON (the key 'fast' is given twice in one object)",
        ),
        (
            ("resume", "x", "--output", '[{"ok": 1, "ok": 1}]'),
            "--output: not valid JSON (the key 'ok' is given twice in one object)",
        ),
    ]
    for args, message in cases:
        result = wfe(*args, check=False)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.endswith(f"Error: Invalid value for {message}\n"), result.stderr
    assert not (tmp_path / "wfe.db").exists()  # refused before a store was made

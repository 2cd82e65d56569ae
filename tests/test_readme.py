"""The README keeps its promises: its examples run as printed, and every hook is documented
with its exact signature and exercised by a test."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import wfcore.hookspecs

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _code_blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def _hookspecs() -> list[tuple[str, inspect.Signature]]:
    return [
        (name, inspect.signature(fn))
        for name, fn in inspect.getmembers(wfcore.hookspecs, inspect.isfunction)
        if name.startswith("wfe_")
    ]


def test_the_example_runs_as_printed(tmp_path: Path) -> None:
    section = README.split("## Example", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
    expected = re.search(r"It prints:\n\n```\n(.*?)```", section, flags=re.S).group(1)
    script = tmp_path / "example.py"
    script.write_text(code)
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected


def test_the_plugin_testing_example_passes(tmp_path: Path) -> None:
    code = next(block for block in _code_blocks("python") if "def test_shout" in block)
    (tmp_path / "test_shout.py").write_text(code)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


@pytest.mark.parametrize("name,signature", _hookspecs(), ids=[n for n, _ in _hookspecs()])
def test_every_hook_is_documented_with_its_signature(name: str, signature: inspect.Signature):
    rendered = f"{name}{signature}".replace("'", "").replace("|", "\\|")
    assert f"`{rendered}`" in README


@pytest.mark.parametrize("name", [n for n, _ in _hookspecs()])
def test_every_hook_has_a_test(name: str) -> None:
    test_files = [
        p
        for p in [*ROOT.glob("tests/**/*.py"), *ROOT.glob("plugins/*/tests/**/*.py")]
        if p.name != "test_readme.py"
    ]
    assert any(name in p.read_text() for p in test_files), f"no test mentions {name}"


def test_every_hookspec_has_a_full_docstring() -> None:
    for name, _ in _hookspecs():
        doc = inspect.getdoc(getattr(wfcore.hookspecs, name)) or ""
        assert ":param" in doc, f"{name} documents no parameter"
        assert "called" in doc.lower(), f"{name} does not say when it is called"

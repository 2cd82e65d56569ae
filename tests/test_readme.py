"""The README keeps its promises: its examples run as printed, and every hook is documented
with its exact signature and exercised by a test."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from core_util import run_pytest

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
    result = run_pytest(tmp_path, str(tmp_path))
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


def _snippet_after(heading: str) -> str:
    section = README.split(heading, 1)[1]
    return re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)


def _run_snippet(tmp_path: Path, snippet: str, checks: str) -> str:
    """Run a README fragment that uses ``engine`` inside an async main, then ``checks``."""
    body = textwrap.indent(snippet + "\nawait engine.run_until_idle()\n" + checks, "    ")
    script = tmp_path / "snippet.py"
    script.write_text(
        "import asyncio\n"
        "from wfcore import ECSWorkflowEngine, Phase, Task, TaskStatus\n\n"
        "async def main():\n"
        "    engine = ECSWorkflowEngine(store='memory://', load_plugins=False)\n"
        f"{body}\n"
        "asyncio.run(main())\n"
    )
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_child_tasks_example_prints_what_it_says(tmp_path: Path) -> None:
    snippet = _snippet_after("## Child tasks")
    said = re.search(r"print\(.*\)  # (.*)", snippet).group(1)
    assert _run_snippet(tmp_path, snippet, "").splitlines() == [said]


def test_the_routing_example_routes_as_it_says(tmp_path: Path) -> None:
    snippet = _snippet_after("## Routing")
    checks = (
        "for severity in (9, 1):\n"
        "    t = await engine.submit_task({'severity': severity}, 'support')\n"
        "    await engine.run_until_idle()\n"
        "    t = await engine.get_task(t.id)\n"
        "    print(severity, t.status.value, t.classification, t.output)\n"
    )
    out = _run_snippet(tmp_path, snippet, checks)
    assert out.splitlines() == [
        "9 waiting_human urgent None",
        "1 completed normal {'answer': 'see the FAQ'}",
    ]


def test_the_define_workflow_example_ends_waiting_in_review(tmp_path: Path) -> None:
    snippet = _snippet_after("## Defining workflows at run time")
    checks = (
        "t = await engine.get_task(task.id)\n"
        "print(t.workflow_name, t.data, t.outputs['draft'], t.status.value, t.classification)\n"
    )
    out = _run_snippet(tmp_path, snippet, checks)
    assert out == (
        "translate {'text': 'Bonjour'} {'text': \"Hello (from 'Bonjour')\"} waiting_human review\n"
    )


def test_the_schedule_example_submits_and_runs_its_slot(tmp_path: Path) -> None:
    snippet = _snippet_after("## Schedules")
    # Its slot moved to a minute ago, so that the example has one due now.
    start = "start=datetime(2026, 1, 1, 2, 0, tzinfo=timezone.utc),"
    assert start in snippet
    snippet = snippet.replace(start, "start=datetime.now(timezone.utc) - timedelta(minutes=1),")
    checks = (
        "[t] = await engine.list_tasks()\n"
        "slot = datetime.fromisoformat(t.context['slot'])\n"
        "print(t.id == 'nightly@' + slot.strftime('%Y-%m-%dT%H:%M:%SZ'), t.status.value)\n"
        "print(t.output == 'sales report up to ' + t.context['slot'])\n"
    )
    out = _run_snippet(tmp_path, snippet, checks)
    assert out.splitlines() == ["True completed", "True"]

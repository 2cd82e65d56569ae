"""The README's runnable examples run as printed, against the local test server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[3] / "README.md"


def _example(name: str) -> str:
    text = README.read_text()
    match = re.search(rf"<!-- readme-test: {name} -->\n```python\n(.*?)```", text, re.S)
    assert match, f"README example {name!r} not found"
    return match.group(1)


def _run(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "example.py"
    script.write_text(code)
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_openai_example(openai_server, tmp_path):
    openai_server.reply("wfcore runs tasks through persisted phases.")

    done = _run(_example("openai"), tmp_path)

    assert done.returncode == 0, done.stderr
    assert done.stdout == "wfcore runs tasks through persisted phases.\n"
    body = openai_server.requests[0]["body"]
    assert body["model"] == "gpt-4o"
    assert body["messages"][0]["content"] == "Summarize in one sentence."


def test_local_server_example(openai_server, tmp_path):
    openai_server.tool_calls(("order_status", {"order_id": "A-1001"}))
    openai_server.tool_calls(("ask_human", {"question": "Refund A-1001, delivered 40 days ago?"}))
    openai_server.json_reply({"refund": True, "reason": "approved by a person"})

    done = _run(_example("local"), tmp_path)

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "The agent asks: Refund A-1001, delivered 40 days ago?"
    assert lines[1] == "completed {'refund': True, 'reason': 'approved by a person'}"
    assert re.fullmatch(r"tokens used: \d+", lines[2])
    bodies = [r["body"] for r in openai_server.requests]
    assert {b["model"] for b in bodies} == {"llama3.2"}
    assert bodies[0]["response_format"] == {"type": "json_object"}
    assert bodies[0]["temperature"] == 0
    assert bodies[1]["messages"][-1]["content"] == (
        '{"order_id": "A-1001", "status": "delivered", "days_since_delivery": 40}'
    )
    assert bodies[2]["messages"][-1]["content"] == "Yes, refund it as a goodwill gesture."

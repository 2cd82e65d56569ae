"""The opening messages of a phase: instructions, task data, earlier outputs and text artifacts."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wfcore import Artifact, Phase, Task

if TYPE_CHECKING:
    from wfcore import ECSWorkflowEngine

__all__ = ["DEFAULT_SYSTEM_PROMPT", "Budget", "opening_messages", "system_message"]

#: The system message when neither the adapter nor the phase gives instructions.
DEFAULT_SYSTEM_PROMPT = (
    "You carry out one phase of a workflow. The user message holds the task's data, "
    "the outputs of earlier phases and the task's files. Use the tools you are given "
    "when they help, then reply with the result of this phase."
)

_TEXT_TYPES = (
    "application/json",
    "application/xml",
    "application/yaml",
    "application/x-yaml",
    "application/toml",
    "application/javascript",
    "application/x-sh",
    "application/sql",
)


class Budget:
    """Characters left for the input; caps each item and notes what was cut."""

    def __init__(self, per_item: int, total: int) -> None:
        self.per_item = per_item
        self.left = total
        self.total = total

    def take(self, text: str, size_note: str | None = None) -> str:
        """``text`` cut to what the budget allows, with a note saying what was cut."""
        limit = min(self.per_item, self.left)
        if len(text) <= limit:
            self.left -= len(text)
            return text
        self.left -= limit
        of = size_note or f"{len(text)} characters"
        if limit <= 0:
            return f"[cut: left out, the input limit of {self.total} characters is used up]"
        return text[:limit] + f"\n[cut: showing the first {limit} characters of {of}]"


def system_message(system_prompt: str | None, instructions: str | None) -> dict[str, Any]:
    """The system message: the adapter's prompt, then the phase's instructions."""
    parts = [p.strip() for p in (system_prompt, instructions) if p and p.strip()]
    return {"role": "system", "content": "\n\n".join(parts) or DEFAULT_SYSTEM_PROMPT}


async def opening_messages(
    task: Task,
    phase: Phase,
    engine: ECSWorkflowEngine,
    system_prompt: str | None,
    budget: Budget,
) -> list[dict[str, Any]]:
    """The system and user messages that start a phase's conversation."""
    sections = [
        f"Workflow {task.workflow_name!r}, phase {phase.target_classification!r}, task {task.id}."
    ]
    sections.append("## Task data\n" + _fenced(budget.take(_as_text(task.data))))
    own = phase.target_classification
    earlier = {k: v for k, v in task.outputs.items() if k != own}
    if earlier:
        parts = ["## Outputs of earlier phases"]
        for name, output in earlier.items():
            parts.append(f"### {name}\n" + _fenced(budget.take(_as_text(output))))
        sections.append("\n".join(parts))
    if own in task.outputs:
        # The phase ran before in this task (a review sent the work back, say): what
        # the request is about, "make it shorter", refers to this.
        sections.append(
            f"## Your previous output for this phase\nPhase {own!r} ran before in this "
            "task; this is what it produced then.\n"
            + _fenced(budget.take(_as_text(task.outputs[own])))
        )
    if task.artifacts:
        parts = ["## Files (artifacts)"]
        for art in task.artifacts:
            parts.append(await _artifact_section(art, task, engine, budget))
        sections.append("\n".join(parts))
    return [
        system_message(system_prompt, phase.instructions),
        {"role": "user", "content": "\n\n".join(sections)},
    ]


async def _artifact_section(
    art: Artifact, task: Task, engine: ECSWorkflowEngine, budget: Budget
) -> str:
    origin = f", from phase {art.phase}" if art.phase else ""
    title = f"### {art.name} ({art.media_type}, {art.size} bytes{origin})"
    try:
        path = await engine.artifact_path(task, art.name)
    except Exception as exc:
        return f"{title}: not readable ({exc})"
    limit = max(0, min(budget.per_item, budget.left))
    # At most four bytes per UTF-8 character: a longer file still yields more than
    # `limit` characters, so the cut is noted.
    head = await asyncio.to_thread(_read_head, path, limit * 4 + 8)
    text = _decode_text(head, art.media_type)
    if text is None:
        return f"{title}: binary, not included"
    return f"{title}\n" + _fenced(budget.take(text, f"a {art.size}-byte file"))


def _read_head(path: Path, size: int) -> bytes:
    with path.open("rb") as fh:
        return fh.read(size)


def _decode_text(data: bytes, media_type: str) -> str | None:
    """The bytes as text if they are text, else None (binary)."""
    textual = (
        media_type.startswith("text/")
        or media_type in _TEXT_TYPES
        or media_type.endswith(("+json", "+xml"))
    )
    if not textual and b"\x00" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A head cut inside a multi-byte character is still text.
        if exc.start >= len(data) - 3:
            return data[: exc.start].decode("utf-8")
        return data.decode("utf-8", errors="replace") if textual else None


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _fenced(text: str) -> str:
    fence = "```"
    while fence in text:
        fence += "`"
    return f"{fence}\n{text}\n{fence}"

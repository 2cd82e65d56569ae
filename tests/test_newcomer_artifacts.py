"""Artifacts as a new user meets them: a listed artifact whose file is gone."""

from __future__ import annotations

import os

import pytest

from wfcore import Phase, Task, TaskStatus
from wfcore.errors import ArtifactError


def test_a_listed_artifact_whose_file_is_gone_is_not_called_unknown(wfe_engine_factory, wfe_run):
    """wfe show lists the artifact, so "has no artifact" would send the user looking
    for a typo; the error says the file is missing and where it was looked for."""
    engine = wfe_engine_factory()

    async def validate(task: Task) -> None:
        task.output = (await engine.read_artifact(task, "invoice.txt")).decode()

    engine.register_handler("validate", validate)
    engine.register_workflow(
        "intake",
        [Phase("upload", assigned_to="human"), Phase("validate", assigned_to="functional")],
    )

    async def scenario() -> tuple[Task, list[str]]:
        task = await engine.submit_task({}, "intake", artifacts={"invoice.txt": b"Amount: 3"})
        await engine.run_until_idle()
        os.remove(task.artifacts[0].path)  # a store restored without its artifacts folder
        refused = []
        for reading in (task, task.id):
            with pytest.raises(ArtifactError) as caught:
                await engine.read_artifact(reading, "invoice.txt")
            refused.append(str(caught.value))
        with pytest.raises(ArtifactError, match=r"has no artifact 'other\.txt'"):
            await engine.read_artifact(task, "other.txt")  # not listed: as before
        with pytest.raises(ArtifactError, match=r"'\.\.' components"):
            await engine.read_artifact(task, "../x")  # a name no artifact can have
        await engine.resume(task.id, "uploaded")
        await engine.run_until_idle()
        stored = await engine.get_task(task.id)
        assert stored is not None
        return stored, refused

    task, refused = wfe_run(scenario())
    folder = os.path.dirname(task.artifacts[0].path)
    for message in refused:
        assert "has no artifact" not in message, message
        assert message.startswith(
            f"task {task.id!r} lists the artifact 'invoice.txt', but its file is not in {folder}"
        ), message
    assert task.status is TaskStatus.FAILED
    assert task.error == f"ArtifactError: {refused[0]}"

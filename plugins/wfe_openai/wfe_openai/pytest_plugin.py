"""The ``fake_openai`` pytest fixture (registered through the ``pytest11`` entry point).

Installing wfe-openai makes the fixture available to every test, as wfcore's
``wfe_engine`` is. Under ``PYTEST_DISABLE_PLUGIN_AUTOLOAD=1`` load it with
``pytest -p wfe_openai.pytest_plugin``.

``fake_openai``
    A started :class:`wfe_openai.testing.FakeOpenAI`, stopped after the test. For
    the test's duration ``OPENAI_BASE_URL`` is its ``base_url`` and
    ``OPENAI_API_KEY`` is :data:`wfe_openai.testing.FAKE_API_KEY`, so an
    ``OpenAIAgentAdapter()`` built without ``base_url=`` (or a ``wfe worker``
    subprocess with ``WFE_AGENT=openai``) talks to the fake too, never to
    api.openai.com with a real key.

A test scripts the model's replies, runs the engine, and checks the task and the
requests the model received::

    from wfcore import Phase, TaskStatus, TaskType
    from wfe_openai import OpenAIAgentAdapter


    def test_the_agent_asks_then_answers(fake_openai, wfe_engine, wfe_run):
        fake_openai.ask_human("Which size, S or M?")
        fake_openai.reply("Ordered in size M.")
        wfe_engine.register_adapter(TaskType.AGENTIC, OpenAIAgentAdapter())
        wfe_engine.register_workflow("shop", [Phase("order", assigned_to="agentic")])

        async def scenario():
            task = await wfe_engine.submit_task({"item": "t-shirt"}, "shop")
            await wfe_engine.run_until_idle()
            assert (await wfe_engine.get_task(task.id)).status is TaskStatus.WAITING_HUMAN
            await wfe_engine.resume(task.id, "M")
            await wfe_engine.run_until_idle()
            return await wfe_engine.get_task(task.id)

        assert wfe_run(scenario()).output == "Ordered in size M."
        assert fake_openai.messages()[-1]["content"] == "M"
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .testing import FAKE_API_KEY, FakeOpenAI

__all__ = ["fake_openai"]


@pytest.fixture
def fake_openai(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAI]:
    """A scripted OpenAI-compatible server; ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY``
    point at it during the test."""
    with FakeOpenAI() as fake:
        monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", FAKE_API_KEY)
        yield fake

"""The wfe_openai tests' server: the shipped ``fake_openai`` fixture, plus a clean environment.

The scripted OpenAI-compatible server is :class:`wfe_openai.testing.FakeOpenAI`, the
one apps use in their own tests (fixture ``fake_openai``, registered through the
plugin's ``pytest11`` entry point). ``openai_server`` is that same server, with the
environment made predictable for these tests: the OpenAI and wfe variables a
developer may have set are removed, and ``OPENAI_API_KEY`` is a key with a marker
the leak tests look for::

    openai_server.reply("hello")
    openai_server.tool_calls(("add", {"a": 1, "b": 2}))
    openai_server.error(429, "slow down", retry_after="0.01")
    ...
    assert openai_server.requests[0]["body"]["model"] == "gpt-4o"
"""

from __future__ import annotations

import pytest
from wfe_openai.testing import FakeOpenAI

#: The fake key the tests use; it must never show up in a task, a log or an error.
FAKE_KEY = "sk-test-wfe-0123456789-SECRET-abcdef"


@pytest.fixture
def openai_server(fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> FakeOpenAI:
    """The ``fake_openai`` server, with only ``OPENAI_BASE_URL`` and ``FAKE_KEY`` set."""
    for name in (
        "OPENAI_ORG_ID",
        "OPENAI_PROJECT_ID",
        "OPENAI_ADMIN_KEY",
        "OPENAI_CUSTOM_HEADERS",
        "OPENAI_LOG",
        "WFE_AGENT",
        "WFE_OPENAI_MODEL",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    return fake_openai


@pytest.fixture
def fake_key() -> str:
    """The fake API key the ``openai_server`` fixture exports."""
    return FAKE_KEY

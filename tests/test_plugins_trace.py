"""WFE_TRACE_PLUGINS logs the hook implementations called, each once per call: opening
a store logged every wfe_open_store implementation a second time, as if asked again,
although only those after the one that answered were (to warn of a rival)."""

from __future__ import annotations

import logging
from typing import Any

import pytest


def traced(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "wfcore.plugins" and r.getMessage().startswith("wfe_open_store:")
    ]


def test_opening_a_store_traces_each_call_once(
    wfe_engine_factory: Any,
    wfe_run: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("WFE_TRACE_PLUGINS", "1")
    engine = wfe_engine_factory(store="memory://")
    with caplog.at_level(logging.DEBUG, logger="wfcore.plugins"):
        wfe_run(engine.get_store())
    # The SQLite store is asked first (it passes), the memory one answers, and no
    # plugin comes after it to be asked about a rival.
    assert traced(caplog) == [
        "wfe_open_store: calling wfcore.stores.sqlite",
        "wfe_open_store: calling wfcore.stores.memory",
    ]


def test_a_plugin_asked_only_about_a_rival_is_traced_once(
    wfe_engine_factory: Any,
    wfe_run: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("WFE_TRACE_PLUGINS", "1")
    engine = wfe_engine_factory()  # sqlite:// in the test's folder
    with caplog.at_level(logging.DEBUG, logger="wfcore.plugins"):
        wfe_run(engine.get_store())
    # The SQLite store answers; then the memory one, after it, is asked whether it
    # serves the URL as well (it does not): once each.
    assert traced(caplog) == [
        "wfe_open_store: calling wfcore.stores.sqlite",
        "wfe_open_store: calling wfcore.stores.memory",
    ]

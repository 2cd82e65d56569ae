"""pytest fixtures for testing wfcore apps and plugins (registered through ``pytest11``).

Fixtures:

``wfe_store_url``
    A ``sqlite:///`` URL of a fresh database in the test's temporary folder.
``wfe_engine_factory``
    ``make(plugins=(), store=None, **kwargs)`` builds an engine on that store (or
    ``store``) with entry-point plugins off, ``plugins`` registered and short
    retry, poll and shutdown delays (0.05 s, 0.05 s, 1 s); every
    engine it made is closed after the test, so a plugin registered for one
    test is gone in the next (annotate the argument
    ``wfe_engine_factory: WfeEngineFactory`` to keep its type).
``wfe_engine``
    One engine from the factory, on the temporary SQLite store.
``wfe_run``
    ``wfe_run(coro, timeout=60)`` runs a coroutine to completion in a new event
    loop, failing the test if it takes longer than ``timeout`` seconds, and returns
    its result (annotate the argument ``wfe_run: WfeRun`` to keep its type).

And :class:`StoreContract`, the tests every store must pass, for a storage
plugin's own test suite to inherit.

A test drives the engine inside one coroutine::

    def test_my_adapter(wfe_engine_factory, wfe_run):
        engine = wfe_engine_factory(plugins=[my_plugin])
        engine.register_workflow("w", [Phase("p", assigned_to="agentic")])

        async def scenario():
            task = await engine.submit_task({"x": 1}, "w")
            await engine.run_until_idle()
            return await engine.get_task(task.id)

        assert wfe_run(scenario()).status is TaskStatus.COMPLETED
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest

from .engine import ECSWorkflowEngine
from .stores.base import Store

# Before the import: a failing contract test then shows the values it compared.
pytest.register_assert_rewrite("wfcore.store_contract")
from .store_contract import StoreContract  # noqa: E402

__all__ = ["StoreContract", "WfeEngineFactory", "WfeRun", "run_sync"]

T = TypeVar("T")


class WfeRun(Protocol):
    """The type of the ``wfe_run`` fixture, to annotate a test's argument with:
    ``wfe_run(coro)`` returns what the coroutine returns."""

    def __call__(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T: ...


class WfeEngineFactory(Protocol):
    """The type of the ``wfe_engine_factory`` fixture, to annotate a test's argument
    with: ``make(plugins=[my_plugin], **kwargs)`` returns an engine; ``kwargs`` are
    ``ECSWorkflowEngine``'s."""

    def __call__(
        self, plugins: Sequence[Any] = (), store: str | Store | None = None, **kwargs: Any
    ) -> ECSWorkflowEngine: ...


def run_sync(coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
    """Run a coroutine in a new event loop, with a deadline: past it the coroutine
    is cancelled and TimeoutError names it (a TimeoutError of its own, from
    ``wait_for_task(timeout=...)`` say, comes through as it is)."""

    async def bounded() -> T:
        running = asyncio.ensure_future(coro)
        done, _ = await asyncio.wait({running}, timeout=timeout)
        if done:
            return running.result()
        running.cancel()
        try:
            await running  # let it end: a worker hands its tasks back
        except asyncio.CancelledError:
            pass
        name = getattr(coro, "__qualname__", None) or repr(coro)
        # asyncio's, as asyncio.wait_for raised (on Python 3.10 not the builtin one).
        raise asyncio.TimeoutError(
            f"{name}() did not finish within {timeout:g} s (wfe_run's timeout)"
        )

    return asyncio.run(bounded())


@pytest.fixture
def wfe_store_url(tmp_path: Path) -> str:
    """A SQLite store URL in the test's temporary folder."""
    return f"sqlite://{tmp_path / 'wfe.db'}"


@pytest.fixture
def wfe_engine_factory(wfe_store_url: str) -> Iterator[WfeEngineFactory]:
    """Build engines on the temporary store; they are closed after the test."""
    made: list[ECSWorkflowEngine] = []

    def make(
        plugins: Sequence[Any] = (), store: str | Store | None = None, **kwargs: Any
    ) -> ECSWorkflowEngine:
        kwargs.setdefault("load_plugins", False)
        kwargs.setdefault("retry_delay", 0.05)
        kwargs.setdefault("poll_interval", 0.05)
        # A test past wfe_run's deadline ends within a second, not the default ten.
        kwargs.setdefault("shutdown_timeout", 1.0)
        engine = ECSWorkflowEngine(
            store=store if store is not None else wfe_store_url, plugins=plugins, **kwargs
        )
        made.append(engine)
        return engine

    yield make
    for engine in made:
        if engine._store is not None:
            try:
                asyncio.run(engine.aclose())
            except Exception:  # a store bound to a closed loop; its threads are daemons
                pass


@pytest.fixture
def wfe_engine(wfe_engine_factory: WfeEngineFactory) -> ECSWorkflowEngine:
    """An engine on a temporary SQLite store, entry-point plugins off."""
    return wfe_engine_factory()


@pytest.fixture
def wfe_run() -> WfeRun:
    """Run a coroutine to completion: ``wfe_run(coro, timeout=60)``."""
    return run_sync

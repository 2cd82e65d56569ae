"""What the tests of every section share: the decorators that make a scenario a test
method on a store opened for it (or two), ``_task``, the messages of more than one
section, and :class:`_ContractBase`, which each section's mixin extends."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import pytest

from ..engine import ECSWorkflowEngine
from ..model import Task
from ..plugins import call_impl
from ._openers import _fork_context, _ForkedOpener, _Ready, _results, _start_in_threads

if TYPE_CHECKING:
    from . import StoreContract

_Scenario = Callable[[Any, Any], Awaitable[None]]


def _with_store(scenario: _Scenario) -> Callable[[Any, str], None]:
    """A test method running ``scenario(self, store)`` on a freshly opened store."""

    # Not functools.wraps: pytest would read the scenario's signature and look for
    # a fixture named "store".
    def test(self: StoreContract, store_url: str) -> None:
        async def run() -> None:
            engine = self.make_engine(store_url)
            try:
                await scenario(self, await engine.get_store())
            finally:
                await engine.aclose()

        asyncio.run(asyncio.wait_for(run(), self.timeout))

    test.__name__ = scenario.__name__
    test.__qualname__ = scenario.__qualname__
    test.__doc__ = scenario.__doc__
    return test


def _opens(impl: Any, url: str) -> bool:
    """Whether a ``wfe_open_store`` implementation gives a store for ``url``; one that
    raises does too, as far as this check goes: opening it says what is wrong."""
    try:
        return call_impl(impl, url=url) is not None
    except Exception:
        return True


def _task(n: int, **fields: Any) -> Task:
    fields.setdefault("workflow_name", "w")
    fields.setdefault("classification", "p")
    return Task(data={"n": n}, id=f"task-{n}", **fields)


def _with_two_stores(
    scenario: Callable[[Any, Any, Any], Awaitable[None]],
) -> Callable[[Any, str], None]:
    """A test method running ``scenario(self, first, second)`` on two stores opened on
    one URL at once (two engines in one event loop), as two processes would open it;
    skipped for a store that is not shared."""

    def test(self: StoreContract, store_url: str) -> None:
        self._skip_unless_shared()

        async def run() -> None:
            first = self.make_engine(store_url)
            second = self.make_engine(store_url)
            try:
                # Both open before anything is written: what the second one sees
                # must come from the store, not from what it read when it opened.
                opened = (await first.get_store(), await second.get_store())
                await scenario(self, *opened)
            finally:
                try:
                    await first.aclose()
                finally:
                    await second.aclose()

        asyncio.run(asyncio.wait_for(run(), self.timeout))

    test.__name__ = scenario.__name__
    test.__qualname__ = scenario.__qualname__
    test.__doc__ = scenario.__doc__
    return test


_CLAIM_BUMPS = (
    "a claim bumps the version, on the stored task and the one it returns, so that a "
    "write by whoever read the task before the claim is refused"
)


_STALE_WRITE = (
    "a write carrying a version other than the stored one must store nothing and "
    "return False (compare the version and write in one atomic step: one transaction, "
    "or under one lock held across both), or a cancel or a result written in between "
    "is lost while both writers believe they won."
)


class _ContractBase:
    """What the tests of every section use: the ``store_url`` fixture, the engine a
    test opens the store through, ``damage_row``, and ways to open the store."""

    # Declared for the sections' type checks; StoreContract sets and documents them.
    plugins: Sequence[Any]
    durable: bool
    shared: bool
    threadsafe: bool
    timeout: float

    @pytest.fixture
    def store_url(self) -> str:
        pytest.fail(f"{type(self).__name__} must define a store_url fixture (a fresh store)")

    def make_engine(self, store_url: str) -> ECSWorkflowEngine:
        """The engine each test opens the store through."""
        name = type(self).__name__
        if not isinstance(self.plugins, (list, tuple)):
            pytest.fail(
                f"{name}.plugins is {type(self.plugins).__name__} {self.plugins!r}: give a "
                "list of the plugins that open the store, plugins = [my_plugin]"
            )
        engine = ECSWorkflowEngine(store=store_url, plugins=list(self.plugins), load_plugins=False)
        if not any(
            _opens(impl, store_url)
            for impl in engine.plugin_manager.hook.wfe_open_store.get_hookimpls()
        ):
            pytest.fail(
                f"no plugin opens {store_url!r}, the store_url of {name}: set plugins = "
                f"[the plugin whose wfe_open_store opens it] on the class (plugins is "
                f"{list(self.plugins)!r})"
            )
        return engine

    def damage_row(self, store_url: str, task_id: str) -> None:
        """Damage the stored task ``task_id`` in the store at ``store_url`` as a hand
        edit or a broken tool would, so that the store cannot read it back: cut its
        JSON document short, say, as ``UPDATE tasks SET doc = '{"data": ' WHERE id =
        ?`` does to an SQLite store. Called while a store is open on the URL, from a
        thread of its own.

        Optional: implement it on the test class to run the tests of rows that
        cannot be read (see :class:`~wfcore.stores.base.Store`); without it they are
        skipped.
        """
        raise NotImplementedError

    def _skip_unless_damageable(self) -> None:
        if type(self).damage_row is _ContractBase.damage_row:
            pytest.skip(
                f"{type(self).__name__} has no damage_row(store_url, task_id): implement "
                "it (damage a stored task as a hand edit would) to test how the store "
                "reads a row it cannot read"
            )

    def _skip_unless_shared(self) -> None:
        if not self.shared:
            pytest.skip("two openers of one URL do not share the store (shared = False)")

    def _on_store(self, store_url: str, scenario: Callable[[Any], Awaitable[Any]]) -> Any:
        """``scenario(store)``'s result, on a store opened for it in an event loop of
        its own (and closed after)."""

        async def run() -> Any:
            engine = self.make_engine(store_url)
            try:
                return await scenario(await engine.get_store())
            finally:
                await engine.aclose()

        return asyncio.run(asyncio.wait_for(run(), self.timeout))

    def _two_openers(
        self, store_url: str, work: Callable[[Any, int, _Ready], Awaitable[Any]]
    ) -> list[Any]:
        """``work(store, n, ready)`` for n = 0 and 1 at once, each on a store of its
        own opened on ``store_url`` in an event loop of its own, as two processes run
        it: n = 1 in a process of its own (forked: it inherits this class, its
        plugins and ``work``, and sends back only its result), n = 0 in a thread of
        this one. So a lock that holds within one process only (a lock or cache of
        the module, shared by every store object of the process) reaches no further,
        as in ``wfe submit`` beside ``wfe worker``. Where the system cannot fork,
        both run in threads of this process."""

        async def run(n: int, ready: _Ready) -> Any:
            engine = self.make_engine(store_url)
            try:
                return await work(await engine.get_store(), n, ready)
            finally:
                await engine.aclose()

        context = _fork_context()
        if context is None:
            return _results(_start_in_threads(2, self.timeout, run))
        barrier = context.Barrier(2)
        # Forked before this process opens a store: the child inherits no open
        # store of it (an SQLite connection, its writer thread) to trip over.
        child = _ForkedOpener(context, self.timeout, functools.partial(run, 1), barrier)
        try:
            [here] = _start_in_threads(1, self.timeout, run, barrier)
            return _results([here, child.result])
        finally:
            child.stop()

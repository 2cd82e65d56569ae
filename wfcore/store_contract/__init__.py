"""The store contract as pytest tests: what every storage backend must do, checked.

A third-party store (a ``wfe_open_store`` plugin) inherits these tests to find out
whether the engine can rely on it; the built-in SQLite and memory stores pass them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._concurrency import _Concurrency
from ._end_to_end import _EndToEnd
from ._itself import _Itself
from ._leases import _Leases
from ._outbox import _Outbox
from ._reading import _ReadingMany
from ._restart import _Restart
from ._tasks import _TasksInAndOut
from ._unreadable import _UnreadableRows
from ._workflows import _Workflows

__all__ = ["StoreContract"]


class StoreContract(
    # pytest runs the tests of the last base first: the sections, last to first.
    _EndToEnd,
    _Restart,
    _Concurrency,
    _UnreadableRows,
    _Outbox,
    _Workflows,
    _ReadingMany,
    _Leases,
    _TasksInAndOut,
    _Itself,
):
    """Tests every store must pass, to inherit in a test class of your own.

    Give the subclass a ``store_url`` fixture returning the URL of a fresh, empty
    store for each test, and ``plugins``, the plugins that provide its URL scheme
    (the test engines load no entry points)::

        import pytest
        from wfcore.testing import StoreContract

        import wfe_jsonfile


        class TestJsonFileStore(StoreContract):
            plugins = [wfe_jsonfile]

            @pytest.fixture
            def store_url(self, tmp_path):
                return f"jsonfile://{tmp_path}/tasks.json"

    Set ``durable = False`` for a store whose tasks do not outlive closing it
    (like ``memory://``), on this class and on the store class alike (a test
    checks that they agree). Set ``shared = False`` for a store that two openers
    of one URL do not share, and ``threadsafe = False`` for one meant for a single
    thread (``memory://`` is both): the tests that need those are skipped. Each
    test opens the store through an engine, as a worker does, so the plugin's
    ``wfe_open_store`` is tested too. The tests of two openers at once run one of
    them in a process of its own (forked, where the system can fork), so that a
    lock or a cache held by one process only is found out.

    Implement :meth:`damage_row` to run the tests of rows the store cannot read:
    they are skipped without it.
    """

    #: Plugins registered on each test's engine (the store's own, at least).
    plugins: Sequence[Any] = ()
    #: Tasks, workflows and outbox rows survive closing and reopening the store.
    durable: bool = True
    #: Stores opened on one URL at once (by several processes: ``wfe submit``
    #: beside a running ``wfe worker``) share their tasks. False for a store each
    #: opener has to itself (``memory://``): the tests of two openers are skipped.
    shared: bool = True
    #: One opened store takes calls from several event loops in several threads at
    #: once (an engine serving a web app's request threads). False for a store meant
    #: for one thread (``memory://``): that test is skipped.
    threadsafe: bool = True
    #: Seconds a single test may take.
    timeout: float = 60.0

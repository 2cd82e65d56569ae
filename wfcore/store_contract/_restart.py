"""The store contract's tests: across a restart."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from ..model import Phase, TaskStatus, WorkflowSpec
from ..stores.base import Store
from ._support import (
    _ContractBase,
    _task,
)


def _footprint(url: str) -> tuple[bool, list[str]] | None:
    """Whether the local path a store URL names exists, and what it holds if it is a
    folder; None for a URL that names no absolute path (``memory://``)."""
    path = unquote(urlsplit(url).path)
    if not path.startswith("/"):
        return None
    try:
        return True, sorted(os.listdir(path))
    except NotADirectoryError:
        return True, []
    except OSError:
        return os.path.lexists(path), []


def _shown_footprint(footprint: tuple[bool, list[str]] | None) -> str:
    if footprint is None or not footprint[0]:
        return "nothing was there"
    return f"it held {footprint[1]}" if footprint[1] else "it was there"


class _Restart(_ContractBase):
    def test_everything_survives_closing_and_reopening(self, store_url: str) -> None:
        """Tasks, workflows and the outbox are there after the store is reopened, and
        so are acknowledgements and purges: an acknowledged result is not published
        again, a purged task does not come back."""
        if not self.durable:
            pytest.skip("the store is not durable (durable = False)")
        # The workflows the plugins contribute, which each engine saves as it opens
        # the store: not this test's.
        contributed: set[str] = set()

        async def write() -> None:
            engine = self.make_engine(store_url)
            contributed.update(engine.workflows)
            store = await engine.get_store()
            try:
                await store.save_workflow(WorkflowSpec("flow", [Phase("a")]))
                await store.outbox_register("results")
                await store.insert_tasks([_task(1), _task(3)])
                await store.insert_task(_task(2))
                finished = {t.id: t for t in await store.claim("w", 2, 30)}
                for task in finished.values():
                    task.status, task.output = TaskStatus.COMPLETED, {"ok": True}
                    assert await store.update_task(task)
                # The last writes before closing: an acknowledgement, then a purge.
                versions = [finished["task-3"].version]
                await store.outbox_ack("results", ["task-3"], versions=versions)
                if type(store).delete_finished is not Store.delete_finished:
                    purged = await store.delete_finished(time.time() + 60, [TaskStatus.COMPLETED])
                    assert purged == ["task-3"], (
                        f"delete_finished deleted {purged}, not ['task-3']: task-3 is "
                        "COMPLETED and its result acknowledged (outbox_ack), task-1's not"
                    )
            finally:
                await engine.aclose()

        async def read() -> None:
            engine = self.make_engine(store_url)
            store = await engine.get_store()
            try:
                names = [s.name for s in await store.load_workflows()]
                ours = [name for name in names if name not in contributed]
                assert ours == ["flow"], (
                    f"after reopening, load_workflows() gave {ours}, not the one saved, 'flow'"
                )
                done = await store.get_task("task-1")
                assert done is not None and (done.status, done.output) == (
                    TaskStatus.COMPLETED,
                    {"ok": True},
                ), f"after reopening, get_task('task-1') gave {done!r:.200}, not it COMPLETED"
                published = [t.id for t in await store.outbox_pending("results")]
                assert published == ["task-1"], (
                    f"after reopening, outbox_pending gave {published}, not ['task-1']: "
                    "keep every finish recorded for a consumer, and every acknowledgement "
                    "(task-3's), across closing and reopening the store"
                )
                if type(store).delete_finished is not Store.delete_finished:
                    assert await store.get_task("task-3") is None, (
                        "a task delete_finished deleted is back after reopening the store: "
                        "a purge must be as durable as any other write"
                    )
                claimed = [t.id for t in await store.claim("w", 5, 30)]
                assert claimed == ["task-2"], (
                    f"after reopening, claim took {claimed}: task-2, pending, alone"
                )
            finally:
                await engine.aclose()

        asyncio.run(asyncio.wait_for(write(), self.timeout))
        asyncio.run(asyncio.wait_for(read(), self.timeout))

    def test_exists_is_false_before_the_first_open_and_true_after(self, store_url: str) -> None:
        """``Store.exists()`` (None, "cannot tell", is always allowed) is never True
        for a fresh URL, and asking creates nothing; once a store was opened and
        written there, it is never False (for a durable store, asked by a store
        object of its own): ``wfe tasks`` would refuse the store as a mistyped URL."""

        async def ask() -> bool | None:
            engine = self.make_engine(store_url)
            said = await engine._store_for(store_url).exists()
            assert said in (True, False, None), (
                f"exists() returned {said!r}: return True, False, or None (cannot tell)"
            )
            return said

        async def write() -> None:
            engine = self.make_engine(store_url)
            try:
                await (await engine.get_store()).insert_task(_task(1))
            finally:
                await engine.aclose()

        def run(step: Callable[[], Awaitable[Any]]) -> Any:
            return asyncio.run(asyncio.wait_for(step(), self.timeout))

        before = _footprint(store_url)
        for asked in ("first", "second"):
            if run(ask) is True:
                pytest.fail(
                    f"exists() said True for a fresh store ({asked} time asked), before "
                    "anything opened it: it must say whether open() would find the store "
                    "there, and create nothing itself",
                    pytrace=False,
                )
        after = _footprint(store_url)
        if after != before:
            pytest.fail(
                f"exists() made something at the store's path: before it was asked, "
                f"{_shown_footprint(before)}; after, {_shown_footprint(after)}. It is asked "
                "of a store that may never be opened (wfe tasks on a mistyped URL): create "
                "nothing, no folder, no file",
                pytrace=False,
            )
        run(write)
        if self.durable and run(ask) is False:
            pytest.fail(
                "exists() said False for a store opened and written before: wfe tasks, "
                "show and status would refuse it as a mistyped URL",
                pytrace=False,
            )

"""An app whose engine lets another process use the store while ``wfe submit``
submits, before the submission fails: WFE_MEANWHILE=stored runs one that stores a
task and exits; WFE_MEANWHILE=open starts one that opens the store, reads it and
keeps it open until this process ends; WFE_MEANWHILE=opened, one that only opens it
(as a worker starting does), reading nothing yet."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from wfcore import ECSWorkflowEngine, Phase

_OTHER = """
import asyncio, sys
from wfcore import ECSWorkflowEngine, Phase
from wfcore.stores.sqlite import SQLiteStore

async def main():
    engine = ECSWorkflowEngine(store=sys.argv[1], load_plugins=False)
    engine.register_workflow("w", [Phase("a")])
    if sys.argv[2] == "stored":
        await engine.submit_task({"x": 1}, "w", task_id="kept-1")
        await engine.aclose()
        return
    if sys.argv[2] == "opened":
        # Opened, nothing read or written yet (an engine stores its workflows).
        store = SQLiteStore.from_url(sys.argv[1])
        await store.open()
    else:
        await engine.get_task("nobody")  # the store is open from here on
    print("open", flush=True)
    await asyncio.to_thread(sys.stdin.read)  # until the submitting process ends

asyncio.run(main())
"""

_held: list[subprocess.Popen[str]] = []


class _Engine(ECSWorkflowEngine):
    async def submit_task(self, *args: Any, **kwargs: Any) -> Any:
        await self.list_tasks(limit=1)  # this command has made the store by now
        url, how = self.store_url, os.environ["WFE_MEANWHILE"]
        other = subprocess.Popen(
            [sys.executable, "-c", _OTHER, url, how],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        if how == "stored":
            assert other.wait(timeout=30) == 0
        else:
            assert other.stdout is not None and other.stdout.readline() == "open\n"
            _held.append(other)
        return await super().submit_task(*args, **kwargs)


engine = _Engine(load_plugins=False)
engine.register_workflow("w", [Phase("a")])

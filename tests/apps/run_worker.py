"""Run an app's engine as a worker process: ``run_worker.py MODULE:ATTR [--forever]``.

Without ``--forever`` the worker processes tasks until none is runnable or running
anywhere in the store (``run_until_idle``); with it, until SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import importlib
import signal
import sys


async def main(target: str, forever: bool) -> None:
    module_name, _, attr = target.partition(":")
    engine = getattr(importlib.import_module(module_name), attr or "engine")
    if not forever:
        await engine.run_until_idle()
    else:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, engine.stop)
        await engine.run()
    await engine.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], "--forever" in sys.argv[2:]))

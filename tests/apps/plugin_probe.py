"""Report what an engine built in this process picked up from installed plugins.

Prints one JSON object: the plugins' names, the workflows, the agentic adapter's
class, and the result of running a task through ``plugin-flow`` (when it exists);
or ``{"error": ..., "message": ...}`` when building the engine failed.
``--no-load`` builds the engine with ``load_plugins=False``.
"""

from __future__ import annotations

import asyncio
import json
import sys

from wfcore import ECSWorkflowEngine, WorkflowError
from wfcore.plugins import DEFAULT_PLUGINS


async def main() -> dict:
    try:
        engine = ECSWorkflowEngine("memory://", load_plugins="--no-load" not in sys.argv)
    except WorkflowError as exc:
        return {"error": type(exc).__name__, "message": str(exc)}
    report = {
        "plugins": sorted(
            name
            for name, plugin in engine.plugin_manager.list_name_plugin()
            if plugin is not None and name not in DEFAULT_PLUGINS
        ),
        "workflows": sorted(engine.workflows),
        "agentic_adapter": type(engine.adapter_for("agentic")).__name__,
        "has_prepare_handler": engine.handler_for("prepare") is not None,
    }
    if "plugin-flow" in engine.workflows:
        async with engine:
            task = await engine.submit_task({"text": "hello"}, "plugin-flow")
            await engine.run_until_idle()
            task = await engine.get_task(task.id)
            report["result"] = [task.status.value, task.outputs]
    return report


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main())))

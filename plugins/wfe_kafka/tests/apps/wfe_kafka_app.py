"""The worker app of the scale-out tests: one functional phase that does a little work.

``APP_WORK_SECONDS`` is how long each task takes; ``APP_RELEASE_FILE`` names a file
each task waits for before finishing (a test creates it when the task may end);
``APP_CONCURRENCY`` how many run
at once in one worker; ``APP_LOG_LEVEL`` (e.g. ``INFO``) shows the Kafka clients'
group membership in the worker's log; ``APP_TOPICS_RECHECK`` (seconds) is how often
the consumer looks at Kafka's topics while one is missing (30 s otherwise, first
after 5 s). Kafka is wired from the environment (``KAFKA_BROKERS``...).
"""

from __future__ import annotations

import asyncio
import logging
import os

from wfcore import ECSWorkflowEngine, Phase, Task


async def work(task: Task) -> None:
    await asyncio.sleep(float(os.environ.get("APP_WORK_SECONDS", "0")))
    release = os.environ.get("APP_RELEASE_FILE")
    while release and not os.path.exists(release):
        await asyncio.sleep(0.05)
    task.output = {"n": task.data["n"], "worker": os.getpid()}


def make_engine() -> ECSWorkflowEngine:
    if os.environ.get("APP_LOG_LEVEL"):
        logging.basicConfig(
            level=os.environ["APP_LOG_LEVEL"],
            format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s",
        )
    if os.environ.get("APP_TOPICS_RECHECK"):
        import wfe_kafka.consumer

        every = float(os.environ["APP_TOPICS_RECHECK"])
        wfe_kafka.consumer._TOPICS_FIRST_CHECK = wfe_kafka.consumer._TOPICS_RECHECK = every
    engine = ECSWorkflowEngine(
        max_concurrency=int(os.environ.get("APP_CONCURRENCY", "50")), poll_interval=0.05
    )
    engine.register_handler("work", work)
    engine.register_workflow("scale", [Phase("work", assigned_to="functional")])
    return engine

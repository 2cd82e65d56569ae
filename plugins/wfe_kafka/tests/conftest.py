"""Pytest fixtures giving the wfe_kafka tests a real Apache Kafka broker.

``kafka_bootstrap`` (session scope) is the ``host:port`` of a broker:

* ``$WFE_KAFKA_BOOTSTRAP`` when set (an externally run broker), else
* a single-node KRaft broker started by ``broker/kafka_broker.py`` on first use
  and stopped when the test process exits; other suites in the same run (the
  dashboard's Kafka tests) share it.

When no broker can be run here (no Java 17+, no Maven, the jars cannot be
fetched, or kafka-python is missing) the tests are skipped with the reason,
except when ``$CI`` is set: there the same reason fails them, so a CI machine
without the broker never passes by skipping.

``kafka_topic`` is a factory creating uniquely named topics on that broker;
the topics it made are deleted when the test ends.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import pytest

BROKER_MODULE_PATH = Path(__file__).resolve().parent.parent / "broker" / "kafka_broker.py"
TESTS_DIR = Path(__file__).resolve().parent

# The shared test helpers (wfe_kafka_util.py) are imported by name.
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))


def _load_broker_module() -> ModuleType:
    """Import ``broker/kafka_broker.py`` by path (it is not part of an installed package)."""
    name = "wfe_kafka_test_broker"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BROKER_MODULE_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


kafka_broker = _load_broker_module()


def _unavailable(reason: str) -> NoReturn:
    """Skip with *reason*, or fail with it when running in CI (``$CI`` set)."""
    if os.environ.get("CI"):
        pytest.fail(f"Kafka broker required in CI but unavailable: {reason}", pytrace=False)
    pytest.skip(f"Kafka broker unavailable: {reason}")


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """Bootstrap address of a real Kafka broker for the whole test session."""
    try:
        import kafka  # noqa: F401
    except ImportError as exc:
        _unavailable(f"kafka-python is not installed ({exc})")
    try:
        return kafka_broker.shared_bootstrap()
    except kafka_broker.BrokerUnavailable as exc:
        _unavailable(str(exc))


@pytest.fixture
def broker_tools() -> ModuleType:
    """``broker/kafka_broker.py``, for a test that starts a broker of its own or
    deletes and re-creates topics (a fixture: ``conftest`` names another plugin's
    test folder's module when the whole suite runs)."""
    return kafka_broker


@pytest.fixture
def kafka_topic(kafka_bootstrap: str) -> Iterator[Callable[..., str]]:
    """Factory ``make(partitions=1, prefix="t", configs=None) -> name`` creating a fresh,
    unique topic (``configs``: topic settings such as ``max.message.bytes``).

    Each topic is created with replication factor 1 and waited on until every
    partition has a leader. Topics made through the factory are deleted after
    the test.
    """
    created: list[str] = []

    def make(partitions: int = 1, prefix: str = "t", configs: dict[str, str] | None = None) -> str:
        name = f"wfe-{prefix}-{uuid.uuid4().hex[:12]}"
        kafka_broker.create_topic(kafka_bootstrap, name, partitions, configs=configs)
        created.append(name)
        return name

    yield make
    if created:
        try:
            kafka_broker.delete_topics(kafka_bootstrap, created)
        except Exception as exc:
            print(f"warning: could not delete test topics {created}: {exc}", file=sys.stderr)


# kafka-python 3.0.12 loads its protocol schemas at import time with importlib.resources
# APIs that Python deprecates; the warnings are the library's, not ours. Importing it
# once here, quietly, keeps them out of every test module's collection.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import kafka  # noqa: F401
    except ImportError:
        pass

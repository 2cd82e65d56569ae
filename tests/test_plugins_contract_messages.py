"""A storage plugin's author runs StoreContract from the plugin's own tests: when the
store gets the compare-and-set on ``version`` wrong, each failing test's message says
what the store did and what to do, not just ``assert True is False``."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

_PLUGIN_TESTS = '''
import pytest
from wfcore import hookimpl
from wfcore.stores.memory import MemoryStore
from wfcore.testing import StoreContract


class AlwaysWrites(MemoryStore):
    """Says every write succeeded, stale or not (it does not check the version)."""

    durable = False

    async def update_task(self, task, *, keep_lease=False):
        await super().update_task(task, keep_lease=keep_lease)
        return True


class Plugin:
    @hookimpl
    def wfe_open_store(self, url):
        return AlwaysWrites("memory://") if url.startswith("always://") else None


class TestAlwaysWrites(StoreContract):
    plugins = [Plugin()]
    durable = shared = threadsafe = False

    @pytest.fixture
    def store_url(self):
        return "always://"
'''

# Each test a store that ignores the version fails, and words its message must have.
_SAID = {
    "test_update_is_a_compare_and_set_on_version": (
        "update_task returned True for a task read at version 0, after another write "
        "had made it 1: a write carrying a version other than the stored one must store "
        "nothing and return False"
    ),
    "test_claim_leases_runnable_tasks_oldest_first": (
        "update_task returned True for a task read before a claim: the claim bumps the version"
    ),
    "test_an_expired_lease_is_taken_over": (
        "update_task returned True for the task as its expired lease's owner had it"
    ),
    "test_waiting_tasks_are_claimed_only_after_their_deadline": (
        "update_task returned True for a waiting task read before its claim"
    ),
}


def test_a_store_ignoring_the_version_is_told_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "test_always_writes.py").write_text(_PLUGIN_TESTS)
    nodes = [f"test_always_writes.py::TestAlwaysWrites::{test}" for test in _SAID]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *nodes],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    failed = re.findall(r"^FAILED \S+::(\w+)", done.stdout, re.M)
    assert sorted(failed) == sorted(_SAID), done.stdout + done.stderr
    out = " ".join(done.stdout.split())
    missing = [words for words in _SAID.values() if words not in out]
    assert not missing, done.stdout

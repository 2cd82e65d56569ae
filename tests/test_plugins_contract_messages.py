"""A storage plugin's author runs StoreContract from the plugin's own tests: when the
store gets the compare-and-set on ``version``, idempotent inserts, renewing or the
``workflows=`` filter wrong, each failing test's message says what the store did and
what to do, not just ``assert True is False``."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from core_util import run_pytest

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


class InsertsTwice(MemoryStore):
    """Says every insert created the task, even of an id stored already."""

    durable = False

    async def insert_task(self, task):
        stored, _ = await super().insert_task(task)
        return stored, True


class RenewsAnything(MemoryStore):
    """Renews every id asked about, held or not."""

    durable = False

    async def renew(self, owner, task_ids, lease_seconds):
        await super().renew(owner, task_ids, lease_seconds)
        return set(task_ids)


class IgnoresWorkflows(MemoryStore):
    """Claims and counts every workflow's tasks, whatever workflows= says."""

    durable = False

    async def claim(self, owner, limit, lease_seconds, *, workflows=None):
        return await super().claim(owner, limit, lease_seconds)

    async def has_active_tasks(self, *, workflows=None):
        return await super().has_active_tasks()


class Plugin:
    @hookimpl
    def wfe_open_store(self, url):
        scheme = url.partition(":")[0]
        stores = {
            "always": AlwaysWrites,
            "twice": InsertsTwice,
            "renews": RenewsAnything,
            "anyflow": IgnoresWorkflows,
        }
        return stores[scheme]("memory://") if scheme in stores else None


class Careless(StoreContract):
    plugins = [Plugin()]
    durable = shared = threadsafe = False
    scheme = ""

    @pytest.fixture
    def store_url(self):
        return f"{self.scheme}://"


class TestAlwaysWrites(Careless):
    scheme = "always"


class TestInsertsTwice(Careless):
    scheme = "twice"


class TestRenewsAnything(Careless):
    scheme = "renews"


class TestIgnoresWorkflows(Careless):
    scheme = "anyflow"
'''

# Each test a careless store fails, and words its message must have.
_SAID = {
    "TestInsertsTwice::test_inserting_an_existing_id_returns_the_stored_task": (
        "insert_task of an id stored already returned created=True: it returns (the "
        "stored task, False) and writes nothing"
    ),
    "TestRenewsAnything::test_a_finished_write_releases_the_lease": (
        "renew gave {'task-1'} for a task written back PENDING without keep_lease"
    ),
    "TestIgnoresWorkflows::test_workers_of_some_workflows_see_only_those": (
        "claim(workflows=['left']) took ['task-1', 'task-2'], not ['task-1']"
    ),
    "TestIgnoresWorkflows::test_a_delayed_task_is_still_active": (
        "has_active_tasks(workflows=['other']) is True though only a task of workflow 'w' is stored"
    ),
    "TestAlwaysWrites::test_update_is_a_compare_and_set_on_version": (
        "update_task returned True for a task read at version 0, after another write "
        "had made it 1: a write carrying a version other than the stored one must store "
        "nothing and return False"
    ),
    "TestAlwaysWrites::test_claim_leases_runnable_tasks_oldest_first": (
        "update_task returned True for a task read before a claim: the claim bumps the version"
    ),
    "TestAlwaysWrites::test_an_expired_lease_is_taken_over": (
        "update_task returned True for the task as its expired lease's owner had it"
    ),
    "TestAlwaysWrites::test_waiting_tasks_are_claimed_only_after_their_deadline": (
        "update_task returned True for a waiting task read before its claim"
    ),
}


def test_a_careless_store_is_told_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "test_always_writes.py").write_text(_PLUGIN_TESTS)
    nodes = [f"test_always_writes.py::{test}" for test in _SAID]
    done = run_pytest(tmp_path, *nodes)
    failed = re.findall(r"^FAILED test_always_writes.py::(\w+::\w+)", done.stdout, re.M)
    assert sorted(failed) == sorted(_SAID), done.stdout + done.stderr
    out = " ".join(done.stdout.split())
    missing = [words for words in _SAID.values() if words not in out]
    assert not missing, done.stdout


_SETUP_MISTAKES = """
import pytest
from wfcore.stores import memory
from wfcore.testing import StoreContract


class TestPluginsNotAList(StoreContract):
    plugins = memory
    durable = shared = threadsafe = False

    @pytest.fixture
    def store_url(self):
        return "memory://"


class TestPluginsForgotten(StoreContract):
    durable = shared = threadsafe = False

    @pytest.fixture
    def store_url(self):
        return "jsonfile:///tmp/tasks.json"
"""


def test_a_test_class_set_up_wrong_is_told_how(tmp_path: Path) -> None:
    """A module where the list of plugins belongs, or no plugin for the URL's scheme:
    one line saying what to set, not a TypeError or 'no storage backend' in each of
    the contract's tests."""
    (tmp_path / "test_setup.py").write_text(_SETUP_MISTAKES)
    test = "test_the_artifacts_folder_is_an_absolute_path"
    done = run_pytest(
        tmp_path,
        f"test_setup.py::TestPluginsNotAList::{test}",
        f"test_setup.py::TestPluginsForgotten::{test}",
    )
    assert done.stdout.count("FAILED") == 2, done.stdout + done.stderr
    out = " ".join(done.stdout.split())
    assert "TestPluginsNotAList.plugins is module <module 'wfcore.stores.memory'" in out
    assert "give a list of the plugins that open the store, plugins = [my_plugin]" in out
    assert (
        "no plugin opens 'jsonfile:///tmp/tasks.json', the store_url of TestPluginsForgotten: "
        "set plugins = [the plugin whose wfe_open_store opens it] on the class (plugins is [])"
    ) in out


_BROKEN_IN_ANOTHER_PROCESS = """
import os
import pytest
from wfcore import hookimpl
from wfcore.stores.sqlite import SQLiteStore
from wfcore.testing import StoreContract

TEST_PROCESS = os.getpid()


class RaisesElsewhere(SQLiteStore):
    async def claim(self, owner, limit, lease_seconds, *, workflows=None):
        if os.getpid() != TEST_PROCESS:
            raise RuntimeError("claim is broken in another process")
        return await super().claim(owner, limit, lease_seconds, workflows=workflows)


class ExitsElsewhere(SQLiteStore):
    async def claim(self, owner, limit, lease_seconds, *, workflows=None):
        if os.getpid() != TEST_PROCESS:
            os._exit(3)
        return await super().claim(owner, limit, lease_seconds, workflows=workflows)


class Plugin:
    @hookimpl
    def wfe_open_store(self, url):
        scheme, _, path = url.partition(":")
        stores = {"raises": RaisesElsewhere, "exits": ExitsElsewhere}
        return stores[scheme](path) if scheme in stores else None


class TestRaisesElsewhere(StoreContract):
    plugins = [Plugin()]
    scheme = "raises"

    @pytest.fixture
    def store_url(self, tmp_path):
        return f"{self.scheme}:{tmp_path / 'wfe.db'}"


class TestExitsElsewhere(TestRaisesElsewhere):
    scheme = "exits"
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the second opener is a thread here")
def test_a_store_failing_in_the_second_process_says_so_with_its_traceback(
    tmp_path: Path,
) -> None:
    """The tests of two openers run one of them in a forked process: what fails
    there is the test's failure, with the traceback of that process."""
    (tmp_path / "test_elsewhere.py").write_text(_BROKEN_IN_ANOTHER_PROCESS)
    test = "test_two_openers_claiming_at_once_never_share_a_task"
    done = run_pytest(
        tmp_path,
        f"test_elsewhere.py::TestRaisesElsewhere::{test}",
        f"test_elsewhere.py::TestExitsElsewhere::{test}",
    )
    out = done.stdout
    assert out.count("FAILED") == 2, out + done.stderr
    assert "RuntimeError: claim is broken in another process" in out
    assert "in the second store's process, a fork of this one" in out
    assert 'raise RuntimeError("claim is broken in another process")' in out
    assert "ended without a result (exit code 3)" in " ".join(out.split())

"""The built-in stores pass the store contract that third-party stores are held to."""

from __future__ import annotations

import contextlib
import re
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import pytest
from core_util import run_pytest

from wfcore import hookimpl
from wfcore.hookspecs import RegisterWorkflow
from wfcore.model import Phase, Task, TaskStatus
from wfcore.stores.base import UNREADABLE_ERROR, unreadable, unreadable_stand_in
from wfcore.stores.sqlite import SQLiteStore
from wfcore.testing import StoreContract


class TestSQLiteStore(StoreContract):
    @pytest.fixture
    def store_url(self, tmp_path: Path) -> str:
        return f"sqlite://{tmp_path / 'wfe.db'}"

    def damage_row(self, store_url: str, task_id: str) -> None:
        # A document cut short, as a hand edit in the sqlite3 shell might leave it.
        path = SQLiteStore.from_url(store_url).path
        with contextlib.closing(sqlite3.connect(path, timeout=30)) as conn, conn:
            changed = conn.execute(
                "UPDATE tasks SET doc = ? WHERE id = ?", ('{"data": {"n": ', task_id)
            ).rowcount
        assert changed == 1, f"no stored task {task_id!r} to damage"


class TestSQLiteStoreFullDurability(TestSQLiteStore):
    @pytest.fixture
    def store_url(self, tmp_path: Path) -> str:
        return f"sqlite://{tmp_path / 'wfe.db'}?durability=full"


class TestMemoryStore(StoreContract):
    # No damage_row: a memory store keeps Task objects, no row to damage.
    durable = False
    shared = False
    threadsafe = False

    @pytest.fixture
    def store_url(self) -> str:
        return "memory://"


_CARELESS_STORES = """
import pytest
from wfcore import hookimpl
from wfcore.stores.memory import MemoryStore
from wfcore.testing import StoreContract


class ForgetsUpdatedAt(MemoryStore):
    async def update_task(self, task, *, keep_lease=False):
        updated = task.updated_at
        written = await super().update_task(task, keep_lease=keep_lease)
        if written:
            self._rows[task.id].task.updated_at = updated
        return written


class SharesItsTasks(MemoryStore):
    async def get_task(self, task_id):
        row = self._rows.get(task_id)
        return None if row is None else row.task


class plugin:
    @staticmethod
    @hookimpl
    def wfe_open_store(url):
        stores = {"forgets://": ForgetsUpdatedAt, "shares://": SharesItsTasks}
        return stores[url]() if url in stores else None


class TestForgetsUpdatedAt(StoreContract):
    plugins = [plugin]
    durable = False
    shared = False
    threadsafe = False

    @pytest.fixture
    def store_url(self):
        return "forgets://"


class TestSharesItsTasks(TestForgetsUpdatedAt):
    @pytest.fixture
    def store_url(self):
        return "shares://"
"""


def test_the_contract_catches_stores_that_break_it(tmp_path: Path) -> None:
    # Third-party stores written carelessly: the contract must say what is wrong.
    (tmp_path / "test_careless.py").write_text(_CARELESS_STORES)
    done = run_pytest(tmp_path, "test_careless.py")
    assert done.returncode == 1, done.stdout + done.stderr
    failed = re.findall(r"^FAILED test_careless.py::(\w+::\w+)", done.stdout, re.M)
    assert sorted(failed) == [
        "TestForgetsUpdatedAt::test_update_is_a_compare_and_set_on_version",
        "TestSharesItsTasks::test_claim_leases_runnable_tasks_oldest_first",
        "TestSharesItsTasks::test_the_stored_task_is_a_copy",
        "TestSharesItsTasks::test_update_is_a_compare_and_set_on_version",
        # Both writes are to the one object it shares: both "succeed".
        "TestSharesItsTasks::test_writes_at_one_version_at_once_let_one_win",
    ], done.stdout
    # With the compared values, as pytest shows them in a test module.
    assert "AssertionError: updated_at is not stamped" in done.stdout
    assert "assert {'x': 'changed after read'} == {}" in done.stdout


_MISLABELLED_STORES = """
import pytest
from wfcore import hookimpl
from wfcore.stores.memory import MemoryStore
from wfcore.testing import StoreContract


class Forgetful(MemoryStore):
    pass  # inherits durable = False


class Boastful(MemoryStore):
    durable = True  # but its tasks go with the process


class plugin:
    @staticmethod
    @hookimpl
    def wfe_open_store(url):
        stores = {"forgetful://": Forgetful, "boastful://": Boastful}
        return stores[url]() if url in stores else None


class TestForgetful(StoreContract):
    plugins = [plugin]  # durable = True, the contract's default

    @pytest.fixture
    def store_url(self):
        return "forgetful://"


class TestBoastful(StoreContract):
    plugins = [plugin]
    durable = False

    @pytest.fixture
    def store_url(self):
        return "boastful://"


class TestHonest(TestBoastful):
    @pytest.fixture
    def store_url(self):
        return "forgetful://"
"""


def test_the_contract_catches_a_store_whose_durable_disagrees(tmp_path: Path) -> None:
    (tmp_path / "test_mislabelled.py").write_text(_MISLABELLED_STORES)
    done = run_pytest(tmp_path, "-k", "durable")
    assert done.returncode == 1, done.stdout + done.stderr
    failed = re.findall(r"^FAILED test_mislabelled.py::(\w+)::", done.stdout, re.M)
    assert sorted(failed) == ["TestBoastful", "TestForgetful"], done.stdout
    assert "1 passed" in done.stdout  # TestHonest
    assert (
        "Forgetful.durable is False, but TestForgetful.durable is True: set both to True "
        "if the store's tasks outlive closing and reopening it, or both to False if they "
        "do not (a subclass of MemoryStore inherits durable = False)"
    ) in done.stdout
    assert "Boastful.durable is True, but TestBoastful.durable is False" in done.stdout


def test_the_stand_in_for_an_unreadable_row_reads_as_one() -> None:
    stand_in = unreadable_stand_in("task-1", "ValueError: bad JSON", '{"id": "task-1", ', version=4)
    assert unreadable(stand_in)
    assert (stand_in.id, stand_in.status, stand_in.version) == ("task-1", TaskStatus.FAILED, 4)
    assert stand_in.error is not None and stand_in.error.startswith(UNREADABLE_ERROR)
    assert "ValueError: bad JSON" in stand_in.error
    assert stand_in.context == {"unreadable_doc": '{"id": "task-1", '}
    assert not unreadable(Task(status=TaskStatus.FAILED, error="ValueError: bad input"))
    # The row's times, where the store can read them: not now at every read.
    long_ago = datetime(2020, 1, 2, tzinfo=timezone.utc)
    dated = unreadable_stand_in("t", "bad", "{", created_at=long_ago, updated_at=long_ago)
    assert (dated.created_at, dated.updated_at) == (long_ago, long_ago)


class _BringsAWorkflow:
    """A store plugin that contributes a workflow besides (as a plugin module often
    does): the engine each contract test opens the store through saves it there."""

    @staticmethod
    @hookimpl
    def wfe_register_workflows(register: RegisterWorkflow) -> None:
        register("plugin-flow", [Phase("p")])


class _ContractOfAStoreBringingAWorkflow(StoreContract):
    plugins = [_BringsAWorkflow]


def test_the_workflows_a_store_plugin_contributes_are_not_the_contract_tests(
    tmp_path: Path,
) -> None:
    # The two contract tests that list every stored workflow compare only their own.
    contract = _ContractOfAStoreBringingAWorkflow()
    contract.test_workflows_are_stored_and_the_first_of_a_name_wins(f"sqlite://{tmp_path}/a.db")
    contract.test_everything_survives_closing_and_reopening(f"sqlite://{tmp_path}/b.db")

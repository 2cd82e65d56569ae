"""The built-in stores pass the store contract that third-party stores are held to."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from wfcore.testing import StoreContract


class TestSQLiteStore(StoreContract):
    @pytest.fixture
    def store_url(self, tmp_path: Path) -> str:
        return f"sqlite://{tmp_path / 'wfe.db'}"


class TestSQLiteStoreFullDurability(StoreContract):
    @pytest.fixture
    def store_url(self, tmp_path: Path) -> str:
        return f"sqlite://{tmp_path / 'wfe.db'}?durability=full"


class TestMemoryStore(StoreContract):
    durable = False

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
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_careless.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    failed = re.findall(r"^FAILED test_careless.py::(\w+::\w+)", done.stdout, re.M)
    assert sorted(failed) == [
        "TestForgetsUpdatedAt::test_update_is_a_compare_and_set_on_version",
        "TestSharesItsTasks::test_claim_leases_runnable_tasks_oldest_first",
        "TestSharesItsTasks::test_the_stored_task_is_a_copy",
        "TestSharesItsTasks::test_update_is_a_compare_and_set_on_version",
    ], done.stdout
    # With the compared values, as pytest shows them in a test module.
    assert "AssertionError: updated_at is not stamped" in done.stdout
    assert "assert {'x': 'changed after read'} == {}" in done.stdout

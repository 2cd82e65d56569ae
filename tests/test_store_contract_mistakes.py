"""The store contract catches the mistakes a store author typically makes, and says what
is wrong: each store below makes one of them, and must fail the tests named for it."""

from __future__ import annotations

import re
from pathlib import Path

from core_util import run_pytest

_CARELESS_STORES = '''
import asyncio
import json
import sqlite3
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from wfcore import hookimpl
from wfcore.model import TaskStatus
from wfcore.stores._sqlite_rows import ROW_COLUMNS
from wfcore.stores.base import record_takeover
from wfcore.stores.memory import MemoryStore
from wfcore.stores.sqlite import _CLAIM, SQLiteStore, _claim_params
from wfcore.testing import StoreContract


class TakeoverNotStored(MemoryStore):
    """Adds the taken_over event to the claimed copy only."""

    async def claim(self, owner, limit, lease_seconds, *, workflows=None):
        claimed = await super().claim(owner, limit, lease_seconds, workflows=workflows)
        for task in claimed:
            stored = self._rows[task.id].task
            stored.history = [e for e in stored.history if e["event"] != "taken_over"]
        return claimed


class DropsFields(MemoryStore):
    """Keeps neither attempts, error nor artifacts."""

    def _drop(self, task_id):
        stored = self._rows[task_id].task
        stored.attempts, stored.error, stored.artifacts = 0, None, []

    async def insert_tasks(self, tasks):
        results = await super().insert_tasks(tasks)
        for task, _ in results:
            self._drop(task.id)
        return results

    async def update_task(self, task, *, keep_lease=False):
        written = await super().update_task(task, keep_lease=keep_lease)
        if written:
            self._drop(task.id)
        return written


class RunAfterAtInsertOnly(MemoryStore):
    """A task written back pending is due at once, whatever its run_after."""

    async def update_task(self, task, *, keep_lease=False):
        written = await super().update_task(task, keep_lease=keep_lease)
        if written and not keep_lease and task.status is TaskStatus.PENDING:
            self._schedule(self._rows[task.id], time.time())
        return written


class ActiveIgnoresDelayed(MemoryStore):
    async def has_active_tasks(self, *, workflows=None):
        now = datetime.now(timezone.utc)
        return any(
            row.task.status in (TaskStatus.PENDING, TaskStatus.IN_PROGRESS)
            and not (row.task.run_after is not None and row.task.run_after > now)
            and (workflows is None or row.task.workflow_name in workflows)
            for row in self._rows.values()
        )


class PurgeIgnoresOutbox(MemoryStore):
    def _finished_rows(self, before, statuses, workflow_name):
        consumers, self._consumers = self._consumers, {}
        try:
            return super()._finished_rows(before, statuses, workflow_name)
        finally:
            self._consumers = consumers


class OutboxOnEveryWrite(MemoryStore):
    async def update_task(self, task, *, keep_lease=False):
        written = await super().update_task(task, keep_lease=keep_lease)
        if written and task.status.is_finished:
            for pending in self._consumers.values():
                pending[task.id] = task.version
        return written


class OutboxKeepsRetried(MemoryStore):
    """outbox_pending gives the recorded tasks whatever their status now."""

    async def outbox_pending(self, consumer, limit=100):
        pending = list(self._consumers.get(consumer, {}))[:limit]
        return [self._rows[task_id].task.copy() for task_id in pending]


class OrdersById(MemoryStore):
    """Claims and lists tasks in the order of their ids."""

    async def claim(self, owner, limit, lease_seconds, *, workflows=None):
        now = time.time()
        ready = sorted(
            (
                row
                for row in self._rows.values()
                if row.ready_at is not None
                and row.ready_at <= now
                and (workflows is None or row.task.workflow_name in workflows)
            ),
            key=lambda row: row.task.id,
        )
        claimed = []
        for row in ready[:limit]:
            if row.task.status is TaskStatus.PENDING:
                row.task.status = TaskStatus.IN_PROGRESS
            if row.lease_owner is not None:
                record_takeover(row.task, row.lease_owner, owner)
            row.task.version += 1
            row.lease_owner, row.lease_expires = owner, now + lease_seconds
            self._schedule(row, row.lease_expires)
            claimed.append(row.task.copy())
        return claimed

    async def list_tasks(self, status=None, workflow_name=None, limit=100, offset=0,
                         oldest_first=False):
        found = await super().list_tasks(status, workflow_name, limit=10**9)
        found.sort(key=lambda task: task.id, reverse=not oldest_first)
        return found[offset : offset + limit]


class ChecksThenWrites(MemoryStore):
    """Compares the version, awaits, then writes over whatever is stored."""

    async def update_task(self, task, *, keep_lease=False):
        stored = await self.get_task(task.id)
        if stored is None or stored.version != task.version:
            return False
        await asyncio.sleep(0)
        task.version = self._rows[task.id].task.version
        return await super().update_task(task, keep_lease=keep_lease)


class RelativeArtifacts(MemoryStore):
    async def open(self):
        await super().open()
        self.artifacts_dir = Path("artifacts")


class UnlockedClaims(SQLiteStore):
    """Reads the runnable tasks, then leases them in a second transaction."""

    async def claim(self, owner, limit, lease_seconds, *, workflows=None):
        ready = await self._read(
            lambda c: c.execute(
                "SELECT id FROM tasks WHERE ready_at <= ? ORDER BY ready_at, rowid LIMIT ?",
                (time.time(), int(limit)),
            ).fetchall()
        )
        ids = json.dumps([row[0] for row in ready])
        rows = await self._write(
            lambda c: c.execute(
                f"UPDATE tasks SET {_CLAIM} WHERE id IN (SELECT value FROM json_each(:ids)) "
                f"RETURNING {ROW_COLUMNS}",
                _claim_params(owner, time.time(), lease_seconds, ids=ids),
            ).fetchall()
        )
        return await self._claimed(rows)


class CachesReads(SQLiteStore):
    """Serves get_task from what it read at open() and wrote since."""

    async def open(self):
        await super().open()
        self._cache = {t.id: t for t in await super().list_tasks(limit=10**9)}

    async def get_task(self, task_id):
        task = self._cache.get(task_id)
        return None if task is None else task.copy()

    async def insert_tasks(self, tasks):
        results = await super().insert_tasks(tasks)
        for task, _ in results:
            self._cache.setdefault(task.id, task.copy())
        return results

    async def update_task(self, task, *, keep_lease=False):
        written = await super().update_task(task, keep_lease=keep_lease)
        if written:
            self._cache[task.id] = task.copy()
        return written

    async def claim(self, owner, limit, lease_seconds, *, workflows=None):
        claimed = await super().claim(owner, limit, lease_seconds, workflows=workflows)
        for task in claimed:
            self._cache[task.id] = task.copy()
        return claimed


class PurgesEveryWorkflow(MemoryStore):
    """Leaves out delete_finished's workflow_name (and count_finished's)."""

    async def delete_finished(self, before, statuses, *, workflow_name=None, limit=1000):
        return await super().delete_finished(before, statuses, limit=limit)

    async def count_finished(self, before, statuses, *, workflow_name=None):
        return await super().count_finished(before, statuses)


class PurgesWithoutLimit(MemoryStore):
    """Deletes every finished task at once, whatever the limit."""

    async def delete_finished(self, before, statuses, *, workflow_name=None, limit=1000):
        return await super().delete_finished(
            before, statuses, workflow_name=workflow_name, limit=10**9
        )


class SharesListed(MemoryStore):
    """list_tasks and outbox_pending hand out the stored objects themselves."""

    async def list_tasks(self, *args, **kwargs):
        return [self._rows[t.id].task for t in await super().list_tasks(*args, **kwargs)]

    async def outbox_pending(self, consumer, limit=100):
        return [self._rows[t.id].task for t in await super().outbox_pending(consumer, limit)]


class SharesPublished(MemoryStore):
    """outbox_pending hands out the stored objects themselves."""

    async def outbox_pending(self, consumer, limit=100):
        return [self._rows[t.id].task for t in await super().outbox_pending(consumer, limit)]


class ClaimsPastLimit(MemoryStore):
    """Hands a claim every ready task, whatever its limit."""

    async def claim(self, owner, limit, lease_seconds, *, workflows=None):
        return await super().claim(owner, 50, lease_seconds, workflows=workflows)


class ClaimKeepsVersion(MemoryStore):
    """Leases claimed tasks without bumping their version."""

    async def claim(self, owner, limit, lease_seconds, *, workflows=None):
        claimed = await super().claim(owner, limit, lease_seconds, workflows=workflows)
        for task in claimed:
            task.version -= 1
            self._rows[task.id].task.version -= 1
        return claimed


class ListsWithoutOffset(MemoryStore):
    """Leaves out list_tasks' offset."""

    async def list_tasks(self, status=None, workflow_name=None, limit=100, offset=0, **kwargs):
        return await super().list_tasks(status, workflow_name, limit, 0, **kwargs)


class PublishesPastLimit(MemoryStore):
    """Gives every finished task to outbox_pending, whatever its limit."""

    async def outbox_pending(self, consumer, limit=100):
        return await super().outbox_pending(consumer, 10**6)


class AcksAnyVersion(MemoryStore):
    """Acknowledges a task's finish whatever version the consumer saw."""

    async def outbox_ack(self, consumer, task_ids, *, versions=None):
        await super().outbox_ack(consumer, task_ids)


class RenewsWithoutExtending(MemoryStore):
    """Says the owner holds its leases, and leaves them to expire."""

    async def renew(self, owner, task_ids, lease_seconds):
        return {i for i in task_ids if i in self._rows and self._rows[i].lease_owner == owner}


class AcksInMemory(SQLiteStore):
    """Keeps acknowledgements in the store object, not in the database."""

    async def outbox_ack(self, consumer, task_ids, *, versions=None):
        self.__dict__.setdefault("acked", set()).update(task_ids)

    async def outbox_pending(self, consumer, limit=100):
        acked = self.__dict__.get("acked", set())
        return [t for t in await super().outbox_pending(consumer, limit) if t.id not in acked]


class PurgesInMemory(SQLiteStore):
    """Deletes finished tasks only from what this store object shows."""

    async def delete_finished(self, before, statuses, *, workflow_name=None, limit=1000):
        gone = self.__dict__.setdefault("gone", set())
        ids = [
            t.id
            for t in await self.list_tasks(statuses, workflow_name, limit=10**6, oldest_first=True)
            if t.id not in gone and t.updated_at.timestamp() < before
        ]
        pending = {t.id for c in ["results"] for t in await self.outbox_pending(c, 10**6)}
        ids = [i for i in ids if i not in pending][:limit]
        gone.update(ids)
        return ids

    async def get_task(self, task_id):
        return None if task_id in self.__dict__.get("gone", ()) else await super().get_task(task_id)


class ExistsOpens(SQLiteStore):
    """Answers exists() by connecting, which makes the database file."""

    async def exists(self):
        existed = self.path.exists()
        sqlite3.connect(self.path).close()
        return existed


class ListsNoPhase(MemoryStore):
    """Written before stores listed tasks by phase, which stays optional."""

    async def list_tasks(self, status=None, workflow_name=None, limit=100, offset=0,
                         oldest_first=False, priority_first=False):
        return await super().list_tasks(status, workflow_name, limit, offset, oldest_first,
                                        priority_first)

    async def count_tasks(self, workflow_name=None):
        return await super().count_tasks(workflow_name)


MEMORY = {cls.__name__.lower(): cls for cls in (
    TakeoverNotStored, DropsFields, RunAfterAtInsertOnly, ActiveIgnoresDelayed,
    PurgeIgnoresOutbox, OutboxOnEveryWrite, OutboxKeepsRetried, OrdersById,
    ChecksThenWrites, RelativeArtifacts, PurgesEveryWorkflow, PurgesWithoutLimit,
    SharesListed, SharesPublished, ClaimsPastLimit, ClaimKeepsVersion, ListsWithoutOffset,
    PublishesPastLimit, AcksAnyVersion, RenewsWithoutExtending, ListsNoPhase,
)}
SQLITE = {cls.__name__.lower(): cls for cls in (
    UnlockedClaims, CachesReads, ExistsOpens, AcksInMemory, PurgesInMemory,
)}


class plugin:
    @staticmethod
    @hookimpl
    def wfe_open_store(url):
        scheme, _, path = url.partition("://")
        if scheme in MEMORY:
            return MEMORY[scheme]()
        if scheme in SQLITE:
            return SQLITE[scheme](path)
        return None


def contract_for(scheme, in_memory):
    class Test(StoreContract):
        plugins = [plugin]
        durable = shared = threadsafe = not in_memory

        @pytest.fixture
        def store_url(self, tmp_path):
            return f"{scheme}://" + ("" if in_memory else f"{tmp_path}/wfe.db")

    return Test


for _name, _cls in {**MEMORY, **SQLITE}.items():
    globals()["Test" + _cls.__name__] = contract_for(_name, _name in MEMORY)
'''

# Each careless store, the contract tests it must fail, and words of the message.
_CAUGHT = {
    "TakeoverNotStored": (
        ["test_an_expired_lease_is_taken_over", "test_leases_of_dead_owners_are_released_at_once"],
        "claim added the taken_over event to the task it returned but did not store it",
    ),
    "DropsFields": (
        [
            "test_every_field_of_an_inserted_task_reads_back",
            "test_every_field_of_an_updated_task_reads_back",
        ],
        "error: read back None, written 'ValueError: the first try failed'",
    ),
    "RunAfterAtInsertOnly": (
        ["test_a_run_after_written_by_update_delays_the_task"],
        "claim must go by the run_after of the task's last write",
    ),
    "ActiveIgnoresDelayed": (
        [
            "test_a_delayed_task_is_still_active",
            "test_a_run_after_written_by_update_delays_the_task",
        ],
        "has_active_tasks() is False while a PENDING task waits for its run_after",
    ),
    "PurgeIgnoresOutbox": (
        ["test_purging_keeps_results_not_yet_published"],
        "count_finished gave 3, not 2 (task-0, task-1): a purge keeps each task whose result",
    ),
    "OutboxOnEveryWrite": (
        ["test_a_finish_is_recorded_once"],
        "add outbox rows only when a task newly reaches a finished status",
    ),
    "OutboxKeepsRetried": (
        ["test_the_outbox_gives_tasks_finished_now_in_finish_order"],
        "leave out the tasks that are not finished now",
    ),
    "OrdersById": (
        [
            "test_claim_takes_the_task_ready_longest_whatever_its_id",
            "test_lists_go_by_insertion_whatever_the_ids",
        ],
        "not by how long each has been runnable",
    ),
    "ChecksThenWrites": (
        ["test_writes_at_one_version_at_once_let_one_win"],
        "never check, then await, then write",
    ),
    "RelativeArtifacts": (
        ["test_the_artifacts_folder_is_an_absolute_path"],
        # The engine refuses it as it opens the store, before the test looks.
        "RelativeArtifacts.artifacts_dir is 'artifacts', a relative path, once open() "
        "returned: set it to the absolute path",
    ),
    "PurgesEveryWorkflow": (
        ["test_purging_keeps_results_not_yet_published"],
        "count_finished(workflow_name='other') gave 3, not 1",
    ),
    "PurgesWithoutLimit": (
        ["test_purging_keeps_results_not_yet_published"],
        "delete_finished(limit=1) deleted ['task-5', 'task-6']: delete at most `limit`",
    ),
    "SharesListed": (
        ["test_the_stored_task_is_a_copy"],
        "changing a task list_tasks returned changed the stored task",
    ),
    "SharesPublished": (
        ["test_the_stored_task_is_a_copy"],
        "changing a task outbox_pending returned changed the stored task",
    ),
    "ClaimsPastLimit": (
        ["test_claim_leases_runnable_tasks_oldest_first"],
        "claim('worker-a', limit=2, ...) returned 3 tasks ['task-0', 'task-1', 'task-2']",
    ),
    "ClaimKeepsVersion": (
        [
            "test_claim_leases_runnable_tasks_oldest_first",
            "test_every_field_of_an_updated_task_reads_back",
        ],
        "claim returned task-1 at version 0, the version it was inserted at (0): a claim "
        "bumps the version",
    ),
    "ListsWithoutOffset": (
        ["test_lists_and_counts"],
        "list_tasks(oldest_first=True, limit=2, offset=1) gave ['task-0', 'task-1']",
    ),
    "PublishesPastLimit": (
        ["test_the_outbox_gives_tasks_finished_now_in_finish_order"],
        "outbox_pending('results', limit=2) gave ['b', 't9', 't10']: give at most `limit`",
    ),
    "AcksAnyVersion": (
        ["test_the_outbox_records_each_finish_until_acknowledged"],
        "that acknowledgement covers only the finish it names (compare `versions`)",
    ),
    "RenewsWithoutExtending": (
        ["test_an_owner_renews_its_expired_lease_nobody_took"],
        "claim took ['task-1'] right after renew('slow-worker', ['task-1'], 30) returned it",
    ),
    "AcksInMemory": (
        ["test_everything_survives_closing_and_reopening"],
        "delete_finished deleted [], not ['task-3']: task-3 is COMPLETED and its result "
        "acknowledged",
    ),
    "PurgesInMemory": (
        ["test_everything_survives_closing_and_reopening"],
        "a task delete_finished deleted is back after reopening the store",
    ),
    "UnlockedClaims": (
        ["test_two_openers_claiming_at_once_never_share_a_task"],
        "were claimed by both stores at once",
    ),
    "CachesReads": (
        ["test_a_second_opener_sees_the_first_ones_writes"],
        "a task inserted through one store was not found by get_task on a second store",
    ),
    "ExistsOpens": (
        ["test_exists_is_false_before_the_first_open_and_true_after"],
        "exists() said True for a fresh store (second time asked)",
    ),
}


def test_the_contract_catches_each_typical_mistake(tmp_path: Path) -> None:
    (tmp_path / "test_careless.py").write_text(_CARELESS_STORES)
    nodes = [
        f"test_careless.py::Test{store}::{test}"
        for store, (tests, _) in _CAUGHT.items()
        for test in tests
    ]
    done = run_pytest(tmp_path, *nodes)
    failed = re.findall(r"^FAILED (test_careless.py::\w+::\w+)", done.stdout, re.M)
    assert sorted(failed) == sorted(nodes), done.stdout + done.stderr
    missing = [words for _, words in _CAUGHT.values() if words not in done.stdout]
    assert not missing, done.stdout


def test_a_store_that_lists_by_no_phase_passes_the_rest_of_the_contract(tmp_path: Path) -> None:
    """Listing by phase is optional: the contract skips what needs it, saying why, and
    holds the store to everything else (a bare TypeError failed three tests)."""
    (tmp_path / "test_careless.py").write_text(_CARELESS_STORES)
    done = run_pytest(tmp_path, "-rs", "test_careless.py::TestListsNoPhase")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "takes no 'phase': the engine refuses such listings" in done.stdout
    assert "TypeError" not in done.stdout

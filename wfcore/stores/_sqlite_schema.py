"""The SQLite store's schema: the tables of a new database, and the upgrades of an
older one, decided when the store opens."""

from __future__ import annotations

import sqlite3
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import StoreError

__all__ = ["APPLICATION_ID", "SCHEMA_VERSION", "Opening", "plan_opening"]

#: The schema version this code writes; a newer database is refused, an older
#: one upgraded in place (1 -> 2: history moved to a column of its own; 2 -> 3:
#: outbox rows record the version of the finish they stand for; 3 -> 4: the
#: indexes in ``_SCHEMA_4_INDEXES``; 4 -> 5: the ``history_parts`` table; 5 -> 6:
#: the ``priority`` column, claims ordered by it).
SCHEMA_VERSION = 6
#: ``PRAGMA application_id`` of a wfcore database ("wfe1").
APPLICATION_ID = 0x77666531

_SCHEMA = """
CREATE TABLE wfe_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE tasks (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    workflow_name TEXT,
    classification TEXT,
    ready_at REAL,
    lease_owner TEXT,
    lease_expires REAL,
    version INTEGER NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    doc TEXT NOT NULL,
    history TEXT,
    priority INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX tasks_status ON tasks (status);
CREATE INDEX tasks_owner ON tasks (lease_owner) WHERE lease_owner IS NOT NULL;
CREATE TABLE workflows (name TEXT PRIMARY KEY, doc TEXT NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE outbox_consumers (consumer TEXT PRIMARY KEY);
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY,
    consumer TEXT NOT NULL,
    task_id TEXT NOT NULL,
    version INTEGER,
    UNIQUE (consumer, task_id)
);
"""

# Added by schema 4, so that the reads that page through a big store read only the
# rows they return. IF NOT EXISTS: the upgrade runs them on stores where someone
# may have made one by hand.
_SCHEMA_4_INDEXES = (
    # An outbox poll (oldest first, LIMIT n) walks its consumer's rows in order and
    # stops after n, instead of joining and sorting the whole backlog every time.
    "CREATE INDEX IF NOT EXISTS outbox_consumer_seq ON outbox (consumer, seq)",
    # A workflow's newest tasks (the rowid is the index's last column): an index by
    # workflow and status has them in rowid order within each status only.
    "CREATE INDEX IF NOT EXISTS tasks_workflow_rowid ON tasks (workflow_name)",
    # Unfinished tasks by phase, counted from the index alone (count_by_phase); and
    # tasks by workflow and status, as tasks_workflow had them.
    "CREATE INDEX IF NOT EXISTS tasks_workflow_phase "
    "ON tasks (workflow_name, status, classification)",
    # A prefix of tasks_workflow_phase: one index fewer for every write to keep.
    "DROP INDEX IF EXISTS tasks_workflow",
)

# Added by schema 5: the earlier entries of long histories (see _sqlite_rows), each
# part a JSON array of `count` entries, numbered from 1 in order.
_SCHEMA_5_HISTORY_PARTS = (
    "CREATE TABLE IF NOT EXISTS history_parts (task_id TEXT NOT NULL, part INTEGER NOT NULL, "
    "count INTEGER NOT NULL, entries TEXT NOT NULL, PRIMARY KEY (task_id, part)) WITHOUT ROWID"
)

# Schema 6: claims take the highest priority first, so the ready tasks are indexed
# by priority, then by when they became ready; the index by ready time alone, and
# the one per workflow, were for claims in ready order only.
_SCHEMA_6_INDEXES = (
    "CREATE INDEX IF NOT EXISTS tasks_ready_priority "
    "ON tasks (priority, ready_at) WHERE ready_at IS NOT NULL",
    "DROP INDEX IF EXISTS tasks_ready",
    "DROP INDEX IF EXISTS tasks_ready_workflow",
)

_ADD_META = "INSERT INTO wfe_meta (key, value) VALUES (?, ?)"


@dataclass
class Opening:
    """What opening a database finds in it, and must write to it (see
    :func:`plan_opening`)."""

    folder: str  # the artifacts folder's name, as recorded (or about to be)
    store_id: str
    #: The statements to run, with their parameters, in one transaction under the
    #: write lock; none: the file is opened as it is, without taking the lock.
    steps: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    upgraded_from: int | None = None  # the schema the steps upgrade from
    read_as_is: int | None = None  # the schema of a store read as it is (``upgrade``)


def plan_opening(conn: sqlite3.Connection, path: Path, new_folder: str, upgrade: bool) -> Opening:
    """What opening the database at ``path`` in ``conn`` (in a transaction) must
    write: make it (its artifacts folder named ``new_folder``), record what an older
    one lacks, upgrade it (the release before's only with ``upgrade``). The one
    place that decides it: no steps, and the store opens without taking the write
    lock.

    Raises StoreError for a file that is not a wfcore database, or is newer,
    before anything is written to it.
    """
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not tables:
        folder, store_id = new_folder, uuid.uuid4().hex
        return Opening(
            folder,
            store_id,
            steps=[
                *((s, ()) for s in _SCHEMA.split(";") if s.strip()),
                *((s, ()) for s in _SCHEMA_4_INDEXES),
                (_SCHEMA_5_HISTORY_PARTS, ()),
                *((s, ()) for s in _SCHEMA_6_INDEXES),
                (f"PRAGMA application_id={APPLICATION_ID}", ()),
                *(
                    (_ADD_META, item)
                    for item in [
                        ("application", "wfcore"),
                        ("schema_version", str(SCHEMA_VERSION)),
                        ("artifacts_dir", folder),
                        ("store_id", store_id),
                    ]
                ),
            ],
        )
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    if "wfe_meta" not in tables or app_id != APPLICATION_ID:
        raise StoreError(
            f"{path} is not a wfcore database (it has other tables); refusing to use it"
        )
    meta = dict(conn.execute("SELECT key, value FROM wfe_meta"))
    try:
        version = int(meta.get("schema_version", "0"))
    except ValueError:
        raise StoreError(
            f"{path} has an unreadable schema version "
            f"{meta['schema_version']!r}; refusing to use it"
        ) from None
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path} was written by a newer wfcore (schema {version}, this code "
            f"knows {SCHEMA_VERSION}); upgrade wfcore to use it"
        )
    steps: list[tuple[str, tuple[str, ...]]] = []
    recorded = meta.get("artifacts_dir")
    if recorded is None:
        # Stores made before the folder was recorded named it after the file's
        # stem (so jobs.db and jobs.sqlite shared one): they keep their folder.
        folder = f"{path.stem}-artifacts"
        steps.append((_ADD_META, ("artifacts_dir", folder)))
    else:
        folder = recorded
    if not folder or "/" in folder or folder in (".", ".."):
        raise StoreError(f"{path} names an unusable artifacts folder: {folder!r}")
    store_id = meta.get("store_id") or ""
    if not store_id:
        # Copies share it; stores made before it get theirs at their next open.
        store_id = uuid.uuid4().hex
        steps.append((_ADD_META, ("store_id", store_id)))
    opening = Opening(folder, store_id, steps)
    if version == SCHEMA_VERSION - 1 and not upgrade:
        # The previous release's workers may still use it: leave it as it is.
        opening.read_as_is = version
        version = SCHEMA_VERSION
    if version < 2:
        # Old rows keep their history in the document until next written.
        steps.append(("ALTER TABLE tasks ADD COLUMN history TEXT", ()))
    outbox_columns = {r[1] for r in conn.execute("PRAGMA table_info(outbox)")}
    if "version" not in outbox_columns:
        # Rows from before (NULL) are acknowledged by any version.
        steps.append(("ALTER TABLE outbox ADD COLUMN version INTEGER", ()))
    if version < 4:
        # Reads every task once (seconds on a store of millions), holding the
        # write lock meanwhile: other processes' writes wait (busy_timeout).
        steps.extend((statement, ()) for statement in _SCHEMA_4_INDEXES)
    if version < 5:
        steps.append((_SCHEMA_5_HISTORY_PARTS, ()))
    if version < 6:
        task_columns = {r[1] for r in conn.execute("PRAGMA table_info(tasks)")}
        if "priority" not in task_columns:
            steps.append(("ALTER TABLE tasks ADD COLUMN priority INTEGER NOT NULL DEFAULT 0", ()))
        # Reads every ready task once, as schema 4's indexes did.
        steps.extend((statement, ()) for statement in _SCHEMA_6_INDEXES)
    if version < SCHEMA_VERSION:
        steps.append(
            (
                "UPDATE wfe_meta SET value = ? WHERE key = 'schema_version'",
                (str(SCHEMA_VERSION),),
            )
        )
        opening.upgraded_from = version
    return opening

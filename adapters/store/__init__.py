"""The control plane's relational store: SQLite by default, PostgreSQL via asyncpg.

Public pieces: ``open_store`` / ``SqlStore`` (the ``Store`` seam), the migration
runner (``Migration``, ``migrate``, ``ensure_schema``), the ``ChangeFeed`` that
tells snapshot readers what changed, ``Snapshot`` itself, ``publish``/``read_published``
(the snapshot rows control modules publish for the gateway), and portable column types.
"""

from adapters.store.base import DB_FILENAME, Dialect, Store, redact_url, resolve_database_url
from adapters.store.changes import ALL_TOPICS, STORE_MIGRATIONS, ChangeFeed, FeedMode, Subscription
from adapters.store.errors import (
    ConstraintViolation,
    DuplicateKey,
    InvalidValue,
    MigrationPlanError,
    SchemaError,
    SchemaOutdated,
    SchemaTooNew,
    StoreError,
    StoreUnavailable,
)
from adapters.store.migrations import (
    AppliedMigration,
    Migration,
    MigrationPlan,
    Upgrade,
    check_schema,
    create_tables,
    ddl,
    ensure_schema,
    migrate,
    schema_drift,
    schema_versions,
)
from adapters.store.published import publish, read_published, store_snapshots
from adapters.store.snapshot import Snapshot
from adapters.store.sql import SqlStore, open_store
from adapters.store.types import AutoId, Json, UsdAmount, UtcDateTime, new_id, utcnow

__all__ = [
    "ALL_TOPICS",
    "DB_FILENAME",
    "STORE_MIGRATIONS",
    "AppliedMigration",
    "AutoId",
    "ChangeFeed",
    "ConstraintViolation",
    "Dialect",
    "DuplicateKey",
    "FeedMode",
    "InvalidValue",
    "Json",
    "Migration",
    "MigrationPlan",
    "MigrationPlanError",
    "SchemaError",
    "SchemaOutdated",
    "SchemaTooNew",
    "Snapshot",
    "SqlStore",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "Subscription",
    "Upgrade",
    "UsdAmount",
    "UtcDateTime",
    "check_schema",
    "create_tables",
    "ddl",
    "ensure_schema",
    "migrate",
    "new_id",
    "open_store",
    "publish",
    "read_published",
    "redact_url",
    "resolve_database_url",
    "schema_drift",
    "schema_versions",
    "store_snapshots",
    "utcnow",
]

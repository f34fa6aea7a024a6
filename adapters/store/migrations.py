"""Versioned schema migrations, contributed per module and applied in one transaction.

Each control module owns an ordered list of ``Migration``s numbered 1, 2, 3…;
the table ``schema_migrations(module, version, description, applied_at)`` records
what has been applied. Why our own runner rather than Alembic: modules are
plug-ins discovered at run time, each with its own independent history, and we
want the "refuse a newer schema" check at start-up; Alembic's single linear (or
branch-labelled) script directory fits that poorly and adds a second config
system. The runner is ~100 lines on top of SQLAlchemy Core.

Rules for migration authors:

* Never edit a released migration; add the next version.
* Build DDL from *frozen* table definitions local to the migration (not the
  ``Table`` objects your queries use), so that v1 still creates exactly the v1
  schema after v2 changed the live definition. ``create_tables`` and ``ddl``
  build the ``upgrade`` callables.
* Write portable SQL (SQLAlchemy constructs); the same list runs on SQLite and
  PostgreSQL. ``conn.dialect.name`` is there for the rare exception.

Everything pending is applied inside one transaction (both databases have
transactional DDL), under a PostgreSQL advisory lock or SQLite's write lock, so
two replicas starting together cannot both migrate and a failure leaves the
schema exactly as it was.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Column, Integer, MetaData, String, Table, func, inspect, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.base import Executable

from adapters.store.errors import MigrationPlanError, SchemaOutdated, SchemaTooNew
from adapters.store.types import UtcDateTime, utcnow

if TYPE_CHECKING:
    from adapters.store.base import Store

__all__ = [
    "AppliedMigration",
    "Migration",
    "MigrationPlan",
    "Upgrade",
    "check_schema",
    "create_tables",
    "ddl",
    "ensure_schema",
    "migrate",
    "schema_drift",
    "schema_migrations",
    "schema_versions",
    "validate_plan",
]

Upgrade = Callable[[AsyncConnection], Awaitable[None]]
MigrationPlan = Mapping[str, Sequence["Migration"]]  # module name -> its migrations, applied in mapping order

_MODULE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_ADVISORY_LOCK_ID = 0x6C6C6D6F7073  # "llmops": one lock for every migrating process

schema_migrations = Table(
    "schema_migrations", MetaData(),
    Column("module", String(63), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("description", String(200), nullable=False),
    Column("applied_at", UtcDateTime, nullable=False),
)


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    upgrade: Upgrade


@dataclass(frozen=True)
class AppliedMigration:
    module: str
    version: int
    description: str


def ddl(*statements: Executable | str) -> Upgrade:
    """An upgrade that runs DDL constructs (``CreateTable(t)``, ``CreateIndex(i)``) or raw SQL, in order."""

    async def upgrade(conn: AsyncConnection) -> None:
        for statement in statements:
            await conn.execute(text(statement) if isinstance(statement, str) else statement)

    return upgrade


def create_tables(*tables: Table) -> Upgrade:
    """An upgrade that creates ``tables`` with their indexes and constraints (frozen definitions!)."""

    async def upgrade(conn: AsyncConnection) -> None:
        def create(sync_conn: Connection) -> None:
            for table in tables:
                table.create(sync_conn, checkfirst=False)

        await conn.run_sync(create)

    return upgrade


def validate_plan(plan: MigrationPlan) -> None:
    """Fail at start-up, not mid-migration, when a module's list is malformed."""
    for module, migrations in plan.items():
        if not _MODULE_NAME.match(module):
            raise MigrationPlanError(f"module name {module!r} must match {_MODULE_NAME.pattern}")
        versions = [m.version for m in migrations]
        if versions != list(range(1, len(versions) + 1)):
            raise MigrationPlanError(
                f"module {module!r}: migration versions must be 1, 2, 3… in order, got {versions}"
            )
        for m in migrations:
            if not m.description or len(m.description) > 200:
                raise MigrationPlanError(f"module {module!r} v{m.version}: description: 1-200 chars")


async def schema_versions(conn: AsyncConnection) -> dict[str, int]:
    """Highest applied version per module; empty for a database never migrated."""
    if not await conn.run_sync(lambda c: inspect(c).has_table(schema_migrations.name)):
        return {}
    module = schema_migrations.c.module
    rows = await conn.execute(select(module, func.max(schema_migrations.c.version)).group_by(module))
    return {module: version for module, version in rows.all()}


def _pending(plan: MigrationPlan, current: Mapping[str, int]) -> list[tuple[str, Migration]]:
    pending: list[tuple[str, Migration]] = []
    for module, migrations in plan.items():
        known = len(migrations)
        have = current.get(module, 0)
        if have > known:
            raise SchemaTooNew(module, have, known)
        pending.extend((module, m) for m in migrations[have:])
    return pending


async def check_schema(store: Store, plan: MigrationPlan) -> list[tuple[str, int]]:
    """Pending ``(module, version)`` pairs; raises ``SchemaTooNew`` when the database is ahead.

    Modules present in the database but absent from ``plan`` (disabled or
    uninstalled) are ignored: their tables simply stay.
    """
    validate_plan(plan)
    async with store.read() as conn:
        current = await schema_versions(conn)
    return [(module, m.version) for module, m in _pending(plan, current)]


async def migrate(store: Store, plan: MigrationPlan) -> list[AppliedMigration]:
    """Apply everything pending, atomically; returns what was applied (empty when up to date)."""
    validate_plan(plan)
    applied: list[AppliedMigration] = []
    # No unit-of-work deadline: an index build on a big table may rightly take minutes.
    async with store.begin(timeout_s=math.inf) as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(select(func.pg_advisory_xact_lock(_ADVISORY_LOCK_ID)))
        await conn.run_sync(lambda c: schema_migrations.create(c, checkfirst=True))
        current = await schema_versions(conn)  # re-read under the lock: another replica may have migrated
        for module, migration in _pending(plan, current):
            await migration.upgrade(conn)
            await conn.execute(schema_migrations.insert().values(
                module=module, version=migration.version, description=migration.description,
                applied_at=utcnow(),
            ))
            applied.append(AppliedMigration(module, migration.version, migration.description))
    return applied


async def ensure_schema(store: Store, plan: MigrationPlan, *, auto_migrate: bool) -> list[AppliedMigration]:
    """Start-up check: refuse a newer schema; apply pending migrations or refuse when not allowed to."""
    pending = await check_schema(store, plan)
    if not pending:
        return []
    if not auto_migrate:
        raise SchemaOutdated(pending)
    return await migrate(store, plan)


async def schema_drift(store: Store, *tables: Table) -> list[str]:
    """Differences between live ``Table`` definitions and the migrated database; empty when in sync.

    Meant for each module's tests: after ``migrate``, the tables its queries use
    must match what its migrations built (names, columns, nullability). It
    catches a column added to the live definition without a migration.
    """
    def compare(sync_conn: object) -> list[str]:
        inspector = inspect(sync_conn)
        problems: list[str] = []
        for table in tables:
            if not inspector.has_table(table.name):
                problems.append(f"table {table.name} missing")
                continue
            actual = {c["name"]: c for c in inspector.get_columns(table.name)}
            for column in table.columns:
                found = actual.pop(column.name, None)
                if found is None:
                    problems.append(f"{table.name}.{column.name} missing")
                elif bool(found["nullable"]) != bool(column.nullable) and not column.primary_key:
                    problems.append(f"{table.name}.{column.name}: nullable is {found['nullable']} in the database")
            problems.extend(f"{table.name}.{name} not in the code's definition" for name in actual)
        return problems

    async with store.read() as conn:
        return await conn.run_sync(compare)

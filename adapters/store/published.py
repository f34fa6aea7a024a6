"""Published snapshots: one row per kind, written by control modules, read by gateways.

``publish`` stores a payload (``adapters.snapshots``) inside the caller's write
transaction and marks its topic on the ``ChangeFeed``, so the payload, the rows it
was built from and the notification commit together. The row's ``generation`` is
bumped by an upsert, which takes the row lock: two concurrent publishers of the
same kind serialize, and the later commit always carries the higher generation.

``read_published`` is the reader's side: every kind present, decoded. A payload
this reader cannot decode (newer schema, malformed) is skipped and reported, so
one bad kind never hides the others.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING

import msgspec
from sqlalchemy import BigInteger, Column, LargeBinary, MetaData, String, Table, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.snapshots import SNAPSHOT_TOPICS, SnapshotKind, SnapshotPayload, SnapshotVersionError, decode, encode
from adapters.store.migrations import Migration, create_tables
from adapters.store.types import UtcDateTime, utcnow

if TYPE_CHECKING:  # changes.py imports this module for its migration
    from adapters.store.base import Store
    from adapters.store.changes import ChangeFeed

__all__ = ["PUBLISHED_MIGRATION", "publish", "read_published", "store_snapshots"]

log = logging.getLogger("llmops.store.published")

store_snapshots = Table(
    "store_snapshots", MetaData(),
    Column("kind", String(40), primary_key=True),
    Column("generation", BigInteger, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("published_at", UtcDateTime, nullable=False),
)

PUBLISHED_MIGRATION = Migration(2, "published snapshots for the gateway", create_tables(store_snapshots))


async def publish(
    conn: AsyncConnection, changes: ChangeFeed, kind: SnapshotKind,
    build: Callable[[int, datetime], Awaitable[SnapshotPayload]],
) -> SnapshotPayload:
    """Store ``await build(generation, published_at)`` as the ``kind`` snapshot; call inside ``Store.begin()``.

    ``build`` runs after the row lock is taken, so on PostgreSQL (read committed) the rows
    it reads include every earlier publisher's commit: the last commit has the full picture.
    """
    now = utcnow()
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    stmt = insert(store_snapshots).values(kind=kind, generation=1, payload=b"", published_at=now)
    upsert = stmt.on_conflict_do_update(
        index_elements=[store_snapshots.c.kind],
        set_={"generation": store_snapshots.c.generation + 1, "published_at": now},
    ).returning(store_snapshots.c.generation)
    generation = int((await conn.execute(upsert)).scalar_one())
    payload = await build(generation, now)
    if payload.__struct_config__.tag != kind or payload.generation != generation:
        raise ValueError(f"build() must return a {kind!r} payload of generation {generation}")
    await conn.execute(update(store_snapshots).where(store_snapshots.c.kind == kind).values(payload=encode(payload)))
    await changes.mark(conn, SNAPSHOT_TOPICS[kind])
    return payload


async def read_published(store: Store) -> tuple[dict[SnapshotKind, SnapshotPayload], dict[str, str]]:
    """Every published kind this reader understands, and ``{kind: why}`` for those it had to skip."""
    async with store.read() as conn:
        rows = (await conn.execute(select(store_snapshots.c.kind, store_snapshots.c.payload))).all()
    found: dict[SnapshotKind, SnapshotPayload] = {}
    skipped: dict[str, str] = {}
    for row in rows:
        if row.kind not in SNAPSHOT_TOPICS:
            skipped[row.kind] = "unknown kind"
            continue
        try:
            found[row.kind] = decode(bytes(row.payload), row.kind)
        except (SnapshotVersionError, msgspec.ValidationError, msgspec.DecodeError) as err:
            skipped[row.kind] = str(err)
    return found, skipped

"""``ChangeFeed``: tell readers of in-memory snapshots that a topic changed, without them polling rows.

The gateway's hot path never queries the store; it reads snapshots (policies, the
catalog) that a background task reloads when the feed says their topic changed.

Writers call ``mark(conn, topic)`` inside a ``Store.begin()`` transaction. That
bumps a per-topic version row in the same transaction and, on PostgreSQL, issues
``pg_notify`` (delivered only if the transaction commits). After the commit the
store publishes the topic to subscribers in this process. Other processes learn
of it through the feed's *source*:

* ``listen`` (PostgreSQL default): a dedicated asyncpg connection LISTENs; when it
  drops, the feed reconnects with back-off and, because notifications sent while
  it was away are lost, tells every subscriber that everything changed.
* ``poll`` (SQLite default; the fallback anywhere): re-reads the version rows every
  ``poll_interval_s`` and publishes the topics whose version moved.
* ``local``: no cross-process source (tests, single process).

Delivery is "at least once, coalesced": a subscriber that is slow sees one
wake-up naming every topic changed since its last wait, never a backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Literal

import asyncpg
from sqlalchemy import BigInteger, Column, MetaData, String, Table, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.store.errors import StoreError
from adapters.store.migrations import Migration, create_tables
from adapters.store.published import PUBLISHED_MIGRATION
from adapters.store.types import UtcDateTime, utcnow

if TYPE_CHECKING:
    from adapters.store.sql import SqlStore

__all__ = [
    "ALL_TOPICS", "CHANNEL", "STORE_MIGRATIONS", "ChangeFeed", "FeedMode", "Subscription", "store_changes",
]

log = logging.getLogger("llmops.store.changes")

FeedMode = Literal["auto", "local", "listen", "poll"]
CHANNEL = "llmops_changes"
ALL_TOPICS = "*"
PENDING_TOPICS_KEY = "llmops.pending_topics"
_MAX_BACKOFF_S = 10.0
# What a LISTEN connection can fail with: socket, timeout, or server-side errors.
_PG_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)

store_changes = Table(
    "store_changes", MetaData(),
    Column("topic", String(200), primary_key=True),
    Column("version", BigInteger, nullable=False),
    Column("changed_at", UtcDateTime, nullable=False),
)

STORE_MIGRATIONS = (
    Migration(1, "change-feed version rows", create_tables(store_changes)),
    PUBLISHED_MIGRATION,  # the table of published snapshots (adapters/store/published.py)
)


class Subscription:
    """Topics changed since the last ``wait``; iterate it or call ``wait`` in a loop."""

    def __init__(self, feed: ChangeFeed, topics: frozenset[str]) -> None:
        self._feed = feed
        self.topics = topics
        self._pending: set[str] = set()
        self._event = asyncio.Event()

    def _offer(self, topics: Iterable[str] | None) -> None:
        """``None`` means "anything may have changed" (a resync after a lost connection)."""
        if topics is None:
            hit = set(self.topics) if self.topics else {ALL_TOPICS}
        else:
            hit = {t for t in topics if not self.topics or t in self.topics}
        if hit:
            self._pending |= hit
            self._event.set()

    async def wait(self, timeout_s: float | None = None) -> set[str]:
        """Block until at least one topic changed; ``TimeoutError`` after ``timeout_s``."""
        async with asyncio.timeout(timeout_s):
            await self._event.wait()
        self._event.clear()
        topics, self._pending = self._pending, set()
        return topics

    def close(self) -> None:
        self._feed._subscriptions.discard(self)

    def __aiter__(self) -> AsyncIterator[set[str]]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[set[str]]:
        while True:
            yield await self.wait()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class ChangeFeed:
    def __init__(self, store: SqlStore, *, mode: FeedMode = "auto", poll_interval_s: float = 2.0) -> None:
        if mode == "auto":
            mode = "listen" if store.dialect == "postgresql" else "poll"
        if mode == "listen" and store.dialect != "postgresql":
            raise ValueError("LISTEN/NOTIFY change feed needs PostgreSQL; use mode 'poll' or 'local'")
        self.mode: FeedMode = mode
        self._store = store
        self._poll_interval_s = poll_interval_s
        self._subscriptions: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()  # set while the cross-process source is live (for health and tests)

    async def mark(self, conn: AsyncConnection, topic: str) -> None:
        """Record, inside the caller's write transaction, that ``topic`` changed."""
        values = {"topic": topic, "version": 1, "changed_at": utcnow()}
        insert = postgresql.insert if self._store.dialect == "postgresql" else sqlite.insert
        stmt = insert(store_changes).values(values)
        stmt = stmt.on_conflict_do_update(
            index_elements=[store_changes.c.topic],
            set_={"version": store_changes.c.version + 1, "changed_at": stmt.excluded.changed_at},
        )
        await conn.execute(stmt)
        if self._store.dialect == "postgresql":
            await conn.execute(select(func.pg_notify(CHANNEL, topic)))
        conn.info.setdefault(PENDING_TOPICS_KEY, set()).add(topic)

    def subscribe(self, *topics: str) -> Subscription:
        """Subscribe to ``topics`` (none: every topic). Close it (or use ``with``) when done."""
        sub = Subscription(self, frozenset(topics))
        self._subscriptions.add(sub)
        return sub

    def publish(self, topics: Iterable[str] | None) -> None:
        """Wake local subscribers; ``None`` = resync (everything may have changed)."""
        materialized = None if topics is None else tuple(topics)
        for sub in tuple(self._subscriptions):
            sub._offer(materialized)

    async def start(self) -> None:
        """Start the cross-process source; call after migrations created ``store_changes``."""
        if self._task is None and self.mode != "local":
            runner = self._listen if self.mode == "listen" else self._poll
            self._task = asyncio.create_task(runner(), name=f"llmops-change-feed-{self.mode}")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.connected.clear()

    async def _poll(self) -> None:
        seen: dict[str, int] | None = None
        while True:
            try:
                async with self._store.read() as conn:
                    rows = (await conn.execute(select(store_changes.c.topic, store_changes.c.version))).all()
                current = {row.topic: row.version for row in rows}
                if seen is not None:
                    moved = [t for t, v in current.items() if seen.get(t) != v]
                    if moved:
                        self.publish(moved)
                seen = current  # kept across outages: versions are durable, so nothing is missed
                self.connected.set()
            except (StoreError, SQLAlchemyError) as err:  # outage, or table not migrated yet: keep polling
                if self.connected.is_set():
                    log.warning("change-feed poll failed, retrying: %s", err)
                self.connected.clear()
            await asyncio.sleep(self._poll_interval_s)

    async def _listen(self) -> None:
        dsn = self._store.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        backoff_s, first = 0.2, True
        while True:
            try:
                conn = await asyncpg.connect(dsn, timeout=self._store.timeout_s)
            except _PG_ERRORS as err:
                log.warning("change-feed LISTEN connection failed, retrying in %.1fs: %s", backoff_s, err)
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, _MAX_BACKOFF_S)
                continue
            lost = asyncio.Event()
            try:
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(CHANNEL, lambda _c, _pid, _ch, payload: self.publish((payload,)))
                self.connected.set()
                if not first:
                    self.publish(None)  # notifications sent while we were away are gone: resync
                first, backoff_s = False, 0.2
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), 15)
                    if not lost.is_set():
                        # A half-open socket only shows when we write; a hung server, when we time out.
                        await conn.execute("SELECT 1", timeout=self._store.timeout_s)
            except _PG_ERRORS as err:
                log.warning("change-feed LISTEN connection lost: %s", err)
            finally:
                self.connected.clear()
                with contextlib.suppress(*_PG_ERRORS):
                    await asyncio.wait_for(conn.close(), 2)
            await asyncio.sleep(backoff_s)



"""``SqlStore``: the ``Store`` over SQLAlchemy Core's async engine (aiosqlite or asyncpg).

One class serves both databases because SQLAlchemy Core already abstracts the SQL;
what differs is connection set-up, kept in ``_configure_sqlite`` and the engine
options below, and change notification (``ChangeFeed``).

SQLite needs care to be a correct transactional store: Python's sqlite3 module
does not BEGIN before DDL or SELECT ("legacy transaction control"), so a failing
migration could leave half its tables behind. We switch that off and emit BEGIN
ourselves; write transactions use BEGIN IMMEDIATE, which takes the write lock
up front instead of failing with "database is locked" when a read transaction
later tries to write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from sqlalchemy import event, exc, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from adapters.store.base import Dialect, redact_url, resolve_database_url
from adapters.store.changes import PENDING_TOPICS_KEY, ChangeFeed, FeedMode
from adapters.store.errors import ConstraintViolation, DuplicateKey, InvalidValue, StoreUnavailable

__all__ = ["SqlStore", "open_store"]

log = logging.getLogger("llmops.store")

_BEGIN_OPTION = "llmops_sqlite_begin"
_json_encoder = msgspec.json.Encoder()


def _json_serializer(value: Any) -> str:
    return _json_encoder.encode(value).decode()


class SqlStore:
    """A ``Store`` bound to one database; create with ``open_store``."""

    def __init__(
        self, engine: AsyncEngine, *, feed_mode: FeedMode = "auto", poll_interval_s: float = 2.0
    ) -> None:
        self.engine = engine
        self.dialect: Dialect = "postgresql" if engine.dialect.name == "postgresql" else "sqlite"
        if self.dialect == "sqlite":
            _configure_sqlite(engine)
        self._write_lock = asyncio.Lock() if self.dialect == "sqlite" else None
        self.changes = ChangeFeed(self, mode=feed_mode, poll_interval_s=poll_interval_s)

    def __repr__(self) -> str:
        return f"SqlStore({self.url!r})"

    @property
    def url(self) -> str:
        return redact_url(self.engine.url.render_as_string(hide_password=False))

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        published: set[str] = set()
        lock = self._write_lock or contextlib.nullcontext()
        async with lock, self._connection() as conn:
            if self.dialect == "sqlite":
                await conn.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})
            try:
                async with self._translated(), conn.begin():
                    yield conn
                published = conn.info.get(PENDING_TOPICS_KEY, set())
            finally:
                # info lives with the pooled DBAPI connection: never let topics leak to its next user.
                conn.info.pop(PENDING_TOPICS_KEY, None)
        if published:
            self.changes.publish(published)

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self._connection() as conn, self._translated():
            yield conn  # autobegun transaction; closing the connection rolls it back

    async def ping(self) -> None:
        async with self.read() as conn:
            await conn.execute(text("SELECT 1"))

    async def aclose(self) -> None:
        await self.changes.aclose()
        await self.engine.dispose()

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[AsyncConnection]:
        """Check a connection out of the pool; failing to get one is ``StoreUnavailable``.

        Only here are bare ``OSError``s translated (asyncpg's connect raises them
        unwrapped): inside the block an ``OSError`` is the caller's own, e.g. from
        a file it is writing, and must not masquerade as a database outage.
        """
        try:
            conn = await self.engine.connect()
        except (OSError, TimeoutError, exc.SQLAlchemyError) as err:
            if isinstance(err, exc.SQLAlchemyError) and not _is_unavailable(err):
                raise
            log.warning("database unreachable (%s): %s", self.url, _describe(err))
            raise StoreUnavailable("database unavailable") from err
        try:
            yield conn
        finally:
            try:
                await conn.close()
            except (OSError, exc.SQLAlchemyError) as err:  # died with the server: nothing to roll back
                log.debug("closing a broken database connection: %s", _describe(err))

    @contextlib.asynccontextmanager
    async def _translated(self) -> AsyncIterator[None]:
        """The one place SQLAlchemy/driver errors raised by statements become ``StoreError``s."""
        try:
            yield
        except exc.IntegrityError as err:
            message = str(err.orig).lower()
            if "unique" in message or "duplicate key" in message:
                raise DuplicateKey(_describe(err)) from err
            raise ConstraintViolation(_describe(err)) from err
        except exc.DBAPIError as err:
            if isinstance(err, exc.DataError) or _sqlstate(err).startswith("22"):  # SQL "data exception" class
                raise InvalidValue(_describe(err)) from err
            if not _is_unavailable(err):
                raise
            log.warning("database connection lost (%s): %s", self.url, _describe(err))
            raise StoreUnavailable("database unavailable") from err
        except exc.SQLAlchemyError as err:
            if not _is_unavailable(err):
                raise
            log.warning("database connection lost (%s): %s", self.url, _describe(err))
            raise StoreUnavailable("database unavailable") from err


def _is_unavailable(err: exc.SQLAlchemyError) -> bool:
    """True for errors that mean "the database is not there", not "your statement is wrong"."""
    if isinstance(err, exc.TimeoutError):  # pool exhausted: every connection busy or hung
        return True
    if isinstance(err, exc.DBAPIError):
        if err.connection_invalidated or isinstance(err, exc.InterfaceError):
            return True
        orig = err.orig
        if type(orig).__name__ in _ASYNCPG_CONNECTION_ERRORS or isinstance(orig, OSError):
            return True
        if isinstance(err, exc.OperationalError):
            # SQLite reports locks and I/O failures as OperationalError, but also SQL errors
            # such as "no such table": only the former are outages.
            message = str(orig).lower()
            return any(hint in message for hint in _SQLITE_OUTAGE_HINTS) or orig is None
    return False


_ASYNCPG_CONNECTION_ERRORS = frozenset({
    "ConnectionDoesNotExistError", "CannotConnectNowError", "AdminShutdownError", "CrashShutdownError",
    "ConnectionFailureError", "ConnectionRejectionError", "TooManyConnectionsError", "InterfaceError",
    "ConnectionResetError", "ConnectionRefusedError",
})
_SQLITE_OUTAGE_HINTS = ("locked", "disk i/o", "unable to open", "readonly", "disk is full", "busy")


def _sqlstate(err: exc.DBAPIError) -> str:
    """PostgreSQL's SQLSTATE, which SQLAlchemy's asyncpg adapter keeps on the wrapped error."""
    orig = err.orig
    state = getattr(orig, "sqlstate", None) or getattr(getattr(orig, "__cause__", None), "sqlstate", None)
    return str(state or "")


def _describe(err: BaseException) -> str:
    """First line of the driver's message: enough to diagnose, without parameters or SQL bodies."""
    inner = getattr(err, "orig", None) or err
    lines = str(inner).strip().splitlines()
    return lines[0] if lines else type(inner).__name__


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (see module docstring)
        cursor = dbapi_conn.cursor()
        for pragma in ("busy_timeout=5000", "foreign_keys=ON", "synchronous=NORMAL"):
            cursor.execute(f"PRAGMA {pragma}")
        try:
            # WAL lets readers proceed during a write. The mode is stored in the file, so when another
            # connection holds the lock while switching it, that connection is doing the job for us.
            cursor.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as err:
            if "locked" not in str(err):
                raise
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get(_BEGIN_OPTION, "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


def open_store(
    database_url: str | None,
    *,
    data_dir: str = ".llmops",
    feed_mode: FeedMode = "auto",
    poll_interval_s: float = 2.0,
    pool_size: int = 5,
    connect_timeout_s: float = 5.0,
) -> SqlStore:
    """Create the store for a configured URL (``None``: SQLite file under ``data_dir``).

    Opens no connection yet: the first ``begin``/``read``/``ping`` does, so a bad
    URL or a down server surfaces as ``StoreUnavailable`` there.
    """
    url = resolve_database_url(database_url, data_dir)
    options: dict[str, Any] = {"json_serializer": _json_serializer, "json_deserializer": msgspec.json.decode}
    if url.startswith("postgresql"):
        options.update(
            pool_size=pool_size, max_overflow=pool_size, pool_timeout=connect_timeout_s * 2,
            pool_pre_ping=True,  # after a server restart, stale pooled connections are replaced, not used
            connect_args={"timeout": connect_timeout_s, "command_timeout": 60,
                          "server_settings": {"application_name": "llmops-control"}},
        )
    else:
        options.update(connect_args={"timeout": connect_timeout_s})
    return SqlStore(create_async_engine(url, **options), feed_mode=feed_mode, poll_interval_s=poll_interval_s)

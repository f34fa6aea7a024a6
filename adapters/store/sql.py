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

Every unit of work (one ``begin()`` or ``read()`` block) has one deadline,
``timeout_s``: waiting for the SQLite write lock, checking a connection out of
the pool (and connecting), every statement, the commit and the rollback all
count against it. When it passes, the connection is terminated without another
round-trip (a hung server would not answer a ROLLBACK either; the server rolls
back a transaction whose connection is gone) and the caller gets
``StoreUnavailable``, which the admin API answers with 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import sqlite3
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import msgspec
from sqlalchemy import event, exc, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from adapters.store.base import Dialect, redact_url, resolve_database_url
from adapters.store.changes import PENDING_TOPICS_KEY, ChangeFeed, FeedMode
from adapters.store.errors import ConstraintViolation, DuplicateKey, InvalidValue, StoreUnavailable

__all__ = ["DEFAULT_TIMEOUT_S", "SqlStore", "open_store"]

log = logging.getLogger("llmops.store")

_BEGIN_OPTION = "llmops_sqlite_begin"
DEFAULT_TIMEOUT_S = 5.0
_json_encoder = msgspec.json.Encoder()


def _json_serializer(value: Any) -> str:
    return _json_encoder.encode(value).decode()


class SqlStore:
    """A ``Store`` bound to one database; create with ``open_store``."""

    def __init__(
        self, engine: AsyncEngine, *, feed_mode: FeedMode = "auto", poll_interval_s: float = 2.0,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self.engine = engine
        self.timeout_s = timeout_s
        self.dialect: Dialect = "postgresql" if engine.dialect.name == "postgresql" else "sqlite"
        if self.dialect == "sqlite":
            _configure_sqlite(engine, timeout_s)
        self._write_lock = asyncio.Lock() if self.dialect == "sqlite" else None
        self.changes = ChangeFeed(self, mode=feed_mode, poll_interval_s=poll_interval_s)

    def __repr__(self) -> str:
        return f"SqlStore({self.url!r})"

    @property
    def url(self) -> str:
        return redact_url(self.engine.url.render_as_string(hide_password=False))

    @contextlib.asynccontextmanager
    async def begin(self, *, timeout_s: float | None = None) -> AsyncIterator[AsyncConnection]:
        published: set[str] = set()
        async with self._unit(timeout_s, write=True) as conn:
            try:
                yield conn
                published = conn.info.get(PENDING_TOPICS_KEY, set())
            finally:
                # info lives with the pooled DBAPI connection: never let topics leak to its next user.
                conn.info.pop(PENDING_TOPICS_KEY, None)
        if published:
            self.changes.publish(published)

    @contextlib.asynccontextmanager
    async def read(self, *, timeout_s: float | None = None) -> AsyncIterator[AsyncConnection]:
        async with self._unit(timeout_s, write=False) as conn:
            yield conn  # autobegun transaction; closing the connection rolls it back

    async def ping(self) -> None:
        async with self.read() as conn:
            await conn.execute(text("SELECT 1"))

    async def aclose(self) -> None:
        await self.changes.aclose()
        await self.engine.dispose()

    @contextlib.asynccontextmanager
    async def _unit(self, timeout_s: float | None, *, write: bool) -> AsyncIterator[AsyncConnection]:
        """One unit of work under one deadline (``timeout_s``: None = the store's, ``math.inf`` = none)."""
        limit_s = self.timeout_s if timeout_s is None else timeout_s
        deadline = asyncio.timeout(None if math.isinf(limit_s) else limit_s)
        try:
            async with _cancellation_kept(), deadline:
                lock = self._write_lock if write else None
                async with lock or contextlib.nullcontext(), self._connection(deadline) as conn:
                    if not write:
                        async with self._translated():
                            yield conn
                        return
                    if self.dialect == "sqlite":
                        await conn.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})
                    async with self._translated():
                        transaction = await conn.begin()
                        try:
                            yield conn
                        except BaseException:
                            if not deadline.expired():  # past the deadline the connection is dropped instead
                                await _quietly(transaction.rollback(), "rolling back")
                            raise
                        await transaction.commit()
        except (TimeoutError, OSError, exc.SQLAlchemyError) as err:
            if not deadline.expired():
                raise  # e.g. the caller's own timeout or file error, not ours
            log.warning("database did not answer within %.1fs (%s)", limit_s, self.url)
            raise StoreUnavailable(f"database did not answer within {limit_s:g}s") from err

    @contextlib.asynccontextmanager
    async def _connection(self, deadline: asyncio.Timeout) -> AsyncIterator[AsyncConnection]:
        """Check a connection out of the pool; failing to get one is ``StoreUnavailable``.

        Only here are bare ``OSError``s translated (asyncpg's connect raises them
        unwrapped): inside the block an ``OSError`` is the caller's own, e.g. from
        a file it is writing, and must not masquerade as a database outage.
        """
        try:
            conn = await self.engine.connect()
        except (OSError, TimeoutError, exc.SQLAlchemyError) as err:
            if deadline.expired():
                raise
            if isinstance(err, exc.SQLAlchemyError) and not _is_unavailable(err):
                raise
            log.warning("database unreachable (%s): %s", self.url, _describe(err))
            raise StoreUnavailable("database unavailable") from err
        try:
            yield conn
        finally:
            if deadline.expired():
                await _discard(conn)
            else:
                await _quietly(conn.close(), "closing")  # died with the server: nothing to roll back

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


@contextlib.asynccontextmanager
async def _cancellation_kept() -> AsyncIterator[None]:
    """A cancel that lands mid-query can come back from the driver as an ordinary error (SQLAlchemy's
    ``PendingRollbackError``, a connection reset): a background loop's ``except Exception`` would then swallow
    the cancel, and the task being stopped would go on forever (shutdown hung). While the current task is being
    cancelled, whatever error the unit of work ends with is the cancel."""
    try:
        yield
    except Exception as err:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError() from err
        raise


async def _quietly(operation: Awaitable[None], what: str) -> None:
    """Clean-up on a connection that may have died with the server: log, never mask the caller's error."""
    try:
        await operation
    except (OSError, exc.SQLAlchemyError) as err:
        log.debug("%s a broken database connection: %s", what, _describe(err))


async def _discard(conn: AsyncConnection) -> None:
    """Drop a connection whose deadline passed without waiting for the server (which may be hung)."""
    with contextlib.suppress(exc.SQLAlchemyError, AttributeError):
        driver = conn.sync_connection.connection.driver_connection if conn.sync_connection else None
        terminate = getattr(driver, "terminate", None)  # asyncpg: abort the socket, no round-trip
        if terminate is not None:
            terminate()
    await _quietly(conn.invalidate(), "invalidating")  # the pool forgets it; nothing goes back to the server


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
        if _sqlstate(err)[:2] in ("08", "57"):  # connection exception; shutting down / starting ("57P03")
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


def _configure_sqlite(engine: AsyncEngine, timeout_s: float) -> None:
    busy_timeout_ms = int(min(timeout_s, 3600) * 1000)  # wait for another writer's lock, within the deadline

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (see module docstring)
        cursor = dbapi_conn.cursor()
        for pragma in (f"busy_timeout={busy_timeout_ms}", "foreign_keys=ON", "synchronous=NORMAL"):
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
    timeout_s: float = DEFAULT_TIMEOUT_S,
    connect_timeout_s: float | None = None,
) -> SqlStore:
    """Create the store for a configured URL (``None``: SQLite file under ``data_dir``).

    Opens no connection yet: the first ``begin``/``read``/``ping`` does, so a bad
    URL or a down server surfaces as ``StoreUnavailable`` there. ``timeout_s`` is
    the deadline of every unit of work (see the module docstring);
    ``connect_timeout_s`` (default: ``timeout_s``) bounds opening one connection.
    """
    url = resolve_database_url(database_url, data_dir)
    connect_s = min(connect_timeout_s or timeout_s, timeout_s)
    options: dict[str, Any] = {"json_serializer": _json_serializer, "json_deserializer": msgspec.json.decode}
    if url.startswith("postgresql"):
        options.update(
            pool_size=pool_size, max_overflow=pool_size, pool_timeout=timeout_s,
            pool_pre_ping=True,  # after a server restart, stale pooled connections are replaced, not used
            # command_timeout is only the backstop for work without a deadline (migrations): a unit's
            # own deadline is shorter and cancels the statement first.
            connect_args={"timeout": connect_s, "command_timeout": max(60.0, timeout_s),
                          "server_settings": {"application_name": "llmops-control"}},
        )
    else:
        options.update(connect_args={"timeout": timeout_s})
    return SqlStore(create_async_engine(url, **options), feed_mode=feed_mode, poll_interval_s=poll_interval_s,
                    timeout_s=timeout_s)

"""The ``Store`` seam: one relational schema, SQLite (default) or PostgreSQL.

Contract:

* ``begin()`` yields an ``AsyncConnection`` inside a write transaction. It commits
  when the block exits normally and rolls back when it raises, so a rejected
  request never leaves half a change behind. Writes are serialised per process
  on SQLite (one writer at a time is all SQLite allows anyway).
* ``read()`` yields a connection for queries; anything written through it is
  rolled back.
* Both translate driver failures at their boundary: connection loss becomes
  ``StoreUnavailable``, unique violations ``DuplicateKey``, other integrity
  errors ``ConstraintViolation``. Exceptions the caller raises inside the block
  pass through unchanged (after the rollback).
* Each ``begin()``/``read()`` block is one unit of work with one deadline
  (``timeout_s``; default the store's, ``math.inf`` for none, e.g. migrations):
  lock waits, connecting, every statement, commit and rollback count against
  it. Past it the connection is dropped and ``StoreUnavailable`` raised.
* ``changes`` is the store's ``ChangeFeed``; topics marked inside ``begin()`` are
  published after the commit, never for a rolled-back transaction.
* ``aclose()`` stops the feed and disposes of the pool; the store is unusable after.

Modules write SQLAlchemy Core statements against these connections, which is what
makes one schema run on both databases.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncConnection

if TYPE_CHECKING:
    from adapters.store.changes import ChangeFeed

__all__ = ["DB_FILENAME", "Dialect", "Store", "redact_url", "resolve_database_url"]

Dialect = Literal["sqlite", "postgresql"]
DB_FILENAME = "llmops.db"


@runtime_checkable
class Store(Protocol):
    dialect: Dialect
    changes: ChangeFeed

    @property
    def url(self) -> str:
        """The database URL with any password masked: safe to log."""
        ...

    def begin(self, *, timeout_s: float | None = None) -> AbstractAsyncContextManager[AsyncConnection]: ...

    def read(self, *, timeout_s: float | None = None) -> AbstractAsyncContextManager[AsyncConnection]: ...

    async def ping(self) -> None:
        """Round-trip to the database; raises ``StoreUnavailable`` when it cannot."""
        ...

    async def aclose(self) -> None: ...


def resolve_database_url(database_url: str | None, data_dir: str | Path) -> str:
    """Turn the configured URL into a SQLAlchemy async URL.

    ``None`` means the zero-set-up default: a SQLite file in ``data_dir`` (created
    if missing). ``postgres://``/``postgresql://`` select asyncpg, ``sqlite://`` aiosqlite;
    explicit ``+asyncpg``/``+aiosqlite`` drivers are kept. Anything else is a config error.
    """
    if database_url is None:
        directory = Path(data_dir).expanduser().resolve()
        directory.mkdir(parents=True, exist_ok=True)
        return f"sqlite+aiosqlite:///{directory / DB_FILENAME}"
    scheme, sep, rest = database_url.partition("://")
    if not sep:
        raise ValueError(f"database URL {redact_url(database_url)!r} has no scheme (postgresql:// or sqlite://)")
    scheme = scheme.lower()
    if scheme in ("postgres", "postgresql", "postgresql+asyncpg"):
        return f"postgresql+asyncpg://{rest}"
    if scheme in ("sqlite", "sqlite+aiosqlite"):
        path = rest.removeprefix("/")
        if path and path != ":memory:" and not path.startswith("file:"):
            Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite+aiosqlite://{rest}"
    raise ValueError(f"unsupported database URL scheme {scheme!r}: use postgresql:// or sqlite://")


def redact_url(url: str) -> str:
    """Mask the password so URLs can appear in logs and error messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # an unparseable URL must still never reach a log verbatim
        return "<unparseable database URL>"

"""The admin core's own tables (API keys, audit log) and their migrations (module name ``admin``).

``api_keys`` is read by nothing since dataplane migration 3 copied its rows into ``gateway_keys``, the one
key table (``adapters.dataplane``); it stays so that no key is ever lost by the move.

``*_v1`` definitions are frozen as migration 1 created them; queries use the live
``api_keys`` / ``audit_log`` tables. Change a live table only together with a new migration.

Migration 2 widens ``audit_log.request_id`` from 64 to 128 characters, the length
``adapters.request_id`` accepts from clients. Migration 3 adds ``console_sessions``, the web console's
signed-in sessions (``adapters.adminapi.console_sessions``).
"""

from __future__ import annotations

from sqlalchemy import Column, Index, Integer, LargeBinary, MetaData, String, Table
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.store import AutoId, Json, Migration, UtcDateTime, create_tables

__all__ = ["ADMIN_MIGRATIONS", "api_keys", "audit_log", "console_sessions"]


def _api_keys(meta: MetaData) -> Table:
    return Table(
        "api_keys", meta,
        Column("id", String(40), primary_key=True),
        Column("name", String(100), nullable=False),
        Column("role", String(16), nullable=False),
        Column("secret_sha256", String(64), nullable=False),
        Column("created_at", UtcDateTime, nullable=False),
        Column("created_by", String(100), nullable=False),
        Column("revoked_at", UtcDateTime),
        Column("revoked_by", String(100)),
    )


def _audit_log(meta: MetaData, request_id_chars: int = 128) -> Table:
    table = Table(
        "audit_log", meta,
        Column("id", AutoId, primary_key=True, autoincrement=True),
        Column("at", UtcDateTime, nullable=False),
        Column("actor_key_id", String(40)),
        Column("actor_name", String(100), nullable=False),
        Column("actor_role", String(16)),
        Column("action", String(100), nullable=False),
        Column("resource_type", String(50), nullable=False),
        Column("resource_id", String(200)),
        Column("outcome", String(10), nullable=False),  # success | denied
        Column("status_code", Integer),
        Column("request_id", String(request_id_chars)),
        Column("before", Json),
        Column("after", Json),
        Column("detail", String(500)),
    )
    Index("ix_audit_log_at", table.c.at)
    Index("ix_audit_log_actor", table.c.actor_key_id, table.c.at)
    Index("ix_audit_log_action", table.c.action, table.c.at)
    Index("ix_audit_log_resource", table.c.resource_type, table.c.resource_id, table.c.at)
    return table


def _console_sessions(meta: MetaData) -> Table:
    """One row per signed-in console session. ``id`` is the SHA-256 of the cookie's token (the token itself is
    never stored); ``sealed_key`` is the API key the session acts with, AES-GCM-sealed under a key derived from
    that token, so the table alone opens nothing."""
    table = Table(
        "console_sessions", meta,
        Column("id", String(64), primary_key=True),
        Column("key_id", String(40), nullable=False),
        Column("sealed_key", LargeBinary, nullable=False),
        Column("created_at", UtcDateTime, nullable=False),
        Column("expires_at", UtcDateTime, nullable=False),
        Column("seen_at", UtcDateTime, nullable=False),
    )
    Index("ix_console_sessions_expires", table.c.expires_at)
    Index("ix_console_sessions_key", table.c.key_id)
    return table


async def _widen_request_id(conn: AsyncConnection) -> None:
    # SQLite does not enforce VARCHAR lengths, so only PostgreSQL has anything to change.
    if conn.dialect.name == "postgresql":
        await conn.exec_driver_sql("ALTER TABLE audit_log ALTER COLUMN request_id TYPE VARCHAR(128)")


_v1 = MetaData()
ADMIN_MIGRATIONS = (
    Migration(1, "api keys and audit log", create_tables(_api_keys(_v1), _audit_log(_v1, request_id_chars=64))),
    Migration(2, "audit_log.request_id up to 128 characters", _widen_request_id),
    Migration(3, "console sessions", create_tables(_console_sessions(MetaData()))),
)

_live = MetaData()
api_keys = _api_keys(_live)
audit_log = _audit_log(_live)
console_sessions = _console_sessions(_live)

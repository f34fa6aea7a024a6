"""Data-plane tables and their migrations (migration namespace ``dataplane``).

The gateway writes and reads these; the control plane manages keys and teams in
them. Neither side owns the other, so the definitions live here and the host
runs ``DATAPLANE_MIGRATIONS`` with the core ones (``store``, ``admin``), before
any module's. As in ``adapters.adminapi.tables``, ``*_v1`` definitions are frozen
as migration 1 created them; change a live table only with a new migration.

``teams``
    One row per team: the unit of attribution, budgets and limits. ``name`` is what
    policies scope on (``policies.documents.Scope.teams``); it stays unique across
    deleted teams (``deleted_at`` is a tombstone). ``allowed_models`` (migration 3): JSON
    list of model globs, null for every model.
``gateway_keys`` (since migration 3: every key, admin and data plane)
    THE key table: admin keys (roles ``viewer``..``admin``) and data-plane keys (role
    ``inference``) are one model (``adapters.adminapi.rbac``); admin auth reads it per
    call, the gateway reads it from the ``keys`` snapshot. Only ``secret_sha256`` (hex of
    the SHA-256 of the key's secret part) is stored. ``roles``, ``allowed_routes`` and
    ``allowed_models`` are JSON lists (a null list: every route / model); ``limits`` is a
    JSON object shaped like ``policies.documents.Limits``. ``rotated_at``: the last new
    secret. Migration 3 copied every row of the admin core's ``api_keys`` here (same id,
    digest, role as ``roles: [role]``, revocation), into the ``default`` team
    (``DEFAULT_TEAM_ID``), which it created; ``api_keys`` stays, read by nothing.
``usage_records`` (migration 2 replaced the v1 table, which nothing had written to)
    One row per finished request, written in batches by the gateway's usage writer.
    ``record_id`` is minted by the gateway per request and is unique, so a replayed
    batch (spill file, retried insert) inserts nothing twice; ``request_id`` is the
    client-visible ``x-request-id``, which clients may reuse, hence not unique. ``team``
    is the team's name at request time (attribution survives renames and deletes).
    Token columns are 0 when absent. ``prompt_tokens`` is the whole prompt, cached
    reads and cache writes included (OpenAI's convention; adapters normalise other
    shapes), so cost = uncached input + cached reads + cache writes + completion, each
    at its own price, with no double counting. ``reasoning_tokens`` are part of
    ``completion_tokens``. ``estimated`` is true when the counts are not the
    upstream's (``usage_source`` says which). ``cost_usd`` is null when the model has no
    price; ``price_source`` says where a price came from (``config``, ``litellm``,
    ``gpu_hour``: allocated per hour in the rollups, so the row's own cost stays null).
    Migration 4 added ``experiment`` and ``episode_id`` (what the prompts plug-in set) and ``fallback``
    (served, or last tried, by another target than the first planned: experiments count these apart).
    Migration 5 added ``first_provider``: with ``fallback``, the first planned target's provider (it
    failed), so a serving canary whose attempt failed before stable answered is judged on that failure.
``feedback`` (migration 4)
    Outcomes clients attach through ``POST /v1/feedback`` to a request or an episode: a score, a label
    (boolean labels also as ``positive``) and a comment. ``experiment``/``variant`` are resolved from the
    rated request(s) when the row is written; ``key_id`` is the caller's, who may only rate its own.
``usage_rollups``
    Hourly sums per (hour, team, key, route, model, provider, variant, endpoint), kept
    in the same transaction as the rows they sum: cost reports read these, never scan
    ``usage_records``. Absent dimensions are stored as ``''`` (NULLs are distinct in
    unique keys). ``gpu_usd_per_hour`` is the hourly price of a GPU-hour-priced
    endpoint (0 otherwise); reports spread it over that hour's tokens.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    insert,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.store import AutoId, Json, Migration, UsdAmount, UtcDateTime, create_tables, utcnow

__all__ = [
    "DATAPLANE_MIGRATIONS",
    "DEFAULT_TEAM_ID",
    "ROLLUP_DIMENSIONS",
    "feedback",
    "gateway_keys",
    "teams",
    "usage_records",
    "usage_rollups",
]

DEFAULT_TEAM_ID = "team_default"
"""The team migration 3 created for keys without one: admin keys from ``api_keys``, ``/admin/keys``, the CLI."""

_ZERO = text("0")


def _teams(meta: MetaData, *, version: int = 3) -> Table:
    table = Table(
        "teams", meta,
        Column("id", String(40), primary_key=True),
        Column("name", String(64), nullable=False, unique=True),
        Column("description", String(500)),
        Column("budget_usd", UsdAmount),
        Column("budget_period", String(16)),  # daily | weekly | monthly; null with no budget
        Column("limits", Json),
        Column("created_at", UtcDateTime, nullable=False),
        Column("updated_at", UtcDateTime, nullable=False),
        Column("deleted_at", UtcDateTime),
    )
    if version >= 3:
        table.append_column(Column("allowed_models", Json))
    return table


def _gateway_keys(meta: MetaData, *, version: int = 3) -> Table:
    table = Table(
        "gateway_keys", meta,
        Column("id", String(40), primary_key=True),
        Column("team_id", String(40), ForeignKey("teams.id"), nullable=False),
        Column("name", String(100), nullable=False),
        Column("secret_sha256", String(64), nullable=False, unique=True),
        Column("roles", Json, nullable=False),
        Column("allowed_routes", Json),
        Column("limits", Json),
        Column("budget_usd", UsdAmount),
        Column("budget_period", String(16)),
        Column("created_at", UtcDateTime, nullable=False),
        Column("created_by", String(100), nullable=False),
        Column("expires_at", UtcDateTime),
        Column("revoked_at", UtcDateTime),
        Column("revoked_by", String(100)),
    )
    if version >= 3:
        table.append_column(Column("allowed_models", Json))
        table.append_column(Column("rotated_at", UtcDateTime))
    Index("ix_gateway_keys_team", table.c.team_id)
    return table


def _usage_records_v1(meta: MetaData) -> Table:
    table = Table(
        "usage_records", meta,
        Column("id", AutoId, primary_key=True, autoincrement=True),
        Column("request_id", String(128), nullable=False, unique=True),
        Column("ts", UtcDateTime, nullable=False),
        Column("route", String(200), nullable=False),
        Column("model", String(200), nullable=False),
        Column("provider", String(100), nullable=False),
        Column("key_id", String(40)),
        Column("team", String(64)),
        Column("stream", Boolean, nullable=False, server_default=text("false")),
        Column("prompt_tokens", Integer, nullable=False, server_default=_ZERO),
        Column("completion_tokens", Integer, nullable=False, server_default=_ZERO),
        Column("cached_read_tokens", Integer, nullable=False, server_default=_ZERO),
        Column("cache_write_tokens", Integer, nullable=False, server_default=_ZERO),
        Column("reasoning_tokens", Integer, nullable=False, server_default=_ZERO),
        Column("cost_usd", UsdAmount),
        Column("status", Integer, nullable=False),
        Column("error", String(200)),
        Column("latency_s", Float, nullable=False),
        Column("ttft_s", Float),
        Column("attempts", Integer, nullable=False, server_default=text("1")),
        Column("usage_source", String(16), nullable=False),  # adapters.usage.UsageSource
        Column("estimated", Boolean, nullable=False, server_default=text("false")),
    )
    Index("ix_usage_records_ts", table.c.ts)
    Index("ix_usage_records_team_ts", table.c.team, table.c.ts)
    Index("ix_usage_records_key_ts", table.c.key_id, table.c.ts)
    Index("ix_usage_records_model_ts", table.c.model, table.c.ts)
    return table


def _usage_records(meta: MetaData) -> Table:
    table = Table(
        "usage_records", meta,
        Column("id", AutoId, primary_key=True, autoincrement=True),
        Column("record_id", String(32), nullable=False, unique=True),
        Column("request_id", String(128), nullable=False),
        Column("ts", UtcDateTime, nullable=False),
        Column("endpoint", String(16), nullable=False),
        Column("route", String(200), nullable=False),
        Column("model", String(200), nullable=False),
        Column("provider", String(100), nullable=False),
        Column("variant", String(64)),
        Column("key_id", String(40)),
        Column("team", String(64)),
        Column("stream", Boolean, nullable=False, server_default=text("false")),
        Column("prompt_tokens", Integer, nullable=False, server_default=_ZERO),
        Column("completion_tokens", Integer, nullable=False, server_default=_ZERO),
        Column("cached_read_tokens", Integer, nullable=False, server_default=_ZERO),
        Column("cache_write_tokens", Integer, nullable=False, server_default=_ZERO),
        Column("reasoning_tokens", Integer, nullable=False, server_default=_ZERO),
        Column("cost_usd", UsdAmount),
        Column("price_source", String(16)),
        Column("status", Integer, nullable=False),
        Column("error", String(200)),
        Column("latency_s", Float, nullable=False),
        Column("ttft_s", Float),
        Column("attempts", Integer, nullable=False, server_default=text("1")),
        Column("usage_source", String(16), nullable=False),  # adapters.usage.UsageSource
        Column("estimated", Boolean, nullable=False, server_default=text("false")),
    )
    Index("ix_usage_records_ts", table.c.ts)
    Index("ix_usage_records_request_id", table.c.request_id)
    Index("ix_usage_records_team_ts", table.c.team, table.c.ts)
    Index("ix_usage_records_key_ts", table.c.key_id, table.c.ts)
    return table


_USAGE_V4_COLUMNS = (("experiment", "VARCHAR(64)"), ("episode_id", "VARCHAR(128)"))


def _usage_records_v4(table: Table) -> Table:
    """Migration 4's columns on the live definition: the experiment, the episode and whether it fell back."""
    table.append_column(Column("experiment", String(64)))
    table.append_column(Column("episode_id", String(128)))
    table.append_column(Column("fallback", Boolean, nullable=False, server_default=text("false")))
    # Partial: most requests are in no experiment and name no episode, and cost no index update for them.
    in_experiment, in_episode = table.c.experiment.is_not(None), table.c.episode_id.is_not(None)
    Index("ix_usage_records_experiment_ts", table.c.experiment, table.c.ts,
          sqlite_where=in_experiment, postgresql_where=in_experiment)
    Index("ix_usage_records_episode", table.c.episode_id, sqlite_where=in_episode, postgresql_where=in_episode)
    return table


def _usage_records_v5(table: Table) -> Table:
    """Migration 5's column on the live definition: the provider first planned, set only on fallbacks."""
    table.append_column(Column("first_provider", String(100)))
    return table


async def _first_provider(conn: AsyncConnection) -> None:
    # Nullable with no default: PostgreSQL and SQLite add it without rewriting the table.
    await conn.execute(text("ALTER TABLE usage_records ADD COLUMN first_provider VARCHAR(100)"))


_UNUSED_USAGE_INDEXES = ("ix_usage_records_team_ts", "ix_usage_records_key_ts")


def _usage_records_v6(table: Table) -> Table:
    """Migration 6 on the live definition: without the (team, ts) and (key_id, ts) indexes. Nothing
    reads records by team or key (reports read ``usage_rollups``), and every stored record paid two
    index insertions for them, on the embedded default inside the gateway's own process."""
    for index in [i for i in table.indexes if i.name in _UNUSED_USAGE_INDEXES]:
        table.indexes.discard(index)
    return table


async def _drop_unused_usage_indexes(conn: AsyncConnection) -> None:
    for name in _UNUSED_USAGE_INDEXES:
        await conn.execute(text(f"DROP INDEX IF EXISTS {name}"))


def _feedback(meta: MetaData) -> Table:
    table = Table(
        "feedback", meta,
        Column("id", AutoId, primary_key=True, autoincrement=True),
        Column("feedback_id", String(32), nullable=False, unique=True),  # minted by the gateway
        Column("ts", UtcDateTime, nullable=False),
        Column("request_id", String(128)),  # one of request_id / episode_id is set
        Column("episode_id", String(128)),
        Column("experiment", String(64)),  # resolved from the request(s) when written
        Column("variant", String(64)),
        Column("key_id", String(40)),  # who gave it (a key may only rate its own requests)
        Column("team", String(64)),
        Column("score", Float),
        Column("label", String(100)),  # a boolean label is stored as "true" / "false"
        Column("positive", Boolean),  # a boolean label's value (null for categorical labels)
        Column("comment", String(4000)),
    )
    Index("ix_feedback_experiment_ts", table.c.experiment, table.c.ts)
    Index("ix_feedback_request_id", table.c.request_id)
    Index("ix_feedback_episode_id", table.c.episode_id)
    return table


async def _experiments_and_feedback(conn: AsyncConnection) -> None:
    for column, kind in _USAGE_V4_COLUMNS:
        await conn.execute(text(f"ALTER TABLE usage_records ADD COLUMN {column} {kind}"))
    await conn.execute(text("ALTER TABLE usage_records ADD COLUMN fallback BOOLEAN NOT NULL DEFAULT false"))
    await conn.execute(text("CREATE INDEX ix_usage_records_experiment_ts ON usage_records (experiment, ts) "
                            "WHERE experiment IS NOT NULL"))
    await conn.execute(text("CREATE INDEX ix_usage_records_episode ON usage_records (episode_id) "
                            "WHERE episode_id IS NOT NULL"))
    await create_tables(_feedback(MetaData()))(conn)


ROLLUP_DIMENSIONS = ("team", "key_id", "route", "model", "provider", "variant", "endpoint")
"""The rollups' grouping columns besides ``hour``; ``''`` stands for absent."""


def _usage_rollups(meta: MetaData) -> Table:
    table = Table(
        "usage_rollups", meta,
        Column("id", AutoId, primary_key=True, autoincrement=True),
        Column("hour", UtcDateTime, nullable=False),  # the start of the UTC hour
        Column("team", String(64), nullable=False),
        Column("key_id", String(40), nullable=False),
        Column("route", String(200), nullable=False),
        Column("model", String(200), nullable=False),
        Column("provider", String(100), nullable=False),
        Column("variant", String(64), nullable=False),
        Column("endpoint", String(16), nullable=False),
        Column("requests", BigInteger, nullable=False, server_default=_ZERO),
        Column("errors", BigInteger, nullable=False, server_default=_ZERO),  # status >= 400
        Column("unpriced_requests", BigInteger, nullable=False, server_default=_ZERO),
        Column("estimated_requests", BigInteger, nullable=False, server_default=_ZERO),
        Column("prompt_tokens", BigInteger, nullable=False, server_default=_ZERO),
        Column("completion_tokens", BigInteger, nullable=False, server_default=_ZERO),
        Column("cached_read_tokens", BigInteger, nullable=False, server_default=_ZERO),
        Column("cache_write_tokens", BigInteger, nullable=False, server_default=_ZERO),
        Column("reasoning_tokens", BigInteger, nullable=False, server_default=_ZERO),
        Column("cost_usd", UsdAmount, nullable=False, server_default=_ZERO),  # sum over priced rows
        Column("gpu_usd_per_hour", UsdAmount, nullable=False, server_default=_ZERO),
        Column("latency_s_sum", Float, nullable=False, server_default=_ZERO),
        UniqueConstraint("hour", *ROLLUP_DIMENSIONS, name="uq_usage_rollups_key"),
    )
    Index("ix_usage_rollups_team_hour", table.c.team, table.c.hour)
    return table


async def _replace_unused_usage_v1(conn: AsyncConnection) -> None:
    """v1's usage table keyed rows by the client's request id; no release wrote to it. Refuse
    rather than drop rows if something did."""
    if (await conn.execute(text("SELECT count(*) FROM usage_records"))).scalar():
        raise RuntimeError("usage_records (v1) holds rows: migrate them by hand before dataplane v2")
    await conn.execute(text("DROP TABLE usage_records"))
    v2 = MetaData()
    await create_tables(_usage_records(v2), _usage_rollups(v2))(conn)


# The admin core's key table as its migration 1 created it (frozen here: adapters.adminapi imports this module).
_api_keys_v1 = Table(
    "api_keys", MetaData(),
    Column("id", String(40), primary_key=True),
    Column("name", String(100), nullable=False),
    Column("role", String(16), nullable=False),
    Column("secret_sha256", String(64), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("created_by", String(100), nullable=False),
    Column("revoked_at", UtcDateTime),
    Column("revoked_by", String(100)),
)


async def _one_key_table(conn: AsyncConnection) -> None:
    """gateway_keys becomes every key's table: new columns, the default team, and every api_keys row copied.

    Nothing is dropped: ``api_keys`` keeps its rows (read by nothing from now on), so the copy loses nothing
    even if this migration is ever investigated by hand. Runs after the admin namespace's migrations, so
    ``api_keys`` exists.
    """
    json_type = Json.compile(dialect=conn.dialect)
    time_type = UtcDateTime().compile(dialect=conn.dialect)
    for table, column, kind in (("teams", "allowed_models", json_type), ("gateway_keys", "allowed_models", json_type),
                                ("gateway_keys", "rotated_at", time_type)):
        await conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} {kind}"))
    v3 = MetaData()
    team_table, key_table = _teams(v3), _gateway_keys(v3)
    now = utcnow()
    taken = (await conn.execute(select(team_table.c.id).where(team_table.c.name == "default"))).first()
    await conn.execute(insert(team_table).values(
        id=DEFAULT_TEAM_ID, name="default" if taken is None else "default-keys", created_at=now, updated_at=now,
        description="Keys created without a team: /admin/keys, the CLI, and admin keys from before one key table"))
    existing = set((await conn.execute(select(key_table.c.id))).scalars())
    rows = [r for r in (await conn.execute(select(_api_keys_v1))).all() if r.id not in existing]
    if rows:
        await conn.execute(insert(key_table), [
            {"id": r.id, "team_id": DEFAULT_TEAM_ID, "name": r.name, "secret_sha256": r.secret_sha256,
             "roles": [r.role], "created_at": r.created_at, "created_by": r.created_by,
             "revoked_at": r.revoked_at, "revoked_by": r.revoked_by} for r in rows])


_v1 = MetaData()
DATAPLANE_MIGRATIONS = (
    Migration(1, "teams, gateway keys and usage records",
              create_tables(_teams(_v1, version=1), _gateway_keys(_v1, version=1), _usage_records_v1(_v1))),
    Migration(2, "usage records keyed by a gateway-minted record id; hourly usage rollups", _replace_unused_usage_v1),
    Migration(3, "one key table: admin keys copied from api_keys into gateway_keys; allowed models; default team",
              _one_key_table),
    Migration(4, "experiments: usage records carry experiment, episode and fallback; feedback",
              _experiments_and_feedback),
    Migration(5, "usage records carry the first planned provider of a request that fell back", _first_provider),
    Migration(6, "usage records lose their unused (team, ts) and (key_id, ts) indexes", _drop_unused_usage_indexes),
)

_live = MetaData()
teams = _teams(_live)
gateway_keys = _gateway_keys(_live)
usage_records = _usage_records_v6(_usage_records_v5(_usage_records_v4(_usage_records(_live))))
feedback = _feedback(_live)
usage_rollups = _usage_rollups(_live)

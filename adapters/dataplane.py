"""Data-plane tables and their migrations (migration namespace ``dataplane``).

The gateway writes and reads these; the control plane manages keys and teams in
them. Neither side owns the other, so the definitions live here and the host
runs ``DATAPLANE_MIGRATIONS`` with the core ones (``store``, ``admin``), before
any module's. As in ``adapters.adminapi.tables``, ``*_v1`` definitions are frozen
as migration 1 created them; change a live table only with a new migration.

``teams``
    One row per team: the unit of attribution, budgets and limits. ``name`` is what
    policies scope on (``policies.documents.Scope.teams``).
``gateway_keys``
    Data-plane API keys (``Authorization: Bearer`` on ``/v1/*``), distinct from the
    admin keys in ``api_keys``. Only ``secret_sha256`` is stored. ``roles`` and
    ``allowed_routes`` are JSON lists (``allowed_routes`` null: every route);
    ``limits`` is a JSON object shaped like ``policies.documents.Limits``.
``usage_records``
    One row per finished request, written in batches by the usage worker;
    ``request_id`` is unique, so a retried batch inserts nothing twice. ``team`` is the
    team's name at request time (attribution survives renames and deletes). Token
    columns are 0 when absent; ``estimated`` is true when the counts are not the
    upstream's (``usage_source`` says which: counted or estimated). ``cost_usd`` is
    null when the model has no price.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Column, Float, ForeignKey, Index, Integer, MetaData, String, Table, text

from adapters.store import AutoId, Json, Migration, UsdAmount, UtcDateTime, create_tables

__all__ = ["DATAPLANE_MIGRATIONS", "gateway_keys", "teams", "usage_records"]

_ZERO = text("0")


def _teams(meta: MetaData) -> Table:
    return Table(
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


def _gateway_keys(meta: MetaData) -> Table:
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
    Index("ix_gateway_keys_team", table.c.team_id)
    return table


def _usage_records(meta: MetaData) -> Table:
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


_v1 = MetaData()
DATAPLANE_MIGRATIONS = (
    Migration(1, "teams, gateway keys and usage records",
              create_tables(_teams(_v1), _gateway_keys(_v1), _usage_records(_v1))),
)

_live = MetaData()
teams = _teams(_live)
gateway_keys = _gateway_keys(_live)
usage_records = _usage_records(_live)

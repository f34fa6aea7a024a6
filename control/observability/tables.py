"""Observability's tables (migration namespace ``observability``): a daily summary of ``usage_rollups``.

Hourly rollups are still about one row per (hour, key, route, target, variant): with 500 keys that is
~1M rows a month, more than SQLite groups in a second. So reports read whole UTC days from
``observability_daily_usage`` (about 24x fewer rows) and only the rest of a window from the hourly rows.

``observability_daily_usage``
    Sums of ``usage_rollups`` per (UTC day, the seven dimensions, ``gpu_priced``), with each GPU-hour
    provider's hourly price already allocated to its rows (``gpu_cost_usd``) and its hours as
    micro provider-hours (``gpu_micro_hours``; reports multiply by the provider's GPUs). It is derived
    data: rebuilt per day by ``daily.refresh_days`` from ``usage_rollups`` alone.
``observability_hourly_gpu`` (migration 3)
    Each GPU-hour-priced rollup row's allocated part of its provider-hour (``gpu_cost_usd``, and
    ``gpu_micro_hours`` in micro provider-hours), per (hour, provider, team, key, route, model, variant,
    endpoint), rebuilt with the day's summary. Hourly reads of summarised days sum these in SQL instead of
    fetching every GPU-priced rollup row and splitting each hour in Python (seconds over a month).
``observability_dirty_days``
    Days whose rollups changed since their summary was built. Triggers on ``usage_rollups`` (insert,
    update, delete; whoever writes: the usage writer, ``rebuild_rollups``, a hand fix) mark them, in
    the writer's own transaction, so a report never reads a stale summary: a dirty day is read from
    the hourly rows until the refresher rebuilds it. Migration 1 marks every day already there.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, MetaData, SmallInteger, String, Table, UniqueConstraint, text
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.dataplane import ROLLUP_DIMENSIONS
from adapters.store import AutoId, Migration, UsdAmount, UtcDateTime, create_tables

__all__ = ["GPU_DIMENSIONS", "OBSERVABILITY_MIGRATIONS", "daily_usage", "dirty_days", "hourly_gpu"]

_ZERO = text("0")
_WIDTHS = {"team": 64, "key_id": 40, "route": 200, "model": 200, "provider": 100, "variant": 64, "endpoint": 16}
SUMMED = ("requests", "errors", "unpriced_requests", "estimated_requests", "prompt_tokens", "completion_tokens",
          "cached_read_tokens", "cache_write_tokens", "reasoning_tokens")


def _daily_usage(meta: MetaData) -> Table:
    table = Table(
        "observability_daily_usage", meta,
        Column("id", AutoId, primary_key=True, autoincrement=True),
        Column("day", UtcDateTime, nullable=False),  # the start of the UTC day
        *[Column(dim, String(_WIDTHS[dim]), nullable=False) for dim in ROLLUP_DIMENSIONS],
        Column("gpu_priced", SmallInteger, nullable=False),  # 1: rows of a GPU-hour-priced provider
        *[Column(name, BigInteger, nullable=False, server_default=_ZERO) for name in SUMMED],
        Column("cost_usd", UsdAmount, nullable=False, server_default=_ZERO),  # priced per token
        Column("gpu_cost_usd", UsdAmount, nullable=False, server_default=_ZERO),  # allocated GPU-hour cost
        Column("gpu_micro_hours", BigInteger, nullable=False, server_default=_ZERO),  # provider-hours x 10^6
        UniqueConstraint("day", *ROLLUP_DIMENSIONS, "gpu_priced", name="uq_observability_daily_usage"),
    )
    Index("ix_observability_daily_usage_team_day", table.c.team, table.c.day)
    return table


GPU_DIMENSIONS = ("provider", "team", "key_id", "route", "model", "variant", "endpoint")


def _hourly_gpu(meta: MetaData) -> Table:
    table = Table(
        "observability_hourly_gpu", meta,
        Column("id", AutoId, primary_key=True, autoincrement=True),
        Column("hour", UtcDateTime, nullable=False),
        *[Column(dim, String(_WIDTHS[dim]), nullable=False) for dim in GPU_DIMENSIONS],
        Column("gpu_cost_usd", UsdAmount, nullable=False, server_default=_ZERO),
        Column("gpu_micro_hours", BigInteger, nullable=False, server_default=_ZERO),
        UniqueConstraint("hour", *GPU_DIMENSIONS, name="uq_observability_hourly_gpu"),
    )
    return table


def _dirty_days(meta: MetaData) -> Table:
    return Table("observability_dirty_days", meta, Column("day", UtcDateTime, primary_key=True))


# The day of an hour, as each database stores UtcDateTime: SQLite text "YYYY-MM-DD HH:MM:SS.ffffff" (UTC),
# PostgreSQL timestamptz.
_SQLITE_DAY = "substr({row}.hour, 1, 10) || ' 00:00:00.000000'"
# Migration 1's SQLite triggers, kept as they were: INSERT OR IGNORE in a trigger body takes the outer
# statement's conflict policy instead, and the usage writer's upsert (its DO UPDATE path) made it ABORT.
_SQLITE_TRIGGERS_V1 = [
    f"""CREATE TRIGGER observability_rollups_{event.lower()} AFTER {event} ON usage_rollups BEGIN
        INSERT OR IGNORE INTO observability_dirty_days (day) VALUES ({_SQLITE_DAY.format(row=row)});
        END"""
    for event, row in (("INSERT", "NEW"), ("UPDATE", "NEW"), ("DELETE", "OLD"))
] + [f"""CREATE TRIGGER observability_rollups_update_old AFTER UPDATE OF hour ON usage_rollups BEGIN
        INSERT OR IGNORE INTO observability_dirty_days (day) VALUES ({_SQLITE_DAY.format(row="OLD")});
        END"""]
_SQLITE_TRIGGER_NAMES = ("insert", "update", "delete", "update_old")
# Since migration 2: the WHEN clause skips a day already marked, so the INSERT never conflicts, whatever
# policy the writer's statement imposes (and an already-dirty day costs one index probe per row).
_SQLITE_TRIGGERS = [
    f"""CREATE TRIGGER observability_rollups_{name} AFTER {event} ON usage_rollups
        WHEN NOT EXISTS (SELECT 1 FROM observability_dirty_days WHERE day = {_SQLITE_DAY.format(row=row)})
        BEGIN INSERT INTO observability_dirty_days (day) VALUES ({_SQLITE_DAY.format(row=row)}); END"""
    for name, event, row in (("insert", "INSERT", "NEW"), ("update", "UPDATE", "NEW"), ("delete", "DELETE", "OLD"),
                             ("update_old", "UPDATE OF hour", "OLD"))
]

_PG_MARK = """CREATE FUNCTION observability_mark_{name}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO observability_dirty_days (day)
    SELECT DISTINCT timezone('UTC', date_trunc('day', timezone('UTC', hour))) FROM {rows}
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$"""
# Statement-level triggers with transition tables: one small INSERT per writer statement, not per row.
_PG_TRIGGERS = [
    _PG_MARK.format(name="new", rows="new_rows"),
    _PG_MARK.format(name="old", rows="old_rows"),
    _PG_MARK.format(name="both", rows="(SELECT hour FROM new_rows UNION SELECT hour FROM old_rows) AS changed"),
    """CREATE TRIGGER observability_rollups_insert AFTER INSERT ON usage_rollups
       REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION observability_mark_new()""",
    """CREATE TRIGGER observability_rollups_update AFTER UPDATE ON usage_rollups
       REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT
       EXECUTE FUNCTION observability_mark_both()""",
    """CREATE TRIGGER observability_rollups_delete AFTER DELETE ON usage_rollups
       REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION observability_mark_old()""",
]


async def _create_v1(conn: AsyncConnection) -> None:
    meta = MetaData()
    await create_tables(_daily_usage(meta), _dirty_days(meta))(conn)
    for statement in (_PG_TRIGGERS if conn.dialect.name == "postgresql" else _SQLITE_TRIGGERS_V1):
        await conn.execute(text(statement))
    day = ("timezone('UTC', date_trunc('day', timezone('UTC', hour)))" if conn.dialect.name == "postgresql"
           else "substr(hour, 1, 10) || ' 00:00:00.000000'")
    await conn.execute(text(f"INSERT INTO observability_dirty_days (day) SELECT DISTINCT {day} FROM usage_rollups"))


async def _sqlite_triggers_v2(conn: AsyncConnection) -> None:
    if conn.dialect.name != "sqlite":
        return  # PostgreSQL's ON CONFLICT DO NOTHING in the trigger function was never affected
    for name in _SQLITE_TRIGGER_NAMES:
        await conn.execute(text(f"DROP TRIGGER IF EXISTS observability_rollups_{name}"))
    for statement in _SQLITE_TRIGGERS:
        await conn.execute(text(statement))


async def _hourly_gpu_v3(conn: AsyncConnection) -> None:
    """The table, and every day with GPU-hour-priced rows marked dirty so the refresher fills it."""
    await create_tables(_hourly_gpu(MetaData()))(conn)
    if conn.dialect.name == "postgresql":
        await conn.execute(text(
            "INSERT INTO observability_dirty_days (day) SELECT DISTINCT timezone('UTC', date_trunc('day', "
            "timezone('UTC', hour))) FROM usage_rollups WHERE gpu_usd_per_hour > 0 ON CONFLICT DO NOTHING"))
    else:
        await conn.execute(text(
            "INSERT OR IGNORE INTO observability_dirty_days (day) SELECT DISTINCT substr(hour, 1, 10) || "
            "' 00:00:00.000000' FROM usage_rollups WHERE gpu_usd_per_hour > 0"))


OBSERVABILITY_MIGRATIONS = (
    Migration(1, "daily usage summary of usage_rollups, kept exact by dirty-day triggers", _create_v1),
    Migration(2, "SQLite dirty-day triggers that never conflict under the usage writer's upsert",
              _sqlite_triggers_v2),
    Migration(3, "hourly GPU-hour cost allocations of summarised days", _hourly_gpu_v3),
)

_live = MetaData()
daily_usage = _daily_usage(_live)
dirty_days = _dirty_days(_live)
hourly_gpu = _hourly_gpu(_live)

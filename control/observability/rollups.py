"""Ops helper: recompute ``usage_rollups`` from ``usage_records`` for a window (after manual fixes, for benchmarks).

``rebuild_rollups(store, start, end)`` deletes the rollups of every hour in ``[start, end)`` (widened to
whole hours) and inserts them again with one ``INSERT ... SELECT ... GROUP BY`` over the records. It
works a day at a time (``chunk``), one transaction each, so no statement runs long (asyncpg's command
timeout is a minute) and the usage writer waits for one chunk at most. It uses the writer's rules
(``adapters/usage_store.py``): absent dimensions are ``''``, an error is ``status >= 400``, a request is
unpriced when its cost is null and it was not GPU-hour priced (``price_source`` ``gpu_hour``), estimated
when ``estimated`` is set.

The records do not keep a GPU-hour-priced provider's hourly price, so it comes from ``gpu_usd_per_hour``
(provider -> $ per hour, i.e. ``usd_per_gpu_hour`` x ``gpus`` of the gateway's ``pricing.gpu_hours``) or,
for providers not named there, from the rollups being replaced (per hour and provider).

On PostgreSQL the rollups table is locked against the usage writer (``SHARE ROW EXCLUSIVE``) for each
chunk's transaction: a writer batch committed before the lock is counted from its records, one still open waits
and adds its increments after the rebuild commits, so nothing is counted twice or lost. SQLite allows one
writer at a time anyway.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal,
    literal_column,
    select,
    text,
    update,
)

from adapters.dataplane import ROLLUP_DIMENSIONS, usage_records, usage_rollups
from adapters.store import Store, UsdAmount

__all__ = ["rebuild_rollups"]

_u = usage_records
_r = usage_rollups


def _floor_hour(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _ceil_hour(at: datetime) -> datetime:
    floor = _floor_hour(at)
    return floor if floor == at.astimezone(UTC) else floor + timedelta(hours=1)


def _hour_of_ts(store: Store) -> ColumnElement[Any]:
    if store.dialect == "sqlite":  # the text format UtcDateTime stores, cut to the hour
        return func.strftime(literal_column("'%Y-%m-%d %H:00:00.000000'"), _u.c.ts)
    utc: ColumnElement[Any] = literal_column("'UTC'")
    return func.timezone(utc, func.date_trunc(literal_column("'hour'"), func.timezone(utc, _u.c.ts)))


def _count(condition: ColumnElement[bool]) -> ColumnElement[Any]:
    return func.sum(case((condition, 1), else_=0))


async def rebuild_rollups(store: Store, start: datetime, end: datetime, *,
                          gpu_usd_per_hour: Mapping[str, Decimal] | None = None,
                          chunk: timedelta = timedelta(days=1), timeout_s: float = 300.0) -> int:
    """Replace the rollups of ``[start, end)`` (whole UTC hours) with sums of the records, ``chunk`` at a time
    (each within ``timeout_s``); returns the rollup rows written."""
    if chunk < timedelta(hours=1):
        raise ValueError("chunk must be at least an hour")
    written, at, end_at = 0, _floor_hour(start), _ceil_hour(end)
    while at < end_at:
        upto = min(_floor_hour(at + chunk), end_at)
        written += await _rebuild(store, at, upto, dict(gpu_usd_per_hour or {}), timeout_s)
        at = upto
    return written


async def _rebuild(store: Store, begin_at: datetime, end_at: datetime, prices: dict[str, Decimal],
                   timeout_s: float) -> int:
    hour = _hour_of_ts(store)
    # Constants are literal SQL so the SELECT and GROUP BY expressions render alike (PostgreSQL compares text).
    dims = {dim: func.coalesce(_u.c[dim], literal_column("''")) for dim in ROLLUP_DIMENSIONS}
    gpu_price: ColumnElement[Any] = literal_column("0")
    if prices:
        gpu_price = case(*[(_u.c.provider == p, literal(price, UsdAmount)) for p, price in sorted(prices.items())],
                         else_=literal_column("0"))
    unpriced = and_(_u.c.cost_usd.is_(None), func.coalesce(_u.c.price_source, "") != "gpu_hour")
    sums = select(
        hour.label("hour"), *[expr.label(dim) for dim, expr in dims.items()],
        func.count().label("requests"),
        _count(_u.c.status >= 400).label("errors"),
        _count(unpriced).label("unpriced_requests"),
        _count(_u.c.estimated.is_(True)).label("estimated_requests"),
        *[func.sum(_u.c[c]).label(c) for c in ("prompt_tokens", "completion_tokens", "cached_read_tokens",
                                               "cache_write_tokens", "reasoning_tokens")],
        func.coalesce(func.sum(_u.c.cost_usd), literal_column("0")).label("cost_usd"),
        func.max(gpu_price).label("gpu_usd_per_hour"),
        func.sum(_u.c.latency_s).label("latency_s_sum"),
    ).where(_u.c.ts >= begin_at, _u.c.ts < end_at).group_by(hour, *dims.values())
    columns = ["hour", *ROLLUP_DIMENSIONS, "requests", "errors", "unpriced_requests", "estimated_requests",
               "prompt_tokens", "completion_tokens", "cached_read_tokens", "cache_write_tokens", "reasoning_tokens",
               "cost_usd", "gpu_usd_per_hour", "latency_s_sum"]
    in_window = and_(_r.c.hour >= begin_at, _r.c.hour < end_at)
    async with store.begin(timeout_s=timeout_s) as conn:
        if store.dialect == "postgresql":
            await conn.execute(text("LOCK TABLE usage_rollups IN SHARE ROW EXCLUSIVE MODE"))
        named = [_r.c.provider.not_in(prices)] if prices else []
        kept = (await conn.execute(
            select(_r.c.hour, _r.c.provider, func.max(_r.c.gpu_usd_per_hour).label("price"))
            .where(in_window, _r.c.gpu_usd_per_hour > 0, *named)
            .group_by(_r.c.hour, _r.c.provider))).all()
        await conn.execute(delete(_r).where(in_window))
        written = (await conn.execute(insert(_r).from_select(columns, sums))).rowcount
        if kept:
            await conn.execute(
                update(_r).where(_r.c.hour == bindparam("at"), _r.c.provider == bindparam("name"))
                .values(gpu_usd_per_hour=bindparam("price")),
                [{"at": row.hour, "name": row.provider, "price": row.price} for row in kept])
    return int(written)

"""Keeping the daily summary (``tables.daily_usage``) in step with ``usage_rollups``.

``refresh_days(store, days)`` rebuilds the summaries of ``days`` from the hourly rollups, one
transaction per day: unmark the day, delete its summary rows, insert the new sums (GPU-hour cost
allocated per hourly row, as reports do). ``refresh_dirty`` does it for the days the triggers marked,
once a day has been over for ``grace_s`` (until then reports read it from the hourly rows anyway, and the
writer would only mark it again). ``DailyRefresher`` runs that every ``refresh_interval_s`` in the
module's lifespan.

Races cannot leave a stale summary: a writer that changes a day's rollups while its summary is being
rebuilt marks the day again, in its own transaction (on PostgreSQL it waits for the rebuild's delete of
the mark to commit, then inserts it); several control planes refreshing the same day serialise on that
row, and the later one finds it gone and skips the day.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, case, delete, func, insert, literal_column, select, type_coerce
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.dataplane import ROLLUP_DIMENSIONS, usage_rollups
from adapters.store import Store, StoreError
from control.observability.allocation import allocate_hours
from control.observability.reports import GPU_KEY, as_utc, gpu_rows
from control.observability.tables import SUMMED, daily_usage, dirty_days, hourly_gpu

__all__ = ["DailyRefresher", "refresh_days", "refresh_dirty"]

log = logging.getLogger("llmops.observability")
DAY = timedelta(days=1)
_r = usage_rollups
# Literal constants: the same expression appears in SELECT and GROUP BY (see reports._day).
_GPU_PRICED = case((_r.c.gpu_usd_per_hour > literal_column("0"), literal_column("1")), else_=literal_column("0"))


async def refresh_days(store: Store, days: Iterable[datetime], *, only_dirty: bool = False,
                       timeout_s: float = 300.0) -> int:
    """Rebuild the summaries of ``days`` (UTC midnights); ``only_dirty``: skip days no longer marked
    (another refresher took them). Returns how many days were rebuilt."""
    done = 0
    for day in sorted(set(days), reverse=True):  # newest first: recent days are the ones reports ask for
        async with store.begin(timeout_s=timeout_s) as conn:
            claimed = (await conn.execute(delete(dirty_days).where(dirty_days.c.day == day))).rowcount
            if only_dirty and not claimed:
                continue
            await conn.execute(delete(daily_usage).where(daily_usage.c.day == day))
            await conn.execute(delete(hourly_gpu).where(hourly_gpu.c.hour >= day, hourly_gpu.c.hour < day + DAY))
            rows, gpu = await _sums(conn, day)
            if rows:
                await conn.execute(insert(daily_usage), rows)
            if gpu:
                await conn.execute(insert(hourly_gpu), gpu)
        done += 1
    return done


async def _sums(conn: AsyncConnection, day: datetime) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The day's summary rows and its hourly GPU allocation rows."""
    keys = [*[_r.c[dim] for dim in ROLLUP_DIMENSIONS], _GPU_PRICED.label("gpu_priced")]
    statement = (select(*keys, *[func.sum(_r.c[name]).label(name) for name in SUMMED],
                        type_coerce(func.sum(_r.c.cost_usd), BigInteger).label("cost_nano"))
                 .where(_r.c.hour >= day, _r.c.hour < day + DAY)
                 .group_by(*keys))
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in await conn.execute(statement):
        values = row._mapping
        out[(*[values[dim] for dim in ROLLUP_DIMENSIONS], int(values["gpu_priced"]))] = {
            "day": day, **{dim: values[dim] for dim in ROLLUP_DIMENSIONS}, "gpu_priced": int(values["gpu_priced"]),
            **{name: int(values[name]) for name in SUMMED}, "cost_nano": int(values["cost_nano"]),
            "gpu_nano": 0, "gpu_micro_hours": 0}
    hourly: list[dict[str, Any]] = []
    for gpu_row, cost_nano, share in allocate_hours(await gpu_rows(conn, day, day + DAY)):
        dims = dict(zip(GPU_KEY, gpu_row.key, strict=True), provider=gpu_row.provider)
        target = out[(*[dims[dim] for dim in ROLLUP_DIMENSIONS], 1)]
        target["gpu_nano"] += cost_nano
        target["gpu_micro_hours"] += share
        hourly.append({"hour": as_utc(gpu_row.hour), **dims, "gpu_cost_usd": Decimal(cost_nano).scaleb(-9),
                       "gpu_micro_hours": share})
    for summary in out.values():
        summary["cost_usd"] = Decimal(summary.pop("cost_nano")).scaleb(-9)
        summary["gpu_cost_usd"] = Decimal(summary.pop("gpu_nano")).scaleb(-9)
    return list(out.values()), hourly  # UsdAmount columns take dollars: exact Decimals of the nano-dollar sums


async def refresh_dirty(store: Store, *, now: datetime, grace_s: float = 600.0) -> int:
    """Rebuild every marked day that ended at least ``grace_s`` before ``now``; returns how many."""
    async with store.read() as conn:
        cutoff = now - timedelta(seconds=grace_s) - DAY
        days = [day for (day,) in await conn.execute(select(dirty_days.c.day).where(dirty_days.c.day <= cutoff))]
    return await refresh_days(store, days, only_dirty=True) if days else 0


class DailyRefresher:
    """Refreshes dirty days in the background; a failure is logged and retried on the next tick."""

    def __init__(self, store: Store, *, interval_s: float, grace_s: float) -> None:
        self._store, self._interval_s, self._grace_s = store, interval_s, grace_s

    async def tick(self) -> int:
        try:
            return await refresh_dirty(self._store, now=datetime.now(UTC), grace_s=self._grace_s)
        except StoreError as err:
            log.warning("daily usage summary: refresh failed, retrying in %.0f s: %s", self._interval_s, err)
            return 0

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Tick now and every ``interval_s`` while the block runs (0: never)."""
        if self._interval_s <= 0:
            yield
            return

        async def loop() -> None:
            while True:
                done = await self.tick()
                if done:
                    log.info("daily usage summary: %d day(s) rebuilt", done)
                await asyncio.sleep(self._interval_s)

        task = asyncio.create_task(loop(), name="observability-daily-refresh")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

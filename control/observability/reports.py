"""Usage and cost reports over ``usage_rollups`` and its daily summary (never a scan of ``usage_records``).

A window is cut into whole UTC days, read from ``observability_daily_usage`` (``tables``), and the rest
(the partial days at either end, days marked dirty since their summary was built, every hour when the
granularity is ``hour``), read from the hourly rollups. Both parts are one SQL ``GROUP BY`` each, merged
here by (bucket, dimensions); no day is read twice, and both give the same sums by construction.

GPU-hour cost: a provider whose rollup rows carry ``gpu_usd_per_hour > 0`` costs that price for each hour
it served traffic, spread over all its rows of the hour by token share (``allocation.allocate_hours``:
per row, in whole nano-dollars, so every report adds up exactly). The summary stores each row's part,
per day (``daily_usage``) and per hour (``hourly_gpu``), so hourly reads of summarised days sum them in
SQL; for days not summarised yet (today, or every day right after a migration or ``rebuild_rollups``
until the refresher's next pass) the provider's rows of those hours are fetched and split here. Either
way the split happens before the report's filters apply, so a team's share does not grow when a report
looks at that team alone. GPU-hours are each provider-hour times ``settings.gpus`` for the provider,
allocated the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Table, case, cast, func, literal_column, select, type_coerce
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.types import NullType

from adapters.dataplane import usage_rollups
from adapters.store import Store
from control.observability.allocation import GpuRow, allocate_hours
from control.observability.params import UsageQuery
from control.observability.protocol import UsageMetrics
from control.observability.settings import ObservabilitySettings
from control.observability.tables import SUMMED, daily_usage, dirty_days, hourly_gpu

__all__ = ["GPU_KEY", "Groups", "Metrics", "Report", "ReportRow", "as_utc", "gpu_rows", "query_usage", "usd"]

NANO = 1_000_000_000
MICRO = 1_000_000
DAY = timedelta(days=1)
_r = usage_rollups
_d = daily_usage
_g = hourly_gpu
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
Groups = dict[tuple[datetime | None, tuple[str, ...]], "Metrics"]


@dataclass(slots=True)
class Metrics:
    """One report row's sums, in exact integers (nano-dollars, micro-GPU-hours)."""

    requests: int = 0
    errors: int = 0
    unpriced_requests: int = 0
    estimated_requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    token_cost_nano: int = 0  # the rollups' own cost: requests priced per token
    gpu_cost_nano: int = 0  # allocated from GPU-hour-priced providers
    gpu_micro_hours: int = 0
    gpu_priced: bool = False  # some of its rows came from a GPU-hour-priced provider

    def add(self, o: Metrics) -> None:
        self.requests += o.requests
        self.errors += o.errors
        self.unpriced_requests += o.unpriced_requests
        self.estimated_requests += o.estimated_requests
        self.prompt_tokens += o.prompt_tokens
        self.completion_tokens += o.completion_tokens
        self.cached_read_tokens += o.cached_read_tokens
        self.cache_write_tokens += o.cache_write_tokens
        self.reasoning_tokens += o.reasoning_tokens
        self.token_cost_nano += o.token_cost_nano
        self.gpu_cost_nano += o.gpu_cost_nano
        self.gpu_micro_hours += o.gpu_micro_hours
        self.gpu_priced = self.gpu_priced or o.gpu_priced

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def cost_nano(self) -> int | None:
        """Null only when every request was unpriced and no GPU-hour cost applies: never a silent $0."""
        if self.unpriced_requests >= self.requests and not self.gpu_priced:
            return None
        return self.token_cost_nano + self.gpu_cost_nano

    def wire(self) -> UsageMetrics:
        nano = self.cost_nano
        return UsageMetrics(
            requests=self.requests, errors=self.errors, prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens, cached_read_tokens=self.cached_read_tokens,
            cache_write_tokens=self.cache_write_tokens, reasoning_tokens=self.reasoning_tokens,
            total_tokens=self.total_tokens, cost_usd=None if nano is None else usd(nano),
            unpriced_requests=self.unpriced_requests, estimated_requests=self.estimated_requests,
            gpu_hours=self.gpu_micro_hours / MICRO,
        )


def usd(nano: int) -> str:
    """Nano-dollars as an exact decimal string without exponent: ``1234`` -> ``"0.000001234"``."""
    return format(Decimal(nano).scaleb(-9).normalize(), "f")


@dataclass(frozen=True, slots=True)
class ReportRow:
    bucket: datetime | None  # start of the hour or UTC day; None for granularity total
    dims: tuple[str, ...]  # values of query.group_by, "" where absent
    metrics: Metrics


@dataclass(frozen=True, slots=True)
class Report:
    rows: list[ReportRow]  # ordered by bucket, then dimensions
    totals: Metrics


async def query_usage(store: Store, query: UsageQuery, settings: ObservabilitySettings) -> Report:
    """Run ``query``: the summary's days and the hourly ranges, in one read transaction, merged by group."""
    groups: Groups = {}
    async with store.read() as conn:
        days, dirty, hourly = await _plan(conn, query)
        if days is not None:
            await _add_daily(conn, query, settings, days, dirty, groups)
        for lo, hi in hourly:
            await _add_hourly(conn, store, query, settings, lo, hi, groups)
    ordered = sorted(groups.items(), key=lambda item: (item[0][0] or _EPOCH, item[0][1]))
    totals = Metrics()
    for _, metrics in ordered:
        totals.add(metrics)
    return Report([ReportRow(bucket, dims, metrics) for (bucket, dims), metrics in ordered], totals)


# -- which part of the window comes from where ----------------------------------------------------

def _floor_day(at: datetime) -> datetime:
    return at.replace(hour=0, minute=0, second=0, microsecond=0)


def _ceil_day(at: datetime) -> datetime | None:
    floor = _floor_day(at)
    if floor == at:
        return at
    try:
        return floor + DAY
    except OverflowError:
        return None


async def _plan(conn: AsyncConnection, query: UsageQuery) -> tuple[
        tuple[datetime, datetime] | None, list[datetime], list[tuple[datetime, datetime]]]:
    """(whole days read from the summary, the dirty ones among them, hour ranges read from the rollups)."""
    first, last = _ceil_day(query.start), _floor_day(query.end)
    if query.granularity == "hour" or first is None or first >= last:
        return None, [], [(query.start, query.end)]
    dirty = [day for (day,) in await conn.execute(
        select(dirty_days.c.day).where(dirty_days.c.day >= first, dirty_days.c.day < last))]
    ranges = [(query.start, first)] if query.start < first else []
    ranges += [(day, day + DAY) for day in sorted(dirty)]
    if last < query.end:
        ranges.append((last, query.end))
    merged: list[tuple[datetime, datetime]] = []
    for lo, hi in ranges:
        if merged and merged[-1][1] == lo:
            merged[-1] = (merged[-1][0], hi)
        else:
            merged.append((lo, hi))
    return (first, last), dirty, merged


# -- filters --------------------------------------------------------------------------------------

def _filters(query: UsageQuery, table: Table) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [table.c[dim] == value for dim, value in query.filters.items()]
    kind = query.resource_type
    gpu = table.c.gpu_usd_per_hour > 0 if table is _r else table.c.gpu_priced == 1
    if kind == "gpu":
        conditions.append(gpu)
    elif kind == "api":
        conditions.append(~gpu)
    elif kind is not None:
        conditions.append(table.c.endpoint == kind)
    return conditions


def _total(column: ColumnElement[Any]) -> ColumnElement[int]:
    """``SUM`` as a BIGINT: PostgreSQL sums BIGINTs to NUMERIC, which reaches Python as a ``Decimal``
    (converting a report's tens of thousands of them cost more than the query's own work)."""
    return cast(func.sum(type_coerce(column, BigInteger)), BigInteger)


def _gpus(settings: ObservabilitySettings, provider: ColumnElement[Any]) -> ColumnElement[Any]:
    if not settings.gpus:
        return literal_column("1")
    return case(*[(provider == name, count) for name, count in sorted(settings.gpus.items())], else_=1)


# -- the daily summary ----------------------------------------------------------------------------

async def _add_daily(conn: AsyncConnection, query: UsageQuery, settings: ObservabilitySettings,
                     days: tuple[datetime, datetime], dirty: Sequence[datetime], groups: Groups) -> None:
    keys: list[ColumnElement[Any]] = [_d.c.day] if query.granularity == "day" else []
    keys += [_d.c[dim] for dim in query.group_by]
    skip = [_d.c.day.not_in(dirty)] if dirty else []
    statement = (select(*keys, *[_total(_d.c[name]).label(name) for name in SUMMED],
                        _total(_d.c.cost_usd).label("cost_nano"),
                        _total(_d.c.gpu_cost_usd).label("gpu_nano"),
                        _total(_d.c.gpu_micro_hours * _gpus(settings, _d.c.provider)).label("gpu_micro"),
                        func.max(_d.c.gpu_priced).label("gpu_priced"))
                 .where(_d.c.day >= days[0], _d.c.day < days[1], *skip, *_filters(query, _d))
                 .group_by(*keys))
    width = len(keys)
    for row in await conn.execute(statement):
        if row.requests is None:
            continue  # no GROUP BY and no rows: SQL's one all-null row
        bucket = row[0] if query.granularity == "day" else None
        key = (bucket, tuple(row[width - len(query.group_by):width]))
        metrics = Metrics(**_sums(row, width), token_cost_nano=int(row.cost_nano), gpu_cost_nano=int(row.gpu_nano),
                          gpu_micro_hours=int(row.gpu_micro), gpu_priced=bool(row.gpu_priced))
        _merge(groups, key, metrics)


def _sums(row: Any, offset: int) -> dict[str, int]:
    """The ``SUMMED`` columns, which follow the ``offset`` grouping columns (SQL sums may be Decimal)."""
    return {name: int(row[offset + i]) for i, name in enumerate(SUMMED)}


def _merge(groups: Groups, key: tuple[datetime | None, tuple[str, ...]], metrics: Metrics) -> None:
    found = groups.get(key)
    if found is None:
        groups[key] = metrics
    else:
        found.add(metrics)


# -- the hourly rollups ---------------------------------------------------------------------------

def _day(store: Store, hour: ColumnElement[Any] = _r.c.hour) -> ColumnElement[Any]:
    """The UTC day of ``hour``, in SQL. Constants are literal so SELECT and GROUP BY render the same
    expression (PostgreSQL compares them textually; two bind parameters would differ)."""
    if store.dialect == "sqlite":  # stored as text "YYYY-MM-DD HH:MM:SS.ffffff", always UTC
        return func.substr(hour, literal_column("1"), literal_column("10"))
    return func.date_trunc(literal_column("'day'"), func.timezone(literal_column("'UTC'"), hour))


def as_utc(value: Any) -> datetime:
    """A time as SQL returned it (aware datetime, naive UTC datetime, or SQLite's text)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value[:26] if len(value) > 10 else value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _bucket_of(hour: datetime, query: UsageQuery) -> datetime | None:
    if query.granularity == "hour":
        return hour
    return _floor_day(hour) if query.granularity == "day" else None


async def _add_hourly(conn: AsyncConnection, store: Store, query: UsageQuery, settings: ObservabilitySettings,
                      lo: datetime, hi: datetime, groups: Groups) -> None:
    keys: list[ColumnElement[Any]] = []
    if query.granularity == "hour":
        keys.append(_r.c.hour)
    elif query.granularity == "day":
        keys.append(_day(store).label("bucket"))
    keys += [_r.c[dim] for dim in query.group_by]
    statement = (select(*keys, *[_total(_r.c[name]).label(name) for name in SUMMED],
                        _total(_r.c.cost_usd).label("cost_nano"),
                        func.max(case((_r.c.gpu_usd_per_hour > 0, 1), else_=0)).label("gpu_priced"))
                 .where(_r.c.hour >= lo, _r.c.hour < hi, *_filters(query, _r))
                 .group_by(*keys))
    width, any_gpu = len(keys), False
    for row in await conn.execute(statement):
        if row.requests is None:
            continue
        bucket = as_utc(row[0]) if query.granularity != "total" else None
        metrics = Metrics(**_sums(row, width), token_cost_nano=int(row.cost_nano), gpu_priced=bool(row.gpu_priced))
        any_gpu = any_gpu or metrics.gpu_priced
        _merge(groups, (bucket, tuple(row[width - len(query.group_by):width])), metrics)
    if not any_gpu:
        return  # no GPU-priced row passed the filters (so never for resource_type api): nothing to allocate
    summarised, fresh = await _gpu_ranges(conn, lo, hi)
    for a, b in summarised:
        await _add_gpu_summarised(conn, store, query, settings, a, b, groups)
    for a, b in fresh:
        await _add_gpu_allocated(conn, query, settings, a, b, groups)


async def _gpu_ranges(conn: AsyncConnection, lo: datetime, hi: datetime) -> tuple[
        list[tuple[datetime, datetime]], list[tuple[datetime, datetime]]]:
    """``[lo, hi)`` cut into (ranges of summarised days, whose allocations ``hourly_gpu`` holds; ranges of
    dirty days, allocated here from the rollups). Usually only today is dirty."""
    first = _floor_day(lo)
    dirty = {as_utc(day) for (day,) in await conn.execute(
        select(dirty_days.c.day).where(dirty_days.c.day >= first, dirty_days.c.day < hi))}
    ranges: tuple[list[tuple[datetime, datetime]], list[tuple[datetime, datetime]]] = ([], [])
    day = first
    while day < hi:
        try:
            following = day + DAY
        except OverflowError:
            following = hi
        part = ranges[1] if day in dirty else ranges[0]
        a, b = max(lo, day), min(hi, following)
        if part and part[-1][1] == a:
            part[-1] = (part[-1][0], b)
        else:
            part.append((a, b))
        day = following
    return ranges


async def _add_gpu_summarised(conn: AsyncConnection, store: Store, query: UsageQuery, settings: ObservabilitySettings,
                              lo: datetime, hi: datetime, groups: Groups) -> None:
    """GPU-hour cost of summarised days: the stored per-row allocations, summed by the report's groups."""
    if query.resource_type == "api":
        return
    keys: list[ColumnElement[Any]] = []
    if query.granularity == "hour":
        keys.append(_g.c.hour)
    elif query.granularity == "day":
        keys.append(_day(store, _g.c.hour).label("bucket"))
    keys += [_g.c[dim] for dim in query.group_by]
    conditions = [_g.c[dim] == value for dim, value in query.filters.items()]
    if query.resource_type not in (None, "gpu"):
        conditions.append(_g.c.endpoint == query.resource_type)
    statement = (select(*keys, _total(_g.c.gpu_cost_usd).label("gpu_nano"),
                        _total(_g.c.gpu_micro_hours * _gpus(settings, _g.c.provider)).label("gpu_micro"))
                 .where(_g.c.hour >= lo, _g.c.hour < hi, *conditions)
                 .group_by(*keys))
    width = len(keys)
    for row in await conn.execute(statement):
        if row.gpu_nano is None:
            continue
        bucket = as_utc(row[0]) if query.granularity != "total" else None
        _merge(groups, (bucket, tuple(row[width - len(query.group_by):width])),
               Metrics(gpu_cost_nano=int(row.gpu_nano), gpu_micro_hours=int(row.gpu_micro), gpu_priced=True))


async def _add_gpu_allocated(conn: AsyncConnection, query: UsageQuery, settings: ObservabilitySettings,
                             lo: datetime, hi: datetime, groups: Groups) -> None:
    """GPU-hour cost of days not summarised yet: every GPU-priced rollup row fetched and split here."""
    # Per row: positions in GpuRow.key (-1: the provider), plain ints summed per report group, merged at the end.
    position = {dim: (-1 if dim == "provider" else GPU_KEY.index(dim)) for dim in (*query.group_by, *query.filters)}
    group_at = [position[dim] for dim in query.group_by]
    filters = [(position[dim], value) for dim, value in query.filters.items()]
    endpoint = query.resource_type if query.resource_type not in (None, "gpu") else None
    at_endpoint = GPU_KEY.index("endpoint")
    buckets: dict[Any, datetime | None] = {}
    sums: dict[tuple[datetime | None, tuple[str, ...]], list[int]] = {}
    for gpu_row, cost_nano, share in allocate_hours(await gpu_rows(conn, lo, hi)):
        key, provider = gpu_row.key, gpu_row.provider
        if endpoint is not None and key[at_endpoint] != endpoint:
            continue
        if filters and any((provider if at < 0 else key[at]) != value for at, value in filters):
            continue
        bucket = buckets.get(gpu_row.hour, _EPOCH)
        if bucket is _EPOCH:
            bucket = buckets[gpu_row.hour] = _bucket_of(as_utc(gpu_row.hour), query)
        group = (bucket, tuple(provider if at < 0 else key[at] for at in group_at))
        found = sums.get(group)
        micro = share * settings.gpus_of(provider)
        if found is None:
            sums[group] = [cost_nano, micro]
        else:
            found[0] += cost_nano
            found[1] += micro
    for group, (cost_nano, micro) in sums.items():
        _merge(groups, group, Metrics(gpu_cost_nano=cost_nano, gpu_micro_hours=micro, gpu_priced=True))


GPU_KEY = ("team", "key_id", "route", "model", "variant", "endpoint")  # a GpuRow's key, after (hour, provider)


async def gpu_rows(conn: AsyncConnection, lo: datetime, hi: datetime) -> list[GpuRow]:
    """Every GPU-hour-priced rollup row of the hours in ``[lo, hi)`` (raw hour values, nano-dollar prices)."""
    statement = (select(type_coerce(_r.c.hour, NullType()).label("hour"), _r.c.provider,  # raw: only compared
                        *[_r.c[dim] for dim in GPU_KEY], _r.c.prompt_tokens + _r.c.completion_tokens,
                        _r.c.requests, type_coerce(_r.c.gpu_usd_per_hour, BigInteger))
                 .where(_r.c.hour >= lo, _r.c.hour < hi, _r.c.gpu_usd_per_hour > 0))
    return [GpuRow(r[0], r[1], tuple(r[2:8]), int(r[8]), int(r[9]), int(r[10]))
            for r in await conn.execute(statement)]

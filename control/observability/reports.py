"""Usage and cost reports, read from ``usage_rollups`` only (never a scan of ``usage_records``).

One SQL ``GROUP BY`` over the hourly rollups gives every metric but the GPU-hour cost: a GPU-hour-priced
provider (rollup rows with ``gpu_usd_per_hour > 0``) costs its hourly price for each hour it served
traffic, spread over *all* of that provider's rows in the hour by token share (prompt + completion;
requests when the hour counted no tokens). The share is taken before the report's filters, so a team's
part of an hour does not grow when the report looks at that team alone. A second, smaller query reads
those hours per (hour, provider, report group), and ``allocation.split`` divides each hour in whole
nano-dollars and micro-GPU-hours, so rows sum exactly to the totals.

GPU-hours: each (hour, provider) with traffic counts ``gpus`` GPU-hours (``settings.gpus``, default 1:
then they are provider-hours), allocated like the cost.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, literal_column, select, type_coerce

from adapters.dataplane import usage_rollups
from adapters.store import Store, UsdAmount
from control.observability.allocation import split
from control.observability.params import UsageQuery
from control.observability.protocol import UsageMetrics
from control.observability.settings import ObservabilitySettings

__all__ = ["Metrics", "Report", "ReportRow", "query_usage"]

NANO = 1_000_000_000
MICRO = 1_000_000
_SUMMED = ("requests", "errors", "unpriced_requests", "estimated_requests", "prompt_tokens",
           "completion_tokens", "cached_read_tokens", "cache_write_tokens", "reasoning_tokens")
_r = usage_rollups


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

    def add(self, other: Metrics) -> None:
        for f in fields(self):
            value = getattr(other, f.name)
            setattr(self, f.name, (getattr(self, f.name) or value) if f.name == "gpu_priced"
                    else getattr(self, f.name) + value)

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
    """Run ``query`` over the rollups: one grouped read, then the GPU-hour allocation if any row needs it."""
    async with store.read() as conn:
        rows: dict[tuple[datetime | None, tuple[str, ...]], Metrics] = {}
        for row in await conn.execute(_main_statement(store, query)):
            if row.requests is None:
                continue  # no GROUP BY and no rows: SQL's one all-null row
            bucket = _bucket_value(row[0]) if query.granularity != "total" else None
            skip = 0 if query.granularity == "total" else 1
            dims = tuple(row[skip:skip + len(query.group_by)])
            rows[(bucket, dims)] = _metrics(row._mapping)
        if any(m.gpu_priced for m in rows.values()):
            cells = (await conn.execute(_gpu_statement(query))).all()
            _allocate_gpu_hours(rows, cells, query, settings)
    ordered = sorted(rows.items(), key=lambda item: (item[0][0] or _EPOCH, item[0][1]))
    totals = Metrics()
    for _, metrics in ordered:
        totals.add(metrics)
    return Report([ReportRow(bucket, dims, metrics) for (bucket, dims), metrics in ordered], totals)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _filters(query: UsageQuery) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [_r.c[dim] == value for dim, value in query.filters.items()]
    kind = query.resource_type
    if kind == "gpu":
        conditions.append(_r.c.gpu_usd_per_hour > 0)
    elif kind == "api":
        conditions.append(_r.c.gpu_usd_per_hour == 0)
    elif kind is not None:
        conditions.append(_r.c.endpoint == kind)
    return conditions


def _window(query: UsageQuery) -> list[ColumnElement[bool]]:
    return [_r.c.hour >= query.start, _r.c.hour < query.end]


def _day(store: Store) -> ColumnElement[Any]:
    """The UTC day of ``hour``, in SQL. Constants are literal so SELECT and GROUP BY render the same
    expression (PostgreSQL compares them textually; two bind parameters would differ)."""
    if store.dialect == "sqlite":  # stored as text "YYYY-MM-DD HH:MM:SS.ffffff", always UTC
        return func.substr(_r.c.hour, literal_column("1"), literal_column("10"))
    return func.date_trunc(literal_column("'day'"), func.timezone(literal_column("'UTC'"), _r.c.hour))


def _bucket_value(value: Any) -> datetime:
    """A bucket as SQL returned it (aware datetime, naive UTC datetime, or ``YYYY-MM-DD`` text)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value[:10])
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _main_statement(store: Store, query: UsageQuery) -> Any:
    keys: list[ColumnElement[Any]] = []
    if query.granularity == "hour":
        keys.append(_r.c.hour)
    elif query.granularity == "day":
        keys.append(_day(store).label("bucket"))
    keys += [_r.c[dim] for dim in query.group_by]
    sums = [func.sum(_r.c[name]).label(name) for name in _SUMMED]
    return (select(*keys, *sums,
                   type_coerce(func.sum(_r.c.cost_usd), UsdAmount).label("cost_usd"),
                   func.max(case((_r.c.gpu_usd_per_hour > 0, 1), else_=0)).label("gpu_priced"))
            .where(*_window(query), *_filters(query))
            .group_by(*keys))


def _metrics(row: Any) -> Metrics:
    cost = row["cost_usd"]
    return Metrics(**{name: int(row[name]) for name in _SUMMED},
                   token_cost_nano=int(cost * NANO) if cost is not None else 0,
                   gpu_priced=bool(row["gpu_priced"]))


def _gpu_statement(query: UsageQuery) -> Any:
    """Per (hour, provider, report group, matches the filters): tokens, requests and the hourly price,
    over every GPU-hour-priced row of the window (the filters only mark rows, so shares stay whole)."""
    dims = [dim for dim in query.group_by if dim != "provider"]
    conditions = _filters(query)
    matched = case((and_(*conditions), 1), else_=0) if conditions else literal_column("1")
    inner = (select(_r.c.hour, _r.c.provider, *[_r.c[dim] for dim in dims], matched.label("matched"),
                    (_r.c.prompt_tokens + _r.c.completion_tokens).label("tokens"), _r.c.requests,
                    _r.c.gpu_usd_per_hour)
             .where(*_window(query), _r.c.gpu_usd_per_hour > 0)
             .subquery())
    keys = [inner.c.hour, inner.c.provider, *[inner.c[dim] for dim in dims], inner.c.matched]
    return (select(*keys, func.sum(inner.c.tokens).label("tokens"), func.sum(inner.c.requests).label("requests"),
                   type_coerce(func.max(inner.c.gpu_usd_per_hour), UsdAmount).label("price"))
            .group_by(*keys))


def _allocate_gpu_hours(rows: dict[tuple[datetime | None, tuple[str, ...]], Metrics], cells: Sequence[Any],
                        query: UsageQuery, settings: ObservabilitySettings) -> None:
    """Split each (hour, provider)'s price and GPU-hours over its cells; add the matching cells' parts."""
    dims = [dim for dim in query.group_by if dim != "provider"]
    hours: dict[tuple[datetime, str], list[Any]] = defaultdict(list)
    for cell in cells:
        hours[(cell.hour, cell.provider)].append(cell)
    for (hour, provider), group in hours.items():
        price_nano = int(max(cell.price for cell in group) * NANO)
        keyed = [(tuple(str(v) for v in cell[2:3 + len(dims)]), cell) for cell in group]  # dims + matched
        by_tokens = sum(int(cell.tokens) for cell in group) > 0
        weights = [(key, int(cell.tokens if by_tokens else cell.requests)) for key, cell in keyed]
        cost = split(price_nano, weights)
        gpu_hours = split(settings.gpus_of(provider) * MICRO, weights)
        bucket = _bucket_of(hour, query)
        for key, cell in keyed:
            if not int(cell.matched):
                continue
            values = dict(zip(dims, key, strict=False))
            row_dims = tuple(provider if dim == "provider" else values[dim] for dim in query.group_by)
            metrics = rows.setdefault((bucket, row_dims), Metrics(gpu_priced=True))
            metrics.gpu_cost_nano += cost[key]
            metrics.gpu_micro_hours += gpu_hours[key]


def _bucket_of(hour: datetime, query: UsageQuery) -> datetime | None:
    if query.granularity == "hour":
        return hour
    if query.granularity == "day":
        return hour.replace(hour=0)
    return None

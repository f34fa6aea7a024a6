"""The cost API's four reports over ``reports.query_usage``: usage, top spenders, cost profiles, cost aggregate.

Callers pass checked parameters (``params``); these shape the wire types. The benchmark
(``loadtests/cost_query_bench.py``) times these methods directly.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from adapters.store import Store
from control.observability.params import UsageQuery, Window, iso
from control.observability.protocol import METRIC_FIELDS, CostAggregate, CostProfiles, TopSpenders, UsageReport
from control.observability.reports import Metrics, Report, ReportRow, query_usage
from control.observability.settings import ObservabilitySettings

__all__ = ["PROFILE_DIMENSIONS", "CostReports"]

PROFILE_DIMENSIONS = ("route", "provider", "model")  # an "endpoint" of cost-profiles


def _row(row: ReportRow, group_by: tuple[str, ...], *, bucket: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"bucket": iso(row.bucket) if row.bucket else None} if bucket else {}
    out.update((dim, value or None) for dim, value in zip(group_by, row.dims, strict=True))  # "" = absent
    out.update(msgspec.structs.asdict(row.metrics.wire()))  # METRIC_FIELDS, in order
    return out


class CostReports:
    def __init__(self, store: Store, settings: ObservabilitySettings) -> None:
        self.store = store
        self.settings = settings

    async def run(self, query: UsageQuery) -> Report:
        return await query_usage(self.store, query, self.settings)

    async def usage(self, query: UsageQuery) -> UsageReport:
        report = await self.run(query)
        return UsageReport(start=iso(query.start), end=iso(query.end), granularity=query.granularity,
                           group_by=list(query.group_by), rows=[_row(r, query.group_by) for r in report.rows],
                           totals=report.totals.wire())

    async def top_spenders(self, window: Window, by: str, limit: int) -> TopSpenders:
        """Rows by cost, highest first (unpriced last), then by tokens, then by name; ``share`` of the total cost."""
        report = await self.run(UsageQuery(window.start, window.end, "total", (by,)))
        ranked = sorted(report.rows, key=lambda r: (-(r.metrics.cost_nano or 0), r.metrics.cost_nano is None,
                                                    -r.metrics.total_tokens, r.dims))
        total = report.totals.cost_nano or 0
        rows = []
        for row in ranked[:limit]:
            out = _row(row, (by,), bucket=False)
            out["share"] = round((row.metrics.cost_nano or 0) / total, 6) if total else None
            rows.append(out)
        return TopSpenders(start=iso(window.start), end=iso(window.end), by=by, limit=limit, rows=rows,
                           totals=report.totals.wire())

    async def cost_profiles(self, window: Window) -> CostProfiles:
        report = await self.run(UsageQuery(window.start, window.end, "total", PROFILE_DIMENSIONS))
        return CostProfiles(start=iso(window.start), end=iso(window.end),
                            rows=[_row(r, PROFILE_DIMENSIONS, bucket=False) for r in report.rows],
                            totals=report.totals.wire())

    async def cost_aggregate(self, window: Window, resource_type: str | None) -> CostAggregate:
        report = await self.run(UsageQuery(window.start, window.end, "total", (), resource_type=resource_type))
        return _aggregate(report.totals, resource_type, window.start, window.end)


def _aggregate(totals: Metrics, resource_type: str | None, start: datetime, end: datetime) -> CostAggregate:
    metrics = totals.wire()
    return CostAggregate(**{name: getattr(metrics, name) for name in METRIC_FIELDS},
                         resource_type=resource_type, start_date=iso(start), end_date=iso(end))

"""Wire types of the cost API (``data`` of each envelope). Field names are snake_case, as existing clients read them.

Money is a decimal string (``"0.001234"``), exact to the nano-dollar, or ``null`` when nothing in the row
was priced: a request without a price is never counted as $0. Report rows are objects whose keys are
``bucket``, the dimensions grouped by, then the metrics of ``UsageMetrics``.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = ["METRIC_FIELDS", "CostAggregate", "CostProfiles", "TopSpenders", "UsageMetrics", "UsageReport"]


class UsageMetrics(msgspec.Struct, kw_only=True):
    requests: int
    errors: int  # status >= 400
    prompt_tokens: int  # the whole prompt, cached reads and cache writes included
    completion_tokens: int  # reasoning included
    cached_read_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    total_tokens: int  # prompt + completion
    cost_usd: str | None  # token-priced cost plus allocated GPU-hour cost; null: nothing priced
    unpriced_requests: int
    estimated_requests: int  # token counts estimated, not the upstream's
    gpu_hours: float  # GPU-hours of GPU-hour-priced providers, allocated like their cost


METRIC_FIELDS: tuple[str, ...] = UsageMetrics.__struct_fields__


class UsageReport(msgspec.Struct, kw_only=True):
    start: str
    end: str
    granularity: str
    group_by: list[str]
    rows: list[dict[str, Any]]
    totals: UsageMetrics


class TopSpenders(msgspec.Struct, kw_only=True):
    start: str
    end: str
    by: str
    limit: int
    rows: list[dict[str, Any]]  # <by>, the metrics, and share: this row's fraction of the total cost
    totals: UsageMetrics


class CostProfiles(msgspec.Struct, kw_only=True):
    start: str
    end: str
    rows: list[dict[str, Any]]  # one per endpoint: route, provider, model, then the metrics
    totals: UsageMetrics


class CostAggregate(UsageMetrics, kw_only=True):
    resource_type: str | None  # null: every resource
    start_date: str
    end_date: str  # exclusive

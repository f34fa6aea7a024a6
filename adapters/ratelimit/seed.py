"""Spend so far, from the usage rollups: what the in-process backend starts from after a restart.

Read once at start-up, off the request path: per key and per team, the cost of every hour since
the start of the current day, week and month (UTC). Periods start on an hour, so the hourly
rollups sum them exactly. Unpriced usage counts as nothing, as it does in the budgets themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, func, select

from adapters.dataplane import usage_rollups
from policies.limits import ANONYMOUS, Period, period_bounds

__all__ = ["spend_so_far"]


async def spend_so_far(store: Any, now: float, periods: Sequence[Period] = ("daily", "weekly", "monthly"),
                       ) -> list[tuple[str, str, int]]:
    """``(spend key, period id, nano-dollars)`` for every key and team with spend in a current period
    (requests without a key or team, ``''`` in the rollups, are the limits' anonymous ``-``)."""
    out: list[tuple[str, str, int]] = []
    async with store.read() as conn:
        for period in periods:
            pid, start, _ = period_bounds(period, now)
            since = datetime.fromtimestamp(start, tz=UTC)
            for column, subject in ((usage_rollups.c.key_id, "key"), (usage_rollups.c.team, "team")):
                rows = await conn.execute(
                    select(column, func.sum(usage_rollups.c.cost_usd, type_=BigInteger))  # nano-dollars
                    .where(usage_rollups.c.hour >= since)
                    .group_by(column))
                for name, total in rows:
                    if total:  # '' in the rollups: no key or no team, what the limits count as ANONYMOUS
                        out.append((f"{subject}={name or ANONYMOUS}", pid, int(total)))
    return out

"""Spend so far from the usage rollups (SQLite and PostgreSQL): what the in-process backend starts
from after a restart, per key and team, for the current day, week and month only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import insert

from adapters.adminapi.host import load_control_plane
from adapters.adminapi.settings import ControlCfg
from adapters.dataplane import usage_rollups
from adapters.ratelimit import MemoryRateLimiter
from adapters.ratelimit.seed import spend_so_far
from adapters.store import migrate, open_store
from policies.limits import Demand, Spend, period_bounds


def _rollup(hour: datetime, team: str, key_id: str, cost: str, route: str = "r") -> dict[str, object]:
    return {"hour": hour, "team": team, "key_id": key_id, "route": route, "model": "m", "provider": "p",
            "variant": "", "endpoint": "chat", "requests": 1, "cost_usd": Decimal(cost)}


async def test_spend_so_far_sums_the_current_periods_per_key_and_team(database_url: str) -> None:
    now = datetime(2026, 3, 18, 15, 30, tzinfo=UTC)  # a Wednesday
    this_hour = now.replace(minute=0)
    store = open_store(database_url, feed_mode="local")
    try:
        await migrate(store, load_control_plane(ControlCfg(), modules=[], environ={}).migration_plan())
        async with store.begin() as conn:
            await conn.execute(insert(usage_rollups), [
                _rollup(this_hour, "search", "k1", "1.000000001"),
                _rollup(this_hour, "search", "k1", "2", route="other"),  # another route, same key
                _rollup(this_hour - timedelta(days=1), "search", "k2", "10"),  # Tuesday: this week, not today
                _rollup(this_hour - timedelta(days=10), "ads", "k3", "100"),  # earlier this month only
                _rollup(this_hour - timedelta(days=40), "ads", "k3", "1000"),  # last month: nothing
                _rollup(this_hour, "", "", "7"),  # anonymous: no key, no team (the limits' "-")
            ])
        rows = await spend_so_far(store, now.timestamp())
    finally:
        await store.aclose()
    day, week, month = (period_bounds(p, now.timestamp())[0] for p in ("daily", "weekly", "monthly"))  # type: ignore[arg-type]
    nano = 10**9
    assert sorted(rows) == sorted([
        ("key=k1", day, 3 * nano + 1), ("team=search", day, 3 * nano + 1),
        ("key=k1", week, 3 * nano + 1), ("key=k2", week, 10 * nano), ("team=search", week, 13 * nano + 1),
        ("key=k1", month, 3 * nano + 1), ("key=k2", month, 10 * nano), ("key=k3", month, 100 * nano),
        ("team=search", month, 13 * nano + 1), ("team=ads", month, 100 * nano),
        *((f"{subject}=-", period, 7 * nano) for subject in ("key", "team") for period in (day, week, month)),
    ])
    limiter = MemoryRateLimiter(clock=now.timestamp)
    for key, pid, amount in rows:
        limiter.seed_spend(key, pid, amount)
    refused = limiter.reserve_now(Demand("d", 60, 0, 1, [], [], [Spend("team=ads", "monthly", 100 * nano)]))
    assert (refused.ok, refused.spent) == (False, 100 * nano)

"""Both rate-limit backends, one set of tests: the same demands get the same verdicts from the
in-process backend and from the Lua scripts on a real Redis (tests/servers.py)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from adapters.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter
from adapters.ratelimit.redis import connect
from policies.limits import (
    Bucket,
    BucketAdj,
    Demand,
    Fired,
    Settlement,
    Slot,
    Spend,
    SpendAdj,
    period_bounds,
)


@pytest.fixture(params=["memory", "redis"])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[RateLimiter]:
    if request.param == "memory":
        yield MemoryRateLimiter()
        return
    server = request.getfixturevalue("redis_server")
    redis = RedisRateLimiter(connect(server.url, 2.0), prefix=f"t-{uuid.uuid4().hex[:8]}", timeout_s=2.0)
    try:
        yield redis
    finally:
        await redis.aclose()


_ids = iter(range(10**9))


def demand(*, buckets: list[Bucket] | None = None, slots: list[Slot] | None = None,
           spends: list[Spend] | None = None, ttl_s: int = 60) -> Demand:
    return Demand(f"r{next(_ids)}", ttl_s, buckets or [], slots or [], spends or [])


async def until(check: Any, within_s: float) -> None:
    """Poll an async condition: for what only time makes true (a refill, an expiry)."""
    end = time.monotonic() + within_s
    while not await check():
        assert time.monotonic() < end, f"not true within {within_s} s"
        await asyncio.sleep(0.05)


async def test_a_bucket_lets_its_limit_through_then_says_when_to_retry(limiter: RateLimiter) -> None:
    rpm = Bucket("k|rpm", 3, 60, 1)
    verdicts = [await limiter.reserve(demand(buckets=[rpm])) for _ in range(4)]
    assert [v.ok for v in verdicts] == [True, True, True, False]
    assert [v.levels[0][0] for v in verdicts] == [2, 1, 0, 0]
    refused = verdicts[3]
    assert (refused.kind, refused.index) == ("bucket", 0)
    assert 19.5 <= refused.retry_after_s <= 20.01  # one request refills in 60/3 s
    assert 59 <= verdicts[2].levels[0][1] <= 60.01  # empty: a minute until full


async def test_a_bucket_refills_continuously(limiter: RateLimiter) -> None:
    fast = Bucket("k|fast", 2, 1, 1)  # 2 per second
    assert all([(await limiter.reserve(demand(buckets=[fast]))).ok for _ in range(2)])
    assert not (await limiter.reserve(demand(buckets=[fast]))).ok

    async def refilled() -> bool:
        return (await limiter.reserve(demand(buckets=[fast]))).ok

    await until(refilled, 2.0)


async def test_one_refusal_takes_nothing_from_the_other_checks(limiter: RateLimiter) -> None:
    rpm, slot = Bucket("k|rpm", 10, 60, 1), Slot("k|conc", 1)
    assert (await limiter.reserve(demand(buckets=[rpm], slots=[slot]))).ok
    refused = await limiter.reserve(demand(buckets=[rpm], slots=[slot]))
    assert (refused.ok, refused.kind, refused.levels[0][0]) == (False, "slot", 9)
    assert (await limiter.reserve(demand(buckets=[rpm]))).levels[0][0] == 8  # the refused one took no request


async def test_settling_refunds_unused_tokens_and_charges_extra(limiter: RateLimiter) -> None:
    tpm = Bucket("k|tpm", 100, 60, 50)
    first = demand(buckets=[tpm])
    assert (await limiter.reserve(first)).levels[0][0] == 50
    await limiter.settle([Settlement(first.id, [BucketAdj(tpm.key, 100, 60, -40)], [], [])])  # used 10
    probe = Bucket("k|tpm", 100, 60, 0)
    assert 90 <= (await limiter.reserve(demand(buckets=[probe]))).levels[0][0] <= 91
    await limiter.settle([Settlement("x", [BucketAdj(tpm.key, 100, 60, 120)], [], [])])  # used 120 more
    assert (await limiter.reserve(demand(buckets=[probe]))).levels[0][0] < 0  # in debt: refused until refilled
    assert not (await limiter.reserve(demand(buckets=[Bucket("k|tpm", 100, 60, 1)]))).ok


async def test_slots_are_released_by_settling_and_expire_unsettled(limiter: RateLimiter) -> None:
    slot = Slot("k|conc", 2)
    a, b = demand(slots=[slot]), demand(slots=[slot], ttl_s=1)
    assert (await limiter.reserve(a)).ok and (await limiter.reserve(b)).ok
    assert not (await limiter.reserve(demand(slots=[slot]))).ok
    await limiter.settle([Settlement(a.id, [], [slot.key], [])])
    c = demand(slots=[slot])
    assert (await limiter.reserve(c)).ok  # a's slot was released

    async def b_expired() -> bool:  # b's holder "crashed": never settled, its slot expires after 1 s
        return (await limiter.reserve(demand(slots=[slot]))).ok

    await until(b_expired, 3.0)


async def test_spend_counts_reservations_in_flight_and_settles_to_the_actual_cost(limiter: RateLimiter) -> None:
    budget = Spend("team=a", "monthly", 100, 40)
    a, b = demand(spends=[budget]), demand(spends=[budget])
    va, vb = await limiter.reserve(a), await limiter.reserve(b)
    assert va.ok and vb.ok
    pid = va.periods[0][0]
    assert pid == period_bounds("monthly", time.time())[0]
    refused = await limiter.reserve(demand(spends=[budget]))
    assert (refused.ok, refused.kind, refused.spent, refused.reserved) == (False, "spend", 0, 80)
    assert refused.retry_after_s == 1.0  # in flight: may be given back soon
    await limiter.settle([Settlement(a.id, [], [], [SpendAdj("team=a", pid, 40, 10)]),
                          Settlement(b.id, [], [], [SpendAdj("team=a", pid, 40, 15)])])
    assert (await limiter.reserve(demand(spends=[budget]))).ok  # 25 spent + 40 reserved
    await limiter.settle([Settlement("late", [], [], [SpendAdj("team=a", pid, 0, 80)])])
    used_up = await limiter.reserve(demand(spends=[Spend("team=a", "monthly", 100, 1)]))
    assert (used_up.ok, used_up.spent, used_up.reserved) == (False, 105, 40)
    assert used_up.retry_after_s > 3600  # spent: until the month ends
    alert_only = await limiter.reserve(demand(spends=[Spend("team=a", "monthly", -1, 10**6)]))
    assert alert_only.ok  # an alert-only budget never refuses


async def test_a_crashed_holders_spend_reservation_expires(limiter: RateLimiter) -> None:
    budget = Spend("key=k", "daily", 100, 60)
    assert (await limiter.reserve(demand(spends=[budget], ttl_s=1))).ok  # never settled
    assert not (await limiter.reserve(demand(spends=[budget]))).ok

    async def freed() -> bool:
        return (await limiter.reserve(demand(spends=[budget]))).ok

    await until(freed, 3.0)


async def test_alerts_fire_once_per_period_at_each_threshold(limiter: RateLimiter) -> None:
    pid = period_bounds("daily", time.time())[0]
    alerts = [("p:1@50", 50), ("p:1@80", 80)]

    def spend(actual: int) -> Settlement:
        return Settlement("s", [], [], [SpendAdj("team=a", pid, 0, actual, alerts)])

    assert await limiter.settle([spend(40)]) == [[]]
    assert await limiter.settle([spend(20)]) == [[Fired("p:1@50", 60)]]
    assert await limiter.settle([spend(5), spend(30)]) == [[], [Fired("p:1@80", 95)]]
    assert await limiter.settle([spend(100)]) == [[]]  # each threshold once

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
from policies.limits import (
    Bucket,
    BucketRef,
    Demand,
    Fired,
    Settlement,
    Slot,
    Spend,
    SpendRef,
    period_bounds,
)


@pytest.fixture(params=["memory", "redis"])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[RateLimiter]:
    if request.param == "memory":
        yield MemoryRateLimiter()
        return
    server = request.getfixturevalue("redis_server")
    redis = RedisRateLimiter(server.url, prefix=f"t-{uuid.uuid4().hex[:8]}", timeout_s=2.0)
    try:
        yield redis
    finally:
        await redis.aclose()


_ids = iter(range(10**9))
REQUESTS = False  # a bucket that takes one request (True: the demand's tokens)


def demand(*, buckets: list[Bucket] | None = None, slots: list[Slot] | None = None,
           spends: list[Spend] | None = None, tokens: int = 0, cost: int = 0, ttl_s: int = 60) -> Demand:
    return Demand(f"r{next(_ids)}", ttl_s, tokens, cost, buckets or [], slots or [], spends or [])


def settle(rid: str, *, delta: int = 0, buckets: list[Bucket] | None = None, slots: list[str] | None = None,
           reserved: int = 0, actual: int = 0, spends: list[SpendRef] | None = None,
           periods: list[str] | None = None) -> Settlement:
    refs = [BucketRef(b.key, b.limit, b.window_s) for b in buckets or []]
    return Settlement(rid, delta, refs, slots or [], reserved, actual, spends or [], periods or [])


async def until(check: Any, within_s: float) -> None:
    """Poll an async condition: for what only time makes true (a refill, an expiry)."""
    end = time.monotonic() + within_s
    while not await check():
        assert time.monotonic() < end, f"not true within {within_s} s"
        await asyncio.sleep(0.05)


async def test_a_bucket_lets_its_limit_through_then_says_when_to_retry(limiter: RateLimiter) -> None:
    rpm = Bucket("k|rpm", 3, 60, REQUESTS)
    verdicts = [await limiter.reserve(demand(buckets=[rpm], tokens=999)) for _ in range(4)]
    assert [v.ok for v in verdicts] == [True, True, True, False]
    assert [v.levels[0][0] for v in verdicts] == [2, 1, 0, 0]  # one request each, whatever the tokens
    refused = verdicts[3]
    assert (refused.kind, refused.index) == ("bucket", 0)
    assert 19.5 <= refused.retry_after_s <= 20.01  # one request refills in 60/3 s
    assert 59 <= verdicts[2].levels[0][1] <= 60.01  # empty: a minute until full


async def test_a_bucket_refills_continuously(limiter: RateLimiter) -> None:
    fast = Bucket("k|fast", 2, 1, REQUESTS)  # 2 per second
    assert all([(await limiter.reserve(demand(buckets=[fast]))).ok for _ in range(2)])
    assert not (await limiter.reserve(demand(buckets=[fast]))).ok

    async def refilled() -> bool:
        return (await limiter.reserve(demand(buckets=[fast]))).ok

    await until(refilled, 2.0)


async def test_one_refusal_takes_nothing_from_the_other_checks(limiter: RateLimiter) -> None:
    rpm, slot = Bucket("k|rpm", 10, 60, REQUESTS), Slot("k|conc", 1)
    assert (await limiter.reserve(demand(buckets=[rpm], slots=[slot]))).ok
    refused = await limiter.reserve(demand(buckets=[rpm], slots=[slot]))
    assert (refused.ok, refused.kind, refused.levels[0][0]) == (False, "slot", 9)
    assert (await limiter.reserve(demand(buckets=[rpm]))).levels[0][0] == 8  # the refused one took no request


async def test_settling_refunds_unused_tokens_and_charges_extra(limiter: RateLimiter) -> None:
    tpm = Bucket("k|tpm", 100, 60, True)
    first = demand(buckets=[tpm], tokens=50)
    assert (await limiter.reserve(first)).levels[0][0] == 50
    await limiter.settle([settle(first.id, delta=-40, buckets=[tpm])])  # used 10
    assert 90 <= (await limiter.reserve(demand(buckets=[tpm], tokens=0))).levels[0][0] <= 91
    await limiter.settle([settle("x", delta=120, buckets=[tpm])])  # used 120 more
    assert (await limiter.reserve(demand(buckets=[tpm], tokens=0))).levels[0][0] < 0  # in debt: refused until refilled
    assert not (await limiter.reserve(demand(buckets=[tpm], tokens=1))).ok


async def test_slots_are_released_by_settling_and_expire_unsettled(limiter: RateLimiter) -> None:
    slot = Slot("k|conc", 2)
    a, b = demand(slots=[slot]), demand(slots=[slot], ttl_s=1)
    assert (await limiter.reserve(a)).ok and (await limiter.reserve(b)).ok
    assert not (await limiter.reserve(demand(slots=[slot]))).ok
    await limiter.settle([settle(a.id, slots=[slot.key])])
    c = demand(slots=[slot])
    assert (await limiter.reserve(c)).ok  # a's slot was released

    async def b_expired() -> bool:  # b's holder "crashed": never settled, its slot expires after 1 s
        return (await limiter.reserve(demand(slots=[slot]))).ok

    await until(b_expired, 3.0)


async def test_spend_counts_reservations_in_flight_and_settles_to_the_actual_cost(limiter: RateLimiter) -> None:
    budget = Spend("team=a", "monthly", 100)
    ref = [SpendRef("team=a")]
    a, b = demand(spends=[budget], cost=40), demand(spends=[budget], cost=40)
    va, vb = await limiter.reserve(a), await limiter.reserve(b)
    assert va.ok and vb.ok
    assert va.periods == [period_bounds("monthly", time.time())[0]]
    assert 0 < va.ends_in_s[0] <= 31 * 86_400
    refused = await limiter.reserve(demand(spends=[budget], cost=40))
    assert (refused.ok, refused.kind, refused.spent, refused.reserved) == (False, "spend", 0, 80)
    assert refused.retry_after_s == 1.0  # in flight: may be given back soon
    await limiter.settle([settle(a.id, reserved=40, actual=10, spends=ref, periods=va.periods),
                          settle(b.id, reserved=40, actual=15, spends=ref, periods=vb.periods)])
    assert (await limiter.reserve(demand(spends=[budget], cost=40))).ok  # 25 spent + 40 reserved
    await limiter.settle([settle("late", actual=80, spends=ref, periods=va.periods)])
    used_up = await limiter.reserve(demand(spends=[budget], cost=1))
    assert (used_up.ok, used_up.spent, used_up.reserved) == (False, 105, 40)
    assert used_up.retry_after_s > 3600  # spent: until the month ends
    alert_only = await limiter.reserve(demand(spends=[Spend("team=a", "monthly", -1)], cost=10**6))
    assert alert_only.ok  # an alert-only budget never refuses


async def test_a_crashed_holders_spend_reservation_expires(limiter: RateLimiter) -> None:
    budget = Spend("key=k", "daily", 100)
    assert (await limiter.reserve(demand(spends=[budget], cost=60, ttl_s=1))).ok  # never settled
    assert not (await limiter.reserve(demand(spends=[budget], cost=60))).ok

    async def freed() -> bool:
        return (await limiter.reserve(demand(spends=[budget], cost=60))).ok

    await until(freed, 3.0)


async def test_alerts_fire_once_per_period_at_each_threshold(limiter: RateLimiter) -> None:
    pid = period_bounds("daily", time.time())[0]
    ref = [SpendRef("team=a", [("p:1@50", 50), ("p:1@80", 80)])]

    def spend(actual: int) -> Settlement:
        return settle("s", actual=actual, spends=ref, periods=[pid])

    assert await limiter.settle([spend(40)]) == [[]]
    assert await limiter.settle([spend(20)]) == [[Fired("p:1@50", 60)]]
    assert await limiter.settle([spend(5), spend(30)]) == [[], [Fired("p:1@80", 95)]]
    assert await limiter.settle([spend(100)]) == [[]]  # each threshold once

"""What only the Redis backend has: shared round trips, scripts by SHA, Redis's own calendar, and
an outage (the server stopped mid-test, then started again on the same port)."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from redis.asyncio import Redis

from adapters.ratelimit import BackendUnavailable, RedisRateLimiter
from adapters.ratelimit.redis import LAYOUT, RESERVE, Script
from policies.limits import Bucket, Demand, period_bounds
from tests.servers import RedisServer, start_redis


def _limiter(url: str, **kwargs: Any) -> RedisRateLimiter:
    kwargs.setdefault("prefix", f"t-{uuid.uuid4().hex[:8]}")
    kwargs.setdefault("timeout_s", 2.0)
    return RedisRateLimiter(url, **kwargs)


def _rpm(i: int, key: str = "k|rpm", limit: int = 50) -> Demand:
    return Demand(f"d{i}", 60, 0, 0, [Bucket(key, limit, 60, False)], [], [])


async def test_the_scripts_calendar_is_pythons(redis_server: RedisServer) -> None:
    """Period ids and ends from Lua (Redis's clock replaced by each timestamp) equal period_bounds."""
    probe = Script("common.lua")
    body = probe.text + """
local out = {}
for i = 3, #ARGV do
  now = tonumber(ARGV[i])
  for _, kind in ipairs({'daily', 'weekly', 'monthly'}) do
    local pid, pend = period(kind)
    out[#out + 1] = pid
    out[#out + 1] = int(pend)
    out[#out + 1] = int(period_end(pid))
  end
end
return out
"""
    stamps = [0.0, 951_782_400.5, 951_868_799.9, 1_709_164_800.0, 1_735_689_599.999, 1_735_689_600.0,
              4_102_444_800.0] + [1_600_000_000 + i * 2_629_743.7 for i in range(60)]
    client = Redis.from_url(redis_server.url)
    try:
        flat = await client.eval(body, 0, "p:", "{}", *[repr(s) for s in stamps])
    finally:
        await client.aclose()
    got = [(flat[i].decode(), int(flat[i + 1]), int(flat[i + 2])) for i in range(0, len(flat), 3)]
    want = [(pid, int(end), int(end)) for s in stamps for kind in ("daily", "weekly", "monthly")
            for pid, _, end in [period_bounds(kind, s)]]  # type: ignore[arg-type]
    assert got == want


async def test_concurrent_requests_share_round_trips_and_the_limit_is_exact(redis_server: RedisServer) -> None:
    limiter = _limiter(redis_server.url)
    try:
        verdicts = await asyncio.gather(*(limiter.reserve(_rpm(i)) for i in range(200)))
        assert sum(v.ok for v in verdicts) == 50
        assert limiter.round_trips <= 20, limiter.round_trips  # 200 requests, a handful of EVALSHAs
    finally:
        await limiter.aclose()


async def test_two_replicas_share_one_limit(redis_server: RedisServer) -> None:
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    a, b = _limiter(redis_server.url, prefix=prefix), _limiter(redis_server.url, prefix=prefix)
    try:
        verdicts = await asyncio.gather(*(lim.reserve(_rpm(i, limit=30)) for i in range(40) for lim in (a, b)))
        assert sum(v.ok for v in verdicts) == 30
    finally:
        await a.aclose()
        await b.aclose()


async def test_keys_carry_the_layout_version_and_a_flushed_script_is_loaded_again(redis_server: RedisServer) -> None:
    limiter = _limiter(redis_server.url, prefix="t-layout")
    client = Redis.from_url(redis_server.url)
    try:
        assert (await limiter.reserve(_rpm(1, key=f"v-{uuid.uuid4().hex}"))).ok
        assert await client.script_exists(RESERVE.sha) == [True]
        await client.script_flush()  # as a restarted or failed-over Redis would have it
        assert (await limiter.reserve(_rpm(2))).ok
        assert await client.script_exists(RESERVE.sha) == [True]
        assert await client.keys(f"t-layout:{LAYOUT}:b|*")
    finally:
        await client.aclose()
        await limiter.aclose()


async def test_an_outage_fails_fast_is_reported_and_recovers() -> None:
    errors: list[str] = []
    with start_redis() as server:
        limiter = _limiter(server.url, timeout_s=0.5, probe_interval_s=0.1, on_error=errors.append)
        try:
            assert (await limiter.reserve(_rpm(1))).ok
            server.stop()
            started = time.monotonic()
            with pytest.raises(BackendUnavailable) as refused:
                await limiter.reserve(_rpm(2))
            assert "Redis" in str(refused.value) and "redis://" not in str(refused.value)
            assert time.monotonic() - started < 1.5
            assert limiter.status()["state"] == "unavailable"
            started = time.monotonic()  # down: refused at once, without waiting for a timeout
            for i in range(20):
                with pytest.raises(BackendUnavailable):
                    await limiter.reserve(_rpm(3 + i))
            assert time.monotonic() - started < 0.2
            assert errors[0] == "connection" and errors.count("down") == 20
            server.start()  # same port

            async def back() -> bool:
                return limiter.available

            end = time.monotonic() + 5
            while not await back():
                assert time.monotonic() < end, "never came back"
                await asyncio.sleep(0.05)
            assert limiter.status()["state"] == "ok"
            assert (await limiter.reserve(_rpm(99))).ok  # a fresh server: the script is loaded again
        finally:
            await limiter.aclose()


def test_reserve_script_is_versioned_by_its_text() -> None:
    assert RESERVE.sha == Script("common.lua", "reserve.lua").sha
    assert RESERVE.sha != Script("common.lua", "settle.lua").sha


async def test_a_batch_decides_and_settles_exactly_as_one_request_at_a_time(redis_server: RedisServer) -> None:
    """The scripts read each counter once per batch and write it once at the end: the verdicts, the spend
    and the alerts must be those of the same requests sent one round trip each. Demands share plans (one
    set of lists, as policies.limits.Plan builds) and mix kinds, so every check binds mid-batch."""
    from policies.limits import BucketRef, Settlement, Slot, Spend, SpendRef

    buckets = [Bucket("k|rpm", 3, 60, False), Bucket("k|tpm", 500, 60, True)]
    slots, spends = [Slot("k|conc", 5)], [Spend("team=t", "monthly", 350)]
    alert_only = ([Bucket("j|rpm", 3, 60, False)], [], [Spend("team=t", "monthly", -1)])  # reserves, never refuses
    one_slot: tuple[list[Bucket], list[Slot], list[Spend]] = ([], [Slot("d|conc", 1)], [])
    shapes = [(buckets, slots, spends), alert_only, one_slot]
    demands = [Demand(f"d{i}", 60, 40 + 30 * (i % 4), 100 + 10 * i, *shapes[i % 3]) for i in range(14)]

    async def run(batched: bool) -> tuple[list[tuple[bool, str, int, list[int]]], list[Any], dict[str, Any]]:
        limiter = _limiter(redis_server.url)
        try:
            if batched:
                verdicts = await asyncio.gather(*(limiter.reserve(d) for d in demands))
            else:
                verdicts = [await limiter.reserve(d) for d in demands]
            assert limiter.round_trips == (1 if batched else len(demands))
            refs = [BucketRef(b.key, b.limit, b.window_s) for b in buckets if b.tokens]
            keys, alerts = [s.key for s in slots], [SpendRef("team=t", [("a@25", 87), ("a@50", 175)])]
            settles = [Settlement(d.id, -20, refs, keys, d.cost, d.cost // 2, alerts, v.periods)
                       for d, v in zip(demands, verdicts, strict=True) if v.ok and d.buckets is buckets]
            if batched:
                fired = await limiter.settle(settles)
            else:
                fired = [f for s in settles for f in await limiter.settle([s])]
            client = Redis.from_url(redis_server.url)
            try:
                state = {k.decode().removeprefix(limiter.prefix): await client.type(k)
                         for k in await client.keys(f"{limiter.prefix}*")}
                for key in list(state):
                    if state[key] == b"hash":
                        state[key] = await client.hgetall(limiter.prefix + key)
                    elif state[key] == b"zset":
                        state[key] = await client.zrange(limiter.prefix + key, 0, -1)
                    elif state[key] == b"set":
                        state[key] = sorted(await client.smembers(limiter.prefix + key))
                    else:
                        level = (await client.get(limiter.prefix + key) or b"0").split(b" ")[0]
                        state[key] = int(float(level))  # whole tokens: the one-at-a-time run refills a little
            finally:
                await client.aclose()
            return [(v.ok, v.kind, v.index, [lv for lv, _ in v.levels]) for v in verdicts], fired, state
        finally:
            await limiter.aclose()

    batched, sequential = await run(True), await run(False)
    assert batched == sequential
    kinds = {kind for _, kind, _, _ in batched[0]}
    assert {"bucket", "slot", "spend"} <= kinds, kinds  # each check refused someone mid-batch
    assert any(batched[1]), "an alert fired"

"""The limits plug-in on the Redis backend (a real redis-server), in one gateway process: the same
answers as in-process, a budget burst, and Redis killed mid-load with each ``on_backend_error``."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from adapters.testdoubles import FunctionUpstream, chat_completion
from adapters.upstream import UpstreamCall
from tests.gateway.inprocess import in_process
from tests.gateway.policy.limits_support import MSG, Who, as_key, limits_config, limits_of, policies, publish
from tests.servers import RedisServer, start_redis


def _upstream(usage: tuple[int, int] = (3, 5), delay_s: float = 0.0) -> FunctionUpstream:
    async def handler(call: UpstreamCall) -> Any:
        if delay_s:
            await asyncio.sleep(delay_s)
        return chat_completion("ok", usage=usage)

    return FunctionUpstream(handler, "fn")


def _redis(url: str, **settings: Any) -> dict[str, Any]:
    return {"backend": "redis", "redis_url": url, "key_prefix": f"t-{uuid.uuid4().hex[:8]}", **settings}


async def _chat(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.post("/v1/chat/completions", json={"model": "r", "messages": MSG, **body},
                             headers=as_key("k1", "t-a"))


@contextlib.asynccontextmanager
async def _gateway(settings: dict[str, Any], upstream: FunctionUpstream,
                   ) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    async with in_process(limits_config(**settings), upstreams={"fn": upstream}, plugins=[Who()]) as (gw, client):
        yield gw, client


async def test_redis_backend_answers_like_the_in_process_one(redis_server: RedisServer) -> None:
    async with _gateway(_redis(redis_server.url), _upstream()) as (gw, client):
        publish(gw, policies_snapshot=policies({"limits": {"requestsPerMinute": 2, "tokensPerMinute": 1000}}))
        first = await _chat(client, max_tokens=95)
        assert first.status_code == 200
        assert (first.headers["x-ratelimit-remaining-requests"], first.headers["x-ratelimit-remaining-tokens"]) == (
            "1", "900")
        assert (await _chat(client, max_tokens=95)).status_code == 200
        r = await _chat(client)
        assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limit_exceeded"
        assert int(r.headers["retry-after"]) >= 1 and r.headers["x-ratelimit-limit-requests"] == "2"
        ready = (await client.get("/readyz")).json()
        limits = ready["plugins"]["limits"]
        assert limits == {"backend": "redis", "state": "ok", "on_backend_error": "closed", "settlements_queued": 0,
                          "requests_per_round_trip": limits["requests_per_round_trip"]}
        assert limits["requests_per_round_trip"] >= 1


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_100_concurrent_requests_against_a_budget_that_fits_10(backend: str, request: pytest.FixtureRequest,
                                                                     ) -> None:
    # each request: a 5-token prompt estimate at $1 plus max_tokens 10 at $2 = $25 worst case, and the
    # upstream reports exactly that usage, so $250 fits 10 requests, reserved or spent
    settings = _redis(request.getfixturevalue("redis_server").url) if backend == "redis" else {}
    async with _gateway(settings, _upstream(usage=(5, 10), delay_s=0.05)) as (gw, client):
        publish(gw, policies_snapshot=policies({"budget": {"limitUsd": 250, "period": "daily"}}))
        answers = await asyncio.gather(*(_chat(client, max_tokens=10) for _ in range(100)))
        codes = [r.status_code for r in answers]
        assert set(codes) <= {200, 429}
        assert 10 <= codes.count(200) <= 11, codes.count(200)
        refused = next(r for r in answers if r.status_code == 429)
        assert refused.json()["error"]["type"] == "insufficient_quota"
        await gw.usage.drain()
        r = await _chat(client, max_tokens=10)  # $250 spent: nothing more today
        assert r.status_code == 429 and "$250.00 spent" in r.json()["error"]["message"]


async def _load(client: httpx.AsyncClient, until: asyncio.Event, codes: list[tuple[float, int, str]]) -> None:
    """Requests one after another until told to stop: (time, status, error code) of each."""
    while not until.is_set():
        r = await _chat(client, max_tokens=5)
        code = r.json()["error"]["code"] if r.status_code >= 400 else ""
        codes.append((time.monotonic(), r.status_code, code))
        if r.status_code == 503:
            assert int(r.headers["retry-after"]) >= 1
        await asyncio.sleep(0.001)  # in-process, a refusal never suspends: let the test's other tasks run


async def _wait(predicate: Any, within_s: float) -> None:
    end = time.monotonic() + within_s
    while not predicate():
        assert time.monotonic() < end, f"not true within {within_s} s"
        await asyncio.sleep(0.02)


async def test_redis_killed_mid_load_fails_closed_with_503_then_recovers() -> None:
    with start_redis() as server:
        settings = _redis(server.url, timeout_s=0.3, probe_interval_s=0.1)
        async with _gateway(settings, _upstream()) as (gw, client):
            publish(gw, policies_snapshot=policies({"limits": {"requestsPerMinute": 100_000}}))
            stop, codes = asyncio.Event(), []
            loads = [asyncio.create_task(_load(client, stop, codes)) for _ in range(4)]
            await _wait(lambda: len(codes) >= 20, 5)
            assert server._process is not None
            server._process.kill()  # SIGKILL: no goodbye to its clients
            killed_at = time.monotonic()
            await _wait(lambda: sum(1 for at, s, _ in codes if at > killed_at and s == 503) >= 20, 5)
            ready = await client.get("/readyz")
            assert ready.status_code == 200 and ready.json()["status"] == "ready"  # readiness does not flap
            limits = ready.json()["plugins"]["limits"]
            assert limits["state"] == "unavailable" and "redis://" not in str(limits)
            server._process.wait()
            server._process = None
            server.start()  # the same port, empty: scripts and counters are gone
            restarted_at = time.monotonic()
            await _wait(lambda: sum(1 for at, s, _ in codes if at > restarted_at and s == 200) >= 20, 10)
            stop.set()
            await asyncio.gather(*loads)
            during = [(s, c) for at, s, c in codes if killed_at < at < restarted_at]
            assert {s for s, _ in during} <= {200, 503}  # at most the requests already past Redis finish
            assert all(c == "rate_limiter_unavailable" for s, c in during if s == 503)
            assert {s for _, s, _ in codes} <= {200, 503}  # no 500: nothing crashed
            metrics = (await client.get("/metrics")).text
            assert 'llmops_ratelimit_backend_errors_total{backend="redis",kind="connection"}' in metrics
            assert 'llmops_ratelimit_decisions_without_backend_total{mode="closed"}' in metrics
            assert 'llmops_policy_denials_total{reason="limiter_unavailable"}' in metrics
            assert (await client.get("/readyz")).json()["plugins"]["limits"]["state"] == "ok"


async def test_redis_down_fails_open_to_per_replica_limits_and_catches_up_the_spend() -> None:
    with start_redis() as server:
        settings = _redis(server.url, on_backend_error="open", timeout_s=0.3, probe_interval_s=0.1)
        async with _gateway(settings, _upstream()) as (gw, client):
            publish(gw, policies_snapshot=policies({"limits": {"requestsPerMinute": 3}}))
            assert (await _chat(client)).status_code == 200  # one taken in Redis
            server.stop()
            codes = [(await _chat(client)).status_code for _ in range(5)]
            assert codes == [200, 200, 200, 429, 429]  # this replica's own bucket of 3
            assert (await client.get("/readyz")).json()["plugins"]["limits"]["state"] == "unavailable"
            server.start()
            await _wait(lambda: limits_of(gw)._redis.limiter.available, 10)
            r = await _chat(client)  # Redis decides again (a fresh one here, without persistence: a full bucket)
            assert r.status_code == 200 and r.headers["x-ratelimit-remaining-requests"] == "2"
            metrics = (await client.get("/metrics")).text
            assert 'llmops_ratelimit_decisions_without_backend_total{mode="open"} 5.0' in metrics

"""The limits plug-in in one process (in-process backend): what applies, what a refusal looks like,
what a success carries, and how reservations settle. No sockets: FunctionUpstream, in-process app."""

from __future__ import annotations

import asyncio
import re
from decimal import Decimal
from typing import Any

import pytest

from adapters.testdoubles import FunctionUpstream, chat_completion, stream_chunks
from adapters.upstream import UpstreamCall
from policies.documents import Limits
from tests.gateway.inprocess import in_process
from tests.gateway.policy.limits_support import (
    MSG,
    Who,
    as_key,
    key,
    keys,
    limits_config,
    limits_of,
    policies,
    publish,
    team,
)


def _upstream(usage: tuple[int, int] = (3, 5)) -> FunctionUpstream:
    def handler(call: UpstreamCall) -> Any:
        return stream_chunks(["a", "b"], usage=usage) if call.stream else chat_completion("ok", usage=usage)

    return FunctionUpstream(handler, "fn")


def _openai_error(r: Any, status: int, kind: str, code: str) -> str:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"]) == (kind, code)
    return str(error["message"])


async def _chat(client: Any, who: dict[str, str] | None = None, **body: Any) -> Any:
    return await client.post("/v1/chat/completions", json={"model": "r", "messages": MSG, **body},
                             headers=who or as_key("k1", "t-a"))


async def test_idle_without_policies_or_keys_adds_nothing() -> None:
    async with in_process(limits_config(), upstreams={"fn": _upstream()}, plugins=[Who()]) as (gw, client):
        r = await _chat(client)
        assert r.status_code == 200
        assert not [h for h in r.headers if h.startswith("x-ratelimit")]
        publish(gw, policies_snapshot=policies({"guardrails": [{"kind": "max_input", "maxChars": 100}]}))
        r = await _chat(client)
        assert r.status_code == 200 and "x-ratelimit-limit-requests" not in r.headers


async def test_requests_per_minute_then_429_with_retry_after_headers_and_openai_body() -> None:
    async with in_process(limits_config(), upstreams={"fn": _upstream()}, plugins=[Who()]) as (gw, client):
        publish(gw, policies_snapshot=policies({"limits": {"requestsPerMinute": 3}}))
        seen = []
        for _ in range(3):
            r = await _chat(client)
            assert r.status_code == 200, r.text
            assert r.headers["x-ratelimit-limit-requests"] == "3"
            seen.append(r.headers["x-ratelimit-remaining-requests"])
        assert seen == ["2", "1", "0"]
        assert re.fullmatch(r"59\.\d+s|1m0s", r.headers["x-ratelimit-reset-requests"])  # a minute to be full
        r = await _chat(client)
        message = _openai_error(r, 429, "rate_limit_error", "rate_limit_exceeded")
        assert "3 requests per minute (policy policy-0)" in message
        assert 1 <= int(r.headers["retry-after"]) <= 20  # one request refills in 20 s
        assert r.headers["x-ratelimit-remaining-requests"] == "0"
        # per key by default: another key has its own bucket
        r = await _chat(client, as_key("k2", "t-a"))
        assert r.status_code == 200 and r.headers["x-ratelimit-remaining-requests"] == "2"


async def test_scope_applies_a_policy_to_its_teams_only_and_empty_scope_to_anonymous_too() -> None:
    async with in_process(limits_config(), upstreams={"fn": _upstream()}, plugins=[Who()]) as (gw, client):
        publish(gw, policies_snapshot=policies({"scope": {"teams": ["t-a"]}, "limits": {"requestsPerMinute": 1}}))
        assert (await _chat(client, as_key("k1", "t-a"))).status_code == 200
        assert (await _chat(client, as_key("k1", "t-a"))).status_code == 429
        assert (await _chat(client, as_key("k9", "t-b"))).status_code == 200
        assert (await _chat(client, as_key("k9", "t-b"))).status_code == 200
        assert (await client.post("/v1/chat/completions", json={"model": "r", "messages": MSG})).status_code == 200
        publish(gw, policies_snapshot=policies({"limits": {"requestsPerMinute": 1}}, generation=2))
        anonymous = [(await client.post("/v1/chat/completions", json={"model": "r", "messages": MSG})).status_code
                     for _ in range(2)]
        assert anonymous == [200, 429]  # every anonymous caller shares one key: "-"


async def test_tokens_per_minute_reserve_max_tokens_and_settle_to_metered_usage() -> None:
    async with in_process(limits_config(), upstreams={"fn": _upstream(usage=(3, 5))}, plugins=[Who()]) as (gw, client):
        publish(gw, policies_snapshot=policies({"limits": {"tokensPerMinute": 100}}))
        r = await _chat(client, max_tokens=40)  # reserves 40 + the prompt's estimate (5)
        assert r.status_code == 200
        assert r.headers["x-ratelimit-limit-tokens"] == "100"
        assert r.headers["x-ratelimit-remaining-tokens"] == "55"
        r = await _chat(client, max_tokens=40)
        assert r.headers["x-ratelimit-remaining-tokens"] == "10"
        r = await _chat(client, max_tokens=40)
        message = _openai_error(r, 429, "rate_limit_error", "rate_limit_exceeded")
        assert "100 tokens per minute" in message and "reserves 45" in message
        await gw.usage.drain()  # on_finish: each used 8 tokens, 37 come back each
        r = await _chat(client, max_tokens=40)
        assert r.status_code == 200
        assert 100 - 16 - 45 <= int(r.headers["x-ratelimit-remaining-tokens"]) <= 100 - 16 - 45 + 1
        r = await _chat(client, max_tokens=500)  # more than the whole limit: never fits
        assert "more than the 100 tokens per minute" in _openai_error(r, 429, "rate_limit_error",
                                                                         "rate_limit_exceeded")


async def test_max_tokens_per_request_caps_by_default_or_rejects_when_configured() -> None:
    up = _upstream()
    doc = {"limits": {"maxTokensPerRequest": 50}}
    async with in_process(limits_config(), upstreams={"fn": up}, plugins=[Who()]) as (gw, client):
        publish(gw, policies_snapshot=policies(doc))
        assert (await _chat(client, max_tokens=500)).status_code == 200
        assert (await _chat(client)).status_code == 200
        assert (await _chat(client, max_completion_tokens=20)).status_code == 200
        assert [c.body.get("max_tokens") for c in up.calls] == [50, 50, None]
        assert up.calls[2].body["max_completion_tokens"] == 20
    async with in_process(limits_config(max_tokens_over_limit="reject"), upstreams={"fn": up},
                          plugins=[Who()]) as (gw, client):
        publish(gw, policies_snapshot=policies(doc))
        r = await _chat(client, max_tokens=51)
        message = _openai_error(r, 400, "invalid_request_error", "max_tokens_exceeded")
        assert r.json()["error"]["param"] == "max_tokens" and "limit of 50" in message
        assert (await _chat(client, max_tokens=50)).status_code == 200


async def test_models_allow_and_deny_globs_on_route_and_model() -> None:
    async with in_process(limits_config(("r", "gpt-4o"), ("cheap", "gpt-4o-mini")), upstreams={"fn": _upstream()},
                          plugins=[Who()]) as (gw, client):
        publish(gw, policies_snapshot=policies({"models": {"allow": ["gpt-4o*"], "deny": ["*-mini"]}}))
        assert (await _chat(client)).status_code == 200
        r = await client.post("/v1/chat/completions", json={"model": "cheap", "messages": MSG}, headers=as_key("k1"))
        message = _openai_error(r, 403, "permission_error", "model_not_allowed")
        assert "gpt-4o-mini" in message and r.json()["error"]["param"] == "model"
        publish(gw, policies_snapshot=policies({"models": {"allow": ["fn/gpt-4o"]}}, generation=2))
        assert (await _chat(client)).status_code == 200  # provider/model matches too
        publish(gw, policies_snapshot=policies({"models": {"allow": ["claude-*"]}}, generation=3))
        _openai_error(await _chat(client), 403, "permission_error", "model_not_allowed")


async def test_concurrency_slot_is_held_until_the_request_finished_then_released() -> None:
    release = asyncio.Event()

    async def slow(call: UpstreamCall) -> Any:
        await release.wait()
        return chat_completion("ok")

    async with in_process(limits_config(), upstreams={"fn": FunctionUpstream(slow, "fn")},
                          plugins=[Who()]) as (gw, client):
        publish(gw, policies_snapshot=policies({"limits": {"maxConcurrentRequests": 1}}))
        first = asyncio.create_task(_chat(client))
        while not limits_of(gw)._live:
            await asyncio.sleep(0.001)
        r = await _chat(client)
        message = _openai_error(r, 429, "rate_limit_error", "concurrency_limit_exceeded")
        assert "at most 1 at once" in message and r.headers["retry-after"] == "1"
        release.set()
        assert (await first).status_code == 200
        await gw.usage.drain()
        assert (await _chat(client)).status_code == 200


async def test_a_failed_upstream_call_gives_its_tokens_and_slot_back() -> None:
    def broken(call: UpstreamCall) -> Any:
        from adapters.errors import UpstreamStatus

        raise UpstreamStatus(400, b'{"error": {"message": "bad"}}', "fn")

    async with in_process(limits_config(), upstreams={"fn": FunctionUpstream(broken, "fn")},
                          plugins=[Who()]) as (gw, client):
        publish(gw, policies_snapshot=policies({"limits": {"tokensPerMinute": 100, "maxConcurrentRequests": 1}}))
        for _ in range(5):  # each reserves 45 tokens; a failure settles them back to 0 used
            assert (await _chat(client, max_tokens=40)).status_code == 400
            await gw.usage.drain()
        assert limits_of(gw)._memory.outstanding() == 0


async def test_budget_blocks_with_429_and_a_clear_message_and_settles_to_the_metered_cost() -> None:
    # $1 a prompt token, $2 a completion token; max_tokens 10 and a 5-token prompt estimate: $25 worst case
    async with in_process(limits_config(), upstreams={"fn": _upstream(usage=(3, 5))}, plugins=[Who()]) as (gw, client):
        publish(gw, policies_snapshot=policies({"budget": {"limitUsd": 60, "period": "monthly"}}))
        assert (await _chat(client, max_tokens=10)).status_code == 200
        assert (await _chat(client, max_tokens=10)).status_code == 200
        r = await _chat(client, max_tokens=10)  # $50 reserved, $25 more does not fit $60
        message = _openai_error(r, 429, "insufficient_quota", "budget_exceeded")
        assert "monthly budget of $60.00 for team t-a" in message and "$50.00 reserved" in message
        assert r.headers["retry-after"] == "1"  # requests in flight may give some back
        await gw.usage.drain()  # each cost $3 + $10: $26 spent, nothing reserved
        assert (await _chat(client, max_tokens=10)).status_code == 200
        await gw.usage.drain()
        r = await _chat(client, max_tokens=10)  # $39 spent + $25 > $60: used up until the month ends
        message = _openai_error(r, 429, "insufficient_quota", "budget_exceeded")
        assert "$39.00 spent" in message and int(r.headers["retry-after"]) > 3600
        assert (await _chat(client, as_key("k1", "t-b"), max_tokens=10)).status_code == 200  # per team


async def test_budget_raise_takes_effect_at_once_and_402_when_configured() -> None:
    async with in_process(limits_config(budget_status=402), upstreams={"fn": _upstream(usage=(3, 5))},
                          plugins=[Who()]) as (gw, client):
        publish(gw, policies_snapshot=policies({"budget": {"limitUsd": 20, "period": "daily"}}))
        r = await _chat(client, max_tokens=10)
        _openai_error(r, 402, "insufficient_quota", "budget_exceeded")
        publish(gw, policies_snapshot=policies({"budget": {"limitUsd": 30, "period": "daily"}}, generation=2))
        assert (await _chat(client, max_tokens=10)).status_code == 200


async def test_key_and_team_own_limits_and_budgets_from_the_keys_snapshot() -> None:
    async with in_process(limits_config(), upstreams={"fn": _upstream()}, plugins=[Who()]) as (gw, client):
        snapshot = keys(key("k1", "t1", limits=Limits(requests_per_minute=1)), key("k2", "t1"), key("k3", "t1"),
                        teams=(team("t1", "research", limits=Limits(requests_per_minute=2),
                                    budget_usd=Decimal("1000"), budget_period="weekly"),))
        publish(gw, keys_snapshot=snapshot)
        # nothing is taken when one check refuses: the team's own weekly budget ($1000) refuses a $2048
        # worst case (1024 default max_tokens at $2), and the rate limits below are untouched
        r = await _chat(client, as_key("k9", "research"))
        assert "weekly budget of $1,000.00 for team research (team)" in _openai_error(
            r, 429, "insufficient_quota", "budget_exceeded")
        # principal.team is the team's name; the key's team_id finds the same team without one
        assert (await _chat(client, as_key("k1", "research"), max_tokens=10)).status_code == 200
        r = await _chat(client, as_key("k1", "research"), max_tokens=10)
        assert "(key)" in _openai_error(r, 429, "rate_limit_error", "rate_limit_exceeded")
        assert (await _chat(client, as_key("k2"), max_tokens=10)).status_code == 200  # the team's 2nd request
        r = await _chat(client, as_key("k3"), max_tokens=10)
        assert "(team)" in _openai_error(r, 429, "rate_limit_error", "rate_limit_exceeded")


async def test_stream_answers_carry_the_headers_too_and_settle() -> None:
    async with in_process(limits_config(), upstreams={"fn": _upstream(usage=(3, 5))}, plugins=[Who()]) as (gw, client):
        publish(gw, policies_snapshot=policies({"limits": {"requestsPerMinute": 5, "tokensPerMinute": 1000}}))
        r = await _chat(client, stream=True, max_tokens=100)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-ratelimit-remaining-requests"] == "4"
        assert r.headers["x-ratelimit-remaining-tokens"] == "895"
        await gw.usage.drain()
        r = await _chat(client, max_tokens=100)
        assert 895 + 97 - 105 <= int(r.headers["x-ratelimit-remaining-tokens"]) <= 895 + 97 - 105 + 1


async def test_a_reload_keeps_the_counters() -> None:
    async with in_process(limits_config(), upstreams={"fn": _upstream()}, plugins=[Who()]) as (gw, client):
        snapshot = policies({"limits": {"requestsPerMinute": 2}})
        publish(gw, policies_snapshot=snapshot)
        assert (await _chat(client)).status_code == 200
        first = gw.generation
        await gw.reload(gw.cfg)
        assert gw.generation is not first
        publish(gw, policies_snapshot=snapshot)
        assert (await _chat(client)).headers["x-ratelimit-remaining-requests"] == "0"
        assert (await _chat(client)).status_code == 429


def test_bad_settings_fail_at_load_naming_the_key() -> None:
    from gateway.config import ConfigError, decode_config

    with pytest.raises(ConfigError, match=r"plugins\[0\]\.settings\.on_backend_error"):
        decode_config(limits_config(on_backend_error="maybe"))
    with pytest.raises(ConfigError, match="redis_url"):
        from gateway.plugins import load_plugins

        load_plugins(decode_config(limits_config(backend="redis")).plugins)


def test_workers_without_redis_warn_or_refuse(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
                                              ) -> None:
    import gateway.policy.limits as limits

    assert limits.LimitsPlugin().readiness() is None  # one process, in-process counters: nothing to report
    monkeypatch.setattr(limits, "multiprocess_dir", lambda: "/run/llmops-metrics")  # as under serve --workers 2
    with pytest.raises(ValueError, match="set redis_url"):
        limits.LimitsPlugin(limits.LimitsSettings(workers_without_redis="refuse"))
    with caplog.at_level("WARNING", logger="llmops.limits"):
        plugin = limits.LimitsPlugin()
    assert "each worker keeps its own counters" in caplog.text
    assert (plugin.readiness() or {})["warning"].startswith("per-worker counters")
    not_started = limits.LimitsPlugin(limits.LimitsSettings(redis_url="redis://127.0.0.1:1/0"))
    assert not_started.readiness() is None  # Redis, before its lifespan: nothing to say yet


def test_the_charts_redis_url_is_used_unless_the_settings_say_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    import gateway.policy.limits as limits

    assert not limits.LimitsPlugin()._use_redis  # nothing configured: in process
    monkeypatch.setenv("LLMOPS_REDIS_URL", "redis://:pw@redis:6379/0")
    assert limits.LimitsPlugin()._use_redis
    assert not limits.LimitsPlugin(limits.LimitsSettings(backend="memory"))._use_redis
    monkeypatch.setenv("LLMOPS_REDIS_URL", "http://redis")
    with pytest.raises(ValueError, match="redis:// or rediss://"):
        limits.LimitsPlugin()
    monkeypatch.delenv("LLMOPS_REDIS_URL")
    with pytest.raises(ValueError, match="MY_REDIS is not set"):
        limits.LimitsPlugin(limits.LimitsSettings(redis_url_env="MY_REDIS"))

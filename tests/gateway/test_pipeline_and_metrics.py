"""Plug-ins run before routing; metrics and usage records come out the other end."""

from __future__ import annotations

import httpx

from adapters.errors import AuthenticationFailed
from adapters.gateway_plugins import Principal, RequestContext
from gateway.config import decode_config
from tests.conftest import capture_usage, run_gateway, simple_config

MSG = [{"role": "user", "content": "hi"}]


class RequireKey:
    name = "require-key"

    async def on_request(self, ctx: RequestContext) -> None:
        if ctx.headers.get("authorization") != "Bearer good":
            raise AuthenticationFailed("Invalid API key", code="invalid_api_key")
        ctx.principal = Principal(key_id="k1", team="team-a")


class Redirect:
    name = "redirect"

    async def on_request(self, ctx: RequestContext) -> None:
        if ctx.model == "alias":
            ctx.route_name = "r"
            ctx.tags["arm"] = "b"


async def test_plugins_authenticate_and_transform(mock) -> None:
    async with run_gateway(decode_config(simple_config(mock.url)), plugins=[RequireKey(), Redirect()]) as g, \
            httpx.AsyncClient(base_url=g.url) as h:
        seen = capture_usage(g.gateway)
        r = await h.post("/v1/chat/completions", json={"model": "alias", "messages": MSG})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert mock.requests == []
        r = await h.post("/v1/chat/completions", json={"model": "alias", "messages": MSG},
                         headers={"authorization": "Bearer good"})
        assert r.status_code == 200 and r.headers["x-llmops-route"] == "r"
        await g.gateway.usage.drain()
    ok = [s for s in seen if s.status == 200]
    assert ok[0].principal == Principal(key_id="k1", team="team-a") and ok[0].tags == {"arm": "b"}


async def test_prometheus_metrics_after_traffic(mock) -> None:
    async with run_gateway(simple_config(mock.url)) as g, httpx.AsyncClient(base_url=g.url) as h:
        await h.post("/v1/chat/completions", json={"model": "r", "messages": MSG})
        await h.post("/v1/chat/completions", json={"model": "r", "stream": True, "messages": MSG})
        await h.post("/v1/chat/completions", json={"model": "nope", "messages": MSG})
        await g.gateway.usage.drain()
        text = (await h.get("/metrics")).text
    assert 'llmops_requests_total{provider="p0",route="r",status="200"} 2.0' in text
    assert 'llmops_requests_total{provider="-",route="-",status="404"} 1.0' in text
    assert 'llmops_tokens_total{kind="completion",model="m0",provider="p0",route="r",team="-"} 32.0' in text
    assert 'llmops_time_to_first_token_seconds_count{provider="p0",route="r"} 1.0' in text
    assert "llmops_inflight_requests 0.0" in text
    assert "llmops_request_latency_seconds_bucket" in text

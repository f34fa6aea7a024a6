"""Every response is counted in llmops_requests_total and logged once, carries x-request-id,
and 405s say which methods are allowed: chat, non-chat, unknown paths and the admin API alike."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapters.gateway_plugins import RequestContext
from tests.conftest import capture_usage, run_gateway, simple_config

MSG = [{"role": "user", "content": "hi"}]


def _requests_total(text: str) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "llmops_requests_total":
                key = (s.labels["route"], s.labels["status"])
                out[key] = out.get(key, 0) + s.value
    return out


async def test_every_response_is_counted_and_logged_once(mock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="llmops.access")
    async with run_gateway(simple_config(mock.url)) as g, httpx.AsyncClient(base_url=g.url) as h:
        seen = capture_usage(g.gateway)
        calls = [
            ("GET", "/v1/models", 200), ("POST", "/v1/models", 405), ("GET", "/v1/models/r", 200),
            ("GET", "/v1/models/nope", 404), ("GET", "/no/such/path", 404), ("DELETE", "/readyz", 405),
            ("GET", "/readyz", 200), ("GET", "/v1/chat/completions", 405), ("POST", "/serve/x", 404),
            ("GET", "/llm-ops/v1/nope", 404), ("DELETE", "/llm-ops/v1/gateway/reload", 405),
            ("POST", "/v1/chat/completions/", 400),  # the chat service under another spelling: counted once too
        ]
        for i, (method, path, status) in enumerate(calls):
            r = await h.request(method, path, headers={"x-request-id": f"req-{i}"})
            assert r.status_code == status, (method, path, r.text)
            assert r.headers["x-request-id"] == f"req-{i}", (method, path)
        await g.gateway.usage.drain()
        assert sorted(rec.request_id for rec in seen) == sorted(f"req-{i}" for i in range(len(calls)))
        assert [rec.status for rec in sorted(seen, key=lambda rec: int(rec.request_id[4:]))] == [
            c[2] for c in calls]
        logged = [getattr(rec, "fields", {}).get("request_id") for rec in caplog.records if rec.name == "llmops.access"]
        assert sorted(x for x in logged if x and x.startswith("req-")) == sorted(f"req-{i}" for i in range(len(calls)))
        totals = _requests_total((await h.get("/metrics")).text)
        # Bounded labels: the matched template, or `unmatched`; never the raw path a client chose.
        assert totals[("/v1/models/{model_id}", "404")] == 1 and totals[("unmatched", "404")] == 2
        assert not any("nope" in route or "no/such" in route for route, _ in totals)


async def test_chat_bugs_answer_500_and_are_counted(mock) -> None:
    class Broken:  # a bug in a plug-in that fails closed
        async def on_request(self, ctx: RequestContext) -> None:
            raise RuntimeError("a bug in a plug-in")

    async with run_gateway(simple_config(mock.url), plugins=[Broken()]) as g, \
            httpx.AsyncClient(base_url=g.url) as h:
        r = await h.post("/v1/chat/completions", json={"model": "r", "messages": MSG})
        assert r.status_code == 500 and r.json()["error"]["type"] == "server_error"
        assert "a bug" not in r.text
        assert _requests_total(await _scrape(g, h))[("-", "500")] == 1


async def test_relay_bugs_count_as_500_not_200(mock, monkeypatch: pytest.MonkeyPatch) -> None:
    async with run_gateway(simple_config(mock.url)) as g, httpx.AsyncClient(base_url=g.url) as h:
        async def broken(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError("a bug in the relay")

        monkeypatch.setattr(g.gateway.relay, "run", broken)
        r = await h.post("/v1/chat/completions", json={"model": "r", "messages": MSG})
        assert r.status_code == 500
        totals = _requests_total(await _scrape(g, h))
        assert totals.get(("r", "500")) == 1 and ("r", "200") not in totals


async def _scrape(g: Any, h: httpx.AsyncClient) -> str:
    await g.gateway.usage.drain()
    return (await h.get("/metrics")).text


async def test_405_lists_allowed_methods_everywhere(mock) -> None:
    async with run_gateway(simple_config(mock.url)) as g, httpx.AsyncClient(base_url=g.url) as h:
        r = await h.get("/v1/chat/completions")
        assert r.status_code == 405 and r.headers["allow"] == "POST"
        r = await h.post("/v1/models")
        assert r.status_code == 405 and "GET" in r.headers["allow"]
        assert r.json()["error"]["type"] == "invalid_request_error"
        r = await h.delete("/llm-ops/v1/gateway/reload")
        assert r.status_code == 405 and "POST" in r.headers["allow"] and r.json()["status"] == "fail"


async def test_first_request_id_wins_on_every_path(mock) -> None:
    async with run_gateway(simple_config(mock.url)) as g, httpx.AsyncClient(base_url=g.url) as h:
        two = [("x-request-id", "first"), ("x-request-id", "second")]
        r = await h.post("/v1/chat/completions", json={"model": "r", "messages": MSG}, headers=two)
        assert r.headers["x-request-id"] == "first" and mock.requests[-1].headers["x-request-id"] == "first"
        assert (await h.get("/nope", headers=two)).headers["x-request-id"] == "first"
        long_id = "a" * 129  # over adapters/request_id.py's 128 characters: replaced
        r = await h.post("/v1/chat/completions", json={"model": "r", "messages": MSG},
                         headers={"x-request-id": long_id})
        assert r.headers["x-request-id"] != long_id
        assert (await h.get("/readyz", headers={"x-request-id": "b" * 128})).headers["x-request-id"] == "b" * 128


async def test_retrieve_model(mock) -> None:
    cfg = simple_config(mock.url)
    cfg["routes"].append({"name": "team/chat", "targets": [{"provider": "p0", "model": "m"}]})
    async with run_gateway(cfg) as g, httpx.AsyncClient(base_url=g.url) as h:
        r = await h.get("/v1/models/r")
        assert r.status_code == 200 and r.json() == {"id": "r", "object": "model", "created": 0, "owned_by": "llmops"}
        assert (await h.get("/v1/models/team/chat")).json()["id"] == "team/chat"
        r = await h.get("/v1/models/gpt-5")
        assert r.status_code == 404
        assert r.json()["error"] == {"message": "The model `gpt-5` does not exist", "type": "not_found_error",
                                     "param": "model", "code": "model_not_found"}

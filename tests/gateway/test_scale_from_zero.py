"""Requests to a route with a queue bound (a serving endpoint scaled to zero) wait at the gateway while
no replica is there, instead of failing: they succeed once one starts, fail with 503 after the bound,
are counted on /metrics while waiting, and a client that leaves ends its wait cleanly."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
import msgspec
import pytest
from aiohttp import web

from adapters.errors import (
    UpstreamConnectTimeout,
    UpstreamError,
    UpstreamStatus,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from adapters.testdoubles.mock_upstream import Fault, MockServer, start_mock_upstream
from adapters.upstream.client_errors import ClientErrors
from gateway.config import decode_config
from gateway.relay import _unready
from tests.conftest import capture_usage, free_port, run_gateway

MSG = [{"role": "user", "content": "hi"}]
BODY = {"model": "cold", "messages": MSG}


def _config(url: str, queue_timeout_s: float, **provider: Any) -> dict[str, Any]:
    return {
        "server": {"log_level": "warning"},
        "control": {"enabled": False},
        # One failure would open a breaker: on a route with a queue bound, finding no replica must not.
        "providers": [{"name": "cold", "kind": "openai", "base_url": url, "breaker": {"failure_threshold": 1},
                       **provider}],
        "routes": [{"name": "cold", "targets": [{"provider": "cold", "model": "m"}], "retry_backoff_s": 0.0,
                    "queue_timeout_s": queue_timeout_s}],
    }


async def _metric(h: httpx.AsyncClient, name: str) -> float:
    text = (await h.get("/metrics")).text
    m = re.search(rf'^{name}\{{route="cold"\}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


async def _until_metric(h: httpx.AsyncClient, name: str, value: float, within_s: float = 5.0) -> None:
    start = time.monotonic()
    while await _metric(h, name) != value:
        assert time.monotonic() - start < within_s, f"{name} did not reach {value}"
        await asyncio.sleep(0.02)


async def _stream(h: httpx.AsyncClient) -> tuple[int, str]:
    async with h.stream("POST", "/v1/chat/completions", json={**BODY, "stream": True}) as r:
        return r.status_code, (await r.aread()).decode()


def test_what_counts_as_no_replica() -> None:
    assert _unready(UpstreamUnreachable("upstream p failed: cannot connect (Connection refused)"))
    assert _unready(UpstreamConnectTimeout("upstream p timed out"))
    assert _unready(UpstreamStatus(503, b"no healthy upstream", "p"))  # Envoy / a mesh: no ready endpoint
    assert _unready(UpstreamStatus(502, b"<html><center>502 Bad Gateway</center></html>", "p"))  # ingress-nginx
    assert not _unready(UpstreamStatus(503, b'{"error": {"message": "overloaded"}}', "p"))  # the model server's
    assert not _unready(UpstreamStatus(500, b"boom", "p"))
    assert not _unready(UpstreamStatus(504, b"gateway timeout", "p"))  # it may have been sent: not queued
    assert not _unready(UpstreamTimeout("upstream p timed out"))  # sent, no answer in time
    assert not _unready(UpstreamError("upstream p failed: server disconnected"))


async def test_a_refused_connection_is_unreachable() -> None:
    port = free_port()
    with pytest.raises(UpstreamUnreachable, match=r"cannot connect \(Connection refused\)") as caught:
        async with aiohttp.ClientSession() as session:
            with ClientErrors("p"):
                await session.get(f"http://127.0.0.1:{port}/")
    assert "127.0.0.1" not in str(caught.value) and caught.value.http_status == 502


async def test_a_queued_request_is_served_once_a_replica_starts() -> None:
    port = free_port()
    async with run_gateway(_config(f"http://127.0.0.1:{port}/v1", queue_timeout_s=15)) as gw, \
            httpx.AsyncClient(base_url=gw.url, timeout=30) as h:
        seen = capture_usage(gw.gateway)
        started = time.monotonic()
        plain = asyncio.create_task(h.post("/v1/chat/completions", json=BODY))
        streamed = asyncio.create_task(_stream(h))
        await _until_metric(h, "llmops_route_queued_requests", 2)  # both wait, visible on /metrics
        await asyncio.sleep(1.0)  # the replica takes a while to start
        server = await start_mock_upstream(port=port)
        try:
            r = await plain
            status, text = await streamed
            waited = time.monotonic() - started
        finally:
            await server.stop()
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"]
        assert status == 200 and text.rstrip().endswith("data: [DONE]")
        assert 1.0 <= waited < 5.0, waited  # backoff is capped at 2 s
        await _until_metric(h, "llmops_route_queued_requests", 0)
        assert await _metric(h, "llmops_route_queue_timeouts_total") == 0
        await gw.gateway.usage.drain()
        chats = [rec for rec in seen if rec.endpoint == "chat"]  # not the /metrics scrapes
        assert [rec.status for rec in chats] == [200, 200]
        assert all(rec.attempts > 1 for rec in chats)  # every failed probe is counted


async def test_no_replica_within_the_bound_is_a_503() -> None:
    port = free_port()
    async with run_gateway(_config(f"http://127.0.0.1:{port}/v1", queue_timeout_s=1)) as gw, \
            httpx.AsyncClient(base_url=gw.url, timeout=30) as h:
        started = time.monotonic()
        r, (stream_status, stream_text) = await asyncio.gather(
            h.post("/v1/chat/completions", json=BODY), _stream(h))
        waited = time.monotonic() - started
        assert 1.0 <= waited < 3.0, waited
        assert r.status_code == 503 and stream_status == 503  # a stream too: nothing had been sent yet
        error = r.json()["error"]
        assert (error["type"], error["code"]) == ("upstream_unavailable", "endpoint_not_ready")
        assert "did not become ready within 1 s" in error["message"] and str(port) not in error["message"]
        assert msgspec.json.decode(stream_text)["error"]["code"] == "endpoint_not_ready"
        assert await _metric(h, "llmops_route_queue_timeouts_total") == 2
        assert await _metric(h, "llmops_route_queued_requests") == 0


async def test_without_a_bound_or_with_a_model_servers_answer_nothing_waits(mock: MockServer) -> None:
    port = free_port()
    async with run_gateway(_config(f"http://127.0.0.1:{port}/v1", queue_timeout_s=0)) as gw, \
            httpx.AsyncClient(base_url=gw.url, timeout=30) as h:
        started = time.monotonic()
        r = await h.post("/v1/chat/completions", json=BODY)
        assert r.status_code in (502, 503) and time.monotonic() - started < 1.0  # fails at once, as before
        assert r.json()["error"]["code"] != "endpoint_not_ready"
    mock.push_faults(Fault(kind="status", status=503), Fault(kind="status", status=503))  # the replica is busy
    async with run_gateway(_config(mock.url, queue_timeout_s=30)) as gw, \
            httpx.AsyncClient(base_url=gw.url, timeout=30) as h:
        started = time.monotonic()
        r = await h.post("/v1/chat/completions", json=BODY)
        assert r.status_code == 503 and time.monotonic() - started < 1.0, r.text
        assert r.json()["error"]["code"] != "endpoint_not_ready"
        assert await _metric(h, "llmops_route_queue_timeouts_total") == 0


async def _proxy_in_front(ready: asyncio.Event) -> AsyncIterator[str]:
    """An ingress in front of a Service without ready endpoints answers 503 in text; then relays."""
    async def handle(request: web.Request) -> web.Response:
        if not ready.is_set():
            return web.Response(status=503, text="no healthy upstream")
        answer = {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": "up"},
                               "finish_reason": "stop"}],
                  "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
        return web.json_response(answer)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    finally:
        await runner.cleanup()


async def test_a_proxys_own_503_waits_too() -> None:
    ready = asyncio.Event()
    proxy = _proxy_in_front(ready)
    url = await anext(proxy)
    try:
        async with run_gateway(_config(url, queue_timeout_s=15)) as gw, \
                httpx.AsyncClient(base_url=gw.url, timeout=30) as h:
            pending = asyncio.create_task(h.post("/v1/chat/completions", json=BODY))
            await _until_metric(h, "llmops_route_queued_requests", 1)
            ready.set()
            r = await pending
            assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "up", r.text
    finally:
        await proxy.aclose()


async def test_a_client_that_leaves_while_queued_ends_its_wait() -> None:
    port = free_port()
    async with run_gateway(_config(f"http://127.0.0.1:{port}/v1", queue_timeout_s=60)) as gw, \
            httpx.AsyncClient(base_url=gw.url, timeout=30) as h:
        seen = capture_usage(gw.gateway)
        host, _, gw_port = gw.url.removeprefix("http://").partition(":")
        _reader, writer = await asyncio.open_connection(host, int(gw_port))
        body = msgspec.json.encode(BODY)
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                     b"content-length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        await _until_metric(h, "llmops_route_queued_requests", 1)
        writer.close()  # the client goes away while its request waits
        await writer.wait_closed()
        await _until_metric(h, "llmops_route_queued_requests", 0, within_s=5.0)
        await gw.gateway.usage.drain()
        assert [(rec.status, rec.error) for rec in seen if rec.endpoint == "chat"] == [(499, "client_disconnected")]
        assert gw.gateway.inflight == 0


async def test_a_queued_request_follows_the_route_when_it_moves(mock: MockServer) -> None:
    """A rollback (or a redeploy elsewhere) while requests wait: their next try goes where the route is now."""
    port = free_port()
    cold = _config(f"http://127.0.0.1:{port}/v1", queue_timeout_s=30)
    async with run_gateway(cold) as gw, httpx.AsyncClient(base_url=gw.url, timeout=30) as h:
        pending = asyncio.create_task(h.post("/v1/chat/completions", json=BODY))
        await _until_metric(h, "llmops_route_queued_requests", 1)
        await gw.gateway.reload(decode_config(_config(mock.url, queue_timeout_s=30)))
        r = await pending
        assert r.status_code == 200 and r.headers["x-llmops-provider"] == "cold", r.text
        assert len(mock.requests) == 1  # served by the route's new upstream
        await gw.gateway.reload(decode_config(cold))  # cold again; then the route goes while a request waits
        pending = asyncio.create_task(h.post("/v1/chat/completions", json=BODY))
        await _until_metric(h, "llmops_route_queued_requests", 1)
        await gw.gateway.reload(decode_config({**cold, "routes": []}))
        r = await pending
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found", r.text
        await _until_metric(h, "llmops_route_queued_requests", 0)

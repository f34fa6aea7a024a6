"""Streaming relay: no buffering, usage capture, mid-stream failures, disconnect cancellation."""

from __future__ import annotations

import asyncio
import itertools
import time

import aiohttp
import msgspec

from adapters.testdoubles.mock_upstream import Fault
from tests.conftest import capture_usage, run_gateway, simple_config

BODY = {"model": "r", "stream": True, "messages": [{"role": "user", "content": "hi"}]}


async def _events(url: str, body: dict) -> list[tuple[float, bytes]]:
    """(arrival time, payload) of every SSE data event, as the client sees them."""
    out: list[tuple[float, bytes]] = []
    async with aiohttp.ClientSession() as s, s.post(url + "/v1/chat/completions", json=body) as r:
        assert r.status == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        async for line in r.content:
            if line.startswith(b"data: "):
                out.append((time.perf_counter(), line[6:].strip()))
    return out


async def test_chunks_arrive_as_sent_not_buffered(mock) -> None:
    mock.config = msgspec.structs.replace(mock.config, tokens_per_s=50, completion_tokens=20)  # 20 ms apart
    async with run_gateway(simple_config(mock.url)) as g:
        events = await _events(g.url, BODY)
    assert events[-1][1] == b"[DONE]"
    content = [t for t, p in events if b'"content":"' in p and b'"content":""' not in p]
    assert len(content) == 20
    gaps = [b - a for a, b in itertools.pairwise(content)]
    # Buffering would bunch arrivals together; relayed chunks keep the upstream's ~20 ms spacing.
    assert min(gaps) > 0.008
    assert sum(gaps) / len(gaps) > 0.015


async def test_usage_recorded_for_stream(mock) -> None:
    async with run_gateway(simple_config(mock.url)) as g:
        seen = capture_usage(g.gateway)
        await _events(g.url, BODY)
        await g.gateway.usage.drain()
    (rec,) = [r for r in seen if r.status == 200]
    assert rec.stream and rec.usage_source == "upstream"
    assert rec.completion_tokens == 16 and rec.prompt_tokens > 0
    assert rec.ttft_s is not None and rec.ttft_s < rec.latency_s


async def test_usage_counted_when_upstream_reports_none(mock) -> None:
    mock.config = msgspec.structs.replace(mock.config, usage=False)
    async with run_gateway(simple_config(mock.url)) as g:
        seen = capture_usage(g.gateway)
        await _events(g.url, BODY)
        async with aiohttp.ClientSession() as s:
            await (await s.post(g.url + "/v1/chat/completions", json={**BODY, "stream": False})).read()
        await g.gateway.usage.drain()
    assert len(seen) == 2
    for rec in seen:
        assert rec.usage_source == "counted"
        assert rec.completion_tokens > 0 and rec.prompt_tokens > 0


async def test_mid_stream_failure_ends_with_error_event_and_no_retry(mock) -> None:
    async with run_gateway(simple_config(mock.url, retries=3)) as g:
        for fault in (Fault(kind="drop_mid_stream", after_chunks=3), Fault(kind="malformed")):
            mock.clear()
            mock.push_faults(fault)
            events = await _events(g.url, BODY)
            payloads = [p for _, p in events]
            assert payloads[-1] == b"[DONE]"
            err = msgspec.json.decode(payloads[-2])
            assert set(err["error"]) == {"message", "type", "param", "code"}
            # Bytes already reached the client, so the gateway must not have retried.
            assert len(mock.requests) == 1


async def test_upstream_error_event_is_relayed(mock) -> None:
    mock.push_faults(Fault(kind="error_mid_stream", after_chunks=2))
    async with run_gateway(simple_config(mock.url)) as g:
        payloads = [p for _, p in await _events(g.url, BODY)]
    assert payloads[-1] == b"[DONE]"
    assert b"mock mid-stream failure" in payloads[-2]


async def test_stream_failure_before_first_chunk_is_retried(mock) -> None:
    mock.push_faults(Fault(kind="status", status=503))
    async with run_gateway(simple_config(mock.url, retries=1)) as g:
        payloads = [p for _, p in await _events(g.url, BODY)]
    assert payloads[-1] == b"[DONE]" and all(b'"error"' not in p for p in payloads)
    assert len(mock.requests) == 2


async def test_client_disconnect_cancels_upstream_stream(mock) -> None:
    mock.config = msgspec.structs.replace(mock.config, tokens_per_s=20, completion_tokens=200)  # ~10 s stream
    async with run_gateway(simple_config(mock.url)) as g:
        async with aiohttp.ClientSession() as s, s.post(g.url + "/v1/chat/completions", json=BODY) as r:
            got = 0
            async for line in r.content:
                got += line.startswith(b"data: ")
                if got >= 3:
                    break
        # Closing the client response drops the connection mid-stream.
        async with asyncio.timeout(5):
            while mock.disconnects < 1 or mock.active:
                await asyncio.sleep(0.02)
        assert g.gateway.generation.providers["p0"].backends[0].inflight == 0


async def test_client_disconnect_cancels_non_stream_request(mock) -> None:
    mock.config = msgspec.structs.replace(mock.config, latency_s=10)
    async with run_gateway(simple_config(mock.url)) as g:
        async with aiohttp.ClientSession() as s:
            task = asyncio.create_task(s.post(g.url + "/v1/chat/completions", json={**BODY, "stream": False}))
            async with asyncio.timeout(5):
                while mock.active < 1:
                    await asyncio.sleep(0.02)
            task.cancel()
        async with asyncio.timeout(5):
            while mock.disconnects < 1:
                await asyncio.sleep(0.02)
        assert mock.active == 0

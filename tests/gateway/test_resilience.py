"""Retries, fallbacks, circuit breakers, timeouts and replica balancing against the mock upstream."""

from __future__ import annotations

import asyncio
import contextlib
import time

import httpx
import msgspec

from adapters.testdoubles.mock_upstream import Fault
from tests.conftest import free_port, run_gateway, simple_config

MSG = [{"role": "user", "content": "hi"}]


async def _post(h: httpx.AsyncClient, model: str = "r", **extra) -> httpx.Response:
    return await h.post("/v1/chat/completions", json={"model": model, "messages": MSG, **extra})


async def test_retry_same_target_then_success(mock) -> None:
    mock.push_faults(Fault(kind="status", status=502), Fault(kind="drop"))
    async with run_gateway(simple_config(mock.url, retries=2)) as g, httpx.AsyncClient(base_url=g.url) as h:
        r = await _post(h)
        assert r.status_code == 200
        assert len(mock.requests) == 3
        metrics = (await h.get("/metrics")).text
        assert 'llmops_retries_total{provider="p0",route="r"} 2.0' in metrics
        assert 'llmops_upstream_errors_total{provider="p0",type="http_502"} 1.0' in metrics


async def test_non_retryable_4xx_is_relayed_without_retry(mock) -> None:
    mock.push_faults(Fault(kind="status", status=400))
    async with run_gateway(simple_config(mock.url, retries=3)) as g, httpx.AsyncClient(base_url=g.url) as h:
        r = await _post(h)
        assert r.status_code == 400
        assert len(mock.requests) == 1


async def test_fallback_chain_after_retries_exhausted(mock, mock2) -> None:
    mock.push_faults(*[Fault(kind="status", status=503)] * 2)
    async with run_gateway(simple_config(mock.url, mock2.url, retries=1)) as g, \
            httpx.AsyncClient(base_url=g.url) as h:
        r = await _post(h)
        assert r.status_code == 200
        assert r.headers["x-llmops-provider"] == "p1"
        assert len(mock.requests) == 2 and len(mock2.requests) == 1
        assert mock2.requests[0].body["model"] == "m1"


async def test_connection_refused_falls_back(mock) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    async with run_gateway(simple_config(dead, mock.url, retries=0)) as g, httpx.AsyncClient(base_url=g.url) as h:
        assert (await _post(h)).headers["x-llmops-provider"] == "p1"


async def _upstreams(h: httpx.AsyncClient) -> dict:
    r = await h.get("/llm-ops/v1/gateway/upstreams", headers={"authorization": f"Bearer {ADMIN_KEY}"})
    assert r.status_code == 200, r.text
    return r.json()["data"]


ADMIN_KEY = "adm-resilience-key"


async def test_breaker_opens_skips_backend_then_half_open_probe(mock, mock2, monkeypatch) -> None:
    monkeypatch.setenv("LLMOPS_ADMIN_KEY", ADMIN_KEY)
    cfg = simple_config(mock.url, mock2.url, retries=0)
    cfg["providers"][0]["breaker"] = {"failure_threshold": 2, "cooldown_s": 0.5}
    async with run_gateway(cfg) as g, httpx.AsyncClient(base_url=g.url) as h:
        mock.push_faults(*[Fault(kind="status", status=500)] * 2)
        for _ in range(2):
            assert (await _post(h)).headers["x-llmops-provider"] == "p1"
        assert len(mock.requests) == 2
        detail = await _upstreams(h)
        assert detail["p0"][0] == {"backend": "0", "url": mock.url, "circuit": "open", "failures": 2, "inflight": 0}
        assert 'llmops_circuit_state{backend="0",provider="p0"} 1.0' in (await h.get("/metrics")).text
        # While open, p0 is not even tried.
        for _ in range(3):
            assert (await _post(h)).headers["x-llmops-provider"] == "p1"
        assert len(mock.requests) == 2
        await asyncio.sleep(0.6)
        # Half-open: one probe goes through; it succeeds, so the circuit closes.
        assert (await _post(h)).headers["x-llmops-provider"] == "p0"
        assert (await _upstreams(h))["p0"][0]["circuit"] == "closed"


async def test_readyz_and_metrics_show_no_upstream_internals(mock, monkeypatch) -> None:
    """Anonymous callers learn whether routes can answer, not where the upstreams live."""
    monkeypatch.setenv("LLMOPS_ADMIN_KEY", ADMIN_KEY)
    cfg = simple_config(mock.url, retries=0)
    cfg["providers"][0]["breaker"] = {"failure_threshold": 1, "cooldown_s": 60}
    async with run_gateway(cfg) as g, httpx.AsyncClient(base_url=g.url) as h:
        r = await h.get("/readyz")
        assert r.status_code == 200 and r.json() == {"status": "ready", "routes": {"r": "ready"}}
        mock.push_faults(Fault(kind="status", status=500))
        assert (await _post(h)).status_code == 502
        r = await h.get("/readyz")
        assert r.json() == {"status": "ready", "routes": {"r": "unavailable"}}
        host_port = mock.url.split("//")[1].split("/")[0]
        for text in (r.text, (await h.get("/metrics")).text):
            assert host_port not in text and "127.0.0.1" not in text
        # The detail needs an admin key.
        assert (await h.get("/llm-ops/v1/gateway/upstreams")).status_code == 401
        assert (await _upstreams(h))["p0"][0]["circuit"] == "open"


async def test_all_circuits_open_is_503(mock) -> None:
    cfg = simple_config(mock.url, retries=0)
    cfg["providers"][0]["breaker"] = {"failure_threshold": 1, "cooldown_s": 60}
    async with run_gateway(cfg) as g, httpx.AsyncClient(base_url=g.url) as h:
        mock.push_faults(Fault(kind="status", status=500))
        assert (await _post(h)).status_code == 502
        r = await _post(h)
        assert r.status_code == 503 and "circuit open" in r.json()["error"]["message"]
        assert len(mock.requests) == 1


async def test_first_byte_timeout_then_fallback(mock, mock2) -> None:
    cfg = simple_config(mock.url, mock2.url, retries=0, timeouts={"connect_s": 1, "first_byte_s": 0.3, "total_s": 5})
    mock.push_faults(Fault(kind="timeout", delay_s=3))
    async with run_gateway(cfg) as g, httpx.AsyncClient(base_url=g.url) as h:
        t0 = time.perf_counter()
        r = await _post(h)
        assert r.status_code == 200 and r.headers["x-llmops-provider"] == "p1"
        assert time.perf_counter() - t0 < 2


async def test_total_timeout_bounds_a_slow_stream(mock) -> None:
    mock.config = msgspec.structs.replace(mock.config, tokens_per_s=10, completion_tokens=100)
    cfg = simple_config(mock.url, retries=0, timeouts={"connect_s": 1, "first_byte_s": 5, "total_s": 0.5})
    async with run_gateway(cfg) as g, httpx.AsyncClient(base_url=g.url, timeout=10) as h:
        r = await _post(h, stream=True)
        assert r.status_code == 200
        assert r.text.rstrip().endswith("data: [DONE]")
        assert "upstream_timeout" in r.text


async def test_silence_between_stream_chunks_times_out(mock) -> None:
    """`first_byte_s` also bounds the gap between chunks: a stalled stream ends with an error event."""
    mock.config = msgspec.structs.replace(mock.config, tokens_per_s=2, completion_tokens=20)  # 0.5 s gaps, ~10 s
    cfg = simple_config(mock.url, retries=0, timeouts={"connect_s": 1, "first_byte_s": 0.2, "total_s": 30})
    async with run_gateway(cfg) as g, httpx.AsyncClient(base_url=g.url, timeout=10) as h:
        t0 = time.perf_counter()
        r = await _post(h, stream=True)
        assert r.status_code == 200
        assert "upstream_timeout" in r.text and r.text.rstrip().endswith("data: [DONE]")
        assert time.perf_counter() - t0 < 3  # cut at the first long gap, not after the whole stream
        metrics = (await h.get("/metrics")).text
        assert 'llmops_upstream_errors_total{provider="p0",type="mid_stream"} 1.0' in metrics


async def test_connect_timeout_is_504() -> None:
    """A loopback listener whose accept queue is full drops SYNs, so connect() hangs."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    for _ in range(4):  # fill the accept backlog without ever accepting
        c = socket.socket()
        c.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            c.connect(listener.getsockname())
        fillers.append(c)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    cfg = simple_config(url, retries=0, timeouts={"connect_s": 0.3, "first_byte_s": 5, "total_s": 10})
    try:
        async with run_gateway(cfg) as g, httpx.AsyncClient(base_url=g.url) as h:
            t0 = time.perf_counter()
            r = await _post(h)
            assert r.status_code == 504, r.text
            assert time.perf_counter() - t0 < 3
    finally:
        for c in fillers:
            c.close()
        listener.close()


async def test_least_inflight_balancing_across_replicas(mock, mock2) -> None:
    mock.config = msgspec.structs.replace(mock.config, latency_s=0.3)
    cfg = {
        "providers": [{"name": "v", "kind": "openai", "base_urls": [mock.url, mock2.url]}],
        "routes": [{"name": "r", "targets": [{"provider": "v", "model": "m"}]}],
    }
    async with run_gateway(cfg) as g, httpx.AsyncClient(base_url=g.url) as h:
        tasks = []
        for _ in range(12):  # staggered arrivals: each pick sees the slow replica still busy
            tasks.append(asyncio.create_task(_post(h)))
            await asyncio.sleep(0.03)
        await asyncio.gather(*tasks)
    # The slow replica holds its requests longer, so the fast one takes most of them.
    assert len(mock.requests) + len(mock2.requests) == 12
    assert len(mock2.requests) >= 9


async def test_vllm_queue_balancing_prefers_short_queue(mock, mock2) -> None:
    mock.config = msgspec.structs.replace(mock.config, vllm_waiting=50)
    cfg = {
        "providers": [{"name": "v", "kind": "openai", "base_urls": [mock.url, mock2.url],
                       "balance": "vllm_queue", "metrics_interval_s": 0.05}],
        "routes": [{"name": "r", "targets": [{"provider": "v", "model": "m"}]}],
    }
    async with run_gateway(cfg) as g, httpx.AsyncClient(base_url=g.url) as h:
        backends = g.gateway.generation.providers["v"].backends
        async with asyncio.timeout(5):
            while backends[0].waiting != 50:
                await asyncio.sleep(0.02)
        for _ in range(6):
            await _post(h)
    assert len(mock.requests) == 0 and len(mock2.requests) == 6


async def test_weighted_targets_split_traffic(mock, mock2) -> None:
    cfg = simple_config(mock.url, mock2.url)
    cfg["routes"][0]["targets"] = [{"provider": "p0", "model": "a", "weight": 3}, {"provider": "p1", "model": "b"}]
    cfg["routes"][0]["fallbacks"] = []
    async with run_gateway(cfg) as g, httpx.AsyncClient(base_url=g.url) as h:
        for _ in range(80):
            await _post(h)
    assert len(mock.requests) + len(mock2.requests) == 80
    assert 45 <= len(mock.requests) <= 75

"""The usage record says whether another target than the first planned served the request (or was the
last tried): experiments count such requests apart, so a variant is not judged on a fallback's answers."""

from __future__ import annotations

from typing import Any

import httpx

from adapters.testdoubles.mock_upstream import Fault, MockServer
from tests.conftest import capture_usage, run_gateway, simple_config

MSG = [{"role": "user", "content": "hi"}]


async def _records(cfg: dict[str, Any], *bodies: dict[str, Any]) -> list[Any]:
    async with run_gateway(cfg) as gw:
        seen = capture_usage(gw.gateway)
        async with httpx.AsyncClient(base_url=gw.url, timeout=10) as h:
            for body in bodies:
                await h.post("/v1/chat/completions", json=body)
        await gw.gateway.usage.drain()
    return seen


async def test_a_fallback_that_serves_is_flagged(mock: MockServer, mock2: MockServer) -> None:
    cfg = simple_config(mock.url, mock2.url, retries=0)
    mock.push_faults(Fault(kind="status", status=503))
    served, plain = await _records(cfg, {"model": "r", "messages": MSG}, {"model": "r", "messages": MSG})
    assert (served.status, served.provider, served.fallback) == (200, "p1", True)
    assert (plain.status, plain.provider, plain.fallback) == (200, "p0", False)


async def test_a_streamed_fallback_is_flagged(mock: MockServer, mock2: MockServer) -> None:
    cfg = simple_config(mock.url, mock2.url, retries=0)
    mock.push_faults(Fault(kind="status", status=503))
    (rec,) = await _records(cfg, {"model": "r", "messages": MSG, "stream": True})
    assert (rec.status, rec.provider, rec.fallback) == (200, "p1", True)


async def test_failures_say_whether_the_last_target_tried_was_a_fallback(mock: MockServer, mock2: MockServer) -> None:
    cfg = simple_config(mock.url, mock2.url, retries=0)
    mock.push_faults(Fault(kind="status", status=503))
    mock2.push_faults(Fault(kind="status", status=503))
    mock.push_faults(Fault(kind="status", status=400))  # not retryable: the first target's answer is final
    both_failed, first_refused = await _records(cfg, {"model": "r", "messages": MSG},
                                                {"model": "r", "messages": MSG})
    assert (both_failed.status, both_failed.fallback) == (503, True)
    assert (first_refused.status, first_refused.fallback) == (400, False)

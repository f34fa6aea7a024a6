"""Scrape `vllm:num_requests_waiting` from each replica's `/metrics`.

The balancer adds the queue length to our own in-flight count, so a replica
busy with other gateways' traffic gets fewer of ours. Runs as a background
task; a failed scrape leaves the last value and never touches the hot path.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlparse, urlunparse

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from adapters.upstream.base import Backend

__all__ = ["metrics_url", "parse_waiting", "scrape_forever", "scrape_once"]

log = logging.getLogger("llmops.vllm_metrics")
WAITING = "vllm:num_requests_waiting"


def metrics_url(base_url: str) -> str:
    """`http://pod:8000/v1` -> `http://pod:8000/metrics` (vLLM serves both)."""
    p = urlparse(base_url)
    path = p.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    return urlunparse(p._replace(path=path + "/metrics", query="", fragment=""))


def parse_waiting(text: str) -> float:
    """Sum the waiting gauge over every label set (one per served model)."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == WAITING:
                total += sample.value
    return total


async def scrape_once(session: aiohttp.ClientSession, backend: Backend, timeout_s: float = 1.0) -> None:
    try:
        async with session.get(metrics_url(backend.url), timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            if resp.status != 200:
                return
            text = await resp.text()
        backend.waiting = parse_waiting(text)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        log.debug("metrics scrape of %s failed: %s", backend.url, exc.__class__.__name__)


async def scrape_forever(backends: list[Backend], interval_s: float) -> None:
    async with aiohttp.ClientSession() as session:
        while True:
            await asyncio.gather(*(scrape_once(session, b) for b in backends))
            await asyncio.sleep(interval_s)

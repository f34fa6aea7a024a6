"""Stream measurements from the client's side: time to first token and chunk spacing.

wrk cannot see inside a response, so a small aiohttp client timestamps every
SSE `data:` event as its line arrives. TTFT is request start → first event that
carries content. The no-buffering check sends streams whose upstream paces
content chunks at a fixed gap and asks whether the client still sees one
arrival per chunk with that gap; a buffering proxy shows up as bunched
arrivals (several events within a millisecond) and a long first gap.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp

__all__ = [
    "StreamResults",
    "StreamTiming",
    "TtftStats",
    "content_event",
    "distinct_arrivals",
    "measure_spacing",
    "measure_ttft",
    "spacing_errors_ms",
    "time_stream",
]

_BURST_S = 0.001  # events closer than this arrived in the same read: not separate deliveries


@dataclass(frozen=True)
class StreamTiming:
    """Arrival times (seconds since the request was sent) of each content event in one stream."""

    content_times_s: tuple[float, ...]
    done: bool  # saw `data: [DONE]`

    @property
    def ttft_ms(self) -> float | None:
        return self.content_times_s[0] * 1e3 if self.content_times_s else None

    @property
    def gaps_ms(self) -> list[float]:
        t = self.content_times_s
        return [(b - a) * 1e3 for a, b in itertools.pairwise(t)]


@dataclass(frozen=True)
class TtftStats:
    samples: int
    p50_ms: float
    p99_ms: float


@dataclass
class StreamResults:
    """Everything the stream phase measured: TTFT by (path, concurrency), paced streams by path."""

    expected_gap_ms: float
    ttft: dict[tuple[str, int], TtftStats] = field(default_factory=dict)
    spacing: dict[str, list[StreamTiming]] = field(default_factory=dict)


def content_event(line: bytes) -> bool:
    """True for a `data:` line whose first choice's delta has non-empty content."""
    if not line.startswith(b"data:"):
        return False
    payload = line[5:].strip()
    if not payload or payload == b"[DONE]":
        return False
    try:
        obj = json.loads(payload)
    except ValueError:
        return False
    choices = obj.get("choices") or []
    return bool(choices and (choices[0].get("delta") or {}).get("content"))


def distinct_arrivals(times_s: Sequence[float], burst_s: float = _BURST_S) -> int:
    """Count deliveries: an event within `burst_s` of the previous one rode in on the same read."""
    count, last = 0, None
    for t in times_s:
        if last is None or t - last > burst_s:
            count += 1
        last = t
    return count


def spacing_errors_ms(gaps_ms: Sequence[float], expected_ms: float) -> list[float]:
    return [abs(g - expected_ms) for g in gaps_ms]


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def time_stream(session: aiohttp.ClientSession, url: str, model: str, timeout_s: float = 30.0) -> StreamTiming:
    """POST one streaming chat request and timestamp each content event as its line arrives."""
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": "hello"}]}
    times: list[float] = []
    done = False
    start = time.perf_counter()
    async with asyncio.timeout(timeout_s), session.post(url + "/chat/completions", json=body) as resp:
        if resp.status != 200:
            raise RuntimeError(f"{url}: stream answered {resp.status}: {(await resp.text())[:300]}")
        async for line in resp.content:
            now = time.perf_counter() - start
            if content_event(line):
                times.append(now)
            elif line.strip() == b"data: [DONE]":
                done = True
    return StreamTiming(tuple(times), done)


async def measure_ttft(url: str, model: str, *, concurrency: int = 1, duration_s: float = 5.0) -> TtftStats:
    """Closed-loop: `concurrency` clients each stream back-to-back until `duration_s` is up."""
    samples: list[float] = []
    deadline = time.monotonic() + duration_s
    connector = aiohttp.TCPConnector(limit=max(concurrency, 1))
    async with aiohttp.ClientSession(connector=connector) as session:
        await time_stream(session, url, model)  # open the connection; not a sample

        async def client() -> None:
            while time.monotonic() < deadline:
                t = await time_stream(session, url, model)
                if t.ttft_ms is not None:
                    samples.append(t.ttft_ms)

        await asyncio.gather(*(client() for _ in range(concurrency)))
    if not samples:
        raise RuntimeError(f"{url}: no stream produced a content event")
    return TtftStats(len(samples), statistics.median(samples), _percentile(samples, 0.99))


async def measure_spacing(url: str, model: str, *, streams: int = 3) -> list[StreamTiming]:
    """Run `streams` paced streams one after another (c=1), so timing reflects the relay alone."""
    async with aiohttp.ClientSession() as session:
        return [await time_stream(session, url, model) for _ in range(streams)]

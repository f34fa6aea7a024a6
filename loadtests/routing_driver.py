"""The routing benchmark's load: closed-loop simulated users streaming chats through the gateway, and a
sampler of every replica's queue, all on one asyncio loop in the bench's process.

A user sends a request, reads the stream to its end, hands the reply to its workload (the next turn sends
it back), and sends the next one at once: `users` requests are always in flight or about to be. TTFT is the
time to the first chunk that carries content (the role chunk comes before the prefill ends).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec

from loadtests.routing_workload import Workload, make_user

__all__ = ["Record", "Sample", "drive", "prime", "sample_loads", "sim_stats", "stream_chat"]

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


@dataclass(frozen=True)
class Record:
    """One request: when it started and ended (monotonic s), its TTFT, and what the usage chunk said."""

    start: float
    end: float
    ok: bool
    ttft_s: float | None = None
    prompt_tokens: int = 0
    cached_tokens: int = 0
    error: str = ""


@dataclass(frozen=True)
class Sample:
    """Every replica's running + waiting requests at time `t` (monotonic s), from its /sim/stats."""

    t: float
    loads: tuple[int, ...]


async def stream_chat(session: aiohttp.ClientSession, url: str, body: dict[str, Any],
                      timeout_s: float = 120.0) -> tuple[Record, str | None]:
    """POST a streaming chat and read it to `[DONE]`; the record and the reply's text (None if it failed)."""
    start = time.monotonic()
    ttft: float | None = None
    parts: list[str] = []
    prompt = cached = 0
    try:
        async with session.post(url, data=_encode(body), headers={"content-type": "application/json"},
                                timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            if resp.status != 200:
                text = (await resp.read())[:200].decode(errors="replace")
                return Record(start, time.monotonic(), False, error=f"{resp.status} {text}"), None
            async for line in resp.content:
                if not line.startswith(b"data: "):
                    continue
                data = line[6:].strip()
                if data == b"[DONE]":
                    break
                chunk = _decode(data)
                if "error" in chunk:
                    return Record(start, time.monotonic(), False, ttft, error=str(chunk["error"])[:200]), None
                for choice in chunk.get("choices") or ():
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        if ttft is None:
                            ttft = time.monotonic() - start
                        parts.append(content)
                usage = chunk.get("usage")
                if usage:
                    prompt = int(usage.get("prompt_tokens") or 0)
                    cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return Record(start, time.monotonic(), False, ttft, error=f"{type(exc).__name__}: {exc}"[:200]), None
    return Record(start, time.monotonic(), ttft is not None, ttft, prompt, cached,
                  "" if ttft is not None else "no content"), "".join(parts)


async def drive(session: aiohttp.ClientSession, url: str, workload: Workload, users: int, model: str,
                stop_at: float, think_s: float = 0.0) -> list[Record]:
    """`users` closed-loop users until `stop_at` (monotonic); requests still in flight then are abandoned
    (the caller has taken its measurements by then), so the run is bounded by `stop_at`.

    Between a reply and its next request a user thinks for an exponential time of mean `think_s` (its own
    seeded draw, the same in every run), and it starts after a uniform draw in [0, think_s): offered load is
    about users / (think_s + latency), and users do not arrive in step."""
    records: list[Record] = []
    body = {"model": model, "stream": True, "stream_options": {"include_usage": True}}

    async def user(n: int) -> None:
        u = make_user(workload, n)
        rng = random.Random(f"{workload.cfg.seed}:think:{n}")
        await asyncio.sleep(rng.uniform(0, think_s))
        while time.monotonic() < stop_at:
            record, reply = await stream_chat(session, url, {**body, "messages": u.next_messages()})
            records.append(record)
            u.answered(reply)
            # a failing gateway must not turn the loop into a busy spin
            await asyncio.sleep(rng.expovariate(1 / think_s) if think_s > 0 else 0.0 if record.ok else 0.05)

    tasks = [asyncio.create_task(user(n)) for n in range(users)]
    try:
        await asyncio.wait(tasks, timeout=max(0.0, stop_at - time.monotonic()))
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return records


async def prime(session: aiohttp.ClientSession, url: str, bodies: Sequence[dict[str, Any]], concurrency: int,
                within_s: float) -> int:
    """Send each body once (not streamed) at `concurrency`; how many failed. Bounded by `within_s`."""
    queue = list(reversed(bodies))
    failed = 0

    async def worker() -> None:
        nonlocal failed
        while queue:
            b = queue.pop()
            try:
                async with session.post(url, data=_encode(b), headers={"content-type": "application/json"}) as r:
                    await r.read()
                    failed += r.status != 200
            except (aiohttp.ClientError, TimeoutError):
                failed += 1

    tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
    _, pending = await asyncio.wait(tasks, timeout=within_s)
    for t in pending:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return failed + len(queue) + len(pending)


async def sim_stats(session: aiohttp.ClientSession, stats_urls: Sequence[str]) -> list[dict[str, Any]]:
    """Every replica's `GET /sim/stats`, in replica order."""
    async def one(u: str) -> dict[str, Any]:
        async with session.get(u, timeout=aiohttp.ClientTimeout(total=5)) as r:
            r.raise_for_status()
            got: dict[str, Any] = _decode(await r.read())
            return got

    return list(await asyncio.gather(*(one(u) for u in stats_urls)))


async def sample_loads(session: aiohttp.ClientSession, stats_urls: Sequence[str], interval_s: float,
                       start_at: float, stop_at: float) -> list[Sample]:
    """Every replica's running + waiting every `interval_s` from `start_at` to `stop_at` (monotonic)."""
    out: list[Sample] = []
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    tick = start_at
    while tick < stop_at:
        t = time.monotonic()
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            stats = await sim_stats(session, stats_urls)
            out.append(Sample(t, tuple(int(s["running"]) + int(s["waiting"]) for s in stats)))
        tick = max(tick + interval_s, time.monotonic())  # a late sample moves the next one, never bunches them
        await asyncio.sleep(max(0.0, tick - time.monotonic()))
    return out

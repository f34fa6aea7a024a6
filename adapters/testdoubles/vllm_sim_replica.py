"""One simulated vLLM replica's engine (a TEST DOUBLE, not a model): sequence slots with a FIFO queue, one
prefill at a time, the prefix cache, and the counters its `/metrics` and `/sim/stats` report.

Time passes with `asyncio.sleep` on the loop's clock, so a replica costs little CPU however slow it models."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import msgspec

from adapters.testdoubles.vllm_sim_model import (
    PrefixCache,
    SimParams,
    block_hashes,
    prompt_tokens,
    render_continuation,
)

__all__ = ["TTFT_BUCKETS", "FifoSlots", "ReplicaEngine", "ReplicaStats", "Sequence"]

# vLLM's buckets for vllm:time_to_first_token_seconds.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)


class ReplicaStats(msgspec.Struct, frozen=True, kw_only=True):
    """`GET /sim/stats`. `requests`, `prompt_tokens` and `cached_tokens` count scheduled requests (those whose
    prefix was looked up); `success` those that finished their answer."""

    replica: int
    requests: int
    success: int
    prompt_tokens: int
    cached_tokens: int
    running: int
    waiting: int
    peak_waiting: int
    cache_blocks: int
    cache_capacity: int
    evictions: int


class FifoSlots:
    """`limit` sequence slots handed out first come, first served; `waiting` is how many callers queue."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.running = 0
        self.peak_waiting = 0
        self._queue: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._queue)

    async def acquire(self) -> None:
        if self.running < self.limit and not self._queue:
            self.running += 1
            return
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(ready)
        self.peak_waiting = max(self.peak_waiting, len(self._queue))
        try:
            await ready
        except asyncio.CancelledError:
            if ready.done() and not ready.cancelled():  # granted as we were cancelled: pass the slot on
                self.release()
            else:
                self._queue.remove(ready)
            raise

    def release(self) -> None:
        """Hand the slot to the next in line (it stays counted as running), or free it."""
        if self._queue:
            self._queue.popleft().set_result(None)
        else:
            self.running -= 1


@dataclass
class Sequence:
    """One request on a replica: what it asked, what the cache gave it, and the blocks it pins."""

    prompt: str
    prompt_tokens: int
    blocks: list[int]
    cached_tokens: int = 0
    ttft_s: float = 0.0
    pinned: list[int] = field(default_factory=list)


class ReplicaEngine:
    """The scheduling and caching of one replica; the HTTP layer wraps each request in `run`."""

    def __init__(self, params: SimParams, index: int) -> None:
        self.params = params
        self.index = index
        self.cache = PrefixCache(params.cache_blocks)
        self.slots = FifoSlots(params.max_num_seqs)
        self._prefill = asyncio.Lock()  # FIFO: one prefill at a time, in arrival order
        self.ids = 0  # completion ids handed out (never reset, so ids stay unique)
        self.reset()

    def reset(self) -> None:
        """Empty the cache and zero every counter (only sensible while idle)."""
        self.cache.clear()
        self.requests = self.prompt_tokens = self.cached_tokens = self.slots.peak_waiting = 0
        self.success: dict[str, int] = {}
        self.ttft_counts = [0] * (len(TTFT_BUCKETS) + 1)  # per bucket, the last one +Inf
        self.ttft_sum = 0.0

    @property
    def busy(self) -> bool:
        return self.slots.running > 0 or self.slots.waiting > 0

    def stats(self) -> ReplicaStats:
        return ReplicaStats(
            replica=self.index, requests=self.requests, success=sum(self.success.values()),
            prompt_tokens=self.prompt_tokens, cached_tokens=self.cached_tokens, running=self.slots.running,
            waiting=self.slots.waiting, peak_waiting=self.slots.peak_waiting, cache_blocks=len(self.cache),
            cache_capacity=self.cache.capacity, evictions=self.cache.evictions,
        )

    @contextlib.asynccontextmanager
    async def run(self, prompt: str) -> AsyncIterator[Sequence]:
        """Queue for a slot, then for the prefill, then prefill the uncached tokens; yields at the first token
        with the slot and the prompt's blocks held until the block ends (normally, or by cancellation)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        p = self.params
        seq = Sequence(prompt, prompt_tokens(prompt, p.chars_per_token), block_hashes(prompt, p))
        await self.slots.acquire()
        try:
            async with self._prefill:
                # vLLM always computes the last prompt token, so a fully cached prompt still prefills a block.
                hit = self.cache.match(seq.blocks[: (seq.prompt_tokens - 1) // p.block_tokens])
                seq.pinned = seq.blocks[:hit]
                self.cache.pin(seq.pinned)
                seq.cached_tokens = hit * p.block_tokens
                self.requests += 1
                self.prompt_tokens += seq.prompt_tokens
                self.cached_tokens += seq.cached_tokens
                uncached = seq.prompt_tokens - seq.cached_tokens
                await asyncio.sleep(uncached / p.prefill_tokens_per_s + p.prefill_overhead_s)
                self.cache.pin(seq.blocks[hit:])
                seq.pinned = seq.blocks
            seq.ttft_s = loop.time() - start
            self._observe_ttft(seq.ttft_s)
            yield seq
        finally:
            self.cache.release(seq.pinned)
            seq.pinned = []
            self.slots.release()

    def finish(self, seq: Sequence, output: str, reason: str) -> None:
        """The answer is complete: cache its blocks (prompt + answer, as the next turn renders them)."""
        full = block_hashes(render_continuation(seq.prompt, output), self.params)
        self.cache.release(seq.pinned, full[len(seq.blocks):])
        seq.pinned = []
        self.success[reason] = self.success.get(reason, 0) + 1

    def _observe_ttft(self, seconds: float) -> None:
        self.ttft_sum += seconds
        for i, bound in enumerate(TTFT_BUCKETS):
            if seconds <= bound:
                self.ttft_counts[i] += 1
                return
        self.ttft_counts[-1] += 1

"""What the limits plug-in keeps across config generations: counters, the Redis client, settlements.

A reload rebuilds every plug-in, but a reload must not reset a rate limit or forget a spend, and
requests of the old generation settle after the new one started. So the backends live here, one
set per gateway (``PluginHost.shared["limits"]``): the in-process limiter (the embedded default,
and the per-replica fallback when Redis fails open), and one ``SharedRedis`` per Redis setting,
counted by the generations using it and closed when the last one stops.

``SharedRedis`` also settles: ``on_finish`` only queues a ``Settlement`` (a list append), and one
task sends the queue in batches, one ``settle.lua`` round trip each. While Redis is down the queue
waits (bounded), so spend recorded during an outage reaches the shared total once it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from adapters.gateway_plugins import PluginHost
from adapters.ratelimit import BackendUnavailable, MemoryRateLimiter, RedisRateLimiter
from gateway.policy.metrics import PolicyMetrics
from policies.limits import Fired, Settlement

__all__ = ["MAX_QUEUED", "LimitsShared", "SharedRedis", "limits_shared"]

log = logging.getLogger("llmops.limits")

MAX_QUEUED = 100_000  # settlements waiting for Redis; beyond this they are dropped and counted
_BATCH = 256
_FLUSH_TIMEOUT_S = 5.0  # the last generation's goodbye: settle what is queued, bounded

OnFired = Callable[[Settlement, list[Fired]], None]


class SharedRedis:
    def __init__(self, limiter: RedisRateLimiter, metrics: PolicyMetrics, on_fired: OnFired,
                 retry_s: float = 1.0) -> None:
        self.limiter = limiter
        self.users = 0
        self._metrics = metrics
        self._on_fired = on_fired
        self._retry_s = retry_s
        self._queue: list[Settlement] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    def acquire(self) -> None:
        self.users += 1
        if self._task is None:
            self.limiter.start()
            self._wake = asyncio.Event()
            self._task = asyncio.create_task(self._run(), name="llmops-limits-settle")

    async def release(self) -> bool:
        """One generation less; the last one settles what is queued (bounded) and closes. True: closed."""
        self.users -= 1
        if self.users > 0:
            return False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_FLUSH_TIMEOUT_S):
                await self._drain(give_up=True)
        if self._queue:
            self._metrics.settlements_dropped.inc(len(self._queue))
            log.warning("%d settlement(s) could not reach Redis before shutdown: their spend is not in the "
                        "shared total", len(self._queue))
            self._queue.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.limiter.aclose()
        return True

    def submit(self, settlement: Settlement) -> None:
        if len(self._queue) >= MAX_QUEUED:
            self._metrics.settlements_dropped.inc()
            return
        self._queue.append(settlement)
        if self._wake is not None and len(self._queue) == 1:
            self._wake.set()

    def queued(self) -> int:
        return len(self._queue)

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._drain(give_up=False)

    async def _drain(self, *, give_up: bool) -> None:
        while self._queue:
            batch = self._queue[:_BATCH]
            try:
                fired = await self.limiter.settle(batch)
            except BackendUnavailable:
                if give_up:
                    return
                await asyncio.sleep(self._retry_s)  # the probe brings it back; the queue waits meanwhile
                continue
            del self._queue[:len(batch)]  # only appended to meanwhile: the batch is still its head
            for settlement, crossed in zip(batch, fired, strict=True):
                if crossed:
                    self._on_fired(settlement, crossed)


class LimitsShared:
    """One gateway's limit state; ``memory`` is process-wide (the embedded default and the fallback)."""

    def __init__(self) -> None:
        self.memory = MemoryRateLimiter()
        self.redis: dict[tuple[Any, ...], SharedRedis] = {}
        self.seeded = False
        self.seed_task: asyncio.Task[None] | None = None
        self.warned_workers = False

    def redis_for(self, key: tuple[Any, ...], make: Callable[[], SharedRedis]) -> SharedRedis:
        found = self.redis.get(key)
        if found is None:
            found = self.redis[key] = make()
        return found

    async def release(self, key: tuple[Any, ...]) -> None:
        shared = self.redis.get(key)
        if shared is not None and await shared.release():
            self.redis.pop(key, None)


def limits_shared(host: PluginHost | None) -> LimitsShared:
    if host is None:  # built by hand (tests): nothing to share with
        return LimitsShared()
    shared: LimitsShared | None = host.shared.get("limits")
    if shared is None:
        shared = host.shared["limits"] = LimitsShared()
    return shared

"""The in-process backend: one replica's counters in dicts, on this process's clock.

It is exact for one process and cheap enough to call without a coroutine (``reserve_now``,
``settle_now``; ``reserve``/``settle`` are the protocol's async spelling of the same). Several
workers or replicas each keep their own counters, so each lets the full limit through: share
through Redis there. Spend survives a restart only through ``seed_spend`` (the gateway seeds it
from the usage rollups at start-up); the counters themselves die with the process, which is also
why nothing here can leak past a crash.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from policies.limits import Demand, Fired, Settlement, Verdict, period_bounds, period_end

__all__ = ["MemoryRateLimiter"]

_SWEEP_EVERY = 10_000  # operations between sweeps of full buckets, expired slots and past periods


class _Spend:
    __slots__ = ("end", "fired", "reservations", "reserved", "spent")

    def __init__(self, end: float) -> None:
        self.end = end
        self.spent = 0
        self.reserved = 0
        self.reservations: dict[str, tuple[int, float]] = {}  # id -> (nano-dollars, expires)
        self.fired: set[str] = set()

    def expire(self, now: float) -> None:
        """Drop reservations past their expiry. They are kept in the order they were made, and so (one
        TTL) of expiry: the scan stops at the first live one, so it costs nothing while none expired."""
        gone = []
        for rid, (_, until) in self.reservations.items():
            if until > now:
                break
            gone.append(rid)
        for rid in gone:
            self.reserved -= self.reservations.pop(rid)[0]


class MemoryRateLimiter:
    """Token buckets, concurrency slots and spends of one process. ``clock``: epoch seconds."""

    name = "memory"

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._buckets: dict[str, list[float]] = {}  # key -> [level, at]; absent: full
        self._slots: dict[str, dict[str, float]] = {}  # key -> {reservation id: expires}
        self._spends: dict[tuple[str, str], _Spend] = {}  # (key, period id)
        self._ops = 0

    # -- the protocol ---------------------------------------------------------------------------

    async def reserve(self, demand: Demand) -> Verdict:
        return self.reserve_now(demand)

    async def settle(self, settlements: Sequence[Settlement]) -> list[list[Fired]]:
        return [self.settle_now(s) for s in settlements]

    def status(self) -> dict[str, Any]:
        return {"backend": self.name, "state": "ok"}

    async def aclose(self) -> None:
        return None

    # -- the work -------------------------------------------------------------------------------

    def _level(self, key: str, limit: int, window_s: int, now: float) -> float:
        state = self._buckets.get(key)
        if state is None:
            return float(limit)
        return min(float(limit), state[0] + max(0.0, now - state[1]) * limit / window_s)  # a clock step back: none

    def _spend(self, key: str, period_id: str, end: float) -> _Spend:
        state = self._spends.get((key, period_id))
        if state is None:
            state = self._spends[(key, period_id)] = _Spend(end)
        return state

    def reserve_now(self, demand: Demand) -> Verdict:
        now = self._clock()
        self._tick(now)
        kind, index, retry = "", -1, 0.0
        tokens = demand.tokens
        levels = [self._level(b.key, b.limit, b.window_s, now) for b in demand.buckets]
        for j, b in enumerate(demand.buckets):
            cost = tokens if b.tokens else 1
            if levels[j] < cost:
                kind, index, retry = "bucket", j, (cost - levels[j]) * b.window_s / b.limit
                break
        if not kind:
            for j, s in enumerate(demand.slots):
                held = self._slots.get(s.key)
                if held and len(held) >= s.limit:
                    for rid in [r for r, until in held.items() if until <= now]:
                        del held[rid]
                    if len(held) >= s.limit:
                        kind, index, retry = "slot", j, 1.0
                        break
        periods: list[str] = []
        ends: list[float] = []
        spends: list[_Spend] = []
        spent = reserved = 0
        cost = demand.cost
        for j, p in enumerate(demand.spends):
            pid, _, end = period_bounds(p.period, now)
            periods.append(pid)
            ends.append(end - now)
            state = self._spend(p.key, pid, end)
            state.expire(now)
            spends.append(state)
            if not kind and p.limit >= 0 and state.spent + state.reserved + cost > p.limit:
                kind, index, spent, reserved = "spend", j, state.spent, state.reserved
                retry = end - now if state.spent + cost > p.limit else 1.0
        if kind:
            return Verdict(False, kind, index, retry, _levels(demand, levels), periods, ends, spent, reserved)
        for j, b in enumerate(demand.buckets):
            levels[j] -= tokens if b.tokens else 1
            self._buckets[b.key] = [levels[j], now]
        until = now + demand.ttl_s
        for s in demand.slots:
            self._slots.setdefault(s.key, {})[demand.id] = until
        if cost > 0:
            for state in spends:
                state.reserved += cost
                state.reservations[demand.id] = (cost, until)
        return Verdict(True, "", -1, 0.0, _levels(demand, levels), periods, ends)

    def settle_now(self, settlement: Settlement) -> list[Fired]:
        now = self._clock()
        self._tick(now)
        delta = settlement.delta
        if delta:
            for b in settlement.buckets:
                level = min(float(b.limit), self._level(b.key, b.limit, b.window_s, now) - delta)
                self._buckets[b.key] = [level, now]
        for key in settlement.slots:
            held = self._slots.get(key)
            if held is not None:
                held.pop(settlement.id, None)
                if not held:
                    del self._slots[key]
        fired: list[Fired] = []
        for p, period_id in zip(settlement.spends, settlement.periods, strict=False):
            state = self._spend(p.key, period_id, period_end(period_id))
            taken = state.reservations.pop(settlement.id, None)
            if taken is not None:
                state.reserved -= taken[0]
            state.spent += settlement.actual
            for alert, threshold in p.alerts:
                if state.spent >= threshold and alert not in state.fired:
                    state.fired.add(alert)
                    fired.append(Fired(alert, state.spent))
        return fired

    def seed_spend(self, key: str, period_id: str, nano: int) -> None:
        """Spend recorded before this process started (the usage rollups), added once."""
        self._spend(key, period_id, period_end(period_id)).spent += nano

    def outstanding(self) -> int:
        """Reservations held (concurrency slots and budget reservations), for tests and gauges."""
        return sum(len(h) for h in self._slots.values()) + sum(len(s.reservations) for s in self._spends.values())

    def _tick(self, now: float) -> None:
        self._ops += 1
        if self._ops >= _SWEEP_EVERY:
            self._ops = 0
            self.sweep(now)

    def sweep(self, now: float | None = None) -> None:
        """Forget what no longer holds anything: full buckets, expired slots, ended periods (a day late)."""
        now = self._clock() if now is None else now
        self._buckets = {k: v for k, v in self._buckets.items() if _not_full(v, now)}
        for key in list(self._slots):
            held = {r: until for r, until in self._slots[key].items() if until > now}
            if held:
                self._slots[key] = held
            else:
                del self._slots[key]
        for ended in [k for k, s in self._spends.items() if s.end + 86_400 < now]:
            del self._spends[ended]


def _not_full(state: list[float], now: float) -> bool:
    # Without the bucket's limit at hand: any bucket idle for a day (the longest window) is full.
    return now - state[1] < 86_400


def _levels(demand: Demand, levels: list[float]) -> list[tuple[int, float]]:
    """Per bucket: whole units remaining and seconds until full again."""
    return [(math.floor(level), max(0.0, (b.limit - level) * b.window_s / b.limit))
            for b, level in zip(demand.buckets, levels, strict=True)]

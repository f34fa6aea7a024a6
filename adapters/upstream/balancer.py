"""Pick a provider replica, skipping replicas whose breaker is open.

The default (`least_inflight`, and `vllm_queue` when vLLM's queue length is scraped) is a plain function on
the hot path: fewest requests in flight plus the replica's waiting queue. Other modes are `Balancer`
objects held per provider (`RandomBalancer` here, `PrefixAffinity` in prefix_affinity.py): they may keep
state across requests and read the request's body and headers."""

from __future__ import annotations

import itertools
import random
from typing import Any, Protocol

from adapters.upstream.base import Backend

__all__ = ["Balancer", "RandomBalancer", "candidates", "pick_backend"]

_rotation = itertools.count()


def pick_backend(backends: list[Backend], avoid: Backend | None = None) -> Backend | None:
    """Return a backend whose breaker let us in, or None when all are open. ``avoid`` (the replica a retry's
    previous attempt just failed on) is taken only when no other replica is available."""
    if len(backends) == 1:
        b = backends[0]
        return b if b.breaker.acquire() else None
    n = len(backends)
    start = next(_rotation) % n  # rotate ties so equal replicas share load
    best: Backend | None = None
    best_score = 0.0
    for i in range(n):
        b = backends[(start + i) % n]
        if b is avoid or not b.breaker.available():
            continue
        score = b.inflight + b.waiting
        if best is None or score < best_score:
            best, best_score = b, score
    if best is None:
        best = avoid if avoid is not None and avoid.breaker.available() else None
    if best is None or not best.breaker.acquire():
        return None
    return best


def candidates(backends: list[Backend], avoid: Backend | None) -> list[int]:
    """Indexes of the replicas whose breaker is closed, less ``avoid`` while another one is: the choice a
    `Balancer` draws from (`pick_backend` applies the same rule in its own loop, to stay allocation-free)."""
    live = [i for i, b in enumerate(backends) if b.breaker.available()]
    if avoid is not None and len(live) > 1:
        live = [i for i in live if backends[i] is not avoid] or live
    return live


class Balancer(Protocol):
    """A provider's replica picker with a memory; called once per attempt, on the event loop's thread. A retry
    passes ``avoid``, the replica its previous attempt failed on: a picker takes it only when nothing else is
    available (its breaker may stay closed for several failures, and a retry on it would likely fail again)."""

    def pick(self, backends: list[Backend], body: dict[str, Any],
             headers: list[tuple[bytes, bytes]] | None, avoid: Backend | None = None) -> Backend | None: ...


class RandomBalancer:
    """A uniform draw among the replicas whose breaker is closed: the baseline other modes are judged by."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._choice = (rng or random.Random()).choice

    def pick(self, backends: list[Backend], body: dict[str, Any],
             headers: list[tuple[bytes, bytes]] | None = None, avoid: Backend | None = None) -> Backend | None:
        live = candidates(backends, avoid)
        if not live:
            return None
        b = backends[self._choice(live)]
        return b if b.breaker.acquire() else None

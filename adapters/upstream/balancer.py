"""Pick a provider replica: fewest requests in flight (plus, when scraped,
vLLM's own queue length), skipping replicas whose breaker is open."""

from __future__ import annotations

import itertools

from adapters.upstream.base import Backend

__all__ = ["pick_backend"]

_rotation = itertools.count()


def pick_backend(backends: list[Backend]) -> Backend | None:
    """Return a backend whose breaker let us in, or None when all are open."""
    if len(backends) == 1:
        b = backends[0]
        return b if b.breaker.acquire() else None
    n = len(backends)
    start = next(_rotation) % n  # rotate ties so equal replicas share load
    best: Backend | None = None
    best_score = 0.0
    for i in range(n):
        b = backends[(start + i) % n]
        if not b.breaker.available():
            continue
        score = b.inflight + b.waiting
        if best is None or score < best_score:
            best, best_score = b, score
    if best is None or not best.breaker.acquire():
        return None
    return best

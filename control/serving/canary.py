"""Canary judging on what the gateway measured: each slot's ``usage_records``, then ``policies.serving.judge``.

The serving module's reconciler calls ``judge_canaries`` once per pass with every endpoint that runs a
ready canary, and acts on the verdicts (``rollback``: drop the canary, audit the stats).

What is read, for each candidate, over [max(since, now - window_s), now]:

* a request belongs to the slot planned first: ``first_provider`` when the request fell back (the
  gateway sets it then), else ``provider``;
* per slot, by SQL aggregates: requests, errors (status >= 500, or planned on the slot and served by
  another provider) and 4xx (the client's, not judged);
* per slot, the latencies of the newest ``sample_cap`` successful requests (status < 400, served by their
  own slot): a p95 from a bounded sample, computed in Python, the same way on SQLite and PostgreSQL.

Bounded work: one read unit per pass for all candidates, two statements: the aggregates, and one
``UNION ALL`` of a ``ORDER BY ts DESC LIMIT sample_cap`` per slot (a backward walk of the ``ts`` index
that stops at the cap or the window's start). Read-only; an empty table gives ``wait`` verdicts. A store
outage raises ``adapters.store.StoreUnavailable`` (a ``StoreError``): the caller logs it and skips the pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, case, func, literal, or_, select, union_all

from adapters.dataplane import usage_records
from adapters.store import Store
from policies.serving.canary import CanaryBounds, CanaryVerdict, SlotStats, judge

__all__ = ["DEFAULT_SAMPLE_CAP", "CanaryCandidate", "judge_canaries", "load_slot_stats"]

DEFAULT_SAMPLE_CAP = 5_000  # latencies per slot: a p95 within a fraction of a percentile, a few hundred kB read
_SLOTS_PER_STATEMENT = 100  # SQLite allows 500 members in a UNION ALL and an expression 1000 deep
_u = usage_records
_slot = func.coalesce(_u.c.first_provider, _u.c.provider)  # the slot planned first
_served_elsewhere = and_(_u.c.first_provider.is_not(None), _u.c.first_provider != _u.c.provider)
_is_error = or_(_u.c.status >= 500, _served_elsewhere)
_is_client_error = and_(_u.c.status >= 400, _u.c.status < 500, ~_served_elsewhere)


@dataclass(frozen=True, slots=True)
class CanaryCandidate:
    """An endpoint running a canary: its two slots' gateway provider names and when the canary took traffic."""

    endpoint_id: str
    stable_provider: str  # serving:<endpoint id>:stable
    canary_provider: str  # serving:<endpoint id>:canary
    since: datetime  # timezone-aware: requests before it were not the canary's (a provider name is reused)

    def __post_init__(self) -> None:
        if self.since.tzinfo is None:
            raise ValueError(f"CanaryCandidate.since must be timezone-aware ({self.endpoint_id})")
        if self.stable_provider == self.canary_provider:
            raise ValueError(f"stable and canary are one provider ({self.stable_provider}) for {self.endpoint_id}")


def _aware(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(UTC)


def _window_start(c: CanaryCandidate, bounds: CanaryBounds, now: datetime) -> datetime:
    return max(c.since.astimezone(UTC), now - timedelta(seconds=bounds.window_s))


def _aggregates(starts: dict[str, datetime], now: datetime) -> Select[Any, int, Any, Any]:
    """Requests, errors and 4xx per slot, each slot over its own window; the outer range (the ``ts``
    index) bounds the scan to the earliest start."""
    in_window = [_u.c.ts >= min(starts.values()), _u.c.ts <= now,
                 or_(*[and_(_slot == p, _u.c.ts >= start) for p, start in starts.items()])]
    return (select(_slot.label("slot"), func.count().label("rows"),
                   func.sum(case((_is_error, 1), else_=0)).label("errors"),
                   func.sum(case((_is_client_error, 1), else_=0)).label("client_errors"))
            .where(*in_window).group_by(_slot))


def _newest_latencies(provider: str, start: datetime, now: datetime, cap: int) -> Select[Any, float]:
    """The slot's newest ``cap`` successful latencies. Wrapped in a subquery: SQLite allows ORDER BY and
    LIMIT in a UNION ALL member only there."""
    newest = (select(_u.c.latency_s)
              .where(_u.c.ts >= start, _u.c.ts <= now, _slot == provider, _u.c.status < 400, ~_served_elsewhere)
              .order_by(_u.c.ts.desc()).limit(cap).subquery())
    return select(literal(provider).label("slot"), newest.c.latency_s)


async def load_slot_stats(store: Store, candidates: Sequence[CanaryCandidate], bounds: CanaryBounds, *,
                          now: datetime | None = None, sample_cap: int = DEFAULT_SAMPLE_CAP,
                          timeout_s: float | None = None) -> dict[str, SlotStats]:
    """``SlotStats`` per provider name (both slots of every candidate; a slot without requests is empty).

    A provider may be a slot of one candidate only (each endpoint's names are its own), else ValueError."""
    if sample_cap < 1:
        raise ValueError(f"sample_cap must be at least 1, not {sample_cap}")
    now = _aware(now)
    starts: dict[str, datetime] = {}
    for c in candidates:
        for provider in (c.stable_provider, c.canary_provider):
            if provider in starts:
                raise ValueError(f"provider {provider!r} is a slot of more than one candidate")
            starts[provider] = _window_start(c, bounds, now)
    if not starts:
        return {}
    counts: dict[str, Any] = {}
    latencies: dict[str, list[float]] = {p: [] for p in starts}
    slots = list(starts.items())
    async with store.read(timeout_s=timeout_s) as conn:
        for i in range(0, len(slots), _SLOTS_PER_STATEMENT):  # one turn for up to 50 canaries
            chunk = dict(slots[i:i + _SLOTS_PER_STATEMENT])
            for row in await conn.execute(_aggregates(chunk, now)):
                counts[row.slot] = row
            samples = union_all(*[_newest_latencies(p, start, now, sample_cap) for p, start in chunk.items()])
            for slot, latency_s in await conn.execute(samples):
                latencies[slot].append(float(latency_s))
    out = {}
    for p in starts:
        row = counts.get(p)
        rows, errors, client = (int(row.rows), int(row.errors or 0), int(row.client_errors or 0)) if row else (0, 0, 0)
        out[p] = SlotStats(requests=rows - client, errors=errors, client_errors=client, latencies_s=latencies[p])
    return out


async def judge_canaries(store: Store, candidates: Sequence[CanaryCandidate], bounds: CanaryBounds, *,
                         now: datetime | None = None, sample_cap: int = DEFAULT_SAMPLE_CAP,
                         timeout_s: float | None = None) -> list[tuple[str, CanaryVerdict]]:
    """``(endpoint_id, verdict)`` for each candidate, in order; ``verdict.stats`` adds the window judged
    (ISO instants) and the providers, for the audit entry. Raises the store's errors (``StoreError``)."""
    now = _aware(now)
    stats = await load_slot_stats(store, candidates, bounds, now=now, sample_cap=sample_cap, timeout_s=timeout_s)
    out = []
    for c in candidates:
        verdict = judge(stats[c.stable_provider], stats[c.canary_provider], bounds)
        window = {"from": _window_start(c, bounds, now).isoformat(), "to": now.isoformat()}
        providers = {"stable": c.stable_provider, "canary": c.canary_provider}
        out.append((c.endpoint_id, replace(verdict, stats={**verdict.stats, "window": window,
                                                           "providers": providers})))
    return out

"""Is a canary revision worse than the stable one? Judged on the requests the gateway served each slot.

Pure: ``control.serving.canary`` reads each slot's counts and latency sample from ``usage_records``
(``SlotStats``) and ``judge`` turns them into a ``CanaryVerdict`` the serving module acts on.

What counts (the reader applies it, ``SlotStats`` carries the result):

* a request belongs to the slot that was planned **first**, even if another target served it;
* it is an **error** when its status is >= 500, or when its slot failed and another target served it
  (a canary that fails over to stable still hurt the request: it took an attempt and the latency);
* a 4xx is the client's error: it is left out of ``requests`` and ``errors`` alike (``client_errors``
  reports it);
* latency is that of successful requests (status < 400, served by their own slot), p95 by nearest rank.

The verdict, in order:

1. ``wait``: the canary has fewer than ``min_requests`` requests in the window: too few to judge.
2. ``rollback`` when either bound is breached (the reason names each breached bound and both values):
   * error rate: canary's minus the baseline's > ``max_error_rate_delta``. The baseline is the stable's
     error rate when the stable slot has at least ``min_requests`` requests, else 0: with little or no
     stable traffic (e.g. a 99 % canary) its rate is noise, and the canary's own rate is judged;
   * p95 latency: canary's > ``max_p95_ratio`` x stable's, compared only when the stable slot has
     at least ``min_requests`` requests and both slots have a successful request to time (a slot
     whose every request failed has no latency; the error bound judges it). Both p95s are raised to
     ``latency_floor_s`` first, so a stable slot answering in ~0 s (a cache, a test double) does not
     make any real latency an infinite ratio.
3. ``ok`` otherwise.

Both comparisons are strict (a value exactly at its bound is within it), with a tolerance of 1e-9 so
float rounding of the counts cannot decide a boundary case.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["CanaryAction", "CanaryBounds", "CanaryVerdict", "SlotStats", "judge", "p95"]

CanaryAction = Literal["wait", "ok", "rollback"]

_EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class CanaryBounds:
    """When a canary is judged and what it may not exceed (``SERVING_CANARY_*`` settings)."""

    window_s: float  # the traffic judged: the last window_s seconds since the canary started
    min_requests: int  # canary requests needed before judging; stable requests needed to use its numbers
    max_error_rate_delta: float  # 0..1: how far the canary's error rate may exceed the stable's
    max_p95_ratio: float  # >= 1: how many times the stable's p95 latency the canary's may be
    latency_floor_s: float = 0.01  # p95s below this compare as this (no infinite ratio against ~0 s)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.window_s) and self.window_s > 0):
            raise ValueError(f"window_s must be a positive number of seconds, not {self.window_s!r}")
        if self.min_requests < 1:
            raise ValueError(f"min_requests must be at least 1, not {self.min_requests!r}")
        if not 0 <= self.max_error_rate_delta <= 1:
            raise ValueError(f"max_error_rate_delta must be within 0..1, not {self.max_error_rate_delta!r}")
        if not (math.isfinite(self.max_p95_ratio) and self.max_p95_ratio >= 1):
            raise ValueError(f"max_p95_ratio must be a finite number >= 1, not {self.max_p95_ratio!r}")
        if not (math.isfinite(self.latency_floor_s) and self.latency_floor_s >= 0):
            raise ValueError(f"latency_floor_s must be >= 0, not {self.latency_floor_s!r}")

    def as_dict(self) -> dict[str, Any]:
        return {"window_s": self.window_s, "min_requests": self.min_requests,
                "max_error_rate_delta": self.max_error_rate_delta, "max_p95_ratio": self.max_p95_ratio,
                "latency_floor_s": self.latency_floor_s}


def p95(values: Sequence[float]) -> float | None:
    """The 95th percentile by nearest rank (an observed value, no interpolation); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(math.ceil(0.95 * len(ordered)) - 1, 0)]


@dataclass(frozen=True, slots=True)
class SlotStats:
    """One slot's requests in the window (see the module docstring for what counts)."""

    requests: int = 0  # planned on this slot first, 4xx left out
    errors: int = 0  # of ``requests``: status >= 500, or served by another target
    client_errors: int = 0  # 4xx planned on this slot: reported, not judged
    latencies_s: Sequence[float] = field(default=())  # successful requests' latencies (a bounded sample)
    p95_latency_s: float | None = field(init=False)

    def __post_init__(self) -> None:
        if self.requests < 0 or self.client_errors < 0 or not 0 <= self.errors <= self.requests:
            raise ValueError(f"inconsistent counts: {self.requests} requests, {self.errors} errors, "
                             f"{self.client_errors} client errors")
        object.__setattr__(self, "p95_latency_s", p95(self.latencies_s))  # once: judge and as_dict both read it

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def as_dict(self) -> dict[str, Any]:
        """For the audit entry: JSON-ready, rounded to what a reader needs."""
        return {"requests": self.requests, "errors": self.errors, "client_errors": self.client_errors,
                "error_rate": round(self.error_rate, 6), "latency_samples": len(self.latencies_s),
                "p95_latency_s": None if self.p95_latency_s is None else round(self.p95_latency_s, 6)}


@dataclass(frozen=True, slots=True)
class CanaryVerdict:
    action: CanaryAction
    reason: str  # human text: why, with the numbers
    stats: dict[str, Any]  # {"stable": SlotStats.as_dict(), "canary": ..., "bounds": CanaryBounds.as_dict()}


def _pct(rate: float) -> str:
    return f"{100 * rate:.2f}%"


def _error_breach(stable: SlotStats, canary: SlotStats, bounds: CanaryBounds) -> tuple[str | None, str]:
    """(the breach, or None; the comparison as text)."""
    trusted = stable.requests >= bounds.min_requests
    baseline = stable.error_rate if trusted else 0.0
    against = (f"stable {_pct(stable.error_rate)} ({stable.errors} of {stable.requests})" if trusted else
               f"a baseline of 0 (stable has {stable.requests} of the {bounds.min_requests} requests needed)")
    text = f"error rate: canary {_pct(canary.error_rate)} ({canary.errors} of {canary.requests}) vs {against}"
    delta = canary.error_rate - baseline
    if delta > bounds.max_error_rate_delta + _EPSILON:
        return (f"{text}: {100 * delta:.2f} points higher, over the bound max_error_rate_delta "
                f"{bounds.max_error_rate_delta:g}"), text
    return None, text


def _latency_breach(stable: SlotStats, canary: SlotStats, bounds: CanaryBounds) -> tuple[str | None, str]:
    if stable.requests < bounds.min_requests:
        return None, (f"p95 latency not compared: stable has {stable.requests} of the {bounds.min_requests} "
                      f"requests needed")
    if stable.p95_latency_s is None or canary.p95_latency_s is None:
        which = "stable" if stable.p95_latency_s is None else "canary"
        return None, f"p95 latency not compared: {which} has no successful request to time"
    floor = bounds.latency_floor_s
    s, c = max(stable.p95_latency_s, floor), max(canary.p95_latency_s, floor)
    floored = f" (each raised to the floor {floor:g} s)" if min(stable.p95_latency_s, canary.p95_latency_s) < floor \
        else ""
    text = f"p95 latency: canary {canary.p95_latency_s:.3f} s vs stable {stable.p95_latency_s:.3f} s{floored}"
    if c > bounds.max_p95_ratio * s * (1 + _EPSILON):
        ratio = c / s if s > 0 else math.inf
        return f"{text}: {ratio:.2f}x, over the bound max_p95_ratio {bounds.max_p95_ratio:g}", text
    return None, text


def judge(stable: SlotStats, canary: SlotStats, bounds: CanaryBounds) -> CanaryVerdict:
    """``wait``, ``ok`` or ``rollback`` for a canary beside its stable slot (rules: module docstring)."""
    stats = {"stable": stable.as_dict(), "canary": canary.as_dict(), "bounds": bounds.as_dict()}
    if canary.requests < bounds.min_requests:
        return CanaryVerdict("wait", f"canary has {canary.requests} of the {bounds.min_requests} requests needed "
                                     f"to judge it", stats)
    error_breach, error_text = _error_breach(stable, canary, bounds)
    latency_breach, latency_text = _latency_breach(stable, canary, bounds)
    breaches = [b for b in (error_breach, latency_breach) if b is not None]
    if breaches:
        return CanaryVerdict("rollback", "; ".join(breaches), stats)
    return CanaryVerdict("ok", f"within bounds: {error_text}; {latency_text}", stats)

"""Exact, deterministic splits of an integer amount by weight (largest remainder, Hamilton's method).

A GPU-hour-priced provider costs a fixed amount each hour it serves traffic; reports spread that amount
over the rows of the hour by token share. Splitting in integer units (nano-dollars, micro-GPU-hours)
with the largest-remainder method makes the parts sum to the whole exactly, whatever the weights, so a
report's rows always add up to its total. Ties in the remainder go to the smaller key, so the same
data always splits the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple

__all__ = ["MICRO_HOUR", "GpuRow", "Key", "allocate_hours", "split"]

Key = tuple[str, ...]
MICRO_HOUR = 1_000_000


def split(amount: int, weights: Sequence[tuple[Key, int]]) -> dict[Key, int]:
    """Split ``amount`` (a non-negative integer) over ``weights`` (key, weight >= 0) in proportion.

    The parts are integers that sum to ``amount`` exactly. All-zero weights split evenly (the hour was
    served, even if no tokens were counted). Keys must be distinct; ties in the remainder go to the smaller key.
    """
    if not weights:
        return {}
    if all(w == 0 for _, w in weights):
        weights = [(k, 1) for k, _ in weights]
    total = sum(w for _, w in weights)
    parts: dict[Key, int] = {}
    remainders: list[tuple[int, Key]] = []
    for key, weight in weights:
        part, remainder = divmod(amount * weight, total)
        parts[key] = part
        remainders.append((remainder, key))
    left = amount - sum(parts.values())  # < len(weights): each floor lost less than one unit
    if left:
        remainders.sort(key=lambda rk: (-rk[0], rk[1]))
        for _, key in remainders[:left]:
            parts[key] += 1
    return parts


class GpuRow(NamedTuple):
    """One hourly rollup row of a GPU-hour-priced provider, as the allocation needs it."""

    hour: Any  # the hour as the database returned it (only compared for equality)
    provider: str
    key: Key  # team, key_id, route, model, variant, endpoint: unique within (hour, provider)
    tokens: int  # prompt + completion
    requests: int
    price_nano: int  # the provider's hourly price, nano-dollars


def allocate_hours(rows: Iterable[GpuRow]) -> Iterator[tuple[GpuRow, int, int]]:
    """Each row with its part of its (hour, provider)'s price (nano-dollars) and of that provider-hour
    (micro-hours, 10^6 a provider-hour), split by token share (requests when the hour counted no tokens).

    Allocating per rollup row, the finest grain, makes every report (any grouping, any filter, summed from
    hourly rows or from the daily summary) add up to the same amounts. An hour's price is the largest any
    of its rows carries (a reload may change it mid-hour).
    """
    hours: dict[tuple[Any, str], list[GpuRow]] = {}
    for row in rows:
        hours.setdefault((row.hour, row.provider), []).append(row)
    for group in hours.values():
        by_tokens = any(r.tokens for r in group)
        weights = [(r.key, r.tokens if by_tokens else r.requests) for r in group]
        cost = split(max(r.price_nano for r in group), weights)
        share = split(MICRO_HOUR, weights)
        for r in group:
            yield r, cost[r.key], share[r.key]

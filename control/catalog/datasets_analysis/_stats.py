"""Bounded-memory summaries that merge across batches: a length histogram and a distinct-count sketch."""

from __future__ import annotations

import heapq
import math

import pyarrow as pa
import pyarrow.compute as pc

_MASK64 = (1 << 64) - 1
_EXACT_LENGTHS = 1024


def _bucket(length: int) -> int:
    """Exact up to 1024, then rounded down to 3 significant digits, so buckets stay few (< 1% error)."""
    if length <= _EXACT_LENGTHS:
        return length
    step = 10 ** (len(str(length)) - 3)
    return length // step * step


class LengthHistogram:
    """Counts per (bucketed) length; percentiles and outlier counts come from it."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.n = 0
        self.total = 0
        self.min: int | None = None
        self.max: int | None = None

    def add(self, lengths: pa.Array) -> None:
        if len(lengths) == 0:
            return
        for item in pc.value_counts(lengths).to_pylist():
            length, count = int(item["values"]), int(item["counts"])
            bucket = _bucket(length)
            self.counts[bucket] = self.counts.get(bucket, 0) + count
            self.total += length * count
            self.n += count
            self.min = length if self.min is None else min(self.min, length)
            self.max = length if self.max is None else max(self.max, length)

    def quantile(self, q: float) -> int:
        """Nearest-rank quantile: the smallest length with at least ``q`` of the values at or below it."""
        rank = max(1, math.ceil(q * self.n))
        seen = 0
        for length in sorted(self.counts):
            seen += self.counts[length]
            if seen >= rank:
                return length
        return self.max or 0

    def outliers(self, k: float = 3.0) -> int:
        """Values outside Tukey's far-out fences [Q1 - k*S, Q3 + k*S], S = max(IQR, median/4, 1).

        The floor on S keeps near-constant lengths (IQR 0) from flagging every
        value that differs by one character.
        """
        if self.n == 0:
            return 0
        q1, q3 = self.quantile(0.25), self.quantile(0.75)
        spread = max(q3 - q1, self.quantile(0.5) / 4, 1)
        low, high = q1 - k * spread, q3 + k * spread
        return sum(count for length, count in self.counts.items() if length < low or length > high)


class DistinctEstimator:
    """Exact distinct count up to ``k`` values, then a k-minimum-values (KMV) estimate.

    Keeps at most ``k`` 64-bit hashes (k=2048: about 2% standard error). Values
    are hashed as strings with Python's SipHash, which is uniform, unlike
    ``hash(int)``; the per-process seed does not matter within one analysis.
    """

    def __init__(self, k: int = 2048) -> None:
        self._k = k
        self._hashes: set[int] = set()
        self._threshold: int | None = None  # set once more than k distinct hashes were seen

    def add(self, values: pa.Array) -> None:
        values = values.drop_null()
        if len(values) == 0:
            return
        if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
            values = pc.cast(values, pa.string())
        hashes = (hash(v) & _MASK64 for v in pc.unique(values).to_pylist())
        if self._threshold is not None:
            threshold = self._threshold
            hashes = (h for h in hashes if h < threshold)
        self._hashes.update(hashes)
        if len(self._hashes) > 2 * self._k:  # trim lazily: sorting on every batch would dominate
            self._trim()

    def _trim(self) -> None:
        if len(self._hashes) > self._k:
            kept = heapq.nsmallest(self._k, self._hashes)
            self._hashes = set(kept)
            self._threshold = kept[-1]

    @property
    def exact(self) -> bool:
        self._trim()
        return self._threshold is None

    def estimate(self) -> int:
        self._trim()
        if self._threshold is None:
            return len(self._hashes)
        return round((self._k - 1) / (self._threshold / 2**64))

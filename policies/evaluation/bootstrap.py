"""Percentile-bootstrap confidence intervals for evaluation aggregates (numpy; deterministic by seed).

* ``mean_ci``: a mean over items (sentence scores, exact match, latency, judge scores).
* ``paired_diff_ci``: the mean of ``b - a`` over aligned pairs, resampling pairs (the paired bootstrap
  that compares two runs on the same items: item difficulty cancels out, so the interval is much
  narrower than two independent intervals would suggest).
* ``corpus_ci``: a corpus-level metric (BLEU, chrF), which is not a mean of item scores: items are
  resampled and the corpus score recomputed. With a metric that offers sufficient statistics
  (``metrics.bleu``/``metrics.chrf``) a resample costs one weighted sum; any other callable is
  re-run per resample, so its resamples are capped at ``GENERIC_MAX_RESAMPLES``.

Cost: a mean's 2,000 resamples of n values are 2,000 x n draws (~0.2 s at n = 10,000); above
``EXACT_MAX_N`` values ``mean_ci`` returns the normal interval (mean +- z * sd / sqrt(n)) that the
percentile bootstrap of a mean converges to, with no draws. ``corpus_ci`` draws at most
``CORPUS_MAX_DRAWS`` items in all (1,000 resamples up to 50,000 items, fewer beyond, never under 200).

``None`` and NaN are missing values and are left out (for pairs: the pair is left out when either side
is). Fewer than two values give the point estimate with no interval ``(value, None, None)``; none give
``(None, None, None)``. An infinite value (a perplexity of probability 0) gives no interval either.

Resampling draws items with replacement from ``numpy.random.default_rng(seed)``, in chunks of at most
``_CHUNK_CELLS`` draws so memory stays bounded however many items there are; the same inputs and seed
always give the same interval.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from statistics import NormalDist
from typing import Any, Final, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

__all__ = ["CORPUS_MAX_DRAWS", "EXACT_MAX_N", "GENERIC_MAX_RESAMPLES", "Interval", "StatsMetric", "corpus_ci",
           "mean_ci", "paired_diff_ci"]

Interval = tuple[float | None, float | None, float | None]
"""(estimate, low, high)."""
GENERIC_MAX_RESAMPLES: Final = 200
EXACT_MAX_N: Final = 50_000
"""Above this many values, ``mean_ci`` gives the normal interval the bootstrap converges to."""
CORPUS_MAX_DRAWS: Final = 50_000_000
"""``corpus_ci`` draws at most this many items over all resamples (but always 200 resamples)."""
_CHUNK_CELLS: Final = 1 << 21  # draws per chunk (16 MiB of int64 indices)
_NORMAL: Final = NormalDist()


@runtime_checkable
class StatsMetric(Protocol):
    """A corpus metric computed from summed per-item statistics (sacrebleu's BLEU and chrF are)."""

    def item_stats(self, hyps: Sequence[str], refs: Sequence[Any]) -> npt.NDArray[np.float64]: ...

    def score_stats(self, total: npt.NDArray[np.float64]) -> float: ...


def _present(v: float | None) -> bool:
    return v is not None and not math.isnan(v)


def _check(confidence: float, resamples: int) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, not {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, not {resamples}")


def _draws(n: int, resamples: int, seed: int) -> Iterator[npt.NDArray[np.int64]]:
    """Index matrices (chunk x n) of resamples with replacement, reproducible for a seed."""
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_CELLS // n)
    for start in range(0, resamples, chunk):
        yield rng.integers(0, n, size=(min(chunk, resamples - start), n))


def _percentiles(estimates: npt.NDArray[np.float64], confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2
    low, high = np.quantile(estimates, [tail, 1 - tail])
    return float(low), float(high)


def mean_ci(values: Sequence[float | None], *, confidence: float = 0.95, resamples: int = 2000,
            seed: int = 0) -> Interval:
    """The mean of the present values and its percentile-bootstrap interval."""
    _check(confidence, resamples)
    x = np.asarray([v for v in values if _present(v)], dtype=np.float64)
    if x.size == 0:
        return None, None, None
    mean = float(x.mean())
    if x.size < 2 or not math.isfinite(mean):
        return mean, None, None
    if bool(np.all(x == x[0])):
        return mean, mean, mean  # every resample is the same: no need to draw them
    if x.size > EXACT_MAX_N:  # the bootstrap distribution of a mean is normal here (CLT): same interval, no draws
        half = _NORMAL.inv_cdf((1 + confidence) / 2) * float(x.std()) / math.sqrt(x.size)
        return mean, mean - half, mean + half
    means = np.concatenate([x[idx].mean(axis=1) for idx in _draws(x.size, resamples, seed)])
    return (mean, *_percentiles(means, confidence))


def paired_diff_ci(a: Sequence[float | None], b: Sequence[float | None], *, confidence: float = 0.95,
                   resamples: int = 2000, seed: int = 0) -> Interval:
    """The mean of ``b - a`` over the pairs where both are present, resampling pairs."""
    if len(a) != len(b):
        raise ValueError(f"paired values must align: {len(a)} against {len(b)}")
    diffs = [float(y) - float(x) for x, y in zip(a, b, strict=True)
             if x is not None and y is not None and not (math.isnan(x) or math.isnan(y))]
    return mean_ci(diffs, confidence=confidence, resamples=resamples, seed=seed)


def _counts(idx: npt.NDArray[np.int64], n: int) -> npt.NDArray[np.float64]:
    """How often each item was drawn in each resample (rows of ``idx``)."""
    rows = idx.shape[0]
    flat = (idx + (np.arange(rows, dtype=np.int64) * n)[:, None]).ravel()
    return np.bincount(flat, minlength=rows * n).reshape(rows, n).astype(np.float64)


def corpus_ci(hyps: Sequence[str | None], refs: Sequence[Any], metric_fn: StatsMetric | Callable[..., Any], *,
              confidence: float = 0.95, resamples: int = 1000, seed: int = 0) -> Interval:
    """A corpus metric over the complete pairs and its bootstrap interval over items.

    ``metric_fn(hyps, refs)`` returns a number, None, or something with ``.value`` (a
    ``metrics.MetricResult``); a ``StatsMetric`` (``metrics.bleu``) is resampled through its statistics."""
    _check(confidence, resamples)
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} outputs but {len(refs)} references: they pair up one to one")
    pairs = [(h, r) for h, r in zip(hyps, refs, strict=True) if h is not None and r is not None]
    if not pairs:
        return None, None, None
    hs = [h for h, _ in pairs]
    rs = [r for _, r in pairs]
    n = len(pairs)
    if isinstance(metric_fn, StatsMetric):
        stats = metric_fn.item_stats(hs, rs)  # one row per pair it could score
        n = stats.shape[0]
        if n == 0:
            return None, None, None
        value: float | None = metric_fn.score_stats(stats.sum(axis=0))
        if n < 2:
            return value, None, None
        draws = max(min(resamples, CORPUS_MAX_DRAWS // n), min(resamples, GENERIC_MAX_RESAMPLES))
        scores = [metric_fn.score_stats(row) for idx in _draws(n, draws, seed) for row in _counts(idx, n) @ stats]
    else:
        value = _number(metric_fn(hs, rs))
        if n < 2 or value is None:
            return value, None, None
        scores = []
        for idx in _draws(n, min(resamples, GENERIC_MAX_RESAMPLES), seed):
            for row in idx:
                score = _number(metric_fn([hs[i] for i in row], [rs[i] for i in row]))
                if score is not None:
                    scores.append(score)
    finite = np.asarray([s for s in scores if math.isfinite(s)], dtype=np.float64)
    if value is None or not math.isfinite(value) or finite.size == 0:
        return value, None, None
    return (value, *_percentiles(finite, confidence))


def _number(result: Any) -> float | None:
    value = getattr(result, "value", result)
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)

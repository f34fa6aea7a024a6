"""The statistics of an A/B experiment: per-variant metrics, differences against control, sample size
and guardrail breaches. Pure: the control module loads ``VariantData`` and serialises ``Analysis``.

Each difference uses the test that suits its metric:

- rates (``error_rate``, ``feedback_rate``): the two-proportion z-test (pooled standard error) for the
  p-value and Newcombe's hybrid score interval (from two Wilson intervals) for the difference, which
  stays inside [-1, 1] and behaves with 0 or all events, where the Wald interval collapses;
- means (``feedback_score``, ``cost_per_request_usd``, ``prompt_tokens``, ``completion_tokens``): Welch's
  t-test and the Welch-Satterthwaite interval, since variants rarely share a variance (and by the central
  limit theorem it holds for skewed costs at the sizes it is given);
- quantiles (``latency_p50_s``, ``latency_p95_s``, ``ttft_p50_s``): a seeded percentile bootstrap of the
  difference, as a quantile has no usable closed-form standard error. Each draw is exact and O(1)
  (``bootstrap_quantile``), so the cost does not grow with the sample.

Multiple comparisons: with more than one variant besides control, the p-values of each metric are
Holm-adjusted over those comparisons (``p_value_adjusted``; equal to ``p_value`` with one), and
``significant`` uses the adjusted value. Intervals are not adjusted.

Too little data is never an error: a test needs ``MIN_SAMPLES[kind]`` observations in both arms, else
its numbers are ``None`` and ``reason`` says why. No NaN or infinity is ever returned (not JSON).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from statistics import NormalDist
from typing import Literal

import numpy as np
import numpy.typing as npt

from policies.prompts.documents import ExperimentDoc

_NORMAL = NormalDist()  # the standard normal, from the standard library (no scipy import at start-up)

__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "DEFAULT_RELATIVE_EFFECT",
    "HIGHER_IS_BETTER",
    "METRICS",
    "MIN_SAMPLES",
    "POWER",
    "Analysis",
    "Breach",
    "Comparison",
    "FloatArray",
    "SampleSize",
    "VariantData",
    "VariantStats",
    "analyse",
    "bootstrap_quantile",
    "holm",
    "metric_value",
    "observations",
]

FloatArray = npt.NDArray[np.float64]
TestKind = Literal["proportion", "welch", "bootstrap"]

BOOTSTRAP_RESAMPLES = 2000
POWER = 0.8
DEFAULT_RELATIVE_EFFECT = 0.05  # min_effect when the experiment sets none: 5 % of control's value
MIN_SAMPLES: dict[TestKind, int] = {"proportion": 10, "welch": 5, "bootstrap": 20}
HIGHER_IS_BETTER = frozenset({"feedback_score", "feedback_rate"})


def _array(values: Sequence[float] | FloatArray = ()) -> FloatArray:
    return np.asarray(values, dtype=np.float64).reshape(-1)


@dataclass(frozen=True, slots=True)
class VariantData:
    """One variant's raw observations: its ``usage_records`` rows (``fallback`` false) and ``feedback``.

    ``errors`` are requests with status >= 400; ``fallbacks`` are counted apart and in nothing else.
    ``latencies`` (s) are those of successful requests, ``ttfts`` of the streamed ones among them;
    ``costs`` holds one USD value per priced request (``unpriced`` counts the rest). Token means are
    the sums over ``requests``; the per-request counts, when loaded, give them a Welch test."""

    requests: int = 0
    errors: int = 0
    fallbacks: int = 0
    latencies: FloatArray = field(default_factory=_array)
    ttfts: FloatArray = field(default_factory=_array)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    costs: FloatArray = field(default_factory=_array)
    unpriced: int = 0
    scores: FloatArray = field(default_factory=_array)
    labels_positive: int = 0
    labels_total: int = 0
    prompt_tokens_each: FloatArray = field(default_factory=_array)  # optional: one per request
    completion_tokens_each: FloatArray = field(default_factory=_array)

    @classmethod
    def from_lists(cls, *, requests: int, errors: int = 0, fallbacks: int = 0, latencies: Sequence[float] = (),
                   ttfts: Sequence[float] = (), prompt_tokens: Sequence[int] | int = 0,
                   completion_tokens: Sequence[int] | int = 0, costs: Sequence[float] = (), unpriced: int = 0,
                   scores: Sequence[float] = (), labels: Sequence[bool] = ()) -> VariantData:
        """From plain values: token counts as per-request lists (summed, and kept for the test) or sums,
        and boolean feedback labels as a list."""
        def sum_and_each(value: Sequence[int] | int) -> tuple[int, FloatArray]:
            return (value, _array()) if isinstance(value, int) else (int(sum(value)), _array(value))

        prompt, prompt_each = sum_and_each(prompt_tokens)
        completion, completion_each = sum_and_each(completion_tokens)
        return cls(requests=requests, errors=errors, fallbacks=fallbacks, latencies=_array(latencies),
                   ttfts=_array(ttfts), prompt_tokens=prompt, completion_tokens=completion, costs=_array(costs),
                   unpriced=unpriced, scores=_array(scores), labels_positive=sum(map(bool, labels)),
                   labels_total=len(labels), prompt_tokens_each=prompt_each, completion_tokens_each=completion_each)


# -- results ---------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class VariantStats:
    variant: str
    requests: int
    fallbacks: int
    errors: int
    error_rate: float | None
    latency_p50_s: float | None
    latency_p95_s: float | None
    ttft_p50_s: float | None
    prompt_tokens: float | None  # mean per request
    completion_tokens: float | None
    cost_per_request_usd: float | None  # mean over priced requests
    priced: int
    unpriced: int
    feedback_score: float | None  # mean score
    feedback_count: int
    feedback_rate: float | None  # positive labels / labels
    feedback_labels: int


@dataclass(frozen=True, slots=True)
class Comparison:
    """``variant`` against control on ``metric``: differences are variant minus control."""

    variant: str
    metric: str
    test: str
    control_value: float | None
    variant_value: float | None
    diff: float | None = None
    rel_diff: float | None = None  # diff / control_value
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    p_value_adjusted: float | None = None
    significant: bool = False
    reason: str | None = None  # why there is no test result


@dataclass(frozen=True, slots=True)
class SampleSize:
    """Requests per variant needed to detect ``min_effect`` (absolute) on ``metric`` with a two-sided test
    at ``alpha`` and ``power``; ``additional_requests`` is what each variant still lacks."""

    metric: str
    min_effect: float | None
    min_effect_source: Literal["configured", "default"]
    alpha: float
    power: float
    observations_needed: int | None = None  # of the metric (feedback for feedback_*)
    requests_needed: int | None = None
    additional_requests: dict[str, int] = field(default_factory=dict)
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Breach:
    variant: str
    metric: str
    value: float
    threshold: float
    kind: Literal["max", "ratio_to_control"]


@dataclass(frozen=True, slots=True)
class Analysis:
    experiment: str
    metric: str
    control: str
    confidence: float
    variants: list[VariantStats]
    comparisons: list[Comparison]
    sample_size: SampleSize
    breaches: list[Breach]
    winner_candidate: str | None
    correction: Literal["none", "holm"]


# -- helpers ---------------------------------------------------------------------------------------

def _num(x: float | np.floating | None) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def _ratio(num: float, den: int) -> float | None:
    return num / den if den else None


def _quantile(x: FloatArray, q: float) -> float | None:
    return float(np.quantile(x, q)) if x.size else None


def _mean(x: FloatArray) -> float | None:
    return float(x.mean()) if x.size else None


def _stats(name: str, d: VariantData) -> VariantStats:
    return VariantStats(
        variant=name, requests=d.requests, fallbacks=d.fallbacks, errors=d.errors,
        error_rate=_ratio(d.errors, d.requests), latency_p50_s=_quantile(d.latencies, 0.5),
        latency_p95_s=_quantile(d.latencies, 0.95), ttft_p50_s=_quantile(d.ttfts, 0.5),
        prompt_tokens=_ratio(d.prompt_tokens, d.requests), completion_tokens=_ratio(d.completion_tokens, d.requests),
        cost_per_request_usd=_mean(d.costs), priced=int(d.costs.size), unpriced=d.unpriced,
        feedback_score=_mean(d.scores), feedback_count=int(d.scores.size),
        feedback_rate=_ratio(d.labels_positive, d.labels_total), feedback_labels=d.labels_total)


def metric_value(s: VariantStats, metric: str) -> float | None:
    value: float | None = getattr(s, metric)
    return value


# metric -> (test kind, what the test reads: (successes, trials), a sample, or (a sample, the quantile))
_PROPORTIONS: dict[str, Callable[[VariantData], tuple[int, int]]] = {
    "error_rate": lambda d: (d.errors, d.requests),
    "feedback_rate": lambda d: (d.labels_positive, d.labels_total),
}
_MEANS: dict[str, Callable[[VariantData], FloatArray]] = {
    "feedback_score": lambda d: d.scores,
    "cost_per_request_usd": lambda d: d.costs,
    "prompt_tokens": lambda d: d.prompt_tokens_each,
    "completion_tokens": lambda d: d.completion_tokens_each,
}
_QUANTILES: dict[str, tuple[Callable[[VariantData], FloatArray], float]] = {
    "latency_p50_s": (lambda d: d.latencies, 0.5),
    "latency_p95_s": (lambda d: d.latencies, 0.95),
    "ttft_p50_s": (lambda d: d.ttfts, 0.5),
}
METRICS = (*_PROPORTIONS, *_MEANS, *_QUANTILES)


def observations(d: VariantData, metric: str) -> int:
    """How many observations of ``metric`` a variant has (what its tests and sample sizes count)."""
    if metric in _PROPORTIONS:
        return _PROPORTIONS[metric](d)[1]
    return int((_MEANS[metric](d) if metric in _MEANS else _QUANTILES[metric][0](d)).size)


def bootstrap_quantile(x_sorted: FloatArray, q: float, rng: np.random.Generator, size: int) -> FloatArray:
    """``size`` draws of numpy's (linear) ``q``-quantile of a resample of ``x_sorted`` with replacement.

    Exact and O(size): the r-th smallest of n resampled values is ``x_sorted[ceil(n U) - 1]`` where U, the
    r-th smallest of n uniforms, is Beta(r, n - r + 1); the next one up is the least of the n - r uniforms
    above U, U + (1 - U) Beta(1, n - r)."""
    n = x_sorted.size
    h = (n - 1) * q
    r = math.floor(h) + 1  # 1-based rank of the lower order statistic
    frac = h - (r - 1)

    def pick(u: FloatArray) -> FloatArray:
        return x_sorted[np.clip(np.ceil(u * n).astype(np.int64) - 1, 0, n - 1)]

    u = rng.beta(r, n - r + 1, size)
    low = pick(u)
    if frac == 0 or r >= n:
        return low
    return low + frac * (pick(u + (1 - u) * rng.beta(1, n - r, size)) - low)


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment (controls the family-wise error rate); ``None`` entries stay out."""
    idx = [i for i, p in enumerate(p_values) if p is not None]
    p = np.array([p_values[i] for i in idx], dtype=np.float64)
    order = np.argsort(p)
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(p[order] * (p.size - np.arange(p.size))))
    out: list[float | None] = [None] * len(p_values)
    for i, value in zip(idx, adjusted, strict=True):
        out[i] = float(value)
    return out


# -- tests: each returns (ci_low, ci_high, p_value) for variant minus control ----------------------

def _wilson(x: int, n: int, z: float) -> tuple[float, float]:
    p = x / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def _proportion_test(xv: int, nv: int, xc: int, nc: int, alpha: float) -> tuple[float, float, float]:
    z = _NORMAL.inv_cdf(1 - alpha / 2)
    pv, pc = xv / nv, xc / nc
    (lv, uv), (lc, uc) = _wilson(xv, nv, z), _wilson(xc, nc, z)
    d = pv - pc
    low = d - math.sqrt((pv - lv) ** 2 + (uc - pc) ** 2)
    high = d + math.sqrt((uv - pv) ** 2 + (pc - lc) ** 2)
    pooled = (xv + xc) / (nv + nc)
    se = math.sqrt(pooled * (1 - pooled) * (1 / nv + 1 / nc))
    p = math.erfc(abs(d) / se / math.sqrt(2)) if se > 0 else 1.0  # two-sided; se 0: both arms all-or-nothing alike
    return low, high, p


def _welch(v: FloatArray, c: FloatArray, alpha: float) -> tuple[float, float, float] | str:
    """scipy.stats.ttest_ind(equal_var=False) by hand, so that a constant arm has a variance of exactly 0
    (rounding would make it 1e-35, and scipy warn and divide by it)."""
    var_v, var_c = (0.0 if np.ptp(x) == 0 else float(x.var(ddof=1)) / x.size for x in (v, c))
    se = math.sqrt(var_v + var_c)
    if se == 0:
        return "no variance in either arm: Welch's t does not apply"
    df = se**4 / (var_v**2 / (v.size - 1) + var_c**2 / (c.size - 1))
    d = float(v.mean() - c.mean())
    from scipy.special import stdtr, stdtrit  # Student's t; imported on first use (scipy loads slowly)

    half = float(stdtrit(df, 1 - alpha / 2)) * se
    return d - half, d + half, 2 * float(stdtr(df, -abs(d) / se))


def _bootstrap(v: FloatArray, c: FloatArray, q: float, alpha: float, rng: np.random.Generator,
               ) -> tuple[float, float, float]:
    diffs = (bootstrap_quantile(np.sort(v), q, rng, BOOTSTRAP_RESAMPLES)
             - bootstrap_quantile(np.sort(c), q, rng, BOOTSTRAP_RESAMPLES))
    low, high = np.quantile(diffs, [alpha / 2, 1 - alpha / 2])
    # The p-value that inverts the percentile interval: twice the smaller tail beyond 0 (+1: never 0).
    tail = min(int((diffs <= 0).sum()), int((diffs >= 0).sum()))
    return float(low), float(high), min(1.0, 2 * (tail + 1) / (BOOTSTRAP_RESAMPLES + 1))


def _compare(metric: str, variant: str, dv: VariantData, dc: VariantData, sv: VariantStats, sc: VariantStats,
             alpha: float, rng: np.random.Generator) -> Comparison:
    cv, vv = metric_value(sc, metric), metric_value(sv, metric)
    kind: TestKind = "proportion" if metric in _PROPORTIONS else "welch" if metric in _MEANS else "bootstrap"
    test = {"proportion": "two-proportion z-test, Newcombe interval", "welch": "Welch t-test",
            "bootstrap": f"percentile bootstrap ({BOOTSTRAP_RESAMPLES} resamples)"}[kind]
    diff = vv - cv if vv is not None and cv is not None else None
    base = Comparison(variant=variant, metric=metric, test=test, control_value=cv, variant_value=vv,
                      diff=_num(diff), rel_diff=_num(diff / cv) if diff is not None and cv else None)
    n = min(observations(dv, metric), observations(dc, metric))
    if n < MIN_SAMPLES[kind]:
        if metric.endswith("_tokens") and n == 0 and min(dv.requests, dc.requests):
            return replace(base, reason="only token sums were loaded: no per-request counts to test")
        return replace(base, reason=f"needs {MIN_SAMPLES[kind]} observations in each arm, has {n}")
    result: tuple[float, float, float] | str
    if kind == "proportion":
        result = _proportion_test(*_PROPORTIONS[metric](dv), *_PROPORTIONS[metric](dc), alpha)
    elif kind == "welch":
        result = _welch(_MEANS[metric](dv), _MEANS[metric](dc), alpha)
    else:
        sample, q = _QUANTILES[metric]
        result = _bootstrap(sample(dv), sample(dc), q, alpha, rng)
    if isinstance(result, str):
        return replace(base, reason=result)
    low, high, p = result
    return replace(base, ci_low=_num(low), ci_high=_num(high), p_value=_num(p))


# -- sample size, guardrails, winner ---------------------------------------------------------------

def _sample_size(doc: ExperimentDoc, data: Mapping[str, VariantData], control: VariantStats,
                 rng: np.random.Generator) -> SampleSize:
    """n = (z_{1-alpha/2} + z_power)^2 (var_control + var_variant) / effect^2 per arm, the normal
    approximation: Bernoulli variances at control's rate and the rate moved by the effect toward better;
    for means twice control's sample variance; for a quantile n_c x its bootstrap variance twice."""
    metric, alpha = doc.metric, round(1 - doc.confidence, 12)
    value = metric_value(control, metric)
    source: Literal["configured", "default"] = "configured" if doc.min_effect is not None else "default"
    effect = doc.min_effect if doc.min_effect is not None else (
        abs(value) * DEFAULT_RELATIVE_EFFECT if value is not None else None)
    out = SampleSize(metric=metric, min_effect=_num(effect), min_effect_source=source, alpha=alpha, power=POWER)
    dc = data.get(doc.control_variant, VariantData())
    n_c = observations(dc, metric)
    if value is None or not effect or n_c < 2:
        return replace(out, reason="control has too little data (or a zero value) to size the test")
    if metric in _PROPORTIONS:
        step = effect if metric in HIGHER_IS_BETTER else -effect
        moved = min(max(value + step if 0 <= value + step <= 1 else value - step, 0.0), 1.0)
        variance = value * (1 - value) + moved * (1 - moved)
    elif metric in _MEANS:
        variance = 2 * float(_MEANS[metric](dc).var(ddof=1))
    else:
        sample, q = _QUANTILES[metric]
        variance = 2 * n_c * float(bootstrap_quantile(np.sort(sample(dc)), q, rng, BOOTSTRAP_RESAMPLES).var())
    if variance <= 0:
        return replace(out, reason="control's observations have no variance")
    z = _NORMAL.inv_cdf(1 - alpha / 2) + _NORMAL.inv_cdf(POWER)
    needed = math.ceil(z * z * variance / effect**2)
    per_request = n_c / dc.requests if dc.requests else 1.0  # feedback arrives on a share of requests
    requests = math.ceil(needed / per_request) if per_request > 0 else None
    more = {v.name: max(0, requests - data.get(v.name, VariantData()).requests) for v in doc.variants} \
        if requests is not None else {}
    return replace(out, observations_needed=needed, requests_needed=requests, additional_requests=more)


def _breaches(doc: ExperimentDoc, stats: Mapping[str, VariantStats]) -> list[Breach]:
    """A ratio needs control at ``min_requests`` too: a ratio to a handful of requests is noise."""
    control = stats[doc.control_variant]
    out = []
    for name, s in stats.items():
        for g in doc.guardrails:
            if name == doc.control_variant or s.requests < g.min_requests:
                continue
            value, base = metric_value(s, g.metric), metric_value(control, g.metric)
            if value is None:
                continue
            if g.max is not None and value > g.max:
                out.append(Breach(name, g.metric, value, g.max, "max"))
            if g.max_ratio_to_control is not None and base is not None and control.requests >= g.min_requests \
                    and value > g.max_ratio_to_control * base:
                out.append(Breach(name, g.metric, value, g.max_ratio_to_control * base, "ratio_to_control"))
    return out


def _winner(doc: ExperimentDoc, stats: Mapping[str, VariantStats], primary: Sequence[Comparison]) -> str | None:
    """The best variant on the metric if its difference from control is significant; control itself
    when every other variant is significantly worse (the change should not ship)."""
    values = {name: v for name, s in stats.items() if (v := metric_value(s, doc.metric)) is not None}
    if not values or len(values) < len(stats):
        return None
    sign = 1 if doc.metric in HIGHER_IS_BETTER else -1
    best = max(values, key=lambda name: sign * values[name])
    if best == doc.control_variant:
        return best if primary and all(c.significant for c in primary) else None
    return best if any(c.variant == best and c.significant for c in primary) else None


def analyse(doc: ExperimentDoc, data: Mapping[str, VariantData], *, seed: int = 0) -> Analysis:
    """Every metric of every variant, each variant against control, sample size on ``doc.metric``,
    guardrail breaches and the winner candidate. Variants missing from ``data`` have no data."""
    rng = np.random.default_rng(seed)
    alpha = round(1 - doc.confidence, 12)  # 0.05, not 0.050000000000000044
    control = doc.control_variant
    rows = {v.name: data.get(v.name, VariantData()) for v in doc.variants}
    stats = {name: _stats(name, d) for name, d in rows.items()}
    others = [name for name in rows if name != control]
    comparisons: list[Comparison] = []
    for metric in METRICS:
        row = [_compare(metric, name, rows[name], rows[control], stats[name], stats[control], alpha, rng)
               for name in others]
        adjusted = holm([c.p_value for c in row])
        comparisons += [replace(c, p_value_adjusted=p, significant=p is not None and p < alpha)
                        for c, p in zip(row, adjusted, strict=True)]
    primary = [c for c in comparisons if c.metric == doc.metric]
    return Analysis(
        experiment=doc.id, metric=doc.metric, control=control, confidence=doc.confidence,
        variants=list(stats.values()), comparisons=comparisons,
        sample_size=_sample_size(doc, rows, stats[control], rng), breaches=_breaches(doc, stats),
        winner_candidate=_winner(doc, stats, primary), correction="holm" if len(others) > 1 else "none")

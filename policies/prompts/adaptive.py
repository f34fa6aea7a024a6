"""Adaptive allocation: Thompson sampling on the experiment's metric, with a track-and-stop winner.

Each variant's metric gets a posterior: Beta(1 + successes, 1 + failures) for a rate (``error_rate``,
``feedback_rate``); a Normal approximation for a mean (``feedback_score``, ``cost_per_request_usd``)
whose weak prior is one pseudo-observation at the pooled mean and variance (so an arm with no data is
wide, not undefined); for ``latency_p50_s`` the bootstrap distribution of the median (an approximate
posterior, as in bootstrapped Thompson sampling). ``draws`` joint samples give P(best) per variant
(lower is better for error rate, latency and cost). With ``algorithm: thompson`` an arm's share is its
P(best), which earns the most while learning; with ``track_and_stop`` it is top-two sampling (half the
leader's, half the runner-up's frequency in the draws), which keeps measuring the arms the decision hinges
on and so declares a winner with fewer requests. Either is mixed with the floor,
``min_share + (1 - k min_share) share``, so every active arm keeps at least ``min_share`` exactly.

A winner is declared when every active variant has ``min_requests`` observations of the metric, one
variant has P(best) >= ``confidence`` and, because the rule is checked at every interval (repeated looks
would otherwise declare winners that are noise, the flip-backs TensorZero users report), the Chernoff
generalised-likelihood-ratio stopping rule of track-and-stop (Garivier & Kaufmann, 2016) agrees: for the
leader against each other arm, (m_1 - m_2)^2 / (2 (s_1^2 + s_2^2)) > log((1 + log t) / delta), with the
posterior means and variances m, s^2, t the total observations and delta = 1 - confidence.

A declared winner (``runtime.winner``) is returned unchanged: it stays until the experiment restarts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from policies.prompts.documents import ExperimentDoc, ExperimentRuntime
from policies.prompts.stats import FloatArray, VariantData, bootstrap_quantile, observations

__all__ = ["AdaptiveDecision", "allocate", "posterior_draws"]


@dataclass(frozen=True, slots=True)
class AdaptiveDecision:
    weights: dict[str, float]  # every variant of the document; inactive ones 0
    prob_best: dict[str, float]  # active variants only; empty when nothing was sampled
    winner: str | None
    reason: str


def _pooled(samples: list[FloatArray]) -> FloatArray:
    return np.concatenate(samples) if samples else np.empty(0)


def posterior_draws(metric: str, data: list[VariantData], rng: np.random.Generator, draws: int,
                    ) -> FloatArray | None:
    """(variants, draws) posterior samples of ``metric``, oriented so that higher is better; ``None``
    when no variant has any observation yet (nothing to learn from)."""
    if metric in ("error_rate", "feedback_rate"):
        hits = np.array([d.errors if metric == "error_rate" else d.labels_positive for d in data], dtype=float)
        trials = np.array([observations(d, metric) for d in data], dtype=float)
        if not trials.any():
            return None
        p = rng.beta(1 + hits[:, None], 1 + (trials - hits)[:, None], (len(data), draws))
        return -p if metric == "error_rate" else p
    if metric == "latency_p50_s":
        samples = [d.latencies for d in data]
        pooled = _pooled(samples)
        if not pooled.size:
            return None
        # No latency yet: one pooled observation a draw, as wide as the spread of single requests.
        return -np.stack([bootstrap_quantile(np.sort(x), 0.5, rng, draws) if x.size else rng.choice(pooled, draws)
                          for x in samples])
    samples = [d.scores if metric == "feedback_score" else d.costs for d in data]
    pooled = _pooled(samples)
    if not pooled.size:
        return None
    prior_mean = float(pooled.mean())
    prior_var = max(float(pooled.var()), 1e-12 * max(1.0, prior_mean**2))  # > 0: ties would pick the first arm
    n = np.array([x.size for x in samples], dtype=float)
    sums = np.array([x.sum() for x in samples])
    squares = np.array([((x - x.mean()) ** 2).sum() if x.size else 0.0 for x in samples])
    mean = (prior_mean + sums) / (1 + n)
    var = (squares + prior_var) / (1 + n) / (1 + n)  # pooled-prior variance estimate, over n + 1
    out = mean[:, None] + np.sqrt(var)[:, None] * rng.standard_normal((len(data), draws))
    return out if metric == "feedback_score" else -out


def _glr_agrees(post: FloatArray, leader: int, total: int, delta: float) -> bool:
    """Chernoff stopping: the leader beats every other arm by more than the threshold allows for noise."""
    m, v = post.mean(axis=1), post.var(axis=1)
    others = np.arange(post.shape[0]) != leader
    z = (m[leader] - m[others]) ** 2 / (2 * (v[leader] + v[others]) + 1e-300)
    return bool(np.all(m[leader] > m[others]) and np.all(z > math.log((1 + math.log(max(total, 2))) / delta)))


def allocate(doc: ExperimentDoc, data: Mapping[str, VariantData], runtime: ExperimentRuntime, *, seed: int = 0,
             draws: int = 10_000) -> AdaptiveDecision:
    """The weights for the next interval and, once the evidence is in, the winner. Variants stopped (or
    given weight 0 by the document) get 0 and are no candidates; variants missing from ``data`` have none."""
    names = [v.name for v in doc.variants]
    if runtime.winner is not None:
        return AdaptiveDecision({n: float(n == runtime.winner) for n in names}, {}, runtime.winner,
                                "a winner was declared; it stays until the experiment restarts")
    active = [v.name for v in doc.variants if v.name not in runtime.stopped_variants and v.weight > 0]
    if doc.adaptive is None or len(active) < 2:
        total = sum(v.weight for v in doc.variants if v.name in active)
        weights = {v.name: v.weight / total if v.name in active else 0.0 for v in doc.variants}
        return AdaptiveDecision(weights, {}, None, "not adaptive" if doc.adaptive is None
                                else "fewer than two active variants: nothing to compare")
    rng = np.random.default_rng(seed)
    rows = [data.get(n, VariantData()) for n in active]
    post = posterior_draws(doc.metric, rows, rng, draws)
    if post is None:
        best = np.full(len(active), 1 / len(active))
    else:
        # Break exact ties (discrete latencies) at random rather than toward the first variant.
        scale = float(np.ptp(post)) or 1.0
        ranks = np.argsort(post + rng.uniform(0, 1e-9 * scale, post.shape), axis=0)
        best = np.bincount(ranks[-1], minlength=len(active)) / draws
    share = best
    if doc.adaptive.algorithm == "track_and_stop" and post is not None:
        # Top-two sampling: half to each draw's leader, half to its runner-up, to identify the best arm
        # fast (Thompson alone starves the arms the decision hinges on once a leader emerges).
        share = (best + np.bincount(ranks[-2], minlength=len(active)) / draws) / 2
    floor = doc.adaptive.min_share if doc.adaptive.min_share * len(active) <= 1 else 1 / len(active)
    shares = floor + (1 - floor * len(active)) * share
    prob_best = {n: float(p) for n, p in zip(active, best, strict=True)}
    weights = {n: 0.0 for n in names} | {n: float(w) for n, w in zip(active, shares, strict=True)}
    counts = [observations(d, doc.metric) for d in rows]
    leader = int(np.argmax(best))
    if min(counts) < doc.adaptive.min_requests:
        reason = f"collecting: {min(counts)} of {doc.adaptive.min_requests} observations in the smallest arm"
    elif best[leader] < doc.confidence:
        reason = f"no variant is best with probability {doc.confidence} yet (leader {active[leader]}: " \
                 f"{best[leader]:.3f})"
    elif post is None or not _glr_agrees(post, leader, sum(counts), 1 - doc.confidence):
        reason = f"{active[leader]} leads with P(best) {best[leader]:.3f}, short of the stopping threshold"
    else:
        return AdaptiveDecision({n: float(n == active[leader]) for n in names}, prob_best, active[leader],
                                f"{active[leader]} is best with probability {best[leader]:.3f}")
    return AdaptiveDecision(weights, prob_best, None, reason)

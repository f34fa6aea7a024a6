"""Wire types of ``GET /llm-ops/v1/prompts/experiments/{id}/results`` (camelCase JSON).

Every float is finite or ``null``: a metric without data, a test without enough observations (its
``reason`` says why) and a ratio to zero are ``null``, never NaN or Infinity (not JSON).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

__all__ = [
    "AdaptiveView",
    "ComparisonResult",
    "ExperimentResults",
    "GuardrailStatus",
    "RuntimeView",
    "SampleSizeResult",
    "SamplingInfo",
    "VariantResult",
    "VariantSampling",
]


class _Out(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    pass


class VariantResult(_Out, frozen=True):
    """One variant over the window. Fallbacks (requests another target served) are counted in
    ``fallbacks`` only; every other number leaves them out. Counts, sums and the means of cost and
    feedback score are exact; quantiles come from the sample when ``sampling.sampled``."""

    variant: str
    control: bool
    stopped: bool
    requests: int
    errors: int
    error_rate: float | None
    fallbacks: int
    latency_p50_s: float | None  # successful requests
    latency_p95_s: float | None
    ttft_p50_s: float | None  # successful streamed requests
    prompt_tokens: int
    completion_tokens: int
    prompt_tokens_per_request: float | None
    completion_tokens_per_request: float | None
    cost_usd: str  # exact sum over priced requests, in dollars
    cost_per_request_usd: float | None  # mean over priced requests
    priced: int
    unpriced: int
    feedback_score_mean: float | None
    feedback_scores: int
    feedback_rate: float | None  # positive boolean labels / boolean labels
    feedback_labels: int
    feedback_positive: int
    feedback_excluded_fallback: int  # feedback on a request (or episode) that fell back


class ComparisonResult(_Out, frozen=True):
    """``variant`` minus control on ``metric``: ``ciLow``/``ciHigh`` at the experiment's confidence,
    ``pValueAdjusted`` Holm-adjusted over the variants when there are several; ``significant`` uses it."""

    variant: str
    metric: str
    test: str
    control_value: float | None
    variant_value: float | None
    diff: float | None
    rel_diff: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    p_value_adjusted: float | None
    significant: bool
    reason: str | None


class SampleSizeResult(_Out, frozen=True):
    """Requests per variant needed to detect ``minEffect`` on ``metric`` (two-sided, ``alpha``, ``power``);
    ``additionalRequests``: what each variant still lacks."""

    metric: str
    min_effect: float | None
    min_effect_source: Literal["configured", "default"]
    alpha: float
    power: float
    observations_needed: int | None
    requests_needed: int | None
    additional_requests: dict[str, int]
    reason: str | None


class GuardrailStatus(_Out, frozen=True):
    """One guardrail on one variant. ``threshold`` is the effective limit (the lower of ``max`` and
    ``maxRatioToControl`` x control's value); ``evaluated`` is false for control and below
    ``minRequests``; ``stopped``: the variant is stopped (by the supervisor or an operator)."""

    variant: str
    metric: str
    max: float | None
    max_ratio_to_control: float | None
    threshold: float | None
    value: float | None
    min_requests: int
    requests: int
    evaluated: bool
    breached: bool
    stopped: bool


class AdaptiveView(_Out, frozen=True):
    """Adaptive allocation as of this data: P(best) per active variant, the weights the allocator would
    set now (the supervisor writes them when they moved materially) and why there is no winner yet."""

    algorithm: str
    min_share: float
    prob_best: dict[str, float]
    suggested_weights: dict[str, float]
    suggested_winner: str | None
    reason: str


class RuntimeView(_Out, frozen=True):
    """What the gateway obeys now: ``weights`` is the allocator's override (empty: the document's),
    ``effectiveWeights`` the split of experiment traffic it produces (stopped variants 0, a winner or a
    rollback 1)."""

    state: str
    started_at: datetime | None
    revision: int
    weights: dict[str, float]
    effective_weights: dict[str, float]
    stopped_variants: list[str]
    winner: str | None
    rolled_back: bool
    adaptive: AdaptiveView | None


class VariantSampling(_Out, frozen=True):
    records: int
    records_kept: int
    scores: int
    scores_kept: int


class SamplingInfo(_Out, frozen=True):
    """Per-request arrays (latencies, costs, tokens, scores) hold at most ``cap`` rows per variant: above
    it a uniform random sample (the rows with the smallest random record ids); counts and sums stay exact."""

    cap: int
    sampled: bool
    variants: dict[str, VariantSampling]


class ExperimentResults(_Out, frozen=True):
    experiment_id: str
    route: str
    metric: str
    control: str
    confidence: float
    correction: str
    since: datetime | None  # the window: since (the run's start unless asked) until ``generatedAt``
    generated_at: datetime
    variants: list[VariantResult]
    comparisons: list[ComparisonResult]
    sample_size: SampleSizeResult
    guardrails: list[GuardrailStatus]
    winner_candidate: str | None
    runtime: RuntimeView
    sampling: SamplingInfo
    other_variants: dict[str, int]  # requests recorded for variants the document no longer has

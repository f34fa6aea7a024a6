"""An experiment's results: its observations (``results_data``) through ``policies.prompts.stats`` and,
when adaptive, ``policies.prompts.adaptive``, shaped for the wire (``results_wire``).

The statistics run in a worker thread (``asyncio.to_thread``): the control plane shares its event loop
with the gateway's data plane, which must not wait for a bootstrap. Their seed is derived from the
experiment and its request counts, so every replica computes the same numbers from the same data.
"""

from __future__ import annotations

import asyncio
import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Protocol

from adapters.adminapi.services import ServiceKey
from adapters.store import Store, utcnow
from control.prompts.results_data import DEFAULT_SAMPLE_CAP, Loaded, load_variant_data
from control.prompts.results_wire import (
    AdaptiveView,
    ComparisonResult,
    ExperimentResults,
    GuardrailStatus,
    RuntimeView,
    SampleSizeResult,
    SamplingInfo,
    VariantResult,
    VariantSampling,
)
from policies.prompts.adaptive import AdaptiveDecision, allocate
from policies.prompts.documents import ExperimentDoc, ExperimentRuntime
from policies.prompts.stats import Analysis, VariantData, analyse, metric_value

__all__ = ["DEFAULT_DRAWS", "RESULTS", "Evaluation", "ExperimentReader", "ResultsService", "effective_weights",
           "evaluate", "run_start", "stable_seed"]

DEFAULT_DRAWS = 10_000


class _HasExperiment(Protocol):
    @property
    def document(self) -> ExperimentDoc: ...

    @property
    def runtime(self) -> ExperimentRuntime: ...


class ExperimentReader(Protocol):
    """What the results need of the experiments service: one experiment (``NotFound`` when unknown)."""

    async def get(self, experiment_id: str) -> _HasExperiment: ...


@dataclass(frozen=True, slots=True)
class Evaluation:
    runtime: ExperimentRuntime  # what the analysis (and the allocation) saw
    loaded: Loaded
    analysis: Analysis
    decision: AdaptiveDecision | None  # only for adaptive experiments (and when asked)


def stable_seed(experiment_id: str, data: Mapping[str, VariantData]) -> int:
    """The same seed on every replica for the same data (and a new one as data arrives)."""
    counts = ",".join(f"{name}={d.requests}/{d.scores.size}/{d.labels_total}" for name, d in sorted(data.items()))
    return zlib.crc32(f"{experiment_id}|{counts}".encode())


def run_start(runtime: ExperimentRuntime) -> datetime | None:
    """Where an experiment's window starts by default: its (re)start."""
    return None if runtime.started_at is None else datetime.fromtimestamp(runtime.started_at, UTC)


def _compute(doc: ExperimentDoc, runtime: ExperimentRuntime, data: Mapping[str, VariantData], seed: int,
             draws: int, adapt: bool) -> tuple[Analysis, AdaptiveDecision | None]:
    analysis = analyse(doc, data, seed=seed)
    decision = allocate(doc, data, runtime, seed=seed, draws=draws) if adapt and doc.adaptive is not None else None
    return analysis, decision


async def evaluate(store: Store, doc: ExperimentDoc, runtime: ExperimentRuntime, *, since: datetime | None,
                   cap: int = DEFAULT_SAMPLE_CAP, draws: int = DEFAULT_DRAWS, adapt: bool = True,
                   timeout_s: float | None = None) -> Evaluation:
    """Load the window's observations, then analyse (and allocate, when adaptive and ``adapt``) off the
    event loop. ``timeout_s``: the deadline of each read (default: the store's)."""
    loaded = await load_variant_data(store, doc.id, [v.name for v in doc.variants], since=since, cap=cap,
                                     timeout_s=timeout_s)
    seed = stable_seed(doc.id, loaded.data)
    analysis, decision = await asyncio.to_thread(_compute, doc, runtime, loaded.data, seed, draws, adapt)
    return Evaluation(runtime=runtime, loaded=loaded, analysis=analysis, decision=decision)


def effective_weights(doc: ExperimentDoc, runtime: ExperimentRuntime) -> dict[str, float]:
    """The split of experiment traffic the gateway makes (``policies.prompts.assignment``, in its order): a
    rollback sends it all to control, then a winner takes it all, a paused or stopped experiment serves
    control; else the allocator's weights (a variant they omit: 0) or the document's, stopped variants 0,
    normalised (all 0: control)."""
    names = [v.name for v in doc.variants]
    control = doc.control_variant
    if runtime.rolled_back or (runtime.winner is None and runtime.state in ("paused", "stopped")):
        return {n: float(n == control) for n in names}
    if runtime.winner is not None:
        winner = runtime.winner if runtime.winner in names else control
        return {n: float(n == winner) for n in names}
    raw = {v.name: 0.0 if v.name in runtime.stopped_variants
           else runtime.weights.get(v.name, 0.0) if runtime.weights else v.weight for v in doc.variants}
    live = {n: w if math.isfinite(w) and w > 0 else 0.0 for n, w in raw.items()}
    total = sum(live.values())
    return {n: w / total for n, w in live.items()} if total > 0 else {n: float(n == control) for n in names}


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _div(a: float, b: float) -> float | None:
    return _finite(a / b) if b else None


def _variants(doc: ExperimentDoc, runtime: ExperimentRuntime, ev: Evaluation) -> list[VariantResult]:
    out = []
    for s in ev.analysis.variants:
        d, x = ev.loaded.data[s.variant], ev.loaded.exact[s.variant]
        out.append(VariantResult(
            variant=s.variant, control=s.variant == doc.control_variant,
            stopped=s.variant in runtime.stopped_variants, requests=s.requests, errors=s.errors,
            error_rate=_finite(s.error_rate), fallbacks=s.fallbacks, latency_p50_s=_finite(s.latency_p50_s),
            latency_p95_s=_finite(s.latency_p95_s), ttft_p50_s=_finite(s.ttft_p50_s),
            prompt_tokens=d.prompt_tokens, completion_tokens=d.completion_tokens,
            prompt_tokens_per_request=_div(d.prompt_tokens, s.requests),
            completion_tokens_per_request=_div(d.completion_tokens, s.requests),
            cost_usd=format(Decimal(x.cost_nano_usd).scaleb(-9).normalize(), "f"),  # "0", "0.0015": never "0E-9"
            cost_per_request_usd=_div(x.cost_nano_usd * 1e-9, x.priced),
            priced=x.priced, unpriced=d.unpriced, feedback_score_mean=_div(x.score_sum, x.scores),
            feedback_scores=x.scores, feedback_rate=_finite(s.feedback_rate), feedback_labels=d.labels_total,
            feedback_positive=d.labels_positive, feedback_excluded_fallback=x.feedback_excluded))
    return out


def _guardrails(doc: ExperimentDoc, runtime: ExperimentRuntime, analysis: Analysis) -> list[GuardrailStatus]:
    stats = {s.variant: s for s in analysis.variants}
    control = stats[doc.control_variant]
    breached = {(b.variant, b.metric) for b in analysis.breaches}
    out = []
    for v in doc.variants:
        s = stats[v.name]
        for g in doc.guardrails:
            base = metric_value(control, g.metric)
            limits = [g.max] if g.max is not None else []
            if g.max_ratio_to_control is not None and base is not None and control.requests >= g.min_requests:
                limits.append(g.max_ratio_to_control * base)
            out.append(GuardrailStatus(
                variant=v.name, metric=g.metric, max=g.max, max_ratio_to_control=g.max_ratio_to_control,
                threshold=_finite(min(limits)) if limits else None, value=_finite(metric_value(s, g.metric)),
                min_requests=g.min_requests, requests=s.requests,
                evaluated=v.name != doc.control_variant and s.requests >= g.min_requests,
                breached=(v.name, g.metric) in breached, stopped=v.name in runtime.stopped_variants))
    return out


def _runtime(doc: ExperimentDoc, runtime: ExperimentRuntime, decision: AdaptiveDecision | None) -> RuntimeView:
    adaptive = None
    if doc.adaptive is not None and decision is not None:
        adaptive = AdaptiveView(
            algorithm=doc.adaptive.algorithm, min_share=doc.adaptive.min_share,
            prob_best={k: v for k, v in decision.prob_best.items() if math.isfinite(v)},
            suggested_weights={k: v for k, v in decision.weights.items() if math.isfinite(v)},
            suggested_winner=decision.winner, reason=decision.reason)
    return RuntimeView(state=runtime.state, started_at=run_start(runtime), revision=runtime.revision,
                       weights=dict(runtime.weights), effective_weights=effective_weights(doc, runtime),
                       stopped_variants=list(runtime.stopped_variants), winner=runtime.winner,
                       rolled_back=runtime.rolled_back, adaptive=adaptive)


def build_results(doc: ExperimentDoc, runtime: ExperimentRuntime, ev: Evaluation, *, since: datetime | None,
                  now: datetime) -> ExperimentResults:
    a = ev.analysis
    ss = a.sample_size
    comparisons = [ComparisonResult(
        variant=c.variant, metric=c.metric, test=c.test, control_value=_finite(c.control_value),
        variant_value=_finite(c.variant_value), diff=_finite(c.diff), rel_diff=_finite(c.rel_diff),
        ci_low=_finite(c.ci_low), ci_high=_finite(c.ci_high), p_value=_finite(c.p_value),
        p_value_adjusted=_finite(c.p_value_adjusted), significant=c.significant, reason=c.reason)
        for c in a.comparisons]
    sampling = SamplingInfo(cap=ev.loaded.cap, sampled=ev.loaded.sampled, variants={
        name: VariantSampling(records=s.records, records_kept=s.records_kept, scores=s.scores,
                              scores_kept=s.scores_kept) for name, s in ev.loaded.sampling.items()})
    return ExperimentResults(
        experiment_id=doc.id, route=doc.route, metric=a.metric, control=a.control, confidence=a.confidence,
        correction=a.correction, since=since, generated_at=now, variants=_variants(doc, runtime, ev),
        comparisons=comparisons,
        sample_size=SampleSizeResult(
            metric=ss.metric, min_effect=_finite(ss.min_effect), min_effect_source=ss.min_effect_source,
            alpha=ss.alpha, power=ss.power, observations_needed=ss.observations_needed,
            requests_needed=ss.requests_needed, additional_requests=dict(ss.additional_requests), reason=ss.reason),
        guardrails=_guardrails(doc, runtime, a), winner_candidate=a.winner_candidate,
        runtime=_runtime(doc, runtime, ev.decision), sampling=sampling, other_variants=dict(ev.loaded.other_variants))


class ResultsService:
    """Answers the results endpoint; reads the experiment through the experiments service."""

    def __init__(self, store: Store, experiments: ExperimentReader, *, cap: int = DEFAULT_SAMPLE_CAP,
                 draws: int = DEFAULT_DRAWS, timeout_s: float | None = None) -> None:
        self._store, self._experiments, self._cap, self._draws = store, experiments, cap, draws
        self._timeout_s = timeout_s

    async def results(self, experiment_id: str, *, since: datetime | None = None) -> ExperimentResults:
        exp = await self._experiments.get(experiment_id)
        doc, runtime = exp.document, exp.runtime
        start = since if since is not None else run_start(runtime)
        ev = await evaluate(self._store, doc, runtime, since=start, cap=self._cap, draws=self._draws,
                            timeout_s=self._timeout_s)
        return build_results(doc, runtime, ev, since=start, now=utcnow())


RESULTS: ServiceKey[ResultsService] = ServiceKey("prompts.results")

"""Per-item scores and per-target aggregates of a run's generated outputs (``policies.evaluation``).

Scored once, when generation is over, off the event loop (``asyncio.to_thread``: sacrebleu and rouge-score
are pure Python and the control plane shares its loop with the gateway). A failed item has no output: it is
missing from every quality metric (not a 0), and counted in ``n`` of none. Every aggregate carries a
bootstrap 95% CI: item means through ``bootstrap.mean_ci``; BLEU and chrF are corpus scores, resampled
whole through ``bootstrap.corpus_ci``. ``perplexity`` comes from the items (the worker asked the gateway for
logprobs); when no item has one it is ``available: false``, with the reason, never 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from control.evaluation.protocol import Aggregate
from policies.evaluation import bootstrap, metrics

__all__ = ["ItemView", "score_target"]

_ROUGE = ("rouge1", "rouge2", "rougeL")
_CORPUS = {"bleu": metrics.bleu, "chrf": metrics.chrf}
_NUMERIC = ("latency_s", "prompt_tokens", "completion_tokens", "cost_usd")


@dataclass(frozen=True)
class ItemView:
    idx: int
    output: str | None  # None: the item failed
    reference: str | None
    latency_s: float | None
    prompt_tokens: int | None
    completion_tokens: int | None
    cost_usd: Decimal | None
    perplexity: float | None


def _mean(values: Sequence[float | None], note: str = "", unavailable: str = "no item has a value") -> Aggregate:
    present = [float(v) for v in values if v is not None]
    if not present:
        return Aggregate(value=None, ci_low=None, ci_high=None, n=0, available=False, note=unavailable)
    mean, low, high = bootstrap.mean_ci(present)
    return Aggregate(value=mean, ci_low=low, ci_high=high, n=len(present), note=note)


def _corpus(name: str, hyps: list[str | None], refs: list[str | None]) -> tuple[Aggregate, list[float | None]]:
    metric = _CORPUS[name]
    result = metric(hyps, refs)
    if not result.available or result.value is None:
        return Aggregate(value=None, ci_low=None, ci_high=None, n=0, available=False, note=result.note), result.items
    value, low, high = bootstrap.corpus_ci(hyps, refs, metric)
    n = sum(1 for h, r in zip(hyps, refs, strict=True) if h is not None and r is not None)
    return Aggregate(value=value, ci_low=low, ci_high=high, n=n, note=result.note), result.items


def score_target(wanted: Sequence[str], views: Sequence[ItemView], *, perplexity_note: str = ""
                 ) -> tuple[dict[int, dict[str, float | None]], dict[str, Aggregate]]:
    """``({idx: {metric: value}}, {metric: Aggregate})`` for one target's items (``wanted``: the run's metrics;
    ones computed elsewhere, like the judge's, are left out)."""
    scores: dict[int, dict[str, float | None]] = {v.idx: {} for v in views}
    out: dict[str, Aggregate] = {}
    hyps = [v.output for v in views]
    refs = [v.reference if v.output is not None else None for v in views]
    for name in ("bleu", "chrf"):
        if name in wanted:
            out[name], per_item = _corpus(name, hyps, refs)
            for v, value in zip(views, per_item, strict=True):
                scores[v.idx][name] = value
    pairs = [(v, v.output, v.reference) for v in views]
    if any(m in wanted for m in _ROUGE):
        rouge = {v.idx: metrics.rouge(h, r) if h is not None and r is not None else None for v, h, r in pairs}
        for name in _ROUGE:
            if name in wanted:
                for idx, found in rouge.items():
                    scores[idx][name] = None if found is None else found[name]
                out[name] = _mean([scores[v.idx][name] for v in views])
    for name, fn in (("exact_match", metrics.exact_match), ("token_f1", metrics.token_f1)):
        if name in wanted:
            for v, h, r in pairs:
                scores[v.idx][name] = fn(h, r) if h is not None and r is not None else None
            out[name] = _mean([scores[v.idx][name] for v in views])
    if "perplexity" in wanted:
        for v in views:
            scores[v.idx]["perplexity"] = v.perplexity
        out["perplexity"] = _mean([v.perplexity for v in views],
                                  unavailable=perplexity_note or "the upstream returned no logprobs")
    for name in _NUMERIC:
        if name in wanted:
            values: list[Any] = [getattr(v, name) for v in views if v.output is not None]
            out[name] = _mean([None if x is None else float(x) for x in values],
                              unavailable="no usage record has a cost (unpriced model, or the usage writer is off)"
                              if name == "cost_usd" else "no item succeeded")
    return scores, out

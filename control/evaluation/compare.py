"""Comparing finished runs: metric by metric, paired on shared dataset rows, with a promotion recommendation.

An *arm* is one target of one run: ``run_x`` means its first target, ``run_x:1`` its second (a pairwise
run's). The first arm is the baseline, the second the candidate the recommendation is about; further arms
are shown beside them, each with its own paired difference to the baseline (``differences``). Arms must
have evaluated the same dataset version (else 409): the item index is the dataset row, so items of two arms
with the same index saw the same input.

For each metric: every arm's aggregate as its run stored it, and the paired difference (candidate minus
baseline) over the rows both arms scored, with a paired-bootstrap 95% CI (``policies.evaluation.bootstrap``).
Corpus metrics (BLEU, chrF) are paired on their sentence-level item scores.

Direction: latency, cost, perplexity and token counts are better lower, everything else higher. Token counts
are shown but never decide (a longer answer is not worse by itself; its cost is ``cost_usd``'s business).
The recommendation promotes only when no deciding metric is significantly worse (its CI entirely on the bad
side) and at least one quality metric could be compared and is not inferior; the reasons name each metric
that decided, with its numbers.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.adminapi import Conflict, FieldError, NotFound, SemanticError, ValidationFailed
from adapters.store import Store
from control.evaluation.protocol import Aggregate, Comparison, MetricComparison, Recommendation
from control.evaluation.tables import items, runs
from policies.evaluation.bootstrap import paired_diff_ci

__all__ = [
    "INFORMATIONAL",
    "LOWER_IS_BETTER",
    "MAX_ARMS",
    "QUALITY",
    "RUN_IDS_PATTERN",
    "Arm",
    "compare_runs",
    "describe",
    "higher_is_better",
    "load_arm",
    "paired_difference",
    "parse_arms",
    "recommend",
]

LOWER_IS_BETTER = frozenset({"latency_s", "cost_usd", "perplexity", "prompt_tokens", "completion_tokens"})
INFORMATIONAL = frozenset({"prompt_tokens", "completion_tokens"})  # shown, never deciding
QUALITY = frozenset({"bleu", "chrf", "rouge1", "rouge2", "rougeL", "exact_match", "token_f1", "perplexity",
                     "judge_score", "judge_win_rate", "human_score"})
MAX_ARMS = 5


def higher_is_better(metric: str) -> bool:
    return metric not in LOWER_IS_BETTER


@dataclass(frozen=True)
class Arm:
    """One run's target: its aggregates and per-item scores (``metric -> dataset row -> value``)."""

    key: str
    run_id: str
    target: int
    status: str
    dataset_id: str
    dataset_version: int
    aggregates: dict[str, Aggregate]
    scores: dict[str, dict[int, float]]


_ARM = r"[A-Za-z0-9_-]{1,40}(:[01])?"
RUN_IDS_PATTERN = rf"^{_ARM}(,{_ARM}){{1,{MAX_ARMS - 1}}}$"  # the query's documented shape (a 400 otherwise)


def parse_arms(spec: str) -> list[tuple[str, str, int]]:
    """``"a,b:1"`` -> ``[(key, run id, target)]``: 400 (naming ``runIds``) when not two to ``MAX_ARMS`` ids of
    ``RUN_IDS_PATTERN``'s shape; 422 when one is named twice."""
    if not re.fullmatch(RUN_IDS_PATTERN, spec):
        raise ValidationFailed([FieldError(field="runIds", message=(
            f"two to {MAX_ARMS} run ids, comma-separated (a run's second target as '<id>:1')"))])
    parts = spec.split(",")
    if len(set(parts)) != len(parts):
        raise SemanticError([FieldError(field="runIds", message="a run is named twice")])
    arms = []
    for part in parts:
        run_id, _, target = part.partition(":")
        arms.append((part, run_id, int(target or 0)))
    return arms


def _aggregates(summary: Any, target: int) -> dict[str, Aggregate]:
    per_target = (summary or {}).get(str(target)) or {}
    return {metric: msgspec.convert(agg, Aggregate) for metric, agg in per_target.items()}


async def load_arm(conn: AsyncConnection, key: str, run_id: str, target: int) -> Arm:
    """Read one arm; ``NotFound`` for an unknown run or a target the run does not have."""
    row = (await conn.execute(select(
        runs.c.id, runs.c.status, runs.c.targets, runs.c.dataset_id, runs.c.dataset_version, runs.c.metrics_summary,
    ).where(runs.c.id == run_id))).one_or_none()
    if row is None:
        raise NotFound(f"No evaluation run {run_id!r}")
    if target >= len(row.targets or []):
        raise NotFound(f"Run {run_id!r} has no target {target}")
    scores: dict[str, dict[int, float]] = {}
    result = await conn.stream(select(items.c.idx, items.c.scores)
                               .where(items.c.run_id == run_id, items.c.target == target))
    async for idx, item_scores in result:
        for metric, value in (item_scores or {}).items():
            if value is not None:
                scores.setdefault(metric, {})[int(idx)] = float(value)
    return Arm(key=key, run_id=run_id, target=target, status=row.status, dataset_id=row.dataset_id,
               dataset_version=int(row.dataset_version), aggregates=_aggregates(row.metrics_summary, target),
               scores=scores)


def paired_difference(base: Mapping[int, float], candidate: Mapping[int, float]) -> Aggregate | None:
    """Candidate minus baseline on the rows both scored, paired-bootstrap 95% CI; ``None`` without shared rows."""
    shared = sorted(base.keys() & candidate.keys())
    if not shared:
        return None
    mean, low, high = paired_diff_ci([base[i] for i in shared], [candidate[i] for i in shared])
    return Aggregate(value=mean, ci_low=low, ci_high=high, n=len(shared), note="paired bootstrap, 95%")


def _same_dataset(arms: Sequence[Arm]) -> None:
    versions = {(a.dataset_id, a.dataset_version) for a in arms}
    if len(versions) > 1:
        raise Conflict("Runs compare only on the same dataset version (items are paired by dataset row); these "
                       "evaluated " + ", ".join(f"{a.key}: {a.dataset_id} v{a.dataset_version}" for a in arms),
                       {"datasets": {a.key: {"datasetId": a.dataset_id, "version": a.dataset_version} for a in arms}})
    unfinished = [a for a in arms if a.status != "succeeded"]
    if unfinished:
        raise Conflict("Only succeeded runs compare; " + ", ".join(f"{a.run_id} is {a.status}" for a in unfinished),
                       {"status": {a.key: a.status for a in unfinished}})


def _metrics(arms: Iterable[Arm]) -> list[str]:
    seen: dict[str, None] = {}
    for arm in arms:
        seen.update(dict.fromkeys(arm.aggregates))
        seen.update(dict.fromkeys(arm.scores))
    return list(seen)


def _compare_metric(metric: str, arms: Sequence[Arm]) -> tuple[MetricComparison, dict[str, Aggregate | None]]:
    base = arms[0]
    diffs = {a.key: paired_difference(base.scores.get(metric, {}), a.scores.get(metric, {})) for a in arms[1:]}
    first = diffs[arms[1].key]
    return MetricComparison(
        metric=metric, values={a.key: a.aggregates[metric] for a in arms if metric in a.aggregates},
        difference=first, shared_items=first.n if first is not None else 0,
        higher_is_better=higher_is_better(metric), differences=diffs if len(arms) > 2 else {}), diffs


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def describe(metric: str, diff: Aggregate) -> str:
    """One line with the numbers: the difference, its CI and how many shared rows."""
    better = "higher" if higher_is_better(metric) else "lower"
    return (f"{metric}: difference {_fmt(diff.value)} (95% CI {_fmt(diff.ci_low)} to {_fmt(diff.ci_high)}, "
            f"{diff.n} shared items; {better} is better)")


def _adjusted(metric: str, diff: Aggregate) -> tuple[float | None, float | None]:
    """The CI with the sign flipped where lower is better, so positive always means the candidate is better."""
    if higher_is_better(metric):
        return diff.ci_low, diff.ci_high
    return (None if diff.ci_high is None else -diff.ci_high), (None if diff.ci_low is None else -diff.ci_low)


def recommend(diffs: Mapping[str, Aggregate | None]) -> Recommendation:
    """Promote the candidate when no deciding metric is significantly worse and a quality metric is not inferior."""
    worse: list[str] = []
    better: list[str] = []
    quality_ok: list[str] = []
    for metric, diff in diffs.items():
        if diff is None or metric in INFORMATIONAL:
            continue
        low, high = _adjusted(metric, diff)
        if high is not None and high < 0:
            worse.append(f"worse on {describe(metric, diff)}")
            continue
        if low is not None and low > 0:
            better.append(f"better on {describe(metric, diff)}")
        if metric in QUALITY and low is not None:
            quality_ok.append(metric)
    reasons = worse + better
    if not quality_ok:
        reasons.append("no quality metric could be compared on shared items with a confidence interval")
    elif not worse:
        reasons.append("not inferior on " + ", ".join(
            describe(m, d) for m in quality_ok if (d := diffs[m]) is not None))
    return Recommendation(promote=not worse and bool(quality_ok), reasons=reasons)


async def compare_runs(store: Store, spec: str) -> Comparison:
    """``GET runs/compare?runIds=…``: 400 bad list, 404 unknown run, 409 different datasets or unfinished runs."""
    wanted = parse_arms(spec)
    async with store.read() as conn:
        arms = [await load_arm(conn, key, run_id, target) for key, run_id, target in wanted]
    _same_dataset(arms)
    # Bootstrapping thousands of rows is CPU work: off the event loop.
    compared = await asyncio.to_thread(lambda: [_compare_metric(m, arms) for m in _metrics(arms)])
    first_diffs = {mc.metric: mc.difference for mc, _ in compared}
    return Comparison(run_ids=[a.key for a in arms], metrics=[mc for mc, _ in compared],
                      recommendation=recommend(first_diffs))

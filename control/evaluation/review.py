"""Human review: who rates which output, their ratings, and what the ratings say (agreement included).

* **Assignment** (``assign``, called by the worker once a run with ``review`` settings has its outputs): every
  output without an error, in (row, target) order, goes to ``ratersPerItem`` distinct reviewers, round-robin
  over the list, so each reviewer gets an equal share (to within one). Deterministic and idempotent: a resumed
  run re-assigns nothing.
* **Identity**: a reviewer is the caller's key id, or the key's name when the run lists that name. An operator
  (or admin) may name another reviewer with ``?reviewer=``, to read their queue or enter ratings for them;
  anyone else naming someone other than themselves gets 403.
* **Ratings**: a whole number in the rubric's scale (else 422), on an output assigned to the reviewer (else
  403; operators may rate any output); a second rating by the same reviewer of the same output replaces the
  first. Each rating refreshes the run's ``human_summary``, the item's ``human_score`` (mean of its ratings) and
  the target's ``human_score`` aggregate, in the rating's own transaction (the run row is locked first, so two
  ratings never overwrite each other's summary).
* **Summary**: the mean over rated outputs with a bootstrap CI; inter-rater agreement
  (``policies.evaluation.agreement``: quadratic-weighted Cohen's kappa for two raters who rated the same
  outputs, Krippendorff's ordinal alpha otherwise); with pointwise judge scores on the same scale, the judge's
  agreement with the humans' mean rounded to the scale (the same measures, judge vs "humans"); with a
  pairwise judge, its verdict per row against the humans' preference (the target rated higher on average),
  on the ordinal scale -1 (target 1), 0 (tie, or the judge's orders disagreed), 1 (target 0).
"""

from __future__ import annotations

import asyncio
import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
from sqlalchemy import and_, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.adminapi import (
    Actor,
    Conflict,
    FieldError,
    Forbidden,
    ModuleContext,
    NotFound,
    Page,
    PageParams,
    Role,
    SemanticError,
)
from adapters.store import utcnow
from control.evaluation.protocol import Aggregate, ReviewConfig, ReviewSubmit, ReviewSummary, ReviewTask
from control.evaluation.tables import assignments, events, items, judgments, reviews, runs
from control.evaluation.verdicts import PREFERENCE, pair_outcomes
from policies.evaluation.agreement import agreement
from policies.evaluation.bootstrap import mean_ci

__all__ = ["JudgeVerdicts", "ReviewService", "assign", "plan_assignments", "refresh_summary", "summarize"]

_BATCH = 500
ItemKey = tuple[int, int]  # (dataset row, target)


def plan_assignments(outputs: list[ItemKey], reviewers: list[str], raters_per_item: int) -> list[tuple[ItemKey, str]]:
    """Round-robin: output ``k`` goes to reviewers ``k*r, k*r+1, … (mod len)``, ``r`` of them, all distinct."""
    per_item = min(raters_per_item, len(reviewers))
    return [(key, reviewers[(k * per_item + j) % len(reviewers)])
            for k, key in enumerate(outputs) for j in range(per_item)]


async def _review_cfg(conn: AsyncConnection, run_id: str, *, lock: bool = False) -> tuple[Any, ReviewConfig]:
    query = select(runs.c.id, runs.c.review, runs.c.judge, runs.c.metrics_summary).where(runs.c.id == run_id)
    row = (await conn.execute(query.with_for_update() if lock else query)).one_or_none()
    if row is None:
        raise NotFound(f"No evaluation run {run_id!r}")
    if row.review is None:
        raise Conflict(f"Run {run_id!r} has no human review (create it with review settings)")
    return row, msgspec.convert(row.review, ReviewConfig)


async def assign(ctx: ModuleContext, run_id: str) -> int:
    """Assign the run's outputs to its reviewers (see the module docstring); returns how many were new."""
    async with ctx.store.begin() as conn:
        _, cfg = await _review_cfg(conn, run_id, lock=True)
        outputs = [(int(i), int(t)) for i, t in await conn.execute(
            select(items.c.idx, items.c.target).where(items.c.run_id == run_id, items.c.error.is_(None),
                                                     items.c.output.is_not(None))
            .order_by(items.c.idx, items.c.target))]
        have = {(int(i), int(t), r) for i, t, r in await conn.execute(
            select(assignments.c.idx, assignments.c.target, assignments.c.reviewer)
            .where(assignments.c.run_id == run_id))}
        now = utcnow()
        new = [{"run_id": run_id, "idx": i, "target": t, "reviewer": r, "assigned_at": now}
               for (i, t), r in plan_assignments(outputs, list(cfg.reviewers), cfg.raters_per_item)
               if (i, t, r) not in have]
        for start in range(0, len(new), _BATCH):
            await conn.execute(insert(assignments), new[start:start + _BATCH])
        if new:
            await conn.execute(insert(events).values(
                run_id=run_id, at=now, event="review_assigned", actor="system",
                detail={"assignments": len(new), "outputs": len(outputs), "reviewers": len(cfg.reviewers),
                        "ratersPerItem": min(cfg.raters_per_item, len(cfg.reviewers))}))
    return len(new)


def _aggregate(values: list[float]) -> Aggregate:
    if not values:
        return Aggregate(value=None, ci_low=None, ci_high=None, n=0, available=False, note="no ratings yet")
    mean, low, high = mean_ci(values)
    return Aggregate(value=mean, ci_low=low, ci_high=high, n=len(values))


def _scale_point(x: float) -> float:
    return float(math.floor(x + 0.5))  # half up, as the summary documents


@dataclass(frozen=True)
class JudgeVerdicts:
    """The judge's side, set beside the humans: pointwise scores per output (on a scale that may differ from
    the reviewers'), or pairwise preferences per row (``verdicts.PREFERENCE``)."""

    scores: Mapping[ItemKey, float] = field(default_factory=dict)
    scale_matches: bool = True
    preferences: Mapping[int, float] = field(default_factory=dict)


def _judge_agreement(means: Mapping[ItemKey, float], judge: JudgeVerdicts) -> dict[str, Any] | None:
    if judge.scores:
        if not judge.scale_matches:
            return {"method": None, "value": None, "raters": 2, "n": 0,
                    "note": "the judge's scale differs from the reviewers'"}
        both = sorted(means.keys() & judge.scores.keys())
        found = agreement({"judge": {f"{i}:{t}": judge.scores[(i, t)] for i, t in both},
                           "humans": {f"{i}:{t}": _scale_point(means[(i, t)]) for i, t in both}})
        return {**found, "compared": "the judge's score vs the humans' mean score, rounded half up to the scale"}
    if judge.preferences:
        # The humans' preference on a row: which target's output they rated higher on average.
        humans = {i: float((means[(i, 0)] > means[(i, 1)]) - (means[(i, 0)] < means[(i, 1)]))
                  for i in judge.preferences if (i, 0) in means and (i, 1) in means}
        found = agreement({"judge": {i: judge.preferences[i] for i in humans}, "humans": humans})
        return {**found, "compared": "the judge's pairwise verdict vs the humans' preference (higher mean rating): "
                                     "1 target 0, -1 target 1, 0 a tie (or the judge's two orders disagreed)"}
    return None


def summarize(rows: list[tuple[int, int, str, float]], judge: JudgeVerdicts | None = None
              ) -> tuple[ReviewSummary, dict[ItemKey, float], dict[int, Aggregate]]:
    """Pure: ``(summary, mean per output, human_score aggregate per target)`` from ``(row, target, reviewer,
    score)`` ratings and the judge's verdicts (CPU work: callers run it off the event loop)."""
    per_output: dict[ItemKey, list[float]] = defaultdict(list)
    ratings: dict[str, dict[str, float]] = defaultdict(dict)
    for idx, target, reviewer, score in rows:
        per_output[(idx, target)].append(score)
        ratings[reviewer][f"{idx}:{target}"] = score
    means = {key: sum(v) / len(v) for key, v in per_output.items()}
    by_target: dict[int, list[float]] = defaultdict(list)
    for (_, target), mean in sorted(means.items()):
        by_target[target].append(mean)
    per_target = {t: _aggregate(v) for t, v in by_target.items()}
    # One target (the usual run): its aggregate is the overall one; no second bootstrap of the same values.
    overall = next(iter(per_target.values())) if len(per_target) == 1 else _aggregate(
        [means[k] for k in sorted(means)])
    summary = ReviewSummary(ratings=len(rows), items_rated=len(means), mean_score=overall,
                            agreement=agreement(ratings), judge_agreement=_judge_agreement(means, judge or
                                                                                           JudgeVerdicts()))
    return summary, means, per_target


async def _judge_verdicts(conn: AsyncConnection, run_id: str, judge: dict[str, Any] | None,
                          cfg: ReviewConfig) -> JudgeVerdicts:
    if not judge:
        return JudgeVerdicts()
    if judge.get("mode") == "pairwise":
        rows = (await conn.execute(select(judgments.c.idx, judgments.c.order, judgments.c.raw).where(
            judgments.c.run_id == run_id, judgments.c.kind == "pairwise"))).all()
        outcomes, _ = pair_outcomes(list(rows))
        return JudgeVerdicts(preferences={i: PREFERENCE[o] for i, o in outcomes.items() if o in PREFERENCE})
    scores = {(int(i), int(t)): float(s) for i, t, s in await conn.execute(
        select(judgments.c.idx, judgments.c.target, judgments.c.score).where(
            judgments.c.run_id == run_id, judgments.c.kind == "pointwise", judgments.c.parsed.is_(True)))}
    return JudgeVerdicts(scores=scores, scale_matches=(judge.get("scaleMin", 1), judge.get("scaleMax", 5))
                         == (cfg.scale_min, cfg.scale_max))


async def refresh_summary(conn: AsyncConnection, run_id: str, changed: list[ItemKey] | None = None) -> ReviewSummary:
    """Recompute the run's ``human_summary`` and ``human_score``s in ``conn``'s transaction (lock the run row
    first); ``changed``: only these outputs' item scores need rewriting (``None``: all rated ones)."""
    run, cfg = await _review_cfg(conn, run_id)
    rows = [(int(i), int(t), str(r), float(s)) for i, t, r, s in await conn.execute(
        select(reviews.c.idx, reviews.c.target, reviews.c.reviewer, reviews.c.score)
        .where(reviews.c.run_id == run_id))]
    verdicts = await _judge_verdicts(conn, run_id, run.judge, cfg)
    summary, means, per_target = await asyncio.to_thread(summarize, rows, verdicts)
    metrics = dict(run.metrics_summary or {})
    for target, agg in per_target.items():
        metrics[str(target)] = {**metrics.get(str(target), {}), "human_score": msgspec.to_builtins(agg)}
    await conn.execute(update(runs).where(runs.c.id == run_id).values(
        human_summary=msgspec.to_builtins(summary), metrics_summary=metrics, updated_at=utcnow()))
    for key in (changed if changed is not None else list(means)):
        await _set_item_score(conn, run_id, key, means.get(key))
    return summary


async def _set_item_score(conn: AsyncConnection, run_id: str, key: ItemKey, value: float | None) -> None:
    where = and_(items.c.run_id == run_id, items.c.idx == key[0], items.c.target == key[1])
    scores = (await conn.execute(select(items.c.scores).where(where))).scalar_one_or_none()
    if scores is not None:
        await conn.execute(update(items).where(where).values(scores={**scores, "human_score": value}))


class ReviewService:
    """``human-review`` REST: a reviewer's tasks and ratings (see the module docstring)."""

    def __init__(self, ctx: ModuleContext) -> None:
        self.ctx = ctx

    @staticmethod
    def reviewer(caller: Actor, reviewers: list[str], asked: str | None) -> str:
        """Who the caller acts as; 403 when a non-operator names someone else."""
        p = caller.principal
        if asked and asked not in (p.key_id, p.name):
            if p.role < Role.operator:
                raise Forbidden(f"Only an operator may act for another reviewer; key {p.key_id} is {p.role.name}")
            return asked
        if asked:
            return asked
        return p.name if p.key_id not in reviewers and p.name in reviewers else p.key_id

    async def tasks(self, caller: Actor, run_id: str, asked: str | None, page: PageParams) -> Page[ReviewTask]:
        async with self.ctx.store.read() as conn:
            _, cfg = await _review_cfg(conn, run_id)
            who = self.reviewer(caller, list(cfg.reviewers), asked)
            mine = and_(assignments.c.run_id == run_id, assignments.c.reviewer == who)
            total = int((await conn.execute(select(func.count()).select_from(assignments).where(mine))).scalar_one())
            rated = select(reviews.c.id).where(
                reviews.c.run_id == run_id, reviews.c.idx == assignments.c.idx,
                reviews.c.target == assignments.c.target, reviews.c.reviewer == who).exists()
            rows = (await conn.execute(
                select(assignments.c.idx, assignments.c.target, items.c.input, items.c.output, items.c.reference,
                       rated.label("done"))
                .join(items, and_(items.c.run_id == assignments.c.run_id, items.c.idx == assignments.c.idx,
                                  items.c.target == assignments.c.target))
                .where(mine).order_by(assignments.c.idx, assignments.c.target)
                .offset(page.offset).limit(page.page_size))).all()
        return page.wrap([ReviewTask(run_id=run_id, item=r.idx, target=r.target, input=r.input,
                                     output=r.output or "", reference=r.reference, rubric=cfg.rubric,
                                     scale_min=cfg.scale_min, scale_max=cfg.scale_max, done=bool(r.done))
                          for r in rows], total)

    async def submit(self, caller: Actor, run_id: str, data: ReviewSubmit, asked: str | None) -> ReviewSummary:
        async with self.ctx.store.begin() as conn:
            _, cfg = await _review_cfg(conn, run_id, lock=True)
            who = self.reviewer(caller, list(cfg.reviewers), asked)
            _check_score(cfg, data.score)
            key = and_(items.c.run_id == run_id, items.c.idx == data.item, items.c.target == data.target)
            item = (await conn.execute(select(items.c.output, items.c.error).where(key))).one_or_none()
            if item is None or item.output is None:
                raise SemanticError([FieldError(field="item", message=(
                    f"run {run_id} has no output for item {data.item}, target {data.target}"))])
            assigned = (await conn.execute(select(assignments.c.reviewer).where(
                assignments.c.run_id == run_id, assignments.c.idx == data.item,
                assignments.c.target == data.target, assignments.c.reviewer == who))).one_or_none()
            if assigned is None and caller.principal.role < Role.operator:
                raise Forbidden(f"Item {data.item} (target {data.target}) of run {run_id} is not assigned to {who}")
            await self._upsert(conn, run_id, who, data)
            summary = await refresh_summary(conn, run_id, [(data.item, data.target)])
            await self.ctx.audit.record(conn, caller, action="evaluation.review.submit", resource_type="run",
                                        resource_id=run_id, after={"item": data.item, "target": data.target,
                                                                   "reviewer": who, "score": data.score},
                                        detail=f"{who} rated item {data.item} (target {data.target}): {data.score:g}")
        return summary

    @staticmethod
    async def _upsert(conn: AsyncConnection, run_id: str, who: str, data: ReviewSubmit) -> None:
        # The run row is locked, so no concurrent first rating can race this update-else-insert.
        values = {"score": data.score, "comment": data.comment, "at": utcnow()}
        changed = await conn.execute(update(reviews).where(
            reviews.c.run_id == run_id, reviews.c.idx == data.item, reviews.c.target == data.target,
            reviews.c.reviewer == who).values(**values))
        if not changed.rowcount:
            await conn.execute(insert(reviews).values(run_id=run_id, idx=data.item, target=data.target,
                                                      reviewer=who, **values))


def _check_score(cfg: ReviewConfig, score: float) -> None:
    if not (math.isfinite(score) and score == int(score) and cfg.scale_min <= score <= cfg.scale_max):
        raise SemanticError([FieldError(field="score", message=(
            f"a whole number from {cfg.scale_min} to {cfg.scale_max} (the rubric's scale), got {score:g}"))])

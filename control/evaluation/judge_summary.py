"""What a judged run's judgments add up to: ``eval_runs.judge_summary``, item scores and aggregates.

Pointwise, per target: the mean score over parsed judgments with a bootstrap CI (``judge_score``), and how
many answers were parsed, unparseable (answered outside the format: never guessed, never counted) or failed
(no answer). Pairwise, per row, ``combine_orders`` of the two orders, then ``pairwise_summary``: each
target's win rate (a win only when both orders agree), the tie and flip rates, unparsed rows; each target's
``judge_win_rate`` aggregate is the mean of its per-row win indicator (1 won, 0 otherwise) over the rows with
a verdict, with a bootstrap CI.

Written in one transaction that locks the run row first (a reviewer's rating refreshes the same JSON
columns under the same lock); when the run has ratings, the review summary is refreshed too, so the judge's
agreement with the humans follows the judge's latest scores.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from typing import Any

import msgspec
from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.adminapi import ModuleContext
from adapters.store import utcnow
from control.evaluation.protocol import Aggregate, JudgeConfig
from control.evaluation.review import refresh_summary
from control.evaluation.tables import events, items, judgments, reviews, runs
from control.evaluation.verdicts import pair_outcomes
from policies.evaluation.bootstrap import mean_ci
from policies.evaluation.judge import RUBRICS, pairwise_summary

__all__ = ["pairwise", "pointwise", "write_summary"]

ItemScores = dict[tuple[int, int], float | None]  # (row, target) -> value
_WRITE_CHUNK = 1000


def _aggregate(values: list[float], note: str = "") -> dict[str, Any]:
    if not values:
        return msgspec.to_builtins(Aggregate(value=None, ci_low=None, ci_high=None, n=0, available=False,
                                             note=note or "no parsed judgment"))
    mean, low, high = mean_ci(values)
    return msgspec.to_builtins(Aggregate(value=mean, ci_low=low, ci_high=high, n=len(values), note=note))


def pointwise(rows: list[Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]], ItemScores]:
    """``(summary fields, {target: {"judge_score": aggregate}}, item scores)`` from pointwise judgment rows."""
    scores: dict[int, list[float]] = defaultdict(list)
    counts: dict[int, Counter[str]] = defaultdict(Counter)
    item_scores: ItemScores = {}
    for r in sorted(rows, key=lambda r: (r.target, r.idx)):
        state = "parsed" if r.parsed else "unparseable" if r.raw is not None else "failed"
        counts[r.target][state] += 1
        item_scores[(r.idx, r.target)] = float(r.score) if r.parsed else None
        if r.parsed:
            scores[r.target].append(float(r.score))
    per_target = {str(t): {"meanScore": _aggregate(scores[t]), **{k: c[k] for k in ("parsed", "unparseable",
                                                                                     "failed")}}
                  for t, c in sorted(counts.items())}
    totals = sum(counts.values(), Counter())
    summary = {"targets": per_target, "parsed": totals["parsed"], "unparseable": totals["unparseable"],
               "failed": totals["failed"]}
    return summary, {t: {"judge_score": v["meanScore"]} for t, v in per_target.items()}, item_scores


def pairwise(rows: list[Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]], ItemScores]:
    """The same from pairwise rows: both orders per row, combined; a row missing an answer is ``failed``."""
    outcomes, failed = pair_outcomes(rows)
    stats = pairwise_summary(list(outcomes.values()))
    judged = {i: o for i, o in outcomes.items() if o != "unparsed"}
    item_scores: ItemScores = {}
    for idx, outcome in outcomes.items():
        for target, side in ((0, "x"), (1, "y")):
            item_scores[(idx, target)] = None if outcome == "unparsed" else float(outcome == side)
    wins = {str(t): _aggregate([float(o == side) for o in judged.values()], "a win needs both orders to agree")
            for t, side in ((0, "x"), (1, "y"))}
    summary = {"winRates": {"0": stats["win_rate_x"], "1": stats["win_rate_y"]}, "tieRate": stats["tie_rate"],
               "flipRate": stats["flip_rate"], "unparseable": stats["unparsed"], "failed": failed,
               "rows": stats["n"], "outcomes": dict(Counter(outcomes.values())), "winRateCi": wins}
    return summary, {t: {"judge_win_rate": agg} for t, agg in wins.items()}, item_scores


async def _set_item_scores(conn: AsyncConnection, run_id: str, metric: str, values: ItemScores) -> None:
    """Every item gets the judge's value (``None``: not judged, or unparseable); the other mode's is dropped."""
    other = "judge_win_rate" if metric == "judge_score" else "judge_score"
    current = {(int(i), int(t)): s or {} for i, t, s in await conn.execute(
        select(items.c.idx, items.c.target, items.c.scores).where(items.c.run_id == run_id))}
    params = [{"r": run_id, "i": i, "t": t,
               "s": {**{k: v for k, v in scores.items() if k != other}, metric: values.get((i, t))}}
              for (i, t), scores in current.items()]
    for start in range(0, len(params), _WRITE_CHUNK):
        await conn.execute(update(items).where(items.c.run_id == bindparam("r"), items.c.idx == bindparam("i"),
                                               items.c.target == bindparam("t")).values(scores=bindparam("s")),
                           params[start:start + _WRITE_CHUNK])


async def write_summary(ctx: ModuleContext, run_id: str, cfg: JudgeConfig, route: str, *,
                        json_mode: bool) -> dict[str, Any]:
    """Summarise the run's judgments of ``cfg.mode`` into the run row and its items; returns the summary."""
    async with ctx.store.begin() as conn:
        run = (await conn.execute(select(runs.c.metrics_summary, runs.c.review).where(runs.c.id == run_id)
                                  .with_for_update())).one()
        rows = list((await conn.execute(select(
            judgments.c.idx, judgments.c.target, judgments.c.order, judgments.c.raw, judgments.c.parsed,
            judgments.c.score).where(judgments.c.run_id == run_id, judgments.c.kind == cfg.mode))).all())
        fields, aggregates, item_scores = await asyncio.to_thread(pointwise if cfg.mode == "pointwise" else pairwise,
                                                                  rows)
        summary = {"mode": cfg.mode, "route": route, "rubric": cfg.rubric if cfg.rubric in RUBRICS else "inline",
                   "scaleMin": cfg.scale_min, "scaleMax": cfg.scale_max, "jsonMode": json_mode,
                   "calls": len(rows), **fields}
        metrics = {t: {m: a for m, a in per.items() if m not in ("judge_score", "judge_win_rate")}
                   for t, per in (run.metrics_summary or {}).items()}  # only this judge's verdicts count
        for target, extra in aggregates.items():
            metrics[target] = {**metrics.get(target, {}), **extra}
        await conn.execute(update(runs).where(runs.c.id == run_id).values(
            judge_summary=summary, metrics_summary=metrics, updated_at=utcnow()))
        metric = "judge_score" if cfg.mode == "pointwise" else "judge_win_rate"
        await _set_item_scores(conn, run_id, metric, item_scores)
        await conn.execute(events.insert().values(run_id=run_id, at=utcnow(), event="judging_finished",
                                                  actor="system", detail={k: summary[k] for k in (
                                                      "mode", "calls", "unparseable", "failed")}))
        rated = (await conn.execute(select(reviews.c.id).where(reviews.c.run_id == run_id).limit(1))).first()
        if run.review is not None and rated is not None:
            await refresh_summary(conn, run_id)
    return summary

"""Run reads as the REST API shows them: the list (filtered, paged), one run, its items.

``Run.samples`` are the first ``SAMPLES`` dataset rows with every target's output; ``timeline`` the run's
events, oldest first (the last ``TIMELINE`` of them). Item outputs are keyed in camelCase like the rest of
the API; costs are decimal strings, like every amount of money the API shows. A run's ``costUsd`` is what its
generation calls cost, as documented from the start; ``costs`` breaks down every call (``costs.run_costs``).
An item also carries what the judge said of it (each call: its verdict and rationale, or, unparseable, the
answer as received, and what the call cost) and the reviewers' ratings with their comments: what a person
reads to decide how far to trust a score.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.adminapi import NotFound, Page, PageParams
from adapters.store import Store
from control.evaluation.costs import run_costs
from control.evaluation.protocol import Aggregate, Item, Run, RunSummary
from control.evaluation.tables import events, items, judgments, reviews, run_models, runs

__all__ = ["SAMPLES", "RunReader", "item_notes", "item_outputs", "to_summary"]

SAMPLES = 10
TIMELINE = 500


def _progress(row: Any) -> dict[str, int]:
    return {"done": int(row.done), "failed": int(row.failed), "total": int(row.total)}


def _summary_fields(row: Any) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "type": row.type, "status": row.status, "targets": list(row.targets),
            "dataset": {"datasetId": row.dataset_id, "version": row.dataset_version, "name": row.dataset_name},
            "model_ids": list(row.model_ids), "progress": _progress(row), "created_at": row.created_at,
            "created_by": row.created_by, "finished_at": row.finished_at}


def to_summary(row: Any) -> RunSummary:
    return RunSummary(**_summary_fields(row))


def _metrics(stored: Any) -> dict[str, dict[str, Aggregate]]:
    return {t: {m: msgspec.convert(a, Aggregate) for m, a in per.items()} for t, per in (stored or {}).items()}


def item_outputs(rows: list[Any]) -> tuple[list[dict[str, Any]], dict[str, dict[str, float | None]]]:
    """One dataset row's item rows (one per target) as ``Item.outputs`` and ``Item.scores``."""
    outputs = [{"target": int(r.target), "text": r.output, "latencyS": r.latency_s, "promptTokens": r.prompt_tokens,
                "completionTokens": r.completion_tokens, "costUsd": r.cost_usd, "error": r.error,
                "requestId": r.request_id, "perplexityCostUsd": r.perplexity_cost_usd,
                "perplexityRequestId": r.perplexity_request_id} for r in rows]
    return outputs, {str(r.target): dict(r.scores or {}) for r in rows}


Notes = dict[int, list[dict[str, Any]]]  # dataset row -> judgments or reviews


async def item_notes(conn: AsyncConnection, run_id: str, rows: list[int]) -> tuple[Notes, Notes]:
    """The judge's calls and the reviewers' ratings on these dataset rows, in a stable order."""
    judged: Notes = defaultdict(list)
    rated: Notes = defaultdict(list)
    if not rows:
        return judged, rated
    j = judgments.c
    for r in await conn.execute(select(j.idx, j.kind, j.target, j.order, j.parsed, j.score, j.winner, j.rationale,
                                       j.raw, j.error, j.cost_usd, j.request_id)
                                .where(j.run_id == run_id, j.idx.in_(rows)).order_by(j.idx, j.kind, j.target, j.order)):
        judged[int(r.idx)].append({"kind": r.kind, "target": int(r.target), "order": int(r.order),
                                   "parsed": bool(r.parsed), "score": r.score, "winner": r.winner,
                                   "rationale": r.rationale, "raw": None if r.parsed else r.raw, "error": r.error,
                                   "costUsd": r.cost_usd, "requestId": r.request_id})
    v = reviews.c
    for q in await conn.execute(select(v.idx, v.target, v.reviewer, v.score, v.comment, v.at)
                                .where(v.run_id == run_id, v.idx.in_(rows)).order_by(v.idx, v.target, v.reviewer)):
        rated[int(q.idx)].append({"target": int(q.target), "reviewer": q.reviewer, "score": q.score,
                                  "comment": q.comment, "at": q.at})
    return judged, rated


async def _to_items(conn: AsyncConnection, run_id: str, rows: Sequence[Any]) -> list[Item]:
    groups = _groups(rows)
    judged, rated = await item_notes(conn, run_id, [int(g[0].idx) for g in groups])
    out = []
    for group in groups:
        outputs, scores = item_outputs(group)
        idx = int(group[0].idx)
        out.append(Item(index=idx, input=group[0].input, reference=group[0].reference, outputs=outputs,
                        scores=scores, judgments=judged.get(idx, []), reviews=rated.get(idx, [])))
    return out


class RunReader:
    def __init__(self, store: Store) -> None:
        self.store = store

    @staticmethod
    async def row(conn: AsyncConnection, run_id: str, *, lock: bool = False) -> Any:
        query = select(runs).where(runs.c.id == run_id)
        found = (await conn.execute(query.with_for_update() if lock else query)).one_or_none()
        if found is None:
            raise NotFound(f"No evaluation run {run_id!r}")
        return found

    async def view(self, conn: AsyncConnection, run_id: str) -> Run:
        row = await self.row(conn, run_id)
        first = (await conn.execute(select(items).where(items.c.run_id == run_id, items.c.idx.in_(
            select(items.c.idx).where(items.c.run_id == run_id).distinct().order_by(items.c.idx).limit(SAMPLES)))
            .order_by(items.c.idx, items.c.target))).all()
        samples = [msgspec.to_builtins(item) for item in await _to_items(conn, run_id, first)]
        timeline = (await conn.execute(select(events.c.at, events.c.event, events.c.actor, events.c.detail)
                                       .where(events.c.run_id == run_id).order_by(events.c.id.desc())
                                       .limit(TIMELINE))).all()
        costs = await run_costs(conn, run_id, row.replaced_judge_cost_usd)
        return Run(**_summary_fields(row), metrics=_metrics(row.metrics_summary), judge=row.judge_summary,
                   human=row.human_summary, samples=samples,
                   timeline=[{"at": e.at, "event": e.event, "actor": e.actor, "detail": e.detail}
                             for e in reversed(timeline)],
                   error=row.error, costs=costs,
                   cost_usd=costs.generation_usd if costs.generation_usd is not None else row.cost_usd)

    async def export_info(self, run_id: str) -> tuple[list[str], list[str]]:
        """The run's target routes and metric names (404 for an unknown run): those it was created with, then
        any its aggregates gained later (a judge asked for afterwards, human ratings), so each has a column."""
        async with self.store.read() as conn:
            row = await self.row(conn, run_id)
        names = dict.fromkeys(row.metrics)
        for per_target in (row.metrics_summary or {}).values():
            names.update(dict.fromkeys(per_target))
        return [t["route"] for t in row.targets], list(names)

    async def get(self, run_id: str) -> Run:
        async with self.store.read() as conn:
            return await self.view(conn, run_id)

    async def list(self, page: PageParams, *, model_id: str | None = None, dataset_id: str | None = None,
                   run_type: str | None = None, status: str | None = None, since: datetime | None = None,
                   until: datetime | None = None) -> Page[RunSummary]:
        query: Select[Any] = select(runs)
        if model_id:
            query = query.where(runs.c.id.in_(select(run_models.c.run_id).where(run_models.c.model_id == model_id)))
        if dataset_id:
            query = query.where(runs.c.dataset_id == dataset_id)
        if run_type:
            query = query.where(runs.c.type == run_type)
        if status:
            query = query.where(runs.c.status == status)
        if since:
            query = query.where(runs.c.created_at >= since)
        if until:
            query = query.where(runs.c.created_at < until)
        async with self.store.read() as conn:
            total = (await conn.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
            rows = (await conn.execute(query.order_by(runs.c.created_at.desc(), runs.c.id.desc())
                                       .limit(page.page_size).offset(page.offset))).all()
        return page.wrap([to_summary(r) for r in rows], total)

    async def items(self, run_id: str, page: PageParams) -> Page[Item]:
        """Dataset rows in order, each with every target's output."""
        async with self.store.read() as conn:
            await self.row(conn, run_id)
            total = (await conn.execute(select(func.count(func.distinct(items.c.idx)))
                                        .where(items.c.run_id == run_id))).scalar_one()
            wanted = (select(items.c.idx).where(items.c.run_id == run_id).distinct().order_by(items.c.idx)
                      .limit(page.page_size).offset(page.offset))
            rows = (await conn.execute(select(items).where(items.c.run_id == run_id, items.c.idx.in_(wanted))
                                       .order_by(items.c.idx, items.c.target))).all()
            found = await _to_items(conn, run_id, rows)
        return page.wrap(found, total)


def _groups(rows: Sequence[Any]) -> list[list[Any]]:
    out: list[list[Any]] = []
    for r in rows:
        if out and out[-1][0].idx == r.idx:
            out[-1].append(r)
        else:
            out.append([r])
    return out

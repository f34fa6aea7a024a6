"""An experiment's observations, read from the store for ``policies.prompts.stats``.

Per variant: the ``usage_records`` of the experiment since a start (its ``runtime.started_at``) and the
``feedback`` on them. Rows that fell back to another target (``fallback``) are counted apart
(``VariantData.fallbacks``) and enter no other number; so does feedback on such a request, or on an
episode that had one (counted as ``ExactSums.feedback_excluded``).

Bounded work, on SQLite and PostgreSQL alike:

* counts and sums (requests, errors, tokens, cost, feedback scores and labels) are SQL aggregates over
  the ``(experiment, ts)`` index, exact however large the experiment;
* the per-request samples the tests need (latencies, time to first token, costs, token counts, scores)
  read only their columns, and at most ``cap`` rows per variant. Above that, a uniform sample: record
  ids are random 128-bit tokens (``adapters.usage.new_record_id``), so the ``cap`` rows with the
  smallest ids are a uniform random subset. A filter on the id's leading hex digits first keeps about
  ``cap`` (plus six standard deviations) of the rows inside the database, so only those are sorted and
  sent; if it kept too few (ids that are not random hex), the query runs again without it. The sample is
  the same on every replica and moves little between ticks, so guardrails do not flicker with it.
  ``Sampling`` tells the caller what was kept of what.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import BigInteger, ColumnElement, case, exists, func, select, type_coerce
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.dataplane import feedback, usage_records
from adapters.store import Store
from policies.prompts.stats import VariantData

__all__ = ["DEFAULT_SAMPLE_CAP", "ExactSums", "Loaded", "Sampling", "load_variant_data"]

DEFAULT_SAMPLE_CAP = 200_000
_u, _f = usage_records, feedback
_HEX_DIGITS = 12  # of the record id the pre-filter compares: 48 bits, finer than any cap
_NANO = 1e-9


@dataclass(frozen=True, slots=True)
class ExactSums:
    """What SQL summed over every row, whatever was sampled: the exact means come from these."""

    requests: int = 0
    cost_nano_usd: int = 0
    priced: int = 0
    score_sum: float = 0.0
    scores: int = 0
    feedback_excluded: int = 0  # feedback on a request (or episode) that fell back


@dataclass(frozen=True, slots=True)
class Sampling:
    """Rows (usage records or scores) of a variant the per-request arrays hold, of how many there were."""

    records_kept: int
    records: int
    scores_kept: int
    scores: int

    @property
    def sampled(self) -> bool:
        return self.records_kept < self.records or self.scores_kept < self.scores


@dataclass(frozen=True, slots=True)
class Loaded:
    data: dict[str, VariantData]
    exact: dict[str, ExactSums]
    sampling: dict[str, Sampling]
    cap: int
    other_variants: dict[str, int] = field(default_factory=dict)  # recorded variants the document lacks

    @property
    def sampled(self) -> bool:
        return any(s.sampled for s in self.sampling.values())


def _records_window(experiment: str, since: datetime | None, until: datetime | None) -> list[ColumnElement[bool]]:
    where = [_u.c.experiment == experiment]
    if since is not None:
        where.append(_u.c.ts >= since)
    if until is not None:
        where.append(_u.c.ts < until)
    return where


def _feedback_window(experiment: str, since: datetime | None, until: datetime | None) -> list[ColumnElement[bool]]:
    where = [_f.c.experiment == experiment, _f.c.variant.is_not(None)]
    if since is not None:
        where.append(_f.c.ts >= since)
    if until is not None:
        where.append(_f.c.ts < until)
    return where


def _fell_back() -> ColumnElement[bool]:
    """Feedback whose rated request, or a request of whose episode, fell back (in this experiment)."""
    by_request = usage_records.alias("fb_req")
    by_episode = usage_records.alias("fb_ep")
    return (exists().where(by_request.c.request_id == _f.c.request_id, by_request.c.experiment == _f.c.experiment,
                           by_request.c.fallback.is_(True))
            | exists().where(by_episode.c.episode_id == _f.c.episode_id, by_episode.c.experiment == _f.c.experiment,
                             by_episode.c.fallback.is_(True)))


def _id_below(column: Any, share: float) -> ColumnElement[bool] | None:
    """``column < threshold`` keeping about ``share`` of random lower-case hex ids; None keeps all."""
    if share >= 1:
        return None
    below: ColumnElement[bool] = column < f"{math.ceil(share * 16**_HEX_DIGITS):0{_HEX_DIGITS}x}"
    return below


def _share_for(cap: int, n: int) -> float:
    return (cap + 6 * math.sqrt(cap) + 10) / n if n else 1.0


_SAMPLE_COLUMNS = (_u.c.variant, _u.c.status, _u.c.latency_s, _u.c.ttft_s, _u.c.stream, _u.c.prompt_tokens,
                   _u.c.completion_tokens, type_coerce(_u.c.cost_usd, BigInteger).label("cost_nano"))


async def _record_rows(conn: AsyncConnection, where: list[ColumnElement[bool]], variant: str | None,
                       cap: int, n: int) -> list[Any]:
    """All non-fallback rows of ``where`` (``variant`` None: of every variant), or the ``cap`` with the
    smallest record ids when a variant has more."""
    base = [*where, _u.c.fallback.is_(False)]
    if variant is None:
        return list((await conn.execute(select(*_SAMPLE_COLUMNS).where(*base))).all())
    base.append(_u.c.variant == variant)
    below = _id_below(_u.c.record_id, _share_for(cap, n))
    query = select(*_SAMPLE_COLUMNS).where(*base).order_by(_u.c.record_id).limit(cap)
    rows = list((await conn.execute(query.where(below) if below is not None else query)).all())
    if len(rows) < cap and below is not None:  # ids that are not random hex: sort them all
        rows = list((await conn.execute(query)).all())
    return rows


def _arrays(rows: Sequence[Any]) -> dict[str, np.ndarray[Any, Any]]:
    """Columns of the sample rows as float arrays (None becomes NaN), in ``_SAMPLE_COLUMNS`` order."""
    if not rows:
        return {k: np.empty(0) for k in ("status", "latency", "ttft", "stream", "prompt", "completion", "cost")}
    cols = list(zip(*rows, strict=True))
    return {k: np.array(cols[i], dtype=np.float64)
            for i, k in enumerate(("status", "latency", "ttft", "stream", "prompt", "completion", "cost"), start=1)}


def _variant_data(a: dict[str, np.ndarray[Any, Any]], agg: Any, fallbacks: int, scores: np.ndarray[Any, Any],
                  labels: tuple[int, int]) -> VariantData:
    ok = a["status"] < 400
    ttft_ok = ok & (a["stream"] > 0) & ~np.isnan(a["ttft"])
    priced = ~np.isnan(a["cost"])
    requests = int(agg.requests) if agg is not None else 0
    return VariantData(
        requests=requests, errors=int(agg.errors) if agg is not None else 0, fallbacks=fallbacks,
        latencies=a["latency"][ok], ttfts=a["ttft"][ttft_ok],
        prompt_tokens=int(agg.prompt_tokens or 0) if agg is not None else 0,
        completion_tokens=int(agg.completion_tokens or 0) if agg is not None else 0,
        costs=a["cost"][priced] * _NANO, unpriced=requests - (int(agg.priced) if agg is not None else 0),
        scores=scores, labels_positive=labels[0], labels_total=labels[1],
        prompt_tokens_each=a["prompt"], completion_tokens_each=a["completion"])


async def load_variant_data(store: Store, experiment: str, variants: Sequence[str], *,
                            since: datetime | None = None, until: datetime | None = None,
                            cap: int = DEFAULT_SAMPLE_CAP) -> Loaded:
    """``VariantData`` for each of ``variants`` from ``experiment``'s records in [since, until)."""
    rec_where = _records_window(experiment, since, until)
    fb_where = _feedback_window(experiment, since, until)
    aggregates = (select(
        _u.c.variant, _u.c.fallback, func.count().label("requests"),
        func.sum(case((_u.c.status >= 400, 1), else_=0)).label("errors"),
        func.sum(_u.c.prompt_tokens).label("prompt_tokens"),
        func.sum(_u.c.completion_tokens).label("completion_tokens"),
        func.count(_u.c.cost_usd).label("priced"), type_coerce(func.sum(_u.c.cost_usd), BigInteger).label("cost_nano"),
    ).where(*rec_where).group_by(_u.c.variant, _u.c.fallback))
    fell_back = _fell_back()
    fb_aggregates = (select(
        _f.c.variant, fell_back.label("fell_back"), func.count(_f.c.score).label("scores"),
        func.sum(_f.c.score).label("score_sum"), func.count(_f.c.positive).label("labels"),
        func.sum(case((_f.c.positive.is_(True), 1), else_=0)).label("positive"), func.count().label("rows"),
    ).where(*fb_where).group_by(_f.c.variant, fell_back))
    wanted = set(variants)
    async with store.read() as conn:
        agg: dict[str, Any] = {}
        fallbacks: dict[str, int] = {}
        other: dict[str, int] = {}
        for row in await conn.execute(aggregates):
            if row.variant not in wanted:
                if row.variant is not None:
                    other[row.variant] = other.get(row.variant, 0) + int(row.requests)
            elif row.fallback:
                fallbacks[row.variant] = int(row.requests)
            else:
                agg[row.variant] = row
        fb: dict[str, Any] = {}
        excluded: dict[str, int] = {}
        for row in await conn.execute(fb_aggregates):
            if row.fell_back:
                excluded[row.variant] = int(row.rows)
            elif row.variant in wanted:
                fb[row.variant] = row
        counts = {v: int(agg[v].requests) if v in agg else 0 for v in variants}
        small = [v for v in variants if counts[v] <= cap]
        rows_by: dict[str, list[Any]] = {v: [] for v in variants}
        if any(counts[v] for v in small):
            where = [*rec_where, _u.c.variant.in_(small)] if len(small) < len(variants) else rec_where
            for r in await _record_rows(conn, where, None, cap, 0):
                if r.variant in rows_by:
                    rows_by[r.variant].append(r)
        for v in variants:
            if counts[v] > cap:
                rows_by[v] = await _record_rows(conn, rec_where, v, cap, counts[v])
        scores: dict[str, np.ndarray[Any, Any]] = {}
        for v in variants:
            n_scores = int(fb[v].scores) if v in fb else 0
            if not n_scores:
                scores[v] = np.empty(0)
                continue
            query = (select(_f.c.score).where(*fb_where, _f.c.variant == v, _f.c.score.is_not(None), ~fell_back)
                     .order_by(_f.c.feedback_id).limit(cap))
            scores[v] = np.array((await conn.execute(query)).scalars().all(), dtype=np.float64)
    data, exact, sampling = {}, {}, {}
    for v in variants:
        a, f = agg.get(v), fb.get(v)
        labels = (int(f.positive or 0), int(f.labels)) if f is not None else (0, 0)
        data[v] = _variant_data(_arrays(rows_by[v]), a, fallbacks.get(v, 0), scores[v], labels)
        exact[v] = ExactSums(requests=counts[v], cost_nano_usd=int(a.cost_nano or 0) if a is not None else 0,
                             priced=int(a.priced) if a is not None else 0,
                             score_sum=float(f.score_sum or 0.0) if f is not None else 0.0,
                             scores=int(f.scores) if f is not None else 0, feedback_excluded=excluded.get(v, 0))
        sampling[v] = Sampling(records_kept=len(rows_by[v]), records=counts[v], scores_kept=int(scores[v].size),
                               scores=exact[v].scores)
    return Loaded(data=data, exact=exact, sampling=sampling, cap=cap, other_variants=other)


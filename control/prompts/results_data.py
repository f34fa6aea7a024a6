"""An experiment's observations, read from the store for ``policies.prompts.stats``.

Per variant: the ``usage_records`` of the experiment since a start (its ``runtime.started_at``) and the
``feedback`` on them. Rows that fell back to another target (``fallback``) are counted apart
(``VariantData.fallbacks``) and enter no other number; so does feedback on such a request, or on an
episode that had one (counted as ``ExactSums.feedback_excluded``).

Bounded work, on SQLite and PostgreSQL alike:

* counts and sums (requests, errors, tokens, cost, feedback scores and labels) are SQL aggregates over
  the ``(experiment, ts)`` index, exact however large the experiment;
* the per-request samples the tests need (latencies, time to first token, costs, token counts, scores)
  read only their columns, in one scan for all variants, and at most ``cap`` rows per variant. Above
  that, a uniform sample: record ids are random 128-bit hex tokens (``adapters.usage.new_record_id``;
  feedback ids ``fb_`` + hex), so ``id < threshold`` keeps a uniform random share of a variant's rows
  inside the database, sized to ``cap`` plus six standard deviations; a draw seeded by the variant and
  the count trims that to ``cap``. No sort (a sort of 200k rows cost SQLite more than the scan). If the
  filter kept fewer than ``cap`` (ids that are not random hex), that variant is read again sorted by id.
  The sample is the same on every replica and moves little between ticks, so guardrails do not flicker
  with it. ``Sampling`` tells the caller what was kept of what.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import BigInteger, ColumnElement, and_, case, exists, func, or_, select, type_coerce
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.dataplane import feedback, usage_records
from adapters.store import Store
from policies.prompts.stats import VariantData

__all__ = ["DEFAULT_SAMPLE_CAP", "ExactSums", "Loaded", "Sampling", "load_variant_data"]

DEFAULT_SAMPLE_CAP = 200_000
_u, _f = usage_records, feedback
_HEX_DIGITS = 12  # of the record id the pre-filter compares: 48 bits, finer than any cap
_NANO = 1e-9
_PARTITION = 512  # rows SQLAlchemy turns into Rows between two turns of the event loop (4096: ~0.2 s stalls)


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


def _id_below(column: Any, share: float, prefix: str) -> ColumnElement[bool]:
    """``column < threshold``: keeps about ``share`` of ids that are ``prefix`` + random lower-case hex."""
    below: ColumnElement[bool] = column < f"{prefix}{math.ceil(min(share, 1.0) * 16**_HEX_DIGITS):0{_HEX_DIGITS}x}"
    return below


def _share_for(cap: int, n: int) -> float:
    """What the id filter keeps of ``n``: ``cap`` plus six standard deviations, so fewer is all but impossible."""
    return (cap + 6 * math.sqrt(cap) + 10) / n


_SAMPLE_COLUMNS = (_u.c.status, _u.c.latency_s, _u.c.ttft_s, _u.c.stream, _u.c.prompt_tokens,
                   _u.c.completion_tokens, type_coerce(_u.c.cost_usd, BigInteger).label("cost_nano"))


Matrix = np.ndarray[Any, np.dtype[np.float64]]


async def _rows(conn: AsyncConnection, query: Any, variants: Sequence[str]) -> dict[str, list[Matrix]]:
    """``query``'s rows (the variant, then numbers) as float blocks per variant, None as NaN. Streamed a
    partition at a time and turned into numpy at once: the event loop (the gateway's too) never holds a
    whole large result, and no 200k Row objects live long enough to make a full GC pass stall it."""
    index = {v: i for i, v in enumerate(variants)}
    blocks: dict[str, list[Matrix]] = {v: [] for v in variants}
    result = await conn.stream(query)
    async for part in result.partitions(_PARTITION):
        cols = list(zip(*part, strict=True))
        which = np.fromiter((index[v] for v in cols[0]), dtype=np.int64, count=len(part))
        block = np.column_stack([np.array(c, dtype=np.float64) for c in cols[1:]])
        for v, i in index.items():
            mine = block[which == i]
            if mine.size:
                blocks[v].append(mine)
    return blocks


def _stack(blocks: list[Matrix], width: int) -> Matrix:
    return np.concatenate(blocks) if blocks else np.empty((0, width))


async def _sample(conn: AsyncConnection, where: list[ColumnElement[bool]], variant: Any, id_column: Any,
                  prefix: str, columns: Sequence[Any], counts: dict[str, int], cap: int) -> dict[str, Matrix]:
    """A (rows x columns) float matrix per variant, from one scan: every row of a variant with at most
    ``cap``, the id filter's share of the others, trimmed to ``cap`` by a draw seeded by the variant and
    the count (the same rows on every replica). A variant the filter left short (ids not random hex) is
    read again: the ``cap`` smallest ids."""
    small = [v for v, n in counts.items() if 0 < n <= cap]
    big = {v: _id_below(id_column, _share_for(cap, n), prefix) for v, n in counts.items() if n > cap}
    picks = ([variant.in_(small)] if small else []) + [and_(variant == v, below) for v, below in big.items()]
    names = list(counts)
    blocks: dict[str, list[Matrix]] = {v: [] for v in names}
    if picks:
        blocks = await _rows(conn, select(variant, *columns).where(*where, or_(*picks)), names)
    found = {v: _stack(blocks[v], len(columns)) for v in names}
    for v in big:
        rows = found[v]
        if len(rows) < cap:
            query = select(variant, *columns).where(*where, variant == v).order_by(id_column).limit(cap)
            rows = _stack((await _rows(conn, query, names))[v], len(columns))
        elif len(rows) > cap:
            rng = np.random.default_rng(zlib.crc32(f"{v}|{len(rows)}".encode()))
            rows = rows[np.sort(rng.choice(len(rows), cap, replace=False))]
        found[v] = rows
    return found


_NAMES = ("status", "latency", "ttft", "stream", "prompt", "completion", "cost")  # _SAMPLE_COLUMNS


def _arrays(rows: Matrix) -> dict[str, Matrix]:
    return {k: rows[:, j] for j, k in enumerate(_NAMES)}


def _variant_data(a: dict[str, Matrix], agg: Any, fallbacks: int, scores: Matrix,
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
                            cap: int = DEFAULT_SAMPLE_CAP, timeout_s: float | None = None) -> Loaded:
    """``VariantData`` for each of ``variants`` from ``experiment``'s records in [since, until).
    ``timeout_s``: the deadline of each of its three reads (default: the store's)."""
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
    agg: dict[str, Any] = {}
    fallbacks: dict[str, int] = {}
    other: dict[str, int] = {}
    fb: dict[str, Any] = {}
    excluded: dict[str, int] = {}
    # Three units of work, each with its own deadline: a long read transaction would also hold back
    # SQLite's checkpoints. Counts and samples may then differ by what arrived in between: harmless.
    async with store.read(timeout_s=timeout_s) as conn:
        for row in await conn.execute(aggregates):
            if row.variant not in wanted:
                if row.variant is not None:
                    other[row.variant] = other.get(row.variant, 0) + int(row.requests)
            elif row.fallback:
                fallbacks[row.variant] = int(row.requests)
            else:
                agg[row.variant] = row
        for row in await conn.execute(fb_aggregates):
            if row.fell_back:
                excluded[row.variant] = int(row.rows)
            elif row.variant in wanted:
                fb[row.variant] = row
    counts = {v: int(agg[v].requests) if v in agg else 0 for v in variants}
    async with store.read(timeout_s=timeout_s) as conn:
        rows_by = await _sample(conn, [*rec_where, _u.c.fallback.is_(False)], _u.c.variant, _u.c.record_id, "",
                                _SAMPLE_COLUMNS, counts, cap)
    score_counts = {v: int(fb[v].scores) if v in fb else 0 for v in variants}
    async with store.read(timeout_s=timeout_s) as conn:
        score_rows = await _sample(conn, [*fb_where, _f.c.score.is_not(None), ~fell_back], _f.c.variant,
                                   _f.c.feedback_id, "fb_", (_f.c.score,), score_counts, cap)
    data, exact, sampling = {}, {}, {}
    for v in variants:
        a, f = agg.get(v), fb.get(v)
        scores = score_rows[v][:, 0]
        labels = (int(f.positive or 0), int(f.labels)) if f is not None else (0, 0)
        data[v] = _variant_data(_arrays(rows_by[v]), a, fallbacks.get(v, 0), scores, labels)
        exact[v] = ExactSums(requests=counts[v], cost_nano_usd=int(a.cost_nano or 0) if a is not None else 0,
                             priced=int(a.priced) if a is not None else 0,
                             score_sum=float(f.score_sum or 0.0) if f is not None else 0.0,
                             scores=int(f.scores) if f is not None else 0, feedback_excluded=excluded.get(v, 0))
        sampling[v] = Sampling(records_kept=len(rows_by[v]), records=counts[v], scores_kept=int(scores.size),
                               scores=exact[v].scores)
    return Loaded(data=data, exact=exact, sampling=sampling, cap=cap, other_variants=other)

"""What a run's gateway calls cost, as the gateway priced them: read back next to each call, and summed.

Every call a run makes (generation, perplexity, the judge) goes through the gateway, which writes one usage
record per request, priced (``cost_usd``; NULL for a model without a price), in batches: a record may appear
a little after its answer. ``read_costs`` copies each call's cost from its usage record, found by the request
id stored with the call, into the call's row, polling while records are missing, for up to ``wait_s``. An
unpriced call's record (cost NULL) counts as found, so it ends the wait at once. A call whose record comes
later than that keeps a NULL cost here (the cost API still counts it).

``run_costs`` sums them for ``GET runs/{id}``: generation (the items' ``cost_usd``, the per-item metric that
compares two models, so no judge's cost is in it), perplexity, the judge (the calls stored, plus those whose
rows were dropped: ``drop_judgments``) and the total. A part is ``None`` when no call of its kind is priced;
the total is the sum of the parts that are not ``None``.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any, NamedTuple

from sqlalchemy import Column, ColumnElement, Table, and_, bindparam, delete, func, select, type_coerce, update
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.dataplane import usage_records
from adapters.store import Store, UsdAmount
from control.evaluation.protocol import RunCosts
from control.evaluation.tables import items, judgments, runs

__all__ = ["GENERATION", "JUDGE", "PERPLEXITY", "Calls", "drop_judgments", "read_costs", "run_costs"]

_CHUNK = 500  # request ids per IN (…)


class Calls(NamedTuple):
    """One kind of call: the table its rows are in, the column with each call's request id, the cost column."""

    table: Table
    request_id: Column[Any]
    cost: Column[Any]


GENERATION = Calls(items, items.c.request_id, items.c.cost_usd)
PERPLEXITY = Calls(items, items.c.perplexity_request_id, items.c.perplexity_cost_usd)
JUDGE = Calls(judgments, judgments.c.request_id, judgments.c.cost_usd)


async def read_costs(store: Store, run_id: str, kinds: tuple[Calls, ...], *, wait_s: float,
                     poll_s: float = 0.25) -> int:
    """Copy the cost of the run's calls of ``kinds`` from their usage records; poll while some are missing, up
    to ``wait_s``. Returns how many calls still have no usage record (0: every cost known or known unpriced)."""
    deadline = time.monotonic() + wait_s
    while True:
        missing = 0
        for calls in kinds:
            missing += await _read_back(store, run_id, calls)
        if not missing or time.monotonic() >= deadline:
            return missing
        await asyncio.sleep(poll_s)


async def _read_back(store: Store, run_id: str, calls: Calls) -> int:
    async with store.read() as conn:
        pending = list((await conn.execute(select(calls.request_id).where(
            calls.table.c.run_id == run_id, calls.request_id.is_not(None), calls.cost.is_(None)))).scalars())
        found: list[Any] = []
        for start in range(0, len(pending), _CHUNK):
            found += (await conn.execute(select(usage_records.c.request_id, usage_records.c.cost_usd).where(
                usage_records.c.request_id.in_(pending[start:start + _CHUNK])))).all()
    priced = [{"rid": r, "cost": c} for r, c in found if c is not None]
    if priced:
        async with store.begin() as conn:
            await conn.execute(update(calls.table).where(
                calls.table.c.run_id == run_id, calls.request_id == bindparam("rid")).values(
                {calls.cost: bindparam("cost")}), priced)
    return len(set(pending) - {r for r, _ in found})


def _sum(*parts: Decimal | None) -> Decimal | None:
    known = [p for p in parts if p is not None]
    return sum(known, Decimal(0)) if known else None


async def run_costs(conn: AsyncConnection, run_id: str, replaced_judge_usd: Decimal | None) -> RunCosts:
    """The run's cost by kind of call, from what ``read_costs`` stored (``replaced_judge_usd``: the run row's
    ``replaced_judge_cost_usd``)."""
    generation, perplexity = (await conn.execute(select(
        type_coerce(func.sum(items.c.cost_usd), UsdAmount), type_coerce(func.sum(items.c.perplexity_cost_usd),
                                                                          UsdAmount))
        .where(items.c.run_id == run_id))).one()
    judge = (await conn.execute(select(type_coerce(func.sum(judgments.c.cost_usd), UsdAmount)).where(
        judgments.c.run_id == run_id))).scalar()
    judge = _sum(judge, replaced_judge_usd)
    return RunCosts(generation_usd=generation, perplexity_usd=perplexity, judge_usd=judge,
                    total_usd=_sum(generation, perplexity, judge))


async def drop_judgments(conn: AsyncConnection, run_id: str, *where: ColumnElement[bool]) -> None:
    """Delete the run's judgments matching ``where`` (all of them without), first adding what those calls cost to
    the run's ``replaced_judge_cost_usd``: the cost read back, else the usage record's (not read back yet)."""
    j, u = judgments.c, usage_records.c
    chosen = and_(j.run_id == run_id, *where)
    recorded = select(u.cost_usd).where(u.request_id == j.request_id).limit(1).scalar_subquery()
    cost = (await conn.execute(select(type_coerce(func.sum(func.coalesce(j.cost_usd, recorded)), UsdAmount))
                               .where(chosen))).scalar()
    if cost is not None:
        before = (await conn.execute(select(runs.c.replaced_judge_cost_usd).where(runs.c.id == run_id))).scalar()
        await conn.execute(update(runs).where(runs.c.id == run_id).values(
            replaced_judge_cost_usd=(before or Decimal(0)) + cost))
    await conn.execute(delete(judgments).where(chosen))

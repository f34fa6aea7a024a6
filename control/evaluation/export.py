"""``GET runs/{runId}/export``: every item of a run, one record per dataset row and target, streamed.

Read from the database in pages of ``PAGE`` items (keyset order ``idx, target``), each page encoded and sent
before the next is read, so an export of a million items holds one page in memory. CSV has a header; its
``input`` is the prompt, or the messages as JSON; one column per metric of the run. JSON is one array of
objects with the same fields (``scores`` as an object), written a page at a time, and three more: the
perplexity call's ``perplexityRequestId`` and ``perplexityCostUsd``, and ``judgeCostUsd``, what the judge calls
recorded on the record's row and target cost (pointwise: those judging this output; pairwise: both orders of
the row, on target 0's record), one grouped query per page.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal
from typing import Any

import msgspec
from sqlalchemy import and_, func, or_, select, type_coerce

from adapters.store import Store, UsdAmount
from control.evaluation.tables import items, judgments

__all__ = ["PAGE", "export_csv", "export_json"]

PAGE = 500
_FIELDS = ("index", "target", "route", "input", "reference", "output", "error", "latencyS", "promptTokens",
           "completionTokens", "costUsd", "requestId")


async def _pages(store: Store, run_id: str) -> AsyncIterator[Sequence[Any]]:
    after: tuple[int, int] = (-1, -1)
    while True:
        idx, target = after
        async with store.read() as conn:
            rows = (await conn.execute(select(items).where(
                items.c.run_id == run_id,
                or_(items.c.idx > idx, and_(items.c.idx == idx, items.c.target > target)))
                .order_by(items.c.idx, items.c.target).limit(PAGE))).all()
        if not rows:
            return
        yield rows
        after = (int(rows[-1].idx), int(rows[-1].target))


def _usd(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


async def _judge_costs(store: Store, run_id: str, rows: Sequence[Any]) -> dict[tuple[int, int], Decimal | None]:
    """What the judge calls on this page's rows cost, per (row, target)."""
    j = judgments.c
    async with store.read() as conn:
        found = await conn.execute(select(j.idx, j.target, type_coerce(func.sum(j.cost_usd), UsdAmount)).where(
            j.run_id == run_id, j.idx >= int(rows[0].idx), j.idx <= int(rows[-1].idx)).group_by(j.idx, j.target))
        return {(int(i), int(t)): cost for i, t, cost in found}


def _record(row: Any, routes: list[str]) -> dict[str, Any]:
    return {"index": int(row.idx), "target": int(row.target), "route": routes[int(row.target)], "input": row.input,
            "reference": row.reference, "output": row.output, "error": row.error, "latencyS": row.latency_s,
            "promptTokens": row.prompt_tokens, "completionTokens": row.completion_tokens,
            "costUsd": _usd(row.cost_usd), "requestId": row.request_id, "scores": dict(row.scores or {})}


# Per-item measurements that are columns of their own already (latencyS, …), not score columns.
_ITEM_FIELDS = frozenset({"latency_s", "prompt_tokens", "completion_tokens", "cost_usd"})


async def export_csv(store: Store, run_id: str, routes: list[str], metrics: list[str]) -> AsyncIterator[bytes]:
    metrics = [m for m in metrics if m not in _ITEM_FIELDS]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([*_FIELDS, *metrics])
    async for rows in _pages(store, run_id):
        for row in rows:
            rec = _record(row, routes)
            if not isinstance(rec["input"], str) and rec["input"] is not None:
                rec["input"] = msgspec.json.encode(rec["input"]).decode()
            writer.writerow([*("" if rec[f] is None else rec[f] for f in _FIELDS),
                             *("" if rec["scores"].get(m) is None else rec["scores"][m] for m in metrics)])
        yield out.getvalue().encode()
        out.seek(0)
        out.truncate()
    if out.tell():
        yield out.getvalue().encode()


async def export_json(store: Store, run_id: str, routes: list[str]) -> AsyncIterator[bytes]:
    yield b"["
    first = True
    async for rows in _pages(store, run_id):
        judged = await _judge_costs(store, run_id, rows)
        chunk = b",".join(msgspec.json.encode({
            **_record(r, routes), "perplexityRequestId": r.perplexity_request_id,
            "perplexityCostUsd": _usd(r.perplexity_cost_usd),
            "judgeCostUsd": _usd(judged.get((int(r.idx), int(r.target))))}) for r in rows)
        yield chunk if first else b"," + chunk
        first = False
    yield b"]"

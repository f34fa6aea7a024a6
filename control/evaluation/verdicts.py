"""Pairwise verdicts per dataset row from the stored judgments of both orders (judge summary and review use it)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from policies.evaluation.judge import Outcome, combine_orders, parse_pairwise

__all__ = ["PREFERENCE", "pair_outcomes"]

# An outcome as a preference on the ordinal scale -1 < 0 < 1: target 1 better, no preference, target 0 better.
# The judge's orders disagreeing (a flip) is no preference: it is what position bias looks like.
PREFERENCE: dict[str, float] = {"x": 1.0, "y": -1.0, "tie": 0.0, "inconsistent": 0.0}


def pair_outcomes(rows: list[Any]) -> tuple[dict[int, Outcome], int]:
    """``({row: outcome}, rows missing an answer)`` from pairwise judgment rows (``idx``, ``order``, ``raw``):
    both orders re-parsed from the raw answers and combined (``combine_orders``)."""
    orders: dict[int, dict[int, Any]] = defaultdict(dict)
    for r in rows:
        orders[r.idx][r.order] = r
    outcomes: dict[int, Outcome] = {}
    failed = 0
    for idx, pair in sorted(orders.items()):
        if len(pair) < 2 or any(r.raw is None for r in pair.values()):
            failed += 1
            continue
        outcomes[idx] = combine_orders(parse_pairwise(pair[0].raw), parse_pairwise(pair[1].raw))
    return outcomes, failed

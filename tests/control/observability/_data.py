"""Known rollup rows for the report tests, and helpers to write them.

Four hours inside the window [2026-11-30, 2026-12-02), one before it and one at its (exclusive) end.
``vllm`` is GPU-hour priced at $1/hour (2 GPUs in the test settings): at 00:00 on Dec 1 it served
teams a, b and c 100 tokens each, so each owes a third of $1 (the odd nano-dollar goes to a, the
smallest key); at 05:00 it served only failed requests of team a (no tokens), so a owes that hour.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import insert

from adapters.dataplane import ROLLUP_DIMENSIONS, usage_rollups
from adapters.store import Store

H_BEFORE = datetime(2026, 11, 29, 23, tzinfo=UTC)
H0 = datetime(2026, 11, 30, 22, tzinfo=UTC)
H1 = datetime(2026, 11, 30, 23, tzinfo=UTC)
H2 = datetime(2026, 12, 1, 0, tzinfo=UTC)
H3 = datetime(2026, 12, 1, 5, tzinfo=UTC)
H_END = datetime(2026, 12, 2, 0, tzinfo=UTC)
WINDOW = "start=2026-11-30&end=2026-12-02"

_OPENAI = {"route": "chat", "model": "gpt-4o", "provider": "openai", "endpoint": "chat"}
_VLLM = {"route": "local", "model": "llama", "provider": "vllm", "gpu_usd_per_hour": Decimal("1.00")}

ROWS: list[dict[str, Any]] = [
    {"hour": H0, "team": "a", "key_id": "k1", **_OPENAI, "requests": 10, "errors": 1, "estimated_requests": 2,
     "prompt_tokens": 1000, "completion_tokens": 500, "cached_read_tokens": 200, "cache_write_tokens": 50,
     "reasoning_tokens": 30, "cost_usd": Decimal("0.012345678")},
    {"hour": H0, "team": "b", "key_id": "k2", **_OPENAI, "variant": "b", "requests": 5, "prompt_tokens": 100,
     "completion_tokens": 50, "cost_usd": Decimal("0.001")},
    {"hour": H1, "team": "a", "key_id": "k1", "route": "embed", "model": "text-emb", "provider": "openai",
     "endpoint": "embeddings", "requests": 3, "unpriced_requests": 1, "prompt_tokens": 300,
     "cost_usd": Decimal("0.0003")},
    {"hour": H2, **_OPENAI, "model": "mystery", "provider": "ollama", "requests": 4, "unpriced_requests": 4,
     "prompt_tokens": 40, "completion_tokens": 40},
    {"hour": H2, "team": "a", "key_id": "k1", **_VLLM, "endpoint": "chat", "requests": 1, "prompt_tokens": 60,
     "completion_tokens": 40},
    {"hour": H2, "team": "b", "key_id": "k2", **_VLLM, "variant": "b", "endpoint": "completions", "requests": 1,
     "prompt_tokens": 70, "completion_tokens": 30},
    {"hour": H2, "team": "c", "key_id": "k3", **_VLLM, "endpoint": "responses", "requests": 1,
     "prompt_tokens": 50, "completion_tokens": 50},
    {"hour": H3, "team": "a", "key_id": "k1", **_VLLM, "endpoint": "chat", "requests": 2, "errors": 2},
]
OUTSIDE: list[dict[str, Any]] = [
    {"hour": H_BEFORE, "team": "a", "key_id": "k1", **_OPENAI, "requests": 1000, "prompt_tokens": 9,
     "cost_usd": Decimal("50")},
    {"hour": H_END, "team": "a", "key_id": "k1", **_VLLM, "endpoint": "chat", "requests": 1000,
     "prompt_tokens": 9},
]
SUMMED = ("requests", "errors", "unpriced_requests", "estimated_requests", "prompt_tokens", "completion_tokens",
          "cached_read_tokens", "cache_write_tokens", "reasoning_tokens")


def rollup(row: dict[str, Any]) -> dict[str, Any]:
    """A full rollup row: absent dimensions '' and absent sums 0, as the writer stores them."""
    return {**{dim: "" for dim in ROLLUP_DIMENSIONS}, **{name: 0 for name in SUMMED},
            "cost_usd": Decimal(0), "gpu_usd_per_hour": Decimal(0), "latency_s_sum": 0.0, **row}


async def insert_rollups(store: Store, rows: list[dict[str, Any]]) -> None:
    async with store.begin() as conn:
        await conn.execute(insert(usage_rollups), [rollup(r) for r in rows])


def sums(rows: list[dict[str, Any]]) -> dict[str, int]:
    """The plain sums (no cost) over ``rows``: the oracle for every grouping's counters."""
    full = [rollup(r) for r in rows]
    out = {name: sum(r[name] for r in full) for name in SUMMED}
    out["total_tokens"] = out["prompt_tokens"] + out["completion_tokens"]
    return out

"""Simulated experiment traffic for the results and supervisor tests: usage rows written the way the
gateway's usage writer writes them (``adapters.usage_store.write_usage``) and feedback rows as
``POST /v1/feedback`` stores them."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from sqlalchemy import insert

from adapters.adminapi.host import load_control_plane
from adapters.adminapi.settings import ControlCfg
from adapters.dataplane import feedback
from adapters.store import SqlStore, migrate, open_store, utcnow
from adapters.usage import new_record_id
from adapters.usage_store import UsageRow, write_usage

__all__ = ["Traffic", "plain_store", "usage_row"]


def usage_row(experiment: str, variant: str, *, status: int = 200, latency_s: float = 0.5,
              ttft_s: float | None = None, stream: bool = False, prompt_tokens: int = 10, completion_tokens: int = 5,
              cost_usd: Decimal | None = None, fallback: bool = False, ts: float | None = None,
              request_id: str | None = None, episode_id: str | None = None) -> UsageRow:
    rid = new_record_id()
    return UsageRow(
        record_id=rid, request_id=request_id or f"req-{rid}", ts=time.time() if ts is None else ts, endpoint="chat",
        route="support", model="m", provider="p", variant=variant, experiment=experiment, status=status,
        latency_s=latency_s, ttft_s=ttft_s, stream=stream, usage_source="upstream", prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cost_nano_usd=None if cost_usd is None else int(cost_usd * 1_000_000_000),
        price_source=None if cost_usd is None else "config", fallback=fallback, episode_id=episode_id)


class Traffic:
    """Writes rows in batches through ``write_usage``; ``rng`` draws the simulated metrics."""

    def __init__(self, store: SqlStore, experiment: str, seed: int = 1) -> None:
        self.store, self.experiment = store, experiment
        self.rng = np.random.default_rng(seed)

    async def records(self, variant: str, n: int, *, error_rate: float = 0.0, latency_s: float = 0.5,
                      latency_sd: float = 0.05, cost_usd: float | None = None, **kw: Any) -> list[UsageRow]:
        statuses = np.where(self.rng.random(n) < error_rate, 500, 200)
        latencies = np.maximum(0.001, self.rng.normal(latency_s, latency_sd, n))
        rows = [usage_row(self.experiment, variant, status=int(s), latency_s=float(lat),
                          cost_usd=None if cost_usd is None else Decimal(f"{cost_usd:.9f}"), **kw)
                for s, lat in zip(statuses, latencies, strict=True)]
        await self.write(rows)
        return rows

    async def write(self, rows: Sequence[UsageRow]) -> None:
        for i in range(0, len(rows), 2000):
            await write_usage(self.store, rows[i:i + 2000])

    async def feedback(self, variant: str, *, scores: Sequence[float] = (), labels: Sequence[bool] = (),
                       request_ids: Sequence[str | None] = (), episode_ids: Sequence[str | None] = ()) -> None:
        rows: list[dict[str, Any]] = []
        n = max(len(scores), len(labels))
        for i in range(n):
            label = labels[i] if i < len(labels) else None
            rows.append({
                "feedback_id": "fb_" + secrets.token_hex(12), "ts": utcnow(), "experiment": self.experiment,
                "variant": variant,
                "request_id": request_ids[i] if i < len(request_ids) else f"fb-req-{new_record_id()}",
                "episode_id": episode_ids[i] if i < len(episode_ids) else None,
                "score": float(scores[i]) if i < len(scores) else None,
                "label": None if label is None else str(label).lower(), "positive": label})
        async with self.store.begin() as conn:
            await conn.execute(insert(feedback), rows)


async def plain_store(database_url: str) -> AsyncIterator[SqlStore]:
    """A store with the core and data-plane schema (no modules): what the loader reads."""
    s = open_store(database_url, feed_mode="local")
    await migrate(s, load_control_plane(ControlCfg(), modules=[], environ={}).migration_plan())
    try:
        yield s
    finally:
        await s.aclose()


store_fixture = pytest.fixture(name="store")(plain_store)


# -- the prompts module with the results endpoint and the supervisor ------------------------------

API = "/llm-ops/v1/prompts/experiments"


def analysis_off() -> dict[str, Any]:
    """Module settings that keep the background supervisor out of a test (which ticks by hand), once the
    module's settings carry ``analysis``; before that it runs every 10 s, and the tests assert on state
    (which concurrent supervisors leave the same), not on who wrote it."""
    from control.prompts.settings import PromptsSettings

    return {"analysis": {"supervisor": False}} if "analysis" in PromptsSettings.__struct_fields__ else {}


def experiment_doc(exp_id: str = "exp1", **extra: Any) -> dict[str, Any]:
    return {"id": exp_id, "route": f"route-{exp_id}",
            "variants": [{"name": "a", "params": {"temperature": 0.1}}, {"name": "b", "params": {"temperature": 0.9}}],
            **extra}

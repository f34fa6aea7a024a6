"""Shared by the judging, review, compare and gate tests: finished runs seeded straight into the tables.

Generation is the worker's (its own tests); these tests start from what it leaves behind: a run row with its
targets, dataset version, aggregates and items with per-item scores, so every number a test asserts on is
chosen by the test.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import insert

from adapters.adminapi.testing import AdminTestApp
from adapters.store import Store, utcnow
from control.evaluation.protocol import Aggregate
from control.evaluation.tables import items, runs

API = "/llm-ops/v1/evaluation"

_seq = iter(range(1, 1_000_000))


def agg(value: float | None, n: int = 10, *, available: bool = True) -> dict[str, Any]:
    import msgspec

    return msgspec.to_builtins(Aggregate(value=value, ci_low=None if value is None else value - 1,
                                         ci_high=None if value is None else value + 1, n=n, available=available))


async def seed_run(store: Store, *, run_id: str | None = None, targets: Sequence[Mapping[str, str]] = (),
                   dataset: tuple[str, int] = ("ds_a", 1), status: str = "succeeded",
                   metrics: Mapping[str, Mapping[str, Any]] | None = None,
                   scores: Mapping[int, Mapping[int, Mapping[str, float | None]]] | None = None,
                   outputs: Mapping[int, Mapping[int, str | None]] | None = None,
                   inputs: Mapping[int, Any] | None = None, references: Mapping[int, str] | None = None,
                   judge: Mapping[str, Any] | None = None, review: Mapping[str, Any] | None = None,
                   run_type: str = "automated", concurrency: int = 4, age_s: float = 0.0) -> str:
    """A run row plus items. ``scores``/``outputs``: ``{target: {row: …}}``; ``targets`` default one route
    ``r``; ``age_s`` moves its finish time into the past (the gate picks the latest)."""
    n = next(_seq)
    run_id = run_id or f"run_t{n:05d}"
    targets = list(targets) or [{"kind": "route", "id": "r", "route": "r"}]
    now = utcnow() - timedelta(seconds=age_s)
    rows = sorted({(t, i) for src in (scores or {}, outputs or {}) for t, per in src.items() for i in per})
    async with store.begin() as conn:
        await conn.execute(insert(runs).values(
            id=run_id, name=f"run {n}", type=run_type, status=status, targets=[dict(t) for t in targets],
            model_ids=[], dataset_id=dataset[0], dataset_version=dataset[1], dataset_name=dataset[0],
            mapping={"input": "q", "reference": "a"}, metrics=[], params={}, judge=dict(judge) if judge else None,
            review=dict(review) if review else None, concurrency=concurrency, row_limit=None, done=len(rows),
            failed=0, total=len(rows), metrics_summary={k: dict(v) for k, v in (metrics or {}).items()},
            judge_summary=None, human_summary=None, judge_status=None, error=None, cost_usd=None, trigger=None,
            created_at=now, created_by="test", started_at=now, finished_at=now if status == "succeeded" else None,
            updated_at=now))
        if rows:
            await conn.execute(insert(items), [{
                "run_id": run_id, "target": t, "idx": i,
                "input": (inputs or {}).get(i, f"question {i}"), "reference": (references or {}).get(i),
                "context": None,
                "output": (outputs or {}).get(t, {}).get(i, f"answer {t}/{i}"),
                "error": None if (outputs or {}).get(t, {}).get(i, "x") is not None else "failed",
                "scores": dict((scores or {}).get(t, {}).get(i, {})), "created_at": now} for t, i in rows])
    return run_id


async def key(app: AdminTestApp, role: str, name: str) -> tuple[dict[str, str], str]:
    """A new admin key: ``(headers, key id)``."""
    resp = await app.client.post("/llm-ops/v1/admin/keys", json={"name": name, "role": role})
    assert resp.status_code == 201, resp.text
    body = resp.json()["data"]
    return {"authorization": f"Bearer {body['key']}"}, body["id"]


def fail(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["status"] == "fail" and body["message"], body
    return body  # type: ignore[no-any-return]


def data(resp: Any, status: int = 200) -> Any:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["status"] == "success", body
    return body["data"]


class JModule:
    """Judging, review, compare and gate alone over the evaluation tables (no worker, no gateway): the REST
    and the ``PROMOTION_GATE`` these tests drive. Named ``evaluation``: it takes that module's place."""

    name = "evaluation"

    def __init__(self) -> None:
        self.ctx: Any = None  # the module's context while it runs

    def routes(self) -> list[Any]:
        from control.evaluation import compare_routes, gate_routes, review_routes

        return [*compare_routes.CONTROLLERS, *gate_routes.CONTROLLERS, *review_routes.CONTROLLERS]

    def migrations(self) -> Any:
        from control.evaluation.tables import EVALUATION_MIGRATIONS

        return EVALUATION_MIGRATIONS

    def lifespan(self, ctx: Any) -> Any:
        from adapters.adminapi import no_lifespan
        from adapters.adminapi.seams import PROMOTION_GATE
        from control.evaluation.gate import GateService

        self.ctx = ctx
        ctx.provide(PROMOTION_GATE, GateService(ctx))
        return no_lifespan(ctx)

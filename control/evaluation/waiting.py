"""Waiting runs: automatic runs created before any route served their model (``RunService.start_for_model``).

Every pass of the worker (``Worker._loop``) looks at them before it claims runs: one query for the waiting runs
(id, creation time and the small ``targets`` list), the published routes once, then each run's model targets
resolved again in that read transaction (``targets.resolve_served``). Only a run with news is written: one whose
model is served now becomes ``queued`` with its targets' routes (a ``route_found`` event per target), one that
waited longer than ``route_wait_s`` (or whose model left the catalog) becomes ``failed``. Both writes are a
conditional ``UPDATE … WHERE status = 'waiting'``: two replicas looking at the same moment flip a run once, and a
run cancelled meanwhile stays cancelled. A pass with nothing waiting costs the one query.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.adminapi import ModuleContext
from adapters.adminapi.services import MissingService
from adapters.store import utcnow
from control.evaluation.protocol import Target
from control.evaluation.tables import events, runs
from control.evaluation.targets import Resolved, TargetError, published_routes, resolve_served

__all__ = ["release_waiting"]


async def release_waiting(ctx: ModuleContext, *, yaml_routes: list[str] | None, wait_s: float, actor: str) -> int:
    """One look at the waiting runs; how many became ``queued`` (the worker claims them next)."""
    async with ctx.store.read() as conn:
        waiting = (await conn.execute(select(runs.c.id, runs.c.created_at, runs.c.targets)
                                      .where(runs.c.status == "waiting").order_by(runs.c.created_at))).all()
        if not waiting:
            return 0
        published = await published_routes(conn)
        now = utcnow()
        found: list[tuple[str, list[dict[str, Any]], list[Resolved]]] = []
        failed: list[tuple[str, str]] = []
        for run_id, created_at, targets in waiting:
            if created_at + timedelta(seconds=wait_s) <= now:
                failed.append((run_id, _too_long(targets, wait_s)))
                continue
            try:
                served = await _served(ctx, conn, list(targets), yaml_routes, published)
            except TargetError as err:  # e.g. the model was deleted from the catalog: it will never be served
                failed.append((run_id, f"the run cannot start: {err.error.message}"))
                continue
            except MissingService:  # the catalog or serving module is not running (yet): look again later
                continue
            if served is not None:
                found.append((run_id, *served))
    for run_id, error in failed:
        await _fail(ctx, run_id, error, actor)
    queued = 0
    for run_id, targets, routes in found:
        queued += await _queue(ctx, run_id, targets, routes, actor)
    return queued


async def _served(ctx: ModuleContext, conn: AsyncConnection, targets: list[dict[str, Any]],
                  yaml_routes: list[str] | None, published: set[str]
                  ) -> tuple[list[dict[str, Any]], list[Resolved]] | None:
    """The run's targets with every missing route filled in and the targets that got one; ``None`` while any
    is still served by no route."""
    filled: list[dict[str, Any]] = []
    new: list[Resolved] = []
    for i, target in enumerate(targets):
        if target.get("route") is not None:
            filled.append(target)
            continue
        resolved = await resolve_served(ctx, conn, Target(kind=target["kind"], id=target["id"]), f"targets[{i}].id",
                                        yaml_routes, published)
        if resolved is None:
            return None
        filled.append(resolved.wire())
        new.append(resolved)
    return filled, new


async def _queue(ctx: ModuleContext, run_id: str, targets: list[dict[str, Any]], found: list[Resolved],
                 actor: str) -> int:
    now = utcnow()
    async with ctx.store.begin() as conn:
        changed = await conn.execute(update(runs).where(runs.c.id == run_id, runs.c.status == "waiting").values(
            status="queued", targets=targets, updated_at=now))
        if not changed.rowcount:  # another replica was first, or the run was cancelled meanwhile
            return 0
        await conn.execute(insert(events), [
            {"run_id": run_id, "at": now, "event": "route_found", "actor": actor,
             "detail": {"modelId": r.model_id, "route": r.route}} for r in found])
    return 1


async def _fail(ctx: ModuleContext, run_id: str, error: str, actor: str) -> None:
    now = utcnow()
    async with ctx.store.begin() as conn:
        changed = await conn.execute(update(runs).where(runs.c.id == run_id, runs.c.status == "waiting").values(
            status="failed", error=error, finished_at=now, updated_at=now))
        if changed.rowcount:
            await conn.execute(insert(events).values(run_id=run_id, at=now, event="finished", actor=actor,
                                                     detail={"status": "failed", "error": error}))


def _too_long(targets: list[dict[str, Any]], wait_s: float) -> str:
    models = ", ".join(repr(t["id"]) for t in targets if t.get("route") is None) or "the run's model"
    return (f"no route served model {models} within {_duration(wait_s)} of the run's creation (route_wait_s): "
            f"deploy it (serving) and start the evaluation again")


def _duration(seconds: float) -> str:
    for unit, size in (("day", 86_400), ("hour", 3_600), ("minute", 60)):
        if seconds >= size:
            n = seconds / size
            return f"{n:g} {unit}{'' if n == 1 else 's'}"
    return f"{seconds:g} s"

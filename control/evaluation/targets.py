"""Which gateway route answers for a run's target (and for a judge), resolved once, when the run is created.

``route``: the name as given, if the gateway serves it: a YAML route (``gateway_routes``, filled by the
gateway) or a route the control plane published (the ``routes`` snapshot: approved external catalog models;
the ``endpoints`` snapshot: serving endpoints). ``endpoint``: its route, through serving's ``ENDPOINTS``.
``model``: the route of an endpoint serving it (a ready one first, oldest first), else, for an external
model, the route the catalog publishes under the model's name. Each refusal is a ``FieldError`` on the
target's own path, so the 422 names it.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.adminapi import FieldError, ModuleContext, NotFound
from adapters.adminapi.seams import ENDPOINTS, MODEL_CATALOG
from adapters.snapshots import EndpointsSnapshot, RoutesSnapshot, SnapshotVersionError
from adapters.snapshots import decode as decode_snapshot
from adapters.store import store_snapshots
from control.evaluation.protocol import Target

__all__ = ["Resolved", "TargetError", "published_routes", "resolve"]


@dataclass(frozen=True)
class Resolved:
    kind: str
    id: str
    route: str
    model_id: str | None

    def wire(self) -> dict[str, str]:
        return {"kind": self.kind, "id": self.id, "route": self.route}


class TargetError(Exception):
    def __init__(self, error: FieldError) -> None:
        super().__init__(error.message)
        self.error = error


async def published_routes(conn: AsyncConnection) -> set[str]:
    """Route names in the published ``routes`` and ``endpoints`` snapshots (unreadable ones: skipped, as the
    gateway skips them)."""
    names: set[str] = set()
    rows = (await conn.execute(select(store_snapshots.c.kind, store_snapshots.c.payload).where(
        store_snapshots.c.kind.in_(("routes", "endpoints"))))).all()
    for kind, payload in rows:
        if not payload:
            continue
        try:
            snap = decode_snapshot(bytes(payload), kind)
        except (SnapshotVersionError, msgspec.DecodeError):
            continue
        if isinstance(snap, RoutesSnapshot | EndpointsSnapshot):
            names.update(r.name for r in snap.routes)
    return names


async def resolve(ctx: ModuleContext, conn: AsyncConnection, target: Target, field: str,
                  yaml_routes: list[str] | None, published: set[str]) -> Resolved:
    """``target`` as a route; raises ``TargetError`` naming ``field`` (e.g. ``targets[1].id``)."""
    if target.kind == "route":
        known = published | set(yaml_routes or ())
        if target.id not in known and yaml_routes is not None:
            raise TargetError(FieldError(field=field, message=f"the gateway has no route {target.id!r}"))
        return Resolved("route", target.id, target.id, None)
    if ENDPOINTS not in ctx.services and target.kind == "endpoint":
        raise TargetError(FieldError(field=field, message="endpoints need the serving module, which is not "
                                                          "enabled"))
    if target.kind == "endpoint":
        found = await ctx.services[ENDPOINTS].find(conn, endpoint_id=target.id)
        if not found:
            raise TargetError(FieldError(field=field, message=f"no endpoint {target.id!r}"))
        return Resolved("endpoint", target.id, found[0].route, found[0].model_id)
    try:
        model = await ctx.services[MODEL_CATALOG].get(conn, target.id)
    except NotFound:
        raise TargetError(FieldError(field=field, message=f"no model {target.id!r} in the catalog")) from None
    if ENDPOINTS in ctx.services:
        serving = await ctx.services[ENDPOINTS].find(conn, model_id=target.id)
        serving.sort(key=lambda e: e.status != "ready")  # stable: ready ones first, each group oldest first
        if serving:
            return Resolved("model", target.id, serving[0].route, target.id)
    if model.type == "external" and model.name in published:
        return Resolved("model", target.id, model.name, target.id)
    why = ("an external model is routed once approved" if model.type == "external"
           else "deploy it as a serving endpoint first")
    raise TargetError(FieldError(field=field, message=f"model {target.id!r} is served by no route ({why})"))

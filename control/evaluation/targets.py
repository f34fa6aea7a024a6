"""Which gateway route answers for a run's target (and for a judge), resolved once, when the run is created.

``route``: the name as given, if the gateway serves it: a YAML route (``gateway_routes``, filled by the
gateway) or a route the control plane published (the ``routes`` snapshot: approved external catalog models;
the ``endpoints`` snapshot: serving endpoints). ``endpoint``: its route, through serving's ``ENDPOINTS``.
``model``: the route of an endpoint serving it (a ready one first, oldest first), else, for an external
model, the route the catalog publishes under the model's name. Each refusal is a ``FieldError`` on the
target's own path, so the 422 names it.

An automatic run (``EVALUATIONS``) may wait for its model instead (``resolve_served``): a model counts as served
once the route resolved for it is one the gateway has, i.e. is in a published snapshot (an endpoint still
deploying is not there yet: serving publishes its route once a slot is healthy).
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

__all__ = ["NotServed", "Resolved", "TargetError", "Unserved", "published_routes", "resolve", "resolve_served"]


@dataclass(frozen=True)
class Resolved:
    kind: str
    id: str
    route: str
    model_id: str | None

    def wire(self) -> dict[str, str | None]:
        return {"kind": self.kind, "id": self.id, "route": self.route}


@dataclass(frozen=True)
class Unserved:
    """A waiting run's model target: in the catalog, served by no route yet (stored with route ``None``)."""

    id: str
    kind: str = "model"
    route: None = None

    @property
    def model_id(self) -> str:
        return self.id

    def wire(self) -> dict[str, str | None]:
        return {"kind": self.kind, "id": self.id, "route": None}


class TargetError(Exception):
    def __init__(self, error: FieldError) -> None:
        super().__init__(error.message)
        self.error = error


class NotServed(TargetError):
    """The model is in the catalog, but no route serves it (yet)."""


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
    raise NotServed(FieldError(field=field, message=f"model {target.id!r} is served by no route ({why})"))


async def resolve_served(ctx: ModuleContext, conn: AsyncConnection, target: Target, field: str,
                         yaml_routes: list[str] | None, published: set[str]) -> Resolved | None:
    """``resolve`` for a run that may wait for its model: ``None`` while the model is served by no route the
    gateway has (none at all, or only an endpoint still deploying); other refusals raise as ``resolve``'s do."""
    try:
        found = await resolve(ctx, conn, target, field, yaml_routes, published)
    except NotServed:
        return None
    if target.kind == "model" and found.route not in published:
        return None
    return found

"""The serving module's write lock and the ``endpoints`` snapshot it publishes for the gateway.

Every serving write (REST handlers and the reconciler, on any replica) calls ``lock`` first in its
transaction: on PostgreSQL a transaction-scoped advisory lock, on SQLite the write transaction already is
one. So writes are serialised, and each one's ``publish_if_changed`` sees every earlier commit.

Content: for every endpoint not being deleted whose stable slot serves (``health.routable``), one provider
per routable slot, ``serving:<endpoint id>:stable`` / ``…:canary`` (kind ``openai``: vLLM's and the local
servers' API; an external model's own kind, URL and key reference), and one route named by the endpoint's
``route`` whose targets' weights are the split (``health.targets``) and whose target model is the slot's
served model name. ``queue_timeout_s`` is the endpoint's: a request finding no replica (scaled to zero, or
a ``Recreate`` rollout between pods) waits that long at the gateway. Published only when this content
differs from what is published, so an idle reconciler writes no snapshot.
"""

from __future__ import annotations

from typing import Any

import msgspec
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.adminapi import ModuleContext
from adapters.snapshots import (
    EndpointsSnapshot,
    ProviderSpec,
    RouteSpec,
    SnapshotPayload,
    SnapshotVersionError,
    TargetSpec,
)
from adapters.snapshots import decode as decode_snapshot
from adapters.store import store_snapshots
from control.serving.health import targets
from control.serving.tables import endpoints
from control.serving.views import slot_states

__all__ = ["lock", "provider_name", "publish_if_changed", "snapshot_content"]

_LOCK_ID = 0x6C6C6D6F70735F73  # "llmops_s": one advisory lock for every serving write
Content = tuple[list[ProviderSpec], list[RouteSpec]]


async def lock(conn: AsyncConnection) -> None:
    """Serialise this module's writes (call first in every ``store.begin()`` block that writes)."""
    if conn.dialect.name == "postgresql":
        await conn.execute(select(func.pg_advisory_xact_lock(_LOCK_ID)))


def provider_name(endpoint_id: str, slot: str) -> str:
    return f"serving:{endpoint_id}:{slot}"


def _endpoint_routes(row: Any) -> Content:
    routed = targets(slot_states(row), row.canary_percent)
    if not routed:
        return [], []
    source = f"endpoint:{row.id}"
    providers, specs = [], []
    for target in routed:
        name = provider_name(row.id, target.slot)
        external = target.state.details.get("provider") if row.runtime == "external" else None
        if isinstance(external, dict):
            providers.append(ProviderSpec(name=name, kind=external.get("kind", "openai"),
                                          base_urls=[str(target.state.base_url)],
                                          api_key_ref=external.get("apiKeyRef"), source=source))
        else:
            providers.append(ProviderSpec(name=name, kind="openai", base_urls=[str(target.state.base_url)],
                                          source=source))
        specs.append(TargetSpec(provider=name, model=target.state.served_model_name, weight=float(target.weight)))
    route = RouteSpec(name=row.route, targets=specs, source=source, queue_timeout_s=row.queue_timeout_s)
    return providers, [route]


async def snapshot_content(conn: AsyncConnection) -> Content:
    rows = (await conn.execute(select(endpoints).where(endpoints.c.status != "deleting")
                               .order_by(endpoints.c.route))).all()
    providers: list[ProviderSpec] = []
    routes: list[RouteSpec] = []
    for row in rows:
        p, r = _endpoint_routes(row)
        providers += p
        routes += r
    return providers, routes


async def _published(conn: AsyncConnection) -> Content | None:
    payload = (await conn.execute(select(store_snapshots.c.payload)
                                  .where(store_snapshots.c.kind == "endpoints"))).scalar_one_or_none()
    if not payload:
        return None
    try:
        found = decode_snapshot(bytes(payload), "endpoints")
    except (SnapshotVersionError, msgspec.DecodeError):  # newer or broken: replace it
        return None
    return (found.providers, found.routes) if isinstance(found, EndpointsSnapshot) else None


async def publish_if_changed(ctx: ModuleContext, conn: AsyncConnection) -> bool:
    """Publish the ``endpoints`` snapshot in the caller's transaction (after ``lock``) when its content
    differs from the published one, or none is published; returns whether it did."""
    providers, routes = await snapshot_content(conn)
    if await _published(conn) == (providers, routes):
        return False

    async def build(generation: int, at: Any) -> SnapshotPayload:
        return EndpointsSnapshot(generation=generation, published_at=at, providers=providers, routes=routes)

    await ctx.publish_snapshot(conn, "endpoints", build)
    return True

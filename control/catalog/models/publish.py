"""The catalog's ``snapshot.routes``: approved external models become gateway routes.

Which models are served: live (not deleted) ``external`` models whose status is
``approved`` or ``deprecated`` (a deprecated model still answers, so its callers have
time to move; ``retired`` and deleted ones are gone). Drafts and models under review
are not routed: nobody has approved them yet. Base and fine-tuned models have files,
not an endpoint; they reach the gateway once deployed (the deployment module's job).

Each served model is one provider, named ``catalog:<model id>`` (ids never contain
``/``), and one route named after the model, with a single target: the provider's
upstream ``model``. Provider kinds map to the gateway's: ``openai`` and ``vllm`` (an
OpenAI-compatible server) to ``openai``, ``ollama`` to ``ollama``. ``apiKeyRef`` is
passed as-is: the gateway resolves ``env:NAME`` and leaves out (and logs) a provider
whose reference it cannot resolve. An OpenAI ``organization`` is not carried.

``publish_routes`` runs inside the write transaction of every model change that can
change this set (``ModelService``), and once at start-up when no snapshot exists.
"""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.adminapi import ModuleContext
from adapters.snapshots import ProviderSpec, RouteSpec, RoutesSnapshot, TargetSpec
from adapters.store import store_snapshots
from control.catalog.models.protocol import Model
from control.catalog.tables import models

__all__ = ["SERVED_STATUSES", "publish_routes", "publish_routes_if_missing", "served", "to_route"]

SERVED_STATUSES = frozenset({"approved", "deprecated"})
_KINDS: dict[str, Literal["openai", "ollama"]] = {"openai": "openai", "vllm": "openai", "ollama": "ollama"}


def served(model: Model | Any) -> bool:
    """Whether ``model`` (a ``Model`` or a ``models`` row) is a route in the snapshot."""
    return (model.type == "external" and model.status in SERVED_STATUSES and model.provider is not None
            and getattr(model, "deleted_at", None) is None)


def to_route(row: Any) -> tuple[ProviderSpec, RouteSpec]:
    provider: dict[str, Any] = row.provider
    source = f"model:{row.id}"
    spec = ProviderSpec(name=f"catalog:{row.id}", kind=_KINDS[provider["kind"]], base_urls=[provider["baseUrl"]],
                        api_key_ref=provider.get("apiKeyRef"), source=source)
    route = RouteSpec(name=row.name, targets=[TargetSpec(provider=spec.name, model=provider["model"])], source=source)
    return spec, route


async def _routes_snapshot(conn: AsyncConnection, generation: int, at: datetime) -> RoutesSnapshot:
    rows = (await conn.execute(
        select(models.c.id, models.c.name, models.c.type, models.c.status, models.c.provider, models.c.deleted_at)
        .where(models.c.deleted_at.is_(None), models.c.type == "external",
               models.c.status.in_(sorted(SERVED_STATUSES)))
        .order_by(models.c.name))).all()
    pairs = [to_route(r) for r in rows if served(r)]
    return RoutesSnapshot(generation=generation, published_at=at,
                          providers=[p for p, _ in pairs], routes=[r for _, r in pairs])


async def publish_routes(ctx: ModuleContext, conn: AsyncConnection) -> None:
    """Publish ``snapshot.routes`` in the caller's write transaction."""
    await ctx.publish_snapshot(conn, "routes", partial(_routes_snapshot, conn))


async def publish_routes_if_missing(ctx: ModuleContext) -> None:
    """At start-up: a store whose models predate snapshots gets its first one."""
    async with ctx.store.begin() as conn:
        found = await conn.execute(select(store_snapshots.c.kind).where(store_snapshots.c.kind == "routes"))
        if found.one_or_none() is None:
            await publish_routes(ctx, conn)

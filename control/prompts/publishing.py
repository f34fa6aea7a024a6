"""The prompts module's write lock and the two snapshots it publishes for the gateway.

Every write of this module (admin API, YAML sync, supervisor) runs ``lock`` first in its transaction,
so they are serialised across processes and replicas: N gateways syncing the same YAML at once each
see the previous one's commit and find nothing to do, and two starts cannot both find their route free.
On PostgreSQL that is a transaction-scoped advisory lock; SQLite's write transactions (BEGIN IMMEDIATE)
already are one.

``templates``: every live template's latest version, plus every older version that a live experiment's
variant, a published route (``RouteSpec.template``) or a YAML route (``PromptsSettings.route_templates``)
pins as ``name@version``. ``experiments``: every experiment not deleted, with its runtime and source.
Both are built inside the write's transaction, after its changes, so a snapshot is never ahead of or
behind the rows it came from.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec
from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.adminapi import ModuleContext
from adapters.snapshots import (
    ExperimentSpec,
    ExperimentsSnapshot,
    RoutesSnapshot,
    SnapshotKind,
    SnapshotPayload,
    SnapshotVersionError,
    TemplateSpec,
    TemplatesSnapshot,
)
from adapters.snapshots import decode as decode_snapshot
from adapters.store import store_snapshots
from control.prompts.tables import experiments, template_versions, templates
from policies.prompts.documents import ExperimentDoc, ExperimentRuntime, TemplateDoc, parse_template_ref

__all__ = ["Publisher", "lock"]

_LOCK_ID = 0x6C6C6D6F70735F70  # "llmops_p": one advisory lock for every prompts write (fits a signed bigint)


async def lock(conn: AsyncConnection) -> None:
    """Serialise this module's writes (call first in every ``store.begin()`` block that writes)."""
    if conn.dialect.name == "postgresql":
        await conn.execute(select(func.pg_advisory_xact_lock(_LOCK_ID)))


def pinned_versions(refs: Iterable[str | None]) -> set[tuple[str, int]]:
    """``{(name, version)}`` for the refs that name a version (``support@3``)."""
    pins = set()
    for ref in refs:
        if ref:
            name, version = parse_template_ref(ref)
            if version is not None:
                pins.add((name, version))
    return pins


def live_experiment_rows(conn: AsyncConnection) -> Any:
    return conn.execute(select(experiments).where(experiments.c.deleted_at.is_(None)).order_by(experiments.c.id))


class Publisher:
    """Publishes the snapshots in the caller's transaction; ``route_templates`` follows the YAML's routes."""

    def __init__(self, ctx: ModuleContext) -> None:
        self._ctx = ctx
        self.route_templates: tuple[str, ...] = ()

    async def templates(self, conn: AsyncConnection) -> None:
        specs = await self._templates(conn)
        await self._ctx.publish_snapshot(conn, "templates", lambda generation, at: _ready(
            TemplatesSnapshot(generation=generation, published_at=at, templates=specs)))

    async def experiments(self, conn: AsyncConnection) -> None:
        specs = await self._experiments(conn)
        await self._ctx.publish_snapshot(conn, "experiments", lambda generation, at: _ready(
            ExperimentsSnapshot(generation=generation, published_at=at, experiments=specs)))

    async def both(self, conn: AsyncConnection) -> None:
        await self.templates(conn)
        await self.experiments(conn)

    async def if_changed(self, conn: AsyncConnection) -> list[str]:
        """Publish each kind whose content differs from what is published (none published: differs);
        returns the kinds published. Runs under ``lock``, so nobody publishes these kinds meanwhile."""
        published = dict((await conn.execute(select(store_snapshots.c.kind, store_snapshots.c.payload).where(
            store_snapshots.c.kind.in_(("templates", "experiments"))))).tuples().all())
        done = []
        if _content(published.get("templates"), "templates") != await self._templates(conn):
            await self.templates(conn)
            done.append("templates")
        if _content(published.get("experiments"), "experiments") != await self._experiments(conn):
            await self.experiments(conn)
            done.append("experiments")
        return done

    async def publish_if_missing(self) -> None:
        """At start-up: a store that never had these snapshots gets its first ones (empty ones included)."""
        async with self._ctx.store.begin() as conn:
            await lock(conn)
            found = set((await conn.execute(select(store_snapshots.c.kind).where(
                store_snapshots.c.kind.in_(("templates", "experiments"))))).scalars())
            if "templates" not in found:
                await self.templates(conn)
            if "experiments" not in found:
                await self.experiments(conn)

    @staticmethod
    async def _experiments(conn: AsyncConnection) -> list[ExperimentSpec]:
        return [ExperimentSpec(document=msgspec.convert(r.document, ExperimentDoc),
                               runtime=msgspec.convert(r.runtime, ExperimentRuntime), source=r.source)
                for r in (await live_experiment_rows(conn)).all()]

    async def _templates(self, conn: AsyncConnection) -> list[TemplateSpec]:
        latest = (await conn.execute(
            select(template_versions, templates.c.source.label("owner"))
            .join(templates, and_(templates.c.name == template_versions.c.name,
                                  templates.c.latest_version == template_versions.c.version))
            .where(templates.c.deleted_at.is_(None)).order_by(template_versions.c.name))).all()
        specs = [TemplateSpec(name=r.name, version=r.version, document=msgspec.convert(r.document, TemplateDoc),
                              latest=True, source=r.owner) for r in latest]
        have = {(s.name, s.version) for s in specs}
        wanted = await self._pins(conn) - have
        if wanted:
            names = sorted({name for name, _ in wanted})
            rows = (await conn.execute(select(template_versions).where(template_versions.c.name.in_(names))
                                       .order_by(template_versions.c.name, template_versions.c.version))).all()
            specs += [TemplateSpec(name=r.name, version=r.version, document=msgspec.convert(r.document, TemplateDoc),
                                   latest=False, source=r.source) for r in rows if (r.name, r.version) in wanted]
        return specs

    async def _pins(self, conn: AsyncConnection) -> set[tuple[str, int]]:
        refs: list[str | None] = list(self.route_templates)
        for row in (await live_experiment_rows(conn)).all():
            refs += [v.get("template") for v in row.document.get("variants", ())]
        payload = (await conn.execute(select(store_snapshots.c.payload)
                                      .where(store_snapshots.c.kind == "routes"))).scalar_one_or_none()
        if payload:
            try:
                routes = decode_snapshot(bytes(payload), "routes")
            except (SnapshotVersionError, msgspec.DecodeError):  # newer or broken: the gateway skips it too
                routes = None
            if isinstance(routes, RoutesSnapshot):
                refs += [r.template for r in routes.routes]
        return pinned_versions(refs)


async def _ready(payload: SnapshotPayload) -> SnapshotPayload:
    return payload


def _content(payload: bytes | None, kind: SnapshotKind) -> list[TemplateSpec] | list[ExperimentSpec] | None:
    """The specs of a published payload (``None``: none, or one this code cannot read)."""
    if not payload:
        return None
    try:
        found = decode_snapshot(bytes(payload), kind)
    except (SnapshotVersionError, msgspec.DecodeError):
        return None
    if isinstance(found, TemplatesSnapshot):
        return found.templates
    return found.experiments if isinstance(found, ExperimentsSnapshot) else None

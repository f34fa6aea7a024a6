"""Endpoints: create, read, list, revisions; the lifecycle operations live in ``lifecycle`` and ``deletion``.

Create binds a catalog model (read through ``MODEL_CATALOG`` with its row locked, so its status cannot
change under the check) to a route: revision 1 on the stable slot. An external model needs no runtime: its
endpoint routes straight to its provider and is ready at once. Every other endpoint is written as
``deploying`` with its revision (spec and rendered manifests) and the model reference, committed, and only
then handed to the runtime; the reconciler follows it to ``ready``.
"""

from __future__ import annotations

from typing import Any

import msgspec
from sqlalchemy import Select, func, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.adminapi import Actor, Conflict, Page, PageParams, SemanticError
from adapters.adminapi.seams import MODEL_REFS
from adapters.serving import DeploymentSpec
from adapters.store import DuplicateKey, new_id, utcnow
from control.serving import deletion, lifecycle
from control.serving.core import Core
from control.serving.protocol import (
    DeleteResult,
    Endpoint,
    EndpointCreate,
    Promote,
    Redeploy,
    Revision,
    Rollback,
    TrafficChange,
)
from control.serving.publishing import lock
from control.serving.records import external_errors, external_slot, revision_values
from control.serving.specs import (
    Choices,
    arg_errors,
    build_spec,
    external_provider,
    model_meta,
    render,
    replica_errors,
)
from control.serving.tables import endpoints, revisions
from control.serving.views import to_endpoint, to_revision

__all__ = ["EndpointService"]


class EndpointService(Core):
    async def create(self, actor: Actor, data: EndpointCreate) -> tuple[Endpoint, str]:
        endpoint_id, route, now, who = new_id("ep"), data.route or data.name, utcnow(), actor.principal.name
        try:
            async with self.store.begin() as conn:
                await lock(conn)
                await self._free(conn, data.name, route)
                model = await self.deployable_model(conn, data.model_id, data.environment)
                kind = "external" if model.type == "external" else self.runtime.name
                choices = self._choices(data, kind)
                if kind == "external":
                    external = {"provider": external_provider(model),
                                "served_model_name": external_provider(model)["model"]}
                    spec: DeploymentSpec | dict[str, Any] = external
                    manifests: list[dict[str, Any]] = []
                    slots = {"stable": msgspec.to_builtins(external_slot(1, external))}
                else:
                    spec = build_spec(self.settings, endpoint_id=endpoint_id, endpoint_name=data.name, route=route,
                                      revision=1, environment=data.environment, model=model, choices=choices)
                    manifests = render(self.runtime, spec, "stable")
                    slots = {}
                await conn.execute(insert(endpoints).values(
                    id=endpoint_id, name=data.name, route=route, environment=data.environment, model_id=model.id,
                    model=model_meta(model), runtime=kind,
                    image=spec.image if isinstance(spec, DeploymentSpec) else None, use_gpu=choices.use_gpu,
                    gpu_count=choices.gpu_count if choices.use_gpu else 0, min_replicas=choices.min_replicas,
                    max_replicas=choices.max_replicas, autoscaling=msgspec.to_builtins(choices.autoscaling),
                    vllm_args=list(choices.vllm_args),
                    queue_timeout_s=(data.queue_timeout_s if data.queue_timeout_s is not None
                                     else self.settings.queue_timeout_s),
                    current_revision=1, canary_revision=None, canary_percent=0, canary_started_at=None,
                    status="ready" if kind == "external" else "deploying", status_reason=None, slots=slots,
                    checked_at=now if kind == "external" else None, created_at=now, created_by=who,
                    updated_at=now, updated_by=who))
                await conn.execute(insert(revisions).values(revision_values(
                    endpoint_id, 1, "active", model, choices, spec, manifests, actor, "created")))
                await self.ctx.services[MODEL_REFS].add(conn, model.id, "endpoint", endpoint_id)
                created = await self.view(conn, endpoint_id)
                await self.ctx.audit.record(conn, actor, action="serving.endpoint.create", resource_type="endpoint",
                                            resource_id=endpoint_id, after=created)
                await self.finish(conn)
        except DuplicateKey as err:  # a concurrent create took the name or route between check and insert
            raise Conflict(f"An endpoint named {data.name!r} or routed as {route!r} already exists") from err
        if not isinstance(spec, DeploymentSpec):
            return created, "Endpoint created; it routes to the external model's provider"
        refused = await self.apply(spec, "stable", actor)
        async with self.store.read() as conn:
            created = await self.view(conn, endpoint_id)
        if refused:
            return created, f"Endpoint created, but the runtime did not take revision 1: {refused}"
        return created, "Endpoint created; deploying revision 1"

    def _choices(self, data: EndpointCreate, kind: str) -> Choices:
        if kind == "external":
            errors = external_errors(data)
            if errors:
                raise SemanticError(errors)
            return Choices(image=None, use_gpu=False, gpu_count=0, min_replicas=1, max_replicas=1,
                           autoscaling=data.autoscaling, vllm_args=[])
        errors = replica_errors(self.settings, kind, data.min_replicas, data.max_replicas) + arg_errors(data.vllm_args)
        if errors:
            raise SemanticError(errors)
        use_gpu = self.settings.default_use_gpu if data.use_gpu is None else data.use_gpu
        return Choices(image=data.serving_runtime_image or self.settings.image(use_gpu), use_gpu=use_gpu,
                       gpu_count=(data.gpu_count or self.settings.gpu_count) if use_gpu else 0,
                       min_replicas=data.min_replicas, max_replicas=data.max_replicas,
                       autoscaling=data.autoscaling, vllm_args=list(data.vllm_args))

    @staticmethod
    async def _free(conn: AsyncConnection, name: str, route: str) -> None:
        """409 naming what is taken (looked up first: a unique violation would abort PostgreSQL's transaction)."""
        taken = (await conn.execute(select(endpoints.c.id, endpoints.c.name, endpoints.c.route).where(
            or_(endpoints.c.name == name, endpoints.c.route == route)).limit(1))).one_or_none()
        if taken is None:
            return
        what = f"named {name!r}" if taken.name == name else f"routed as {route!r}"
        raise Conflict(f"Endpoint {taken.id} is already {what}", {"endpointId": taken.id})

    async def get(self, endpoint_id: str) -> Endpoint:
        return await self.get_view(endpoint_id)

    async def list(self, page: PageParams, *, environment: str | None = None, model_id: str | None = None,
                   status: str | None = None) -> Page[Endpoint]:
        query: Select[Any] = select(endpoints)
        if environment:
            query = query.where(endpoints.c.environment == environment)
        if model_id:
            query = query.where(endpoints.c.model_id == model_id)
        if status:
            query = query.where(endpoints.c.status == status)
        async with self.store.read() as conn:
            total = (await conn.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
            rows = (await conn.execute(query.order_by(endpoints.c.created_at.desc(), endpoints.c.id.desc())
                                       .limit(page.page_size).offset(page.offset))).all()
        return page.wrap([to_endpoint(r) for r in rows], total)

    async def revisions(self, endpoint_id: str, page: PageParams) -> Page[Revision]:
        async with self.store.read() as conn:
            await self.endpoint_row(conn, endpoint_id)
            total = (await conn.execute(select(func.count()).select_from(revisions)
                                        .where(revisions.c.endpoint_id == endpoint_id))).scalar_one()
            rows = (await conn.execute(select(revisions).where(revisions.c.endpoint_id == endpoint_id)
                                       .order_by(revisions.c.revision.desc())
                                       .limit(page.page_size).offset(page.offset))).all()
        return page.wrap([to_revision(r) for r in rows], total)

    # -- lifecycle (lifecycle.py, deletion.py) ------------------------------------------------------

    async def redeploy(self, actor: Actor, endpoint_id: str, data: Redeploy) -> tuple[Endpoint, str]:
        return await lifecycle.redeploy(self, actor, endpoint_id, data)

    async def traffic(self, actor: Actor, endpoint_id: str, data: TrafficChange) -> tuple[Endpoint, str]:
        return await lifecycle.traffic(self, actor, endpoint_id, data)

    async def rollback(self, actor: Actor, endpoint_id: str, data: Rollback) -> tuple[Endpoint, str]:
        return await lifecycle.rollback(self, actor, endpoint_id, data)

    async def promote(self, actor: Actor, endpoint_id: str, data: Promote) -> tuple[Endpoint, str]:
        return await lifecycle.promote(self, actor, endpoint_id, data)

    async def delete(self, actor: Actor, endpoint_id: str) -> DeleteResult:
        return await deletion.delete(self, actor, endpoint_id)

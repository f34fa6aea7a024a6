"""HTTP surface of the serving module: thin handlers over ``EndpointService`` (paths in ``protocol``).

Roles: reads need viewer; deploy, redeploy, traffic, rollback, promote and delete need operator (the
service asks admin for promotion to PROD and for a gate override).
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, delete, get, post
from litestar.di import Provide
from litestar.params import Parameter

from adapters.adminapi import (
    Actor,
    Conflict,
    Envelope,
    ModuleContext,
    NotFound,
    Page,
    PageParams,
    Role,
    SemanticError,
    ok,
    requires,
)
from control.serving.deletion import DeleteIncomplete
from control.serving.protocol import (
    DeleteResult,
    Endpoint,
    EndpointCreate,
    EndpointStatus,
    Environment,
    Promote,
    Redeploy,
    Revision,
    Rollback,
    TrafficChange,
)
from control.serving.service import EndpointService
from control.serving.services import SERVING

__all__ = ["EndpointsController"]

EndpointId = Annotated[str, Parameter(min_length=1, max_length=40, description="the endpoint's id (ep_…)")]
# Litestar types raises= as HTTPException classes; it reads only their status_code, which AdminError has.
_WRITES: list[Any] = [Conflict, NotFound, SemanticError]
_DELETES: list[Any] = [Conflict, DeleteIncomplete]


def _service(ctx: ModuleContext) -> EndpointService:
    return ctx.services[SERVING]


class EndpointsController(Controller):
    path = "/serving/endpoints"
    tags = ["serving"]
    dependencies = {"service": Provide(_service, sync_to_thread=False)}

    @post("/", status_code=201, opt=requires(Role.operator), raises=_WRITES,
          summary="Deploy a catalog model as an endpoint (revision 1)",
          description="STG and PROD take approved models only; external models route to their provider. "
                      "422: minReplicas above maxReplicas, reserved vLLM arguments, scale to zero the runtime "
                      "cannot do, runtime settings on an external model.")
    async def create_endpoint(self, data: EndpointCreate, service: EndpointService,
                              caller: Actor) -> Envelope[Endpoint]:
        endpoint, message = await service.create(caller, data)
        return ok(endpoint, message)

    @get("/", summary="List endpoints", description="Newest first; filters combine with AND.")
    async def list_endpoints(
        self,
        service: EndpointService,
        page: PageParams,
        environment: Environment | None = Parameter(query="environment", default=None),
        model_id: str | None = Parameter(query="modelId", default=None, max_length=40),
        status: EndpointStatus | None = Parameter(query="status", default=None),
    ) -> Envelope[Page[Endpoint]]:
        return ok(await service.list(page, environment=environment, model_id=model_id, status=status))

    @get("/{endpointId:str}", summary="Get an endpoint: route, health, replicas, model, revision, traffic split")
    async def get_endpoint(self, endpointId: EndpointId, service: EndpointService) -> Envelope[Endpoint]:
        return ok(await service.get(endpointId))

    @get("/{endpointId:str}/revisions", summary="An endpoint's revisions, newest first")
    async def list_revisions(self, endpointId: EndpointId, service: EndpointService,
                             page: PageParams) -> Envelope[Page[Revision]]:
        return ok(await service.revisions(endpointId, page))

    @post("/{endpointId:str}/redeploy", status_code=200, opt=requires(Role.operator), raises=_WRITES,
          summary="Deploy a new revision from the model's current version (a canary with canaryPercent)")
    async def redeploy(self, endpointId: EndpointId, data: Redeploy, service: EndpointService,
                       caller: Actor) -> Envelope[Endpoint]:
        endpoint, message = await service.redeploy(caller, endpointId, data)
        return ok(endpoint, message)

    @post("/{endpointId:str}/traffic", status_code=200, opt=requires(Role.operator), raises=_WRITES,
          summary="Set the canary's share: 100 promotes it to stable, 0 drops it")
    async def traffic(self, endpointId: EndpointId, data: TrafficChange, service: EndpointService,
                      caller: Actor) -> Envelope[Endpoint]:
        endpoint, message = await service.traffic(caller, endpointId, data)
        return ok(endpoint, message)

    @post("/{endpointId:str}/rollback", status_code=200, opt=requires(Role.operator), raises=_WRITES,
          summary="Drop a running canary, or go back to the previous (or a named) revision")
    async def rollback(self, endpointId: EndpointId, data: Rollback, service: EndpointService,
                       caller: Actor) -> Envelope[Endpoint]:
        endpoint, message = await service.rollback(caller, endpointId, data)
        return ok(endpoint, message)

    @post("/{endpointId:str}/promote", status_code=200, opt=requires(Role.operator), raises=_WRITES,
          summary="Promote DEV -> STG (operator) or STG -> PROD (admin), through the promotion gate",
          description="409 when the gate refuses (its verdict in data.gate); an admin may override with a reason.")
    async def promote(self, endpointId: EndpointId, data: Promote, service: EndpointService,
                      caller: Actor) -> Envelope[Endpoint]:
        endpoint, message = await service.promote(caller, endpointId, data)
        return ok(endpoint, message)

    @delete("/{endpointId:str}", status_code=200, opt=requires(Role.operator), raises=_DELETES,
            summary="Delete an endpoint: its route, every runtime resource, then the record",
            description="502 with the DeleteResult in data when some resources could not be deleted; retry.")
    async def delete_endpoint(self, endpointId: EndpointId, service: EndpointService,
                              caller: Actor) -> Envelope[DeleteResult]:
        return ok(await service.delete(caller, endpointId), "Endpoint deleted")

"""HTTP surface of promotion gates: ``PUT/GET/DELETE /evaluation/gates/{model|endpoint}/{id}``.

Reads need viewer; setting and removing a gate developer (as runs and judging do).
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, delete, get, put
from litestar.di import Provide
from litestar.params import Parameter

from adapters.adminapi import Actor, Envelope, ModuleContext, NotFound, Role, SemanticError, ok, requires
from control.evaluation.gate import GateService, SubjectKind
from control.evaluation.protocol import Gate, GateConfig

__all__ = ["CONTROLLERS", "GatesController"]

SubjectId = Annotated[str, Parameter(min_length=1, max_length=100, description="the model's or endpoint's id")]
_RAISES: list[Any] = [NotFound, SemanticError]
_NOT_FOUND: list[Any] = [NotFound]


def _service(ctx: ModuleContext) -> GateService:
    return GateService(ctx)


class GatesController(Controller):
    path = "/evaluation/gates/{subjectKind:str}/{subjectId:str}"
    tags = ["evaluation"]
    dependencies = {"gates": Provide(_service, sync_to_thread=False)}

    @put("/", opt=requires(Role.developer), raises=_RAISES,
         summary="Set the promotion gate of a model or endpoint (replaces the one it had)",
         description="Promotion to PROD then needs the latest succeeded run on the candidate to meet every "
                     "threshold and, with a baseline, to be non-inferior to the baseline's latest run on the "
                     "same dataset version. 404 unknown subject; 422 a threshold without bounds, a partial "
                     "non-inferiority setting, autoEvaluate on an endpoint.")
    async def put_gate(self, subjectKind: SubjectKind, subjectId: SubjectId, data: GateConfig, gates: GateService,
                       caller: Actor) -> Envelope[Gate]:
        return ok(await gates.put(caller, subjectKind, subjectId, data), "Gate set")

    @get("/", raises=_NOT_FOUND, summary="Get the promotion gate of a model or endpoint")
    async def get_gate(self, subjectKind: SubjectKind, subjectId: SubjectId, gates: GateService) -> Envelope[Gate]:
        return ok(await gates.get(subjectKind, subjectId))

    @delete("/", status_code=200, opt=requires(Role.developer), raises=_NOT_FOUND,
            summary="Remove the promotion gate of a model or endpoint")
    async def delete_gate(self, subjectKind: SubjectKind, subjectId: SubjectId, gates: GateService,
                          caller: Actor) -> Envelope[dict[str, bool]]:
        await gates.delete(caller, subjectKind, subjectId)
        return ok({"deleted": True}, "Gate removed")


CONTROLLERS = [GatesController]

"""HTTP surface of the model catalog: thin handlers over the model services.

Roles: reads need viewer; registering, editing and uploading need developer;
status changes, approvals and deletion need operator.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, delete, get, patch, post, put
from litestar.di import Provide
from litestar.params import Parameter

from adapters.adminapi import Actor, Envelope, ModuleContext, Page, PageParams, Role, VersionNumber, ok, requires
from control.catalog.models.files import ModelFileService
from control.catalog.models.history import ModelHistory
from control.catalog.models.protocol import (
    Approval,
    ApprovalCreate,
    Lineage,
    Model,
    ModelCreate,
    ModelFiles,
    ModelStatus,
    ModelType,
    ModelUpdate,
    ModelVersion,
    StatusChange,
    VersionDiff,
)
from control.catalog.models.service import ModelService
from control.catalog.services import MODEL_FILES, MODEL_HISTORY, MODELS
from control.catalog.uploads import MultipartUploadOperation, multipart_body

__all__ = ["ModelsController"]


def _models(ctx: ModuleContext) -> ModelService:
    return ctx.services[MODELS]


def _history(ctx: ModuleContext) -> ModelHistory:
    return ctx.services[MODEL_HISTORY]


def _files(ctx: ModuleContext) -> ModelFileService:
    return ctx.services[MODEL_FILES]


class ModelsController(Controller):
    path = "/catalog/models"
    tags = ["catalog"]
    dependencies = {
        "models": Provide(_models, sync_to_thread=False),
        "history": Provide(_history, sync_to_thread=False),
        "files": Provide(_files, sync_to_thread=False),
    }

    @get("/", summary="List models", description="Newest first; filters combine with AND.")
    async def list_models(
        self,
        models: ModelService,
        page: PageParams,
        type_: ModelType | None = Parameter(query="type", default=None),
        status: ModelStatus | None = Parameter(query="status", default=None),
        owner_team: str | None = Parameter(query="ownerTeam", default=None, max_length=64),
        name: str | None = Parameter(query="name", default=None, max_length=100,
                                     description="case-insensitive substring of the name"),
    ) -> Envelope[Page[Model]]:
        return ok(await models.list(page, type_=type_, status=status, owner_team=owner_team, name=name))

    @post("/", status_code=201, opt=requires(Role.developer), summary="Register a model (draft, version 1)")
    async def create_model(self, data: ModelCreate, models: ModelService, caller: Actor) -> Envelope[Model]:
        return ok(await models.create(caller, data), "Model created")

    @get("/{modelId:str}", summary="Get a model")
    async def get_model(self, modelId: str, models: ModelService) -> Envelope[Model]:
        return ok(await models.get(modelId))

    @put("/{modelId:str}", opt=requires(Role.developer), summary="Replace a model's definition (next version)")
    async def update_model(self, modelId: str, data: ModelUpdate, models: ModelService,
                           caller: Actor) -> Envelope[Model]:
        model, changed = await models.update(caller, modelId, data)
        return ok(model, f"Model updated to version {model.version}" if changed else "No changes")

    @patch("/{modelId:str}/status", opt=requires(Role.operator), summary="Move a model along its lifecycle")
    async def change_status(self, modelId: str, data: StatusChange, models: ModelService,
                            caller: Actor) -> Envelope[Model]:
        model = await models.change_status(caller, modelId, data)
        return ok(model, f"Model is now {model.status}")

    @delete("/{modelId:str}", status_code=200, summary="Delete a model (refused while anything depends on it)")
    async def delete_model(self, modelId: str, models: ModelService, caller: Actor) -> Envelope[Model]:
        return ok(await models.delete(caller, modelId), "Model deleted")

    @post("/{modelId:str}/approvals", status_code=201, opt=requires(Role.operator),
          summary="Record an approval decision by the caller")
    async def add_approval(self, modelId: str, data: ApprovalCreate, history: ModelHistory,
                           caller: Actor) -> Envelope[Approval]:
        return ok(await history.approve(caller, modelId, data), "Decision recorded")

    @get("/{modelId:str}/approvals", summary="List a model's approval decisions, newest first")
    async def list_approvals(self, modelId: str, history: ModelHistory, page: PageParams) -> Envelope[Page[Approval]]:
        return ok(await history.approvals(modelId, page))

    @get("/{modelId:str}/versions", summary="List a model's definition versions, newest first")
    async def list_versions(self, modelId: str, history: ModelHistory,
                            page: PageParams) -> Envelope[Page[ModelVersion]]:
        return ok(await history.versions(modelId, page))

    @get("/{modelId:str}/versions/{version:int}", summary="Get one version of a model's definition")
    async def get_version(self, modelId: str, version: VersionNumber, history: ModelHistory) -> Envelope[ModelVersion]:
        return ok(await history.version(modelId, version))

    @get("/{modelId:str}/versions/{fromVersion:int}/diff/{toVersion:int}", summary="Diff two versions")
    async def diff_versions(self, modelId: str, fromVersion: VersionNumber, toVersion: VersionNumber,
                            history: ModelHistory) -> Envelope[VersionDiff]:
        return ok(await history.diff(modelId, fromVersion, toVersion))

    @get("/{modelId:str}/lineage", summary="Parent chain, training datasets and children of a model")
    async def get_lineage(self, modelId: str, history: ModelHistory) -> Envelope[Lineage]:
        return ok(await history.lineage(modelId))

    @get("/{modelId:str}/files", summary="A model's files and whether its format's required files are present")
    async def list_files(self, modelId: str, files: ModelFileService) -> Envelope[ModelFiles]:
        return ok(await files.list(modelId))

    @post("/{modelId:str}/upload", status_code=201, opt=requires(Role.developer), request_max_body_size=None,
          operation_class=MultipartUploadOperation,
          summary="Upload model files (multipart/form-data, streamed)",
          description="One or more file parts; each is streamed to the object store with its sha256. "
                      "All-or-nothing: any rejected part discards the whole upload.")
    async def upload_files(self, modelId: str, request: Request[Any, Any, Any], files: ModelFileService,
                           ctx: ModuleContext, caller: Actor) -> Envelope[ModelFiles]:
        await files.precheck(modelId)
        reader = multipart_body(request, ctx.settings.max_upload_bytes)
        result = await files.upload(caller, modelId, reader)
        return ok(result, f"Stored {len(result.uploaded)} file(s)")

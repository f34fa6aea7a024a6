"""Checks on a model definition that the wire types cannot express, with camelCase field paths.

``check_shape`` needs nothing but the body: which fields each type needs or forbids, duplicates and
the base URL are rules the OpenAPI document states (a 400 when broken); a raw or key-like secret is
schema-valid but refused (a 422). ``check_references`` looks up the parent model and training datasets
inside the writing transaction, so what it checked is still true when the row commits; a reference to
something missing or unfit is a 422 (the path's own resource missing is the 404).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.adminapi import FieldError, SemanticError, refuse
from control.catalog.models.protocol import ModelCreate
from control.catalog.models.providers import secret_errors, url_errors
from control.catalog.tables import dataset_versions, datasets, models

__all__ = ["check_references", "check_shape"]

_MAX_ANCESTRY = 100  # deeper lineage than this is a data problem, not a real model family


def check_shape(data: ModelCreate) -> None:
    errors: list[FieldError] = []

    def need(present: bool, field: str, message: str) -> None:
        if not present:
            errors.append(FieldError(field=field, message=message))

    if data.type == "external":
        need(data.provider is not None, "provider", "an external model needs a provider configuration")
        need(data.format is None, "format", "an external model has no files, so no format")
        need(data.parent_model_id is None, "parentModelId", "an external model has no parent in this catalog")
        need(not data.training_datasets, "trainingDatasets", "an external model was not trained here")
    else:
        need(data.provider is None, "provider", f"only external models have a provider, not {data.type} ones")
        need(data.format is not None, "format",
             f"a {data.type} model needs a format (safetensors, pytorch, gguf, onnx)")
    if data.type == "fine-tuned":
        need(data.parent_model_id is not None, "parentModelId", "a fine-tuned model needs its parent model")
    if data.type == "base":
        need(data.parent_model_id is None, "parentModelId", "a base model has no parent; use type fine-tuned")
    secrets: list[FieldError] = []
    if data.provider is not None:
        errors += url_errors(data.provider)
        secrets += secret_errors(data.provider)
    refs = [(d.dataset_id, d.version) for d in data.training_datasets]
    if len(refs) != len(set(refs)):
        errors.append(FieldError(field="trainingDatasets", message="lists the same dataset version twice"))
    if len(data.tags) != len(set(data.tags)):
        errors.append(FieldError(field="tags", message="duplicate tags"))
    refuse(errors, secrets)


async def check_references(conn: AsyncConnection, data: ModelCreate, model_id: str | None = None) -> None:
    """The parent exists, can have children, and is not the model itself or one of its descendants;
    every training dataset version exists and is ready."""
    errors: list[FieldError] = []
    if data.parent_model_id is not None:
        problem = await _parent_problem(conn, data.parent_model_id, model_id)
        if problem:
            errors.append(FieldError(field="parentModelId", message=problem))
    for i, ref in enumerate(data.training_datasets):
        row = (await conn.execute(
            select(datasets.c.deleted_at, dataset_versions.c.status)
            .select_from(datasets.outerjoin(dataset_versions, (dataset_versions.c.dataset_id == datasets.c.id)
                                            & (dataset_versions.c.version == ref.version)))
            .where(datasets.c.id == ref.dataset_id)
        )).one_or_none()
        if row is None or row.deleted_at is not None:
            errors.append(FieldError(field=f"trainingDatasets[{i}].datasetId",
                                     message=f"no dataset {ref.dataset_id!r}"))
        elif row.status != "ready":
            state = "does not exist" if row.status is None else f"is {row.status}"
            errors.append(FieldError(field=f"trainingDatasets[{i}].version",
                                     message=f"version {ref.version} of dataset {ref.dataset_id!r} {state}"))
    if errors:
        raise SemanticError(errors)


async def _parent_problem(conn: AsyncConnection, parent_id: str, model_id: str | None) -> str | None:
    if parent_id == model_id:
        return "a model cannot be its own parent"
    current: str | None = parent_id
    for depth in range(_MAX_ANCESTRY):
        row = (await conn.execute(select(models.c.type, models.c.parent_model_id, models.c.deleted_at)
                                  .where(models.c.id == current))).one_or_none()
        if row is None or row.deleted_at is not None:
            return f"no model {current!r}" if depth == 0 else None
        if depth == 0 and row.type == "external":
            return "an external model cannot be fine-tuned here; pick a base or fine-tuned parent"
        if row.parent_model_id is None:
            return None
        if row.parent_model_id == model_id:
            return f"model {parent_id!r} descends from this model: that would make a cycle"
        current = row.parent_model_id
    return f"the ancestry of {parent_id!r} is deeper than {_MAX_ANCESTRY} models"

"""Which gate's ``autoEvaluate`` applies to a model: its own, else the nearest ancestor's along its lineage.

A model a training job just registered is brand new and has no gate of its own; the evaluation its team wants is
configured once, on the base model (or a fine-tune higher up), and every descendant inherits it. The walk reads
parents through ``MODEL_CATALOG`` (``parent_model_id``) and stops at the first gate with ``autoEvaluate``; a gate
without it (thresholds only) does not stop the walk. A lineage that loops, or runs deeper than
``MAX_GENERATIONS``, ends the walk there (logged): corrupt lineage never hangs a training job's finalization.
"""

from __future__ import annotations

import logging

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.adminapi import ModuleContext, NotFound, Unprocessable
from adapters.adminapi.seams import MODEL_CATALOG
from control.evaluation.protocol import GateConfig, RunCreate
from control.evaluation.tables import gates

__all__ = ["MAX_GENERATIONS", "inherited_auto_evaluation"]

log = logging.getLogger("llmops.evaluation")
MAX_GENERATIONS = 20  # ancestors looked at above the model itself


async def _auto_evaluate(conn: AsyncConnection, model_id: str) -> RunCreate | None:
    stored = (await conn.execute(select(gates.c.config).where(
        gates.c.subject_kind == "model", gates.c.subject_id == model_id))).scalar_one_or_none()
    if stored is None:
        return None
    try:
        return msgspec.convert(stored, GateConfig).auto_evaluate
    except msgspec.ValidationError as err:
        raise Unprocessable(f"the gate of model {model_id!r} cannot be read ({err}); set it again "
                            f"(PUT evaluation/gates/model/{model_id})") from None


async def inherited_auto_evaluation(ctx: ModuleContext, conn: AsyncConnection, model_id: str
                                    ) -> tuple[str, RunCreate] | None:
    """``(id of the model whose gate it is, its autoEvaluate run)`` nearest ``model_id`` along its lineage, or
    ``None``. Raises ``NotFound`` for an unknown or deleted model. Without the catalog module, only the model's
    own gate counts (its parents cannot be read)."""
    if MODEL_CATALOG not in ctx.services:
        own = await _auto_evaluate(conn, model_id)
        return (model_id, own) if own is not None else None
    catalog = ctx.services[MODEL_CATALOG]
    model = await catalog.get(conn, model_id)  # NotFound: unknown or deleted
    seen = [model_id]
    while True:
        auto = await _auto_evaluate(conn, model.id)
        if auto is not None:
            return model.id, auto
        parent = model.parent_model_id
        if parent is None:
            return None
        if parent in seen:
            log.warning("lineage of model %s loops at %s; no inherited evaluation beyond it", model_id, parent)
            return None
        if len(seen) > MAX_GENERATIONS:
            log.warning("lineage of model %s is deeper than %d generations; no inherited evaluation above %s",
                        model_id, MAX_GENERATIONS, model.id)
            return None
        try:
            model = await catalog.get(conn, parent)
        except NotFound:  # the catalog keeps a model's parent (MODEL_REFS); a broken link ends the lineage
            log.warning("lineage of model %s: parent %s is not in the catalog", model_id, parent)
            return None
        seen.append(parent)

"""A succeeded attempt's job: its output registered in the catalog, evaluated when asked, then ``succeeded``.

1. In one transaction (the job's row locked): the files the job stored under ``output/``
   (``artifacts.output_files``) must hold a model (weights, and ``config.json`` beside safetensors or pytorch
   weights), else the job fails ``NoOutput``; they are registered through ``MODEL_REGISTRY`` (a ``fine-tuned``
   model with the base as parent, or ``base`` without one; as the job's submitter; lineage: dataset version and
   job), ``registered`` on the timeline and ``result_model_id`` set. A registration the catalog refuses fails
   the job (``RegistrationFailed``). Registration is idempotent per job, and a job that already has its model
   (a replica died right after) is not registered again.
2. ``EVALUATIONS.start_for_model`` when the job's ``evaluateOnSuccess`` is set and a module provides it (a draft
   no route serves yet gets a run that waits for it to be served); a refusal (e.g. the gate's dataset is gone)
   is put on the timeline (``evaluation_failed``) and does not fail the job.
3. ``succeeded`` (``finish``: lease, ``MODEL_REFS``, tracking FINISHED), then best effort: the attempts before
   the last cleaned up on the runtime (the last one stays, so its logs can still be read, as a failed or
   cancelled job's attempts do) and the job's checkpoints deleted (the outputs belong to the catalog now).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import update

from adapters.adminapi import AdminError
from adapters.adminapi.seams import EVALUATIONS, MODEL_REGISTRY, ModelRegistration, RegisteredFile
from adapters.store import utcnow
from control.training import artifacts
from control.training.besteffort import quietly
from control.training.tables import jobs
from control.training.transitions import ACTIVE, finish
from control.training.views import job_row, record, spec_of

if TYPE_CHECKING:
    from control.training.supervisor import Supervisor

__all__ = ["finalize", "model_format"]

log = logging.getLogger("llmops.training")
_WEIGHTS = (("safetensors", (".safetensors",)), ("pytorch", (".bin", ".pt", ".pth")), ("gguf", (".gguf",)),
            ("onnx", (".onnx",)))
_NEEDS_CONFIG = ("safetensors", "pytorch")


class _Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def model_format(names: Sequence[str]) -> tuple[str | None, str]:
    """The model format the output's file names make, or None and what is missing."""
    if not names:
        return None, "the job stored nothing under output/"
    lowered = [n.lower() for n in names]
    for fmt, extensions in _WEIGHTS:
        if any(n.endswith(extensions) for n in lowered):
            if fmt in _NEEDS_CONFIG and "config.json" not in lowered:
                return None, f"output/ holds {fmt} weights but no config.json"
            return fmt, ""
    return None, "output/ holds no model weights (*.safetensors, *.bin, *.pt, *.gguf or *.onnx)"


async def finalize(sup: Supervisor, row: Any) -> None:
    try:
        model_id = await _register(sup, row)
    except _Refused as err:
        await _fail(sup, row, err.reason)
        return
    if model_id is None:  # not this replica's job any more
        return
    run_id, note = await _evaluate(sup, row, model_id)
    async with sup.store.begin() as conn:
        if note is not None:
            await record(conn, row.id, note[0], attempt=int(row.attempt), actor=sup.actor, reason=note[1],
                         detail={"modelId": model_id, **({"runId": run_id} if run_id else {})})
        ended = await finish(sup.ctx, conn, row, "succeeded", actor=sup.actor, exit_code=0, owner=sup.owner,
                             reason="", result_model_id=model_id, evaluation_run_id=run_id,
                             detail={"modelId": model_id})
    sup.drop(row.id)
    if ended:
        await _clean(sup, row)


async def _register(sup: Supervisor, row: Any) -> str | None:
    spec = spec_of(row)
    try:
        async with sup.store.begin() as conn:
            current = await job_row(conn, row.id, lock=True)
            if current.lease_owner != sup.owner or current.status not in ACTIVE:
                return None
            if current.result_model_id is not None:
                return str(current.result_model_id)
            files: list[RegisteredFile] = await artifacts.output_files(conn, row.id)
            fmt, missing = model_format([f.name for f in files])
            if fmt is None:
                raise _Refused(f"NoOutput: {missing}")
            if MODEL_REGISTRY not in sup.ctx.services:
                raise _Refused("RegistrationFailed: the catalog module, which registers models, is not enabled")
            model = await sup.ctx.services[MODEL_REGISTRY].register(conn, ModelRegistration(
                name=spec.register["name"], type="fine-tuned" if spec.base_model_id else "base",
                owner_team=current.owner_team, format=fmt, files=files, parent_model_id=spec.base_model_id,
                dataset_id=spec.dataset.dataset_id, dataset_version=spec.dataset.version, training_job_id=row.id,
                description=spec.register.get("description") or f"Trained by {spec.job_type} job {spec.name} "
                                                                 f"({row.id})",
                tags=list(spec.register.get("tags", []))), actor=current.created_by)
            await conn.execute(update(jobs).where(jobs.c.id == row.id).values(result_model_id=model.id,
                                                                              updated_at=utcnow()))
            await record(conn, row.id, "registered", attempt=int(row.attempt), actor=sup.actor,
                         reason=f"registered as {model.type} model {model.name!r} ({model.id}), {model.status}",
                         detail={"modelId": model.id, "name": model.name, "files": len(files), "format": fmt})
            return str(model.id)
    except AdminError as err:
        raise _Refused(f"RegistrationFailed: {err.message}") from None


async def _evaluate(sup: Supervisor, row: Any, model_id: str) -> tuple[str | None, tuple[str, str] | None]:
    """The evaluation run started on the new model (or None) and the timeline entry saying so."""
    if not spec_of(row).evaluate_on_success or EVALUATIONS not in sup.ctx.services:
        return None, None
    try:
        run_id = await sup.ctx.services[EVALUATIONS].start_for_model(
            model_id=model_id, trigger=f"training:{row.id}", actor=row.created_by)
    except AdminError as err:
        return None, ("evaluation_failed", f"no evaluation started: {err.message}")
    except Exception as err:
        log.exception("training job %s: starting the evaluation of %s failed", row.id, model_id)
        return None, ("evaluation_failed", f"no evaluation started: internal error ({type(err).__name__})")
    if run_id is None:
        return None, ("evaluation_skipped", "no automatic evaluation is configured for the model")
    return run_id, ("evaluation_started", f"evaluation run {run_id} created (it waits until a route serves the "
                                          "model when none does yet)")


async def _fail(sup: Supervisor, row: Any, reason: str) -> None:
    async with sup.store.begin() as conn:
        await finish(sup.ctx, conn, row, "failed", actor=sup.actor, reason=reason, exit_code=0, owner=sup.owner)
    sup.drop(row.id)


async def _clean(sup: Supervisor, row: Any) -> None:
    for number in range(1, int(row.attempt)):
        await quietly(sup.runtime.cleanup(row.id, number), "cleanup", row.id)
    store = sup.ctx.object_store
    if store is None:
        return
    try:
        async with sup.store.begin() as conn:
            await artifacts.delete_job_artifacts(conn, store, row.id, keep_output=True)
    except Exception as err:
        log.warning("training job %s: checkpoints not deleted (%s)", row.id, err)

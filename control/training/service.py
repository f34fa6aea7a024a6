"""Job writes and reads behind the REST handlers: create (validated, resolved, recorded), list, get, cancel, logs.

Create checks the body (``validation``), then, in one transaction, the base model (``MODEL_CATALOG``, row
locked: approved, base or fine-tuned) and the dataset version (``DATASET_READER``: ready; the latest ready one
when unset), every refusal in one 422; a name already taken is a 409 (a job's name names its runtime
resources). It writes the job (``queued``, its ``JobSpec`` with every default resolved, a token hash that no
token matches until the supervisor mints the first attempt's), the base model's reference (``MODEL_REFS``:
the model cannot be deleted under the job), the ``queued`` event, the job's tracking run, and the audit entry;
the supervisor is woken after the commit.

Cancel ends a queued or retrying job at once unless a supervisor is launching it (its lease is live); a
scheduled or running one gets ``cancel_requested``, and its supervisor stops the attempt and marks it
``cancelled``. A finished job is a 409 (an already cancelled one answers as is).
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Callable
from typing import Any

import msgspec
from sqlalchemy import Select, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.adminapi import (
    Actor,
    Conflict,
    FieldError,
    ModuleContext,
    NotFound,
    Page,
    PageParams,
    SemanticError,
    ServiceUnavailable,
)
from adapters.adminapi.seams import DATASET_READER, MODEL_CATALOG, MODEL_REFS, CatalogModel
from adapters.store import DuplicateKey, new_id, utcnow
from adapters.training.base import RuntimeFailure, TrainingRuntime
from adapters.training.settings import TrainingSettings
from control.training.protocol import Job, JobCreate, JobLogs
from control.training.specs import resolve
from control.training.tables import jobs
from control.training.tokens import FINISHED, mint_token
from control.training.tracking import store as tracking
from control.training.transitions import finish
from control.training.validation import create_errors
from control.training.views import job_row, record, timeline, to_job

__all__ = ["JobService", "scrub"]

_TOKEN = re.compile(r"ljt_[A-Za-z0-9_-]{20,}")


def scrub(text: str) -> str:
    """A job token a trainer printed (its environment, a traceback) never leaves through the logs API."""
    return _TOKEN.sub("ljt_[redacted]", text)


class JobService:
    """The module's service (``services.TRAINING``); ``settings`` is what the module started with."""

    def __init__(self, ctx: ModuleContext, settings: TrainingSettings, runtime: TrainingRuntime) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.settings = settings
        self.runtime = runtime
        self.wake: Callable[[], None] = lambda: None  # the supervisor's, once it runs

    # -- reads ----------------------------------------------------------------------------------

    async def view(self, conn: AsyncConnection, job_id: str, *, with_timeline: bool = True) -> Job:
        row = await job_row(conn, job_id)
        return to_job(row, (await timeline(conn, [job_id]))[job_id], with_timeline=with_timeline)

    async def get(self, job_id: str) -> Job:
        async with self.store.read() as conn:
            return await self.view(conn, job_id)

    async def list(self, page: PageParams, *, status: str | None = None, job_type: str | None = None,
                   model_id: str | None = None) -> Page[Job]:
        query: Select[Any] = select(jobs)
        if status:
            query = query.where(jobs.c.status == status)
        if job_type:
            query = query.where(jobs.c.job_type == job_type)
        if model_id:
            query = query.where((jobs.c.base_model_id == model_id) | (jobs.c.result_model_id == model_id))
        async with self.store.read() as conn:
            total = (await conn.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
            rows = (await conn.execute(query.order_by(jobs.c.created_at.desc(), jobs.c.id.desc())
                                       .limit(page.page_size).offset(page.offset))).all()
            found = await timeline(conn, [r.id for r in rows])
        return page.wrap([to_job(r, found[r.id]) for r in rows], int(total))

    # -- create ---------------------------------------------------------------------------------

    async def create(self, actor: Actor, data: JobCreate) -> Job:
        try:
            return await self._create(actor, data)
        except DuplicateKey as err:  # a concurrent create took the name between the check and the insert
            raise Conflict(f"A training job named {data.name!r} exists; a job's name names its runtime "
                           "resources, so choose another") from err

    async def _create(self, actor: Actor, data: JobCreate) -> Job:
        errors = create_errors(data)
        job_id, now, who = new_id("job"), utcnow(), actor.principal.name
        async with self.store.begin() as conn:
            base = await self._base_model(conn, data, errors)
            version = await self._dataset(conn, data, errors)
            if errors:
                raise SemanticError(errors)
            assert version is not None  # no errors: the dataset resolved
            taken = (await conn.execute(select(jobs.c.id).where(jobs.c.name == data.name).limit(1))).scalar()
            if taken is not None:
                raise Conflict(f"A training job named {data.name!r} exists ({taken}); a job's name names its "
                               "runtime resources, so choose another", {"jobId": taken})
            spec = resolve(data, settings=self.settings, runtime=self.runtime.name, dataset_version=version,
                           base=base, caller_team=actor.principal.team_id)
            _token, unmatched = mint_token()  # no attempt yet: the supervisor mints each attempt's own token
            await conn.execute(insert(jobs).values(
                id=job_id, name=spec.name, job_type=spec.job_type, status="queued", spec=msgspec.to_builtins(spec),
                owner_team=spec.owner_team, base_model_id=spec.base_model_id, dataset_id=spec.dataset.dataset_id,
                dataset_version=spec.dataset.version, experiment=spec.experiment, runtime=self.runtime.name,
                attempt=0, token_hash=unmatched, cancel_requested=False, created_at=now, created_by=who,
                updated_at=now))
            if base is not None and MODEL_REFS in self.ctx.services:
                await self.ctx.services[MODEL_REFS].add(conn, base.id, "training_job", job_id)
            await record(conn, job_id, "queued", status="queued", attempt=0, actor=who, reason="submitted")
            await tracking.ensure_job_run(conn, job_id=job_id, experiment=spec.experiment, run_name=spec.name,
                                          user=who, params={})
            job = await self.view(conn, job_id)
            await self.ctx.audit.record(conn, actor, action="training.job.create", resource_type="training_job",
                                        resource_id=job_id, after=job,
                                        detail=f"{spec.job_type} job {spec.name!r} on dataset "
                                               f"{spec.dataset.dataset_id} v{spec.dataset.version}")
        self.wake()
        return job

    async def _base_model(self, conn: AsyncConnection, data: JobCreate, errors: builtins.list[FieldError]
                          ) -> CatalogModel | None:
        if data.base_model_id is None:
            return None
        if MODEL_CATALOG not in self.ctx.services:
            errors.append(FieldError("baseModelId", "models need the catalog module, which is not enabled"))
            return None
        try:
            model = await self.ctx.services[MODEL_CATALOG].get(conn, data.base_model_id, lock=True)
        except NotFound as err:
            errors.append(FieldError("baseModelId", err.message))
            return None
        if model.type == "external":
            errors.append(FieldError("baseModelId", f"model {model.id!r} is external (served by its provider): "
                                                    "only base and fine-tuned models can be trained"))
        elif model.status != "approved":
            errors.append(FieldError("baseModelId", f"model {model.id!r} is {model.status}: only approved models "
                                                    "can be trained on"))
        return model

    async def _dataset(self, conn: AsyncConnection, data: JobCreate, errors: builtins.list[FieldError]) -> int | None:
        sel = data.dataset
        field = "dataset.version" if sel.version is not None else "dataset.datasetId"
        if DATASET_READER not in self.ctx.services:
            errors.append(FieldError("dataset.datasetId", "datasets need the catalog module, which is not enabled"))
            return None
        try:
            version = await self.ctx.services[DATASET_READER].version(conn, sel.dataset_id, sel.version)
        except NotFound as err:
            errors.append(FieldError(field, err.message))
            return None
        except Conflict as err:
            errors.append(FieldError(field, f"not ready: {err.message}"))
            return None
        return version.version

    # -- cancel ---------------------------------------------------------------------------------

    async def cancel(self, actor: Actor, job_id: str) -> tuple[Job, str]:
        who = actor.principal.name
        async with self.store.begin() as conn:
            row = await job_row(conn, job_id, lock=True)
            if row.status == "cancelled" or (row.cancel_requested and row.status not in FINISHED):
                return await self.view(conn, job_id), "No changes: the job is already cancelled or cancelling"
            if row.status in FINISHED:
                raise Conflict(f"Training job {job_id!r} has already finished ({row.status})", {"status": row.status})
            before = await self.view(conn, job_id)
            now = utcnow()
            launching = row.lease_owner is not None and row.lease_until is not None and row.lease_until > now
            if row.status in ("queued", "retrying") and not launching:
                await finish(self.ctx, conn, row, "cancelled", actor=who, reason=f"cancelled by {who}")
                message = "Job cancelled"
            else:
                await conn.execute(update(jobs).where(jobs.c.id == job_id).values(cancel_requested=True,
                                                                                   updated_at=now))
                await record(conn, job_id, "cancel_requested", attempt=int(row.attempt), actor=who,
                             reason=f"cancel requested by {who}")
                message = "Cancelling: the supervisor stops the attempt, then marks the job cancelled"
            after = await self.view(conn, job_id)
            await self.ctx.audit.record(conn, actor, action="training.job.cancel", resource_type="training_job",
                                        resource_id=job_id, before=before, after=after)
        self.wake()
        return after, message

    # -- logs -----------------------------------------------------------------------------------

    async def logs(self, job_id: str, attempt: int | None, tail_lines: int) -> JobLogs:
        async with self.store.read() as conn:
            row = await job_row(conn, job_id)
        if row.attempt == 0:
            raise Conflict(f"Training job {job_id!r} has not started yet: no logs", {"status": row.status})
        number = attempt or int(row.attempt)
        if number > row.attempt:
            raise NotFound(f"Training job {job_id!r} has no attempt {number} (its latest is {row.attempt})")
        if row.runtime != self.runtime.name:
            raise Conflict(f"Training job {job_id!r} ran on the {row.runtime} runtime; this server drives "
                           f"{self.runtime.name}")
        try:
            text = await self.runtime.logs(job_id, number, tail_lines=tail_lines)
        except RuntimeFailure as err:
            raise ServiceUnavailable(f"The runtime did not give the logs: {err.reason}") from None
        return JobLogs(job_id=job_id, attempt=number, logs=scrub(text))

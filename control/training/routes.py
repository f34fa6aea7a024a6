"""HTTP surface of training jobs: thin handlers over ``JobService`` (paths in ``protocol``).

Reads need viewer; creating and cancelling jobs, and reading an attempt's logs (a trainer's output may show
its data), developer.
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, get, post
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
    ServiceUnavailable,
    ok,
    requires,
)
from control.training.protocol import Job, JobCreate, JobLogs, JobStatus, JobType
from control.training.service import JobService
from control.training.services import TRAINING

__all__ = ["CONTROLLERS", "JobsController"]

JobId = Annotated[str, Parameter(min_length=1, max_length=40, description="the job's id (job_…)")]
_WRITES: list[Any] = [Conflict, SemanticError]
_READS: list[Any] = [NotFound]
_CANCELS: list[Any] = [Conflict, NotFound]
_LOGS: list[Any] = [Conflict, NotFound, ServiceUnavailable]


def _service(ctx: ModuleContext) -> JobService:
    return ctx.services[TRAINING]


class JobsController(Controller):
    path = "/training/jobs"
    tags = ["training"]
    dependencies = {"jobs": Provide(_service, sync_to_thread=False)}

    @post("/", status_code=201, opt=requires(Role.developer), raises=_WRITES,
          summary="Submit a training job (queued; the supervisor launches, follows, retries and registers it)",
          description="422 names each field at fault (see the body's rules); 409 when the name is taken.")
    async def create_job(self, data: JobCreate, jobs: JobService, caller: Actor) -> Envelope[Job]:
        return ok(await jobs.create(caller, data), "Job queued")

    @get("/", summary="List training jobs, newest first",
         description="Filters combine with AND; modelId matches the base model or the model a job produced.")
    async def list_jobs(
        self, jobs: JobService, page: PageParams,
        status: JobStatus | None = Parameter(query="status", default=None),
        job_type: JobType | None = Parameter(query="jobType", default=None),
        model_id: str | None = Parameter(query="modelId", default=None, min_length=1, max_length=100),
    ) -> Envelope[Page[Job]]:
        return ok(await jobs.list(page, status=status, job_type=job_type, model_id=model_id))

    @get("/{jobId:str}", raises=_READS, summary="Get a training job: status, attempts, result, timeline")
    async def get_job(self, jobId: JobId, jobs: JobService) -> Envelope[Job]:
        return ok(await jobs.get(jobId))

    @post("/{jobId:str}/cancel", status_code=200, opt=requires(Role.developer), raises=_CANCELS,
          summary="Cancel a job: a waiting one at once; a running one once its attempt is stopped",
          description="409 when the job has already finished (a cancelled job answers as it is).")
    async def cancel_job(self, jobId: JobId, jobs: JobService, caller: Actor) -> Envelope[Job]:
        job, message = await jobs.cancel(caller, jobId)
        return ok(job, message)

    @get("/{jobId:str}/logs", opt=requires(Role.developer), raises=_LOGS,
         summary="The tail of an attempt's output, from the runtime (rank 0 first)",
         description="attempt: default the latest. 409 before the first attempt; 404 for an attempt that "
                     "never ran; 503 when the runtime cannot be reached.")
    async def job_logs(
        self, jobId: JobId, jobs: JobService,
        attempt: int | None = Parameter(query="attempt", default=None, ge=1, le=1000),
        tail_lines: int = Parameter(query="tailLines", default=200, ge=1, le=10_000),
    ) -> Envelope[JobLogs]:
        return ok(await jobs.logs(jobId, attempt, tail_lines))


CONTROLLERS = [JobsController]

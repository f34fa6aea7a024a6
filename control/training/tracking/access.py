"""Who is calling the tracking paths: a training job by its job-scoped token, or a person by an admin key.

These routes are marked public, so the control plane's guard lets them through, and they authenticate here:
a bearer that looks like a job token (``ljt_…``) must belong to a live job (``tokens.job_for_token``); anything
else goes to the plane's own key check (``ModuleContext.authorize``: viewer to read, developer to write), so
keys are parsed in one place. Refusals say the same thing whatever was wrong, never echo the token, and are
recorded like the guard's (the audit log's denial windows).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar import Request

from adapters.adminapi import ModuleContext, Role, ServiceUnavailable
from adapters.adminapi.envelope import request_id
from adapters.store import Store
from control.training import tokens
from control.training.tracking.errors import PermissionDenied, Unauthenticated

__all__ = ["BAD_JOB_TOKEN", "Caller", "authenticate", "job_from_token"]

BAD_JOB_TOKEN = "Invalid job token: it must be this job's token, and the job must not have finished"


@dataclass(frozen=True)
class Caller:
    """``job_id`` set: a job's token, which reaches that job's run (``run_id`` = ``job_id``) and nothing else."""

    user: str
    job_id: str | None = None
    experiment: str = ""  # the job's (for its run, when the jobs module has not made it yet)
    run_name: str = ""

    def check_run(self, run_id: str) -> None:
        if self.job_id is not None and run_id != self.job_id:
            raise PermissionDenied("A job's token may only use its own job's run")

    def check_not_job(self, what: str) -> None:
        if self.job_id is not None:
            raise PermissionDenied(f"A job's token may not {what}")


async def job_from_token(request: Request[Any, Any, Any], ctx: ModuleContext, store: Store,
                         job_id: str | None = None) -> Any | None:
    """The live job the request's job token belongs to (``job_id``'s, when given); None after recording a denial."""
    token = tokens.bearer_token(request.headers)
    job = None
    if token is not None:
        async with store.read() as conn:
            job = await tokens.job_for_token(conn, token, job_id)
    if job is None:
        await ctx.audit.denial(principal=None, key_id=None, request_id=request_id(request), method=request.method,
                               path=request.url.path, status_code=401, reason=BAD_JOB_TOKEN,
                               source=request.client.host if request.client else None)
    return job


async def authenticate(request: Request[Any, Any, Any], ctx: ModuleContext, store: Store, *,
                       write: bool) -> Caller:
    """The caller, or ``Unauthorized``/``Forbidden`` (from the key check) / ``Unauthenticated`` (a job token)."""
    if tokens.bearer_token(request.headers) is not None:
        job = await job_from_token(request, ctx, store)
        if job is None:
            raise Unauthenticated(BAD_JOB_TOKEN)
        return Caller(user=job.created_by, job_id=job.id, experiment=job.experiment, run_name=job.name)
    if ctx.authorize is None:
        raise ServiceUnavailable("The control plane is not running")
    principal = await ctx.authorize(request, Role.developer if write else Role.viewer)
    return Caller(user=principal.name)

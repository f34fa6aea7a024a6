"""The job-row writes a state change makes, shared by the API (cancel) and the supervisor.

``finish`` ends a job: the status with its reason and exit code, the lease given back, the timeline entry,
the base model's reference dropped (``MODEL_REFS``: the model may be deleted again), and the tracking run
closed (FINISHED, FAILED or KILLED). Once finished, the job's token is refused (``tokens.job_for_token``).
Every write is conditional on the job not being finished yet, and, for a supervisor, on its lease: a
replica that lost a job writes nothing to it.
"""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.adminapi import ModuleContext
from adapters.adminapi.seams import MODEL_REFS
from adapters.store import utcnow
from control.training.tables import jobs
from control.training.tokens import FINISHED
from control.training.tracking import store as tracking
from control.training.views import record

__all__ = ["ACTIVE", "FINISHED", "RUN_STATUS", "finish", "owned"]

ACTIVE = ("scheduled", "running")  # an attempt is (or may be) on the runtime
RUN_STATUS: dict[str, Literal["FINISHED", "FAILED", "KILLED"]] = {
    "succeeded": "FINISHED", "failed": "FAILED", "cancelled": "KILLED"}


def owned(job_id: str, owner: str | None) -> Any:
    """The job's row, not finished, and (``owner`` given) leased by that supervisor."""
    clause = (jobs.c.id == job_id) & jobs.c.status.not_in(FINISHED)
    return clause & (jobs.c.lease_owner == owner) if owner is not None else clause


async def finish(ctx: ModuleContext, conn: AsyncConnection, row: Any, status: Literal["succeeded", "failed",
                 "cancelled"], *, actor: str, reason: str = "", exit_code: int | None = None,
                 owner: str | None = None, detail: dict[str, Any] | None = None, **values: Any) -> bool:
    """End the job in ``conn``'s transaction; False (nothing written) when it was already finished or is not
    ``owner``'s any more."""
    now = utcnow()
    done = await conn.execute(update(jobs).where(owned(row.id, owner)).values(
        status=status, reason=reason or None, exit_code=exit_code, finished_at=now, updated_at=now,
        next_attempt_at=None, lease_owner=None, lease_until=None, **values))
    if not done.rowcount:
        return False
    info = dict(detail or {})
    if exit_code is not None:
        info["exitCode"] = exit_code
    await record(conn, row.id, status, status=status, attempt=int(row.attempt), actor=actor, reason=reason,
                 detail=info)
    if row.base_model_id and MODEL_REFS in ctx.services:
        await ctx.services[MODEL_REFS].remove(conn, row.base_model_id, "training_job", row.id)
    await tracking.set_job_run_status(conn, row.id, RUN_STATUS[status])
    return True

"""What an attempt's status means for its job, for the supervisor that holds the job's lease.

======================  ==================================================================================
attempt phase           the job
======================  ==================================================================================
``pending``             stays ``scheduled``; a new reason (ImagePullBackOff, Unschedulable) is shown and put
                        on the timeline as a ``pending`` event
``running``             ``running`` (the tracking run RUNNING)
``succeeded``           ``finalize``: registered, evaluated, ``succeeded``
``failed``              the retry policy (``retry.decide``): ``retrying`` after a backoff, or ``failed``
``absent``              the attempt was submitted but the runtime has no trace of it: a failed attempt,
                        reason ``Lost``, under the same policy
======================  ==================================================================================

``stop`` ends a job whose attempt must stop (a cancel request, the deadline): ``runtime.cancel``, then the
final status; if the runtime cannot be reached the job stays as it is and the next pass tries again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import update

from adapters.store import utcnow
from adapters.training.base import AttemptStatus
from control.training import finalize
from control.training.retry import decide
from control.training.tables import jobs
from control.training.tracking import store as tracking
from control.training.transitions import finish, owned
from control.training.views import record, spec_of

if TYPE_CHECKING:
    from control.training.supervisor import Supervisor

__all__ = ["apply", "attempt_failed", "stop"]


async def apply(sup: Supervisor, row: Any, status: AttemptStatus) -> None:
    """Move the job after its current attempt's ``status`` (a status of another attempt is ignored)."""
    if status.attempt != int(row.attempt):
        return
    if status.phase == "pending":
        await _pending(sup, row, status)
    elif status.phase == "running":
        await _running(sup, row)
    elif status.phase == "succeeded":
        await _ran(sup, row, status)
        await finalize.finalize(sup, row)
    elif status.phase == "failed":
        await _ran(sup, row, status)
        await attempt_failed(sup, row, status.exit_code, status.reason or "Failed", status.message)
    else:
        await attempt_failed(sup, row, None, "Lost", f"the runtime has no trace of attempt {row.attempt}")


async def _pending(sup: Supervisor, row: Any, status: AttemptStatus) -> None:
    why = status.reason or ""
    if row.status != "scheduled" or not why or why == (row.reason or ""):
        return
    async with sup.store.begin() as conn:
        done = await conn.execute(update(jobs).where(owned(row.id, sup.owner), jobs.c.status == "scheduled").values(
            reason=why, updated_at=utcnow()))
        if done.rowcount:
            await record(conn, row.id, "pending", attempt=int(row.attempt), actor=sup.actor, reason=why,
                         detail={"message": status.message[:1000]} if status.message else {})


async def _ran(sup: Supervisor, row: Any, status: AttemptStatus) -> None:
    """An attempt that started and ended between two polls still ran: its job passes through "running", so its
    timeline (and every consumer of it: time-to-running, the tracking run) is the same as a slower job's."""
    if status.phase == "succeeded" or status.started_at is not None:
        await _running(sup, row)


async def _running(sup: Supervisor, row: Any) -> None:
    if row.status != "scheduled":
        return
    async with sup.store.begin() as conn:
        done = await conn.execute(update(jobs).where(owned(row.id, sup.owner), jobs.c.status == "scheduled").values(
            status="running", reason=None, updated_at=utcnow()))
        if done.rowcount:
            await record(conn, row.id, "running", status="running", attempt=int(row.attempt), actor=sup.actor,
                         reason=f"attempt {row.attempt} is running")
            await tracking.set_job_run_status(conn, row.id, "RUNNING")


async def attempt_failed(sup: Supervisor, row: Any, exit_code: int | None, reason: str, message: str) -> None:
    """Retry under the job's policy, or fail it; either way this replica stops following it."""
    now = utcnow()
    attempt = int(row.attempt)
    decision = decide(spec_of(row).retry_policy, attempt, exit_code, reason, now=now, deadline_at=row.deadline_at)
    said = f"{reason}" + (f" (exit code {exit_code})" if exit_code is not None else "") + (
        f": {message}" if message else "")
    detail: dict[str, Any] = {"attemptReason": reason, "message": message[:1000]}
    async with sup.store.begin() as conn:
        if decision.retry:
            done = await conn.execute(update(jobs).where(owned(row.id, sup.owner)).values(
                status="retrying", next_attempt_at=decision.at, exit_code=exit_code, reason=said[:2000],
                lease_owner=None, lease_until=None, updated_at=now))
            if done.rowcount:
                await record(conn, row.id, "retrying", status="retrying", attempt=attempt, actor=sup.actor,
                             reason=f"{said}; {decision.message}",
                             detail={**detail, "exitCode": exit_code, "retryInS": decision.delay_s})
        else:
            text = said if decision.reason == reason else f"{decision.reason}: {said}"
            await finish(sup.ctx, conn, row, "failed", actor=sup.actor, reason=f"{text}; {decision.message}"[:2000],
                         exit_code=exit_code, owner=sup.owner, detail=detail)
    sup.drop(row.id)


async def stop(sup: Supervisor, row: Any, status: Literal["cancelled", "failed"], reason: str, message: str) -> None:
    """Stop the current attempt on the runtime, then end the job (``reason``: Cancelled, DeadlineExceeded)."""
    await sup.runtime.cancel(row.id, int(row.attempt), grace_s=sup.settings.cancel_grace_s)
    async with sup.store.begin() as conn:
        await finish(sup.ctx, conn, row, status, actor=sup.actor, reason=f"{reason}: {message}", owner=sup.owner,
                     detail={"attemptReason": reason})
    sup.drop(row.id)

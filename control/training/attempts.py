"""Starting a job's next attempt, for the supervisor that holds its lease.

Attempt ``n`` is the job's ``attempt + 1``. If the runtime already has it (a submit went through, then this
replica died before recording it), it is adopted as it is: its token is the one whose hash the job row
already holds. Otherwise a fresh token is minted and its hash stored *before* ``submit`` (the trainer's first
call must find it), the attempt is submitted, and only then is the job ``scheduled`` with ``attempt = n``;
``deadline_at`` is fixed at the first launch (``deadlineS`` later), and each attempt gets what is left of it.

A refusal the runtime calls retryable (it was unreachable) leaves the job waiting, tried again a few passes
later (``launch_failed`` on the timeline when the reason changes); any other refusal fails the job.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, update

from adapters.store import utcnow
from adapters.training.base import RuntimeFailure
from control.training import follow
from control.training.besteffort import quietly
from control.training.launch import build_launch
from control.training.tables import jobs
from control.training.tokens import mint_token
from control.training.transitions import finish, owned
from control.training.views import job_row, record, spec_of

if TYPE_CHECKING:
    from control.training.supervisor import Supervisor

__all__ = ["launch"]

log = logging.getLogger("llmops.training")
_WAITING = ("queued", "retrying")


async def launch(sup: Supervisor, job_id: str) -> None:
    async with sup.store.read() as conn:
        row = await job_row(conn, job_id)
    if row.lease_owner != sup.owner or row.status not in _WAITING:
        return
    now = utcnow()
    if row.cancel_requested:
        await _end(sup, row, "cancelled", "Cancelled: cancelled before it started")
        return
    if row.deadline_at is not None and now >= row.deadline_at:
        await _end(sup, row, "failed", "DeadlineExceeded: the job's deadline passed before its next attempt")
        return
    url = sup.api_base_url()
    if not url:
        await _end(sup, row, "failed", "NoApiBaseUrl: this server does not know its own address; set "
                                       "TRAINING_API_BASE_URL")
        return
    spec = spec_of(row)
    number = int(row.attempt) + 1
    deadline_at = row.deadline_at or now + timedelta(seconds=spec.deadline_s)
    try:
        existing = await sup.runtime.status(job_id, number)
    except Exception as err:
        await _launch_failed(sup, row, f"the runtime did not answer ({type(err).__name__})")
        return
    if existing.phase != "absent":
        await _scheduled(sup, row, number, deadline_at, f"attempt {number} found on the runtime (adopted)")
        fresh = await _reread(sup, job_id)
        if fresh is not None:
            await follow.apply(sup, fresh, existing)
        return
    token, digest = mint_token()
    attempt = build_launch(job_id=job_id, attempt=number, spec=spec,
                           settings=sup.settings, api_base_url=url, token=token, deadline_at=deadline_at, now=now)
    async with sup.store.begin() as conn:
        stored = await conn.execute(update(jobs).where(owned(job_id, sup.owner), jobs.c.status.in_(_WAITING)).values(
            token_hash=digest, deadline_at=deadline_at, updated_at=now))
    if not stored.rowcount:
        return
    try:
        await sup.runtime.submit(attempt)
    except RuntimeFailure as err:
        if err.retryable:
            await _launch_failed(sup, row, err.reason)
        else:
            await _end(sup, row, "failed", f"RuntimeRefused: {err.reason}")
        return
    except Exception as err:
        log.exception("training job %s: submit of attempt %d failed", job_id, number)
        await _launch_failed(sup, row, f"internal error ({type(err).__name__}); see the server log")
        return
    if not await _scheduled(sup, row, number, deadline_at, f"attempt {number} submitted to {sup.runtime.name}"):
        # cancelled (or taken over) while it was submitted: it must not run unfollowed
        await quietly(sup.runtime.cancel(job_id, number, grace_s=sup.settings.cancel_grace_s), "cancel", job_id)


async def _scheduled(sup: Supervisor, row: Any, number: int, deadline_at: Any, reason: str) -> bool:
    now = utcnow()
    async with sup.store.begin() as conn:
        done = await conn.execute(update(jobs).where(owned(row.id, sup.owner), jobs.c.status.in_(_WAITING)).values(
            status="scheduled", attempt=number, started_at=func.coalesce(jobs.c.started_at, now),
            deadline_at=deadline_at, next_attempt_at=None, reason=None, exit_code=None, updated_at=now,
            lease_until=now + timedelta(seconds=sup.settings.lease_s)))
        if not done.rowcount:
            return False
        await record(conn, row.id, "scheduled", status="scheduled", attempt=number, actor=sup.actor, reason=reason)
    sup.followed[row.id] = number
    return True


async def _reread(sup: Supervisor, job_id: str) -> Any | None:
    async with sup.store.read() as conn:
        row = await job_row(conn, job_id)
    return row if row.lease_owner == sup.owner else None


async def _end(sup: Supervisor, row: Any, status: Any, reason: str) -> None:
    async with sup.store.begin() as conn:
        await finish(sup.ctx, conn, row, status, actor=sup.actor, reason=reason, owner=sup.owner)


async def _launch_failed(sup: Supervisor, row: Any, reason: str) -> None:
    """The job waits (lease given back) and is tried again a few passes later."""
    now = utcnow()
    text = f"LaunchFailed: {reason}"
    delay = min(max(sup.settings.sync_interval_s * 5, 0.2), 60.0)
    async with sup.store.begin() as conn:
        await conn.execute(update(jobs).where(owned(row.id, sup.owner)).values(
            lease_owner=None, lease_until=None, next_attempt_at=now + timedelta(seconds=delay), reason=text,
            updated_at=now))
        if text != row.reason:
            await record(conn, row.id, "launch_failed", attempt=int(row.attempt) + 1, actor=sup.actor, reason=text)

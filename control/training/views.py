"""Job reads as the API shows them, and the timeline writes every state change goes through.

The timeline (``training_job_events``) is append-only: a state change has ``status`` = ``event`` (queued,
scheduled, running, retrying, succeeded, failed, cancelled); other events (``pending``, ``registered``,
``evaluation_started``, ``evaluation_failed``, ``launch_failed``, ``adopted``) change no state. ``attempts``
in the answer is derived from it: per attempt when it was scheduled, started and finished, how, and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.adminapi import ADMIN_PREFIX, NotFound
from adapters.store import utcnow
from control.training.protocol import AttemptSummary, Job, JobEvent, JobLinks, JobSpec
from control.training.tables import events, jobs

__all__ = ["attempt_summaries", "job_row", "record", "spec_of", "timeline", "to_job"]

_ENDS = {"succeeded": "succeeded", "failed": "failed", "retrying": "failed", "cancelled": "cancelled"}


async def record(conn: AsyncConnection, job_id: str, event: str, *, attempt: int, actor: str, reason: str = "",
                 status: str | None = None, detail: dict[str, Any] | None = None) -> None:
    """Append one timeline entry (``status`` set: a state change, named by ``event``)."""
    await conn.execute(insert(events).values(job_id=job_id, at=utcnow(), status=status, event=event,
                                             attempt=attempt, reason=reason[:2000], actor=actor[:100],
                                             detail=detail or {}))


async def job_row(conn: AsyncConnection, job_id: str, *, lock: bool = False) -> Any:
    query = select(jobs).where(jobs.c.id == job_id)
    found = (await conn.execute(query.with_for_update() if lock else query)).one_or_none()
    if found is None:
        raise NotFound(f"No training job {job_id!r}")
    return found


def spec_of(row: Any) -> JobSpec:
    return msgspec.convert(row.spec, JobSpec)


async def timeline(conn: AsyncConnection, job_ids: Sequence[str]) -> dict[str, list[JobEvent]]:
    """The events of each job, oldest first."""
    if not job_ids:
        return {}
    rows = (await conn.execute(select(events).where(events.c.job_id.in_(list(job_ids)))
                               .order_by(events.c.job_id, events.c.id))).all()
    out: dict[str, list[JobEvent]] = {j: [] for j in job_ids}
    for r in rows:
        out[r.job_id].append(JobEvent(at=r.at, status=r.status, event=r.event, attempt=int(r.attempt),
                                      reason=r.reason, actor=r.actor, detail=dict(r.detail or {})))
    return out


def attempt_summaries(timeline: Sequence[JobEvent]) -> list[AttemptSummary]:
    """Per attempt (1, 2, …): its scheduling, start and end as the timeline tells them."""
    found: dict[int, dict[str, Any]] = {}
    for e in timeline:
        if e.attempt < 1 or e.status is None:
            continue
        entry = found.setdefault(e.attempt, {"attempt": e.attempt, "status": "scheduled"})
        if e.status == "scheduled":
            entry["scheduled_at"] = e.at
        elif e.status == "running":
            entry.update(status="running", started_at=e.at)
        elif e.status in _ENDS:
            entry.update(status=_ENDS[e.status], finished_at=e.at, reason=e.reason or None,
                         exit_code=e.detail.get("exitCode"))
    return [AttemptSummary(**found[n]) for n in sorted(found)]


def to_job(row: Any, events_: Sequence[JobEvent], *, with_timeline: bool = False) -> Job:
    spec = spec_of(row)
    base = f"{ADMIN_PREFIX}/training"
    return Job(
        id=row.id, name=row.name, job_type=row.job_type, status=row.status, runtime=row.runtime,
        base_model_id=row.base_model_id, dataset=spec.dataset, architecture=spec.architecture,
        hyperparameters=spec.hyperparameters, trainer=spec.trainer, command=spec.command, image=spec.image,
        resources=spec.resources, retry_policy=spec.retry_policy, deadline_s=spec.deadline_s,
        experiment=row.experiment, owner_team=row.owner_team, env=spec.env,
        evaluate_on_success=spec.evaluate_on_success, register=spec.register, attempt=int(row.attempt),
        attempts=attempt_summaries(events_), exit_code=row.exit_code, reason=row.reason,
        cancel_requested=bool(row.cancel_requested), result_model_id=row.result_model_id,
        evaluation_run_id=row.evaluation_run_id, next_attempt_at=row.next_attempt_at, deadline_at=row.deadline_at,
        created_at=row.created_at, created_by=row.created_by, started_at=row.started_at,
        finished_at=row.finished_at, updated_at=row.updated_at,
        links=JobLinks(experiment=f"{base}/experiments/{row.id}", logs=f"{base}/jobs/{row.id}/logs"),
        timeline=list(events_) if with_timeline else None)

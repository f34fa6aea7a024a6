"""``GET training/experiments/{jobId}``: a job's run as people look at it (wire types and the reads behind them).

Metric series are downsampled in the database, per key, to at most ``maxPoints`` points spread evenly over the
key's points in step order, always keeping the first and the last: point ``i`` of ``n`` is kept when it starts
a new bucket of ``(n - 1) / (maxPoints - 1)`` points, which picks exactly ``maxPoints`` of them. Values that
plain JSON cannot carry (NaN, ±inf, possible through the MLflow subset) are the strings ``"NaN"``,
``"Infinity"`` and ``"-Infinity"``, as in MLflow's JSON.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from control.training.tables import events, experiments, jobs, metrics, runs
from control.training.tracking import store as tracking
from control.training.tracking.mlflow_wire import number

__all__ = ["ExperimentView", "Point", "RunSummary", "TimelineEntry", "experiment_view"]


class Point(msgspec.Struct, frozen=True, rename="camel"):
    step: int
    value: float | str
    timestamp: int


class RunSummary(msgspec.Struct, frozen=True, rename="camel"):
    run_id: str
    run_name: str
    status: str
    start_time: int
    end_time: int | None
    lifecycle_stage: str
    experiment_id: str
    experiment: str


class TimelineEntry(msgspec.Struct, frozen=True, rename="camel"):
    at: datetime
    status: str | None
    event: str
    attempt: int
    reason: str
    actor: str
    detail: dict[str, Any]


class ExperimentView(msgspec.Struct, frozen=True, rename="camel"):
    job_id: str
    job_status: str
    experiment: str
    run: RunSummary | None
    params: dict[str, str]  # logged params, plus the job spec's hyperparameters not logged under the same name
    hyperparameters: dict[str, Any]  # the job spec's, as submitted
    metrics: dict[str, list[Point]]
    latest: dict[str, Point]
    timeline: list[TimelineEntry]


def _param_text(value: Any) -> str:
    """A hyperparameter as MLflow would log it: strings as they are, the rest as JSON (``true``, ``0.01``)."""
    return value if isinstance(value, str) else json.dumps(value)


async def experiment_view(conn: AsyncConnection, job_id: str, *, keys: Sequence[str] | None,
                          max_points: int) -> ExperimentView | None:
    """The view of ``job_id``'s run; None for an unknown job. ``keys`` limits the metrics (None: all)."""
    job = (await conn.execute(select(jobs.c.id, jobs.c.status, jobs.c.spec, jobs.c.experiment)
                              .where(jobs.c.id == job_id))).one_or_none()
    if job is None:
        return None
    hyperparameters = dict((job.spec or {}).get("hyperparameters") or {})
    run = (await conn.execute(select(runs, experiments.c.name.label("experiment_name"))
                              .join(experiments, experiments.c.experiment_id == runs.c.experiment_id)
                              .where(runs.c.run_id == job_id))).one_or_none()
    summary = None
    logged: dict[str, str] = {}
    series: dict[str, list[Point]] = {}
    latest: dict[str, Point] = {}
    if run is not None:
        summary = RunSummary(run_id=run.run_id, run_name=run.run_name, status=run.status, start_time=run.start_time,
                             end_time=run.end_time, lifecycle_stage=run.lifecycle_stage,
                             experiment_id=str(run.experiment_id), experiment=run.experiment_name)
        logged = await tracking.run_params(conn, job_id)
        series = await _series(conn, job_id, keys, max_points)
        latest = {row.key: _point(row) for row in await tracking.latest_points(conn, [job_id], keys)}
    timeline = [TimelineEntry(at=e.at, status=e.status, event=e.event, attempt=e.attempt, reason=e.reason,
                              actor=e.actor, detail=e.detail or {})
                for e in await conn.execute(select(events).where(events.c.job_id == job_id).order_by(events.c.id))]
    return ExperimentView(
        job_id=job.id, job_status=job.status, experiment=run.experiment_name if run is not None else job.experiment,
        run=summary, params={**{k: _param_text(v) for k, v in hyperparameters.items()}, **logged},
        hyperparameters=hyperparameters, metrics=series, latest=latest, timeline=timeline,
    )


def _point(row: Any) -> Point:
    return Point(step=row.step, value="NaN" if row.is_nan else number(row.value), timestamp=row.timestamp)


async def _series(conn: AsyncConnection, run_id: str, keys: Sequence[str] | None,
                  max_points: int) -> dict[str, list[Point]]:
    m = metrics.c
    position = (func.row_number().over(partition_by=m.key, order_by=(m.step, m.timestamp, m.id)) - 1)
    inner = select(m.key, m.value, m.is_nan, m.step, m.timestamp, m.id, position.label("i"),
                   func.count().over(partition_by=m.key).label("n")).where(m.run_id == run_id)
    if keys is not None:
        inner = inner.where(m.key.in_(list(keys)))
    ranked = inner.subquery()
    i, n, gaps = ranked.c.i, ranked.c.n, max_points - 1
    # bucket(i) = i * gaps // (n - 1), integer division on both databases; keep each bucket's first point.
    keep = or_(n <= max_points, i == 0, and_(n > 1, (i * gaps) // (n - 1) > ((i - 1) * gaps) // (n - 1)))
    rows = await conn.execute(select(ranked).where(keep).order_by(ranked.c.key, ranked.c.i))
    out: dict[str, list[Point]] = {}
    for row in rows:
        out.setdefault(row.key, []).append(_point(row))
    return out

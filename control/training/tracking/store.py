"""The tracking store: experiments, runs, params, tags and metric points, on the caller's connection.

Every function takes an open connection and never commits, so the jobs supervisor writes a job's run in the
same transaction as the job (``ensure_job_run``, ``set_job_run_status``) and a metrics post is one transaction.
The semantics are MLflow's SQL store's: run ids are 32 hex digits (a job's run is the job id), times are epoch
milliseconds, a param never changes once logged, a tag is overwritten, metric points are only appended, a run's
name is also its ``mlflow.runName`` tag, a terminal status sets ``end_time``, and NaN is stored as value 0 with
``is_nan`` (SQLite would keep a NaN as NULL). Experiment ``0`` is MLflow's ``Default``, made on first use.
Callers validate names and values (``names``); what only the store can know (a missing run, a changed param) is
a ``TrackingError``.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from sqlalchemy import and_, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.training.contract import MetricPoint
from control.training.tables import experiments, metrics, params, runs, tags
from control.training.tracking.errors import AlreadyExists, InvalidValue, ResourceMissing
from control.training.tracking.names import key_problem, param_problem

__all__ = [
    "DEFAULT_EXPERIMENT",
    "RUN_NAME_TAG",
    "TERMINAL",
    "USER_TAG",
    "RunStatus",
    "create_experiment",
    "create_run",
    "delete_tag",
    "ensure_experiment",
    "ensure_job_run",
    "experiment_by_id",
    "experiment_by_name",
    "latest_metrics",
    "latest_points",
    "log_params",
    "log_points",
    "now_ms",
    "point_value",
    "run_params",
    "run_row",
    "run_tags",
    "set_job_run_status",
    "set_tags",
    "update_run",
]

RunStatus = Literal["RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"]
TERMINAL = frozenset({"FINISHED", "FAILED", "KILLED"})
DEFAULT_EXPERIMENT = "Default"
RUN_NAME_TAG = "mlflow.runName"
USER_TAG = "mlflow.user"
JOB_TAG = "llmops.jobId"


def now_ms() -> int:
    return int(time.time() * 1000)


def _insert(conn: AsyncConnection, table: Any) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


# -- experiments ---------------------------------------------------------------------------------------------

async def experiment_by_name(conn: AsyncConnection, name: str) -> Any | None:
    if name == DEFAULT_EXPERIMENT:
        await _ensure_default(conn)
    return (await conn.execute(select(experiments).where(experiments.c.name == name))).one_or_none()


async def experiment_by_id(conn: AsyncConnection, experiment_id: int) -> Any | None:
    if experiment_id == 0:
        await _ensure_default(conn)
    return (await conn.execute(
        select(experiments).where(experiments.c.experiment_id == experiment_id))).one_or_none()


async def _ensure_default(conn: AsyncConnection) -> None:
    """MLflow's client logs to experiment ``0`` when told nothing else: it exists from its first mention."""
    now = now_ms()
    await conn.execute(_insert(conn, experiments).values(
        experiment_id=0, name=DEFAULT_EXPERIMENT, artifact_location="mlflow-artifacts:/0", lifecycle_stage="active",
        tags={}, creation_time=now, last_update_time=now).on_conflict_do_nothing())


async def create_experiment(conn: AsyncConnection, name: str, *, artifact_location: str | None = None,
                            tags: Mapping[str, str] | None = None) -> int:
    """A new experiment's id; ``AlreadyExists`` when the name is taken (deleted experiments included)."""
    created = await _add_experiment(conn, name, artifact_location, tags)
    if created is None:
        raise AlreadyExists(f"Experiment '{name}' already exists.", "name")
    return created


async def ensure_experiment(conn: AsyncConnection, name: str) -> int:
    """The id of the experiment named ``name``, made when missing (two callers racing get the same one)."""
    created = await _add_experiment(conn, name, None, None)
    if created is not None:
        return created
    row = await experiment_by_name(conn, name)
    assert row is not None  # the insert found it there and nothing deletes experiment rows
    return int(row.experiment_id)


async def _add_experiment(conn: AsyncConnection, name: str, artifact_location: str | None,
                          tags: Mapping[str, str] | None) -> int | None:
    if not name.strip():
        raise InvalidValue("Experiment name must not be empty.", "name")
    now = now_ms()
    created = (await conn.execute(_insert(conn, experiments).values(
        name=name, artifact_location=artifact_location or "", lifecycle_stage="active", tags=dict(tags or {}),
        creation_time=now, last_update_time=now,
    ).on_conflict_do_nothing().returning(experiments.c.experiment_id))).scalar_one_or_none()
    if created is None:
        return None
    if not artifact_location:  # MLflow's server default, known only once the id is
        await conn.execute(update(experiments).where(experiments.c.experiment_id == created)
                           .values(artifact_location=f"mlflow-artifacts:/{created}"))
    return int(created)


# -- runs ----------------------------------------------------------------------------------------------------

async def create_run(conn: AsyncConnection, *, experiment_id: int, user_id: str, run_name: str | None,
                     start_time: int | None, tags: Mapping[str, str], run_id: str | None = None,
                     job_id: str | None = None, status: RunStatus = "RUNNING") -> str:
    """A new run in an active experiment; its name is ``run_name``, else its ``mlflow.runName`` tag, else made up."""
    experiment = await experiment_by_id(conn, experiment_id)
    if experiment is None:
        raise ResourceMissing(f"No Experiment with id={experiment_id} exists", "experiment_id")
    if experiment.lifecycle_stage != "active":
        raise InvalidValue(f"The experiment {experiment_id} must be in the 'active' state.", "experiment_id")
    tagged = tags.get(RUN_NAME_TAG)
    if run_name and tagged and run_name != tagged:
        raise InvalidValue(f"Both 'run_name' ({run_name!r}) and the {RUN_NAME_TAG} tag ({tagged!r}) are set "
                           "and they differ.", "run_name")
    name = run_name or tagged or f"run-{uuid.uuid4().hex[:8]}"
    run_id = run_id or uuid.uuid4().hex
    # ON CONFLICT DO NOTHING: two first metrics posts of one job (two nodes) may both make its run; one does.
    made = (await conn.execute(_insert(conn, runs).values(
        run_id=run_id, experiment_id=experiment_id, job_id=job_id, run_name=name, user_id=user_id, status=status,
        start_time=now_ms() if start_time is None else start_time, end_time=None, lifecycle_stage="active",
        artifact_uri=f"{experiment.artifact_location}/{run_id}/artifacts",
    ).on_conflict_do_nothing(index_elements=[runs.c.run_id]).returning(runs.c.run_id))).scalar_one_or_none()
    if made is None:
        if job_id is None:  # a generated id that clashed: as unlikely as a UUID collision, and not ours to hide
            raise AlreadyExists(f"Run '{run_id}' already exists.", "run_id")
        return run_id
    await set_tags(conn, run_id, {**tags, RUN_NAME_TAG: name, USER_TAG: tags.get(USER_TAG, user_id)})
    return run_id


async def ensure_job_run(conn: AsyncConnection, *, job_id: str, experiment: str, run_name: str, user: str,
                         params: dict[str, str]) -> None:
    """The job's run (``run_id`` = ``job_id``, SCHEDULED) in ``experiment`` (made when missing), with ``params``.

    Idempotent: an existing run is kept as it is, and only params it does not have yet are added (a param
    that differs from the logged one raises ``InvalidValue``, as MLflow would). Params MLflow could not hold
    (a bad name, a value over 6000 characters) are left out: the job's spec keeps them all, and
    ``GET experiments/{jobId}`` shows its hyperparameters beside the logged params."""
    exists = (await conn.execute(select(runs.c.run_id).where(runs.c.run_id == job_id))).first()
    if exists is None:
        experiment_id = await ensure_experiment(conn, experiment)
        await create_run(conn, experiment_id=experiment_id, user_id=user, run_name=run_name, start_time=None,
                         tags={JOB_TAG: job_id}, run_id=job_id, job_id=job_id, status="SCHEDULED")
    fitting = {k: v for k, v in params.items() if key_problem(k) is None and param_problem(v) is None}
    if fitting:
        await log_params(conn, job_id, fitting)


async def run_row(conn: AsyncConnection, run_id: str) -> Any:
    """The run's row; ``ResourceMissing`` for an unknown id."""
    row = (await conn.execute(select(runs).where(runs.c.run_id == run_id))).one_or_none()
    if row is None:
        raise ResourceMissing(f"Run '{run_id}' not found", "run_id")
    return row


async def update_run(conn: AsyncConnection, run_id: str, *, status: RunStatus | None = None,
                     end_time: int | None = None, run_name: str | None = None) -> Any:
    """Change a run's status (a terminal one sets ``end_time``, now when not given), end time or name."""
    row = await run_row(conn, run_id)
    values: dict[str, Any] = {}
    if status is not None:
        values["status"] = status
        if status in TERMINAL:
            values["end_time"] = end_time if end_time is not None else now_ms()
        elif status == "RUNNING":
            values["end_time"] = None  # resumed (a retried job's run, MLflow's start_run(run_id))
    if end_time is not None:
        values["end_time"] = end_time
    if run_name:
        values["run_name"] = run_name
        await set_tags(conn, run_id, {RUN_NAME_TAG: run_name})
    if values:
        await conn.execute(update(runs).where(runs.c.run_id == run_id).values(**values))
    return await run_row(conn, run_id) if values else row


async def set_job_run_status(conn: AsyncConnection, job_id: str,
                             status: Literal["RUNNING", "FINISHED", "FAILED", "KILLED"]) -> None:
    """Follow the job's state on its run; a job without a run (made before tracking was there) is skipped."""
    exists = (await conn.execute(select(runs.c.run_id).where(runs.c.run_id == job_id))).first()
    if exists is not None:
        await update_run(conn, job_id, status=status)


# -- params and tags -----------------------------------------------------------------------------------------

async def run_params(conn: AsyncConnection, run_id: str) -> dict[str, str]:
    rows = await conn.execute(select(params.c.key, params.c.value).where(params.c.run_id == run_id)
                              .order_by(params.c.key))
    return {row.key: row.value for row in rows}


async def run_tags(conn: AsyncConnection, run_id: str) -> dict[str, str]:
    rows = await conn.execute(select(tags.c.key, tags.c.value).where(tags.c.run_id == run_id).order_by(tags.c.key))
    return {row.key: row.value for row in rows}


async def log_params(conn: AsyncConnection, run_id: str, values: Mapping[str, str]) -> None:
    """Add params; one logged again with the same value is fine, with another value ``InvalidValue``."""
    if not values:
        return
    await conn.execute(_insert(conn, params).values(
        [{"run_id": run_id, "key": k, "value": v} for k, v in values.items()]).on_conflict_do_nothing())
    stored = await conn.execute(select(params.c.key, params.c.value).where(
        and_(params.c.run_id == run_id, params.c.key.in_(list(values)))))
    for row in stored:
        if row.value != values[row.key]:
            raise InvalidValue(
                f"Changing param values is not allowed. Param with key='{row.key}' was already logged with "
                f"value='{row.value}' for run ID='{run_id}'. Attempted logging new value '{values[row.key]}'.",
                f"params.{row.key}")


async def delete_tag(conn: AsyncConnection, run_id: str, key: str) -> bool:
    """Remove a tag; False when the run had none by that name."""
    deleted = await conn.execute(tags.delete().where(tags.c.run_id == run_id, tags.c.key == key))
    return bool(deleted.rowcount)


async def set_tags(conn: AsyncConnection, run_id: str, values: Mapping[str, str]) -> None:
    """Set tags, overwriting earlier values."""
    if not values:
        return
    insert = _insert(conn, tags).values([{"run_id": run_id, "key": k, "value": v} for k, v in values.items()])
    await conn.execute(insert.on_conflict_do_update(index_elements=[tags.c.run_id, tags.c.key],
                                                    set_={"value": insert.excluded.value}))


# -- metrics -------------------------------------------------------------------------------------------------

async def log_points(conn: AsyncConnection, run_id: str, points: Sequence[MetricPoint]) -> int:
    """Append metric points to the run (the server's clock for a point without a timestamp); how many."""
    if not points:
        return 0
    now = now_ms()
    rows = [{"run_id": run_id, "key": p.key, "value": 0.0 if math.isnan(p.value) else p.value,
             "is_nan": math.isnan(p.value), "step": p.step, "timestamp": now if p.timestamp is None else p.timestamp}
            for p in points]
    await conn.execute(metrics.insert(), rows)
    return len(rows)


def point_value(value: float, is_nan: bool) -> float:
    return math.nan if is_nan else float(value)


async def latest_metrics(conn: AsyncConnection, run_id: str, keys: Sequence[str] | None = None) -> dict[str, Any]:
    """Each key's latest point (highest step, then timestamp, then value: MLflow's order), as rows by key."""
    return {row.key: row for row in await latest_points(conn, [run_id], keys)}


async def latest_points(conn: AsyncConnection, run_ids: Sequence[str], keys: Sequence[str] | None = None) -> Any:
    """The latest point of each (run, key) of ``run_ids``, ordered by run and key: one query for many runs."""
    m = metrics.c
    rank = func.row_number().over(partition_by=(m.run_id, m.key), order_by=(
        m.step.desc(), m.timestamp.desc(), m.is_nan.desc(), m.value.desc()))
    inner = select(m.run_id, m.key, m.value, m.is_nan, m.step, m.timestamp, rank.label("rank")) \
        .where(m.run_id.in_(list(run_ids)))
    if keys is not None:
        inner = inner.where(m.key.in_(list(keys)))
    ranked = inner.subquery()
    return await conn.execute(select(ranked).where(ranked.c.rank == 1).order_by(ranked.c.run_id, ranked.c.key))

"""Training tables and migrations (module ``training``).

``training_jobs``
    One row per job. ``spec`` is the accepted ``JobCreate`` as JSON (hyperparameters, architecture, image,
    command, resources, retry policy: immutable once created). ``status`` follows ``JobStatus``: queued,
    scheduled, running, retrying, succeeded, failed, cancelled. ``attempt`` is the current (or last) attempt
    number (0 before the first start); ``next_attempt_at`` when a retrying job may start again; ``deadline_at``
    is fixed at the first start (``spec.deadlineS`` later), retries included. The replica whose supervisor
    manages a job holds its lease (``lease_owner``, ``lease_until``, renewed while it lives); a job whose lease
    lapsed (its replica died) is taken over, and the runtime's ``active()`` list ties it back to its attempt.
    ``token_hash`` is the SHA-256 of the job-scoped token (the token itself is never stored); the token is
    refused once the job is finished. ``cancel_requested`` is set by the API, acted on by the supervisor.
    ``result_model_id`` is the catalog model registered on success; ``evaluation_run_id`` the evaluation started.
``training_job_events``
    The timeline, append-only: each state change (``status``) with its ``reason`` and attempt, plus notable
    events that change no state (``event``: e.g. ``metrics_dropped``, ``registered``, ``evaluation_started``).
``training_artifacts``
    Every file a job stored through ``PUT training/jobs/{id}/artifacts/{path}`` (``path`` under ``checkpoints/``
    or ``output/``): its object-store key, size and SHA-256, and the attempt that stored it (a later PUT of the
    same path replaces the row). The files under ``output/`` of a succeeded job become the catalog model's files.
``training_experiments``, ``training_runs``, ``training_params``, ``training_tags``, ``training_metrics``
    The tracking store behind ``GET experiments/{jobId}`` and the MLflow tracking REST subset. A job's run has
    ``run_id`` = the job id, in the experiment named by the job (``experiment``, default its name); runs made by
    an ``mlflow`` client outside any job have a generated id and ``job_id`` NULL. ``training_metrics`` keeps every
    logged point (MLflow allows several values per key and step, told apart by timestamp); ``latest`` metrics
    are derived by query, not stored twice.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from adapters.store import AutoId, Json, Migration, UtcDateTime, create_tables

__all__ = [
    "TRAINING_MIGRATIONS",
    "artifacts",
    "events",
    "experiments",
    "jobs",
    "metrics",
    "params",
    "runs",
    "tags",
]

_JOB_FK = "training_jobs.id"
_RUN_FK = "training_runs.run_id"


def _tables(meta: MetaData) -> tuple[Table, ...]:
    job = Table(
        "training_jobs", meta,
        Column("id", String(40), primary_key=True),
        Column("name", String(40), nullable=False),  # DNS-1035 label; runtimes name resources after it
        Column("job_type", String(16), nullable=False),  # finetune | from_scratch | pretrain | distributed
        Column("status", String(12), nullable=False),  # JobStatus
        Column("spec", Json, nullable=False),  # JobCreate as accepted (camelCase JSON)
        Column("owner_team", String(64), nullable=False),
        Column("base_model_id", String(100)),
        Column("dataset_id", String(100), nullable=False),
        Column("dataset_version", Integer, nullable=False),
        Column("experiment", String(200), nullable=False),
        Column("runtime", String(16), nullable=False),  # kubernetes | local, fixed at creation
        Column("attempt", Integer, nullable=False),
        Column("next_attempt_at", UtcDateTime),
        Column("deadline_at", UtcDateTime),
        Column("exit_code", Integer),
        Column("reason", Text),  # the last failure's or cancellation's reason, for people
        Column("token_hash", String(64), nullable=False),
        Column("cancel_requested", Boolean, nullable=False),
        Column("result_model_id", String(100)),
        Column("evaluation_run_id", String(100)),
        Column("created_at", UtcDateTime, nullable=False),
        Column("created_by", String(100), nullable=False),
        Column("started_at", UtcDateTime),
        Column("finished_at", UtcDateTime),
        Column("updated_at", UtcDateTime, nullable=False),
        Column("lease_owner", String(100)),
        Column("lease_until", UtcDateTime),
    )
    Index("ix_training_jobs_name", job.c.name, unique=True)  # runtimes name resources after it
    Index("ix_training_jobs_created", job.c.created_at, job.c.id)
    Index("ix_training_jobs_status", job.c.status, job.c.lease_until)
    Index("ix_training_jobs_type", job.c.job_type, job.c.created_at)
    Index("ix_training_jobs_base_model", job.c.base_model_id, job.c.created_at)
    Index("ix_training_jobs_result_model", job.c.result_model_id)
    Index("ix_training_jobs_token", job.c.token_hash, unique=True)
    event = Table(
        "training_job_events", meta,
        Column("id", AutoId, primary_key=True, autoincrement=True),
        Column("job_id", String(40), ForeignKey(_JOB_FK), nullable=False),
        Column("at", UtcDateTime, nullable=False),
        Column("status", String(12)),  # the state entered, or NULL for an event that changes none
        Column("event", String(40), nullable=False),  # = status for a state change
        Column("attempt", Integer, nullable=False),
        Column("reason", Text, nullable=False),
        Column("actor", String(100), nullable=False),  # a key's name, "supervisor:<owner>" or "system"
        Column("detail", Json, nullable=False),
    )
    Index("ix_training_job_events_job", event.c.job_id, event.c.id)
    artifact = Table(
        "training_artifacts", meta,
        Column("job_id", String(40), ForeignKey(_JOB_FK), primary_key=True),
        Column("path", String(512), primary_key=True),  # checkpoints/step-100/model.safetensors, output/config.json
        Column("key", String(1024), nullable=False),  # the object-store key: training/{job_id}/{path}
        Column("size_bytes", BigInteger, nullable=False),
        Column("sha256", String(64), nullable=False),
        Column("attempt", Integer, nullable=False),
        Column("created_at", UtcDateTime, nullable=False),
    )
    experiment = Table(
        "training_experiments", meta,
        Column("experiment_id", AutoId, primary_key=True, autoincrement=True),
        Column("name", String(500), nullable=False),
        Column("artifact_location", String(1000), nullable=False),
        Column("lifecycle_stage", String(10), nullable=False),  # active | deleted
        Column("tags", Json, nullable=False),  # {key: value}
        Column("creation_time", BigInteger, nullable=False),  # epoch ms, as MLflow reports it
        Column("last_update_time", BigInteger, nullable=False),
        UniqueConstraint("name", name="uq_training_experiments_name"),
    )
    run = Table(
        "training_runs", meta,
        Column("run_id", String(64), primary_key=True),
        Column("experiment_id", Integer, ForeignKey("training_experiments.experiment_id"), nullable=False),
        Column("job_id", String(40), ForeignKey(_JOB_FK)),
        Column("run_name", String(250), nullable=False),
        Column("user_id", String(100), nullable=False),
        Column("status", String(10), nullable=False),  # RUNNING | SCHEDULED | FINISHED | FAILED | KILLED
        Column("start_time", BigInteger, nullable=False),
        Column("end_time", BigInteger),
        Column("lifecycle_stage", String(10), nullable=False),
        Column("artifact_uri", String(1000), nullable=False),
    )
    Index("ix_training_runs_experiment", run.c.experiment_id, run.c.start_time)
    Index("ix_training_runs_job", run.c.job_id)
    param = Table(
        "training_params", meta,
        Column("run_id", String(64), ForeignKey(_RUN_FK), primary_key=True),
        Column("key", String(250), primary_key=True),
        Column("value", Text, nullable=False),  # MLflow: ≤ 6000 characters; a param never changes once logged
    )
    tag = Table(
        "training_tags", meta,
        Column("run_id", String(64), ForeignKey(_RUN_FK), primary_key=True),
        Column("key", String(250), primary_key=True),
        Column("value", Text, nullable=False),
    )
    metric = Table(
        "training_metrics", meta,
        Column("id", AutoId, primary_key=True, autoincrement=True),
        Column("run_id", String(64), ForeignKey(_RUN_FK), nullable=False),
        Column("key", String(250), nullable=False),
        # NaN is stored as MLflow's SQL store does, value 0 and is_nan true (SQLite would store a NaN as NULL);
        # ±inf are stored as they are (both databases keep them).
        Column("value", Float, nullable=False),
        Column("is_nan", Boolean, nullable=False),
        Column("step", BigInteger, nullable=False),
        Column("timestamp", BigInteger, nullable=False),  # epoch ms
    )
    Index("ix_training_metrics_run_key", metric.c.run_id, metric.c.key, metric.c.step, metric.c.timestamp)
    return job, event, artifact, experiment, run, param, tag, metric


TRAINING_MIGRATIONS = (
    Migration(1, "training jobs, timeline, artifacts; tracking store (experiments, runs, params, tags, metrics)",
              create_tables(*_tables(MetaData()))),
)

jobs, events, artifacts, experiments, runs, params, tags, metrics = _tables(MetaData())

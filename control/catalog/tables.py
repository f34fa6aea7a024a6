"""Catalog tables and migrations (module ``catalog``).

Models: ``catalog_models`` holds each model's current state; every create and
definition change also appends the API snapshot to ``catalog_model_versions``, so
two versions can be diffed field by field. Deletion is a tombstone
(``deleted_at``): versions, approvals and audit entries keep pointing at a row that
still exists, and the name becomes free again. ``catalog_model_files`` maps a
file name to the immutable object that currently holds it (a re-upload points the
row at a new object, then deletes the old one). ``catalog_model_refs`` is the seam
through which later modules (endpoints, training jobs) declare that they depend
on a model, which blocks its deletion. ``training_job_id`` (migration 2) is the training job that
produced a model registered through ``MODEL_REGISTRY`` (NULL for models created by hand); at most
one model per job, so a retried registration finds the first one.

Datasets: ``catalog_datasets`` carries the latest *ready* version's headline numbers
(row count, PII status, quality score) so list filters are plain indexed columns;
``catalog_dataset_versions`` keeps every upload attempt, ready or invalid, with its
reports. ``status`` is ``uploading`` only while a request is streaming the file.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Float, ForeignKey, Index, Integer, MetaData, String, Table, Text, text
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.store import AutoId, Json, Migration, UtcDateTime, create_tables

__all__ = [
    "CATALOG_MIGRATIONS",
    "DATASETS_TOPIC",
    "MODELS_TOPIC",
    "approvals",
    "dataset_versions",
    "datasets",
    "model_files",
    "model_refs",
    "model_versions",
    "models",
]

MODELS_TOPIC = "catalog.models"  # ChangeFeed topics marked on every change
DATASETS_TOPIC = "catalog.datasets"


def _audit_columns() -> list[Column[object]]:
    return [
        Column("created_at", UtcDateTime, nullable=False),
        Column("created_by", String(100), nullable=False),
        Column("updated_at", UtcDateTime, nullable=False),
        Column("updated_by", String(100), nullable=False),
        Column("deleted_at", UtcDateTime),
        Column("deleted_by", String(100)),
    ]


def _model_tables(meta: MetaData, *, version: int = 2) -> tuple[Table, ...]:
    """The model tables as migration ``version`` leaves them (1 creates them; 2 adds ``training_job_id``)."""
    mod = Table(
        "catalog_models", meta,
        Column("id", String(40), primary_key=True),
        Column("name", String(100), nullable=False),
        Column("type", String(20), nullable=False),
        Column("status", String(20), nullable=False),
        Column("version", Integer, nullable=False),
        Column("review_round", Integer, nullable=False),
        Column("description", Text, nullable=False),
        Column("owner_team", String(64), nullable=False),
        Column("format", String(20)),
        Column("provider", Json),
        Column("parent_model_id", String(40), ForeignKey("catalog_models.id")),
        Column("training_datasets", Json, nullable=False),
        Column("tags", Json, nullable=False),
        Column("labels", Json, nullable=False),
        *_audit_columns(),
    )
    live = mod.c.deleted_at.is_(None)
    Index("uq_catalog_models_live_name", mod.c.name, unique=True, sqlite_where=live, postgresql_where=live)
    if version >= 2:
        mod.append_column(Column("training_job_id", String(40)))
        produced = mod.c.training_job_id.is_not(None)
        Index("uq_catalog_models_training_job", mod.c.training_job_id, unique=True, sqlite_where=produced,
              postgresql_where=produced)
    Index("ix_catalog_models_status", mod.c.status)
    Index("ix_catalog_models_owner_team", mod.c.owner_team)
    Index("ix_catalog_models_parent", mod.c.parent_model_id)
    versions = Table(
        "catalog_model_versions", meta,
        Column("model_id", String(40), ForeignKey("catalog_models.id"), primary_key=True),
        Column("version", Integer, primary_key=True),
        Column("snapshot", Json, nullable=False),
        Column("created_at", UtcDateTime, nullable=False),
        Column("created_by", String(100), nullable=False),
    )
    appr = Table(
        "catalog_model_approvals", meta,
        Column("id", AutoId, primary_key=True, autoincrement=True),
        Column("model_id", String(40), ForeignKey("catalog_models.id"), nullable=False),
        Column("model_version", Integer, nullable=False),
        Column("review_round", Integer, nullable=False),
        Column("decision", String(10), nullable=False),  # approve | reject
        Column("note", Text, nullable=False),
        Column("approver", String(100), nullable=False),
        Column("approver_key_id", String(40)),
        Column("created_at", UtcDateTime, nullable=False),
    )
    Index("ix_catalog_model_approvals_model", appr.c.model_id, appr.c.id)
    files = Table(
        "catalog_model_files", meta,
        Column("model_id", String(40), ForeignKey("catalog_models.id"), primary_key=True),
        Column("filename", String(255), primary_key=True),
        Column("object_key", String(1024), nullable=False),
        Column("storage_uri", Text, nullable=False),
        Column("size_bytes", BigInteger, nullable=False),
        Column("sha256", String(64), nullable=False),
        Column("content_type", String(200), nullable=False),
        Column("uploaded_at", UtcDateTime, nullable=False),
        Column("uploaded_by", String(100), nullable=False),
    )
    refs = Table(
        "catalog_model_refs", meta,
        Column("model_id", String(40), ForeignKey("catalog_models.id"), primary_key=True),
        Column("ref_kind", String(20), primary_key=True),  # endpoint | training_job | model
        Column("ref_id", String(200), primary_key=True),
        Column("created_at", UtcDateTime, nullable=False),
    )
    return mod, versions, appr, files, refs


def _dataset_tables(meta: MetaData) -> tuple[Table, ...]:
    ds = Table(
        "catalog_datasets", meta,
        Column("id", String(40), primary_key=True),
        Column("name", String(100), nullable=False),
        Column("description", Text, nullable=False),
        Column("owner_team", String(64), nullable=False),
        Column("format", String(10)),
        Column("expected_schema", Json),
        Column("required_columns", Json, nullable=False),
        Column("pii_rules", Json),
        Column("latest_version", Integer),
        Column("row_count", BigInteger),
        Column("pii_status", String(10), nullable=False),  # unknown | clean | detected
        Column("quality_score", Float),
        *_audit_columns(),
    )
    live = ds.c.deleted_at.is_(None)
    Index("uq_catalog_datasets_live_name", ds.c.name, unique=True, sqlite_where=live, postgresql_where=live)
    Index("ix_catalog_datasets_owner_team", ds.c.owner_team)
    versions = Table(
        "catalog_dataset_versions", meta,
        Column("dataset_id", String(40), ForeignKey("catalog_datasets.id"), primary_key=True),
        Column("version", Integer, primary_key=True),
        Column("status", String(10), nullable=False),  # uploading | ready | invalid
        Column("filename", String(255), nullable=False),
        Column("format", String(10)),
        Column("object_key", String(1024)),
        Column("storage_uri", Text),
        Column("size_bytes", BigInteger),
        Column("sha256", String(64)),
        Column("row_count", BigInteger),
        Column("pii_status", String(10)),
        Column("quality_score", Float),
        Column("validation", Json),
        Column("pii", Json),
        Column("quality", Json),
        Column("profile", Json),
        Column("created_at", UtcDateTime, nullable=False),
        Column("created_by", String(100), nullable=False),
    )
    return ds, versions


def _all(meta: MetaData, *, version: int = 2) -> tuple[Table, ...]:
    return (*_model_tables(meta, version=version), *_dataset_tables(meta))


async def _training_job_column(conn: AsyncConnection) -> None:
    # Nullable with no default: both databases add it without rewriting the table; both support partial indexes.
    await conn.execute(text("ALTER TABLE catalog_models ADD COLUMN training_job_id VARCHAR(40)"))
    await conn.execute(text("CREATE UNIQUE INDEX uq_catalog_models_training_job ON catalog_models (training_job_id) "
                            "WHERE training_job_id IS NOT NULL"))


CATALOG_MIGRATIONS = (
    Migration(1, "models, versions, approvals, files, refs; datasets and versions",
              create_tables(*_all(MetaData(), version=1))),
    Migration(2, "models record the training job that produced them (unique where set)", _training_job_column),
)

models, model_versions, approvals, model_files, model_refs, datasets, dataset_versions = _all(MetaData())

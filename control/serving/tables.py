"""Serving tables and migrations (module ``serving``).

``serving_endpoints``
    One row per endpoint, live or being deleted (a finished delete removes the row, so its name and route
    are free again; one in status ``deleting`` keeps them until a retry finishes). The deployment columns
    (image, GPUs, replicas, autoscaling, vLLM args) mirror the revision the stable slot runs
    (``current_revision``); ``canary_revision``/``canary_percent`` describe a canary. ``slots`` is what the
    reconciler last read from the runtime, per slot (``SlotState`` as JSON, base URL included: the
    ``endpoints`` snapshot is built from it); ``checked_at`` is when. ``model`` is the bound model's
    metadata as of the current revision's deploy.
``serving_revisions``
    Every deploy and redeploy, immutable but for ``state`` (active, canary, superseded, rolled_back, failed)
    and ``reason``: the model version, image, resources, replicas, args, the ``DeploymentSpec`` a runtime is
    handed (``spec``; for external models the provider config, references only) and the rendered
    ``manifests``. A rollback applies an older row's ``spec`` again.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Column, Float, ForeignKey, Index, Integer, MetaData, String, Table, Text

from adapters.store import Json, Migration, UtcDateTime, create_tables

__all__ = ["SERVING_MIGRATIONS", "SERVING_TOPIC", "endpoints", "revisions"]

SERVING_TOPIC = "serving.endpoints"  # ChangeFeed topic marked on every endpoint change


def _tables(meta: MetaData) -> tuple[Table, Table]:
    ep = Table(
        "serving_endpoints", meta,
        Column("id", String(40), primary_key=True),
        Column("name", String(40), nullable=False),
        Column("route", String(100), nullable=False),
        Column("environment", String(4), nullable=False),
        Column("model_id", String(40), nullable=False),
        Column("model", Json, nullable=False),
        Column("runtime", String(12), nullable=False),  # kubernetes | local | external
        Column("image", String(300)),
        Column("use_gpu", Boolean, nullable=False),
        Column("gpu_count", Integer, nullable=False),
        Column("min_replicas", Integer, nullable=False),
        Column("max_replicas", Integer, nullable=False),
        Column("autoscaling", Json, nullable=False),
        Column("vllm_args", Json, nullable=False),
        Column("queue_timeout_s", Float, nullable=False),
        Column("current_revision", Integer, nullable=False),
        Column("canary_revision", Integer),
        Column("canary_percent", Integer, nullable=False),
        Column("canary_started_at", UtcDateTime),
        Column("status", String(20), nullable=False),
        Column("status_reason", Text),
        Column("slots", Json, nullable=False),
        Column("checked_at", UtcDateTime),
        Column("created_at", UtcDateTime, nullable=False),
        Column("created_by", String(100), nullable=False),
        Column("updated_at", UtcDateTime, nullable=False),
        Column("updated_by", String(100), nullable=False),
    )
    Index("uq_serving_endpoints_name", ep.c.name, unique=True)
    Index("uq_serving_endpoints_route", ep.c.route, unique=True)
    Index("ix_serving_endpoints_model", ep.c.model_id)
    Index("ix_serving_endpoints_environment", ep.c.environment)
    rev = Table(
        "serving_revisions", meta,
        Column("endpoint_id", String(40), ForeignKey("serving_endpoints.id", ondelete="CASCADE"), primary_key=True),
        Column("revision", Integer, primary_key=True),
        Column("state", String(12), nullable=False),
        Column("model_id", String(40), nullable=False),
        Column("model_version", Integer, nullable=False),
        Column("image", String(300)),
        Column("use_gpu", Boolean, nullable=False),
        Column("gpu_count", Integer, nullable=False),
        Column("resources", Json, nullable=False),
        Column("min_replicas", Integer, nullable=False),
        Column("max_replicas", Integer, nullable=False),
        Column("autoscaling", Json, nullable=False),
        Column("vllm_args", Json, nullable=False),
        Column("served_model_name", String(200), nullable=False),
        Column("spec", Json, nullable=False),
        Column("manifests", Json, nullable=False),
        Column("reason", Text, nullable=False),
        Column("created_at", UtcDateTime, nullable=False),
        Column("created_by", String(100), nullable=False),
    )
    return ep, rev


SERVING_MIGRATIONS = (
    Migration(1, "serving endpoints and their revisions", create_tables(*_tables(MetaData()))),
)

endpoints, revisions = _tables(MetaData())

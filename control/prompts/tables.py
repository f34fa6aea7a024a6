"""Prompts tables and migrations (module ``prompts``).

``prompt_templates``
    One row per template name: its latest version, where it is owned (``api`` or ``config``: a
    template the YAML declares is read-only through the API) and a tombstone (``deleted_at``).
``prompt_template_versions``
    Every version ever written, immutable: ``document`` is the ``TemplateDoc`` as JSON, so an
    experiment naming ``name@3`` renders exactly what version 3 said, forever.
``prompt_experiments``
    One row per experiment id: ``document`` (``ExperimentDoc``), ``runtime`` (``ExperimentRuntime``:
    state, adaptive weights, stopped variants, winner, rollback), ``revision`` (bumped on every
    declaration change), ``source`` and a tombstone.
``prompt_experiment_events``
    The experiment's history, append-only: created, updated, started, paused, stopped, rolled back,
    variant stopped by a guardrail (with the measured value and threshold), weights changed by the
    adaptive allocator, winner declared. Also written to the audit log when an actor did it.
"""

from __future__ import annotations

from sqlalchemy import Column, ForeignKey, Index, Integer, MetaData, String, Table, Text

from adapters.store import AutoId, Json, Migration, UtcDateTime, create_tables

__all__ = ["PROMPTS_MIGRATIONS", "experiment_events", "experiments", "template_versions", "templates"]


def _tables(meta: MetaData) -> tuple[Table, Table, Table, Table]:
    tpl = Table(
        "prompt_templates", meta,
        Column("name", String(64), primary_key=True),
        Column("latest_version", Integer, nullable=False),
        Column("source", String(8), nullable=False),  # api | config
        Column("created_at", UtcDateTime, nullable=False),
        Column("created_by", String(100), nullable=False),
        Column("updated_at", UtcDateTime, nullable=False),
        Column("updated_by", String(100), nullable=False),
        Column("deleted_at", UtcDateTime),
    )
    versions = Table(
        "prompt_template_versions", meta,
        Column("name", String(64), ForeignKey("prompt_templates.name"), primary_key=True),
        Column("version", Integer, primary_key=True),
        Column("document", Json, nullable=False),
        Column("source", String(8), nullable=False),
        Column("created_at", UtcDateTime, nullable=False),
        Column("created_by", String(100), nullable=False),
    )
    exp = Table(
        "prompt_experiments", meta,
        Column("id", String(64), primary_key=True),
        Column("route", String(200), nullable=False),
        Column("document", Json, nullable=False),
        Column("runtime", Json, nullable=False),
        Column("revision", Integer, nullable=False),
        Column("source", String(8), nullable=False),
        Column("created_at", UtcDateTime, nullable=False),
        Column("created_by", String(100), nullable=False),
        Column("updated_at", UtcDateTime, nullable=False),
        Column("updated_by", String(100), nullable=False),
        Column("deleted_at", UtcDateTime),
    )
    Index("ix_prompt_experiments_route", exp.c.route)
    events = Table(
        "prompt_experiment_events", meta,
        Column("id", AutoId, primary_key=True, autoincrement=True),
        Column("experiment_id", String(64), ForeignKey("prompt_experiments.id"), nullable=False),
        Column("at", UtcDateTime, nullable=False),
        Column("kind", String(32), nullable=False),
        Column("actor", String(100), nullable=False),  # a key id, "config" or "supervisor"
        Column("detail", Json, nullable=False),
        Column("message", Text, nullable=False),
    )
    Index("ix_prompt_experiment_events_exp", events.c.experiment_id, events.c.id)
    return tpl, versions, exp, events


PROMPTS_MIGRATIONS = (
    Migration(1, "prompt templates with versions, experiments with runtime state and events",
              create_tables(*_tables(MetaData()))),
)

templates, template_versions, experiments, experiment_events = _tables(MetaData())

"""Governance tables and migrations (module ``governance``).

``governance_policies`` holds each policy's current state; every create and update
also appends the full snapshot to ``governance_policy_versions``, so history is
complete and a version can be read back exactly as it was. Deletion is a
tombstone (``deleted_at``): versions and audit entries keep referring to a row
that still exists, and the name becomes free for a new policy.
``governance_policy_teams`` denormalises ``document.scope.teams`` so "policies for
team X" is an indexed query on both databases instead of JSON probing.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Column, ForeignKey, Index, Integer, MetaData, String, Table, Text

from adapters.store import Json, Migration, UtcDateTime, create_tables

__all__ = ["GOVERNANCE_MIGRATIONS", "POLICIES_TOPIC", "policies", "policy_teams", "policy_versions"]

POLICIES_TOPIC = "governance.policies"  # ChangeFeed topic marked on every policy change


def _tables(meta: MetaData) -> tuple[Table, Table, Table]:
    pol = Table(
        "governance_policies", meta,
        Column("id", String(40), primary_key=True),
        Column("name", String(100), nullable=False),
        Column("description", Text, nullable=False),
        Column("enabled", Boolean, nullable=False),
        Column("version", Integer, nullable=False),
        Column("document", Json, nullable=False),
        Column("created_at", UtcDateTime, nullable=False),
        Column("created_by", String(100), nullable=False),
        Column("updated_at", UtcDateTime, nullable=False),
        Column("updated_by", String(100), nullable=False),
        Column("deleted_at", UtcDateTime),
        Column("deleted_by", String(100)),
    )
    Index("uq_governance_policies_live_name", pol.c.name, unique=True,
          sqlite_where=pol.c.deleted_at.is_(None), postgresql_where=pol.c.deleted_at.is_(None))
    versions = Table(
        "governance_policy_versions", meta,
        Column("policy_id", String(40), ForeignKey("governance_policies.id"), primary_key=True),
        Column("version", Integer, primary_key=True),
        Column("name", String(100), nullable=False),
        Column("description", Text, nullable=False),
        Column("enabled", Boolean, nullable=False),
        Column("document", Json, nullable=False),
        Column("created_at", UtcDateTime, nullable=False),
        Column("created_by", String(100), nullable=False),
    )
    teams = Table(
        "governance_policy_teams", meta,
        Column("policy_id", String(40), ForeignKey("governance_policies.id"), primary_key=True),
        Column("team", String(64), primary_key=True),
    )
    Index("ix_governance_policy_teams_team", teams.c.team)
    return pol, versions, teams


GOVERNANCE_MIGRATIONS = (
    Migration(1, "policies, versions and team index", create_tables(*_tables(MetaData()))),
)

policies, policy_versions, policy_teams = _tables(MetaData())

"""Policy CRUD with versioning; every change is audited and announced on the change feed.

Each mutation runs in one store transaction containing the policy row, its
version snapshot, the team index, the audit entry, the change-feed mark and the
gateway's ``policies`` snapshot (every enabled policy), so a failure at any step
leaves all of them as they were.
"""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Any

import msgspec
from sqlalchemy import Select, delete, exists, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.adminapi import Actor, Conflict, FieldError, ModuleContext, NotFound, Page, PageParams, refuse
from adapters.snapshots import PoliciesSnapshot, PolicySpec
from adapters.store import DuplicateKey, new_id, store_snapshots, utcnow
from control.governance.documents import PolicyDocument, schema_rule_errors, semantic_errors
from control.governance.protocol import Policy, PolicyCreate, PolicyUpdate, PolicyVersion
from control.governance.tables import POLICIES_TOPIC, policies, policy_teams, policy_versions

__all__ = ["PolicyService"]

def _to_policy(row: Any) -> Policy:
    fields = {f: getattr(row, f) for f in Policy.__struct_fields__ if f != "document"}
    return Policy(document=msgspec.convert(row.document, PolicyDocument), **fields)


def _to_version(row: Any) -> PolicyVersion:
    fields = {f: getattr(row, f) for f in PolicyVersion.__struct_fields__ if f != "document"}
    return PolicyVersion(document=msgspec.convert(row.document, PolicyDocument), **fields)


def _check(document: PolicyDocument) -> dict[str, Any]:
    """A 400 for the rules the schema states, else a 422 for those it cannot (adminapi.errors)."""
    refuse([FieldError(field=f, message=m) for f, m in schema_rule_errors(document)],
           [FieldError(field=f, message=m) for f, m in semantic_errors(document)])
    return msgspec.to_builtins(document)


async def _policies_snapshot(conn: AsyncConnection, generation: int, at: datetime) -> PoliciesSnapshot:
    """What the gateway enforces: every enabled, undeleted policy."""
    rows = (await conn.execute(select(policies).where(policies.c.deleted_at.is_(None), policies.c.enabled.is_(True))
                               .order_by(policies.c.name))).all()
    specs = [PolicySpec(id=r.id, name=r.name, version=r.version, document=msgspec.convert(r.document, PolicyDocument))
             for r in rows]
    return PoliciesSnapshot(generation=generation, published_at=at, policies=specs)


def _scope(document: PolicyDocument) -> str:
    teams = document.scope.teams
    return f" for teams {', '.join(teams)}"[:300] if teams else " for every team"


class PolicyService:
    def __init__(self, ctx: ModuleContext) -> None:
        self._store = ctx.store
        self._audit = ctx.audit
        self._changes = ctx.changes
        self._ctx = ctx

    async def create(self, actor: Actor, data: PolicyCreate) -> Policy:
        document = _check(data.document)
        now, who, policy_id = utcnow(), actor.principal.name, new_id("pol")
        row: dict[str, Any] = {"id": policy_id, "name": data.name, "description": data.description,
                               "enabled": data.enabled, "version": 1, "document": document, "created_at": now,
                               "created_by": who, "updated_at": now, "updated_by": who}
        try:
            async with self._store.begin() as conn:
                await conn.execute(insert(policies).values(row))
                await self._write_version_and_teams(conn, policy_id, 1, data.name, data.description, data.enabled,
                                                    data.document, now, who)
                policy = Policy(**{**row, "document": data.document})
                await self._audit.record(conn, actor, action="governance.policy.create", resource_type="policy",
                                         resource_id=policy_id, after=policy,
                                         detail=f"policy {data.name!r} version 1{_scope(data.document)}")
                await self._mark_and_publish(conn)
        except DuplicateKey as err:
            raise Conflict(f"A policy named {data.name!r} already exists") from err
        return policy

    async def publish_if_missing(self) -> None:
        """At start-up: a store whose policies predate snapshots gets its first one."""
        async with self._store.begin() as conn:
            found = await conn.execute(select(store_snapshots.c.kind).where(store_snapshots.c.kind == "policies"))
            if found.one_or_none() is None:
                await self._ctx.publish_snapshot(conn, "policies", partial(_policies_snapshot, conn))

    async def _mark_and_publish(self, conn: AsyncConnection) -> None:
        await self._changes.mark(conn, POLICIES_TOPIC)
        await self._ctx.publish_snapshot(conn, "policies", partial(_policies_snapshot, conn))

    async def get(self, policy_id: str) -> Policy:
        async with self._store.read() as conn:
            row = (await conn.execute(select(policies).where(policies.c.id == policy_id))).one_or_none()
        if row is None or row.deleted_at is not None:
            raise NotFound(f"No policy {policy_id!r}")
        return _to_policy(row)

    async def list(self, page: PageParams, *, name: str | None = None, team: str | None = None,
                   enabled: bool | None = None) -> Page[Policy]:
        query: Select[Any] = select(policies).where(policies.c.deleted_at.is_(None))
        if name:
            escaped = name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            query = query.where(policies.c.name.ilike(f"%{escaped}%", escape="\\"))
        if enabled is not None:
            query = query.where(policies.c.enabled == enabled)
        if team:
            listed = exists().where(policy_teams.c.policy_id == policies.c.id)
            names_team = exists().where(policy_teams.c.policy_id == policies.c.id, policy_teams.c.team == team)
            query = query.where(or_(names_team, ~listed))  # named explicitly, or scoped to every team
        async with self._store.read() as conn:
            total = (await conn.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
            rows = (await conn.execute(query.order_by(policies.c.created_at.desc(), policies.c.id.desc())
                                       .limit(page.page_size).offset(page.offset))).all()
        return page.wrap([_to_policy(r) for r in rows], total)

    async def update(self, actor: Actor, policy_id: str, data: PolicyUpdate) -> tuple[Policy, bool]:
        """Returns the policy and whether a new version was created (identical content: no new version)."""
        document = _check(data.document)
        try:
            async with self._store.begin() as conn:
                before = await self._locked(conn, policy_id)
                if data.expected_version is not None and data.expected_version != before.version:
                    raise Conflict(f"Policy {policy_id!r} is at version {before.version}, "
                                   f"not {data.expected_version}: reload and retry", {"version": before.version})
                if (data.name, data.description, data.enabled, data.document) == (
                        before.name, before.description, before.enabled, before.document):
                    return before, False
                now, who, version = utcnow(), actor.principal.name, before.version + 1
                await conn.execute(update(policies).where(policies.c.id == policy_id).values(
                    name=data.name, description=data.description, enabled=data.enabled, document=document,
                    version=version, updated_at=now, updated_by=who))
                await conn.execute(delete(policy_teams).where(policy_teams.c.policy_id == policy_id))
                await self._write_version_and_teams(conn, policy_id, version, data.name, data.description,
                                                    data.enabled, data.document, now, who)
                after = msgspec.structs.replace(before, name=data.name, description=data.description,
                                                enabled=data.enabled, document=data.document, version=version,
                                                updated_at=now, updated_by=who)
                changed = [f for f in ("name", "description", "enabled", "document")
                           if getattr(before, f) != getattr(after, f)]
                await self._audit.record(conn, actor, action="governance.policy.update", resource_type="policy",
                                         resource_id=policy_id, before=before, after=after,
                                         detail=f"version {version}: changed {', '.join(changed)}")
                await self._mark_and_publish(conn)
        except DuplicateKey as err:
            raise Conflict(f"A policy named {data.name!r} already exists") from err
        return after, True

    async def delete(self, actor: Actor, policy_id: str) -> Policy:
        async with self._store.begin() as conn:
            before = await self._locked(conn, policy_id)
            await conn.execute(update(policies).where(policies.c.id == policy_id)
                               .values(deleted_at=utcnow(), deleted_by=actor.principal.name))
            await conn.execute(delete(policy_teams).where(policy_teams.c.policy_id == policy_id))
            await self._audit.record(conn, actor, action="governance.policy.delete", resource_type="policy",
                                     resource_id=policy_id, before=before,
                                     detail=f"policy {before.name!r} deleted at version {before.version}")
            await self._mark_and_publish(conn)
        return before

    async def versions(self, policy_id: str, page: PageParams) -> Page[PolicyVersion]:
        """History stays readable after the policy is deleted."""
        where = policy_versions.c.policy_id == policy_id
        async with self._store.read() as conn:
            total = (await conn.execute(select(func.count()).select_from(policy_versions).where(where))).scalar_one()
            rows = (await conn.execute(select(policy_versions).where(where)
                                       .order_by(policy_versions.c.version.desc())
                                       .limit(page.page_size).offset(page.offset))).all()
        if total == 0:
            raise NotFound(f"No policy {policy_id!r}")
        return page.wrap([_to_version(r) for r in rows], total)

    async def version(self, policy_id: str, version: int) -> PolicyVersion:
        async with self._store.read() as conn:
            row = (await conn.execute(select(policy_versions).where(
                policy_versions.c.policy_id == policy_id, policy_versions.c.version == version))).one_or_none()
        if row is None:
            raise NotFound(f"No version {version} of policy {policy_id!r}")
        return _to_version(row)

    async def _locked(self, conn: AsyncConnection, policy_id: str) -> Policy:
        # FOR UPDATE serialises concurrent updates on PostgreSQL; SQLite's BEGIN IMMEDIATE already does.
        row = (await conn.execute(select(policies).where(policies.c.id == policy_id).with_for_update())).one_or_none()
        if row is None or row.deleted_at is not None:
            raise NotFound(f"No policy {policy_id!r}")
        return _to_policy(row)

    @staticmethod
    async def _write_version_and_teams(conn: AsyncConnection, policy_id: str, version: int, name: str,
                                       description: str, enabled: bool, document: PolicyDocument,
                                       at: Any, who: str) -> None:
        await conn.execute(insert(policy_versions).values(
            policy_id=policy_id, version=version, name=name, description=description, enabled=enabled,
            document=msgspec.to_builtins(document), created_at=at, created_by=who))
        teams = sorted(set(document.scope.teams))
        if teams:
            await conn.execute(insert(policy_teams), [{"policy_id": policy_id, "team": t} for t in teams])

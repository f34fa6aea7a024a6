"""The one key model's write path: teams and keys, each change audited and published to the gateway.

Every mutation runs in one store transaction holding the row change, its audit entry (actor, request id,
a summary or the caller's reason; never a secret), the ``admin.keys`` change-feed mark and the gateway's
``keys`` snapshot (every live team, every unrevoked and unexpired key, digests only): a failure at any
step leaves all of them as they were, and the gateway (which follows ``snapshot.keys``) sees a revocation
as soon as it commits. Publishing takes the snapshot row's lock, so concurrent key writers serialise and
the last commit always carries the whole picture.

Both ``/governance/keys`` (the full model) and the older ``/admin/keys`` (a narrower view; its keys land in
the ``default`` team) write through here, so neither can skip the audit or the snapshot.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from functools import partial
from typing import Any

import msgspec
from sqlalchemy import Select, String, and_, cast, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.adminapi.audit import AuditWriter
from adapters.adminapi.auth import Actor, generate_key, generate_secret
from adapters.adminapi.envelope import Page, PageParams
from adapters.adminapi.errors import Conflict, FieldError, NotFound, SemanticError, refuse
from adapters.adminapi.keymodel import CreatedKey, Key, KeyCreate, Team, TeamCreate, schema_rule_errors
from adapters.adminapi.rbac import DATA_PLANE_ROLE, Role
from adapters.dataplane import DEFAULT_TEAM_ID, gateway_keys, teams
from adapters.snapshots import KeySpec, KeysSnapshot, TeamSpec
from adapters.store import DuplicateKey, Store, new_id, publish, store_snapshots, utcnow
from policies.documents import Limits

__all__ = ["KEYS_TOPIC", "KeyRing", "has_admin_role", "has_role", "keys_snapshot"]

KEYS_TOPIC = "admin.keys"  # marked on every key or team change (the snapshot's own topic is marked too)
KEY_RESOURCE = "api_key"
TEAM_RESOURCE = "team"
_NANO = Decimal("1e-9")


# -- conversions ------------------------------------------------------------------------------------

def _usd(value: float | str | None) -> Decimal | None:
    """Exact dollars, rounded to the nano-dollar the column keeps (floats via their shortest repr)."""
    if value is None:
        return None
    return Decimal(repr(value) if isinstance(value, float) else value).quantize(_NANO, ROUND_HALF_EVEN)


def _usd_text(value: Decimal | None) -> str | None:
    return None if value is None else format(value.normalize(), "f")


def _limits(rpm: int | None, tpm: int | None, max_concurrent: int | None) -> dict[str, Any] | None:
    if rpm is None and tpm is None and max_concurrent is None:
        return None
    return msgspec.to_builtins(Limits(requests_per_minute=rpm, tokens_per_minute=tpm,
                                      max_concurrent_requests=max_concurrent))


def _limit_fields(stored: Any) -> dict[str, int | None]:
    limits = msgspec.convert(stored, Limits) if stored else Limits()
    return {"rpm": limits.requests_per_minute, "tpm": limits.tokens_per_minute,
            "max_concurrent": limits.max_concurrent_requests}


def _utc(value: datetime | None) -> datetime | None:
    """Aware UTC; a date-time beyond what UTC can hold is clamped (years 1 and 9999 with an offset)."""
    if value is None:
        return None
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        return (datetime.min if value.year == 1 else datetime.max).replace(tzinfo=UTC)


def _settings_columns(data: TeamCreate | KeyCreate) -> dict[str, Any]:
    return {"allowed_models": data.allowed_models, "limits": _limits(data.rpm, data.tpm, data.max_concurrent),
            "budget_usd": _usd(data.budget_usd), "budget_period": data.budget_period}


def _team_columns(data: TeamCreate) -> dict[str, Any]:
    refuse(schema_rule_errors(data))
    return {"name": data.name, "description": data.description, **_settings_columns(data)}


def _key_columns(data: KeyCreate) -> dict[str, Any]:
    refuse(schema_rule_errors(data))
    return {"name": data.name, "team_id": data.team_id, "roles": list(data.roles),
            "allowed_routes": data.allowed_routes, "expires_at": _utc(data.expires_at), **_settings_columns(data)}


def _to_team(row: Any) -> Team:
    return Team(id=row.id, name=row.name, description=row.description or "", allowed_models=row.allowed_models,
                budget_usd=_usd_text(row.budget_usd), budget_period=row.budget_period,
                created_at=row.created_at, updated_at=row.updated_at, **_limit_fields(row.limits))


def _status(row: Any, now: datetime) -> Any:
    if row.revoked_at is not None:
        return "revoked"
    return "expired" if row.expires_at is not None and row.expires_at <= now else "active"


def _to_key(row: Any, now: datetime | None = None) -> Key:
    return Key(id=row.id, name=row.name, team_id=row.team_id, roles=list(row.roles),
               status=_status(row, now or utcnow()), allowed_routes=row.allowed_routes,
               allowed_models=row.allowed_models, budget_usd=_usd_text(row.budget_usd),
               budget_period=row.budget_period, expires_at=row.expires_at, created_at=row.created_at,
               created_by=row.created_by, rotated_at=row.rotated_at, revoked_at=row.revoked_at,
               revoked_by=row.revoked_by, **_limit_fields(row.limits))


def _created(key: Key, token: str) -> CreatedKey:
    return CreatedKey(key=token, **{f: getattr(key, f) for f in Key.__struct_fields__})


def has_role(role: str) -> Any:
    """SQL: the key's JSON ``roles`` list holds ``role`` (role names are plain words, so text matching is exact)."""
    return cast(gateway_keys.c.roles, String).like(f'%"{role}"%')


def has_admin_role(role: Role) -> Any:
    """SQL: ``role`` is the key's highest admin role (``inference``: the key has no admin role at all)."""
    above = [~has_role(r.name) for r in Role if r > max(role, Role.inference)]
    return and_(*above) if role is Role.inference else and_(has_role(role.name), *above)


# -- the gateway's snapshot -------------------------------------------------------------------------

async def keys_snapshot(conn: AsyncConnection, generation: int, at: datetime) -> KeysSnapshot:
    """What the gateway authenticates from: live teams, and keys neither revoked nor already expired."""
    team_rows = (await conn.execute(select(teams).where(teams.c.deleted_at.is_(None)).order_by(teams.c.name))).all()
    k = gateway_keys.c
    key_rows = (await conn.execute(select(gateway_keys).where(
        k.revoked_at.is_(None), (k.expires_at.is_(None)) | (k.expires_at > at)).order_by(k.id))).all()
    return KeysSnapshot(
        generation=generation, published_at=at,
        teams=[TeamSpec(id=r.id, name=r.name, limits=msgspec.convert(r.limits, Limits) if r.limits else None,
                        budget_usd=r.budget_usd, budget_period=r.budget_period, allowed_models=r.allowed_models)
               for r in team_rows],
        keys=[KeySpec(id=r.id, name=r.name, team_id=r.team_id, secret_sha256=r.secret_sha256, roles=list(r.roles),
                      allowed_routes=r.allowed_routes, allowed_models=r.allowed_models,
                      limits=msgspec.convert(r.limits, Limits) if r.limits else None, budget_usd=r.budget_usd,
                      budget_period=r.budget_period, expires_at=r.expires_at)
              for r in key_rows],
        data_plane_keys_issued=(await conn.execute(
            select(k.id).where(has_role(DATA_PLANE_ROLE)).limit(1))).first() is not None,
    )


class KeyRing:
    """Teams and keys over one ``Store``; cheap to build (holds no state besides its collaborators)."""

    def __init__(self, store: Store, audit: AuditWriter) -> None:
        self._store = store
        self._audit = audit

    async def _changed(self, conn: AsyncConnection) -> None:
        await self._store.changes.mark(conn, KEYS_TOPIC)
        await publish(conn, self._store.changes, "keys", partial(keys_snapshot, conn))

    async def publish_if_missing(self) -> None:
        """At start-up: a store whose keys predate the snapshot (e.g. migrated admin keys) gets its first one."""
        async with self._store.begin() as conn:
            found = await conn.execute(select(store_snapshots.c.kind).where(store_snapshots.c.kind == "keys"))
            if found.one_or_none() is None:
                await publish(conn, self._store.changes, "keys", partial(keys_snapshot, conn))

    # -- keys ---------------------------------------------------------------------------------------

    async def create_key(self, actor: Actor, data: KeyCreate, *, action: str = "governance.key.create") -> CreatedKey:
        key_id, token, digest = generate_key()
        now, who = utcnow(), actor.principal.name
        columns = _key_columns(data)
        async with self._store.begin() as conn:
            # Locked: a concurrent delete of the team waits for this commit, then sees the key (409).
            team = await self._live_team(conn, data.team_id, lock=True, semantic=True)
            _check_expiry(columns["expires_at"], None, now)
            await conn.execute(gateway_keys.insert().values(
                id=key_id, secret_sha256=digest, created_at=now, created_by=who, **columns))
            key = _to_key(await self._key_row(conn, key_id), now)
            await self._audit.record(conn, actor, action=action, resource_type=KEY_RESOURCE, resource_id=key_id,
                                     after=key, detail=f"key {key.name!r} ({', '.join(key.roles)}) "
                                                       f"in team {team.name!r}")
            await self._changed(conn)
        return _created(key, token)

    async def update_key(self, actor: Actor, key_id: str, data: KeyCreate) -> tuple[Key, bool]:
        """Replace a key's settings; ``(key, changed)``. A revoked key cannot change (409)."""
        now = utcnow()
        async with self._store.begin() as conn:
            row = await self._key_row(conn, key_id, lock=True)
            before = _to_key(row, now)
            if row.revoked_at is not None:
                raise Conflict(f"Key {key_id!r} is revoked; create a new key instead")
            columns = _key_columns(data)
            if all(getattr(row, c) == v for c, v in columns.items()):
                return before, False
            if columns["team_id"] != row.team_id:
                await self._live_team(conn, data.team_id, lock=True, semantic=True)
            _check_expiry(columns["expires_at"], row.expires_at, now)
            await conn.execute(update(gateway_keys).where(gateway_keys.c.id == key_id).values(**columns))
            after = _to_key(await self._key_row(conn, key_id), now)
            changed = sorted(f for f in Key.__struct_fields__ if getattr(before, f) != getattr(after, f))
            await self._audit.record(conn, actor, action="governance.key.update", resource_type=KEY_RESOURCE,
                                     resource_id=key_id, before=before, after=after,
                                     detail=f"changed {', '.join(changed)}")
            await self._changed(conn)
        return after, True

    async def rotate_key(self, actor: Actor, key_id: str, reason: str | None = None) -> CreatedKey:
        """A new secret for the same key id; the old secret stops working when this commits."""
        now = utcnow()
        async with self._store.begin() as conn:
            row = await self._key_row(conn, key_id, lock=True)
            if row.revoked_at is not None:
                raise Conflict(f"Key {key_id!r} is revoked; a revoked key cannot be rotated")
            before = _to_key(row, now)
            token, digest = generate_secret(key_id)
            await conn.execute(update(gateway_keys).where(gateway_keys.c.id == key_id)
                               .values(secret_sha256=digest, rotated_at=now))
            after = _to_key(await self._key_row(conn, key_id), now)
            await self._audit.record(conn, actor, action="governance.key.rotate", resource_type=KEY_RESOURCE,
                                     resource_id=key_id, before=before, after=after,
                                     detail=reason or "new secret; the old one no longer works")
            await self._changed(conn)
        return _created(after, token)

    async def revoke_key(self, actor: Actor, key_id: str, reason: str | None = None, *,
                         action: str = "governance.key.revoke") -> Key:
        """Idempotent: revoking a revoked key returns it unchanged (and writes nothing)."""
        now = utcnow()
        async with self._store.begin() as conn:
            row = await self._key_row(conn, key_id, lock=True)
            before = _to_key(row, now)
            if row.revoked_at is not None:
                return before
            await conn.execute(update(gateway_keys).where(gateway_keys.c.id == key_id)
                               .values(revoked_at=now, revoked_by=actor.principal.name))
            after = _to_key(await self._key_row(conn, key_id), now)
            await self._audit.record(conn, actor, action=action, resource_type=KEY_RESOURCE, resource_id=key_id,
                                     before=before, after=after, detail=reason or "revoked")
            await self._changed(conn)
        return after

    async def get_key(self, key_id: str) -> Key:
        async with self._store.read() as conn:
            return _to_key(await self._key_row(conn, key_id))

    async def list_keys(self, page: PageParams, *, where: list[Any] | None = None,
                        include_revoked: bool = False) -> Page[Key]:
        """Newest first; ``where``: extra SQL conditions (``has_role``, ``team_id ==``)."""
        query: Select[Any] = select(gateway_keys).where(*(where or []))
        if not include_revoked:
            query = query.where(gateway_keys.c.revoked_at.is_(None))
        now = utcnow()
        async with self._store.read() as conn:
            total = (await conn.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
            rows = (await conn.execute(query.order_by(gateway_keys.c.created_at.desc(), gateway_keys.c.id.desc())
                                       .limit(page.page_size).offset(page.offset))).all()
        return page.wrap([_to_key(r, now) for r in rows], total)

    # -- teams --------------------------------------------------------------------------------------

    async def create_team(self, actor: Actor, data: TeamCreate) -> Team:
        now, team_id = utcnow(), new_id("team")
        try:
            async with self._store.begin() as conn:
                await conn.execute(teams.insert().values(id=team_id, created_at=now, updated_at=now,
                                                         **_team_columns(data)))
                team = _to_team(await self._team_row(conn, team_id))
                await self._audit.record(conn, actor, action="governance.team.create", resource_type=TEAM_RESOURCE,
                                         resource_id=team_id, after=team, detail=f"team {team.name!r}")
                await self._changed(conn)
        except DuplicateKey as err:
            raise _name_taken(data.name) from err
        return team

    async def update_team(self, actor: Actor, team_id: str, data: TeamCreate) -> tuple[Team, bool]:
        try:
            async with self._store.begin() as conn:
                row = await self._live_team(conn, team_id, lock=True)
                before = _to_team(row)
                columns = _team_columns(data)
                if all(getattr(row, c) == v for c, v in columns.items()):
                    return before, False
                await conn.execute(update(teams).where(teams.c.id == team_id).values(updated_at=utcnow(), **columns))
                after = _to_team(await self._team_row(conn, team_id))
                changed = sorted(f for f in Team.__struct_fields__
                                 if f != "updated_at" and getattr(before, f) != getattr(after, f))
                await self._audit.record(conn, actor, action="governance.team.update", resource_type=TEAM_RESOURCE,
                                         resource_id=team_id, before=before, after=after,
                                         detail=f"changed {', '.join(changed)}")
                await self._changed(conn)
        except DuplicateKey as err:
            raise _name_taken(data.name) from err
        return after, True

    async def delete_team(self, actor: Actor, team_id: str) -> Team:
        """Tombstone a team without live keys (revoke them first); its name stays reserved."""
        async with self._store.begin() as conn:
            row = await self._live_team(conn, team_id, lock=True)
            if team_id == DEFAULT_TEAM_ID:
                raise Conflict("The default team holds the keys created through /admin/keys and the CLI; "
                               "it cannot be deleted")
            live = (await conn.execute(select(gateway_keys.c.id).where(
                gateway_keys.c.team_id == team_id, gateway_keys.c.revoked_at.is_(None))
                .order_by(gateway_keys.c.id).limit(100))).scalars().all()
            if live:
                raise Conflict(f"Team {team_id!r} has {len(live)} unrevoked key(s): revoke them first",
                               {"dependents": [{"kind": "key", "id": k} for k in live]})
            before = _to_team(row)
            await conn.execute(update(teams).where(teams.c.id == team_id).values(deleted_at=utcnow()))
            await self._audit.record(conn, actor, action="governance.team.delete", resource_type=TEAM_RESOURCE,
                                     resource_id=team_id, before=before, detail=f"team {before.name!r}")
            await self._changed(conn)
        return before

    async def get_team(self, team_id: str) -> Team:
        async with self._store.read() as conn:
            return _to_team(await self._live_team(conn, team_id))

    async def list_teams(self, page: PageParams, *, name: str | None = None) -> Page[Team]:
        query: Select[Any] = select(teams).where(teams.c.deleted_at.is_(None))
        if name:
            escaped = name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            query = query.where(teams.c.name.ilike(f"%{escaped}%", escape="\\"))
        async with self._store.read() as conn:
            total = (await conn.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
            rows = (await conn.execute(query.order_by(teams.c.name).limit(page.page_size)
                                       .offset(page.offset))).all()
        return page.wrap([_to_team(r) for r in rows], total)

    # -- rows ---------------------------------------------------------------------------------------

    @staticmethod
    async def _key_row(conn: AsyncConnection, key_id: str, *, lock: bool = False) -> Any:
        # FOR UPDATE serialises concurrent writers of one key on PostgreSQL; SQLite's BEGIN IMMEDIATE already does.
        query = select(gateway_keys).where(gateway_keys.c.id == key_id)
        row = (await conn.execute(query.with_for_update() if lock else query)).one_or_none()
        if row is None:
            raise NotFound(f"No key {key_id!r}")
        return row

    @staticmethod
    async def _team_row(conn: AsyncConnection, team_id: str) -> Any:
        return (await conn.execute(select(teams).where(teams.c.id == team_id))).one()

    @staticmethod
    async def _live_team(conn: AsyncConnection, team_id: str, *, lock: bool = False,
                         semantic: bool = False) -> Any:
        """The team's row; missing or deleted: 404, or (``semantic``: named in a key's body) 422 on ``teamId``."""
        query = select(teams).where(teams.c.id == team_id)
        row = (await conn.execute(query.with_for_update() if lock else query)).one_or_none()
        if row is None or row.deleted_at is not None:
            if semantic:
                raise SemanticError([FieldError(field="teamId", message=f"no team {team_id!r}")])
            raise NotFound(f"No team {team_id!r}")
        return row


def _check_expiry(expires_at: datetime | None, current: datetime | None, now: datetime) -> None:
    """A new expiry must be in the future (an unchanged past one may stay, so an expired key stays editable)."""
    if expires_at is not None and expires_at != current and expires_at <= now:
        raise SemanticError([FieldError(field="expiresAt", message="must be in the future")])


def _name_taken(name: str) -> Conflict:
    return Conflict(f"A team named {name!r} exists or existed (deleted teams keep their names)")

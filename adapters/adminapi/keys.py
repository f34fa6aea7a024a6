"""Admin keys over HTTP (admin role only) and the service the CLI shares.

``POST /admin/keys`` answers the full key exactly once; afterwards only its id,
name and role are visible. Revocation is immediate (keys are checked against the
table on every admin call) and idempotent.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, cast

import msgspec
from litestar import Controller, delete, get, post
from litestar.params import Parameter
from sqlalchemy import func, insert, select, update

from adapters.adminapi.audit import AuditWriter
from adapters.adminapi.auth import Actor, Role, generate_key, requires
from adapters.adminapi.envelope import Envelope, Page, PageParams, ok
from adapters.adminapi.errors import NotFound
from adapters.adminapi.tables import api_keys
from adapters.store import Store, utcnow

__all__ = ["ApiKey", "CreatedApiKey", "KeyCreate", "KeysController", "create_key", "revoke_key"]

RoleName = Literal["admin", "operator", "developer", "viewer"]
KeyName = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._@-]*$")]


class KeyCreate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    name: KeyName
    role: RoleName


class ApiKey(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    id: str
    name: str
    role: RoleName
    created_at: datetime
    created_by: str
    revoked_at: datetime | None = None
    revoked_by: str | None = None


class CreatedApiKey(ApiKey, frozen=True, kw_only=True):
    key: str  # shown once


def _row_to_key(row: object) -> ApiKey:
    return ApiKey(**{f: getattr(row, f) for f in ApiKey.__struct_fields__})


async def create_key(store: Store, audit: AuditWriter, actor: Actor, *, name: str, role: Role) -> CreatedApiKey:
    key_id, token, digest = generate_key()
    now = utcnow()
    created = CreatedApiKey(id=key_id, name=name, role=cast(RoleName, role.name), created_at=now,
                            created_by=actor.principal.name, key=token)
    async with store.begin() as conn:
        await conn.execute(insert(api_keys).values(
            id=key_id, name=name, role=role.name, secret_sha256=digest, created_at=now, created_by=actor.principal.name,
        ))
        public = ApiKey(**{f: getattr(created, f) for f in ApiKey.__struct_fields__})
        await audit.record(conn, actor, action="admin.key.create", resource_type="api_key", resource_id=key_id,
                           after=public)
    return created


async def revoke_key(store: Store, audit: AuditWriter, actor: Actor, key_id: str) -> ApiKey:
    async with store.begin() as conn:
        row = (await conn.execute(select(api_keys).where(api_keys.c.id == key_id))).one_or_none()
        if row is None:
            raise NotFound(f"No admin key {key_id!r}")
        before = _row_to_key(row)
        if before.revoked_at is not None:
            return before
        now = utcnow()
        await conn.execute(update(api_keys).where(api_keys.c.id == key_id)
                           .values(revoked_at=now, revoked_by=actor.principal.name))
        after = msgspec.structs.replace(before, revoked_at=now, revoked_by=actor.principal.name)
        await audit.record(conn, actor, action="admin.key.revoke", resource_type="api_key", resource_id=key_id,
                           before=before, after=after)
    return after


class KeysController(Controller):
    path = "/admin/keys"
    tags = ["admin keys"]
    opt = requires(Role.admin)

    @post("/", status_code=201, summary="Create an admin key (the key is returned once)")
    async def create(self, data: KeyCreate, store: Store, audit: AuditWriter, caller: Actor) -> Envelope[CreatedApiKey]:
        created = await create_key(store, audit, caller, name=data.name, role=Role.parse(data.role))
        return ok(created, "Key created; store it now, it is not shown again")

    @get("/", summary="List admin keys")
    async def list_keys(
        self,
        store: Store,
        page: PageParams,
        role: RoleName | None = Parameter(query="role", default=None),
        include_revoked: bool = Parameter(query="includeRevoked", default=False),
    ) -> Envelope[Page[ApiKey]]:
        where = [api_keys.c.role == role] if role else []
        if not include_revoked:
            where.append(api_keys.c.revoked_at.is_(None))
        columns = [api_keys.c[f] for f in ApiKey.__struct_fields__]
        async with store.read() as conn:
            total = (await conn.execute(select(func.count()).select_from(api_keys).where(*where))).scalar_one()
            rows = (await conn.execute(
                select(*columns).where(*where).order_by(api_keys.c.created_at.desc(), api_keys.c.id.desc())
                .limit(page.page_size).offset(page.offset)
            )).all()
        return ok(page.wrap([_row_to_key(r) for r in rows], total))

    @get("/{keyId:str}", summary="Get one admin key")
    async def get_key(self, keyId: str, store: Store) -> Envelope[ApiKey]:
        async with store.read() as conn:
            row = (await conn.execute(select(api_keys).where(api_keys.c.id == keyId))).one_or_none()
        if row is None:
            raise NotFound(f"No admin key {keyId!r}")
        return ok(_row_to_key(row))

    @delete("/{keyId:str}", status_code=200, summary="Revoke an admin key (idempotent)")
    async def revoke(self, keyId: str, store: Store, audit: AuditWriter, caller: Actor) -> Envelope[ApiKey]:
        return ok(await revoke_key(store, audit, caller, keyId), "Key revoked")

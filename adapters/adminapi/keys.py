"""``/admin/keys``: the original admin-key endpoints (admin role only), kept as a view of the one key model.

Keys created here are ordinary keys (``gateway_keys``) in the ``default`` team holding one role, written
through ``KeyRing`` like ``/governance/keys``, so they are audited and published alike. ``POST`` answers
the full key exactly once; afterwards only its id, name and role are visible. ``role`` is the key's admin
role: the highest it holds, ``inference`` for a data-plane-only key (``/governance/keys`` shows every
role, team, limit and expiry). Revocation is immediate here (keys are checked against the table on every
admin call) and idempotent; the gateway follows it through the ``keys`` snapshot.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, cast

import msgspec
from litestar import Controller, delete, get, post
from litestar.params import Parameter

from adapters.adminapi.audit import AuditWriter
from adapters.adminapi.auth import Actor, Role, requires
from adapters.adminapi.envelope import Envelope, Page, PageParams, ok
from adapters.adminapi.keymodel import Key, KeyCreate, RoleName
from adapters.adminapi.keyring import KeyRing, has_admin_role
from adapters.adminapi.rbac import admin_role
from adapters.dataplane import DEFAULT_TEAM_ID
from adapters.store import Store

__all__ = ["ApiKey", "CreatedApiKey", "KeyCreateRequest", "KeysController", "create_key", "revoke_key"]

KeyName = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._@-]*$")]


class KeyCreateRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="camel"):
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


def _view(key: Key) -> ApiKey:
    return ApiKey(id=key.id, name=key.name, role=cast(RoleName, admin_role(key.roles).name),
                  created_at=key.created_at, created_by=key.created_by, revoked_at=key.revoked_at,
                  revoked_by=key.revoked_by)


async def create_key(store: Store, audit: AuditWriter, actor: Actor, *, name: str, role: Role) -> CreatedApiKey:
    """A one-role key in the default team (``/admin/keys`` and ``llmops admin create-key``)."""
    created = await KeyRing(store, audit).create_key(
        actor, KeyCreate(name=name, team_id=DEFAULT_TEAM_ID, roles=[cast(RoleName, role.name)]),
        action="admin.key.create")
    view = _view(created)
    return CreatedApiKey(key=created.key, **{f: getattr(view, f) for f in ApiKey.__struct_fields__})


async def revoke_key(store: Store, audit: AuditWriter, actor: Actor, key_id: str) -> ApiKey:
    return _view(await KeyRing(store, audit).revoke_key(actor, key_id, action="admin.key.revoke"))


class KeysController(Controller):
    path = "/admin/keys"
    tags = ["admin keys"]
    opt = requires(Role.admin)

    @post("/", status_code=201, summary="Create a key in the default team (the key is returned once)")
    async def create(self, data: KeyCreateRequest, store: Store, audit: AuditWriter,
                     caller: Actor) -> Envelope[CreatedApiKey]:
        created = await create_key(store, audit, caller, name=data.name, role=Role.parse(data.role))
        return ok(created, "Key created; store it now, it is not shown again")

    @get("/", summary="List keys (every key of the one key model, with its admin role)")
    async def list_keys(
        self,
        store: Store,
        audit: AuditWriter,
        page: PageParams,
        role: RoleName | None = Parameter(query="role", default=None,
                                          description="the key's admin role (its highest role)"),
        include_revoked: bool = Parameter(query="includeRevoked", default=False),
    ) -> Envelope[Page[ApiKey]]:
        where = [has_admin_role(Role.parse(role))] if role else []
        found = await KeyRing(store, audit).list_keys(page, where=where, include_revoked=include_revoked)
        return ok(page.wrap([_view(k) for k in found.items], found.total))

    @get("/{keyId:str}", summary="Get one key")
    async def get_key(self, keyId: str, store: Store, audit: AuditWriter) -> Envelope[ApiKey]:
        return ok(_view(await KeyRing(store, audit).get_key(keyId)))

    @delete("/{keyId:str}", status_code=200, summary="Revoke a key (idempotent)")
    async def revoke(self, keyId: str, store: Store, audit: AuditWriter, caller: Actor) -> Envelope[ApiKey]:
        return ok(await revoke_key(store, audit, caller, keyId), "Key revoked")

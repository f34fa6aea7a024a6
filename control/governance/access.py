"""HTTP surface of teams and keys: thin handlers over ``adapters.adminapi.keyring.KeyRing``.

Teams: reads need viewer, changes admin. Keys: reads need operator (ids, teams and limits, never
secrets), changes admin: whoever can mint a key can mint an admin key, so only admins may.
"""

from __future__ import annotations

from litestar import Controller, delete, get, post, put
from litestar.di import Provide
from litestar.params import Parameter

from adapters.adminapi import Actor, Envelope, ModuleContext, Page, PageParams, Role, ok, requires
from adapters.adminapi.keymodel import CreatedKey, Key, KeyCreate, KeyUpdate, RoleName, Team, TeamCreate, TeamUpdate
from adapters.adminapi.keyring import KeyRing, has_role
from adapters.dataplane import gateway_keys
from control.governance.services import KEYRING

__all__ = ["KeysController", "TeamsController"]

_REASON = Parameter(query="reason", default=None, min_length=1, max_length=500,
                    description="why, for the audit log (never put a secret here)")


def _keyring(ctx: ModuleContext) -> KeyRing:
    return ctx.services[KEYRING]


class TeamsController(Controller):
    path = "/governance/teams"
    tags = ["governance"]
    dependencies = {"keyring": Provide(_keyring, sync_to_thread=False)}

    @get("/", summary="List teams")
    async def list_teams(
        self, keyring: KeyRing, page: PageParams,
        name: str | None = Parameter(query="name", default=None, max_length=64,
                                     description="case-insensitive substring of the name"),
    ) -> Envelope[Page[Team]]:
        return ok(await keyring.list_teams(page, name=name))

    @post("/", status_code=201, opt=requires(Role.admin), summary="Create a team")
    async def create_team(self, data: TeamCreate, keyring: KeyRing, caller: Actor) -> Envelope[Team]:
        return ok(await keyring.create_team(caller, data), "Team created")

    @get("/{teamId:str}", summary="Get a team")
    async def get_team(self, teamId: str, keyring: KeyRing) -> Envelope[Team]:
        return ok(await keyring.get_team(teamId))

    @put("/{teamId:str}", opt=requires(Role.admin), summary="Replace a team's name, limits, budget, models")
    async def update_team(self, teamId: str, data: TeamUpdate, keyring: KeyRing, caller: Actor) -> Envelope[Team]:
        team, changed = await keyring.update_team(caller, teamId, data)
        return ok(team, "Team updated" if changed else "No changes")

    @delete("/{teamId:str}", status_code=200, opt=requires(Role.admin),
            summary="Delete a team without unrevoked keys (its name stays reserved)")
    async def delete_team(self, teamId: str, keyring: KeyRing, caller: Actor) -> Envelope[Team]:
        return ok(await keyring.delete_team(caller, teamId), "Team deleted")


class KeysController(Controller):
    path = "/governance/keys"
    tags = ["governance"]
    dependencies = {"keyring": Provide(_keyring, sync_to_thread=False)}
    opt = requires(Role.admin)

    @get("/", opt=requires(Role.operator), summary="List keys (never their secrets)")
    async def list_keys(
        self, keyring: KeyRing, page: PageParams,
        team_id: str | None = Parameter(query="teamId", default=None, max_length=40),
        role: RoleName | None = Parameter(query="role", default=None, description="keys holding this role"),
        include_revoked: bool = Parameter(query="includeRevoked", default=False),
    ) -> Envelope[Page[Key]]:
        where = [gateway_keys.c.team_id == team_id] if team_id else []
        if role:
            where.append(has_role(role))
        return ok(await keyring.list_keys(page, where=where, include_revoked=include_revoked))

    @post("/", status_code=201, summary="Create a key (the secret is in data.key, this once)")
    async def create_key(self, data: KeyCreate, keyring: KeyRing, caller: Actor) -> Envelope[CreatedKey]:
        return ok(await keyring.create_key(caller, data), "Key created; store it now, it is not shown again")

    @get("/{keyId:str}", opt=requires(Role.operator), summary="Get a key (revoked ones stay readable)")
    async def get_key(self, keyId: str, keyring: KeyRing) -> Envelope[Key]:
        return ok(await keyring.get_key(keyId))

    @put("/{keyId:str}", summary="Replace a key's team, roles, routes, models, limits, budget and expiry")
    async def update_key(self, keyId: str, data: KeyUpdate, keyring: KeyRing, caller: Actor) -> Envelope[Key]:
        key, changed = await keyring.update_key(caller, keyId, data)
        return ok(key, "Key updated" if changed else "No changes")

    @post("/{keyId:str}/rotate", status_code=200, summary="New secret (in data.key, this once); the old one stops")
    async def rotate_key(self, keyId: str, keyring: KeyRing, caller: Actor,
                         reason: str | None = _REASON) -> Envelope[CreatedKey]:
        return ok(await keyring.rotate_key(caller, keyId, reason),
                  "Key rotated; store the new key now, it is not shown again")

    @post("/{keyId:str}/revoke", status_code=200, summary="Revoke a key (idempotent; it stays readable)")
    async def revoke_key(self, keyId: str, keyring: KeyRing, caller: Actor,
                         reason: str | None = _REASON) -> Envelope[Key]:
        return ok(await keyring.revoke_key(caller, keyId, reason), "Key revoked")

"""The worker's data-plane key: minted through ``KeyRing`` (audited, published to the gateway), kept in memory.

It is named ``system.evaluation`` (key names allow no ``:``), holds the ``inference`` role only, lives in the
``default`` team and expires after ``key_ttl_s``; it is replaced when half its life is gone and revoked when
the module stops. The secret exists only in this object: never logged, stored or shown.

It is minted when first needed, not at start-up: when the worker takes its first run and the published
``keys`` snapshot says the gateway already requires data-plane keys, otherwise on the gateway's first 401.
Minting an ``inference`` key is what switches a gateway in ``auth.required: auto`` from open to keyed, so an
installed evaluation module must not do that by itself to a deployment that never issued a key (nor add a
key to every deployment's key list that never runs an evaluation).

Each replica mints its own key. A replica revokes only its own: with several replicas alive, revoking
"the previous key of that name" would cut off another replica's worker mid-run; a crashed replica's key
dies with its expiry.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import timedelta

from sqlalchemy import select

from adapters.adminapi import Actor, ModuleContext, Principal, Role
from adapters.adminapi.keymodel import KeyCreate
from adapters.adminapi.keyring import KeyRing
from adapters.dataplane import DEFAULT_TEAM_ID
from adapters.snapshots import KeysSnapshot, SnapshotVersionError
from adapters.snapshots import decode as decode_snapshot
from adapters.store import StoreError, store_snapshots, utcnow

__all__ = ["KEY_NAME", "ServiceCredential", "system_actor"]

log = logging.getLogger("llmops.evaluation")

KEY_NAME = "system.evaluation"
ACTOR_NAME = "system:evaluation"


def system_actor() -> Actor:
    """Who the worker's own changes are audited as."""
    return Actor(principal=Principal(key_id=ACTOR_NAME, name=ACTOR_NAME, role=Role.admin),
                 request_id=f"evaluation-{uuid.uuid4().hex}")


class ServiceCredential:
    def __init__(self, ctx: ModuleContext, ttl_s: float) -> None:
        self._ring = KeyRing(ctx.store, ctx.audit)
        self._store = ctx.store
        self._ttl_s = ttl_s
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._key_id: str | None = None
        self._renew_at = 0.0  # monotonic
        self.minted_at = 0.0  # monotonic; 0: never
        self._prepared = False

    @property
    def key_id(self) -> str | None:
        return self._key_id

    async def authorization(self) -> str | None:
        """The ``Authorization`` header value, renewed past half its life; ``None`` while none is needed."""
        if self._token is not None and time.monotonic() >= self._renew_at:
            await self.mint(replace=self._key_id)
        return None if self._token is None else f"Bearer {self._token}"

    async def prepare(self) -> None:
        """Before the first run: mint now when the gateway already requires data-plane keys (best effort)."""
        if self._prepared:
            return
        self._prepared = True
        try:
            async with self._store.read() as conn:
                payload = (await conn.execute(select(store_snapshots.c.payload).where(
                    store_snapshots.c.kind == "keys"))).scalar_one_or_none()
            snap = decode_snapshot(bytes(payload), "keys") if payload else None
        except (StoreError, SnapshotVersionError, ValueError) as err:
            log.warning("evaluation: could not read the keys snapshot (%s); the key is minted on first need", err)
            return
        if isinstance(snap, KeysSnapshot) and snap.data_plane_keys_issued:
            await self.mint(replace=None)

    async def mint(self, *, replace: str | None) -> None:
        """A new key (once per ``replace``: concurrent callers that saw the same key share one mint)."""
        async with self._lock:
            if self._token is not None and self._key_id != replace:
                return  # someone minted while we waited
            actor = system_actor()
            created = await self._ring.create_key(actor, KeyCreate(
                name=KEY_NAME, team_id=DEFAULT_TEAM_ID, roles=["inference"],
                expires_at=utcnow() + timedelta(seconds=self._ttl_s)), action="evaluation.service_key.create")
            old = self._key_id
            self._token, self._key_id = created.key, created.id
            self.minted_at = time.monotonic()
            self._renew_at = self.minted_at + self._ttl_s / 2
            log.info("evaluation: minted data-plane key %s", created.id)
        if old is not None:
            await self._revoke(old, "replaced by a new evaluation service key")

    async def aclose(self) -> None:
        if self._key_id is not None:
            await self._revoke(self._key_id, "the evaluation module stopped")
            self._token = self._key_id = None

    async def _revoke(self, key_id: str, reason: str) -> None:
        try:
            await self._ring.revoke_key(system_actor(), key_id, reason, action="evaluation.service_key.revoke")
        except StoreError as err:  # it expires by itself
            log.warning("evaluation: could not revoke key %s (%s); it expires by itself", key_id, err)

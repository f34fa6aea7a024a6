"""Key and team changes reach the gateway: the ``keys`` snapshot, read back through ``ControlState``.

On PostgreSQL the follower has a store of its own (another replica: LISTEN/NOTIFY); on SQLite it shares
the plane's store, as a single gateway process serving its own SQLite control plane does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import update

from adapters.adminapi.auth import key_digest
from adapters.adminapi.testing import AdminTestApp
from adapters.dataplane import gateway_keys
from adapters.snapshots import ControlSnapshots, KeysSnapshot
from adapters.store import Store, open_store, store_snapshots, utcnow
from gateway.control_state import ControlState

API = "/llm-ops/v1/governance"


@asynccontextmanager
async def following(gov: AdminTestApp, database_url: str) -> AsyncIterator[ControlState]:
    """A gateway's ``ControlState`` following the plane's published snapshots (refresh far beyond the test)."""
    own: Store | None = None
    store = gov.plane.store
    assert store is not None
    if database_url.startswith("postgresql"):
        own = store = open_store(database_url, feed_mode="listen")
        await store.changes.start()
    changed = asyncio.Event()

    async def on_change(_: ControlSnapshots) -> None:
        changed.set()

    state = ControlState(store, on_change, refresh_interval_s=60.0)
    await state.load()
    state.start()
    try:
        yield state
    finally:
        await state.aclose()
        if own is not None:
            await own.aclose()


async def _until(state: ControlState, check: Any, limit_s: float = 1.0) -> float:
    """Seconds until ``check(keys snapshot)`` holds; fails after ``limit_s`` (polled every 5 ms)."""
    started = time.monotonic()
    while not check(state.snapshots.keys):
        assert time.monotonic() - started < limit_s, f"not visible within {limit_s} s: {state.snapshots.keys}"
        await asyncio.sleep(0.005)
    return time.monotonic() - started


async def _team(gov: AdminTestApp, **extra: Any) -> str:
    resp = await gov.client.post(f"{API}/teams", json={"name": "search", **extra})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["data"]["id"])


async def test_a_revocation_reaches_the_gateway_within_a_second(gov: AdminTestApp, database_url: str) -> None:
    team_id = await _team(gov, rpm=60, budgetUsd="25.5", budgetPeriod="monthly", allowedModels=["gpt-4o*"])
    async with following(gov, database_url) as state:
        resp = await gov.client.post(f"{API}/keys", json={
            "name": "app", "teamId": team_id, "roles": ["inference"], "allowedRoutes": ["chat"], "tpm": 1000})
        key_id, token = resp.json()["data"]["id"], resp.json()["data"]["key"]
        await _until(state, lambda s: s is not None and any(k.id == key_id for k in s.keys))
        snap = state.snapshots.keys
        assert isinstance(snap, KeysSnapshot)
        (key,) = [k for k in snap.keys if k.id == key_id]
        assert (key.id, key.secret_sha256) == key_digest(token)  # the digest the data plane compares
        assert (key.team_id, key.roles, key.allowed_routes, key.name) == (team_id, ["inference"], ["chat"], "app")
        assert key.limits is not None and key.limits.tokens_per_minute == 1000
        team = next(t for t in snap.teams if t.id == team_id)
        assert (team.name, str(team.budget_usd), team.budget_period, team.allowed_models) == (
            "search", "25.5", "monthly", ["gpt-4o*"])
        assert team.limits is not None and team.limits.requests_per_minute == 60

        before = snap.generation
        assert (await gov.client.post(f"{API}/keys/{key_id}/revoke")).status_code == 200
        took = await _until(state, lambda s: all(k.id != key_id for k in s.keys))
        assert state.snapshots.keys is not None and state.snapshots.keys.generation > before
        assert took < 1.0
        assert state.snapshots.keys.data_plane_keys_issued  # revoking the last key does not open the gateway


async def test_only_an_inference_key_counts_as_issued_for_the_data_plane(gov: AdminTestApp,
                                                                        database_url: str) -> None:
    team_id = await _team(gov)
    async with following(gov, database_url) as state:
        await gov.client.post(f"{API}/keys", json={"name": "ops", "teamId": team_id, "roles": ["admin"]})
        await _until(state, lambda s: s is not None and len(s.keys) == 1)
        assert state.snapshots.keys is not None and not state.snapshots.keys.data_plane_keys_issued
        await gov.client.post(f"{API}/keys", json={"name": "app", "teamId": team_id, "roles": ["inference"]})
        await _until(state, lambda s: s.data_plane_keys_issued)


async def test_a_rotation_replaces_the_published_digest(gov: AdminTestApp, database_url: str) -> None:
    team_id = await _team(gov)
    created = (await gov.client.post(f"{API}/keys", json={"name": "app", "teamId": team_id,
                                                          "roles": ["inference"]})).json()["data"]
    async with following(gov, database_url) as state:
        old = key_digest(created["key"])
        await _until(state, lambda s: s is not None and any((k.id, k.secret_sha256) == old for k in s.keys))
        rotated = (await gov.client.post(f"{API}/keys/{created['id']}/rotate")).json()["data"]["key"]
        new = key_digest(rotated)
        await _until(state, lambda s: [(k.id, k.secret_sha256) for k in s.keys] == [new])


async def test_expired_and_deleted_are_left_out_and_no_secret_is_published(gov: AdminTestApp) -> None:
    team_id = await _team(gov)
    other = await _team(gov, name="gone")
    created = (await gov.client.post(f"{API}/keys", json={"name": "app", "teamId": team_id,
                                                          "roles": ["developer", "inference"]})).json()["data"]
    expired = (await gov.client.post(f"{API}/keys", json={"name": "old", "teamId": team_id,
                                                          "roles": ["inference"]})).json()["data"]["id"]
    store = gov.plane.store
    assert store is not None
    async with store.begin() as conn:  # time passes: the key expired after its last publish
        await conn.execute(update(gateway_keys).where(gateway_keys.c.id == expired)
                           .values(expires_at=utcnow() - timedelta(seconds=1)))
    assert (await gov.client.delete(f"{API}/teams/{other}")).status_code == 200  # publishes again
    async with store.read() as conn:
        payload = bytes((await conn.execute(store_snapshots.select().where(store_snapshots.c.kind == "keys")))
                        .one().payload)
    secret = created["key"].rsplit("_", 1)[1]
    assert secret not in payload.decode() and created["key"] not in payload.decode()
    assert b'"gone"' not in payload and b'"search"' in payload and created["id"].encode() in payload
    assert expired.encode() not in payload

"""Dataplane migration 3: admin keys from ``api_keys`` move into the one key table without losing any."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, insert, select

from adapters.adminapi import ControlCfg, load_control_plane
from adapters.adminapi.auth import generate_key
from adapters.adminapi.tables import api_keys
from adapters.adminapi.testing import admin_test_app
from adapters.dataplane import DEFAULT_TEAM_ID, gateway_keys, teams
from adapters.store import migrate, open_store, read_published, schema_drift, utcnow
from control.governance import module as governance

from ._helpers import bearer

API = "/llm-ops/v1"


async def test_existing_admin_keys_survive_the_move_and_keep_working(database_url: str, tmp_path: Path) -> None:
    plan = dict(load_control_plane(ControlCfg(), modules=[], environ={}).migration_plan())
    before_3 = {**plan, "dataplane": plan["dataplane"][:2]}
    active_id, active_token, active_digest = generate_key()
    revoked_id, revoked_token, revoked_digest = generate_key()
    created = utcnow() - timedelta(days=30)
    store = open_store(database_url, feed_mode="local")
    try:
        await migrate(store, before_3)  # a database as the previous release left it
        async with store.begin() as conn:
            await conn.execute(insert(api_keys), [
                {"id": active_id, "name": "ci-bot", "role": "operator", "secret_sha256": active_digest,
                 "created_at": created, "created_by": "alice", "revoked_at": None, "revoked_by": None},
                {"id": revoked_id, "name": "old", "role": "admin", "secret_sha256": revoked_digest,
                 "created_at": created, "created_by": "alice", "revoked_at": created + timedelta(days=1),
                 "revoked_by": "bob"}])
        applied = await migrate(store, plan)
        assert next((m.module, m.version) for m in applied if m.module == "dataplane") == ("dataplane", 3)
        assert await schema_drift(store, teams, gateway_keys) == []
        async with store.read() as conn:
            rows = {r.id: r for r in (await conn.execute(select(gateway_keys))).all()}
            kept = (await conn.execute(select(func.count()).select_from(api_keys))).scalar_one()
            default = (await conn.execute(select(teams).where(teams.c.id == DEFAULT_TEAM_ID))).one()
        assert kept == 2  # nothing dropped
        assert default.name == "default" and default.deleted_at is None
        active, revoked = rows[active_id], rows[revoked_id]
        assert (active.name, active.roles, active.team_id, active.secret_sha256, active.created_by) == (
            "ci-bot", ["operator"], DEFAULT_TEAM_ID, active_digest, "alice")
        assert active.created_at == created and active.revoked_at is None and active.expires_at is None
        assert (revoked.roles, revoked.revoked_by) == (["admin"], "bob") and revoked.revoked_at is not None
    finally:
        await store.aclose()

    cfg = ControlCfg(database_url=database_url, data_dir=str(tmp_path), change_feed="local")
    async with admin_test_app(cfg, modules=[governance]) as app:
        ok = await app.client.get(f"{API}/governance/policies", headers=bearer(active_token))
        assert ok.status_code == 200
        assert (await app.client.get(f"{API}/admin/keys", headers=bearer(active_token))).status_code == 403
        refused = await app.client.get(f"{API}/governance/policies", headers=bearer(revoked_token))
        assert refused.status_code == 401 and "revoked" in refused.json()["message"]
        listed = (await app.client.get(f"{API}/admin/keys", params={"includeRevoked": "true"})).json()["data"]
        assert {(k["id"], k["role"]) for k in listed["items"]} == {(active_id, "operator"), (revoked_id, "admin")}
        one = (await app.client.get(f"{API}/governance/keys/{active_id}")).json()["data"]
        assert (one["teamId"], one["roles"], one["status"]) == (DEFAULT_TEAM_ID, ["operator"], "active")
        # Governance's start-up published the first keys snapshot: the migrated key, the revoked one left out.
        assert app.plane.store is not None
        found, _ = await read_published(app.plane.store)
        snap = found["keys"]
        assert [k.id for k in snap.keys] == [active_id]  # type: ignore[union-attr]

"""/governance/keys: the secret once, hashed at rest, rotation, revocation, validation, audit without secrets."""

from __future__ import annotations

import logging
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select, update

from adapters.adminapi.auth import hash_secret, parse_key
from adapters.adminapi.testing import AdminTestApp
from adapters.dataplane import gateway_keys
from adapters.store import utcnow

API = "/llm-ops/v1/governance"


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def _team(gov: AdminTestApp, name: str = "search") -> str:
    resp = await gov.client.post(f"{API}/teams", json={"name": name})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["data"]["id"])


async def _key(gov: AdminTestApp, team_id: str, **fields: Any) -> dict[str, Any]:
    resp = await gov.client.post(f"{API}/keys", json={"name": "app", "teamId": team_id, "roles": ["inference"],
                                                      **fields})
    assert resp.status_code == 201, resp.text
    return dict(resp.json()["data"])


def _secret(token: str) -> str:
    parsed = parse_key(token)
    assert parsed is not None
    return parsed[1]


async def test_create_answers_the_secret_once_and_stores_only_its_digest(gov: AdminTestApp) -> None:
    team_id = await _team(gov)
    created = await _key(gov, team_id, roles=["developer", "inference"], allowedRoutes=["chat", "embed-*"],
                         allowedModels=["gpt-4o*"], rpm=60, tpm=10_000, maxConcurrent=4, budgetUsd=12.5,
                         budgetPeriod="monthly", expiresAt="2099-01-01T02:00:00+02:00")
    token = created.pop("key")
    assert token.startswith("llmops_") and created["id"] in token.replace("llmops_", "key_")
    assert created == {**created, "teamId": team_id, "roles": ["developer", "inference"], "status": "active",
                       "allowedRoutes": ["chat", "embed-*"], "allowedModels": ["gpt-4o*"], "rpm": 60, "tpm": 10_000,
                       "maxConcurrent": 4, "budgetUsd": "12.5", "budgetPeriod": "monthly",
                       "expiresAt": "2099-01-01T00:00:00Z", "createdBy": "bootstrap", "revokedAt": None}
    one = await gov.client.get(f"{API}/keys/{created['id']}")
    listed = await gov.client.get(f"{API}/keys")
    for resp in (one, listed):
        assert resp.status_code == 200 and _secret(token) not in resp.text and token not in resp.text
        assert '"key"' not in resp.text and "secretSha256" not in resp.text
    assert one.json()["data"] == created
    store = gov.plane.store
    assert store is not None
    async with store.read() as conn:
        stored = (await conn.execute(select(gateway_keys.c.secret_sha256)
                                     .where(gateway_keys.c.id == created["id"]))).scalar_one()
    assert stored == hash_secret(_secret(token)) and _secret(token) not in stored
    # The key's admin role is developer: it reads policies, and may not manage keys.
    assert (await gov.client.get(f"{API}/policies", headers=bearer(token))).status_code == 200
    assert (await gov.client.get(f"{API}/keys", headers=bearer(token))).status_code == 403


async def test_budget_amounts_are_exact(gov: AdminTestApp) -> None:
    team_id = await _team(gov)
    for sent, shown in ((0.1, "0.1"), ("0.30", "0.3"), ("999999999.999999999", "999999999.999999999"), (100, "100")):
        key = await _key(gov, team_id, budgetUsd=sent, budgetPeriod="daily")
        assert key["budgetUsd"] == shown, sent
    store = gov.plane.store
    assert store is not None
    async with store.read() as conn:
        amounts = set((await conn.execute(select(gateway_keys.c.budget_usd))).scalars())
    assert Decimal("999999999.999999999") in amounts and Decimal("0.1") in amounts


async def test_rotation_gives_a_new_secret_once_and_the_old_one_stops(gov: AdminTestApp) -> None:
    team_id = await _team(gov)
    created = await _key(gov, team_id, roles=["operator"])
    old = created["key"]
    assert (await gov.client.get(f"{API}/policies", headers=bearer(old))).status_code == 200
    resp = await gov.client.post(f"{API}/keys/{created['id']}/rotate", params={"reason": "laptop lost"})
    assert resp.status_code == 200
    new = resp.json()["data"]["key"]
    assert new != old and resp.json()["data"]["id"] == created["id"] and resp.json()["data"]["rotatedAt"]
    assert (await gov.client.get(f"{API}/policies", headers=bearer(old))).status_code == 401
    assert (await gov.client.get(f"{API}/policies", headers=bearer(new))).status_code == 200
    assert '"key"' not in (await gov.client.get(f"{API}/keys/{created['id']}")).text


async def test_revocation_is_immediate_idempotent_and_leaves_the_key_readable(gov: AdminTestApp) -> None:
    team_id = await _team(gov)
    created = await _key(gov, team_id, roles=["viewer"])
    first = await gov.client.post(f"{API}/keys/{created['id']}/revoke")
    assert first.status_code == 200 and first.json()["data"]["status"] == "revoked"
    again = await gov.client.post(f"{API}/keys/{created['id']}/revoke")
    assert again.json()["data"]["revokedAt"] == first.json()["data"]["revokedAt"]
    denied = await gov.client.get(f"{API}/policies", headers=bearer(created["key"]))
    assert denied.status_code == 401 and "revoked" in denied.json()["message"]
    assert (await gov.client.get(f"{API}/keys/{created['id']}")).json()["data"]["status"] == "revoked"
    assert (await gov.client.get(f"{API}/keys")).json()["data"]["total"] == 0
    assert (await gov.client.get(f"{API}/keys?includeRevoked=true")).json()["data"]["total"] == 1
    assert (await gov.client.post(f"{API}/keys/{created['id']}/rotate")).status_code == 409
    put = await gov.client.put(f"{API}/keys/{created['id']}", json={"name": "x", "teamId": team_id,
                                                                     "roles": ["viewer"]})
    assert put.status_code == 409


async def test_an_expired_key_is_refused_and_shown_expired(gov: AdminTestApp) -> None:
    team_id = await _team(gov)
    created = await _key(gov, team_id, roles=["admin"], expiresAt="2099-01-01T00:00:00Z")
    store = gov.plane.store
    assert store is not None
    async with store.begin() as conn:
        await conn.execute(update(gateway_keys).where(gateway_keys.c.id == created["id"])
                           .values(expires_at=utcnow() - timedelta(seconds=1)))
    denied = await gov.client.get(f"{API}/keys", headers=bearer(created["key"]))
    assert denied.status_code == 401 and "expired" in denied.json()["message"]
    assert (await gov.client.get(f"{API}/keys/{created['id']}")).json()["data"]["status"] == "expired"


async def test_update_replaces_settings_and_refuses_bad_references(gov: AdminTestApp) -> None:
    team_id, other = await _team(gov), await _team(gov, "ads")
    created = await _key(gov, team_id, rpm=10)
    body = {"name": "app", "teamId": other, "roles": ["inference"], "tpm": 500, "allowedModels": ["llama*"]}
    resp = await gov.client.put(f"{API}/keys/{created['id']}", json=body)
    assert resp.status_code == 200 and resp.json()["message"] == "Key updated"
    assert {k: resp.json()["data"][k] for k in ("teamId", "rpm", "tpm", "allowedModels")} == {
        "teamId": other, "rpm": None, "tpm": 500, "allowedModels": ["llama*"]}
    same = await gov.client.put(f"{API}/keys/{created['id']}", json=body)
    assert same.status_code == 200 and same.json()["message"] == "No changes"
    unknown = await gov.client.put(f"{API}/keys/{created['id']}", json={**body, "teamId": "team_nope"})
    assert unknown.status_code == 422 and unknown.json()["data"]["errors"][0]["field"] == "teamId"
    past = await gov.client.put(f"{API}/keys/{created['id']}", json={**body, "expiresAt": "2001-01-01T00:00:00Z"})
    assert past.status_code == 422 and past.json()["data"]["errors"][0]["field"] == "expiresAt"
    assert (await gov.client.put(f"{API}/keys/key_0000000000000000", json=body)).status_code == 404


@pytest.mark.parametrize("body", [
    {"roles": []},
    {"roles": ["inference", "inference"]},
    {"roles": ["root"]},
    {"rpm": 0},
    {"maxConcurrent": 10**7},
    {"budgetUsd": 5},
    {"budgetPeriod": "daily"},
    {"budgetUsd": "-1", "budgetPeriod": "daily"},
    {"budgetUsd": 0, "budgetPeriod": "daily"},
    {"budgetUsd": "1.0000000001", "budgetPeriod": "daily"},
    {"budgetUsd": 1e10, "budgetPeriod": "daily"},
    {"allowedRoutes": ["chat", "chat"]},
    {"allowedModels": ["bad model"]},
    {"expiresAt": "tomorrow"},
    {"secret": "mine"},
    {"name": ""},
])
async def test_malformed_keys_are_400_naming_the_field(gov: AdminTestApp, body: dict[str, Any]) -> None:
    team_id = await _team(gov)
    resp = await gov.client.post(f"{API}/keys", json={"name": "app", "teamId": team_id, "roles": ["inference"],
                                                      **body})
    assert resp.status_code == 400, resp.text
    assert resp.json()["status"] == "fail" and resp.json()["data"]["errors"]
    assert (await gov.client.get(f"{API}/keys?includeRevoked=true")).json()["data"]["total"] == 0


async def test_references_the_schema_cannot_check_are_422(gov: AdminTestApp) -> None:
    await _team(gov)
    for body, field in (({"teamId": "team_nope"}, "teamId"), ({"expiresAt": "2001-01-01T00:00:00Z"}, "expiresAt"),
                        ({"expiresAt": "0001-01-01T00:00:00+01:00"}, "expiresAt")):
        resp = await gov.client.post(f"{API}/keys", json={"name": "a", "teamId": "team_nope", "roles": ["viewer"],
                                                          **body})
        assert resp.status_code == 422 and resp.json()["data"]["errors"][0]["field"] in {field, "teamId"}
    for path in ("key_0000000000000000", "key_0000000000000000/rotate", "key_0000000000000000/revoke"):
        method = gov.client.get if "/" not in path else gov.client.post
        assert (await method(f"{API}/keys/{path}")).status_code == 404, path


async def test_list_filters_by_team_and_role(gov: AdminTestApp) -> None:
    team_id, other = await _team(gov), await _team(gov, "ads")
    await _key(gov, team_id, roles=["inference"])
    await _key(gov, team_id, roles=["operator", "inference"])
    await _key(gov, other, roles=["operator"])
    by_team = (await gov.client.get(f"{API}/keys", params={"teamId": team_id})).json()["data"]
    assert by_team["total"] == 2
    operators = (await gov.client.get(f"{API}/keys", params={"role": "operator", "pageSize": 1})).json()["data"]
    assert operators["total"] == 2 and len(operators["items"]) == 1
    both = (await gov.client.get(f"{API}/keys", params={"role": "inference", "teamId": team_id})).json()["data"]
    assert both["total"] == 2


async def test_every_key_change_is_audited_with_actor_request_id_and_summary_never_the_secret(
        gov: AdminTestApp, caplog: pytest.LogCaptureFixture) -> None:
    team_id = await _team(gov)
    with caplog.at_level(logging.DEBUG):
        created = await _key(gov, team_id)
        rotated = (await gov.client.post(f"{API}/keys/{created['id']}/rotate", params={"reason": "scheduled"},
                                         headers={"x-request-id": "rot-1"})).json()["data"]["key"]
        await gov.client.put(f"{API}/keys/{created['id']}", json={"name": "app", "teamId": team_id,
                                                                   "roles": ["inference"], "rpm": 5})
        await gov.client.post(f"{API}/keys/{created['id']}/revoke", params={"reason": "app retired"},
                              headers={"x-request-id": "rev-1"})
    resp = await gov.client.get("/llm-ops/v1/audit/logs", params={"resourceType": "api_key",
                                                                  "resourceId": created["id"]})
    entries = resp.json()["data"]["items"]
    assert [e["action"] for e in entries] == ["governance.key.revoke", "governance.key.update",
                                              "governance.key.rotate", "governance.key.create"]
    assert all(e["actorKeyId"] == "bootstrap" and e["actorName"] == "bootstrap" and e["requestId"]
               for e in entries)
    assert (entries[0]["requestId"], entries[0]["detail"]) == ("rev-1", "app retired")
    assert (entries[2]["requestId"], entries[2]["detail"]) == ("rot-1", "scheduled")
    assert entries[1]["detail"] == "changed rpm" and entries[1]["before"]["rpm"] is None
    assert entries[3]["detail"] == "key 'app' (inference) in team 'search'"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for token in (created["key"], rotated):
        assert _secret(token) not in resp.text and _secret(token) not in logged

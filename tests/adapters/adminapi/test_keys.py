"""Admin keys over HTTP: created once-visible, listed without secrets, revoked immediately."""

from __future__ import annotations

from adapters.adminapi.auth import parse_key
from adapters.adminapi.testing import AdminTestApp

from ._helpers import bearer, make_key

API = "/llm-ops/v1/admin/keys"


async def test_created_key_works_and_is_never_shown_again(admin: AdminTestApp) -> None:
    key_id, token = await make_key(admin, "operator", "ci-bot")
    assert token.startswith("llmops_")
    assert (await admin.client.get("/llm-ops/v1/demo/things", headers=bearer(token))).status_code == 200
    listed = (await admin.client.get(API)).json()["data"]
    assert listed["total"] == 1
    assert listed["items"][0]["id"] == key_id and listed["items"][0]["role"] == "operator"
    assert "key" not in listed["items"][0] and "secretSha256" not in listed["items"][0]
    one = (await admin.client.get(f"{API}/{key_id}")).json()["data"]
    assert one["name"] == "ci-bot" and one["createdBy"] == "bootstrap" and "key" not in one


async def test_revoked_key_is_refused_and_revoking_twice_is_harmless(admin: AdminTestApp) -> None:
    key_id, token = await make_key(admin, "admin")
    first = await admin.client.delete(f"{API}/{key_id}")
    assert first.status_code == 200 and first.json()["data"]["revokedAt"]
    second = await admin.client.delete(f"{API}/{key_id}")
    assert second.status_code == 200 and second.json()["data"]["revokedAt"] == first.json()["data"]["revokedAt"]
    resp = await admin.client.get(API, headers=bearer(token))
    assert resp.status_code == 401 and "revoked" in resp.json()["message"]
    assert (await admin.client.get(API)).json()["data"]["total"] == 0
    assert (await admin.client.get(f"{API}?includeRevoked=true")).json()["data"]["total"] == 1


async def test_only_admins_manage_keys(admin: AdminTestApp) -> None:
    _, operator = await make_key(admin, "operator")
    resp = await admin.client.post(API, json={"name": "x", "role": "admin"}, headers=bearer(operator))
    assert resp.status_code == 403
    assert (await admin.client.get(API, headers=bearer(operator))).status_code == 403


async def test_bad_key_requests(admin: AdminTestApp) -> None:
    for payload in ({"name": "x", "role": "root"}, {"name": "", "role": "admin"}, {"role": "admin"},
                    {"name": "x", "role": "admin", "extra": 1}, {"name": "bad\nname", "role": "viewer"}):
        resp = await admin.client.post(API, json=payload)
        assert resp.status_code == 400, payload
        assert resp.json()["data"]["errors"]
    assert (await admin.client.get(f"{API}/key_doesnotexist")).status_code == 404
    assert (await admin.client.delete(f"{API}/key_doesnotexist")).status_code == 404
    assert (await admin.client.get(f"{API}?role=root")).status_code == 400


async def test_list_filters_by_role_and_pages(admin: AdminTestApp) -> None:
    for role in ("viewer", "viewer", "operator"):
        await make_key(admin, role)
    viewers = (await admin.client.get(f"{API}?role=viewer&pageSize=1")).json()["data"]
    assert viewers["total"] == 2 and len(viewers["items"]) == 1 and viewers["pageSize"] == 1


async def test_key_changes_are_audited_without_secrets(admin: AdminTestApp) -> None:
    key_id, token = await make_key(admin, "viewer")
    await admin.client.delete(f"{API}/{key_id}")
    resp = await admin.client.get(f"/llm-ops/v1/audit/logs?resourceType=api_key&resourceId={key_id}")
    entries = resp.json()["data"]["items"]
    assert [e["action"] for e in entries] == ["admin.key.revoke", "admin.key.create"]
    assert entries[0]["before"]["revokedAt"] is None and entries[0]["after"]["revokedAt"]
    assert parse_key(token)[1] not in resp.text  # type: ignore[index]

"""Governance over HTTP on both databases: CRUD, versions, validation, audit, change feed."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.adminapi.testing import AdminTestApp
from control.governance import POLICIES_TOPIC

API = "/llm-ops/v1/governance/policies"
DOC: dict[str, Any] = {"scope": {"teams": ["search"]}, "models": {"allow": ["gpt-4o*"]},
                       "limits": {"requestsPerMinute": 60}}


async def create(gov: AdminTestApp, name: str = "search-limits", **extra: Any) -> dict[str, Any]:
    resp = await gov.client.post(API, json={"name": name, "document": DOC, **extra})
    assert resp.status_code == 201, resp.text
    return resp.json()["data"]  # type: ignore[no-any-return]


async def test_create_get_update_versions_delete(gov: AdminTestApp) -> None:
    created = await create(gov, description="first")
    pid = created["id"]
    assert created["version"] == 1 and created["document"]["limits"]["requestsPerMinute"] == 60
    assert created["createdBy"] == "bootstrap" and created["enabled"] is True

    got = (await gov.client.get(f"{API}/{pid}")).json()
    assert got["status"] == "success" and got["data"] == created

    new_doc = {**DOC, "budget": {"limitUsd": 100, "period": "monthly"}}
    resp = await gov.client.put(f"{API}/{pid}", json={"name": "search-limits", "document": new_doc,
                                                      "description": "second", "expectedVersion": 1})
    assert resp.status_code == 200 and resp.json()["message"] == "Policy updated to version 2"
    assert resp.json()["data"]["version"] == 2 and resp.json()["data"]["createdAt"] == created["createdAt"]

    same = await gov.client.put(f"{API}/{pid}", json={"name": "search-limits", "document": new_doc,
                                                      "description": "second"})
    assert same.json()["message"] == "No changes" and same.json()["data"]["version"] == 2

    versions = (await gov.client.get(f"{API}/{pid}/versions")).json()["data"]
    assert versions["total"] == 2 and [v["version"] for v in versions["items"]] == [2, 1]
    v1 = (await gov.client.get(f"{API}/{pid}/versions/1")).json()["data"]
    assert v1["description"] == "first" and v1["document"]["budget"] is None

    deleted = await gov.client.delete(f"{API}/{pid}")
    assert deleted.status_code == 200 and deleted.json()["data"]["version"] == 2
    assert (await gov.client.get(f"{API}/{pid}")).status_code == 404
    assert (await gov.client.put(f"{API}/{pid}", json={"name": "x", "document": DOC})).status_code == 404
    assert (await gov.client.delete(f"{API}/{pid}")).status_code == 404
    assert (await gov.client.get(f"{API}/{pid}/versions")).json()["data"]["total"] == 2  # history survives
    assert (await gov.client.get(API)).json()["data"]["total"] == 0


async def test_every_mutation_is_audited_with_before_and_after(gov: AdminTestApp) -> None:
    pid = (await create(gov))["id"]
    await gov.client.put(f"{API}/{pid}", json={"name": "renamed", "document": DOC})
    await gov.client.delete(f"{API}/{pid}")
    entries = (await gov.client.get(f"/llm-ops/v1/audit/logs?resourceType=policy&resourceId={pid}")).json()
    items = entries["data"]["items"]
    assert [e["action"] for e in items] == ["governance.policy.delete", "governance.policy.update",
                                            "governance.policy.create"]
    delete, update, create_ = items
    assert create_["before"] is None and create_["after"]["name"] == "search-limits"
    assert update["before"]["name"] == "search-limits" and update["after"]["name"] == "renamed"
    assert update["after"]["version"] == 2 and delete["before"]["name"] == "renamed" and delete["after"] is None
    assert {e["actorKeyId"] for e in items} == {"bootstrap"} and all(e["requestId"] for e in items)
    assert [e["detail"] for e in items] == ["policy 'renamed' deleted at version 2", "version 2: changed name",
                                            "policy 'search-limits' version 1 for teams search"]


async def test_validation_errors_name_fields_and_store_nothing(gov: AdminTestApp) -> None:
    cases = [
        ({"name": "p", "document": {"limits": {"requestsPerMinute": "many"}}}, "document.limits.requestsPerMinute"),
        ({"name": "p", "document": {"models": {"allow": ["a", "a"]}}}, "document.models.allow"),  # uniqueItems
        ({"name": "p", "document": {}}, "document"),
        ({"name": "", "document": DOC}, "name"),
        ({"name": "p", "document": DOC, "owner": "me"}, "owner"),
        ({"name": "p", "document": {**DOC, "limitz": {}}}, "document.limitz"),
        ({"document": DOC}, ""),
    ]
    # Schema-valid, refused on meaning: a 422 with the same data.errors.
    semantic = [
        ({"name": "p", "document": {"guardrails": [{"kind": "regex", "pattern": "("}]}},
         "document.guardrails[0].pattern"),
        ({"name": "p", "document": {"guardrails": [{"kind": "blocked_terms", "terms": ["Foo", "foo"]}]}},
         "document.guardrails[0].terms"),
        ({"name": "p", "document": {"models": {"allow": ["a"], "deny": ["a"]}}}, "document.models.deny"),
    ]
    for status, payloads in ((400, cases), (422, semantic)):
        for payload, field in payloads:
            resp = await gov.client.post(API, json=payload)
            assert resp.status_code == status, payload
            body = resp.json()
            assert body["status"] == "fail"
            assert body["data"]["errors"][0]["field"] == field, body
    assert (await gov.client.get(API)).json()["data"]["total"] == 0
    audit = (await gov.client.get("/llm-ops/v1/audit/logs?action=governance.*")).json()["data"]
    assert audit["total"] == 0


async def test_rejected_update_leaves_the_policy_untouched(gov: AdminTestApp) -> None:
    pid = (await create(gov))["id"]
    bad = await gov.client.put(f"{API}/{pid}", json={"name": "search-limits",
                                                     "document": {"models": {"allow": ["a"], "deny": ["a"]}}})
    assert bad.status_code == 422 and bad.json()["data"]["errors"][0]["field"] == "document.models.deny"
    stale = await gov.client.put(f"{API}/{pid}", json={"name": "x", "document": DOC, "expectedVersion": 7})
    assert stale.status_code == 409 and stale.json()["data"] == {"version": 1}
    current = (await gov.client.get(f"{API}/{pid}")).json()["data"]
    assert current["version"] == 1 and current["name"] == "search-limits"
    assert (await gov.client.get(f"{API}/{pid}/versions")).json()["data"]["total"] == 1


async def test_names_are_unique_among_live_policies(gov: AdminTestApp) -> None:
    first = await create(gov, "dup")
    resp = await gov.client.post(API, json={"name": "dup", "document": DOC})
    assert resp.status_code == 409 and "dup" in resp.json()["message"]
    other = await create(gov, "other")
    clash = await gov.client.put(f"{API}/{other['id']}", json={"name": "dup", "document": DOC})
    assert clash.status_code == 409
    await gov.client.delete(f"{API}/{first['id']}")
    assert (await create(gov, "dup"))["id"] != first["id"]  # the name is free again after delete


async def test_list_filters_and_pages(gov: AdminTestApp) -> None:
    await gov.client.post(API, json={"name": "search-a", "document": DOC})
    await gov.client.post(API, json={"name": "ads-b", "enabled": False,
                                      "document": {**DOC, "scope": {"teams": ["ads"]}}})
    await gov.client.post(API, json={"name": "global-c", "document": {**DOC, "scope": {"teams": []}}})

    async def names(query: str) -> list[str]:
        resp = await gov.client.get(f"{API}?{query}")
        assert resp.status_code == 200, resp.text
        return sorted(p["name"] for p in resp.json()["data"]["items"])

    assert await names("team=search") == ["global-c", "search-a"]  # named, or scoped to every team
    assert await names("team=ads") == ["ads-b", "global-c"]
    assert await names("enabled=false") == ["ads-b"]
    assert await names("name=SEARCH") == ["search-a"]
    assert await names("name=%25") == []  # LIKE wildcards are literal
    page = (await gov.client.get(f"{API}?pageSize=2&page=2")).json()["data"]
    assert page["total"] == 3 and len(page["items"]) == 1 and page["page"] == 2
    assert (await gov.client.get(f"{API}?enabled=perhaps")).status_code == 400


async def test_unknown_ids_and_versions(gov: AdminTestApp) -> None:
    pid = (await create(gov))["id"]
    assert (await gov.client.get(f"{API}/pol_missing")).status_code == 404
    assert (await gov.client.get(f"{API}/pol_missing/versions")).status_code == 404
    assert (await gov.client.get(f"{API}/{pid}/versions/2")).status_code == 404
    assert (await gov.client.get(f"{API}/{pid}/versions/abc")).status_code == 404
    assert (await gov.client.get(f"{API}/{'x' * 5000}")).status_code == 404


@pytest.mark.parametrize("raw", [b'{"name": "p", "document": ', b"\x00\x01", b"null"])
async def test_malformed_json_is_rejected(gov: AdminTestApp, raw: bytes) -> None:
    resp = await gov.client.post(API, content=raw, headers={"content-type": "application/json"})
    assert resp.status_code == 400 and resp.json()["status"] == "fail"


async def test_nul_characters_are_a_client_error_not_a_crash(gov: AdminTestApp) -> None:
    resp = await gov.client.post(API, json={"name": "p", "description": "a\u0000b", "document": DOC})
    assert resp.status_code in (201, 400), resp.text  # SQLite stores it; PostgreSQL refuses: never a 500
    resp = await gov.client.get(f"{API}?name=a%00b")
    assert resp.status_code in (200, 400)


async def test_viewers_read_operators_write(gov: AdminTestApp) -> None:
    async def key(role: str) -> dict[str, str]:
        data = (await gov.client.post("/llm-ops/v1/admin/keys", json={"name": role, "role": role})).json()["data"]
        return {"authorization": f"Bearer {data['key']}"}

    viewer, operator = await key("viewer"), await key("operator")
    assert (await gov.client.post(API, json={"name": "p", "document": DOC}, headers=viewer)).status_code == 403
    created = await gov.client.post(API, json={"name": "p", "document": DOC}, headers=operator)
    assert created.status_code == 201 and created.json()["data"]["createdBy"] == "operator"
    assert (await gov.client.get(API, headers=viewer)).status_code == 200


async def test_changes_are_announced_on_the_feed(gov: AdminTestApp) -> None:
    store = gov.plane.store
    assert store is not None
    with store.changes.subscribe(POLICIES_TOPIC) as sub:
        pid = (await create(gov))["id"]
        assert await sub.wait(timeout_s=2) == {POLICIES_TOPIC}
        await gov.client.put(f"{API}/{pid}", json={"name": "x", "document": {"limits": {"requestsPerMinute": 0}}})
        with pytest.raises(TimeoutError):  # a rejected change announces nothing
            await sub.wait(timeout_s=0.1)
        await gov.client.delete(f"{API}/{pid}")
        assert await sub.wait(timeout_s=2) == {POLICIES_TOPIC}

"""Model catalog end to end over HTTP: CRUD, filters, lifecycle with approvals, versions, lineage, delete."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.adminapi import NotFound
from adapters.adminapi.seams import MODEL_REFS
from adapters.adminapi.testing import AdminTestApp
from tests.control.catalog._helpers import API, data, fail, make_key, upload

OPENAI = {"kind": "openai", "baseUrl": "https://api.openai.com/v1", "model": "gpt-4o-mini",
          "apiKeyRef": "env:OPENAI_API_KEY"}


def external(name: str, team: str = "ml", **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "external", "ownerTeam": team, "provider": OPENAI, **extra}


def base(name: str, team: str = "ml", **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "base", "ownerTeam": team, "format": "gguf", **extra}


async def create(app: AdminTestApp, body: dict[str, Any]) -> dict[str, Any]:
    return data(await app.client.post(f"{API}/models", json=body), 201)  # type: ignore[no-any-return]


async def test_crud_filters_paging_and_secret_handling(catalog: AdminTestApp) -> None:
    c = catalog.client
    ext = await create(catalog, external("gpt-mini", description="hosted"))
    assert ext["status"] == "draft" and ext["version"] == 1 and ext["provider"] == OPENAI
    await create(catalog, external("llama-ollama", team="search",
                                   provider={"kind": "ollama", "baseUrl": "http://ollama:11434", "model": "llama3"}))
    b = await create(catalog, base("llama-base", team="search"))
    await create(catalog, {"name": "llama-ft", "type": "fine-tuned", "ownerTeam": "search", "format": "gguf",
                           "parentModelId": b["id"]})
    assert data(await c.get(f"{API}/models/{ext['id']}"))["name"] == "gpt-mini"

    async def names(query: str) -> tuple[list[str], int]:
        page = data(await c.get(f"{API}/models?{query}"))
        return [m["name"] for m in page["items"]], page["total"]

    assert await names("type=external") == (["llama-ollama", "gpt-mini"], 2)
    assert await names("ownerTeam=search&type=base") == (["llama-base"], 1)
    assert await names("name=LLAMA") == (["llama-ft", "llama-base", "llama-ollama"], 3)
    assert await names("status=approved") == ([], 0)
    assert await names("pageSize=2&page=2") == (["llama-ollama", "gpt-mini"], 4)
    assert fail(await c.get(f"{API}/models?type=weird"), 400)["data"]["errors"][0]["field"] == "type"

    fail(await c.get(f"{API}/models/mdl_nope"), 404)
    assert "already exists" in fail(await c.post(f"{API}/models", json=external("gpt-mini")), 409)["message"]
    wrong = fail(await c.post(f"{API}/models", json={**external("x"), "ownerTeam": 5}), 400)
    assert wrong["data"]["errors"][0]["field"] == "ownerTeam"
    shape = fail(await c.post(f"{API}/models", json={"name": "x", "type": "base", "ownerTeam": "ml",
                                                      "provider": OPENAI}), 400)
    assert {e["field"] for e in shape["data"]["errors"]} == {"provider", "format"}
    assert fail(await c.post(f"{API}/models", json={"name": "ft", "type": "fine-tuned", "ownerTeam": "ml",
                                                    "format": "gguf"}), 400)["data"]["errors"][0]["field"] == \
        "parentModelId"

    # Secrets: a raw key is refused with a hint, never echoed; a key-looking ref and credentialed URLs too.
    # The schema declares apiKey (to answer with that hint), so a raw key is schema-valid: a 422.
    raw = fail(await c.post(f"{API}/models", json=external("k", provider={**OPENAI, "apiKey": "sk-live-123"})), 422)
    assert raw["data"]["errors"][0]["field"] == "provider.apiKey" and "sk-live-123" not in str(raw)
    bad_ref = fail(await c.post(f"{API}/models", json=external("k", provider={**OPENAI, "apiKeyRef": "sk-live"})),
                   400)
    assert bad_ref["data"]["errors"][0]["field"] == "provider.apiKeyRef"
    creds = fail(await c.post(f"{API}/models", json=external(
        "k", provider={**OPENAI, "baseUrl": "https://user:pw@api.example.com/v1"})), 400)
    assert creds["data"]["errors"][0]["field"] == "provider.baseUrl"
    assert fail(await c.post(f"{API}/models", json=external(
        "k", provider={**OPENAI, "baseUrl": "ftp://x"})), 400)["data"]["errors"][0]["field"] == "provider.baseUrl"
    no_ref = fail(await c.post(f"{API}/models", json=external(
        "k", provider={k: v for k, v in OPENAI.items() if k != "apiKeyRef"})), 400)
    assert "apiKeyRef" in no_ref["message"]
    audit = data(await c.get("/llm-ops/v1/audit/logs?action=catalog.model.create"))
    assert audit["total"] == 4 and "sk-live" not in str(audit)


async def test_lifecycle_with_approvals_and_illegal_transitions(catalog: AdminTestApp) -> None:
    c = catalog.client
    model = await create(catalog, external("gpt-review"))
    url = f"{API}/models/{model['id']}"

    async def to(status: str, expect: int = 200, **kw: Any) -> Any:
        resp = await c.patch(f"{url}/status", json={"status": status, **kw.pop("body", {})}, **kw)
        return data(resp) if expect == 200 else fail(resp, expect)

    illegal = await to("approved", 409)
    assert illegal["data"] == {"from": "draft", "to": "approved", "allowed": ["under_review"]}
    fail(await c.post(f"{url}/approvals", json={"decision": "approve"}), 409)  # not under review yet
    assert (await to("under_review", body={"note": "ready"}))["status"] == "under_review"
    assert "no decision" in (await to("approved", 409))["message"]

    developer = await make_key(catalog, "developer")
    fail(await c.post(f"{url}/approvals", json={"decision": "approve"}, headers=developer), 403)
    fail(await c.patch(f"{url}/status", json={"status": "draft"}, headers=developer), 403)
    fail(await c.post(f"{url}/approvals", json={"decision": "maybe"}), 400)
    rejected = data(await c.post(f"{url}/approvals", json={"decision": "reject", "note": "latency"}), 201)
    assert rejected["approver"] == "bootstrap" and rejected["modelVersion"] == 1 and rejected["reviewRound"] == 1
    assert "reject" in (await to("approved", 409))["message"]

    # Back to draft and resubmitted: decisions of the earlier round no longer count.
    await to("draft")
    data(await c.put(url, json=external("gpt-review", description="v2")))  # editable again in draft
    await to("under_review")
    assert "no decision" in (await to("approved", 409))["message"]
    data(await c.post(f"{url}/approvals", json={"decision": "approve", "note": "lgtm"}), 201)
    approved = await to("approved")
    assert approved["status"] == "approved" and approved["version"] == 2
    page = data(await c.get(f"{url}/approvals"))
    assert [a["decision"] for a in page["items"]] == ["approve", "reject"] and page["total"] == 2

    assert "only draft and under_review" in fail(await c.put(url, json=external("gpt-review")), 409)["message"]
    await to("deprecated")
    await to("approved")  # reinstated
    await to("deprecated")
    await to("retired")
    final = await to("draft", 409)
    assert final["data"]["allowed"] == [] and "final" in final["message"]
    fail(await c.patch(f"{API}/models/mdl_missing/status", json={"status": "draft"}), 404)
    fail(await c.patch(f"{url}/status", json={"status": "gone"}), 400)

    audit = data(await c.get(f"/llm-ops/v1/audit/logs?action=catalog.model.*&resourceId={model['id']}&pageSize=50"))
    actions = [e["action"] for e in audit["items"]]
    assert actions.count("catalog.model.status") == 8 and actions.count("catalog.model.approval") == 2
    first_status = [e for e in audit["items"] if e["action"] == "catalog.model.status"][-1]
    assert first_status["before"]["status"] == "draft" and first_status["after"]["status"] == "under_review"
    assert first_status["detail"] == "draft -> under_review: ready"


async def test_versions_diff_and_lineage(catalog: AdminTestApp) -> None:
    c = catalog.client
    ds = data(await c.post(f"{API}/datasets", json={"name": "train-set", "ownerTeam": "ml"}), 201)
    data(await upload(catalog, f"datasets/{ds['id']}/upload", ("file", "train.csv", b"prompt,answer\nhi,hello\n")),
         201)
    root = await create(catalog, base("root-model"))
    ft = await create(catalog, {"name": "ft-a", "type": "fine-tuned", "ownerTeam": "ml", "format": "gguf",
                                "parentModelId": root["id"], "trainingDatasets": [{"datasetId": ds["id"],
                                                                                   "version": 1}]})
    ft2 = await create(catalog, {"name": "ft-b", "type": "fine-tuned", "ownerTeam": "ml", "format": "gguf",
                                 "parentModelId": ft["id"]})
    url = f"{API}/models/{root['id']}"

    v2 = data(await c.put(url, json=base("root-model", description="better", tags=["prod"],
                                         labels={"env": "dev"})))
    assert v2["version"] == 2
    same = await c.put(url, json=base("root-model", description="better", tags=["prod"], labels={"env": "dev"}))
    assert data(same)["version"] == 2 and same.json()["message"] == "No changes"
    stale = fail(await c.put(url, json={**base("root-model"), "expectedVersion": 1}), 409)
    assert stale["data"] == {"version": 2}
    data(await c.put(url, json=base("root-model", description="better", format="safetensors", tags=["prod"],
                                    labels={"env": "prod", "tier": "1"}, expectedVersion=2)))
    assert fail(await c.put(url, json=external("root-model")), 422)["data"]["errors"][0]["field"] == "type"

    versions = data(await c.get(f"{url}/versions"))
    assert [v["version"] for v in versions["items"]] == [3, 2, 1]
    assert versions["items"][2]["definition"]["description"] == ""
    diff = data(await c.get(f"{url}/versions/1/diff/3"))
    changes = {ch["field"]: (ch["old"], ch["new"]) for ch in diff["changes"]}
    assert changes == {"description": ("", "better"), "format": ("gguf", "safetensors"),
                       "labels.env": (None, "prod"), "labels.tier": (None, "1"), "tags": ([], ["prod"])}
    assert not diff["identical"] and data(await c.get(f"{url}/versions/2/diff/2"))["identical"]
    fail(await c.get(f"{url}/versions/1/diff/9"), 404)
    fail(await c.get(f"{url}/versions/0"), 400)  # versions start at 1: out of the declared range

    lineage = data(await c.get(f"{API}/models/{ft2['id']}/lineage"))
    assert [m["name"] for m in lineage["ancestors"]] == ["ft-a", "root-model"]
    mid = data(await c.get(f"{API}/models/{ft['id']}/lineage"))
    assert mid["trainingDatasets"] == [{"datasetId": ds["id"], "version": 1, "name": "train-set", "status": "ready"}]
    assert [m["id"] for m in mid["children"]] == [ft2["id"]]

    ft_body = {"name": "ft-a", "type": "fine-tuned", "ownerTeam": "ml", "format": "gguf"}
    cycle = fail(await c.put(f"{API}/models/{ft['id']}", json={**ft_body, "parentModelId": ft2["id"]}), 422)
    assert cycle["data"]["errors"][0]["field"] == "parentModelId" and "cycle" in cycle["message"]
    self_parent = fail(await c.put(f"{API}/models/{ft['id']}", json={**ft_body, "parentModelId": ft["id"]}), 422)
    assert "own parent" in self_parent["message"]
    missing = fail(await c.post(f"{API}/models", json={**ft_body, "name": "ft-c", "parentModelId": root["id"],
                                                      "trainingDatasets": [{"datasetId": ds["id"], "version": 7},
                                                                           {"datasetId": "ds_x", "version": 1}]}),
                   422)
    assert [e["field"] for e in missing["data"]["errors"]] == ["trainingDatasets[0].version",
                                                               "trainingDatasets[1].datasetId"]


async def test_delete_is_refused_while_dependents_exist(catalog: AdminTestApp) -> None:
    c = catalog.client
    parent = await create(catalog, base("parent-model"))
    child = await create(catalog, {"name": "child", "type": "fine-tuned", "ownerTeam": "ml", "format": "gguf",
                                   "parentModelId": parent["id"]})
    ctx = catalog.plane._require_running().contexts["catalog"]
    refs = ctx.services[MODEL_REFS]
    async with ctx.store.begin() as conn:  # what the serving and training modules will do
        await refs.add(conn, parent["id"], "endpoint", "ep-1")
        await refs.add(conn, parent["id"], "endpoint", "ep-1")  # idempotent
        await refs.add(conn, parent["id"], "training_job", "job-9")

    refused = fail(await c.delete(f"{API}/models/{parent['id']}"), 409)
    assert refused["data"]["dependents"] == [{"kind": "endpoint", "id": "ep-1"}, {"kind": "model", "id": child["id"]},
                                             {"kind": "training_job", "id": "job-9"}]
    assert data(await c.get(f"{API}/models/{parent['id']}"))["name"] == "parent-model"

    async with ctx.store.begin() as conn:
        assert await refs.remove(conn, parent["id"], "endpoint", "ep-1")
        assert await refs.remove(conn, parent["id"], "training_job", "job-9")
    data(await c.delete(f"{API}/models/{child['id']}"))
    deleted = data(await c.delete(f"{API}/models/{parent['id']}"))
    assert deleted["id"] == parent["id"]
    fail(await c.get(f"{API}/models/{parent['id']}"), 404)
    fail(await c.delete(f"{API}/models/{parent['id']}"), 404)
    assert (await create(catalog, base("parent-model")))["id"] != parent["id"]  # the name is free again
    with pytest.raises(NotFound):  # a deleted model cannot gain dependents
        async with ctx.store.begin() as conn:
            await refs.add(conn, parent["id"], "endpoint", "ep-2")
    audit = data(await c.get(f"/llm-ops/v1/audit/logs?action=catalog.model.delete&resourceId={parent['id']}"))
    assert audit["total"] == 1 and audit["items"][0]["before"]["name"] == "parent-model"

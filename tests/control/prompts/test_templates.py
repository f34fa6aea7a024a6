"""Templates over HTTP on both databases: versions, conflicts, Jinja refusals with paths, RBAC, audit, snapshot."""

from __future__ import annotations

from typing import Any

from adapters.adminapi.testing import AdminTestApp

from .conftest import API, create, experiment, key, published, template

T = f"{API}/templates"


async def test_create_update_versions_delete_and_recreate(prompts: AdminTestApp) -> None:
    c = prompts.client
    created = await create(prompts, "templates", template())
    assert created["version"] == 1 and created["source"] == "api" and created["createdBy"] == "bootstrap"
    assert created["document"]["messages"][0]["content"] == "You help {{ product }} users."
    assert (await c.get(f"{T}/support")).json() == {"status": "success", "message": "OK", "data": created}

    v2 = await c.put(f"{T}/support", json={"document": template(content="Hi {{ product }}"), "expectedVersion": 1})
    assert v2.status_code == 200 and v2.json()["message"] == "Template updated to version 2", v2.text
    assert v2.json()["data"]["version"] == 2 and v2.json()["data"]["createdAt"] == created["createdAt"]
    same = await c.put(f"{T}/support", json={"document": template(content="Hi {{ product }}")})
    assert same.json()["message"] == "No changes" and same.json()["data"]["version"] == 2
    stale = await c.put(f"{T}/support", json={"document": template(content="x"), "expectedVersion": 1})
    assert stale.status_code == 409 and stale.json()["data"] == {"version": 2}
    assert stale.json()["status"] == "fail" and "version 2, not 1" in stale.json()["message"]

    versions = (await c.get(f"{T}/support/versions")).json()["data"]
    assert versions["total"] == 2 and [v["version"] for v in versions["items"]] == [2, 1]
    v1 = (await c.get(f"{T}/support/versions/1")).json()["data"]
    assert v1["document"]["messages"][0]["content"] == "You help {{ product }} users." and v1["source"] == "api"

    dup = await c.post(T, json={"document": template()})
    assert dup.status_code == 409 and "already exists" in dup.json()["message"]

    deleted = await c.delete(f"{T}/support")
    assert deleted.status_code == 200 and deleted.json()["data"]["version"] == 2
    for resp in (await c.get(f"{T}/support"), await c.delete(f"{T}/support"),
                 await c.put(f"{T}/support", json={"document": template()})):
        assert resp.status_code == 404 and resp.json()["status"] == "fail"
    assert (await c.get(f"{T}/support/versions")).json()["data"]["total"] == 2  # history survives
    assert (await c.get(T)).json()["data"]["total"] == 0
    again = await create(prompts, "templates", template())
    assert again["version"] == 3  # a re-created name continues its numbering


async def test_bad_jinja_and_semantic_rules_are_422_naming_the_path(prompts: AdminTestApp) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        (template(content="Hello {{ product "), "document.messages[0].content"),
        (template(content="Hello {{ customer }}"), "document.messages[0].content"),  # undeclared variable
        ({**template(), "variables": [{"name": "product"}, {"name": "product"}]}, "document.variables[1].name"),
        ({**template(), "variables": [{"name": "product", "type": "integer", "default": "three"}]},
         "document.variables[0].default"),
    ]
    for document, field in cases:
        resp = await prompts.client.post(T, json={"document": document})
        assert resp.status_code == 422, (document, resp.text)
        body = resp.json()
        assert body["status"] == "fail" and body["data"]["errors"][0]["field"] == field, body
    await create(prompts, "templates", template())
    bad = await prompts.client.put(f"{T}/support", json={"document": template(content="{% for %}")})
    assert bad.status_code == 422 and bad.json()["data"]["errors"][0]["field"] == "document.messages[0].content"
    renamed = await prompts.client.put(f"{T}/support", json={"document": template("other")})
    assert renamed.status_code == 422 and renamed.json()["data"]["errors"][0]["field"] == "document.name"
    assert (await prompts.client.get(f"{T}/support")).json()["data"]["version"] == 1  # nothing stored
    audit = (await prompts.client.get("/llm-ops/v1/audit/logs?action=prompts.*")).json()["data"]
    assert [e["action"] for e in audit["items"]] == ["prompts.template.create"]


async def test_every_error_is_an_envelope(prompts: AdminTestApp) -> None:
    c = prompts.client
    cases = [
        (await c.get(f"{T}/nope"), 404),
        (await c.get(f"{T}/nope/versions"), 404),
        (await c.get(f"{T}/nope/versions/1"), 404),
        (await c.get(f"{T}/nope/versions/0"), 400),
        (await c.post(T, content=b"{not json", headers={"content-type": "application/json"}), 400),
        (await c.post(T, content=b"", headers={"content-type": "application/json"}), 400),
        (await c.post(T, json={"document": {**template(), "messages": "hi"}}), 400),
        (await c.post(T, json={"document": {**template(), "messages": [{"role": "robot", "content": "x"}]}}), 400),
        (await c.post(T, json={"document": template(), "owner": "me"}), 400),
        (await c.post(T, json={"document": {**template(), "name": "bad name!"}}), 400),
        (await c.put(f"{T}/support", json={"document": template(), "expectedVersion": "1"}), 400),
        (await c.get(f"{T}?pageSize=0"), 400),
        (await c.get(f"{T}?source=git"), 400),
    ]
    for resp, status in cases:
        assert resp.status_code == status, (resp.request.url, resp.text)
        body = resp.json()
        assert set(body) == {"status", "message", "data"} and body["status"] == "fail", body
        if status == 400 and resp.request.method != "GET":
            assert body["data"]["errors"] if body["data"] else body["message"]
    typed = (await c.post(T, json={"document": {**template(), "messages": "hi"}})).json()
    assert typed["data"]["errors"][0]["field"] == "document.messages"


async def test_viewers_read_operators_write(prompts: AdminTestApp) -> None:
    viewer, operator = await key(prompts, "viewer"), await key(prompts, "operator")
    c = prompts.client
    created = await c.post(T, json={"document": template()}, headers=operator)
    assert created.status_code == 201 and created.json()["data"]["createdBy"] == "k-operator"
    assert (await c.get(T, headers=viewer)).status_code == 200
    assert (await c.get(f"{T}/support/versions/1", headers=viewer)).status_code == 200
    for resp in (await c.post(T, json={"document": template("x")}, headers=viewer),
                 await c.put(f"{T}/support", json={"document": template()}, headers=viewer),
                 await c.delete(f"{T}/support", headers=viewer)):
        assert resp.status_code == 403 and "needs role operator" in resp.json()["message"]
    assert (await c.get(T, headers={"authorization": ""})).status_code == 401
    assert (await c.get(f"{T}/support")).json()["data"]["version"] == 1


async def test_changes_are_audited_with_before_and_after(prompts: AdminTestApp) -> None:
    c = prompts.client
    await create(prompts, "templates", template())
    await c.put(f"{T}/support", json={"document": template(content="v2 {{ product }}")})
    await c.delete(f"{T}/support")
    items = (await c.get("/llm-ops/v1/audit/logs?resourceType=prompt_template&resourceId=support")).json()["data"]
    assert [e["action"] for e in items["items"]] == ["prompts.template.delete", "prompts.template.update",
                                                     "prompts.template.create"]
    delete, update, create_ = items["items"]
    assert create_["before"] is None and create_["after"]["version"] == 1
    assert update["before"]["version"] == 1 and update["after"]["version"] == 2
    assert delete["before"]["version"] == 2 and delete["after"] is None
    assert {e["actorKeyId"] for e in items["items"]} == {"bootstrap"} and all(e["requestId"] for e in items["items"])


async def test_list_filters_and_pages(prompts: AdminTestApp) -> None:
    for name in ("alpha", "beta", "alphabet"):
        await create(prompts, "templates", template(name))
    page = (await prompts.client.get(f"{T}?name=ALPHA&pageSize=1&page=2")).json()["data"]
    assert page["total"] == 2 and [t["name"] for t in page["items"]] == ["alphabet"] and page["pageSize"] == 1
    assert (await prompts.client.get(f"{T}?source=config")).json()["data"]["total"] == 0
    assert (await prompts.client.get(f"{T}?source=api")).json()["data"]["total"] == 3


async def test_a_template_an_experiment_names_is_not_deleted(prompts: AdminTestApp) -> None:
    await create(prompts, "templates", template())
    await create(prompts, "experiments", experiment(b="support"))
    refused = await prompts.client.delete(f"{T}/support")
    assert refused.status_code == 409 and refused.json()["data"] == {"experiments": ["exp1"]}
    await prompts.client.delete(f"{API}/experiments/exp1")
    assert (await prompts.client.delete(f"{T}/support")).status_code == 200


async def test_snapshot_holds_latest_versions_and_pinned_ones(prompts: AdminTestApp) -> None:
    before, _ = await published(prompts.plane.store)
    assert before.templates == []  # published at start-up, empty
    await create(prompts, "templates", template())
    await prompts.client.put(f"{T}/support", json={"document": template(content="v2 {{ product }}")})
    await create(prompts, "templates", template("other"))
    snap, _ = await published(prompts.plane.store)
    assert snap.generation == before.generation + 3
    assert [(t.name, t.version, t.latest, t.source) for t in snap.templates] == [
        ("other", 1, True, "api"), ("support", 2, True, "api")]
    await create(prompts, "experiments", experiment(b="support@1"))
    snap, experiments = await published(prompts.plane.store)
    assert [(t.name, t.version, t.latest) for t in snap.templates] == [
        ("other", 1, True), ("support", 2, True), ("support", 1, False)]
    assert snap.templates[2].document.messages[0].content == "You help {{ product }} users."
    assert [e.document.id for e in experiments.experiments] == ["exp1"]

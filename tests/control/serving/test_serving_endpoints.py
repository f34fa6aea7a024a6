"""Serving endpoints over HTTP: create, list and filter, get, revisions; the model rules; external models;
the route following the runtime; the model reference the catalog honours; bad input. SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.adminapi.seams import ENDPOINTS
from adapters.serving.settings import load_serving_settings
from tests.control.catalog._helpers import data, fail, make_key
from tests.control.serving.serving_support import (
    API,
    CATALOG,
    FakeRuntime,
    ServingApp,
    endpoint,
    model,
    published,
    routes_of,
    serving_app,
)


@pytest.fixture
async def app(database_url: str, tmp_path: Path) -> AsyncIterator[ServingApp]:
    async with serving_app(database_url, tmp_path / "data", runtime=FakeRuntime(ready_on_apply=False)) as running:
        yield running


async def test_create_deploys_revision_one_and_the_route_follows_readiness(app: ServingApp) -> None:
    m = await model(app, "llama-small")
    created = await endpoint(app, m["id"], "chat-small", vllmArgs=["--max-model-len=4096"], useGpu=False)
    ep_id = created["id"]
    assert ep_id.startswith("ep_") and created["route"] == "chat-small" and created["status"] == "deploying"
    assert created["currentRevision"] == 1 and created["canaryRevision"] is None
    assert created["runtime"] == "local" and created["runtimeImage"] == load_serving_settings({}).image(False)
    assert created["model"]["name"] == "llama-small" and created["model"]["version"] == 1
    assert created["queueTimeoutS"] == 60.0 and created["trafficSplit"] == {}
    assert app.runtime.applied == [(ep_id, "stable", 1)]
    spec = app.runtime.specs[0]
    assert spec.served_model_name == "llama-small" and spec.model_uri == f"/models/{m['id']}/llama-small.gguf"
    assert spec.vllm_args == ["--max-model-len=4096"] and spec.use_gpu is False and spec.resources.gpu_count == 0

    # Not ready yet: no route.
    await app.reconcile()
    assert routes_of(await published(app)) == {}
    progressing = data(await app.client.get(f"{API}/{ep_id}"))
    assert progressing["status"] == "deploying" and progressing["slots"]["stable"]["phase"] == "progressing"

    app.runtime.units[(ep_id, "stable")].phase = "ready"
    report = await app.reconcile()
    assert report.published and ep_id in report.changed
    snap = await published(app)
    assert routes_of(snap) == {"chat-small": [(f"serving:{ep_id}:stable", "llama-small", 100.0)]}
    assert snap.providers[0].base_urls == [f"http://fake.test/{ep_id}/stable/r1/v1"]
    assert snap.routes[0].queue_timeout_s == 60.0 and snap.routes[0].source == f"endpoint:{ep_id}"
    ready = data(await app.client.get(f"{API}/{ep_id}"))
    assert ready["status"] == "ready" and ready["statusReason"] is None and ready["trafficSplit"] == {"1": 100}
    assert ready["slots"]["stable"]["weightPercent"] == 100 and ready["replicas"] == {"ready": 1, "desired": 1}
    assert ready["checkedAt"] is not None
    assert not (await app.reconcile()).published  # nothing changed: nothing republished

    revisions = data(await app.client.get(f"{API}/{ep_id}/revisions"))
    assert revisions["total"] == 1
    first = revisions["items"][0]
    assert (first["revision"], first["state"], first["modelVersion"]) == (1, "active", 1)
    assert first["manifests"] == [{"kind": "FakeUnit", "slot": "stable", "revision": 1, "image": first["image"],
                                   "model": spec.model_uri, "args": ["--max-model-len=4096"]}]
    assert first["resources"]["cpu_request"] == "2" and first["useGpu"] is False

    audit = data(await app.client.get(f"/llm-ops/v1/audit/logs?action=serving.*&resourceId={ep_id}"))
    assert [e["action"] for e in audit["items"]] == ["serving.endpoint.create"]


async def test_list_filters_paging_and_conflicts(app: ServingApp) -> None:
    a, b = await model(app, "model-a"), await model(app, "model-b")
    one = await endpoint(app, a["id"], "one")
    two = await endpoint(app, b["id"], "two", environment="STG", route="team/two:latest")
    three = await endpoint(app, a["id"], "three", environment="PROD")
    app.runtime.units[(two["id"], "stable")].phase = "ready"
    await app.reconcile()

    async def names(query: str) -> tuple[list[str], int]:
        page = data(await app.client.get(f"{API}?{query}"))
        return [e["name"] for e in page["items"]], page["total"]

    assert await names("") == (["three", "two", "one"], 3)
    assert await names(f"modelId={a['id']}") == (["three", "one"], 2)
    assert await names("environment=STG") == (["two"], 1)
    assert await names("status=ready") == (["two"], 1)
    assert await names(f"status=deploying&modelId={a['id']}&environment=PROD") == (["three"], 1)
    assert await names("pageSize=1&page=2") == (["two"], 3)
    assert fail(await app.client.get(f"{API}?environment=QA"), 400)["data"]["errors"][0]["field"] == "environment"
    assert fail(await app.client.get(f"{API}?status=sleepy"), 400)["data"]["errors"][0]["field"] == "status"

    taken = fail(await app.client.post(API, json={"name": "one", "modelId": b["id"]}), 409)
    assert "named 'one'" in taken["message"] and taken["data"] == {"endpointId": one["id"]}
    route = fail(await app.client.post(API, json={"name": "four", "modelId": b["id"], "route": "team/two:latest"}),
                 409)
    assert "routed as 'team/two:latest'" in route["message"]
    assert fail(await app.client.post(API, json={"name": "four", "modelId": "mdl_nope"}), 404)["message"] == \
        "No model 'mdl_nope'"
    fail(await app.client.get(f"{API}/ep_nope"), 404)
    fail(await app.client.get(f"{API}/ep_nope/revisions"), 404)
    assert three["environment"] == "PROD"


async def test_only_approved_models_reach_stg_and_prod(app: ServingApp) -> None:
    draft = await model(app, "drafty", status="draft")
    deprecated = await model(app, "old", status="deprecated")
    retired = await model(app, "gone", status="retired")
    for env in ("STG", "PROD"):
        refused = fail(await app.client.post(API, json={"name": f"d-{env.lower()}", "modelId": draft["id"],
                                                        "environment": env}), 409)
        assert f"Only approved models deploy to {env}" in refused["message"] and "draft" in refused["message"]
        fail(await app.client.post(API, json={"name": f"o-{env.lower()}", "modelId": deprecated["id"],
                                              "environment": env}), 409)
    assert (await endpoint(app, draft["id"], "dev-draft"))["environment"] == "DEV"  # DEV: any non-retired model
    assert "retired" in fail(await app.client.post(API, json={"name": "r", "modelId": retired["id"]}), 409)["message"]
    assert len(app.runtime.applied) == 1  # refusals started nothing


async def test_external_model_routes_to_its_provider_at_once(app: ServingApp) -> None:
    ext = await model(app, "gpt-mini", kind="external")
    created = await endpoint(app, ext["id"], "gpt", environment="PROD", route="gpt-prod")
    assert created["runtime"] == "external" and created["status"] == "ready" and created["runtimeImage"] is None
    assert created["trafficSplit"] == {"1": 100} and created["slots"]["stable"]["baseUrl"] == OPENAI_URL
    assert app.runtime.applied == []
    snap = await published(app)
    assert routes_of(snap) == {"gpt-prod": [(f"serving:{created['id']}:stable", "gpt-4o-mini", 100.0)]}
    provider = snap.providers[0]
    assert (provider.kind, provider.base_urls, provider.api_key_ref) == ("openai", [OPENAI_URL], "env:OPENAI_API_KEY")
    await app.reconcile()  # the reconciler leaves external endpoints alone
    assert data(await app.client.get(f"{API}/{created['id']}"))["status"] == "ready" and app.runtime.applied == []
    runtime_only = fail(await app.client.post(API, json={"name": "gpt2", "modelId": ext["id"], "useGpu": True,
                                                         "vllmArgs": ["--x"]}), 422)
    assert {e["field"] for e in runtime_only["data"]["errors"]} == {"useGpu", "vllmArgs"}


OPENAI_URL = "https://api.openai.com/v1"


async def test_a_deployed_model_cannot_be_deleted_from_the_catalog(app: ServingApp) -> None:
    m = await model(app, "pinned")
    created = await endpoint(app, m["id"], "pinned")
    refused = fail(await app.client.delete(f"{CATALOG}/models/{m['id']}"), 409)
    assert refused["data"]["dependents"] == [{"kind": "endpoint", "id": created["id"]}]
    data(await app.client.delete(f"{API}/{created['id']}"))
    data(await app.client.delete(f"{CATALOG}/models/{m['id']}"))  # the reference went with the endpoint


async def test_bad_input_is_refused_with_the_field(app: ServingApp) -> None:
    m = await model(app, "m")
    c = app.client

    async def refused(body: object, status: int) -> set[str]:
        resp = await c.post(API, json=body) if not isinstance(body, bytes) else await c.post(
            API, content=body, headers={"content-type": "application/json"})
        return {e["field"] for e in (fail(resp, status)["data"] or {}).get("errors", [])}

    good = {"name": "ok", "modelId": m["id"]}
    assert await refused({**good, "minReplicas": "1"}, 400) == {"minReplicas"}
    assert await refused({**good, "useGpu": 1}, 400) == {"useGpu"}
    assert await refused({**good, "surprise": True}, 400) == {"surprise"}
    assert await refused({**good, "name": "Bad_Name"}, 400) == {"name"}
    assert await refused({**good, "name": "x" * 41}, 400) == {"name"}
    assert await refused({**good, "name": "a\u0000b"}, 400) == {"name"}
    assert await refused({**good, "route": "../../etc/passwd"}, 400) == {"route"}
    assert await refused({**good, "servingRuntimeImage": "img; rm -rf /"}, 400) == {"servingRuntimeImage"}
    assert await refused({**good, "vllmArgs": ["--x"] * 65}, 400) == {"vllmArgs"}
    assert await refused({**good, "vllmArgs": ["a" * 501]}, 400) == {"vllmArgs[0]"}
    assert await refused({**good, "environment": "QA"}, 400) == {"environment"}
    assert await refused({**good, "minReplicas": 3, "maxReplicas": 2}, 422) == {"minReplicas"}
    assert await refused({**good, "minReplicas": 0}, 422) == {"minReplicas"}  # the local runtime cannot
    reserved = await refused({**good, "vllmArgs": ["--dtype=half", "--port=9", "--model", "x", "--host=0",
                                                   "--served-model-name=y", "--api-key=sk-secret"]}, 422)
    assert reserved == {"vllmArgs[1]", "vllmArgs[2]", "vllmArgs[4]", "vllmArgs[5]", "vllmArgs[6]"}
    assert await refused({**good, "vllmArgs": ["--chat-template=a\nb"]}, 422) == {"vllmArgs[0]"}
    assert await refused(b'{"name": "ok", "modelId": ', 400) == set()
    secret = fail(await c.post(API, json={**good, "vllmArgs": ["--api-key=sk-live-abc"]}), 422)
    assert "sk-live-abc" not in str(secret)
    assert app.runtime.applied == []
    assert data(await c.get(API))["total"] == 0

    viewer = await make_key(app.app, "viewer")
    fail(await c.post(API, json=good, headers=viewer), 403)
    assert data(await c.get(API, headers=viewer))["total"] == 0


async def test_other_modules_find_endpoints_through_the_directory(app: ServingApp) -> None:
    a, b = await model(app, "dir-a"), await model(app, "dir-b")
    first = await endpoint(app, a["id"], "first")
    second = await endpoint(app, b["id"], "second", environment="STG")
    data(await app.client.post(f"{API}/{second['id']}/redeploy", json={}))
    doomed = await endpoint(app, a["id"], "doomed")
    app.runtime.delete_faults.add(f"{doomed['id']}/stable")
    assert (await app.client.delete(f"{API}/{doomed['id']}")).status_code == 502  # being deleted: not live
    ctx = app.app.plane._require_running().contexts["serving"]
    directory = ctx.services[ENDPOINTS]
    async with ctx.store.read() as conn:
        everything = await directory.find(conn)
        by_model = await directory.find(conn, model_id=a["id"])
        staged = await directory.find(conn, environment="STG")
        one = await directory.find(conn, endpoint_id=first["id"], environment="DEV")
        none = await directory.find(conn, endpoint_id=first["id"], environment="PROD")
    assert [e.name for e in everything] == ["first", "second"]
    assert [e.id for e in by_model] == [first["id"]] and none == []
    (ref,) = staged
    assert (ref.route, ref.environment, ref.model_id, ref.model_version, ref.revision, ref.status) == (
        "second", "STG", b["id"], 1, 2, "deploying")
    assert one == [ref.__class__(id=first["id"], name="first", route="first", environment="DEV", model_id=a["id"],
                                 model_version=1, revision=1, status="deploying")]


async def test_vllm_args_that_look_like_secrets_are_refused(app: ServingApp) -> None:
    m = await model(app, "m")
    args = ["--max-num-batched-tokens=8192", "--tokenizer=hf-internal/tok", "--hf-token=abc", "--db_password",
            "x", "--chat-template=sk-proj-123456", "hf_abcdefgh", "--kv-cache-dtype=fp8"]
    refused = fail(await app.client.post(API, json={"name": "s", "modelId": m["id"], "vllmArgs": args}), 422)
    assert {e["field"] for e in refused["data"]["errors"]} == {"vllmArgs[2]", "vllmArgs[3]", "vllmArgs[5]",
                                                               "vllmArgs[6]"}
    assert "abc" not in refused["message"] and "sk-proj" not in str(refused)
    ok = await endpoint(app, m["id"], "s", vllmArgs=[args[0], args[1], args[7]])
    assert ok["vllmArgs"] == [args[0], args[1], args[7]]

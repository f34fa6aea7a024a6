"""Serving in the console: deploy from the form (API field errors beside the fields), the endpoint's detail with
its revisions and self-refreshing status, redeploy, roll back, promote (the gate's refusal in words, an admin's
override), delete with confirmation; a viewer sees everything but no button, and the server refuses anyway.

Endpoints run on the embedded default's LocalRuntime (a mock OpenAI-compatible server process per slot)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.gateway.console.conftest import shoot, sign_in

READY_MS = 60_000  # a local endpoint's server process starting and the reconciler seeing it
GGUF = b"GGUF" + (3).to_bytes(4, "little") + bytes(56)


def _data(answer: httpx.Response, status: int = 200) -> Any:
    assert answer.status_code == status, answer.text
    return answer.json()["data"]


@pytest.fixture(scope="module")
def model(api: httpx.Client) -> dict[str, Any]:
    """An approved GGUF base model in the catalog (LocalRuntime's mock server never reads the file)."""
    made = _data(api.post("/catalog/models", json={"name": f"srv-{uuid.uuid4().hex[:8]}", "type": "base",
                                                   "format": "gguf", "ownerTeam": "serving"}), 201)
    _data(api.post(f"/catalog/models/{made['id']}/upload", files={"files": ("tiny.gguf", GGUF)}), 201)
    _data(api.patch(f"/catalog/models/{made['id']}/status", json={"status": "under_review"}))
    _data(api.post(f"/catalog/models/{made['id']}/approvals", json={"decision": "approve", "note": "console"}), 201)
    return _data(api.patch(f"/catalog/models/{made['id']}/status", json={"status": "approved"}))


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _deploy(api: httpx.Client, model_id: str, name: str, **extra: Any) -> dict[str, Any]:
    body = {"name": name, "modelId": model_id, "useGpu": False, "servingRuntimeImage": "example.org/vllm-cpu:v1",
            **extra}
    return _data(api.post("/serving/endpoints", json=body), 201)


def _endpoint(api: httpx.Client, endpoint_id: str) -> dict[str, Any]:
    return _data(api.get(f"/serving/endpoints/{endpoint_id}"))


def _revisions(api: httpx.Client, endpoint_id: str) -> list[dict[str, Any]]:
    return _data(api.get(f"/serving/endpoints/{endpoint_id}/revisions"))["items"]


def _wait_ready(page: Page) -> None:
    """The detail page refreshes its status block by itself until the endpoint is healthy."""
    expect(page.locator("#ep-status .status-line .badge")).to_have_text("ready", timeout=READY_MS)


def test_deploying_from_the_form_lists_the_endpoint_and_the_api_holds_it(
        page: Page, keys: dict[str, str], api: httpx.Client, model: dict[str, Any]) -> None:
    name, image = _name("web"), "example.org/vllm-cpu:form"
    sign_in(page, keys["operator"], "/console/serving")
    page.get_by_role("link", name="Deploy a model").click()
    expect(page.get_by_role("heading", name="Deploy a model")).to_be_visible()
    expect(page.get_by_label("Use GPUs")).to_be_checked()
    page.get_by_label("Endpoint name").fill(name)
    page.get_by_label("Model").select_option(model["id"])
    page.get_by_label("Use GPUs").uncheck()
    page.get_by_label("Runtime image").fill(image)
    page.get_by_label("Maximum replicas").fill("2")
    page.get_by_label("vLLM arguments").fill("--max-model-len=2048\n--enforce-eager")
    shoot(page, "serving-deploy")
    page.get_by_role("button", name="Deploy", exact=True).click()

    expect(page.get_by_role("heading", name=f"Endpoint {name}")).to_be_visible()
    _wait_ready(page)  # the status block refreshed itself from deploying to ready
    expect(page.locator("#ep-status")).not_to_have_attribute("hx-trigger", "every 2s")  # and stopped polling
    expect(page.get_by_role("row").filter(has_text="example.org/vllm-cpu:form")).to_have_count(1)  # revision 1

    held = [e for e in _data(api.get("/serving/endpoints", params={"modelId": model["id"], "pageSize": 200}))["items"]
            if e["name"] == name]
    assert len(held) == 1
    e = held[0]
    assert (e["useGpu"], e["gpuCount"], e["runtimeImage"]) == (False, 0, image)
    assert (e["minReplicas"], e["maxReplicas"], e["environment"], e["route"]) == (1, 2, "DEV", name)
    assert e["vllmArgs"] == ["--max-model-len=2048", "--enforce-eager"]

    page.get_by_role("link", name="← Endpoints").click()
    page.get_by_label("Model").select_option(model["id"])
    page.get_by_label("Status").select_option("ready")
    page.get_by_role("button", name="Filter").click()
    row = page.get_by_role("row").filter(has_text=name)
    expect(row).to_contain_text(image)
    expect(row).to_contain_text("ready")
    expect(row).to_contain_text("1/1")
    shoot(page, "serving-list")
    page.get_by_label("Status").select_option("failed")
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_role("row").filter(has_text=name)).to_have_count(0)
    expect(page.get_by_text("No endpoints match.")).to_be_visible()
    assert not page.problems.console and not page.problems.page_errors  # type: ignore[attr-defined]


def test_the_deploy_form_shows_errors_beside_their_fields(page: Page, keys: dict[str, str], api: httpx.Client,
                                                          model: dict[str, Any]) -> None:
    name = _name("bad")
    sign_in(page, keys["operator"], "/console/serving/new")
    page.get_by_label("Endpoint name").fill(name)
    page.get_by_role("button", name="Deploy", exact=True).click()  # no model chosen
    expect(page.locator("#f-modelId-err")).to_have_text("Required")
    expect(page.get_by_label("Endpoint name")).to_have_value(name)

    page.get_by_label("Model").select_option(model["id"])
    page.get_by_label("Minimum replicas").fill("3")
    page.get_by_label("Maximum replicas").fill("1")
    page.get_by_label("vLLM arguments").fill("--port=9000")
    page.get_by_role("button", name="Deploy", exact=True).click()  # the API refuses both, naming the fields
    expect(page.locator("#f-minReplicas-err")).to_contain_text("above maxReplicas")
    expect(page.locator("#f-vllmArgs-err")).to_contain_text("--port is set by the serving runtime")
    expect(page.get_by_label("Minimum replicas")).to_have_value("3")
    shoot(page, "serving-deploy-errors")
    listed = _data(api.get("/serving/endpoints", params={"pageSize": 200}))["items"]
    assert name not in {e["name"] for e in listed}


def test_a_redeploy_with_a_new_image_adds_a_revision(page: Page, keys: dict[str, str], api: httpx.Client,
                                                     model: dict[str, Any]) -> None:
    made = _deploy(api, model["id"], _name("redo"))
    sign_in(page, keys["operator"], f"/console/serving/{made['id']}")
    _wait_ready(page)
    revisions = page.get_by_role("table").filter(has=page.get_by_role("columnheader", name="Model version"))
    expect(revisions.get_by_role("row")).to_have_count(2)  # the header and revision 1
    shoot(page, "serving-detail")

    redeploy = page.locator("#redeploy")
    expect(redeploy.get_by_label("Use GPUs")).not_to_be_checked()  # as the endpoint runs now
    redeploy.get_by_label("Runtime image").fill("example.org/vllm-cpu:v2")
    redeploy.get_by_label("Reason").fill("new image")
    page.once("dialog", lambda dialog: dialog.accept())
    redeploy.get_by_role("button", name="Redeploy").click()
    expect(revisions.get_by_role("row")).to_have_count(3)
    expect(revisions.get_by_role("row").nth(1)).to_contain_text("example.org/vllm-cpu:v2")

    e = _endpoint(api, made["id"])
    assert (e["currentRevision"], e["runtimeImage"], e["useGpu"]) == (2, "example.org/vllm-cpu:v2", False)
    held = {r["revision"]: r for r in _revisions(api, made["id"])}
    assert (held[2]["state"], held[2]["image"], held[2]["reason"]) == ("active", "example.org/vllm-cpu:v2", "new image")
    assert held[1]["state"] == "superseded"
    _wait_ready(page)
    assert not page.problems.all()  # type: ignore[attr-defined]  # the status polling included


def test_rolling_back_makes_the_earlier_revision_current(page: Page, keys: dict[str, str], api: httpx.Client,
                                                         model: dict[str, Any]) -> None:
    made = _deploy(api, model["id"], _name("back"))
    sign_in(page, keys["operator"], f"/console/serving/{made['id']}")
    _wait_ready(page)
    _data(api.post(f"/serving/endpoints/{made['id']}/redeploy",
                   json={"servingRuntimeImage": "example.org/vllm-cpu:v2"}))
    page.reload()
    row = page.get_by_role("row").filter(has_text="superseded")
    expect(row).to_contain_text("example.org/vllm-cpu:v1")
    page.once("dialog", lambda dialog: dialog.dismiss())  # dismissed: nothing happens
    row.get_by_role("button", name="Roll back to this").click()
    assert _endpoint(api, made["id"])["currentRevision"] == 2

    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Roll back to this").click()
    expect(page.get_by_role("row").filter(has_text="rolled_back")).to_contain_text("example.org/vllm-cpu:v2")
    e = _endpoint(api, made["id"])
    assert (e["currentRevision"], e["runtimeImage"]) == (1, "example.org/vllm-cpu:v1")
    assert {r["revision"]: r["state"] for r in _revisions(api, made["id"])} == {1: "active", 2: "rolled_back"}

    page.once("dialog", lambda dialog: dialog.accept())  # nothing earlier than revision 1: refused, in words
    page.get_by_role("button", name="Roll back to the previous revision").click()
    expect(page.get_by_role("alert")).to_contain_text("has no earlier revision to roll back to")
    assert _endpoint(api, made["id"])["currentRevision"] == 1


def test_the_canary_share_is_set_from_the_form_and_zero_drops_it(page: Page, keys: dict[str, str],
                                                                  api: httpx.Client, model: dict[str, Any]) -> None:
    made = _deploy(api, model["id"], _name("can"))
    _data(api.post(f"/serving/endpoints/{made['id']}/redeploy",
                   json={"servingRuntimeImage": "example.org/vllm-cpu:v2", "canaryPercent": 10}))
    sign_in(page, keys["operator"], f"/console/serving/{made['id']}")
    split = page.locator("#ep-status .split")
    expect(split).to_contain_text("canary (revision 2) 10%", timeout=READY_MS)  # once both slots serve
    traffic = page.locator("#traffic")
    traffic.get_by_label("Canary percentage").fill("130")
    page.once("dialog", lambda dialog: dialog.accept())
    traffic.get_by_role("button", name="Set canary share").click()
    expect(page.locator("#tr-canaryPercent-err")).to_have_text("At most 100")
    page.locator("#traffic").get_by_label("Canary percentage").fill("30")
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#traffic").get_by_role("button", name="Set canary share").click()
    expect(split).to_contain_text("stable (revision 1) 70%")
    expect(split).to_contain_text("canary (revision 2) 30%")
    assert _endpoint(api, made["id"])["trafficSplit"] == {"1": 70, "2": 30}

    page.locator("#traffic").get_by_label("Canary percentage").fill("0")
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#traffic").get_by_role("button", name="Set canary share").click()
    expect(page.locator("#traffic")).to_contain_text("No canary runs")
    e = _endpoint(api, made["id"])
    assert (e["canaryRevision"], e["currentRevision"]) == (None, 1)
    assert {r["revision"]: r["state"] for r in _revisions(api, made["id"])} == {1: "active", 2: "rolled_back"}

def test_promotion_shows_the_gates_refusal_and_an_admin_overrides_it(page: Page, keys: dict[str, str],
                                                                     api: httpx.Client, model: dict[str, Any]) -> None:
    made = _deploy(api, model["id"], _name("prom"), environment="STG")
    _data(api.put(f"/evaluation/gates/endpoint/{made['id']}",
                  json={"thresholds": [{"metric": "token_f1", "min": 0.5}]}))
    sign_in(page, keys["admin"], f"/console/serving/{made['id']}")
    promote = page.locator("#promote")
    page.once("dialog", lambda dialog: dialog.accept())
    promote.get_by_role("button", name="Promote to PROD").click()
    expect(page.locator("#promote")).to_contain_text("The promotion gate refused: no succeeded evaluation run")
    expect(page.locator("#promote .gate")).to_contain_text("refused")
    assert _endpoint(api, made["id"])["environment"] == "STG"

    page.locator("#promote").get_by_label("Override a failed promotion gate").check()
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#promote").get_by_role("button", name="Promote to PROD").click()  # an override needs a reason
    expect(page.locator("#pr-reason-err")).to_contain_text("an override needs a reason")
    page.locator("#promote").get_by_label("Reason").fill("hotfix signed off by on-call")
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#promote").get_by_role("button", name="Promote to PROD").click()
    expect(page.locator("#ep-status")).to_contain_text("PROD")
    expect(page.locator("#promote")).to_have_count(0)  # PROD is the last step
    assert _endpoint(api, made["id"])["environment"] == "PROD"


def test_an_operator_promotes_to_stg_but_is_offered_nothing_further(page: Page, keys: dict[str, str],
                                                                     api: httpx.Client, model: dict[str, Any]) -> None:
    made = _deploy(api, model["id"], _name("stg"))
    sign_in(page, keys["operator"], f"/console/serving/{made['id']}")
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#promote").get_by_role("button", name="Promote to STG").click()
    expect(page.locator("#ep-status")).to_contain_text("STG")
    assert _endpoint(api, made["id"])["environment"] == "STG"
    expect(page.locator("#promote")).to_have_count(0)  # STG -> PROD is an admin's
    csrf = page.locator("body").get_attribute("data-csrf") or ""
    forced = page.request.post(f"/console/serving/{made['id']}/promote", form={"csrf": csrf, "environment": "PROD"},
                               max_redirects=0)
    assert forced.status == 403 and "needs role admin" in forced.text()
    assert _endpoint(api, made["id"])["environment"] == "STG"


def test_deleting_asks_first_then_the_endpoint_is_gone(page: Page, keys: dict[str, str], api: httpx.Client,
                                                       model: dict[str, Any]) -> None:
    name = _name("del")
    made = _deploy(api, model["id"], name)
    sign_in(page, keys["operator"], f"/console/serving/{made['id']}")
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.get_by_role("button", name="Delete endpoint").click()
    expect(page.get_by_role("heading", name=f"Endpoint {name}")).to_be_visible()
    assert api.get(f"/serving/endpoints/{made['id']}").status_code == 200

    messages: list[str] = []

    def accept(dialog: Any) -> None:
        messages.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    page.get_by_role("button", name="Delete endpoint").click()
    expect(page.get_by_role("status")).to_have_text(f"Endpoint {name} deleted.")
    assert messages and name in messages[0]
    assert api.get(f"/serving/endpoints/{made['id']}").status_code == 404
    expect(page.get_by_role("link", name=name)).to_have_count(0)


def test_a_viewer_sees_endpoints_but_no_actions_and_the_server_refuses_them(
        page: Page, keys: dict[str, str], api: httpx.Client, model: dict[str, Any]) -> None:
    name = _name("look")
    made = _deploy(api, model["id"], name)
    sign_in(page, keys["viewer"], "/console/serving")
    expect(page.get_by_role("link", name=name)).to_be_visible()
    expect(page.get_by_role("link", name="Deploy a model")).to_have_count(0)
    page.get_by_role("link", name=name).click()
    expect(page.get_by_role("heading", name=f"Endpoint {name}")).to_be_visible()
    expect(page.get_by_role("heading", name="Revisions")).to_be_visible()
    for label in ("Roll back to the previous revision", "Roll back to this", "Redeploy", "Delete endpoint",
                  "Promote to STG", "Set canary share"):
        expect(page.get_by_role("button", name=label)).to_have_count(0)
    assert page.locator("form[method=post]").count() == 1  # signing out only

    csrf = page.locator("body").get_attribute("data-csrf") or ""
    base = f"/console/serving/{made['id']}"
    for path, form in (("/redeploy", {"servingRuntimeImage": "example.org/evil:1"}), ("/rollback", {}),
                       ("/promote", {"environment": "STG"}), ("/delete", {"name": name})):
        forced = page.request.post(base + path, form={"csrf": csrf, **form}, max_redirects=0)
        assert forced.status == 403 and "Not allowed" in forced.text(), path
    created = page.request.post("/console/serving/new", max_redirects=0,
                                form={"csrf": csrf, "name": _name("sneak"), "modelId": model["id"]})
    assert created.status == 403
    assert page.request.get("/console/serving/new").status == 403
    e = _endpoint(api, made["id"])
    assert (e["currentRevision"], e["environment"], e["runtimeImage"]) == (1, "DEV", "example.org/vllm-cpu:v1")
    assert len(_revisions(api, made["id"])) == 1
    names = {x["name"] for x in _data(api.get("/serving/endpoints", params={"pageSize": 200}))["items"]}
    assert name in names and not any(n.startswith("sneak-") for n in names)


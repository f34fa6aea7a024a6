"""A model's page shows its whole lineage: the endpoint serving it, its route's traffic and cost (equal to the
cost API's), and the evaluation runs naming it; a part the key may not read is left out, not an error."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from playwright.sync_api import Page, expect

from tests.gateway.console.conftest import Server, shoot, sign_in
from tests.serve_process import until

GGUF = b"GGUF" + (3).to_bytes(4, "little") + bytes(56)


def _data(answer: httpx.Response, status: int = 200) -> Any:
    assert answer.status_code == status, answer.text
    return answer.json()["data"]


def test_a_models_page_shows_its_endpoint_traffic_and_cost(page: Page, server: Server, keys: dict[str, str],
                                                           api: httpx.Client) -> None:
    name = f"lineage-{uuid.uuid4().hex[:8]}"
    model = _data(api.post("/catalog/models", json={"name": name, "type": "base", "format": "gguf",
                                                   "ownerTeam": "lineage"}), 201)
    _data(api.post(f"/catalog/models/{model['id']}/upload", files={"files": ("tiny.gguf", GGUF)}), 201)
    endpoint = _data(api.post("/serving/endpoints", json={
        "name": name, "modelId": model["id"], "route": name, "useGpu": False,
        "servingRuntimeImage": "example.org/vllm-cpu:v1"}), 201)
    until(lambda: _data(api.get(f"/serving/endpoints/{endpoint['id']}"))["status"] == "ready", 90)
    caller = {"authorization": f"Bearer {keys['inference']}"}
    until(lambda: httpx.post(server.url + "/v1/chat/completions", headers=caller, timeout=30, json={
        "model": name, "messages": [{"role": "user", "content": "hi"}]}).status_code == 200, 30)  # once routed

    def routed() -> dict[str, Any] | None:
        rows = _data(api.get("/observability/usage", params={"group_by": "route", "granularity": "total"}))["rows"]
        return next((r for r in rows if r["route"] == name), None)

    until(lambda: routed() is not None, 30)
    row = routed()
    assert row is not None

    sign_in(page, keys["viewer"], f"/console/catalog/models/{model['id']}")
    serving = page.locator("table[aria-labelledby=serving-h]")
    expect(serving.get_by_role("link", name=name)).to_have_attribute("href", f"/console/serving/{endpoint['id']}")
    traffic = page.locator("table[aria-labelledby=traffic-h]").get_by_role("row").filter(has_text=name)
    expect(traffic.locator("td").nth(1)).to_have_text(f"{row['requests']:,}")
    expect(page.get_by_text("No evaluation run names this model.")).to_be_visible()
    shoot(page, "models-detail-lineage")
    assert not page.problems.all()  # type: ignore[attr-defined]

"""Promotion gates in the console: set from the model's page (the API's errors beside the document), replace,
remove with confirmation; a viewer reads the gate and can change nothing."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
from playwright.sync_api import Page, expect

from tests.gateway.console.conftest import shoot, sign_in


def _model(api: httpx.Client) -> dict[str, Any]:
    answer = api.post("/catalog/models", json={"name": f"gated-{uuid.uuid4().hex[:8]}", "type": "base",
                                               "format": "gguf", "ownerTeam": "gates"})
    assert answer.status_code == 201, answer.text
    data: dict[str, Any] = answer.json()["data"]
    return data


def test_a_developer_sets_replaces_and_removes_a_models_gate(page: Page, keys: dict[str, str],
                                                             api: httpx.Client) -> None:
    model = _model(api)
    sign_in(page, keys["developer"], f"/console/catalog/models/{model['id']}")
    page.get_by_role("link", name="Promotion gate").click()
    expect(page.get_by_text("No gate is set")).to_be_visible()
    document = page.get_by_label("Gate (JSON)")
    document.fill(json.dumps({"thresholds": [{"metric": "token_f1"}]}))  # no bound: refused, with its path
    page.get_by_role("button", name="Set the gate").click()
    expect(page.locator("#f-gate-err")).to_contain_text("thresholds")
    assert api.get(f"/evaluation/gates/model/{model['id']}").status_code == 404
    document.fill(json.dumps({"thresholds": [{"metric": "token_f1", "min": 0.6}]}))
    page.get_by_role("button", name="Set the gate").click()
    expect(page.get_by_text("Gate saved.")).to_be_visible()
    held = api.get(f"/evaluation/gates/model/{model['id']}").json()["data"]["config"]
    assert [(t["metric"], t["min"]) for t in held["thresholds"]] == [("token_f1", 0.6)]
    shoot(page, "evaluation-gate")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Remove the gate").click()
    expect(page.get_by_text("Gate removed.")).to_be_visible()
    assert api.get(f"/evaluation/gates/model/{model['id']}").status_code == 404


def test_a_viewer_reads_the_gate_and_cannot_change_it(page: Page, keys: dict[str, str], api: httpx.Client) -> None:
    model = _model(api)
    assert api.put(f"/evaluation/gates/model/{model['id']}",
                   json={"thresholds": [{"metric": "token_f1", "min": 0.5}]}).status_code == 200
    sign_in(page, keys["viewer"], f"/console/evaluation/gates/model/{model['id']}")
    expect(page.locator("pre.json")).to_contain_text("token_f1")
    expect(page.get_by_role("button")).to_have_count(1)  # only "Sign out"
    csrf = page.locator("body").get_attribute("data-csrf") or ""
    for suffix in ("", "/delete"):
        forced = page.request.post(f"/console/evaluation/gates/model/{model['id']}{suffix}",
                                   form={"csrf": csrf, "gate": "{}"}, max_redirects=0)
        assert forced.status == 403, suffix
    assert api.get(f"/evaluation/gates/model/{model['id']}").json()["data"]["config"]["thresholds"][0]["min"] == 0.5

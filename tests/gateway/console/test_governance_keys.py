"""Governance keys in the console: create (with the API's field errors beside the fields), the one-time secret,
revoke with confirmation; a viewer sees no buttons and the server refuses anyway."""

from __future__ import annotations

import re
import uuid

import httpx
from playwright.sync_api import Page, expect

from tests.gateway.console.conftest import Server, shoot, sign_in


def test_an_admin_creates_and_revokes_a_key(page: Page, keys: dict[str, str], api: httpx.Client) -> None:
    name = f"svc-{uuid.uuid4().hex[:8]}"
    sign_in(page, keys["admin"], "/console/governance/keys")
    page.get_by_role("link", name="Create a key").click()
    page.get_by_label("Name").fill(name)
    page.get_by_role("button", name="Create key").click()  # no role ticked: the API refuses, beside the field
    expect(page.locator("fieldset .error")).to_be_visible()
    expect(page.get_by_label("Name")).to_have_value(name)  # what was typed is kept
    page.get_by_label("inference").check()
    page.get_by_role("button", name="Create key").click()
    expect(page.get_by_role("heading", name="Key created")).to_be_visible()
    secret = page.get_by_label(f"Key for {name}").input_value()
    assert re.fullmatch(r"llmops_[0-9a-f]{16}_[A-Za-z0-9_-]{43}", secret)
    shoot(page, "governance-key-created")
    listed = api.get("/governance/keys", params={"pageSize": 200}).json()["data"]["items"]
    held = [k for k in listed if k["name"] == name]
    assert len(held) == 1 and held[0]["roles"] == ["inference"] and held[0]["status"] == "active"

    page.get_by_role("link", name="Back to keys").click()
    row = page.get_by_role("row").filter(has_text=name)
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Revoke").click()
    expect(page.get_by_role("row").filter(has_text=name)).to_have_count(0)  # revoked keys are hidden by default
    assert api.get(f"/governance/keys/{held[0]['id']}").json()["data"]["status"] == "revoked"
    shoot(page, "governance-keys")


def test_dismissing_the_confirmation_revokes_nothing(page: Page, keys: dict[str, str], api: httpx.Client) -> None:
    made = api.post("/governance/keys", json={"name": f"keep-{uuid.uuid4().hex[:8]}", "teamId": "team_default",
                                              "roles": ["viewer"]}).json()["data"]
    sign_in(page, keys["admin"], "/console/governance/keys?pageSize=200")
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.get_by_role("row").filter(has_text=made["name"]).get_by_role("button", name="Revoke").click()
    expect(page.get_by_role("row").filter(has_text=made["name"])).to_have_count(1)
    assert api.get(f"/governance/keys/{made['id']}").json()["data"]["status"] == "active"


def test_an_operator_sees_keys_but_no_revoke_and_the_server_refuses_it(
        page: Page, server: Server, keys: dict[str, str], api: httpx.Client) -> None:
    made = api.post("/governance/keys", json={"name": f"target-{uuid.uuid4().hex[:8]}", "teamId": "team_default",
                                              "roles": ["viewer"]}).json()["data"]
    sign_in(page, keys["operator"], "/console/governance/keys")
    expect(page.get_by_role("heading", name="Keys")).to_be_visible()
    expect(page.get_by_role("button", name="Revoke")).to_have_count(0)
    expect(page.get_by_role("link", name="Create a key")).to_have_count(0)
    csrf = page.locator("body").get_attribute("data-csrf")
    forced = page.request.post(f"/console/governance/keys/{made['id']}/revoke", form={"csrf": csrf or ""},
                               max_redirects=0)
    assert forced.status == 403 and "Not allowed" in forced.text()
    assert api.get(f"/governance/keys/{made['id']}").json()["data"]["status"] == "active"


def test_a_viewer_is_told_keys_are_not_for_them(page: Page, keys: dict[str, str]) -> None:
    sign_in(page, keys["viewer"], "/console/governance/keys")
    expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()


def test_the_audit_log_filters_and_shows_a_bad_date_beside_its_field(page: Page, keys: dict[str, str],
                                                                     api: httpx.Client) -> None:
    sign_in(page, keys["operator"], "/console/governance/audit?action=governance.key.*")
    expect(page.get_by_role("row").filter(has_text="governance.key.create").first).to_be_visible()
    shoot(page, "governance-audit")
    page.get_by_label("Since").fill("not-a-date")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#f-since-err")).to_be_visible()


def test_an_admin_edits_a_keys_limits_and_rotates_its_secret(page: Page, server: Server, keys: dict[str, str],
                                                             api: httpx.Client) -> None:
    made = api.post("/governance/keys", json={"name": f"edit-{uuid.uuid4().hex[:8]}", "teamId": "team_default",
                                              "roles": ["viewer"], "rpm": 50}).json()["data"]
    sign_in(page, keys["admin"], "/console/governance/keys?pageSize=200")
    page.get_by_role("row").filter(has_text=made["name"]).get_by_role("link", name="Edit").click()
    expect(page.get_by_label("Requests per minute")).to_have_value("50")  # what the key holds is pre-filled
    page.get_by_label("Tokens per minute").fill("0")
    page.get_by_role("button", name="Save key").click()
    expect(page.locator("#f-tpm-err")).to_be_visible()  # refused beside the field, nothing saved
    page.get_by_label("Tokens per minute").fill("9000")
    page.get_by_label("Budget (USD)").fill("12.50")
    page.get_by_label("Budget period").select_option("monthly")
    page.get_by_role("button", name="Save key").click()
    expect(page.get_by_role("heading", name="Keys")).to_be_visible()
    held = api.get(f"/governance/keys/{made['id']}").json()["data"]
    assert (held["rpm"], held["tpm"], held["budgetUsd"], held["budgetPeriod"]) == (50, 9000, "12.5", "monthly")

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("row").filter(has_text=made["name"]).get_by_role("button", name="Rotate").click()
    expect(page.get_by_role("heading", name="Key rotated")).to_be_visible()
    fresh = page.get_by_label(f"Key for {made['name']}").input_value()
    assert fresh != made["key"]
    url = server.url + "/llm-ops/v1/catalog/models"
    assert httpx.get(url, headers={"authorization": f"Bearer {made['key']}"}).status_code == 401
    assert httpx.get(url, headers={"authorization": f"Bearer {fresh}"}).status_code == 200

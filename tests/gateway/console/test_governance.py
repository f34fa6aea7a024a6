"""Governance policies and teams in the console: create a policy from the form (the document's nested errors beside
the document field), edit it to version 2 and read the diff, delete it; create, edit and delete a team (the API's
refusal in words while it has keys); who sees which buttons, and the server refusing a forced POST.

Every policy made here is scoped to a team of its own (a unique name no key belongs to), so it never limits the
requests of the other tests sharing the gateway.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from gateway.console.pages.governance import json_diff
from tests.gateway.console.conftest import shoot, sign_in


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _make_policy(api: httpx.Client, tpm: int = 10) -> dict[str, Any]:
    document = {"scope": {"teams": [_unique("nobody")]}, "limits": {"tokensPerMinute": tpm}}
    answer = api.post("/governance/policies", json={"name": _unique("pol"), "document": document})
    assert answer.status_code == 201, answer.text
    return dict(answer.json()["data"])


def _make_team(api: httpx.Client) -> dict[str, Any]:
    answer = api.post("/governance/teams", json={"name": _unique("team"), "rpm": 10})
    assert answer.status_code == 201, answer.text
    return dict(answer.json()["data"])


def _csrf(page: Page) -> str:
    return page.locator("body").get_attribute("data-csrf") or ""


def test_an_operator_creates_a_policy_from_the_form(page: Page, keys: dict[str, str], api: httpx.Client) -> None:
    name, team = _unique("limits"), _unique("nobody")
    sign_in(page, keys["operator"], "/console/governance")
    expect(page.get_by_role("heading", name="Governance", exact=True)).to_be_visible()
    shoot(page, "governance-overview")
    page.get_by_role("navigation", name="Governance").get_by_role("link", name="Policies").click()
    page.get_by_role("link", name="Create a policy").click()
    document = page.get_by_label("Policy document (JSON)")
    assert "limits" in json.loads(document.input_value())  # pre-filled with a small valid example
    page.get_by_label("Name").fill(name)
    page.get_by_label("Teams (scope)").fill(team)
    shoot(page, "governance-policy-form")
    page.get_by_role("button", name="Create policy").click()
    expect(page.get_by_role("heading", name=f"Policy {name}")).to_be_visible()
    shoot(page, "governance-policy")

    held = api.get("/governance/policies", params={"name": name}).json()["data"]["items"]
    assert len(held) == 1 and held[0]["version"] == 1 and held[0]["enabled"] is True
    assert held[0]["document"]["scope"]["teams"] == [team]
    assert held[0]["document"]["limits"]["requestsPerMinute"] == 600
    page.get_by_role("link", name="All policies").click()
    expect(page.get_by_role("row").filter(has_text=name)).to_contain_text(team)
    shoot(page, "governance-policies")
    page.get_by_role("link", name="the policy document's fields").click()
    expect(page.get_by_role("heading", name="Limits", exact=True)).to_be_visible()
    expect(page.get_by_role("row").filter(has_text="tokensPerMinute")).to_contain_text("≥ 1")
    shoot(page, "governance-policy-schema")
    assert not page.problems.all()  # type: ignore[attr-defined]
    api.delete(f"/governance/policies/{held[0]['id']}")


def test_an_invalid_document_is_shown_beside_the_document_field(page: Page, keys: dict[str, str],
                                                                 api: httpx.Client) -> None:
    name = _unique("bad")
    sign_in(page, keys["operator"], "/console/governance/policies/new")
    page.get_by_label("Name").fill(name)
    page.get_by_label("Teams (scope)").fill(_unique("nobody"))
    document = page.get_by_label("Policy document (JSON)")
    document.fill('{"limits": {"tokensPerMinute": 0}}')
    page.get_by_role("button", name="Create policy").click()
    refusal = page.locator("#f-document-err")
    expect(refusal).to_contain_text("document.limits.tokensPerMinute")
    expect(refusal).to_contain_text(">= 1")
    expect(document).to_have_attribute("aria-invalid", "true")
    expect(document).to_have_value('{"limits": {"tokensPerMinute": 0}}')  # what was typed is kept
    expect(page.get_by_label("Name")).to_have_value(name)
    shoot(page, "governance-policy-form-errors")

    document.fill('{"models": {"allow": ["a*"], "deny": ["a*"]}}')  # refused on meaning (422), path named too
    page.get_by_role("button", name="Create policy").click()
    expect(refusal).to_contain_text("document.models.deny")
    document.fill('{"limits": ')
    page.get_by_role("button", name="Create policy").click()
    expect(refusal).to_contain_text("Not valid JSON")
    assert api.get("/governance/policies", params={"name": name}).json()["data"]["total"] == 0


def test_editing_makes_version_2_and_the_diff_shows_the_change(page: Page, keys: dict[str, str],
                                                               api: httpx.Client) -> None:
    made = _make_policy(api, tpm=10)
    sign_in(page, keys["operator"], f"/console/governance/policies/{made['id']}")
    page.get_by_role("link", name="Edit (creates version 2)").click()
    document = page.get_by_label("Policy document (JSON)")
    edited = json.loads(document.input_value())
    assert edited == {"limits": {"tokensPerMinute": 10}}  # no nulls, the scope in its own field
    edited["limits"]["tokensPerMinute"] = 20
    document.fill(json.dumps(edited))
    page.get_by_label("Description").fill("twice the tokens")
    page.get_by_role("button", name="Save as the next version").click()
    expect(page.get_by_role("heading", name=f"Policy {made['name']}")).to_be_visible()
    expect(page.get_by_role("row").filter(has_text="(current)")).to_contain_text("2")
    held = api.get(f"/governance/policies/{made['id']}").json()["data"]
    assert held["version"] == 2 and held["document"]["limits"]["tokensPerMinute"] == 20
    assert held["document"]["scope"] == made["document"]["scope"]

    page.get_by_role("link", name="Changes in 2").click()
    expect(page.get_by_role("heading", name=f"Policy {made['name']}: version 1 → 2")).to_be_visible()
    row = page.locator("#diff tr").filter(has_text="document.limits.tokensPerMinute")
    expect(row).to_contain_text("changed")
    expect(row.locator("td").nth(2)).to_have_text("10")
    expect(row.locator("td").nth(3)).to_have_text("20")
    expect(page.locator("#diff tr").filter(has_text="description")).to_contain_text("twice the tokens")
    expect(page.locator("#diff tbody tr")).to_have_count(2)
    shoot(page, "governance-policy-diff")

    page.goto(f"/console/governance/policies/{made['id']}/versions/1")
    expect(page.get_by_label("Policy document, version 1")).to_contain_text('"tokensPerMinute": 10')
    shoot(page, "governance-policy-version")
    assert not page.problems.all()  # type: ignore[attr-defined]
    api.delete(f"/governance/policies/{made['id']}")


def test_deleting_a_policy_asks_first_and_keeps_its_history(page: Page, keys: dict[str, str],
                                                            api: httpx.Client) -> None:
    made = _make_policy(api)
    sign_in(page, keys["operator"], f"/console/governance/policies/{made['id']}")
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.get_by_role("button", name="Delete policy").click()
    expect(page.get_by_role("button", name="Delete policy")).to_be_visible()
    assert api.get(f"/governance/policies/{made['id']}").status_code == 200

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete policy").click()
    expect(page.get_by_role("status")).to_contain_text("This policy is deleted")
    expect(page.get_by_role("button", name="Delete policy")).to_have_count(0)
    assert api.get(f"/governance/policies/{made['id']}").status_code == 404
    assert api.get(f"/governance/policies/{made['id']}/versions/1").status_code == 200


def test_an_admin_creates_edits_and_deletes_a_team(page: Page, keys: dict[str, str], api: httpx.Client) -> None:
    name = _unique("search")
    sign_in(page, keys["admin"], "/console/governance/teams")
    page.get_by_role("link", name="Create a team").click()
    page.get_by_label("Name").fill(name)
    page.get_by_label("Requests per minute").fill("600")
    page.get_by_label("Budget (USD)").fill("12.50")
    page.get_by_role("button", name="Create team").click()  # a budget without a period: the API refuses
    expect(page.locator("#f-budgetPeriod-err")).to_be_visible()
    page.get_by_label("Budget period").select_option("monthly")
    page.get_by_label("Allowed models").fill("mock-*, gpt-4o")
    shoot(page, "governance-team-form")
    page.get_by_role("button", name="Create team").click()
    expect(page.get_by_role("heading", name=f"Team {name}")).to_be_visible()
    held = api.get("/governance/teams", params={"name": name}).json()["data"]["items"]
    assert len(held) == 1
    team = held[0]
    assert (team["rpm"], team["budgetUsd"], team["budgetPeriod"]) == (600, "12.5", "monthly")
    assert team["allowedModels"] == ["mock-*", "gpt-4o"]

    page.get_by_role("link", name="Edit team").click()
    expect(page.get_by_label("Budget (USD)")).to_have_value("12.5")
    page.get_by_label("Tokens per minute").fill("50000")
    page.get_by_label("Requests per minute").fill("")
    page.get_by_role("button", name="Save team").click()
    expect(page.get_by_role("heading", name=f"Team {name}")).to_be_visible()
    team = api.get(f"/governance/teams/{team['id']}").json()["data"]
    assert (team["rpm"], team["tpm"], team["budgetUsd"]) == (None, 50000, "12.5")

    key = api.post("/governance/keys", json={"name": "team-key", "teamId": team["id"], "roles": ["inference"]})
    page.reload()
    expect(page.get_by_role("row").filter(has_text=key.json()["data"]["id"])).to_be_visible()
    shoot(page, "governance-team")
    expect(page.get_by_role("link", name="All 1 active key of this team on the keys page")).to_have_attribute(
        "href", f"/console/governance/keys?teamId={team['id']}")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete team").click()
    expect(page.get_by_role("alert")).to_contain_text("1 unrevoked key(s): revoke them first")
    assert api.get(f"/governance/teams/{team['id']}").status_code == 200

    api.post(f"/governance/keys/{key.json()['data']['id']}/revoke")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete team").click()
    expect(page.get_by_role("heading", name="Teams", exact=True)).to_be_visible()
    expect(page.get_by_role("row").filter(has_text=name)).to_have_count(0)
    assert api.get(f"/governance/teams/{team['id']}").status_code == 404
    shoot(page, "governance-teams")


@pytest.mark.parametrize("role", ["operator", "developer"])
def test_below_admin_there_is_no_team_button_and_a_forced_post_is_refused(page: Page, keys: dict[str, str],
                                                                         api: httpx.Client, role: str) -> None:
    made = _make_team(api)
    sign_in(page, keys[role], "/console/governance/teams")
    expect(page.get_by_role("link", name=made["name"])).to_be_visible()
    expect(page.get_by_role("link", name="Create a team")).to_have_count(0)
    page.get_by_role("link", name=made["name"]).click()
    expect(page.get_by_role("heading", name=f"Team {made['name']}")).to_be_visible()
    expect(page.get_by_role("button", name="Delete team")).to_have_count(0)
    expect(page.get_by_role("link", name="Edit team")).to_have_count(0)
    forced = page.request.post("/console/governance/teams/new", form={"csrf": _csrf(page), "name": _unique("sneak")},
                               max_redirects=0)
    assert forced.status == 403 and "Not allowed" in forced.text()
    forced = page.request.post(f"/console/governance/teams/{made['id']}/delete", form={"csrf": _csrf(page)},
                               max_redirects=0)
    assert forced.status == 403
    assert api.get(f"/governance/teams/{made['id']}").status_code == 200
    assert api.get("/governance/teams", params={"name": "sneak-"}).json()["data"]["total"] == 0
    api.delete(f"/governance/teams/{made['id']}")


def test_a_viewer_sees_policies_read_only(page: Page, keys: dict[str, str], api: httpx.Client) -> None:
    made = _make_policy(api)
    api.put(f"/governance/policies/{made['id']}", json={"name": made["name"], "document": {
        "scope": made["document"]["scope"], "limits": {"tokensPerMinute": 11}}})
    sign_in(page, keys["viewer"], "/console/governance/policies")
    expect(page.get_by_role("link", name=made["name"])).to_be_visible()
    expect(page.get_by_role("link", name="Create a policy")).to_have_count(0)
    page.get_by_role("link", name=made["name"]).click()
    expect(page.get_by_role("heading", name=f"Policy {made['name']}")).to_be_visible()
    expect(page.get_by_role("link", name="Edit (creates version 3)")).to_have_count(0)
    expect(page.get_by_role("button", name="Delete policy")).to_have_count(0)
    assert page.locator("main form[method=post]").count() == 0
    page.get_by_role("button", name="Compare").click()  # reading the history is a viewer's too
    expect(page.locator("#diff tr").filter(has_text="document.limits.tokensPerMinute")).to_contain_text("11")

    forced = page.request.post(f"/console/governance/policies/{made['id']}/delete", form={"csrf": _csrf(page)},
                               max_redirects=0)
    assert forced.status == 403 and "Not allowed" in forced.text()
    forced = page.request.post("/console/governance/policies/new", form={
        "csrf": _csrf(page), "name": _unique("sneak"), "document": '{"limits": {"tokensPerMinute": 1}}',
        "teams": _unique("nobody")}, max_redirects=0)
    assert forced.status == 403
    assert api.get(f"/governance/policies/{made['id']}").json()["data"]["version"] == 2
    assert api.get("/governance/policies", params={"name": "sneak-"}).json()["data"]["total"] == 0
    page.goto("/console/governance/policies/new")
    expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    api.delete(f"/governance/policies/{made['id']}")


def test_the_diff_names_added_removed_and_changed_paths() -> None:
    before = {"name": "p", "document": {"limits": {"rpm": 1}, "guardrails": [{"kind": "pii", "action": "redact"}],
                                        "scope": {"teams": ["a"]}}}
    after = {"name": "p", "document": {"limits": {"rpm": 2}, "guardrails": [{"kind": "pii", "action": "block"},
                                                                           {"kind": "max_input"}],
                                       "scope": {"teams": ["a", "b"]}, "budget": {"limitUsd": 5}}}
    changes = {(c.kind, c.path, c.before, c.after) for c in json_diff(before, after)}
    assert changes == {
        ("changed", "document.limits.rpm", "1", "2"),
        ("changed", "document.guardrails[0].action", '"redact"', '"block"'),
        ("added", "document.guardrails[1]", None, '{"kind": "max_input"}'),
        ("changed", "document.scope.teams", '["a"]', '["a", "b"]'),
        ("added", "document.budget", None, '{"limitUsd": 5}'),
    }
    assert json_diff(after, after) == []
    assert [c.kind for c in json_diff({"a": 1}, {})] == ["removed"]
    assert json_diff({"a": 1}, {"a": True})[0].kind == "changed"  # 1 and true are different JSON

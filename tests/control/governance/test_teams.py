"""/governance/teams: CRUD with limits, budgets and allowed models; deletion guarded by live keys; audited."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from adapters.adminapi.testing import AdminTestApp
from adapters.dataplane import DEFAULT_TEAM_ID

API = "/llm-ops/v1/governance/teams"
FULL = {"name": "search", "description": "Search squad", "allowedModels": ["gpt-4o*", "llama3"], "rpm": 600,
        "tpm": 100_000, "maxConcurrent": 20, "budgetUsd": "500", "budgetPeriod": "monthly"}


async def _create(gov: AdminTestApp, **body: Any) -> dict[str, Any]:
    resp = await gov.client.post(API, json=body or FULL)
    assert resp.status_code == 201, resp.text
    return dict(resp.json()["data"])


async def test_create_get_list_update(gov: AdminTestApp) -> None:
    team = await _create(gov)
    assert {k: team[k] for k in FULL} == FULL and team["id"].startswith("team_")
    assert (await gov.client.get(f"{API}/{team['id']}")).json()["data"] == team
    listed = (await gov.client.get(API, params={"name": "EAR"})).json()["data"]
    assert [t["id"] for t in listed["items"]] == [team["id"]]
    everyone = (await gov.client.get(API)).json()["data"]
    assert {t["id"] for t in everyone["items"]} == {team["id"], DEFAULT_TEAM_ID}  # migration 3's default team

    update = {"name": "search-v2", "rpm": 60}
    resp = await gov.client.put(f"{API}/{team['id']}", json=update)
    assert resp.status_code == 200 and resp.json()["message"] == "Team updated"
    data = resp.json()["data"]
    assert (data["name"], data["rpm"], data["tpm"], data["budgetUsd"], data["allowedModels"]) == (
        "search-v2", 60, None, None, None)  # a full replacement: what is left out is cleared
    again = await gov.client.put(f"{API}/{team['id']}", json=update)
    assert again.json()["message"] == "No changes" and again.json()["data"]["updatedAt"] == data["updatedAt"]


async def test_names_are_unique_even_after_deletion(gov: AdminTestApp) -> None:
    team = await _create(gov)
    assert (await gov.client.post(API, json={"name": "search"})).status_code == 409
    other = await _create(gov, name="ads")
    assert (await gov.client.put(f"{API}/{other['id']}", json={"name": "search"})).status_code == 409
    assert (await gov.client.delete(f"{API}/{team['id']}")).status_code == 200
    assert (await gov.client.get(f"{API}/{team['id']}")).status_code == 404
    taken = await gov.client.post(API, json={"name": "search"})
    assert taken.status_code == 409 and "deleted" in taken.json()["message"]


async def test_a_team_with_live_keys_cannot_be_deleted(gov: AdminTestApp) -> None:
    team = await _create(gov)
    key = (await gov.client.post("/llm-ops/v1/governance/keys", json={
        "name": "app", "teamId": team["id"], "roles": ["inference"]})).json()["data"]
    refused = await gov.client.delete(f"{API}/{team['id']}")
    assert refused.status_code == 409 and refused.json()["data"]["dependents"] == [{"kind": "key", "id": key["id"]}]
    await gov.client.post(f"/llm-ops/v1/governance/keys/{key['id']}/revoke")
    assert (await gov.client.delete(f"{API}/{team['id']}")).status_code == 200
    gone = await gov.client.post("/llm-ops/v1/governance/keys", json={"name": "x", "teamId": team["id"],
                                                                       "roles": ["inference"]})
    assert gone.status_code == 422 and gone.json()["data"]["errors"][0]["field"] == "teamId"


async def test_a_key_created_while_its_team_is_deleted_never_outlives_the_team(gov: AdminTestApp) -> None:
    for round_ in range(8):
        team = await _create(gov, name=f"race-{round_}")
        created, deleted = await asyncio.gather(
            gov.client.post("/llm-ops/v1/governance/keys", json={"name": "k", "teamId": team["id"],
                                                                  "roles": ["inference"]}),
            gov.client.delete(f"{API}/{team['id']}"))
        # Either the key came first (the delete is refused) or the delete did (the key is refused): never both.
        assert (created.status_code, deleted.status_code) in {(201, 409), (422, 200)}, (created.text, deleted.text)


async def test_the_default_team_stays(gov: AdminTestApp) -> None:
    resp = await gov.client.delete(f"{API}/{DEFAULT_TEAM_ID}")
    assert resp.status_code == 409 and "/admin/keys" in resp.json()["message"]


@pytest.mark.parametrize("body", [
    {"name": "bad name"}, {"name": ""}, {"name": "x" * 65}, {"name": "a", "rpm": 0}, {"name": "a", "budgetUsd": 1},
    {"name": "a", "budgetPeriod": "yearly"}, {"name": "a", "allowedModels": ["m", "m"]}, {"name": "a", "limits": {}},
    {"name": "a", "description": "d" * 501},
])
async def test_malformed_teams_are_400(gov: AdminTestApp, body: dict[str, Any]) -> None:
    resp = await gov.client.post(API, json=body)
    assert resp.status_code == 400, resp.text
    assert resp.json()["data"]["errors"]


async def test_unknown_teams_are_404(gov: AdminTestApp) -> None:
    assert (await gov.client.get(f"{API}/team_nope")).status_code == 404
    assert (await gov.client.put(f"{API}/team_nope", json={"name": "x"})).status_code == 404
    assert (await gov.client.delete(f"{API}/team_nope")).status_code == 404


async def test_team_changes_are_audited(gov: AdminTestApp) -> None:
    team = await _create(gov)
    await gov.client.put(f"{API}/{team['id']}", json={**FULL, "rpm": 1}, headers={"x-request-id": "upd-7"})
    await gov.client.delete(f"{API}/{team['id']}")
    entries = (await gov.client.get("/llm-ops/v1/audit/logs", params={"resourceType": "team",
                                                                      "resourceId": team["id"]})).json()["data"]
    actions = [(e["action"], e["actorName"], e["detail"]) for e in entries["items"]]
    assert actions == [("governance.team.delete", "bootstrap", "team 'search'"),
                       ("governance.team.update", "bootstrap", "changed rpm"),
                       ("governance.team.create", "bootstrap", "team 'search'")]
    update = entries["items"][1]
    assert (update["requestId"], update["before"]["rpm"], update["after"]["rpm"]) == ("upd-7", 600, 1)

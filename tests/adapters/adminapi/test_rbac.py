"""RBAC: one permission table, checked by the one guard; every role against representative paths; data-plane-only
keys refused on every admin path; the table in docs/admin-api.md is the table the server checks."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from adapters.adminapi import ControlCfg, load_control_plane
from adapters.adminapi.rbac import PermissionTable, Role, admin_role, may_use_data_plane
from adapters.adminapi.testing import AdminTestApp, admin_test_app
from adapters.dataplane import DEFAULT_TEAM_ID
from control.governance import module as governance

from ._helpers import bearer
from .conftest import DemoModule

API = "/llm-ops/v1"
DOCS = Path(__file__).parents[3] / "docs" / "admin-api.md"
ORDER = ["inference", "viewer", "developer", "operator", "admin"]
# (method, path, body, minimum role): a representative path per role and module, each with a request that
# succeeds (or fails for a reason other than permission: 404 for the made-up key) once the role suffices.
CASES: list[tuple[str, str, dict[str, Any] | None, str]] = [
    ("GET", "/demo/things", None, "viewer"),
    ("GET", "/governance/policies", None, "viewer"),
    ("GET", "/governance/teams", None, "viewer"),
    ("POST", "/demo/things", {"name": "x"}, "developer"),
    ("POST", "/governance/policies", {"name": "p-{role}", "document": {"limits": {"requestsPerMinute": 1}}},
     "operator"),
    ("GET", "/governance/keys", None, "operator"),
    ("GET", "/audit/logs", None, "operator"),
    ("POST", "/governance/teams", {"name": "t-{role}"}, "admin"),
    ("POST", "/governance/keys/key_0000000000000000/revoke", None, "admin"),
    ("GET", "/admin/keys", None, "admin"),
    ("GET", "/demo/admin-only", None, "admin"),
]


@pytest.fixture
async def plane(database_url: str, tmp_path: Path) -> AsyncIterator[AdminTestApp]:
    cfg = ControlCfg(database_url=database_url, data_dir=str(tmp_path / "data"), change_feed="local")
    async with admin_test_app(cfg, modules=[DemoModule(), governance]) as app:
        yield app


async def _key(app: AdminTestApp, *roles: str) -> str:
    resp = await app.client.post(f"{API}/governance/keys", json={"name": "-".join(roles), "teamId": DEFAULT_TEAM_ID,
                                                                 "roles": list(roles)})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["data"]["key"])


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


def test_roles_rank_and_the_data_plane_needs_inference() -> None:
    assert Role.inference < Role.viewer < Role.developer < Role.operator < Role.admin
    assert admin_role(["inference"]) is Role.inference and admin_role([]) is Role.inference
    assert admin_role(["inference", "developer", "viewer"]) is Role.developer
    assert may_use_data_plane(["developer", "inference"]) and not may_use_data_plane(["admin"])


async def test_each_role_reaches_exactly_its_paths(plane: AdminTestApp) -> None:
    keys: dict[str, tuple[str, str]] = {role: (role, await _key(plane, role)) for role in ORDER}
    keys["developer+inference"] = ("developer", await _key(plane, "developer", "inference"))
    for label, (rank, token) in keys.items():
        for method, path, body, minimum in CASES:
            json = None if body is None else {k: v.replace("{role}", label.replace("+", "-")) if isinstance(v, str)
                                               else v for k, v in body.items()}
            resp = await plane.client.request(method, f"{API}{path}", json=json, headers=bearer(token))
            if ORDER.index(rank) >= ORDER.index(minimum):
                assert resp.status_code not in (401, 403), (label, method, path, resp.text)
            else:
                assert resp.status_code == 403, (label, method, path, resp.text)
                assert f"needs role {minimum}" in resp.json()["message"]


async def test_a_data_plane_only_key_is_refused_on_every_admin_path(plane: AdminTestApp) -> None:
    token = await _key(plane, "inference")
    table = plane.plane.permissions
    assert len(table) > 20
    for (method, path), minimum in table.items():
        if minimum is None or method in {"HEAD", "OPTIONS"}:
            continue
        resp = await plane.client.request(method, f"{API}{_concrete(path)}", headers=bearer(token),
                                          json={} if method in {"POST", "PUT", "PATCH"} else None)
        assert resp.status_code == 403, (method, path, resp.text)
        assert "data-plane only" in resp.json()["message"]
    denied = (await plane.client.get(f"{API}/audit/logs", params={"outcome": "denied"})).json()["data"]["items"]
    assert denied and all(e["actorRole"] == "inference" and e["statusCode"] == 403 for e in denied)
    assert token.rsplit("_", 1)[1] not in str(denied)


async def test_the_guard_checks_the_table(plane: AdminTestApp, monkeypatch: pytest.MonkeyPatch) -> None:
    token = await _key(plane, "viewer")
    assert (await plane.client.get(f"{API}/demo/things", headers=bearer(token))).status_code == 200
    monkeypatch.setitem(plane.plane.permissions._rows, ("GET", "/demo/things"), Role.operator)
    refused = await plane.client.get(f"{API}/demo/things", headers=bearer(token))
    assert refused.status_code == 403 and "needs role operator" in refused.json()["message"]


def test_the_table_follows_handler_declarations() -> None:
    table = load_control_plane(ControlCfg(), modules=[DemoModule(), governance], environ={}).permissions
    assert isinstance(table, PermissionTable)
    assert table[("GET", "/demo/public")] is None
    assert table[("GET", "/demo/things")] is Role.viewer  # a read, by default
    assert table[("POST", "/demo/things")] is Role.developer  # declared
    assert table[("POST", "/demo/echo")] is Role.operator  # a write, by default
    assert table[("POST", "/governance/keys/{keyId}/rotate")] is Role.admin  # the controller's
    assert table[("GET", "/governance/keys/{keyId}")] is Role.operator  # the handler's, over the controller's


def _documented() -> dict[tuple[str, str], str]:
    text = DOCS.read_text(encoding="utf-8")
    section = text[text.index("### Permission table"):]
    section = section[:section.index("\n#", 1)]
    rows = re.findall(r"^\| (GET|POST|PUT|PATCH|DELETE) \| `([^`]+)` \| (\w+) \|$", section, flags=re.M)
    return {(method, path): role for method, path, role in rows}


def test_the_documented_table_is_the_checked_table() -> None:
    """Every documented row is what the server checks; governance, admin and audit rows are all documented."""
    table = load_control_plane(ControlCfg(), environ={}).permissions  # every installed module
    documented = _documented()
    served = {key: "public" if role is None else role.name for key, role in table.items()
              if key[0] not in {"HEAD", "OPTIONS"}}
    wrong = {k: (v, served[k]) for k, v in documented.items() if k in served and served[k] != v}
    assert not wrong, f"docs/admin-api.md disagrees with the server: {wrong}"
    mine = {k: v for k, v in served.items()
            if re.match(r"/(admin|audit|governance/(keys|teams|policies))(/|$)", k[1])}
    missing = sorted(set(mine) - set(documented))
    assert not missing, f"undocumented in docs/admin-api.md's permission table: {missing}"

"""Admin authentication: key format, roles, constant-time checks, and denials in the audit log."""

from __future__ import annotations

import logging

import pytest

from adapters.adminapi import auth
from adapters.adminapi.auth import Role, generate_key, hash_secret, parse_key, required_role
from adapters.adminapi.testing import AdminTestApp

from ._helpers import bearer, make_key
from .conftest import admin_only, create_thing, list_things, public

API = "/llm-ops/v1"


def test_generated_keys_parse_back_and_store_only_a_digest() -> None:
    key_id, token, digest = generate_key()
    parsed = parse_key(token)
    assert parsed is not None and parsed[0] == key_id
    assert digest == hash_secret(parsed[1]) and parsed[1] not in digest
    assert len(parsed[1]) == 43  # 256 bits, url-safe base64
    assert generate_key()[1] != token


@pytest.mark.parametrize("bad", ["", "llmops_xyz_abc", "llmops_0123456789abcdef_short", "Bearer x",
                                 "llmops_0123456789ABCDEF_" + "a" * 43])
def test_malformed_keys_do_not_parse(bad: str) -> None:
    assert parse_key(bad) is None


def test_roles_are_ordered_and_defaults_follow_the_method() -> None:
    assert Role.viewer < Role.developer < Role.operator < Role.admin
    assert required_role(list_things) is Role.viewer
    assert required_role(create_thing) is Role.developer  # explicit opt wins
    assert required_role(admin_only) is Role.admin
    assert required_role(public) is None


async def test_missing_wrong_scheme_and_invalid_keys_are_401(admin: AdminTestApp) -> None:
    for headers in ({"authorization": ""}, {"authorization": "Basic abc"}, bearer("nope"),
                    bearer("llmops_0123456789abcdef_" + "a" * 43)):
        resp = await admin.client.get(f"{API}/demo/things", headers=headers)
        assert resp.status_code == 401, headers
        assert resp.json()["status"] == "fail"


async def test_each_role_reaches_exactly_its_routes(admin: AdminTestApp) -> None:
    tokens = {role: (await make_key(admin, role))[1] for role in ("viewer", "developer", "operator", "admin")}
    expected = {  # route -> minimum role
        ("GET", "/demo/things"): "viewer",
        ("POST", "/demo/things"): "developer",
        ("GET", "/audit/logs"): "operator",
        ("GET", "/admin/keys"): "admin",
        ("GET", "/demo/admin-only"): "admin",
    }
    order = ["viewer", "developer", "operator", "admin"]
    for (method, path), minimum in expected.items():
        for role, token in tokens.items():
            kwargs = {"json": {"name": "x"}} if method == "POST" else {}
            resp = await admin.client.request(method, f"{API}{path}", headers=bearer(token), **kwargs)
            allowed = order.index(role) >= order.index(minimum)
            expected_status = (201 if method == "POST" else 200) if allowed else 403
            assert resp.status_code == expected_status, (method, path, role)
            if not allowed:
                assert minimum in resp.json()["message"]


async def test_public_routes_need_no_key(admin: AdminTestApp) -> None:
    resp = await admin.client.get(f"{API}/demo/public", headers={"authorization": ""})
    assert resp.status_code == 200 and resp.json()["data"] == "hello"


async def test_denials_are_audited_with_the_key_id_but_never_the_secret(admin: AdminTestApp) -> None:
    viewer_id, viewer = await make_key(admin, "viewer")
    await admin.client.post(f"{API}/demo/things", json={"name": "x"}, headers=bearer(viewer))  # 403
    unknown = "llmops_0123456789abcdef_" + "b" * 43
    await admin.client.get(f"{API}/demo/things", headers=bearer(unknown))  # 401, well-formed
    await admin.client.get(f"{API}/demo/things", headers={"authorization": ""})  # 401, anonymous
    resp = await admin.client.get(f"{API}/audit/logs?outcome=denied")
    entries = resp.json()["data"]["items"]
    assert [(e["statusCode"], e["actorKeyId"], e["actorName"]) for e in entries] == [
        (401, None, "anonymous"),
        (401, "key_0123456789abcdef", "anonymous"),
        (403, viewer_id, "k-viewer"),
    ]
    assert all(e["action"] == "auth.denied" and e["resourceType"] == "route" for e in entries)
    assert entries[2]["resourceId"] == f"POST {API}/demo/things"
    assert parse_key(viewer)[1] not in resp.text  # type: ignore[index] and "b" * 43 not in resp.text


async def test_keys_are_compared_in_constant_time(admin: AdminTestApp, monkeypatch: pytest.MonkeyPatch) -> None:
    _, token = await make_key(admin, "viewer")
    calls: list[tuple[bytes, bytes]] = []
    real = auth.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    assert (await admin.client.get(f"{API}/demo/things", headers=bearer(token))).status_code == 200
    assert (await admin.client.get(f"{API}/demo/things", headers=bearer(token[:-1] + "x"))).status_code == 401
    # Each request compared digests (bootstrap check + stored key check), never raw strings with ==.
    assert len(calls) >= 4
    assert all(len(a) == len(b) for a, b in calls)


async def test_bootstrap_key_is_admin_and_never_logged(admin: AdminTestApp, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        key_id, token = await make_key(admin, "admin")
        await admin.client.get(f"{API}/admin/keys", headers=bearer(token))
        await admin.client.get(f"{API}/admin/keys", headers=bearer(token + "x"))
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert admin.bootstrap_key not in text and token not in text
    entries = (await admin.client.get(f"{API}/audit/logs?action=admin.key.create")).json()["data"]["items"]
    assert entries[0]["actorKeyId"] == "bootstrap" and entries[0]["resourceId"] == key_id

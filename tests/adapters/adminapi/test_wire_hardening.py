"""Hostile or odd requests get the envelope with a 4xx, never a 500 (issue 7, items 4 and 8)."""

from __future__ import annotations

import logging

import pytest

from adapters.adminapi.testing import AdminTestApp

API = "/llm-ops/v1"
JSON = {"content-type": "application/json"}


async def test_deeply_nested_body_is_a_400_without_an_error_log(admin: AdminTestApp,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    deep = b'{"name": "a", "limits": ' + b"[" * 1500 + b"]" * 1500 + b"}"
    with caplog.at_level(logging.ERROR, logger="llmops.adminapi"):
        resp = await admin.client.post(f"{API}/demo/things", content=deep, headers=JSON)
    assert resp.status_code == 400, resp.text
    assert resp.json()["status"] == "fail" and "nested too deeply" in resp.json()["message"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_empty_body_says_what_was_expected(admin: AdminTestApp) -> None:
    resp = await admin.client.post(f"{API}/demo/things", content=b"", headers=JSON)
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert body["message"] == "Request body is empty; expected a JSON object with name"
    assert body["data"]["errors"] == [{"field": "", "message": body["message"]}]


async def test_405_carries_allow(admin: AdminTestApp) -> None:
    resp = await admin.client.put(f"{API}/demo/things", json={})
    assert resp.status_code == 405 and resp.json()["status"] == "fail"
    assert set(resp.headers["allow"].replace(" ", "").split(",")) >= {"GET", "POST"}


@pytest.mark.parametrize(("sent", "kept"), [
    (["a" * 128], True),
    (["a" * 129], False),
    (["bad id"], False),
])
async def test_request_id_follows_the_shared_rule(admin: AdminTestApp, sent: list[str], kept: bool) -> None:
    resp = await admin.client.get(f"{API}/demo/things", headers=[("x-request-id", v) for v in sent])
    assert (resp.headers["x-request-id"] == sent[0]) is kept


async def test_first_request_id_header_wins_and_reaches_the_audit_log(admin: AdminTestApp) -> None:
    first, second = "r" * 128, "second"
    resp = await admin.client.post(f"{API}/demo/things", json={"name": "a"},
                                   headers=[("x-request-id", first), ("x-request-id", second)])
    assert resp.status_code == 201 and resp.headers["x-request-id"] == first
    logs = (await admin.client.get(f"{API}/audit/logs")).json()["data"]["items"]
    assert [e["requestId"] for e in logs if e["action"] == "demo.thing.create"] == [first]

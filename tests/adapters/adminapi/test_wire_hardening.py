"""Hostile or odd requests get the envelope with a 4xx, never a 500 (issue 7, items 4 and 8)."""

from __future__ import annotations

import logging

import pytest

from adapters.adminapi.testing import AdminTestApp

API = "/llm-ops/v1"
JSON = {"content-type": "application/json"}


async def test_deeply_nested_body_is_a_400_without_an_error_log(admin: AdminTestApp,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    deep = b'{"x": ' + b"[" * 1500 + b"]" * 1500 + b"}"
    with caplog.at_level(logging.ERROR, logger="llmops.adminapi"):
        free_form = await admin.client.post(f"{API}/demo/echo", content=deep, headers=JSON)
        typed = await admin.client.post(f"{API}/demo/things", content=deep.replace(b'"x"', b'"limits"'),
                                        headers=JSON)
    assert free_form.status_code == 400, free_form.text
    assert free_form.json()["status"] == "fail" and "nested too deeply" in free_form.json()["message"]
    assert typed.status_code == 400 and typed.json()["data"]["errors"][0]["field"] == "limits"
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


async def test_options_lists_every_method_of_the_path(admin: AdminTestApp) -> None:
    # Litestar's automatic OPTIONS handler lists only the methods registered before it was created.
    resp = await admin.client.options(f"{API}/demo/things")
    assert resp.status_code == 204
    assert resp.headers["allow"] == "GET, OPTIONS, POST"


@pytest.mark.parametrize(("body", "field"), [
    ({"name": 5}, "name"),
    ({"name": "a", "limits": {"maxTokens": "1"}}, "limits.maxTokens"),  # Litestar alone would take "1"
    ({"name": "a", "limits": {"maxTokens": True}}, "limits.maxTokens"),
])
async def test_bodies_are_decoded_strictly(admin: AdminTestApp, body: dict[str, object], field: str) -> None:
    resp = await admin.client.post(f"{API}/demo/things", json=body)
    assert resp.status_code == 400, resp.text
    assert resp.json()["data"]["errors"][0]["field"] == field


async def test_an_integral_float_counts_as_an_integer_as_json_schema_says(admin: AdminTestApp) -> None:
    """JSON Schema's ``integer`` admits 1.0; the strict decode must not refuse what the document allows."""
    resp = await admin.client.post(f"{API}/demo/things", json={"name": "a", "limits": {"maxTokens": 7.0}})
    assert resp.status_code == 201, resp.text
    refused = await admin.client.post(f"{API}/demo/things", json={"name": "a", "limits": {"maxTokens": 7.5}})
    assert refused.status_code == 400
    assert refused.json()["data"]["errors"][0]["field"] == "limits.maxTokens"

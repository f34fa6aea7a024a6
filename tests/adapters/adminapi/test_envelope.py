"""Every admin response is the envelope with the right status, whoever raised the error."""

from __future__ import annotations

import logging

import pytest

from adapters.adminapi.testing import AdminTestApp

from .conftest import DemoModule

API = "/llm-ops/v1"


def assert_envelope(resp, status_code: int, status: str) -> dict:  # type: ignore[no-untyped-def,type-arg]
    assert resp.status_code == status_code, resp.text
    body = resp.json()
    assert set(body) == {"status", "message", "data"}
    assert body["status"] == status
    assert isinstance(body["message"], str) and body["message"]
    assert resp.headers["x-request-id"]
    return body  # type: ignore[no-any-return]


async def test_success_envelope_and_module_lifespan(admin: AdminTestApp, demo_module: DemoModule) -> None:
    body = assert_envelope(await admin.client.post(f"{API}/demo/things", json={"name": "a"}), 201, "success")
    assert body["data"] == {"id": 1, "name": "a"}
    assert demo_module.events == ["start:demo"]


async def test_body_validation_names_the_field(admin: AdminTestApp) -> None:
    resp = await admin.client.post(f"{API}/demo/things", json={"name": "a", "limits": {"maxTokens": 0}})
    body = assert_envelope(resp, 400, "fail")
    assert body["data"]["errors"] == [{"field": "limits.maxTokens", "message": "Expected `int` >= 1"}]
    assert "limits.maxTokens" in body["message"]

    body = assert_envelope(await admin.client.post(f"{API}/demo/things", json={"name": 5}), 400, "fail")
    assert body["data"]["errors"][0]["field"] == "name"


@pytest.mark.parametrize(
    ("payload", "field"),
    [({"name": "a", "colour": "red"}, "colour"), ({"name": "a", "limits": {"maxTokens": 1, "x": 1}}, "limits.x")],
)
async def test_unknown_fields_are_rejected_by_name(admin: AdminTestApp, payload: dict, field: str) -> None:  # type: ignore[type-arg]
    body = assert_envelope(await admin.client.post(f"{API}/demo/things", json=payload), 400, "fail")
    assert body["data"]["errors"][0]["field"] == field
    assert "unknown field" in body["data"]["errors"][0]["message"]


@pytest.mark.parametrize("raw", [b"{bad", b"", b"[1, 2]", b'"just a string"', b"\xff\xfe"])
async def test_malformed_bodies_are_400(admin: AdminTestApp, raw: bytes) -> None:
    resp = await admin.client.post(f"{API}/demo/things", content=raw, headers={"content-type": "application/json"})
    assert_envelope(resp, 400, "fail")


async def test_query_parameter_errors_name_the_parameter(admin: AdminTestApp) -> None:
    for query, name in (("pageSize=0", "pageSize"), ("pageSize=201", "pageSize"), ("page=x", "page"),
                        ("page=0", "page"), ("page=10000001", "page")):
        body = assert_envelope(await admin.client.get(f"{API}/demo/things?{query}"), 400, "fail")
        assert body["data"]["errors"][0]["field"] == name, query


async def test_paging_shape(admin: AdminTestApp) -> None:
    for i in range(5):
        await admin.client.post(f"{API}/demo/things", json={"name": f"t{i}"})
    body = assert_envelope(await admin.client.get(f"{API}/demo/things?page=2&pageSize=2"), 200, "success")
    assert body["data"] == {"items": [{"id": 3, "name": "t2"}, {"id": 4, "name": "t3"}], "page": 2, "pageSize": 2,
                            "total": 5}
    body = assert_envelope(await admin.client.get(f"{API}/demo/things?page=9"), 200, "success")
    assert body["data"]["items"] == [] and body["data"]["total"] == 5


async def test_unknown_route_unknown_id_and_wrong_method(admin: AdminTestApp) -> None:
    assert "No route" in assert_envelope(await admin.client.get(f"{API}/nope"), 404, "fail")["message"]
    assert assert_envelope(await admin.client.get(f"{API}/demo/things/999"), 404, "fail")["message"] == "No thing 999"
    assert_envelope(await admin.client.get(f"{API}/demo/things/not-an-int"), 404, "fail")
    assert_envelope(await admin.client.delete(f"{API}/demo/things"), 405, "fail")


async def test_oversized_body_is_413(admin: AdminTestApp) -> None:
    resp = await admin.client.post(f"{API}/demo/things", json={"name": "x" * 10_000})
    assert_envelope(resp, 413, "fail")


async def test_unhandled_error_is_500_without_internals(admin: AdminTestApp, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, "llmops.adminapi"):
        resp = await admin.client.get(f"{API}/demo/boom", headers={"x-request-id": "req-123"})
    body = assert_envelope(resp, 500, "error")
    assert body == {"status": "error", "message": "Internal server error", "data": None}
    assert "hunter2" not in resp.text and "Traceback" not in resp.text
    assert resp.headers["x-request-id"] == "req-123"
    assert any("req-123" in r.getMessage() for r in caplog.records)  # the log has it, keyed by request id


async def test_store_outage_is_503_error(admin: AdminTestApp) -> None:
    body = assert_envelope(await admin.client.get(f"{API}/demo/db-down"), 503, "error")
    assert "10.0.0.5" not in body["message"]


async def test_request_ids_are_generated_or_sane_client_ids_kept(admin: AdminTestApp) -> None:
    resp = await admin.client.get(f"{API}/demo/things", headers={"x-request-id": "abc-1"})
    assert resp.headers["x-request-id"] == "abc-1"
    resp = await admin.client.get(f"{API}/demo/things", headers={"x-request-id": "bad id\twith junk"})
    assert resp.headers["x-request-id"] != "bad id\twith junk" and len(resp.headers["x-request-id"]) == 32


async def test_openapi_document_is_served(admin: AdminTestApp) -> None:
    resp = await admin.client.get(f"{API}/schema/openapi.json", headers={"authorization": ""})
    assert resp.status_code == 200
    doc = resp.json()
    assert {f"{API}/demo/things", f"{API}/admin/keys", f"{API}/audit/logs"} <= set(doc["paths"])
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    params = {p["name"] for p in doc["paths"][f"{API}/demo/things"]["get"]["parameters"]}
    assert {"page", "pageSize"} <= params

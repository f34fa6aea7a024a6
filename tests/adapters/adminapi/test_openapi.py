"""The OpenAPI document declares every error status with the envelope, and the rules requests must follow."""

from __future__ import annotations

import tempfile
from typing import Any

import pytest
from litestar import Litestar

from adapters.adminapi import ADMIN_PREFIX, ControlCfg, load_control_plane
from adapters.adminapi.openapi import ERROR_SCHEMA

METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    plane = load_control_plane(ControlCfg(database_url=None, data_dir=tempfile.mkdtemp()), environ={},
                               bootstrap_admin_key="k")
    app = Litestar(route_handlers=plane.route_handlers, exception_handlers=plane.exception_handlers,
                   openapi_config=plane.openapi_config)
    return app.openapi_schema.to_schema()


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, m, op) for path, item in doc["paths"].items() for m, op in item.items() if m in METHODS]


def test_every_error_response_is_the_envelope(doc: dict[str, Any]) -> None:
    assert len(operations(doc)) >= 34
    for path, method, op in operations(doc):
        errors = {code: r for code, r in op["responses"].items() if int(code) >= 400}
        assert {"400", "401", "500", "503"} <= set(errors), (method, path, sorted(errors))
        for code, response in errors.items():
            schema = response["content"]["application/json"]["schema"]
            assert schema == {"$ref": f"#/components/schemas/{ERROR_SCHEMA}"}, (method, path, code)
    envelope = doc["components"]["schemas"][ERROR_SCHEMA]
    assert envelope["required"] == ["status", "message", "data"]
    assert envelope["properties"]["status"]["enum"] == ["fail", "error"]


def test_statuses_follow_the_route(doc: dict[str, Any]) -> None:
    ops = {(path.removeprefix(ADMIN_PREFIX), method): set(op["responses"]) for path, method, op in operations(doc)}
    assert "403" in ops[("/admin/keys", "get")]  # admin only
    assert "403" in ops[("/governance/policies", "get")]  # a viewer may read; a data-plane-only key may not
    assert "404" in ops[("/governance/policies/{policyId}", "get")] and "404" not in ops[("/admin/keys", "get")]
    assert "409" in ops[("/governance/policies", "post")] and "409" not in ops[("/governance/policies", "get")]
    assert "409" in ops[("/catalog/datasets/{datasetId}/preview", "get")]  # raises=[Conflict]
    assert {"413", "415", "422"} <= ops[("/catalog/datasets/{datasetId}/upload", "post")]
    assert "415" not in ops[("/governance/policies", "post")]


def test_request_rules_are_stated(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    for name in ("PolicyCreate", "PolicyDocument", "Limits", "ModelCreate", "KeyCreate", "DatasetCreate"):
        assert schemas[name]["additionalProperties"] is False, name
    assert "additionalProperties" not in schemas["Policy"]  # responses may grow
    assert "allOf" in schemas["ModelCreate"] and "anyOf" in schemas["PolicyDocument"]
    version = next(p for p in doc["paths"][f"{ADMIN_PREFIX}/governance/policies/{{policyId}}/versions/{{version}}"]
                   ["get"]["parameters"] if p["name"] == "version")
    assert (version["schema"]["minimum"], version["schema"]["maximum"]) == (1, 2**31 - 1)
    quality = next(p for p in doc["paths"][f"{ADMIN_PREFIX}/catalog/datasets"]["get"]["parameters"]
                   if p["name"] == "minQuality")
    assert (quality["schema"]["minimum"], quality["schema"]["maximum"]) == (0, 100)


def test_semantic_refusals_are_declared_as_422(doc: dict[str, Any]) -> None:
    ops = {(path.removeprefix(ADMIN_PREFIX), method): op["responses"] for path, method, op in operations(doc)}
    for key in [("/catalog/models", "post"), ("/catalog/models/{modelId}", "put"), ("/catalog/datasets", "post"),
                ("/governance/policies", "post"), ("/governance/policies/{policyId}", "put")]:
        assert "422" in ops[key], key  # the body struct states __semantic_rules__
    assert "piiRules" in ops[("/catalog/datasets", "post")]["422"]["description"]
    assert "422" not in ops[("/admin/keys", "post")] and "422" not in ops[("/catalog/models/{modelId}/status", "patch")]


def test_bounds_inside_optional_containers_are_restored(doc: dict[str, Any]) -> None:
    dataset = doc["components"]["schemas"]["DatasetCreate"]["properties"]
    mapping = next(o for o in dataset["schema"]["oneOf"] if o["type"] == "object")
    assert mapping["propertyNames"] == {"minLength": 1, "maxLength": 200}  # ColumnName, behind ``| None``
    rules = next(o for o in dataset["piiRules"]["oneOf"] if o["type"] == "array")
    assert rules["items"]["maxLength"] == 40
    assert dataset["requiredColumns"]["uniqueItems"] is True


def test_zero_bounds_of_optional_numbers_are_restored(doc: dict[str, Any]) -> None:
    guardrail = doc["components"]["schemas"]["GuardrailDoc"]["properties"]  # prompts: ``float(ge=0) | None``
    assert guardrail["max"]["minimum"] == 0 and guardrail["max_ratio_to_control"]["exclusiveMinimum"] == 0


def test_audit_time_filters_state_unix_seconds(doc: dict[str, Any]) -> None:
    params = {p["name"]: p["schema"] for p in doc["paths"][f"{ADMIN_PREFIX}/audit/logs"]["get"]["parameters"]}
    for name in ("since", "until"):
        kinds = [(s["type"], s.get("format")) for s in params[name]["anyOf"]]
        assert kinds == [("string", "date-time"), ("number", None), ("null", None)], params[name]

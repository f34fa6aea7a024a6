"""Offline schema validation of Kubernetes manifests.

Built-in kinds go to `kubernetes_validate` in strict mode (unknown fields fail), against two
Kubernetes versions: the chart's floor (`kubeVersion` in Chart.yaml) and the newest the
installed package ships. Custom resources have no built-in schema and kubernetes_validate
raises SchemaNotFoundError for them, so the kinds we ship are allow-listed here, each with a
small JSON schema of our own. Those schemas are closed (additionalProperties: false) on the
objects we write, so a misspelt field fails; they list the prometheus-operator fields we use
or expect to use, not all of them. Add a field here when a manifest needs a new one. Any
other kind fails: nothing is skipped.

    ManifestError (AssertionError)   a manifest does not match its schema
    UnknownKind (AssertionError)     no Kubernetes schema and not on the CRD allow-list
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from kubernetes_validate.utils import SchemaNotFoundError, ValidationError, latest_version

__all__ = ["CRD_SCHEMAS", "KUBE_VERSIONS", "ManifestError", "UnknownKind", "validate_manifest"]


class ManifestError(AssertionError):
    pass


class UnknownKind(AssertionError):
    pass


def _chart_floor() -> str:
    chart = yaml.safe_load((Path(__file__).resolve().parents[2] / "deploy/helm/llmops/Chart.yaml").read_text())
    floor = re.fullmatch(r">=\s*(\d+\.\d+)(?:\.\d+)?(?:-0)?", chart["kubeVersion"])
    assert floor, f"kubeVersion {chart['kubeVersion']!r}: expected '>=X.Y[.Z][-0]'"
    return floor.group(1)


def _major_minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


KUBE_VERSIONS = (_chart_floor(), _major_minor(latest_version()))

# Prometheus' duration syntax, as the prometheus-operator CRDs declare it.
_DURATION = {"type": "string",
             "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
_DNS_SUBDOMAIN = {"type": "string", "maxLength": 253,
                  "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_LABEL_SELECTOR = {
    "type": "object", "additionalProperties": False, "minProperties": 1,
    "properties": {"matchLabels": _STRING_MAP, "matchExpressions": {"type": "array", "items": {"type": "object"}}},
}
_NAMESPACE_SELECTOR = {"type": "object", "additionalProperties": False, "properties": {
    "any": {"type": "boolean"}, "matchNames": {"type": "array", "items": {"type": "string"}}}}
_ENDPOINT_FIELDS = {
    "port": {"type": "string", "minLength": 1}, "targetPort": {"type": ["string", "integer"]},
    "path": {"type": "string", "pattern": "^/"}, "scheme": {"enum": ["http", "https"]},
    "params": {"type": "object"}, "interval": _DURATION, "scrapeTimeout": _DURATION,
    "honorLabels": {"type": "boolean"}, "honorTimestamps": {"type": "boolean"},
    "relabelings": {"type": "array"}, "metricRelabelings": {"type": "array"},
    "tlsConfig": {"type": "object"}, "basicAuth": {"type": "object"}, "authorization": {"type": "object"},
    "bearerTokenSecret": {"type": "object"}, "followRedirects": {"type": "boolean"},
    "enableHttp2": {"type": "boolean"}, "proxyUrl": {"type": "string"},
}


def _endpoints(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": "array", "minItems": 1, "items": {
        "type": "object", "additionalProperties": False, "properties": {**_ENDPOINT_FIELDS, **(extra or {})},
        "anyOf": [{"required": ["port"]}, {"required": ["targetPort"]}, {"required": ["portNumber"]}]}}


def _monitor_spec(endpoints_key: str, endpoints: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "required": ["selector", endpoints_key],
            "properties": {"selector": _LABEL_SELECTOR, endpoints_key: endpoints,
                           "namespaceSelector": _NAMESPACE_SELECTOR, "jobLabel": {"type": "string"},
                           "podTargetLabels": {"type": "array", "items": {"type": "string"}},
                           "sampleLimit": {"type": "integer", "minimum": 0}}}


_RULE = {
    "type": "object", "additionalProperties": False, "required": ["expr"],
    "properties": {"alert": {"type": "string", "minLength": 1},
                   "record": {"type": "string", "pattern": "^[a-zA-Z_:][a-zA-Z0-9_:]*$"},
                   "expr": {"type": ["string", "integer"], "minLength": 1}, "for": _DURATION,
                   "keep_firing_for": _DURATION, "labels": _STRING_MAP, "annotations": _STRING_MAP},
    # Exactly one of alert and record; annotations only on alerts.
    "oneOf": [{"required": ["alert"], "not": {"required": ["record"]}},
              {"required": ["record"], "not": {"anyOf": [{"required": ["alert"]}, {"required": ["annotations"]},
                                                          {"required": ["for"]}]}}],
}
_RULE_GROUP = {
    "type": "object", "additionalProperties": False, "required": ["name", "rules"],
    "properties": {"name": {"type": "string", "minLength": 1}, "interval": _DURATION, "limit": {"type": "integer"},
                   "labels": _STRING_MAP, "query_offset": _DURATION,
                   "rules": {"type": "array", "minItems": 1, "items": _RULE}},
}


def _crd(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": kind},
            "metadata": {"type": "object", "additionalProperties": False, "required": ["name"],
                         "properties": {"name": _DNS_SUBDOMAIN, "namespace": _DNS_SUBDOMAIN,
                                        "labels": _STRING_MAP, "annotations": _STRING_MAP}},
            "spec": spec,
        },
    }


# The custom resources deploy/ ships (prometheus-operator), with our schema for each.
CRD_SCHEMAS: dict[str, dict[str, Any]] = {
    "ServiceMonitor": _crd("ServiceMonitor", _monitor_spec("endpoints", _endpoints())),
    "PodMonitor": _crd("PodMonitor", _monitor_spec("podMetricsEndpoints", _endpoints({
        "portNumber": {"type": "integer", "minimum": 1, "maximum": 65535}, "filterRunning": {"type": "boolean"}}))),
    "PrometheusRule": _crd("PrometheusRule", {
        "type": "object", "additionalProperties": False, "required": ["groups"],
        "properties": {"groups": {"type": "array", "items": _RULE_GROUP}}}),
}
for _schema in CRD_SCHEMAS.values():
    jsonschema.Draft202012Validator.check_schema(_schema)


_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


def _metadata_errors(meta: dict[str, Any]) -> list[str]:
    """What the API server checks beyond the OpenAPI schema: name and label syntax."""
    errors = []
    if not re.fullmatch(_DNS_SUBDOMAIN["pattern"], str(meta.get("name", ""))) or len(meta["name"]) > 253:
        errors.append(f"metadata.name {meta.get('name')!r} is not a DNS-1123 subdomain")
    for key, value in (meta.get("labels") or {}).items():
        prefix, _, name = key.rpartition("/")
        if (prefix and not re.fullmatch(_DNS_SUBDOMAIN["pattern"], prefix)) or not _LABEL_NAME.fullmatch(name):
            errors.append(f"label key {key!r} is invalid")
        if not isinstance(value, str) or not _LABEL_VALUE.fullmatch(value):
            errors.append(f"label {key}={value!r}: not a valid label value")
    return errors


def validate_manifest(doc: dict[str, Any], version: str) -> None:
    """Check one object against Kubernetes `version`'s schema, or ours for an allow-listed CRD."""
    kind = doc.get("kind")
    where = f"{kind}/{(doc.get('metadata') or {}).get('name')}"
    if errors := _metadata_errors(doc.get("metadata") or {}):
        raise ManifestError(f"{where}: " + "; ".join(errors))
    if kind in CRD_SCHEMAS:
        errors = sorted(jsonschema.Draft202012Validator(CRD_SCHEMAS[kind]).iter_errors(doc), key=str)
        if errors:
            raise ManifestError(f"{where}: " + "; ".join(f"{list(e.absolute_path)}: {e.message}" for e in errors))
        return
    if not isinstance(kind, str) or "apiVersion" not in doc:
        raise ManifestError(f"{where}: not a Kubernetes object (no apiVersion/kind)")
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except SchemaNotFoundError as e:
        raise UnknownKind(f"{e.message}: add a schema to CRD_SCHEMAS if it is a custom resource") from e
    except ValidationError as e:
        raise ManifestError(f"{where} (Kubernetes {version}): {list(e.absolute_path)}: {e.message}") from e

"""Every manifest deploy/ ships, rendered as an operator would, checked against the Kubernetes
schemas offline: the chart under each values set of rendering.CHART_VALUES, deploy/vllm/*.yaml
through render.sh's substitution, and deploy/prometheus/alerts.yaml. Custom resources
(prometheus-operator) are checked against kube_schema.CRD_SCHEMAS, our own small schemas."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from tests.deploy.kube_schema import CRD_SCHEMAS, KUBE_VERSIONS, ManifestError, UnknownKind, validate_manifest
from tests.deploy.rendering import (
    CHART,
    CHART_VALUES,
    DEPLOY,
    NOT_MANIFESTS,
    VLLM,
    render_chart,
    render_vllm,
    vllm_manifests,
)

Docs = list[tuple[str, dict[str, Any]]]


@pytest.fixture(scope="module")
def chart_renders() -> dict[str, Docs]:
    """Each values set rendered once for the whole module."""
    return {name: render_chart(values) for name, values in CHART_VALUES.items()}


@pytest.fixture(scope="module")
def other_manifests() -> Docs:
    docs = [(f"deploy/vllm/{name}", doc) for name in vllm_manifests() for doc in render_vllm(name)]
    alerts = DEPLOY / "prometheus" / "alerts.yaml"
    return docs + [("deploy/prometheus/alerts.yaml", doc) for doc in yaml.safe_load_all(alerts.read_text()) if doc]


def _schema_errors(docs: Docs, version: str) -> list[str]:
    errors = []
    for source, doc in docs:
        try:
            validate_manifest(doc, version)
        except AssertionError as e:
            errors.append(f"{source}: {e}")
    return errors


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("values_name", CHART_VALUES)
def test_chart_manifests_match_the_schemas(chart_renders: dict[str, Docs], values_name: str, version: str) -> None:
    docs = chart_renders[values_name]
    assert len(docs) >= 4
    assert _schema_errors(docs, version) == []


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_vllm_and_prometheus_manifests_match_the_schemas(other_manifests: Docs, version: str) -> None:
    assert len(other_manifests) >= 9
    assert _schema_errors(other_manifests, version) == []


def test_values_sets_reach_every_template(chart_renders: dict[str, Docs]) -> None:
    rendered = {path.rsplit("/", 1)[-1] for docs in chart_renders.values() for path, _ in docs}
    templates = {p.name for p in (CHART / "templates").glob("*.yaml")}
    assert templates - rendered == set(), "add a values set to rendering.CHART_VALUES that renders these"


def test_every_vllm_file_is_a_manifest_or_a_named_exception() -> None:
    for name in NOT_MANIFESTS:
        (doc,) = render_vllm(name)
        assert "apiVersion" not in doc and "kind" not in doc, f"{name} is a Kubernetes object: validate it"
    for name in vllm_manifests():
        assert all("apiVersion" in d and "kind" in d for d in render_vllm(name)), name
    assert {p.name for p in VLLM.glob("*.yaml")} == {*vllm_manifests(), *NOT_MANIFESTS}


def test_crd_allow_list_is_exactly_the_custom_kinds_we_ship(
    chart_renders: dict[str, Docs], other_manifests: Docs
) -> None:
    kinds = {doc["kind"] for docs in [*chart_renders.values(), other_manifests] for _, doc in docs}
    assert set(CRD_SCHEMAS) == {"ServiceMonitor", "PodMonitor", "PrometheusRule"} == kinds & set(CRD_SCHEMAS)
    assert {"Deployment", "StatefulSet", "Job", "Service", "PersistentVolumeClaim", "HorizontalPodAutoscaler",
            "NetworkPolicy", "Ingress", "PodDisruptionBudget", "Secret", "ConfigMap", "ServiceAccount"} <= kinds


def test_kube_versions_are_the_chart_floor_and_the_newest_schema() -> None:
    floor, newest = KUBE_VERSIONS
    assert yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"].startswith(f">={floor}")
    assert tuple(map(int, newest.split("."))) >= (1, 37) > tuple(map(int, floor.split(".")))


# --- the checks fail on broken manifests ------------------------------------------------

def _first(docs: Docs, kind: str) -> dict[str, Any]:
    return copy.deepcopy(next(doc for _, doc in docs if doc["kind"] == kind))


def _break(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    *parents, leaf = path.split(".")
    node = doc
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    node[leaf] = value
    return doc


@pytest.mark.parametrize(("kind", "path", "value", "message"), [
    ("Deployment", "spec.replica", 2, "Additional properties"),  # misspelt: strict mode
    ("Deployment", "spec.template.spec.containers.0.ports.0.containerPort", "http", "is not of type 'integer'"),
    ("Deployment", "spec.template.spec.securityContext.runAsNonRoot", "yes", "is not of type 'boolean'"),
    ("Service", "spec.ports.0.protocl", "TCP", "Additional properties"),
    ("Service", "metadata.name", "LLMOps_Gateway", "DNS-1123"),
    ("ConfigMap", "metadata.labels.app.kubernetes.io/version", "0.1.0 beta", "label value"),
    ("ServiceMonitor", "spec.endpoints.0.scrapeTimout", "10s", "Additional properties"),
    ("ServiceMonitor", "spec.endpoints.0.interval", "15 seconds", "does not match"),
    ("ServiceMonitor", "spec.selector", {}, "should be non-empty"),
    ("PrometheusRule", "spec.groups.0.rules.0.labels.severity", 1, "is not of type 'string'"),
    ("PrometheusRule", "spec.groups.0.rules.0.for", "five minutes", "does not match"),
])
def test_a_broken_manifest_fails(
    chart_renders: dict[str, Docs], kind: str, path: str, value: Any, message: str
) -> None:
    doc = _first(chart_renders["production"], kind)
    if path.startswith("metadata.labels."):
        doc["metadata"]["labels"][path.removeprefix("metadata.labels.")] = value
    else:
        _break(doc, path, value)
    for version in KUBE_VERSIONS:
        with pytest.raises(ManifestError, match=message):
            validate_manifest(doc, version)


def test_a_custom_resource_needs_a_name_and_its_own_fields_only(other_manifests: Docs) -> None:
    monitor = _first(other_manifests, "PodMonitor")
    del monitor["metadata"]["name"]
    with pytest.raises(ManifestError, match="DNS-1123"):
        validate_manifest(monitor, KUBE_VERSIONS[-1])
    rule = _first(other_manifests, "PrometheusRule")
    rule["spec"]["groups"][0]["rules"][0] = {"record": "job:up:sum", "expr": "sum(up)", "annotations": {"a": "b"}}
    with pytest.raises(ManifestError, match=r"'rules', 0\]: .* is not valid under any of the given schemas"):
        validate_manifest(rule, KUBE_VERSIONS[-1])


def test_an_unknown_kind_fails_instead_of_passing_unchecked() -> None:
    cert = {"apiVersion": "cert-manager.io/v1", "kind": "Certificate", "metadata": {"name": "llmops-tls"},
            "spec": {"secretName": "llmops-tls"}}
    with pytest.raises(UnknownKind, match="Certificate"):
        validate_manifest(cert, KUBE_VERSIONS[-1])
    with pytest.raises(ManifestError, match="not a Kubernetes object"):
        validate_manifest({"metadata": {"name": "x"}, "routes": []}, KUBE_VERSIONS[-1])


def test_values_that_break_a_rendered_object_fail_validation() -> None:
    docs = render_chart({"tolerations": [{"key": "gpu", "effect": "NoSchedule", "tolerationSeconds": "60"}]})
    (error,) = _schema_errors(docs, KUBE_VERSIONS[-1])
    assert error.startswith("llmops/templates/deployment.yaml: Deployment/llmops") and "tolerationSeconds" in error

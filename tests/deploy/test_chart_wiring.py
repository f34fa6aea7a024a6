"""Cross-object checks of the rendered chart that no per-object schema can make: names a pod
refers to exist, and hooks only lean on what exists before the release's own objects do."""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy.rendering import CHART_VALUES, render_chart

Ref = tuple[str, str]  # (kind, name)


@pytest.fixture(scope="module")
def chart_renders() -> dict[str, list[dict[str, Any]]]:
    return {name: [doc for _, doc in render_chart(values)] for name, values in CHART_VALUES.items()}


def _pod_refs(pod: dict[str, Any]) -> set[Ref]:
    refs = {("ServiceAccount", pod["serviceAccountName"])} if "serviceAccountName" in pod else set()
    for ctr in pod["containers"]:
        refs |= {("Secret", e["valueFrom"]["secretKeyRef"]["name"]) for e in ctr.get("env", [])
                 if "secretKeyRef" in e.get("valueFrom", {})}
        for source in ctr.get("envFrom", []):
            refs |= {(kind, source[key]["name"]) for key, kind in (("secretRef", "Secret"),
                                                                  ("configMapRef", "ConfigMap")) if key in source}
    for vol in pod.get("volumes", []):
        if "configMap" in vol:
            refs.add(("ConfigMap", vol["configMap"]["name"]))
        if "secret" in vol:
            refs.add(("Secret", vol["secret"]["secretName"]))
        if "persistentVolumeClaim" in vol:
            refs.add(("PersistentVolumeClaim", vol["persistentVolumeClaim"]["claimName"]))
    return refs


def _strings(values: Any) -> set[str]:
    if isinstance(values, dict):
        return {s for v in values.values() for s in _strings(v)}
    if isinstance(values, list):
        return {s for v in values for s in _strings(v)}
    return {values} if isinstance(values, str) else set()


def _is_pre_install_hook(doc: dict[str, Any]) -> bool:
    return "pre-install" in (doc["metadata"].get("annotations") or {}).get("helm.sh/hook", "")


@pytest.mark.parametrize("values_name", CHART_VALUES)
def test_every_name_a_pod_uses_is_rendered_or_given_in_values(
    chart_renders: dict[str, list[dict[str, Any]]], values_name: str
) -> None:
    docs = chart_renders[values_name]
    external = _strings(CHART_VALUES[values_name] or {})  # existingSecret, existingClaim, ...
    rendered = {(d["kind"], d["metadata"]["name"]) for d in docs}
    hooks = {(d["kind"], d["metadata"]["name"]) for d in docs if _is_pre_install_hook(d)}
    workloads = [d for d in docs if d["kind"] in {"Deployment", "Job"}]
    assert workloads
    for workload in workloads:
        refs = _pod_refs(workload["spec"]["template"]["spec"])
        where = f"{workload['kind']}/{workload['metadata']['name']}"
        assert {(k, n) for k, n in refs if n not in external} <= rendered, where
        if _is_pre_install_hook(workload):  # runs before the release's other objects exist
            assert {(k, n) for k, n in refs if n not in external} <= hooks, where


@pytest.mark.parametrize("values_name", CHART_VALUES)
def test_only_gateway_pods_match_the_service_pdb_and_network_policy(
    chart_renders: dict[str, list[dict[str, Any]]], values_name: str
) -> None:
    """The migration Job's pod has no listener: if the Service selected it, requests sent to it
    while it runs (every upgrade) would be refused, and a PDB over a Job pod has no scale to use."""
    docs = chart_renders[values_name]
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    (dep,) = by_kind["Deployment"]
    selectors = [("Service", s["spec"]["selector"]) for s in by_kind["Service"]]
    selectors += [(kind, d["spec"][key]["matchLabels"])
                  for kind, key in (("PodDisruptionBudget", "selector"), ("NetworkPolicy", "podSelector"))
                  for d in by_kind.get(kind, [])]
    gateway_labels = dep["spec"]["template"]["metadata"]["labels"]
    other_pods = [(j["metadata"]["name"], j["spec"]["template"]["metadata"]["labels"]) for j in by_kind.get("Job", [])]
    assert other_pods or values_name in {"defaults", "sqlite-persistent"}
    for kind, selector in selectors:
        assert selector.items() <= gateway_labels.items(), kind
        for name, labels in other_pods:
            assert not selector.items() <= labels.items(), f"{kind} selects the pod of {name}"


def test_kubernetes_runtimes_get_roles_in_their_namespaces_only_when_enabled(
        chart_renders: dict[str, list[dict[str, Any]]]) -> None:
    docs = chart_renders["kubernetes-runtimes"]
    roles = {(d["kind"], d["metadata"].get("namespace")): d for d in docs if d["kind"].endswith("Role")}
    serving, training = roles[("Role", "models")], roles[("Role", "trainers")]
    assert {r["resources"][0] for r in serving["rules"]} >= {"deployments", "services", "horizontalpodautoscalers"}
    assert {res for r in training["rules"] for res in r["resources"]} >= {"jobs", "secrets", "trainjobs",
                                                                         "pytorchjobs", "pods/log"}
    assert ("ClusterRole", None) in roles
    bindings = [d for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding")]
    assert len(bindings) == 3 and all(b["subjects"] == [{"kind": "ServiceAccount", "name": "llmops",
                                                         "namespace": "llm"}] for b in bindings)
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert pod["automountServiceAccountToken"] is True
    assert env["SERVING_RUNTIME"] == env["TRAINING_RUNTIME"] == "kubernetes"
    assert (env["SERVING_NAMESPACE"], env["TRAINING_NAMESPACE"]) == ("models", "trainers")
    assert env["TRAINING_API_BASE_URL"] == "http://llmops.llm.svc:4000/llm-ops/v1"
    for name in ("defaults", "production"):  # off by default: no API access at all
        plain = chart_renders[name]
        assert not [d for d in plain if "Role" in d["kind"]]
        (dep,) = [d for d in plain if d["kind"] == "Deployment"]
        assert dep["spec"]["template"]["spec"]["automountServiceAccountToken"] is False

"""Render every Kubernetes manifest deploy/ ships, the way an operator would, with no binary.

- The Helm chart through Helm's own Go engine (`helm_python`, PyPI `helm-python-sdk`).
- deploy/vllm/*.yaml through the substitution deploy/vllm/render.sh does with envsubst.
- deploy/prometheus/alerts.yaml as it is (kubectl applies it unrendered).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

__all__ = [
    "CHART",
    "CHART_VALUES",
    "DEPLOY",
    "NOT_MANIFESTS",
    "ROOT",
    "VLLM",
    "env_example",
    "render_chart",
    "render_chart_files",
    "render_vllm",
    "vllm_manifests",
]

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "llmops"
VLLM = DEPLOY / "vllm"
RELEASE = {"name": "llmops", "namespace": "llm"}

_PLACEHOLDER = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)\}")

# deploy/vllm/ files that are not Kubernetes objects, and why.
NOT_MANIFESTS = {"llmops-route.example.yaml": "a gateway config fragment (routes + providers), not a k8s object"}


def _production() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "helm" / "llmops-production.values.yaml").read_text())
    return loaded


# Every values combination a test renders. Together they reach every template and every
# branch that changes an object's shape (tests/deploy/test_schemas.py checks the former).
CHART_VALUES: dict[str, dict[str, Any] | None] = {
    "defaults": None,
    "production": _production(),
    "external-db": {"database": {"url": "postgresql://u:p@pg/llmops"}, "replicaCount": 2},
    # SQLite on a persistent volume, secrets the chart stores itself, the reloader on a
    # chart-made admin key, and the optional pod-level lists filled in.
    "sqlite-persistent": {
        "persistence": {"enabled": True, "storageClass": "-", "annotations": {"backup": "daily"}},
        "secrets": {"env": {"OPENAI_API_KEY": "sk-test", "RETRIES": 3}},
        "adminKey": {"value": "dev-admin-key"},
        "redis": {"url": "redis://redis:6379/0"},
        "configReloader": {"enabled": True},
        "extraEnv": [{"name": "LOG_FORMAT", "value": "json"}],
        "extraEnvFrom": [{"configMapRef": {"name": "site-env"}}],
        "imagePullSecrets": [{"name": "registry"}],
        "priorityClassName": "high",
        "podAnnotations": {"example.com/team": "llm"},
        "podLabels": {"tier": "gateway"},
        "nodeSelector": {"kubernetes.io/arch": "amd64"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "llm", "effect": "NoSchedule"}],
        "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
            "weight": 100,
            "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "llmops"}}},
        }]}},
        "service": {"annotations": {"example.com/scrape": "true"}},
        "serviceAccount": {"annotations": {"example.com/role": "llmops"}},
    },
    # Scaled on in-flight requests only, a percentage PDB, open network policy, a plain
    # ingress, an existing volume and no service account of its own.
    "autoscaled-inflight": {
        "fullnameOverride": "gw",
        "database": {"existingSecret": "db", "key": "url"},
        "redis": {"existingSecret": "redis", "key": "url"},
        "autoscaling": {"enabled": True, "targetCPUUtilizationPercentage": None, "targetInflightPerPod": 50},
        "podDisruptionBudget": {"maxUnavailable": "25%"},
        "networkPolicy": {"enabled": True},
        "ingress": {"enabled": True},
        "persistence": {"enabled": True, "existingClaim": "shared-data"},
        "serviceAccount": {"create": False, "name": "gateway"},
        "metrics": {"serviceMonitor": {"enabled": True, "interval": "30s", "scrapeTimeout": "5s"}},
    },
    # Serving and training on Kubernetes: Roles in their namespaces, CRD and node reads, the token mounted.
    "kubernetes-runtimes": {
        "database": {"url": "postgresql://u:p@pg/llmops"},
        "kubernetesRuntimes": {"serving": {"enabled": True, "namespace": "models"},
                               "training": {"enabled": True, "namespace": "trainers"}},
    },
}


def render_chart_files(values: dict[str, Any] | None = None) -> dict[str, str]:
    """Template path -> rendered text, by Helm's Go engine (HelmError when a template fails)."""
    with helm.Chart.load(str(CHART)) as chart:
        return chart.render(values or {}, **RELEASE)


def render_chart(values: dict[str, Any] | None = None) -> list[tuple[str, dict[str, Any]]]:
    """Every rendered object with the template it came from, in template order."""
    docs = []
    for path, text in sorted(render_chart_files(values).items()):
        if path.endswith(".yaml"):
            docs += [(path, doc) for doc in yaml.safe_load_all(text) if doc]
    return docs


def env_example() -> dict[str, str]:
    lines = (VLLM / "vllm.env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def render_vllm(name: str) -> list[dict[str, Any]]:
    """What deploy/vllm/render.sh does with the example env file."""
    env = env_example()
    text = _PLACEHOLDER.sub(lambda m: env[m.group(1)], (VLLM / name).read_text())
    return [d for d in yaml.safe_load_all(text) if d]


def vllm_manifests() -> list[str]:
    return sorted(p.name for p in VLLM.glob("*.yaml") if p.name not in NOT_MANIFESTS)

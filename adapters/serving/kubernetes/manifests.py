"""Every object of one serving slot, built as typed ``kubernetes.client`` models (CRDs as dicts): pure, no I/O.

A slot is ``<endpoint_name>`` (stable) or ``<endpoint_name>-canary``: a Deployment and a ClusterIP Service of
that name, plus an autoscaler when ``min_replicas != max_replicas`` (an ``autoscaling/v2`` HPA, or a KEDA
``ScaledObject`` that can scale to zero), or, with ``SERVING_KSERVE``, one KServe ``InferenceService``.
What the cluster looks like (KEDA installed, spare GPUs) arrives as ``ClusterFacts``; ``apply`` reads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

import msgspec
from kubernetes import client

from adapters.serving.base import DeploymentSpec, RuntimeFailure, Slot
from adapters.serving.kubernetes.capacity import GpuCapacity, StrategyChoice, choose_strategy
from adapters.serving.kubernetes.pod import PORT, build_pod_spec
from adapters.serving.settings import ServingSettings

__all__ = [
    "ANN_AUTOSCALER", "ANN_STRATEGY_REASON", "HPA_QUEUE_METRIC", "LABEL_ENDPOINT", "LABEL_REVISION",
    "LABEL_SLOT", "ROUTE_KEY", "Autoscaler", "ClusterFacts", "Manifest", "SlotPlan", "build_slot",
    "choose_autoscaler", "merge_patch", "resource_name", "selector_labels", "to_dicts",
]

LABEL_NAME = "app.kubernetes.io/name"
LABEL_MANAGED = "app.kubernetes.io/managed-by"
LABEL_ENDPOINT = "llmops.io/endpoint-id"
LABEL_SLOT = "llmops.io/slot"
LABEL_REVISION = "llmops.io/revision"
ANN_AUTOSCALER = "llmops.io/autoscaler"
ANN_STRATEGY_REASON = "llmops.io/strategy-reason"
# In spec.labels: the gateway route whose queued requests wake a scaled-to-zero slot (KEDA). Route names may
# hold characters a label value cannot, so it travels as an annotation, never as a label.
ROUTE_KEY = "llmops.io/route"
# prometheus-adapter serves vLLM's vllm:num_requests_waiting under this name (custom metric names carry no
# colon; the rule is in deploy/prometheus/prometheus-adapter.values.yaml).
HPA_QUEUE_METRIC = "vllm_num_requests_waiting"
GATEWAY_QUEUE_METRIC = "llmops_route_queued_requests"
_HPA_MAX_WINDOW_S = 3600  # the API's bound on stabilizationWindowSeconds

Autoscaler = Literal["none", "hpa", "keda", "kserve"]
Manifest = client.V1Deployment | client.V1Service | client.V2HorizontalPodAutoscaler | dict[str, Any]


class ClusterFacts(msgspec.Struct, frozen=True, kw_only=True):
    """What ``apply`` read from the cluster before rendering; the defaults are what ``render`` assumes unread."""

    keda_installed: bool | None = None  # None: not read yet (render before any apply)
    capacity: GpuCapacity | None = None  # None: unknown, so no surge pod for GPU slots


@dataclass(frozen=True)
class SlotPlan:
    name: str
    autoscaler: Autoscaler
    strategy: StrategyChoice | None  # None under KServe, which rolls out by itself
    manifests: list[Manifest]


@cache
def _serializer() -> client.ApiClient:
    """Only its ``sanitize_for_serialization`` is used (models to camelCase dicts); it never connects."""
    return client.ApiClient()


def _plain(obj: Any) -> Any:
    return _serializer().sanitize_for_serialization(obj)


def resource_name(endpoint_name: str, slot: Slot) -> str:
    return endpoint_name if slot == "stable" else f"{endpoint_name}-canary"


def selector_labels(endpoint_id: str, slot: Slot) -> dict[str, str]:
    """What a slot's Service and Deployment select on: never the revision, so a new revision rolls in place."""
    return {LABEL_NAME: "llmops-endpoint", LABEL_ENDPOINT: endpoint_id, LABEL_SLOT: slot}


def _labels(spec: DeploymentSpec, slot: Slot) -> dict[str, str]:
    extra = {k: v for k, v in spec.labels.items() if k != ROUTE_KEY}
    return {**extra, **selector_labels(spec.endpoint_id, slot), LABEL_MANAGED: "llmops",
            LABEL_REVISION: str(spec.revision)}


def _meta(spec: DeploymentSpec, slot: Slot, settings: ServingSettings, annotations: dict[str, str],
          ) -> client.V1ObjectMeta:
    return client.V1ObjectMeta(name=resource_name(spec.endpoint_name, slot), namespace=settings.namespace,
                               labels=_labels(spec, slot), annotations=annotations)


def _route(spec: DeploymentSpec) -> str:
    return spec.labels.get(ROUTE_KEY) or spec.endpoint_name


def choose_autoscaler(spec: DeploymentSpec, settings: ServingSettings, facts: ClusterFacts) -> Autoscaler:
    """HPA or KEDA per ``SERVING_AUTOSCALER``; none when min == max. Scale to zero needs KEDA (or KServe)."""
    if settings.kserve:
        return "kserve"
    scaling = spec.autoscaling
    if scaling.min_replicas > scaling.max_replicas:
        raise RuntimeFailure(f"min_replicas {scaling.min_replicas} exceeds max_replicas {scaling.max_replicas}")
    if scaling.min_replicas == scaling.max_replicas:
        return "none"
    # Not read yet (``render`` before any ``apply``): a preview assumes KEDA where only KEDA would do, and
    # ``apply``, which reads the cluster first, refuses if it is not there.
    maybe_keda = facts.keda_installed or (facts.keda_installed is None and scaling.min_replicas == 0)
    keda = settings.autoscaler == "keda" or (
        settings.autoscaler == "auto" and maybe_keda and settings.gateway_metrics_url is not None)
    if keda and settings.gateway_metrics_url is None:
        raise RuntimeFailure("SERVING_AUTOSCALER=keda needs SERVING_GATEWAY_METRICS_URL (the Prometheus KEDA reads)")
    if scaling.min_replicas == 0 and not keda:
        raise RuntimeFailure(
            "min_replicas 0 (scale to zero) needs KEDA: install KEDA (scaledobjects.keda.sh) and set "
            "SERVING_GATEWAY_METRICS_URL, or set SERVING_AUTOSCALER=keda, or use min_replicas >= 1")
    return "keda" if keda else "hpa"


def _quantity(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{round(value * 1000)}m"


def _number(value: float) -> str:
    """KEDA parses thresholds as floats, not as Kubernetes quantities."""
    return str(int(value)) if float(value).is_integer() else str(float(value))


def _behavior(spec: DeploymentSpec) -> client.V2HorizontalPodAutoscalerBehavior:
    """Up at once, down slowly: a GPU replica takes minutes to load, so dropping it throws that work away."""
    return client.V2HorizontalPodAutoscalerBehavior(
        scale_up=client.V2HPAScalingRules(stabilization_window_seconds=0, policies=[
            client.V2HPAScalingPolicy(type="Pods", value=2, period_seconds=60)]),
        scale_down=client.V2HPAScalingRules(
            stabilization_window_seconds=min(spec.autoscaling.scale_down_delay_s, _HPA_MAX_WINDOW_S),
            policies=[client.V2HPAScalingPolicy(type="Pods", value=1, period_seconds=300)]))


def _deployment(spec: DeploymentSpec, slot: Slot, settings: ServingSettings, autoscaler: Autoscaler,
                strategy: StrategyChoice) -> client.V1Deployment:
    rolling = client.V1RollingUpdateDeployment(max_surge=1, max_unavailable=0) \
        if strategy.type == "RollingUpdate" else None
    meta = _meta(spec, slot, settings, {
        ANN_AUTOSCALER: autoscaler, ANN_STRATEGY_REASON: strategy.reason,
        "llmops.io/model": f"{spec.model_id}/v{spec.model_version}",
        "llmops.io/served-model-name": spec.served_model_name})
    return client.V1Deployment(
        api_version="apps/v1", kind="Deployment", metadata=meta,
        spec=client.V1DeploymentSpec(
            # Autoscaled: the first rollout starts one replica (so a bad image shows at once); the autoscaler,
            # KEDA down to zero, owns the count afterwards (merge_patch leaves it alone).
            replicas=max(spec.autoscaling.min_replicas, 1) if autoscaler != "none" else spec.autoscaling.min_replicas,
            selector=client.V1LabelSelector(match_labels=selector_labels(spec.endpoint_id, slot)),
            strategy=client.V1DeploymentStrategy(type=strategy.type, rolling_update=rolling),
            # Model loading may take the whole startup budget; give image pulls some more.
            progress_deadline_seconds=settings.startup_timeout_s + 600,
            revision_history_limit=3,
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=_labels(spec, slot), annotations={
                    "prometheus.io/scrape": "true", "prometheus.io/port": str(PORT), "prometheus.io/path": "/metrics"}),
                spec=build_pod_spec(spec, settings))))


def _service(spec: DeploymentSpec, slot: Slot, settings: ServingSettings) -> client.V1Service:
    return client.V1Service(
        api_version="v1", kind="Service", metadata=_meta(spec, slot, settings, {}),
        spec=client.V1ServiceSpec(type="ClusterIP", selector=selector_labels(spec.endpoint_id, slot), ports=[
            client.V1ServicePort(name="http", port=PORT, target_port="http", protocol="TCP")]))


def _hpa(spec: DeploymentSpec, slot: Slot, settings: ServingSettings) -> client.V2HorizontalPodAutoscaler:
    name = resource_name(spec.endpoint_name, slot)
    return client.V2HorizontalPodAutoscaler(
        api_version="autoscaling/v2", kind="HorizontalPodAutoscaler", metadata=_meta(spec, slot, settings, {}),
        spec=client.V2HorizontalPodAutoscalerSpec(
            scale_target_ref=client.V2CrossVersionObjectReference(api_version="apps/v1", kind="Deployment", name=name),
            min_replicas=spec.autoscaling.min_replicas, max_replicas=spec.autoscaling.max_replicas,
            metrics=[client.V2MetricSpec(type="Pods", pods=client.V2PodsMetricSource(
                metric=client.V2MetricIdentifier(name=HPA_QUEUE_METRIC),
                target=client.V2MetricTarget(type="AverageValue",
                                             average_value=_quantity(spec.autoscaling.target_queue_length))))],
            behavior=_behavior(spec)))


def _promql_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _scaled_object(spec: DeploymentSpec, slot: Slot, settings: ServingSettings) -> dict[str, Any]:
    name = resource_name(spec.endpoint_name, slot)
    server = settings.gateway_metrics_url
    # Deployment pods are named <name>-<replicaset hash>-<suffix>; neither part holds a '-', so the stable
    # slot's pattern never matches the canary's pods.
    pods = f'namespace={_promql_string(settings.namespace)},pod=~{_promql_string(name + "-[a-z0-9]+-[a-z0-9]+")}'
    threshold = _number(spec.autoscaling.target_queue_length)
    meta = _plain(_meta(spec, slot, settings, {ANN_AUTOSCALER: "keda", ROUTE_KEY: _route(spec)}))
    return {
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": meta,
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicaCount": spec.autoscaling.min_replicas,
            "maxReplicaCount": spec.autoscaling.max_replicas,
            "pollingInterval": 5,
            "cooldownPeriod": spec.autoscaling.scale_down_delay_s,
            "advanced": {"horizontalPodAutoscalerConfig": {
                "behavior": _plain(_behavior(spec))}},
            "triggers": [
                {"type": "prometheus", "name": "vllm-queue", "metadata": {
                    "serverAddress": server, "threshold": threshold,
                    "query": f"sum(vllm:num_requests_waiting{{{pods}}}) or vector(0)"}},
                # Requests held at the gateway while nothing runs: what wakes a slot scaled to zero.
                {"type": "prometheus", "name": "gateway-queue", "metadata": {
                    "serverAddress": server, "threshold": threshold, "activationThreshold": "0",
                    "query": f"sum({GATEWAY_QUEUE_METRIC}{{route={_promql_string(_route(spec))}}}) or vector(0)"}},
            ]}}


def _inference_service(spec: DeploymentSpec, slot: Slot, settings: ServingSettings) -> dict[str, Any]:
    """KServe's predictor takes a pod spec inline, with replica bounds beside it; it owns probes' routing."""
    predictor = _plain(build_pod_spec(spec, settings, container_name="kserve-container"))
    predictor.update({"minReplicas": spec.autoscaling.min_replicas, "maxReplicas": spec.autoscaling.max_replicas,
                      "labels": _labels(spec, slot)})
    meta = _plain(_meta(spec, slot, settings, {ANN_AUTOSCALER: "kserve"}))
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "metadata": meta,
            "spec": {"predictor": predictor}}


def build_slot(spec: DeploymentSpec, slot: Slot, settings: ServingSettings, facts: ClusterFacts) -> SlotPlan:
    """Raises ``RuntimeFailure`` for a spec this cluster cannot run (scale to zero without KEDA, …)."""
    name = resource_name(spec.endpoint_name, slot)
    autoscaler = choose_autoscaler(spec, settings, facts)
    if autoscaler == "kserve":
        return SlotPlan(name, autoscaler, None, [_inference_service(spec, slot, settings)])
    strategy = choose_strategy(spec.resources.gpu_count, facts.capacity)
    manifests: list[Manifest] = [_service(spec, slot, settings),
                                 _deployment(spec, slot, settings, autoscaler, strategy)]
    if autoscaler == "hpa":
        manifests.append(_hpa(spec, slot, settings))
    elif autoscaler == "keda":
        manifests.append(_scaled_object(spec, slot, settings))
    return SlotPlan(name, autoscaler, strategy, manifests)


def to_dicts(manifests: list[Manifest]) -> list[dict[str, Any]]:
    return [m if isinstance(m, dict) else _plain(m) for m in manifests]


_CLEARABLE_POD_FIELDS = ("initContainers", "tolerations", "imagePullSecrets")


def merge_patch(doc: dict[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns whatever exists into ``doc``.

    A merge patch replaces lists whole and keeps fields it does not name, so the fields a later revision may
    drop are named with ``null``; an autoscaled Deployment's ``replicas`` is left to its autoscaler.
    """
    patch = {**doc, "spec": dict(doc.get("spec") or {})}
    spec = patch["spec"]
    kind = doc.get("kind")
    pod: dict[str, Any] | None = None
    if kind == "Deployment":
        if doc.get("metadata", {}).get("annotations", {}).get(ANN_AUTOSCALER, "none") != "none":
            spec.pop("replicas", None)
        strategy = spec["strategy"] = dict(spec.get("strategy") or {})
        strategy.setdefault("rollingUpdate", None)  # Recreate rejects leftover rollingUpdate parameters
        template = spec["template"] = dict(spec["template"])
        pod = template["spec"] = dict(template["spec"])
    elif kind == "InferenceService":
        pod = spec["predictor"] = dict(spec["predictor"])
    if pod is not None:
        for field in _CLEARABLE_POD_FIELDS:
            pod.setdefault(field, None)
    return patch

"""Offline checks of the two custom resources the Kubernetes serving runtime writes, which ``kubernetes_validate``
has no schema for: KEDA's ``ScaledObject`` (keda.sh/v1alpha1) and KServe's ``InferenceService``
(serving.kserve.io/v1beta1).

Each is a small closed JSON schema of our own, written from the CRD's OpenAPI schema for the fields we write
or may write (``additionalProperties: false``), so a misspelt field, a trigger metadata value that is not a
string (KEDA declares ``metadata`` as a string map) or a missing required field fails. What the CRDs embed
from Kubernetes goes to ``kubernetes_validate`` (strict, 1.30) inside the built-in object it comes from: the
ScaledObject's HPA ``behavior`` inside a HorizontalPodAutoscaler, the predictor's pod fields as a Pod's spec,
the metadata as a ConfigMap's.
"""

from __future__ import annotations

from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]

__all__ = ["validate_inference_service", "validate_scaled_object"]

KUBE_VERSION = "1.30"
_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
_INT32 = {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}


def _closed(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "properties": properties, "required": list(required)}


_TRIGGER = _closed({
    "type": {"type": "string", "minLength": 1}, "name": {"type": "string"}, "metadata": _STRINGS,
    "metricType": {"enum": ["AverageValue", "Value", "Utilization"]}, "useCachedMetrics": {"type": "boolean"},
    "authenticationRef": _closed({"name": {"type": "string"}, "kind": {"type": "string"}}, ("name",)),
}, ("type", "metadata"))

SCALED_OBJECT = _closed({
    "apiVersion": {"const": "keda.sh/v1alpha1"}, "kind": {"const": "ScaledObject"}, "metadata": {"type": "object"},
    "spec": _closed({
        "scaleTargetRef": _closed({"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                                   "name": {"type": "string", "minLength": 1},
                                   "envSourceContainerName": {"type": "string"}}, ("name",)),
        "minReplicaCount": _INT32, "maxReplicaCount": _INT32, "idleReplicaCount": _INT32,
        "pollingInterval": _INT32, "cooldownPeriod": _INT32, "initialCooldownPeriod": _INT32,
        "advanced": _closed({
            "horizontalPodAutoscalerConfig": _closed({"name": {"type": "string"}, "behavior": {"type": "object"}}),
            "restoreToOriginalReplicaCount": {"type": "boolean"}}),
        "triggers": {"type": "array", "minItems": 1, "items": _TRIGGER},
    }, ("scaleTargetRef", "triggers")),
}, ("apiVersion", "kind", "metadata", "spec"))

# The predictor's own fields (KServe's ComponentExtensionSpec); the rest of the predictor is a pod spec.
_EXTENSION = {"minReplicas": _INT32, "maxReplicas": _INT32, "labels": _STRINGS, "annotations": _STRINGS,
              "scaleTarget": _INT32, "scaleMetric": {"enum": ["cpu", "memory", "concurrency", "rps"]},
              "containerConcurrency": _INT32, "timeout": _INT32, "canaryTrafficPercent": _INT32}
INFERENCE_SERVICE = _closed({
    "apiVersion": {"const": "serving.kserve.io/v1beta1"}, "kind": {"const": "InferenceService"},
    "metadata": {"type": "object"}, "spec": _closed({"predictor": {"type": "object"}}, ("predictor",)),
}, ("apiVersion", "kind", "metadata", "spec"))


def _metadata(meta: dict[str, Any]) -> None:
    kubernetes_validate.validate({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta}, KUBE_VERSION,
                                 strict=True)


def validate_scaled_object(doc: dict[str, Any]) -> None:
    """Raises ``jsonschema.ValidationError`` or ``kubernetes_validate``'s error."""
    jsonschema.validate(doc, SCALED_OBJECT)
    _metadata(doc["metadata"])
    behavior = doc["spec"].get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior")
    if behavior is not None:
        kubernetes_validate.validate({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "x"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "x"}, "maxReplicas": 1, "behavior": behavior}},
            KUBE_VERSION, strict=True)


def validate_inference_service(doc: dict[str, Any]) -> None:
    jsonschema.validate(doc, INFERENCE_SERVICE)
    _metadata(doc["metadata"])
    predictor = dict(doc["spec"]["predictor"])
    extension = {k: predictor.pop(k) for k in list(predictor) if k in _EXTENSION}
    jsonschema.validate(extension, _closed(_EXTENSION))
    kubernetes_validate.validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": predictor},
                                 KUBE_VERSION, strict=True)

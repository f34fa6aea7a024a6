"""``KubernetesRuntime``: the serving runtime on a Kubernetes cluster, through the official ``kubernetes`` client.

The client is synchronous; every call runs in a worker thread with a request timeout (``adapters.kubernetes.client``),
so the event loop never blocks on the API server. Its errors are translated in one place (``_refusal``):
an API refusal or an unreachable API server becomes ``RuntimeFailure`` with a short reason that carries no
credentials. ``delete`` never raises: each resource lands in ``deleted``, ``already_gone`` or ``failed``.

Objects are created, or, when they exist (409), updated with a JSON merge patch (``manifests.merge_patch``),
which works the same for built-in kinds and custom resources. Rendering needs two facts about the cluster,
read by ``apply`` just before it renders: whether KEDA is installed, and whether a node has GPUs to spare for
a surge pod (``capacity``). ``render`` reuses the facts of the last ``apply``; before any, it previews with
no spare GPU and KEDA only where nothing else could scale (``minReplicas`` 0). What ``apply`` returns is what
was sent.

RBAC: in ``SERVING_NAMESPACE`` create/get/patch/delete Deployments, Services, HPAs, ScaledObjects (or
InferenceServices) and list Pods; cluster-wide list Nodes and Pods (GPU capacity) and get
CustomResourceDefinitions. Without the cluster-wide reads GPU slots are ``Recreate``d and KEDA is assumed absent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Literal, NamedTuple, TypeVar

import msgspec
import urllib3
from kubernetes import client

from adapters.kubernetes.client import (
    CLIENT_ERRORS,
    MERGE_PATCH,
    call,
    describe_error,
    describe_refusal,
    make_api_client,
    not_found,
    probe,
    read,
)
from adapters.kubernetes.objects import Pod, PodList
from adapters.serving.base import DeleteReport, DeploymentSpec, RuntimeFailure, RuntimeStatus, Slot
from adapters.serving.kubernetes.capacity import GpuCapacity, gpu_capacity
from adapters.serving.kubernetes.manifests import (
    ANN_AUTOSCALER,
    LABEL_ENDPOINT,
    LABEL_SLOT,
    ClusterFacts,
    SlotPlan,
    build_slot,
    merge_patch,
    resource_name,
    to_dicts,
)
from adapters.serving.kubernetes.objects import Deployment, NodeList
from adapters.serving.kubernetes.status import deployment_status, inference_service_status, safe_message
from adapters.serving.settings import ServingSettings

__all__ = ["KubernetesRuntime"]

log = logging.getLogger("llmops.serving.kubernetes")
T = TypeVar("T")
Kind = Literal["Deployment", "Service", "HorizontalPodAutoscaler", "ScaledObject", "InferenceService"]
_KEDA_CRD = "scaledobjects.keda.sh"
_CUSTOM = {"ScaledObject": ("keda.sh", "v1alpha1", "scaledobjects"),
           "InferenceService": ("serving.kserve.io", "v1beta1", "inferenceservices")}
_KSERVE_POD_LABEL = "serving.kserve.io/inferenceservice"


def _refusal(exc: Exception, what: str) -> RuntimeFailure:
    """The one translation of the client's errors; ``what`` names the object, e.g. ``Deployment/llama``. Every
    ``ApiException`` is a refusal here, the client's status-0 one (a TLS failure) too: not retried."""
    report = (describe_refusal(exc, what, safe_message) if isinstance(exc, client.ApiException)
              else describe_error(exc, what, safe_message))
    return RuntimeFailure(report.reason, retryable=report.retryable)


class KubernetesRuntime:
    name: Literal["kubernetes"] = "kubernetes"

    def __init__(self, settings: ServingSettings, api_client: client.ApiClient | None = None) -> None:
        self._settings = settings
        self._api = api_client or client.ApiClient()
        self._apps = client.AppsV1Api(self._api)
        self._core = client.CoreV1Api(self._api)
        self._hpa = client.AutoscalingV2Api(self._api)
        self._custom = client.CustomObjectsApi(self._api)
        self._crds = client.ApiextensionsV1Api(self._api)
        self._facts = ClusterFacts()

    @classmethod
    def from_settings(cls, settings: ServingSettings) -> KubernetesRuntime:
        """``SERVING_KUBECONFIG`` when set, else the pod's service account, else ``~/.kube/config``."""
        return cls(settings, make_api_client(settings.kubeconfig, setting="SERVING_KUBECONFIG",
                                             failure=RuntimeFailure))

    # -- the protocol ---------------------------------------------------------------------------------------

    def render(self, spec: DeploymentSpec, slot: Slot) -> list[dict[str, Any]]:
        return to_dicts(build_slot(spec, slot, self._settings, self._facts).manifests)

    async def apply(self, spec: DeploymentSpec, slot: Slot) -> list[dict[str, Any]]:
        facts = await self._read_facts(spec)
        plan = build_slot(spec, slot, self._settings, facts)
        docs = to_dicts(plan.manifests)
        for doc in docs:
            await self._upsert(doc)
        await self._drop_stale_autoscalers(plan, facts)
        self._facts = facts
        log.info("serving: applied %s revision %d (%s, autoscaler %s)", plan.name, spec.revision,
                 plan.strategy.type if plan.strategy else "kserve", plan.autoscaler)
        return docs

    async def status(self, endpoint_id: str, endpoint_name: str, slot: Slot) -> RuntimeStatus:
        name = resource_name(endpoint_name, slot)
        ns = self._settings.namespace
        if self._settings.kserve:
            group, version, plural = _CUSTOM["InferenceService"]
            isvc = await self._read(f"InferenceService/{name}", dict, self._custom.get_namespaced_custom_object,
                                    group, version, ns, plural, name)
            if isvc is None:
                return RuntimeStatus(phase="absent")
            owner = ((isvc.get("metadata") or {}).get("labels") or {}).get(LABEL_ENDPOINT)
            if owner != endpoint_id:
                return _name_taken(f"InferenceService/{name}", ns, owner, endpoint_id)
            pods = await self._pods({_KSERVE_POD_LABEL: name})
            return inference_service_status(isvc, pods, ns)
        deployment = await self._read(f"Deployment/{name}", Deployment, self._apps.read_namespaced_deployment, name, ns)
        if deployment is None:
            return RuntimeStatus(phase="absent")
        owner = (deployment.metadata.labels or {}).get(LABEL_ENDPOINT)
        if owner != endpoint_id:
            return _name_taken(f"Deployment/{name}", ns, owner, endpoint_id)
        pods = await self._pods({LABEL_ENDPOINT: endpoint_id, LABEL_SLOT: slot})
        return deployment_status(deployment, pods, ns)

    async def delete(self, endpoint_id: str, endpoint_name: str, slot: Slot | None = None) -> DeleteReport:
        deleted: list[str] = []
        gone: list[str] = []
        failed: dict[str, str] = {}
        down: str | None = None  # once the API server is unreachable, the rest fail at once, not one timeout each
        slots: list[Slot] = [slot] if slot is not None else ["canary", "stable"]
        for one in slots:
            name = resource_name(endpoint_name, one)
            plan = await self._deletion(name, endpoint_id) if down is None else _Deletion(_ALL_KINDS, down)
            down = down or plan.unreachable
            if plan.foreign:
                gone.extend(f"{kind}/{name}" for kind in plan.kinds)  # ours are gone; that one is not ours
                continue
            for kind in plan.kinds:
                what = f"{kind}/{name}"
                if down is not None:
                    failed[what] = down
                    continue
                try:
                    await call(self._deleter(kind), name, self._settings.namespace,
                               propagation_policy="Background")  # pods go with their Deployment
                    deleted.append(what)
                except CLIENT_ERRORS as exc:
                    if not_found(exc):
                        gone.append(what)
                        continue
                    failed[what] = _refusal(exc, what).reason
                    if not isinstance(exc, client.ApiException):
                        down = "Kubernetes API unreachable"
        if failed:
            log.warning("serving: delete of %s left %d resources: %s", endpoint_name, len(failed), sorted(failed))
        return DeleteReport(deleted=deleted, already_gone=gone, failed=failed)

    async def aclose(self) -> None:
        await asyncio.to_thread(self._api.close)

    # -- reading the cluster ---------------------------------------------------------------------------------

    async def _read(self, what: str, into: type[T], fn: Callable[..., Any], *args: Any) -> T | None:
        """The object, or None when it does not exist; anything else is a ``RuntimeFailure``."""
        try:
            return await read(fn, into, *args)
        except (*CLIENT_ERRORS, msgspec.DecodeError) as exc:
            if not_found(exc):
                return None
            raise _refusal(exc, what) from None

    async def _pods(self, labels: dict[str, str]) -> list[Pod]:
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        try:
            listed = await read(self._core.list_namespaced_pod, PodList, self._settings.namespace,
                                label_selector=selector)
        except (*CLIENT_ERRORS, msgspec.DecodeError) as exc:
            raise _refusal(exc, "Pods") from None
        # Filtered here too: the selector is the server's job, but a wrong answer must not mix endpoints.
        return [p for p in listed.items if all((p.metadata.labels or {}).get(k) == v for k, v in labels.items())]

    async def _keda_installed(self) -> bool | None:
        """True/False when known; None when the CRD could not be read (forbidden, unreachable)."""
        try:
            # Only the answer's status matters: skip decoding KEDA's CRD (hundreds of KiB of schema).
            await probe(self._crds.read_custom_resource_definition, _KEDA_CRD)
            return True
        except CLIENT_ERRORS as exc:
            return False if not_found(exc) else None

    async def _capacity(self, resource: str) -> GpuCapacity | None:
        try:
            nodes = await read(self._core.list_node, NodeList)
            pods = await read(self._core.list_pod_for_all_namespaces, PodList,
                              field_selector="status.phase!=Succeeded,status.phase!=Failed")
        except client.ApiException as exc:
            log.warning("serving: GPU capacity unreadable (%s %s); GPU slots are Recreated", exc.status, exc.reason)
            return None
        except msgspec.DecodeError as exc:
            log.warning("serving: GPU capacity unreadable (%s); GPU slots are Recreated", exc)
            return None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise _refusal(exc, "Nodes") from None
        return gpu_capacity(nodes.items, pods.items, resource)

    async def _read_facts(self, spec: DeploymentSpec) -> ClusterFacts:
        """KEDA is looked for on every apply (one GET, body unread), also to remove a ScaledObject that a
        revision no longer wants; GPU capacity only for GPU slots."""
        if self._settings.kserve:
            return self._facts
        gpu = spec.resources.gpu_count > 0
        installed, capacity = await asyncio.gather(
            self._keda_installed(), self._capacity(spec.resources.gpu_resource) if gpu else _value(None))
        # Unreadable CRDs (None) count as no KEDA: apply does not guess (SERVING_AUTOSCALER=keda still forces it).
        return ClusterFacts(keda_installed=installed is True, capacity=capacity)

    # -- writing ---------------------------------------------------------------------------------------------

    async def _upsert(self, doc: dict[str, Any]) -> None:
        kind: Kind = doc["kind"]
        name = doc["metadata"]["name"]
        ns = self._settings.namespace
        what = f"{kind}/{name}"
        try:
            await call(self._creator(kind), ns, doc)
        except CLIENT_ERRORS as exc:
            if not (isinstance(exc, client.ApiException) and exc.status == 409):
                raise _refusal(exc, what) from None
            try:
                await call(self._patcher(kind), name, ns, merge_patch(doc), _content_type=MERGE_PATCH)
            except CLIENT_ERRORS as exc2:
                raise _refusal(exc2, what) from None

    async def _drop_stale_autoscalers(self, plan: SlotPlan, facts: ClusterFacts) -> None:
        """A revision without the autoscaler its predecessor had must not keep that one fighting over replicas."""
        stale: list[Kind] = []
        if plan.autoscaler not in ("hpa", "kserve"):
            stale.append("HorizontalPodAutoscaler")
        if plan.autoscaler not in ("keda", "kserve") and (facts.keda_installed or self._settings.autoscaler == "keda"):
            stale.append("ScaledObject")
        for kind in stale:
            try:
                await call(self._deleter(kind), plan.name, self._settings.namespace,
                           propagation_policy="Background")
            except CLIENT_ERRORS as exc:
                if not not_found(exc):
                    raise _refusal(exc, f"{kind}/{plan.name}") from None

    async def _deletion(self, name: str, endpoint_id: str) -> _Deletion:
        """What to delete, autoscaler first and Deployment last. The Deployment's annotation says which
        autoscaler exists; without it, a ScaledObject is tried only where KEDA is installed (no keda.sh RBAC
        needed elsewhere). A Deployment of that name that another endpoint owns is left alone."""
        if self._settings.kserve:
            return _Deletion(["InferenceService"])
        hint: str | None = None
        try:
            deployment = await read(self._apps.read_namespaced_deployment, Deployment, name,
                                    self._settings.namespace)
            owner = (deployment.metadata.labels or {}).get(LABEL_ENDPOINT)
            if owner != endpoint_id:
                log.warning("serving: Deployment/%s belongs to %s, not %s: left alone", name, owner, endpoint_id)
                return _Deletion(["Service", "Deployment"], foreign=True)
            hint = (deployment.metadata.annotations or {}).get(ANN_AUTOSCALER)
        except (urllib3.exceptions.HTTPError, OSError):
            return _Deletion(_ALL_KINDS, "Kubernetes API unreachable")
        except (client.ApiException, msgspec.DecodeError):
            pass  # gone already (or unreadable): try every kind
        kinds: list[Kind] = []
        if hint in (None, "hpa"):
            kinds.append("HorizontalPodAutoscaler")
        if hint == "keda" or (hint is None and await self._keda_installed() is not False):
            kinds.append("ScaledObject")
        return _Deletion([*kinds, "Service", "Deployment"])

    def _creator(self, kind: Kind) -> Callable[..., Any]:
        """``(namespace, body, **request options)``"""
        if kind in _CUSTOM:
            group, version, plural = _CUSTOM[kind]
            return lambda ns, body, **kw: self._custom.create_namespaced_custom_object(
                group, version, ns, plural, body, **kw)
        methods: dict[str, Callable[..., Any]] = {
            "Deployment": self._apps.create_namespaced_deployment,
            "Service": self._core.create_namespaced_service,
            "HorizontalPodAutoscaler": self._hpa.create_namespaced_horizontal_pod_autoscaler}
        return methods[kind]

    def _patcher(self, kind: Kind) -> Callable[..., Any]:
        """``(name, namespace, body, **request options)``"""
        if kind in _CUSTOM:
            group, version, plural = _CUSTOM[kind]
            return lambda name, ns, body, **kw: self._custom.patch_namespaced_custom_object(
                group, version, ns, plural, name, body, **kw)
        methods: dict[str, Callable[..., Any]] = {
            "Deployment": self._apps.patch_namespaced_deployment,
            "Service": self._core.patch_namespaced_service,
            "HorizontalPodAutoscaler": self._hpa.patch_namespaced_horizontal_pod_autoscaler}
        return methods[kind]

    def _deleter(self, kind: Kind) -> Callable[..., Any]:
        """``(name, namespace, **request options)``"""
        if kind in _CUSTOM:
            group, version, plural = _CUSTOM[kind]
            return lambda name, ns, **kw: self._custom.delete_namespaced_custom_object(
                group, version, ns, plural, name, **kw)
        methods: dict[str, Callable[..., Any]] = {
            "Deployment": self._apps.delete_namespaced_deployment,
            "Service": self._core.delete_namespaced_service,
            "HorizontalPodAutoscaler": self._hpa.delete_namespaced_horizontal_pod_autoscaler}
        return methods[kind]


class _Deletion(NamedTuple):
    kinds: list[Kind]
    unreachable: str | None = None
    foreign: bool = False


_ALL_KINDS: list[Kind] = ["HorizontalPodAutoscaler", "ScaledObject", "Service", "Deployment"]


def _name_taken(what: str, namespace: str, owner: str | None, endpoint_id: str) -> RuntimeStatus:
    """An object of this name that another endpoint (or someone else) owns: never read or reported as ours."""
    return RuntimeStatus(phase="failed", reason="NameTaken", message=(
        f"{what} in {namespace} belongs to {owner or 'something else'}, not {endpoint_id}"))


async def _value(value: T) -> T:
    return value

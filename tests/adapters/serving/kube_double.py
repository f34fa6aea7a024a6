"""TEST DOUBLE: an in-memory Kubernetes API (kmock's ``KubernetesEmulator``) on a loopback port, for tests of code
that talks to Kubernetes through the official client (the serving and training runtimes).

No controller runs: a Deployment never gets pods by itself. Tests play the cluster's part by writing objects
(nodes with GPUs, pods with container states, a Deployment's status) with the helpers below. The emulator
ignores label and field selectors, and applies every PATCH as a plain merge (``None`` deletes a key).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import kmock
from kubernetes import client

__all__ = ["KINDS", "KubeDouble", "open_kube_double"]

# Every resource the serving and training runtimes use: plural path -> (kind, namespaced).
KINDS: dict[str, tuple[str, bool]] = {
    "apps/v1/deployments": ("Deployment", True),
    "v1/services": ("Service", True),
    "v1/pods": ("Pod", True),
    "v1/nodes": ("Node", False),
    "autoscaling/v2/horizontalpodautoscalers": ("HorizontalPodAutoscaler", True),
    "apiextensions.k8s.io/v1/customresourcedefinitions": ("CustomResourceDefinition", False),
    "keda.sh/v1alpha1/scaledobjects": ("ScaledObject", True),
    "serving.kserve.io/v1beta1/inferenceservices": ("InferenceService", True),
    # The training runtime's (adapters/training/kubernetes).
    "batch/v1/jobs": ("Job", True),
    "v1/secrets": ("Secret", True),
    "trainer.kubeflow.org/v1alpha1/trainjobs": ("TrainJob", True),
    "kubeflow.org/v1/pytorchjobs": ("PyTorchJob", True),
}


@dataclass
class KubeDouble:
    emulator: kmock.KubernetesEmulator
    server: kmock.Server
    clients: list[client.ApiClient] = field(default_factory=list)
    running: bool = True

    @property
    def url(self) -> str:
        return str(self.server.url).rstrip("/")

    def api_client(self) -> client.ApiClient:
        """An official client aimed at the double (closed with the double). Retries off: fail fast when down."""
        cfg = client.Configuration(host=self.url)
        cfg.retries = 0
        api = client.ApiClient(cfg)
        self.clients.append(api)
        return api

    async def stop(self) -> None:
        """The API server goes away (its port closes): for outage tests."""
        if self.running:
            self.running = False
            await self.server.__aexit__(None, None, None)

    # -- reading what the code under test wrote -----------------------------------------------------------------

    def get(self, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:  # (``in`` would compare the unparsed resource string; indexing parses it)
            obj = self.emulator.objects[resource, namespace, name]
        except KeyError:
            return None
        return None if obj.deleted else obj.raw

    def names(self, resource: str, namespace: str | None = None) -> list[str]:
        return sorted(name for (res, ns, name), obj in self.emulator.objects.items()
                      if res == kmock.resource(resource) and (namespace is None or ns == namespace)
                      and not obj.deleted)

    # -- playing the cluster's part --------------------------------------------------------------------------

    def put(self, resource: str, namespace: str | None, name: str, body: dict[str, Any]) -> None:
        meta = {"name": name, **({"namespace": namespace} if namespace else {}), **body.get("metadata", {})}
        kind = KINDS[resource][0]
        self.emulator.objects[resource, namespace, name] = {
            "apiVersion": resource.rsplit("/", 1)[0], "kind": kind, **body, "metadata": meta}

    def patch(self, resource: str, namespace: str | None, name: str, body: dict[str, Any]) -> None:
        self.emulator.objects[resource, namespace, name].patch(body)

    def remove(self, resource: str, namespace: str | None, name: str) -> None:
        self.emulator.objects[resource, namespace, name].delete()

    def add_node(self, name: str, *, gpus: int = 0, gpu_resource: str = "nvidia.com/gpu",
                 unschedulable: bool = False) -> None:
        allocatable = {"cpu": "32", "memory": "256Gi", **({gpu_resource: str(gpus)} if gpus else {})}
        self.put("v1/nodes", None, name, {"spec": {"unschedulable": unschedulable},
                                          "status": {"allocatable": allocatable, "capacity": allocatable}})

    def add_pod(self, namespace: str, name: str, *, labels: dict[str, str] | None = None, node: str | None = None,
                gpus: int = 0, phase: str = "Running", ready: bool = True,
                container_statuses: list[dict[str, Any]] | None = None,
                conditions: list[dict[str, Any]] | None = None) -> None:
        resources = {"requests": {"nvidia.com/gpu": str(gpus)}, "limits": {"nvidia.com/gpu": str(gpus)}} \
            if gpus else {}
        status: dict[str, Any] = {
            "phase": phase,
            "conditions": conditions if conditions is not None else [
                {"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": container_statuses if container_statuses is not None else [
                {"name": "vllm", "image": "vllm", "imageID": "", "ready": ready, "restartCount": 0,
                 "state": {"running": {}} if phase == "Running" else {"waiting": {"reason": "ContainerCreating"}}}],
        }
        self.put("v1/pods", namespace, name, {
            "metadata": {"labels": labels or {}},
            "spec": {"nodeName": node, "containers": [{"name": "vllm", "image": "vllm", "resources": resources}]},
            "status": status})

    def set_pod_log(self, namespace: str, name: str, text: str) -> None:
        """What ``GET pods/{name}/log`` answers (the emulator would answer the pod itself): a kubelet's part."""
        self.emulator["get", f"/api/v1/namespaces/{namespace}/pods/{name}/log"] << text.encode()

    def install_crd(self, name: str) -> None:
        plural, group = name.split(".", 1)
        kind = KINDS.get(next((r for r in KINDS if r.startswith(group + "/") and r.endswith("/" + plural)), ""),
                         (plural.capitalize(), True))[0]
        self.put("apiextensions.k8s.io/v1/customresourcedefinitions", None, name, {"spec": {
            "group": group, "scope": "Namespaced",
            "names": {"plural": plural, "kind": kind},
            "versions": [{"name": "v1alpha1", "served": True, "storage": True}]}})


@contextlib.asynccontextmanager
async def open_kube_double() -> AsyncIterator[KubeDouble]:
    async with kmock.KubernetesEmulator() as emulator:
        for resource, (kind, namespaced) in KINDS.items():
            emulator.resources[resource] = kmock.ResourceInfo(kind=kind, namespaced=namespaced)
        server = kmock.Server(emulator)
        await server.__aenter__()
        double = KubeDouble(emulator=emulator, server=server)
        try:
            yield double
        finally:
            for api in double.clients:
                api.close()
            await double.stop()

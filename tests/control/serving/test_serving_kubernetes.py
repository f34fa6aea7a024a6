"""The serving module on the real ``KubernetesRuntime``, against kmock's in-memory API server (a TEST DOUBLE; no
controller runs, so the test plays the cluster: Deployment status and pods). Deploy writes the manifests the
revision keeps; the route appears at the Service's URL once the pods are ready; an image that cannot be pulled
shows as the endpoint's status; delete removes every object; with the API server gone, delete is a 502."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adapters.serving.kubernetes import KubernetesRuntime
from adapters.serving.settings import load_serving_settings
from tests.adapters.serving.kube_double import KubeDouble, open_kube_double
from tests.control.catalog._helpers import data, fail
from tests.control.serving.serving_support import API, endpoint, model, published, routes_of, serving_app

ENV = {"SERVING_RUNTIME": "kubernetes", "SERVING_AUTOSCALER": "hpa", "SERVING_NAMESPACE": "llm"}
DEPLOYMENTS = "apps/v1/deployments"


def _labels(ep: str, revision: int, slot: str = "stable") -> dict[str, str]:
    return {"llmops.io/endpoint-id": ep, "llmops.io/slot": slot, "llmops.io/revision": str(revision)}


def _rolled_out(kube: KubeDouble, name: str, ep: str, revision: int, ready: int = 1) -> None:
    """What the Deployment controller and the kubelet would do: pods up, the Deployment's status counted."""
    for i in range(ready):
        kube.add_pod("llm", f"{name}-{revision}-{i}", labels=_labels(ep, revision), node="gpu-1", gpus=1)
    kube.patch(DEPLOYMENTS, "llm", name, {"status": {"replicas": ready, "readyReplicas": ready,
                                                     "updatedReplicas": ready, "availableReplicas": ready}})


def _container(kube: KubeDouble, name: str) -> dict[str, Any]:
    deployment = kube.get(DEPLOYMENTS, "llm", name)
    assert deployment is not None, f"no Deployment {name}"
    return next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "vllm")


async def test_an_endpoint_on_kubernetes_from_deploy_to_delete(database_url: str, tmp_path: Path) -> None:
    async with open_kube_double() as kube:
        kube.add_node("gpu-1", gpus=4)
        runtime = KubernetesRuntime(load_serving_settings(ENV), api_client=kube.api_client())
        async with serving_app(database_url, tmp_path / "data", runtime=runtime, env=ENV) as app:
            m = await model(app, "llama")
            refused = fail(await app.client.post(API, json={"name": "zero", "modelId": m["id"], "minReplicas": 0}),
                           422)
            assert "KEDA" in refused["message"]

            ep = (await endpoint(app, m["id"], "llama-chat", useGpu=True, maxReplicas=3,
                                 vllmArgs=["--max-model-len=4096"]))["id"]
            args = _container(kube, "llama-chat")["args"]
            assert args[args.index("--served-model-name") + 1] == "llama" and "--max-model-len=4096" in args
            assert _container(kube, "llama-chat")["resources"]["limits"]["nvidia.com/gpu"] == "1"
            kinds = {doc["kind"] for doc in data(await app.client.get(f"{API}/{ep}/revisions"))["items"][0]
                     ["manifests"]}
            assert {"Deployment", "Service", "HorizontalPodAutoscaler"} <= kinds

            await app.reconcile()
            assert data(await app.client.get(f"{API}/{ep}"))["status"] == "deploying"
            assert routes_of(await published(app)) == {}
            _rolled_out(kube, "llama-chat", ep, 1)
            await app.reconcile()
            ready = data(await app.client.get(f"{API}/{ep}"))
            assert ready["status"] == "ready" and ready["slots"]["stable"]["details"]["kind"] == "Deployment"
            snap = await published(app)
            assert snap.providers[0].base_urls == ["http://llama-chat.llm.svc.cluster.local:8000/v1"]
            assert routes_of(snap) == {"llama-chat": [(f"serving:{ep}:stable", "llama", 100.0)]}

            broken = (await endpoint(app, m["id"], "broken", useGpu=True,
                                     servingRuntimeImage="registry.example/vllm:missing"))["id"]
            kube.add_pod("llm", "broken-1-0", labels=_labels(broken, 1), node="gpu-1", phase="Pending", ready=False,
                         container_statuses=[{"name": "vllm", "image": "registry.example/vllm:missing", "imageID": "",
                                              "ready": False, "restartCount": 0, "state": {"waiting": {
                                                  "reason": "ImagePullBackOff",
                                                  "message": "Back-off pulling image"}}}])
            await app.reconcile()
            failed = data(await app.client.get(f"{API}/{broken}"))
            assert (failed["status"], failed["statusReason"]) == ("failed", "ImagePullBackOff")
            assert "broken" not in routes_of(await published(app))

            done = data(await app.client.delete(f"{API}/{ep}"))
            assert done["deleted"] is True and "Deployment/llama-chat" in done["resourcesDeleted"]
            assert kube.get(DEPLOYMENTS, "llm", "llama-chat") is None
            assert kube.get("v1/services", "llm", "llama-chat") is None
            assert routes_of(await published(app)) == {}

            await kube.stop()
            resp = await app.client.delete(f"{API}/{broken}")
            assert resp.status_code == 502, resp.text
            assert resp.json()["data"]["resourcesFailed"] and resp.json()["data"]["deleted"] is False
            assert data(await app.client.get(f"{API}/{broken}"))["status"] == "deleting"

"""Routes of two kinds of endpoint issue 12 names: an Ollama model routed straight to its provider (gateway kind
``ollama``, no key), and a Kubernetes endpoint scaled to zero, whose route stays published with the endpoint's
queue bound so that requests wait at the gateway instead of failing (the gateway's side of that wait is
tests/gateway/test_scale_from_zero.py)."""

from __future__ import annotations

from pathlib import Path

from tests.control.catalog._helpers import data
from tests.control.serving.serving_support import (
    API,
    FakeRuntime,
    ServingApp,
    endpoint,
    model,
    published,
    routes_of,
    serving_app,
)

OLLAMA = {"kind": "ollama", "baseUrl": "http://ollama.internal:11434", "model": "llama3.2"}


async def test_an_ollama_model_routes_to_ollama_without_a_key(app: ServingApp) -> None:
    ext = await model(app, "llama-ollama", kind="external", provider=OLLAMA)
    created = await endpoint(app, ext["id"], "local-llama", route="llama-small")
    assert (created["runtime"], created["status"], created["model"]["providerKind"]) == ("external", "ready", "ollama")
    snap = await published(app)
    assert routes_of(snap) == {"llama-small": [(f"serving:{created['id']}:stable", "llama3.2", 100.0)]}
    (provider,) = snap.providers
    assert (provider.kind, provider.base_urls, provider.api_key_ref) == ("ollama", [OLLAMA["baseUrl"]], None)
    assert app.runtime.applied == []


async def test_a_slot_scaled_to_zero_keeps_its_route_with_the_queue_bound(database_url: str, tmp_path: Path) -> None:
    runtime = FakeRuntime(name="kubernetes")
    env = {"SERVING_RUNTIME": "kubernetes", "SERVING_AUTOSCALER": "keda"}
    async with serving_app(database_url, tmp_path / "data", runtime=runtime, env=env) as app:
        m = await model(app, "sleepy")
        ep = (await endpoint(app, m["id"], "sleepy", minReplicas=0, maxReplicas=2, queueTimeoutS=45))["id"]
        await app.reconcile()
        assert data(await app.client.get(f"{API}/{ep}"))["status"] == "ready"

        runtime.units[(ep, "stable")].phase = "scaled_to_zero"  # KEDA took the last replica away
        await app.reconcile()
        asleep = data(await app.client.get(f"{API}/{ep}"))
        assert (asleep["status"], asleep["replicas"]["ready"]) == ("scaled_to_zero", 0)
        assert data(await app.client.get(f"{API}?status=scaled_to_zero"))["total"] == 1
        snap = await published(app)
        assert routes_of(snap) == {"sleepy": [(f"serving:{ep}:stable", "sleepy", 100.0)]}
        assert snap.routes[0].queue_timeout_s == 45
        assert snap.providers[0].base_urls == [f"http://fake.test/{ep}/stable/r1/v1"]

        runtime.units[(ep, "stable")].phase = "ready"  # a queued request woke it
        await app.reconcile()
        assert data(await app.client.get(f"{API}/{ep}"))["status"] == "ready"

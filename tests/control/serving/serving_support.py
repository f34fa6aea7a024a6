"""Shared by the serving module's tests: the admin app with catalog + serving, approved models, and
``FakeRuntime``, an in-memory ``ServingRuntime`` (a test double: no process, no cluster) whose faults a test sets.

The real runtimes have their own tests (tests/adapters/serving); ``test_serving_local_runtime.py`` runs this
module against the real ``LocalRuntime``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from adapters.adminapi import ControlCfg, ControlModule
from adapters.adminapi.testing import AdminTestApp, admin_test_app
from adapters.serving import DeleteReport, DeploymentSpec, RuntimeFailure, RuntimeStatus, Slot
from adapters.serving.settings import load_serving_settings
from control.catalog import CatalogModule
from control.serving import ServingModule
from control.serving.reconciler import PassReport, Reconciler
from control.serving.runtimes import RuntimeFactory
from tests.control.catalog._helpers import data, upload

API = "/llm-ops/v1/serving/endpoints"
CATALOG = "/llm-ops/v1/catalog"
GGUF = b"GGUF" + b"\x03\x00\x00\x00" + b"\x00" * 100
OPENAI = {"kind": "openai", "baseUrl": "https://api.openai.com/v1", "model": "gpt-4o-mini",
          "apiKeyRef": "env:OPENAI_API_KEY"}


@dataclass
class Unit:
    revision: int
    phase: str = "ready"
    reason: str | None = None
    base_url: str | None = None


@dataclass
class FakeRuntime:
    """Slots in a dict. ``ready_on_apply``: a new unit is ``ready`` at once (else ``progressing`` until a test
    sets it); ``refuse``: ``apply`` raises ``RuntimeFailure`` with it; ``image_faults``: an image whose units
    come up ``failed`` with that reason (ImagePullBackOff…); ``delete_faults``: resources ``delete`` reports
    as failed (``"<endpoint id>/<slot>"``) while listed."""

    name: Literal["kubernetes", "local"] = "local"
    ready_on_apply: bool = True
    refuse: str | None = None
    refuse_retryable: bool = False
    image_faults: dict[str, str] = field(default_factory=dict)
    delete_faults: set[str] = field(default_factory=set)
    units: dict[tuple[str, str], Unit] = field(default_factory=dict)
    applied: list[tuple[str, str, int]] = field(default_factory=list)
    specs: list[DeploymentSpec] = field(default_factory=list)
    deletes: list[tuple[str, str | None]] = field(default_factory=list)
    closed: bool = False

    def render(self, spec: DeploymentSpec, slot: Slot) -> list[dict[str, Any]]:
        return [{"kind": "FakeUnit", "slot": slot, "revision": spec.revision, "image": spec.image,
                 "model": spec.model_uri, "args": list(spec.vllm_args)}]

    async def apply(self, spec: DeploymentSpec, slot: Slot) -> list[dict[str, Any]]:
        if self.refuse:
            raise RuntimeFailure(self.refuse, retryable=self.refuse_retryable)
        self.applied.append((spec.endpoint_id, slot, spec.revision))
        self.specs.append(spec)
        fault = self.image_faults.get(spec.image)
        unit = Unit(revision=spec.revision, base_url=f"http://fake.test/{spec.endpoint_id}/{slot}/r{spec.revision}/v1")
        if fault:
            unit.phase, unit.reason, unit.base_url = "failed", fault, None
        elif not self.ready_on_apply:
            unit.phase = "progressing"
        self.units[(spec.endpoint_id, slot)] = unit
        return self.render(spec, slot)

    async def status(self, endpoint_id: str, endpoint_name: str, slot: Slot) -> RuntimeStatus:
        unit = self.units.get((endpoint_id, slot))
        if unit is None:
            return RuntimeStatus(phase="absent")
        ready = 1 if unit.phase == "ready" else 0
        return RuntimeStatus(phase=unit.phase, reason=unit.reason, ready_replicas=ready, desired_replicas=1,  # type: ignore[arg-type]
                             base_url=unit.base_url, revision=unit.revision, details={"fake": True})

    async def delete(self, endpoint_id: str, endpoint_name: str, slot: Slot | None = None) -> DeleteReport:
        self.deletes.append((endpoint_id, slot))
        deleted, gone, failed = [], [], {}
        for s in (slot,) if slot else ("stable", "canary"):
            what = f"{endpoint_id}/{s}"
            if what in self.delete_faults:
                failed[what] = "the fake API server said 500"
            elif self.units.pop((endpoint_id, s), None) is not None:
                deleted.append(what)
            else:
                gone.append(what)
        return DeleteReport(deleted=deleted, already_gone=gone, failed=failed)

    async def aclose(self) -> None:
        self.closed = True


@dataclass
class ServingApp:
    app: AdminTestApp
    module: ServingModule
    runtime: Any

    @property
    def client(self) -> Any:
        return self.app.client

    @property
    def reconciler(self) -> Reconciler:
        assert self.module.reconciler is not None
        return self.module.reconciler

    async def reconcile(self) -> PassReport:
        return await self.reconciler.pass_once()


@contextlib.asynccontextmanager
async def serving_app(database_url: str, data_dir: Path, *, runtime: Any = None, env: dict[str, str] | None = None,
                      extra: Sequence[ControlModule] = (), background: bool = False,
                      runtime_factory: RuntimeFactory | None = None) -> AsyncIterator[ServingApp]:
    """Catalog + serving (+ ``extra`` modules) on ``database_url``; the runtime is ``runtime`` (a ``FakeRuntime``
    by default), or what ``runtime_factory`` builds. Without ``background`` no reconciler task runs: tests drive
    passes with ``reconcile()``."""
    runtime = runtime if runtime is not None else FakeRuntime()
    built: list[Any] = []

    def factory(settings: Any, ctx: Any) -> Any:
        built.append(runtime_factory(settings, ctx) if runtime_factory is not None else runtime)
        return built[-1]

    settings = load_serving_settings(env or {})
    module = ServingModule(settings=settings, runtime_factory=factory, background=background)
    cfg = ControlCfg(database_url=database_url, data_dir=str(data_dir), change_feed="local")
    async with admin_test_app(cfg, modules=[CatalogModule(), *extra, module]) as app:
        yield ServingApp(app=app, module=module, runtime=built[0])


async def model(app: ServingApp, name: str, *, kind: str = "base", status: str = "approved",
                provider: dict[str, Any] | None = None) -> dict[str, Any]:
    """A catalog model of ``kind`` (base: a GGUF file; external: ``provider``), taken to ``status``."""
    c = app.client
    body: dict[str, Any] = {"name": name, "type": kind, "ownerTeam": "ml"}
    body.update({"format": "gguf"} if kind == "base" else {"provider": provider or OPENAI})
    created = data(await c.post(f"{CATALOG}/models", json=body), 201)
    url = f"{CATALOG}/models/{created['id']}"
    if kind == "base":
        data(await upload(app.app, f"models/{created['id']}/upload", ("files", f"{name}.gguf", GGUF)), 201)
    if status == "draft":
        return created  # type: ignore[no-any-return]
    data(await c.patch(f"{url}/status", json={"status": "under_review"}))
    data(await c.post(f"{url}/approvals", json={"decision": "approve"}), 201)
    approved = data(await c.patch(f"{url}/status", json={"status": "approved"}))
    for step in {"deprecated": ["deprecated"], "retired": ["deprecated", "retired"]}.get(status, []):
        approved = data(await c.patch(f"{url}/status", json={"status": step}))
    return approved  # type: ignore[no-any-return]


async def endpoint(app: ServingApp, model_id: str, name: str, status: int = 201, **extra: Any) -> dict[str, Any]:
    return data(await app.client.post(API, json={"name": name, "modelId": model_id, **extra}),  # type: ignore[no-any-return]
                status)


async def published(app: ServingApp) -> Any:
    """The ``endpoints`` snapshot as the gateway reads it (``None``: never published)."""
    from adapters.store import read_published

    assert app.app.plane.store is not None
    found, _skipped = await read_published(app.app.plane.store)
    return found.get("endpoints")


def routes_of(snapshot: Any) -> dict[str, list[tuple[str, str, float]]]:
    """route -> [(provider, model, weight)] of a published ``endpoints`` snapshot."""
    return {r.name: [(t.provider, t.model, t.weight) for t in r.targets] for r in snapshot.routes}

"""State fed from the control plane: published snapshots reach every gateway within 1 s, YAML wins,
and a database outage leaves the gateway serving its last snapshots with /readyz reporting staleness."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.adminapi.testing import serve_asgi
from adapters.snapshots import ProviderSpec, RouteSpec, RoutesSnapshot, TargetSpec
from adapters.store import SqlStore, open_store, publish
from gateway.app import create_app
from gateway.config import ConfigError, decode_config
from gateway.control_state import apply_routes
from tests.serve_process import serve, stop, until, wait_ready
from tests.servers import start_postgres

MSG = [{"role": "user", "content": "hi"}]
ADMIN = {"authorization": "Bearer adm-secret"}
POLICIES = "/llm-ops/v1/governance/policies"
RPM = {"limits": {"requestsPerMinute": 5}}


def _routes(*routes: RouteSpec, providers: tuple[ProviderSpec, ...] = ()) -> Any:
    async def build(generation: int, at: datetime) -> RoutesSnapshot:
        return RoutesSnapshot(generation=generation, published_at=at, providers=list(providers), routes=list(routes))
    return build


def _route(name: str, provider: str, model: str = "m") -> RouteSpec:
    return RouteSpec(name=name, targets=[TargetSpec(provider=provider, model=model)], source="test")


def test_yaml_wins_and_unusable_store_entries_are_left_out() -> None:
    cfg = decode_config({"control": {"enabled": False},
                         "providers": [{"name": "p", "kind": "openai", "base_url": "http://127.0.0.1:1"}],
                         "routes": [{"name": "r", "targets": [{"provider": "p", "model": "yaml-model"}]}]})
    snap = RoutesSnapshot(
        generation=1, published_at=datetime.now().astimezone(),
        providers=[ProviderSpec(name="p", kind="openai", base_urls=["http://127.0.0.1:2"]),
                   ProviderSpec(name="q", kind="openai", base_urls=["http://127.0.0.1:3"], api_key_ref="env:Q_KEY"),
                   ProviderSpec(name="s", kind="openai", base_urls=["http://127.0.0.1:4"], api_key_ref="secret:x")],
        routes=[_route("r", "q", "store-model"), _route("new", "q"), _route("on-yaml", "p"), _route("ghost", "s")],
    )
    merged, dropped = apply_routes(cfg, snap, env={"Q_KEY": "k"})
    routes = {r.name: r for r in merged.routes}
    assert routes["r"].targets[0].model == "yaml-model"  # YAML wins for a route of the same name
    assert {p.name: p.urls() for p in merged.providers} == {"p": ["http://127.0.0.1:1"], "q": ["http://127.0.0.1:3"]}
    assert next(p for p in merged.providers if p.name == "q").api_key == "k"
    assert sorted(routes) == ["new", "on-yaml", "r"]
    assert sorted(dropped) == ["provider p", "provider s", "route ghost", "route r"]
    assert apply_routes(cfg, None) == (cfg, {})


def test_control_refresh_is_a_positive_setting() -> None:
    assert decode_config({"control": {"enabled": False}}).server.control_refresh_s == 5.0
    with pytest.raises(ConfigError, match=r"\$\.server\.control_refresh_s"):
        decode_config({"server": {"control_refresh_s": 0}})


async def test_admin_change_and_published_routes_feed_the_generation(database_url: str, tmp_path: Path,
                                                                     mock: Any) -> None:
    os.environ["LLMOPS_ADMIN_KEY"] = "adm-secret"
    cfg = decode_config({"server": {"log_level": "warning", "control_refresh_s": 2.5},
                         "control": {"database_url": database_url, "data_dir": str(tmp_path),
                                     "modules": ["governance"]},
                         "providers": [{"name": "p", "kind": "openai", "base_url": mock.url}],
                         "routes": [{"name": "r", "targets": [{"provider": "p", "model": "m"}]}]})
    try:
        app = create_app(cfg)
        async with serve_asgi(app, lifespan="on") as url, httpx.AsyncClient(base_url=url, timeout=10) as h:
            ready = (await h.get("/readyz")).json()
            assert ready["control"]["generations"] == {"keys": 1, "policies": 1}  # published at start-up (none yet)
            gw = app.state.gateway
            assert gw.control._refresh_interval_s == 2.5  # server.control_refresh_s
            first, pool = gw.generation, gw.generation.providers["p"]
            session = pool._session
            r = await h.post(POLICIES, headers=ADMIN, json={"name": "rpm", "document": RPM})
            assert r.status_code == 201, r.text
            start = time.monotonic()
            while [p.name for p in gw.generation.control.policies.policies] != ["rpm"]:  # typed, on the generation
                assert time.monotonic() - start < 1.0
                await asyncio.sleep(0.01)
            # a policy change swaps only the typed state: same generation, same provider, same pool
            assert gw.generation is first and gw.generation.providers["p"] is pool and pool._session is session
            assert gw.metrics.reloads.labels("ok")._value.get() == 0
            store = app.state.control_plane.store
            async with store.begin() as conn:
                await publish(conn, store.changes, "routes",
                              _routes(_route("store-route", "q"), _route("r", "q"),
                                      providers=(ProviderSpec(name="q", kind="openai", base_urls=[mock.url]),)))
            start = time.monotonic()
            while "store-route" not in [m["id"] for m in (await h.get("/v1/models")).json()["data"]]:
                assert time.monotonic() - start < 1.0
                await asyncio.sleep(0.01)
            r = await h.post("/v1/chat/completions", json={"model": "store-route", "messages": MSG})
            assert r.status_code == 200, r.text
            assert gw.generation.cfg.routes[0].targets[0].provider == "p"  # the YAML's "r" is kept
            # a routes change builds a generation, but the unchanged provider "p" is handed over, still open
            assert gw.generation is not first and gw.generation.providers["p"] is pool
            await asyncio.sleep(0.1)  # the old generation has no requests in flight: it is closed by now
            assert pool._session is session and not session.closed
            r = await h.post("/v1/chat/completions", json={"model": "r", "messages": MSG})
            assert r.status_code == 200, r.text
            ready = (await h.get("/readyz")).json()
            assert ready["control"]["generations"] == {"keys": 1, "policies": 2, "routes": 1}
            assert ready["status"] == "ready" and ready["control"]["staleness_s"] < 5
    finally:
        del os.environ["LLMOPS_ADMIN_KEY"]


def _serve(tmp_path: Path, name: str, database_url: str) -> tuple[subprocess.Popen[bytes], str]:
    return serve(tmp_path, name, {
        "server": {"log_level": "warning"},
        "control": {"database_url": database_url, "data_dir": str(tmp_path / name), "modules": ["governance"]},
        "providers": [{"name": "mock", "kind": "openai", "base_url": "builtin:mock"}],
        "routes": [{"name": "yaml-route", "targets": [{"provider": "mock", "model": "m"}]}],
    }, env={"LLMOPS_ADMIN_KEY": "adm-secret"})


def _models(url: str) -> list[str]:
    return sorted(m["id"] for m in httpx.get(url + "/v1/models", timeout=5).json()["data"])


def test_two_serve_processes_see_changes_within_1s_and_serve_through_an_outage(tmp_path: Path) -> None:
    with start_postgres() as pg:
        database_url = pg.url(pg.create_database())
        a, url_a = _serve(tmp_path, "a", database_url)
        b, url_b = _serve(tmp_path, "b", database_url)
        try:
            wait_ready(url_a, a, within_s=30, poll_s=0.1)
            wait_ready(url_b, b, within_s=30, poll_s=0.1)
            # a policy through the admin API of A is in force on B within 1 s
            before = httpx.get(url_b + "/readyz").json()["control"]["generations"]["policies"]
            r = httpx.post(url_a + POLICIES, headers=ADMIN,
                           json={"name": "rpm", "document": RPM})
            assert r.status_code == 201, r.text
            took = until(lambda: httpx.get(url_b + "/readyz").json()["control"]["generations"]["policies"] > before,
                          1.0)
            print(f"policy seen on the other replica after {took:.3f} s")
            # a routes snapshot (as the catalog would publish it) reaches both within 1 s
            async def publish_routes() -> None:
                store = open_store(database_url, feed_mode="local")
                assert isinstance(store, SqlStore)
                try:
                    async with store.begin() as conn:
                        await publish(conn, store.changes, "routes", _routes(_route("store-route", "mock")))
                finally:
                    await store.aclose()

            asyncio.run(publish_routes())
            took = max(until(lambda u=u: "store-route" in _models(u), 1.0) for u in (url_a, url_b))  # type: ignore[misc]
            print(f"route seen on both replicas after {took:.3f} s")
            pg.stop()
            # the database is down: both still serve, /readyz stays ready and shows the staleness
            for url in (url_a, url_b):
                until(lambda u=url: "error" in httpx.get(u + "/readyz").json()["control"], 15.0)  # type: ignore[misc]
                ready = httpx.get(url + "/readyz")
                assert ready.status_code == 200 and ready.json()["status"] == "ready"
                control = ready.json()["control"]
                assert control["generations"]["routes"] == 1 and control["staleness_s"] > 1
                print(f"{url} during the outage: {control}")
                assert _models(url) == ["store-route", "yaml-route"]
                r = httpx.post(url + "/v1/chat/completions", json={"model": "store-route", "messages": MSG}, timeout=10)
                assert r.status_code == 200, r.text
        finally:
            stop(a, b)

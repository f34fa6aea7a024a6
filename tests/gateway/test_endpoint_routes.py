"""The gateway follows serving endpoints (the ``endpoints`` snapshot): routes appear, their traffic split
moves and they go without a restart, on every replica; a YAML route of the same name wins over an
endpoint's, and an endpoint's over the catalog's."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.adminapi.testing import serve_asgi
from adapters.snapshots import EndpointsSnapshot, ProviderSpec, RouteSpec, RoutesSnapshot, TargetSpec
from adapters.store import publish
from adapters.testdoubles.mock_upstream import MockServer
from gateway.app import create_app
from gateway.config import ConfigError, decode_config
from gateway.control_state import apply_routes

MSG = [{"role": "user", "content": "hi"}]
STABLE, CANARY = "serving:ep_1:stable", "serving:ep_1:canary"


def _endpoints(url_stable: str, url_canary: str, *routes: RouteSpec) -> EndpointsSnapshot:
    return EndpointsSnapshot(
        generation=0, published_at=datetime.now().astimezone(),
        providers=[ProviderSpec(name=STABLE, kind="openai", base_urls=[url_stable], source="endpoint:ep_1"),
                   ProviderSpec(name=CANARY, kind="openai", base_urls=[url_canary], source="endpoint:ep_1")],
        routes=list(routes))


def _split(name: str, stable: float, canary: float, *, queue_timeout_s: float = 0.0) -> RouteSpec:
    targets = [TargetSpec(provider=STABLE, model="served-stable", weight=stable),
               TargetSpec(provider=CANARY, model="served-canary", weight=canary)]
    return RouteSpec(name=name, targets=targets, source="endpoint:ep_1", queue_timeout_s=queue_timeout_s)


def _one(name: str, provider: str, model: str = "m") -> RouteSpec:
    return RouteSpec(name=name, targets=[TargetSpec(provider=provider, model=model)], source="test")


def test_precedence_yaml_then_endpoint_then_catalog() -> None:
    cfg = decode_config({"control": {"enabled": False},
                         "providers": [{"name": "y", "kind": "openai", "base_url": "http://127.0.0.1:1"}],
                         "routes": [{"name": "mine", "targets": [{"provider": "y", "model": "yaml-model"}]}]})
    catalog = RoutesSnapshot(
        generation=1, published_at=datetime.now().astimezone(),
        providers=[ProviderSpec(name="cat", kind="openai", base_urls=["http://127.0.0.1:2"])],
        routes=[_one("shared", "cat", "catalog-model"), _one("catalog-only", "cat")])
    endpoints = _endpoints("http://127.0.0.1:3", "http://127.0.0.1:4", _split("chat", 3, 1, queue_timeout_s=30),
                           _one("shared", STABLE, "endpoint-model"), _one("mine", STABLE),
                           _split("promoting", 0, 1))  # a zero weight: that slot takes no traffic
    merged, dropped = apply_routes(cfg, catalog, endpoints=endpoints)
    routes = {r.name: r for r in merged.routes}
    assert routes["mine"].targets[0].model == "yaml-model"
    assert routes["shared"].targets[0].model == "endpoint-model"
    assert [(t.provider, t.weight) for t in routes["chat"].targets] == [(STABLE, 3), (CANARY, 1)]
    assert routes["chat"].queue_timeout_s == 30 and routes["shared"].queue_timeout_s == 0
    assert [t.provider for t in routes["promoting"].targets] == [CANARY]
    assert sorted(routes) == ["catalog-only", "chat", "mine", "promoting", "shared"]
    assert dropped == {"route mine": "the YAML defines a route of this name (it wins)",
                       "route shared": "a serving endpoint defines a route of this name (it wins)"}
    assert apply_routes(cfg, None, endpoints=None) == (cfg, {})


def test_queue_timeout_is_a_route_setting_between_0_and_600() -> None:
    base = {"control": {"enabled": False},
            "providers": [{"name": "p", "kind": "openai", "base_url": "http://127.0.0.1:1"}]}
    route = {"name": "r", "targets": [{"provider": "p", "model": "m"}]}
    assert decode_config({**base, "routes": [{**route, "queue_timeout_s": 600}]}).routes[0].queue_timeout_s == 600
    for bad in (-1, 600.5):
        with pytest.raises(ConfigError, match=r"\$\.routes\[0\]\.queue_timeout_s: must be between 0 and 600"):
            decode_config({**base, "routes": [{**route, "queue_timeout_s": bad}]})
    over = _split("too-long", 1, 1, queue_timeout_s=601)  # a store route out of bounds is left out, not fatal
    merged, dropped = apply_routes(decode_config(base), None, endpoints=_endpoints("http://h:1", "http://h:2", over))
    assert [r.name for r in merged.routes] == [] and "route too-long" in dropped


@contextlib.asynccontextmanager
async def _gateway(database_url: str, data_dir: Path, upstream: str) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    cfg = decode_config({"server": {"log_level": "warning", "control_refresh_s": 0.5},
                         "control": {"database_url": database_url, "data_dir": str(data_dir), "modules": []},
                         "providers": [{"name": "y", "kind": "openai", "base_url": upstream}],
                         "routes": [{"name": "mine", "targets": [{"provider": "y", "model": "yaml-model"}]}]})
    app = create_app(cfg)
    async with serve_asgi(app, lifespan="on") as url, httpx.AsyncClient(base_url=url, timeout=30) as h:
        yield app, h


async def _until(check: Callable[[], Awaitable[bool]], within_s: float) -> float:
    start = time.monotonic()
    while not await check():
        assert time.monotonic() - start < within_s, f"not within {within_s} s"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def _provider_of(h: httpx.AsyncClient, route: str) -> str:
    r = await h.post("/v1/chat/completions", json={"model": route, "messages": MSG})
    assert r.status_code == 200, r.text
    return r.headers["x-llmops-provider"]


async def _canary_share(h: httpx.AsyncClient, route: str, n: int) -> float:
    seen: Counter[str] = Counter()
    for _ in range(n // 16):  # 16 at a time: the machine is shared, and the pool must not time out
        seen.update(await asyncio.gather(*(_provider_of(h, route) for _ in range(16))))
    assert set(seen) <= {STABLE, CANARY}
    return seen[CANARY] / n


async def test_endpoint_routes_appear_move_and_go_on_every_replica(database_url: str, tmp_path: Path,
                                                                   mock: MockServer, mock2: MockServer) -> None:
    async with _gateway(database_url, tmp_path, mock.url) as (app, a), \
            _gateway(database_url, tmp_path, mock.url) as (app_b, b):
        store = app.state.control_plane.store

        async def publish_endpoints(*routes: RouteSpec) -> None:
            async def build(generation: int, at: datetime) -> EndpointsSnapshot:
                snap = _endpoints(mock.url, mock2.url, *routes)
                return EndpointsSnapshot(generation=generation, published_at=at, providers=snap.providers,
                                         routes=snap.routes)
            async with store.begin() as conn:
                await publish(conn, store.changes, "endpoints", build)

        async def catalog(generation: int, at: datetime) -> RoutesSnapshot:
            return RoutesSnapshot(generation=generation, published_at=at,
                                  providers=[ProviderSpec(name="cat", kind="openai", base_urls=[mock2.url])],
                                  routes=[_one("shared", "cat")])

        async with store.begin() as conn:
            await publish(conn, store.changes, "routes", catalog)
        await publish_endpoints(_split("chat", 3, 1), _one("shared", STABLE), _one("mine", STABLE))

        async def routed(h: httpx.AsyncClient, name: str) -> bool:
            return name in [m["id"] for m in (await h.get("/v1/models")).json()["data"]]

        for h in (a, b):
            took = await _until(lambda h=h: routed(h, "chat"), 5.0)  # type: ignore[misc]
            print(f"endpoint route seen after {took:.3f} s")
        assert await _provider_of(a, "shared") == STABLE  # an endpoint's route wins over the catalog's
        assert await _provider_of(a, "mine") == "y"  # the YAML's wins over both
        share = await _canary_share(a, "chat", 400)
        print(f"canary share at 3:1 = {share:.3f}")
        assert abs(share - 0.25) < 0.09  # ~4 standard deviations of a binomial(400, 0.25)

        await publish_endpoints(_split("chat", 1, 3), _one("shared", STABLE), _one("mine", STABLE))

        async def moved(gw_app: Any) -> bool:
            route = gw_app.state.gateway.generation.table.routes.get("chat")
            return route is not None and [t.weight for t in route.targets] == [1, 3]

        for gw_app in (app, app_b):
            await _until(lambda g=gw_app: moved(g), 5.0)  # type: ignore[misc]
        share = await _canary_share(b, "chat", 400)
        print(f"canary share at 1:3 = {share:.3f}")
        assert abs(share - 0.75) < 0.09

        await publish_endpoints(_one("mine", STABLE))  # the endpoint of "chat" and "shared" was deleted
        for h in (a, b):
            await _until(lambda h=h: _gone(h, "chat"), 5.0)  # type: ignore[misc]
            assert await _provider_of(h, "shared") == "cat"  # the catalog's route is back in force


async def _gone(h: httpx.AsyncClient, name: str) -> bool:
    r = await h.post("/v1/chat/completions", json={"model": name, "messages": MSG})
    if r.status_code != 404:
        return False
    assert r.json()["error"]["code"] == "model_not_found"
    return True

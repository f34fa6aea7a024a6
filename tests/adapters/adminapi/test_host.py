"""Module discovery, start-up checks, gateway admin routes, disabled mode, and database outages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar import post

from adapters.adminapi import (
    ControlCfg,
    Envelope,
    Migration,
    ModuleContext,
    ModuleLoadError,
    Role,
    discover_modules,
    load_control_plane,
    ok,
    requires,
)
from adapters.adminapi.testing import admin_test_app
from adapters.objectstore import LocalObjectStore
from adapters.store import SchemaOutdated, SchemaTooNew, migrate, open_store
from tests.servers import start_postgres

from ._helpers import bearer, make_key
from .conftest import DemoModule


@post("/gateway/reload", status_code=200, opt=requires(Role.operator))
async def reload_config() -> Envelope[dict[str, Any]]:
    return ok({"routes": ["r"]}, "config reloaded")


def test_installed_modules_are_discovered_through_entry_points() -> None:
    assert "governance" in [m.name for m in discover_modules()]
    assert [m.name for m in discover_modules(["governance"])] == ["governance"]
    with pytest.raises(ModuleLoadError, match="not installed"):
        discover_modules(["governance", "nope"])


class _NoRoutes:
    name = "broken"

    def migrations(self) -> list[Migration]:
        return []


class _Reserved(DemoModule):
    name = "admin"


@pytest.mark.parametrize("bad", [_NoRoutes(), _Reserved(), object()])
def test_malformed_modules_fail_at_load(bad: object) -> None:
    with pytest.raises(ModuleLoadError):
        load_control_plane(ControlCfg(), modules=[bad], environ={})  # type: ignore[list-item]


def test_cfg_modules_filters_which_modules_mount() -> None:
    plane = load_control_plane(ControlCfg(modules=["other"]), modules=[DemoModule()], environ={})
    assert plane.modules == []
    assert "demo" not in plane.migration_plan()


async def test_module_lifespan_context_and_shutdown(tmp_path: Path) -> None:
    class Settings(msgspec.Struct, forbid_unknown_fields=True):
        threshold: int

    seen: dict[str, Any] = {}
    demo = DemoModule()
    original = demo.lifespan

    def lifespan(ctx: ModuleContext) -> Any:
        seen["settings"] = ctx.module_settings(Settings)
        seen["object_store"] = ctx.object_store
        return original(ctx)

    demo.lifespan = lifespan  # type: ignore[method-assign]
    cfg = ControlCfg(data_dir=str(tmp_path), module_settings={"demo": {"threshold": 3}})
    async with admin_test_app(cfg, modules=[demo]):
        assert demo.events == ["start:demo"]
    assert demo.events == ["start:demo", "stop"]
    assert seen["settings"] == Settings(threshold=3)
    assert isinstance(seen["object_store"], LocalObjectStore)
    assert seen["object_store"].root == (tmp_path / "objects").resolve()
    assert (tmp_path / "llmops.db").exists()


async def test_start_up_refuses_a_newer_schema(database_url: str, tmp_path: Path) -> None:
    demo = DemoModule()
    store = open_store(database_url, feed_mode="local")
    newer = [*demo.migrations(), Migration(2, "from the future", lambda conn: _noop())]
    await migrate(store, {"demo": newer})
    await store.aclose()
    plane = load_control_plane(ControlCfg(database_url=database_url, data_dir=str(tmp_path)),
                               modules=[demo], environ={})
    with pytest.raises(SchemaTooNew, match="demo"):
        async with plane.lifespan():
            pass
    assert demo.events == []  # no module started on a schema it does not understand


async def _noop() -> None:
    return None


async def test_pending_migrations_without_auto_migrate_refuse_to_start(database_url: str, tmp_path: Path) -> None:
    cfg = ControlCfg(database_url=database_url, data_dir=str(tmp_path), auto_migrate=False)
    plane = load_control_plane(cfg, modules=[DemoModule()], environ={})
    with pytest.raises(SchemaOutdated, match="llmops migrate"):
        async with plane.lifespan():
            pass


async def test_gateway_admin_route_gets_guard_and_envelope(tmp_path: Path) -> None:
    async with admin_test_app(ControlCfg(data_dir=str(tmp_path)), modules=[], admin_routes=[reload_config]) as t:
        url = "/llm-ops/v1/gateway/reload"
        assert (await t.client.post(url, headers={"authorization": ""})).status_code == 401
        _, viewer = await make_key(t, "viewer")
        assert (await t.client.post(url, headers=bearer(viewer))).status_code == 403
        resp = await t.client.post(url)
        assert resp.status_code == 200
        assert resp.json() == {"status": "success", "message": "config reloaded", "data": {"routes": ["r"]}}


async def test_disabled_control_plane_serves_only_gateway_routes_with_the_bootstrap_key(tmp_path: Path) -> None:
    cfg = ControlCfg(enabled=False, data_dir=str(tmp_path / "d"))
    async with admin_test_app(cfg, modules=[DemoModule()], admin_routes=[reload_config]) as t:
        assert t.plane.modules == [] and t.plane.store is None
        assert (await t.client.post("/llm-ops/v1/gateway/reload")).status_code == 200
        assert (await t.client.post("/llm-ops/v1/gateway/reload", headers=bearer("other"))).status_code == 401
        assert (await t.client.get("/llm-ops/v1/admin/keys")).status_code == 404
    assert not (tmp_path / "d").exists()


async def test_postgres_going_away_gives_503_envelopes_then_recovers(tmp_path: Path) -> None:
    with start_postgres() as server:
        cfg = ControlCfg(database_url=server.url(), data_dir=str(tmp_path))
        async with admin_test_app(cfg, modules=[DemoModule()]) as t:
            _, token = await make_key(t, "developer")
            assert (await t.client.post("/llm-ops/v1/demo/things", json={"name": "a"})).status_code == 201
            server.stop()  # fast: clients are cut off (immediate would also drop async-committed data)
            for headers in ({}, bearer(token)):  # bootstrap key, and a stored key that needs the DB to check
                resp = await t.client.get("/llm-ops/v1/demo/things", headers=headers)
                assert resp.status_code == 503, resp.text
                assert resp.json() == {"status": "error", "data": None,
                                       "message": "The control-plane database is unavailable; retry later"}
            resp = await t.client.post("/llm-ops/v1/demo/things", json={"name": "b"})
            assert resp.status_code == 503
            server.start()
            resp = await t.client.get("/llm-ops/v1/demo/things", headers=bearer(token))
            assert resp.status_code == 200
            assert [i["name"] for i in resp.json()["data"]["items"]] == ["a"]  # nothing half-written


async def test_served_over_a_real_socket(tmp_path: Path) -> None:
    async with admin_test_app(ControlCfg(data_dir=str(tmp_path)), modules=[DemoModule()], real_socket=True) as t:
        assert t.url.startswith("http://127.0.0.1:")
        created = await t.client.post("/llm-ops/v1/demo/things", json={"name": "a"})
        assert created.status_code == 201 and created.headers["x-request-id"]
        missing = await t.client.get("/llm-ops/v1/nope")
        assert missing.status_code == 404 and missing.json()["status"] == "fail"

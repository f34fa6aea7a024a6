"""`POST /llm-ops/v1/gateway/reload` works while the control-plane database is down, as SIGHUP does."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.adapters.store._outage import frozen
from tests.conftest import run_gateway, simple_config
from tests.servers import start_postgres

KEY = "reload-bootstrap-key"
ADMIN = {"authorization": f"Bearer {KEY}"}
DEADLINE_S = 1.0


def _config(upstream: str, database_url: str, data_dir: Path, route: str) -> dict[str, Any]:
    cfg = simple_config(upstream)
    cfg["routes"][0]["name"] = route
    cfg["control"] = {"database_url": database_url, "data_dir": str(data_dir), "change_feed": "local",
                      "store": {"timeout_s": DEADLINE_S}}
    return cfg


def _write(path: Path, cfg: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(cfg))


async def _reload(h: httpx.AsyncClient, path: Path, cfg: dict[str, Any], route: str) -> httpx.Response:
    cfg["routes"][0]["name"] = route
    _write(path, cfg)
    start = time.monotonic()
    resp = await h.post("/llm-ops/v1/gateway/reload", headers=ADMIN)
    assert time.monotonic() - start < DEADLINE_S + 4
    return resp


async def test_reload_with_the_bootstrap_key_needs_no_database(
    mock: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("LLMOPS_ADMIN_KEY", KEY)
    path = tmp_path / "gw.yaml"
    with start_postgres() as server:
        cfg = _config(mock.url, server.url(), tmp_path / "data", "one")
        _write(path, cfg)
        async with run_gateway(cfg, config_path=path) as g, httpx.AsyncClient(base_url=g.url, timeout=30) as h:
            resp = await _reload(h, path, cfg, "two")  # database up: reloaded and audited
            assert resp.status_code == 200, resp.text
            audit = await h.get("/llm-ops/v1/audit/logs", params={"action": "gateway.reload"}, headers=ADMIN)
            assert [e["after"]["routes"] for e in audit.json()["data"]["items"]] == [["two"]]

            caplog.set_level(logging.WARNING, logger="llmops.app")
            with frozen(server):  # hung database: the audit write times out, the reload stands
                resp = await _reload(h, path, cfg, "three")
                assert resp.status_code == 200, resp.text
                assert resp.json()["data"]["routes"] == ["three"]
            server.stop(mode="immediate")  # database gone: same
            resp = await _reload(h, path, cfg, "four")
            assert resp.status_code == 200, resp.text
            models = (await h.get("/v1/models")).json()["data"]
            assert [m["id"] for m in models] == ["four"]
            assert (await h.post("/v1/chat/completions", json={
                "model": "four", "messages": [{"role": "user", "content": "hi"}]})).status_code == 200
            warnings = [r.getMessage() for r in caplog.records if "audit entry was not written" in r.getMessage()]
            assert len(warnings) == 2 and all("bootstrap" in w for w in warnings)
            server.start()

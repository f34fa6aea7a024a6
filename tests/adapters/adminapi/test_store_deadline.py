"""A hung database: admin reads and writes answer 503 within ``control.store.timeout_s``, then recover."""

from __future__ import annotations

import time
from pathlib import Path

import msgspec
import pytest

from adapters.adminapi import ControlCfg
from adapters.adminapi.settings import StoreCfg
from adapters.adminapi.testing import admin_test_app
from tests.adapters.adminapi.conftest import DemoModule
from tests.adapters.store._outage import frozen
from tests.servers import start_postgres

API = "/llm-ops/v1"
DEADLINE_S = 1.0


async def test_frozen_postgres_answers_503_within_the_store_deadline(tmp_path: Path) -> None:
    with start_postgres() as server:
        cfg = ControlCfg(database_url=server.url(), data_dir=str(tmp_path), change_feed="local",
                         store=StoreCfg(timeout_s=DEADLINE_S))
        async with admin_test_app(cfg, modules=[DemoModule()]) as t:
            assert (await t.client.post(f"{API}/demo/things", json={"name": "before"})).status_code == 201
            with frozen(server):
                for method, path, body in (("POST", "/demo/things", {"name": "during"}),
                                           ("GET", "/demo/things", None)):
                    start = time.monotonic()
                    resp = await t.client.request(method, f"{API}{path}", json=body)
                    elapsed = time.monotonic() - start
                    assert resp.status_code == 503, resp.text
                    assert resp.json()["status"] == "error"
                    assert elapsed < DEADLINE_S + 4, f"{method} took {elapsed:.1f}s"  # was 62 s for a POST
            resp = await t.client.get(f"{API}/demo/things")
            assert resp.status_code == 200
            assert [item["name"] for item in resp.json()["data"]["items"]] == ["before"]


def test_store_settings_are_validated() -> None:
    assert ControlCfg().store.timeout_s == 5.0
    with pytest.raises(msgspec.ValidationError, match="timeout_s"):
        msgspec.convert({"store": {"timeout_s": 0}}, ControlCfg)

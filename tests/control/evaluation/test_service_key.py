"""The worker's data-plane key: minted only when the gateway wants one, audited, used, revoked at shutdown."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from adapters.dataplane import gateway_keys, usage_records
from adapters.testdoubles.mock_upstream import MockServer
from control.evaluation.credential import KEY_NAME
from tests.conftest import run_gateway
from tests.control.evaluation.support import (
    API,
    FakeCatalog,
    finished,
    gateway,
    gateway_config,
    plane,
    qa_rows,
    run_body,
    settings,
)


async def _keys(app: Any) -> list[Any]:
    async with app.plane.store.read() as conn:
        return list((await conn.execute(select(gateway_keys).where(gateway_keys.c.name == KEY_NAME))).all())


async def test_a_keyed_gateway_gets_a_service_key_on_its_first_401(database_url: str, tmp_path: Path,
                                                                   mock: MockServer) -> None:
    catalog = FakeCatalog()
    catalog.datasets.add("ds", qa_rows(4))
    cfg = {**gateway_config(database_url, tmp_path, mock), "plugins": [{"name": "auth",
                                                                        "settings": {"required": "always"}}]}
    async with run_gateway(cfg) as gw:
        async with plane(database_url, tmp_path, catalog, settings(gw.url)) as (app, _module):
            assert await _keys(app) == []  # nothing minted at start-up
            run = (await app.client.post(f"{API}/runs", json=run_body())).json()["data"]
            done = await finished(app, run["id"])
            minted = await _keys(app)
            async with app.plane.store.read() as conn:  # type: ignore[union-attr]
                used = set((await conn.execute(select(usage_records.c.key_id).where(
                    usage_records.c.request_id.like(f"{run['id']}.%"), usage_records.c.status == 200))).scalars())
            audit = (await app.client.get("/llm-ops/v1/audit/logs?action=evaluation.service_key.*")).json()["data"]
            assert "llmops_" not in str(done) and "llmops_" not in str(audit)  # the secret is nowhere
        revoked = await _revoked(database_url, tmp_path, catalog)
    assert done["status"] == "succeeded" and done["progress"]["failed"] == 0
    assert len(minted) == 1
    key = minted[0]
    assert key.roles == ["inference"] and key.team_id == "team_default" and key.expires_at is not None
    assert used == {key.id}  # every answered call carried it
    assert [e["action"] for e in audit["items"]] == ["evaluation.service_key.create"]
    assert revoked == [(key.id, "system:evaluation")]  # the module stopped: its key went with it


async def _revoked(database_url: str, tmp_path: Path, catalog: FakeCatalog) -> list[tuple[str, str]]:
    async with plane(database_url, tmp_path, catalog, {"worker": False}) as (app, _module):
        return [(k.id, k.revoked_by) for k in await _keys(app) if k.revoked_at is not None]


async def test_an_open_gateway_gets_no_key(database_url: str, tmp_path: Path, mock: MockServer) -> None:
    """Minting an inference key would switch a gateway in auth ``auto`` to keyed: not the module's call."""
    catalog = FakeCatalog()
    catalog.datasets.add("ds", qa_rows(2))
    async with gateway(database_url, tmp_path, mock) as gw, \
            plane(database_url, tmp_path, catalog, settings(gw.url)) as (app, _module):
        run = (await app.client.post(f"{API}/runs", json=run_body())).json()["data"]
        assert (await finished(app, run["id"]))["status"] == "succeeded"
        assert await _keys(app) == []


async def test_a_gateway_that_already_wants_keys_gets_one_before_the_first_call(database_url: str, tmp_path: Path,
                                                                                mock: MockServer) -> None:
    catalog = FakeCatalog()
    catalog.datasets.add("ds", qa_rows(2))
    async with gateway(database_url, tmp_path, mock) as gw, \
            plane(database_url, tmp_path, catalog, settings(gw.url)) as (app, _module):
        made = await app.client.post("/llm-ops/v1/admin/keys", json={"name": "app", "role": "inference"})
        assert made.status_code == 201, made.text  # the gateway (auth auto) now wants keys
        run = (await app.client.post(f"{API}/runs", json=run_body())).json()["data"]
        done = await finished(app, run["id"])
        async with app.plane.store.read() as conn:  # type: ignore[union-attr]
            first_call = (await conn.execute(select(usage_records.c.ts).where(
                usage_records.c.request_id.like(f"{run['id']}.%")).order_by(usage_records.c.ts).limit(1))).scalar_one()
        minted = await _keys(app)
    # minted before the first call (that call may still meet a 401 until the gateway's next keys refresh)
    assert done["status"] == "succeeded" and len(minted) == 1 and minted[0].created_at <= first_call

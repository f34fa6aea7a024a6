"""The app runs the usage writer when the control plane has a store: every inference response's record
reaches it (probes, scrapes and admin calls do not), with its record id minted before any other consumer
sees the batch; metering off writes nothing."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from adapters.dataplane import usage_records, usage_rollups
from adapters.store import open_store
from adapters.testdoubles.mock_upstream import MockServer
from tests.conftest import capture_usage, run_gateway, simple_config

MSG = [{"role": "user", "content": "hi"}]


def _config(mock: MockServer, tmp_path: Path, database_url: str, *, metering: bool = True) -> dict:
    cfg = simple_config(mock.url)
    cfg["control"] = {"database_url": database_url, "data_dir": str(tmp_path / "control"), "modules": []}
    cfg["metering"] = {"enabled": metering, "spill_dir": str(tmp_path / "spill")}
    return cfg


async def _rows(database_url: str) -> tuple[list[tuple[str, str, int]], int]:
    store = open_store(database_url, feed_mode="local")
    try:
        async with store.read() as conn:
            rows = (await conn.execute(select(usage_records.c.request_id, usage_records.c.record_id,
                                              usage_records.c.prompt_tokens))).all()
            rolled = (await conn.execute(select(usage_rollups.c.requests))).scalars().all()
    finally:
        await store.aclose()
    return [tuple(r) for r in rows], sum(rolled)


async def test_every_response_is_written_to_the_store(mock: MockServer, tmp_path: Path, database_url: str) -> None:
    async with run_gateway(_config(mock, tmp_path, database_url)) as g:
        seen = capture_usage(g.gateway)  # a consumer after the writer
        async with httpx.AsyncClient(base_url=g.url) as h:
            for i in range(3):
                r = await h.post("/v1/chat/completions", json={"model": "r", "messages": MSG},
                                 headers={"x-request-id": f"chat-{i}"})
                assert r.status_code == 200, r.text
            assert (await h.post("/v1/chat/completions", json={"model": "nope", "messages": MSG},
                                 headers={"x-request-id": "unknown-route"})).status_code == 404
            # not inference: counted in llmops_requests_total and logged, never stored as usage
            for i, path in enumerate(("/metrics", "/readyz", "/v1/models", "/llm-ops/v1/audit-logs", "/nowhere")):
                await h.get(path, headers={"x-request-id": f"http-{i}"})
        await g.gateway.usage.drain()
        assert {rec.request_id for rec in seen if rec.request_id.startswith("http-")}  # they were recorded
        assert all(len(rec.record_id) == 32 for rec in seen if rec.endpoint != "http")
    # the app has stopped: its writer flushed on the way out
    rows, rolled = await _rows(database_url)
    by_request = {rid: (rec, tokens) for rid, rec, tokens in rows}
    assert by_request.keys() == {f"chat-{i}" for i in range(3)} | {"unknown-route"}
    assert {rec.request_id: rec.record_id for rec in seen if rec.request_id.startswith("chat-")} == \
        {f"chat-{i}": by_request[f"chat-{i}"][0] for i in range(3)}
    assert all(by_request[f"chat-{i}"][1] > 0 for i in range(3))
    assert rolled == len(rows)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_metering_off_writes_nothing(mock: MockServer, tmp_path: Path, database_url: str) -> None:
    async with run_gateway(_config(mock, tmp_path, database_url, metering=False)) as g, \
            httpx.AsyncClient(base_url=g.url) as h:
        assert (await h.post("/v1/chat/completions", json={"model": "r", "messages": MSG})).status_code == 200
        await g.gateway.usage.drain()
    assert await _rows(database_url) == ([], 0)
    assert not (tmp_path / "spill").exists()

"""A run in progress when its `llmops serve` is killed (SIGKILL) finishes after a restart, every item exactly once.

Real processes: `llmops serve` (gateway, control plane and evaluation worker in one process) on SQLite or
PostgreSQL, routing ``demo`` to a mock upstream (a test double) that runs apart, slowed to 0.2 s an answer so
the run is caught mid-way, and that records every request it gets. The dataset comes from the catalog. The
process is killed without warning once a quarter of the items are stored: its in-flight calls are lost, its
lease is not handed back, its usage writer's queue dies with it. A second process on the same database takes
the run over once the lease has lapsed (``lease_s`` 2 s here) and finishes it.

What "lost nothing, counted nothing twice" means, checked on the upstream's own log and the database:
every row has exactly one item; the rows stored before the kill were never asked again; the rows asked twice
were at most the ``concurrency`` in flight at the kill; the usage records hold each request at most once,
with at most those in-flight ones beyond the items, and every item answered after the restart has its record.
(R's tests/control/evaluation/test_resume.py stops a plane in-process; this one kills the process.)
"""

from __future__ import annotations

import asyncio
import collections
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from loadtests.eval_bench import data, start_run, upload_dataset, wait_run
from loadtests.procs import free_port, start_process, stop_process, wait_for_port
from tests.serve_process import serve, stop, until, wait_ready

pytestmark = pytest.mark.timeout(240)

ADMIN_KEY = "restart-admin-key-not-a-secret"
ROWS = 100
CONCURRENCY = 4


def _query(database_url: str, sql: str, **params: Any) -> list[Any]:
    async def go() -> list[Any]:
        engine = create_async_engine(database_url)
        try:
            async with engine.connect() as conn:
                return list((await conn.execute(text(sql), params)).all())
        finally:
            await engine.dispose()

    return asyncio.run(go())


def _config(database_url: str, data_dir: Path, mock_url: str) -> dict[str, Any]:
    return {
        "server": {"log_level": "warning", "control_refresh_s": 0.2},
        "control": {"database_url": database_url, "data_dir": str(data_dir),
                    "module_settings": {"evaluation": {"lease_s": 2, "poll_s": 0.2, "progress_s": 0.2,
                                                       "usage_wait_s": 5}}},
        "metering": {"flush_interval_s": 0.05},
        "pricing": {"use_litellm_map": False,
                    "models": [{"model": "mock-model", "input_per_mtok": "1000", "output_per_mtok": "2000"}]},
        "providers": [{"name": "mock", "kind": "openai", "base_url": mock_url}],
        "routes": [{"name": "demo", "targets": [{"provider": "mock", "model": "mock-model"}], "retries": 0}],
    }


@pytest.fixture
def slow_mock(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    proc = start_process([sys.executable, "-m", "gateway.cli", "mock-upstream", "--port", str(port), "--faults",
                          "--latency-s", "0.2"], log=tmp_path / "mock.log", cwd=tmp_path)
    try:
        wait_for_port(port, proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)


def _admin(url: str) -> httpx.Client:
    return httpx.Client(base_url=url + "/llm-ops/v1", timeout=30, headers={"authorization": f"Bearer {ADMIN_KEY}"})


def _row_of(request_id: str) -> int:
    """``<run>.<target>.<row>.<random>``, the worker's request ids (control/evaluation/gateway_client.py)."""
    found = re.fullmatch(r"run_[0-9a-f]+\.0\.(\d+)\.[0-9a-f]+", request_id)
    assert found, request_id
    return int(found.group(1))


def test_a_run_survives_sigkill_of_its_server_with_every_item_once(
        tmp_path: Path, database_url: str, slow_mock: str) -> None:
    config = _config(database_url, tmp_path / "data", slow_mock + "/v1")
    env = {"LLMOPS_ADMIN_KEY": ADMIN_KEY}
    first, url = serve(tmp_path, "first", config, env)
    second: subprocess.Popen[bytes] | None = None
    try:
        wait_ready(url, first, within_s=90)
        rows = [{"input": f"row {i}: say something", "reference": "mock token reply"} for i in range(ROWS)]
        with _admin(url) as admin:
            dataset = upload_dataset(admin, "restart", rows)
            run_id = start_run(admin, {"name": "killed", "targets": [{"kind": "route", "id": "demo"}],
                                       "dataset": {"datasetId": dataset}, "concurrency": CONCURRENCY,
                                       "mapping": {"input": "input", "reference": "reference"},
                                       "metrics": ["exact_match", "token_f1"], "params": {"max_tokens": 3}})
            until(lambda: data(admin.get(f"/evaluation/runs/{run_id}"))["progress"]["done"] >= ROWS // 4, 60)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        assert first.stderr is not None
        first.stderr.close()
        stored_before = {int(i) for (i,) in _query(database_url, "select idx from eval_items where run_id = :r",
                                                    r=run_id)}
        assert ROWS // 4 <= len(stored_before) < ROWS  # killed mid-run

        second, url = serve(tmp_path, "second", config, env)
        wait_ready(url, second, within_s=90)
        with _admin(url) as admin:
            run = wait_run(admin, run_id, within_s=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        if second is not None:
            stop(second)

    assert run["status"] == "succeeded", run["error"]
    assert run["progress"] == {"done": ROWS, "failed": 0, "total": ROWS}
    events = collections.Counter(e["event"] for e in run["timeline"])
    assert (events["started"], events["resumed"], events["finished"]) == (1, 1, 1), run["timeline"]
    resumed = next(e for e in run["timeline"] if e["event"] == "resumed")
    assert resumed["detail"]["done"] == len(stored_before)  # it went on from exactly what was stored

    # Every row exactly once in the items, each with its own request id and (after the restart) its cost.
    stored = _query(database_url, "select idx, request_id, cost_usd, created_at from eval_items "
                                  "where run_id = :r order by idx", r=run_id)
    assert [int(r[0]) for r in stored] == list(range(ROWS))
    item_requests = {str(r[1]): int(r[0]) for r in stored}
    assert len(item_requests) == ROWS

    # The upstream's log: rows stored before the kill never asked again; at most the in-flight ones twice.
    log = httpx.get(slow_mock + "/_mock/requests").json()
    asked = collections.Counter(int(r["body"]["messages"][0]["content"].split(":")[0].removeprefix("row "))
                                for r in log if r["path"] == "/v1/chat/completions")
    assert set(asked) == set(range(ROWS))
    twice = {i for i, n in asked.items() if n > 1}
    assert max(asked.values()) <= 2 and len(twice) <= CONCURRENCY, asked
    assert not twice & stored_before

    # Usage: each request recorded at most once; beyond the items only in-flight requests of rows asked
    # twice; every item answered after the restart recorded and priced.
    records = _query(database_url, "select request_id, cost_usd from usage_records where request_id like :p",
                     p=f"{run_id}.%")
    ids = [str(r[0]) for r in records]
    assert len(ids) == len(set(ids)) <= ROWS + CONCURRENCY
    orphans = set(ids) - set(item_requests)
    assert {_row_of(i) for i in orphans} <= twice, orphans
    after_restart = {rid for rid, idx in item_requests.items() if idx not in stored_before}
    assert after_restart <= set(ids)
    unrecorded = set(item_requests) - set(ids)  # answered just before the kill, record lost in its queue
    assert {item_requests[i] for i in unrecorded} <= stored_before
    nanos = {str(r[0]): r[1] for r in records}  # UsdAmount columns hold whole nano-dollars
    item_nanos = {str(r[1]): r[2] for r in stored}
    assert all(item_nanos[rid] == nanos[rid] is not None for rid in after_restart)
    assert Decimal(str(run["costUsd"])) * 10**9 == sum(int(c) for c in item_nanos.values() if c is not None)

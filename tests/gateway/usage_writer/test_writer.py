"""gateway/usage_writer/writer.py: batches into the store exactly once, spill while it is down or slow,
replay without double counting, bounded memory and disk, and a flush at shutdown."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from adapters.store import SqlStore, open_store
from adapters.usage_store import row_from_record, write_usage
from gateway.config import MeteringCfg
from gateway.metrics import GatewayMetrics
from gateway.usage_writer import SpillDir, UsageWriter
from tests.gateway.usage_writer.conftest import open_migrated, record, rollup_requests, stored, until
from tests.servers import free_port, start_postgres

FAST = {"flush_interval_s": 0.05, "write_timeout_s": 2.0}


def writer(tmp_path: Path, metrics: GatewayMetrics | None = None, **cfg: Any) -> UsageWriter:
    return UsageWriter(MeteringCfg(**{**FAST, **cfg}), tmp_path / "spill", metrics or GatewayMetrics(),
                       probe_interval_s=0.05)


def _registry_value(w: UsageWriter, name: str) -> float:
    for metric in (w.metrics.written, w.metrics.spilled, w.metrics.replayed, w.metrics.dropped, w.metrics.buffer,
                   w.metrics.lag, w.metrics.spill_bytes):
        for family in metric.collect():
            for s in family.samples:
                if s.name == name:
                    return float(s.value)
    raise KeyError(name)


def spill_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "spill").glob("*.jsonl"))


async def test_batches_reach_the_store_once_with_ids_and_rollups(store: SqlStore, tmp_path: Path) -> None:
    w = writer(tmp_path, batch_size=100)
    await w.start(store)
    try:
        recs = [record(i) for i in range(450)]
        for i in range(0, 450, 150):  # the usage queue hands over batches of any size
            await w.consume(recs[i:i + 150])
        assert all(len(r.record_id) == 32 for r in recs)  # minted off the request path, once
        await until(lambda: _registry_value(w, "llmops_usage_records_written_total") == 450, 10, "450 written")
        assert w.healthy and _registry_value(w, "llmops_usage_records_spilled_total") == 0
    finally:
        await w.aclose()
    assert await stored(store) == {f"req-{i}": 1 for i in range(450)}
    assert await rollup_requests(store) == 450
    assert spill_files(tmp_path) == []


async def test_shutdown_flushes_what_is_buffered(store: SqlStore, tmp_path: Path) -> None:
    w = writer(tmp_path, flush_interval_s=3600.0, batch_size=1000)  # nothing would flush on its own
    await w.start(store)
    await w.consume([record(i) for i in range(10)])
    assert await stored(store) == {}
    await w.aclose()
    assert len(await stored(store)) == 10


async def test_a_replay_killed_before_removing_its_file_counts_nothing_twice(
        store: SqlStore, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    recs = [record(i) for i in range(30)]
    for r in recs:
        r.record_id = f"{r.request_id:0>32}"
    rows = [row_from_record(r) for r in recs]
    # a process spilled 30 rows and replayed the first 20; it was killed before deleting the file,
    # and mid-way through writing one more line
    dead = SpillDir(tmp_path / "spill", 1 << 20)
    dead.open()
    dead.append(rows, now=1.0)
    assert await write_usage(store, rows[:20]) == 20
    (path,) = spill_files(tmp_path)
    with path.open("ab") as fh:
        fh.write(msgspec.json.encode(rows[0])[:40])
    dead.close()  # its lock goes with it, as with a killed process
    before = await rollup_requests(store)
    w = writer(tmp_path, batch_size=8)
    caplog.set_level(logging.INFO, "llmops.metering")
    await w.start(store)
    try:
        await until(lambda: not spill_files(tmp_path), 10, "the dead process's file replayed and removed")
    finally:
        await w.aclose()
    assert await stored(store) == {f"req-{i}": 1 for i in range(30)}
    assert (before, await rollup_requests(store)) == (20, 30)
    assert _registry_value(w, "llmops_usage_records_replayed_total") == 30  # 20 of them found already stored
    assert _registry_value(w, "llmops_usage_records_dropped_total") == 1  # the torn line
    assert "skipped 1 unreadable line" in caplog.text and "claimed spill file" in caplog.text


async def test_a_shutdown_during_the_removal_of_a_replayed_file_leaves_no_lag(
        store: SqlStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Once every row of a spill file is stored, the writer owes nothing for it: a shutdown that cancels
    # the (threaded) removal of the file must not leave its age in the lag gauge.
    dead = SpillDir(tmp_path / "spill", 1 << 20)
    dead.open()
    recs = [record(i) for i in range(30)]
    for r in recs:
        r.record_id = f"{r.request_id:0>32}"
    dead.append([row_from_record(r) for r in recs], now=time.time() - 60)
    dead.close()
    w = writer(tmp_path, batch_size=8)
    removing, release = threading.Event(), threading.Event()
    real_remove = w.spill.remove

    def slow_remove(f: Any) -> None:
        removing.set()
        release.wait(10)
        real_remove(f)

    monkeypatch.setattr(w.spill, "remove", slow_remove)
    await w.start(store)
    try:
        await until(removing.is_set, 10, "the file replayed, its removal under way")
        await w.aclose()  # cancels the replay task while the removal thread waits
    finally:
        release.set()
    assert len(await stored(store)) == 30
    assert _registry_value(w, "llmops_usage_writer_lag_seconds") == 0


async def test_store_down_spills_then_replays_exactly_once(tmp_path: Path) -> None:
    with start_postgres() as pg:
        url = pg.url(pg.create_database())
        store = await open_migrated(url, timeout_s=2.0)
        w = writer(tmp_path, batch_size=50)
        await w.start(store)
        try:
            await w.consume([record(i) for i in range(100)])
            await until(lambda: _registry_value(w, "llmops_usage_records_written_total") == 100, 10, "first 100")
            pg.stop()
            await w.consume([record(i) for i in range(100, 300)])
            await until(lambda: _registry_value(w, "llmops_usage_records_spilled_total") == 200, 15, "200 spilled")
            assert not w.healthy and spill_files(tmp_path)
            await w.consume([record(i) for i in range(300, 310)])  # straight to the spill while it is down
            await until(lambda: _registry_value(w, "llmops_usage_records_spilled_total") == 210, 5, "210 spilled")
            await until(lambda: _registry_value(w, "llmops_usage_spill_bytes") > 0, 5, "the spill size gauge")
            assert _registry_value(w, "llmops_usage_writer_lag_seconds") > 0
            pg.start()
            await until(lambda: w.healthy and not spill_files(tmp_path), 20, "replayed after the restart")
            await w.consume([record(i) for i in range(310, 320)])
        finally:
            await w.aclose()
        try:
            assert await stored(store) == {f"req-{i}": 1 for i in range(320)}
            assert await rollup_requests(store) == 320
            assert _registry_value(w, "llmops_usage_records_replayed_total") >= 210
            assert _registry_value(w, "llmops_usage_writer_lag_seconds") == 0
        finally:
            await store.aclose()


async def test_a_slow_store_spills_after_the_write_timeout(tmp_path: Path) -> None:
    path = tmp_path / "llmops.db"
    store = await open_migrated(f"sqlite+aiosqlite:///{path}", timeout_s=1.0)
    blocker = sqlite3.connect(path, isolation_level=None)
    w = writer(tmp_path, write_timeout_s=0.3)
    await w.start(store)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the database's write lock
        await w.consume([record(i) for i in range(5)])
        await until(lambda: _registry_value(w, "llmops_usage_records_spilled_total") == 5, 10, "spilled on timeout")
        # (not `w.healthy`: its probe is a read, which SQLite's WAL answers while the write lock is held, so
        # the writer may already be retrying here; it writes nothing until the lock is free)
        assert _registry_value(w, "llmops_usage_records_written_total") == 0
        blocker.execute("ROLLBACK")
        await until(lambda: w.healthy and not spill_files(tmp_path), 10, "replayed once the lock is free")
    finally:
        blocker.close()
        await w.aclose()
        try:
            assert len(await stored(store)) == 5
        finally:
            await store.aclose()


async def test_bounds_hit_drop_with_the_metric_and_a_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    down = open_store(f"postgresql://postgres@127.0.0.1:{free_port()}/none", timeout_s=0.5, feed_mode="local")
    def rec(i: int) -> Any:  # lines of one length: 3-digit request ids, one timestamp
        return record(i, ts=1_767_225_600.5)

    line = len(msgspec.json.encode(row_from_record(_with_id(rec(100))))) + 1
    w = writer(tmp_path, buffer_max_records=20, batch_size=10, spill_max_bytes=25 * line,
               flush_interval_s=3600.0)
    caplog.set_level(logging.ERROR, "llmops.metering")
    await w.start(down)
    try:
        await w.consume([rec(i) for i in range(100, 115)])
        await w.consume([rec(i) for i in range(115, 130)])  # 30 > 20: the buffer goes to the spill file
        assert w._count == 0  # nothing waits in memory beyond the bound
        await until(lambda: _registry_value(w, "llmops_usage_records_spilled_total") == 25, 5, "25 fit the spill")
        assert _registry_value(w, "llmops_usage_records_dropped_total") == 5
        await w.consume([rec(i) for i in range(130, 140)])
        w._wake.set()  # a flush pass: the store is down, the spill is full
        await until(lambda: _registry_value(w, "llmops_usage_records_dropped_total") == 15, 5, "10 more dropped")
    finally:
        await w.aclose()
        await down.aclose()
    assert "dropped 5 usage record(s): the spill directory is full" in caplog.text
    assert caplog.text.count("dropped") == 2  # the second drop waits for the next log window (or shutdown)


def _with_id(r: Any) -> Any:
    r.record_id = "x" * 32
    return r


async def test_a_row_the_store_refuses_is_dropped_not_retried_forever(tmp_path: Path) -> None:
    with start_postgres() as pg:
        store = await open_migrated(pg.url(pg.create_database()))
        w = writer(tmp_path, batch_size=10)
        await w.start(store)
        try:
            recs = [record(i) for i in range(10)]
            recs[7].prompt_tokens = 2**40  # an upstream's absurd count: outside PostgreSQL's integer
            await w.consume(recs)
            await until(lambda: _registry_value(w, "llmops_usage_records_written_total") == 10, 10, "the batch")
            assert w.healthy and _registry_value(w, "llmops_usage_records_dropped_total") == 1
            assert spill_files(tmp_path) == []
            assert set(await stored(store)) == {f"req-{i}" for i in range(10)} - {"req-7"}
        finally:
            await w.aclose()
            await store.aclose()


async def test_a_malformed_record_is_dropped_not_its_batch(store: SqlStore, tmp_path: Path) -> None:
    w = writer(tmp_path, batch_size=10)
    await w.start(store)
    try:
        recs = [record(i) for i in range(5)]
        recs[2].variant = 123  # type: ignore[assignment]  # a plug-in that set ctx.variant to a number
        await w.consume(recs)
        await until(lambda: _registry_value(w, "llmops_usage_records_written_total") == 4, 10, "the other four")
        assert _registry_value(w, "llmops_usage_records_dropped_total") == 1 and w.healthy
    finally:
        await w.aclose()
    assert set(await stored(store)) == {"req-0", "req-1", "req-3", "req-4"}

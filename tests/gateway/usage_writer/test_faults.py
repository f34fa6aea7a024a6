"""Fault tests through a real `llmops serve`: PostgreSQL stopped for 30 s under load at c=16, and SIGTERM
mid-load (`--workers 2`; one process while the database is down). Every request the client got an answer to
has its usage record in the store exactly once (matched by the unique `x-request-id` each request sends), and
the rollups sum to the records."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
import yaml

from tests.servers import PostgresServer, free_port, start_postgres

CONCURRENCY = 16
OUTAGE_S = 30.0
BODY = {"model": "r", "messages": [{"role": "user", "content": "hi"}]}


def gateway_config(tmp_path: Path, database_url: str) -> dict[str, Any]:
    return {
        "server": {"log_level": "warning"},
        "control": {"database_url": database_url, "data_dir": str(tmp_path / "control"), "modules": [],
                    "store": {"timeout_s": 2.0}},
        "metering": {"spill_dir": str(tmp_path / "spill"), "write_timeout_s": 1.0},
        "providers": [{"name": "mock", "kind": "openai", "base_url": "builtin:mock"}],
        "routes": [{"name": "r", "targets": [{"provider": "mock", "model": "m"}]}],
    }


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    base: str
    log: Path

    def stop(self, timeout_s: float = 60) -> None:
        """SIGTERM, then a clean exit: status 0 (or uvicorn's re-raised SIGTERM) and no traceback."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        text = self.log.read_text()
        assert self.proc.returncode in (0, -signal.SIGTERM), text[-3000:]
        assert "Traceback" not in text, text[-3000:]


@contextlib.contextmanager
def serve(tmp_path: Path, cfg: dict[str, Any], name: str, workers: int = 1) -> Iterator[Served]:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    port = free_port()
    log = tmp_path / f"{name}.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--config", str(path), "--port", str(port),
             "--workers", str(workers)],
            stdout=subprocess.DEVNULL, stderr=err, cwd=tmp_path)
    served = Served(proc, f"http://127.0.0.1:{port}", log)
    try:
        _until(lambda: _ready(served), 45, f"{name} to answer /readyz")
        yield served
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _ready(s: Served) -> bool:
    assert s.proc.poll() is None, s.log.read_text()[-3000:]
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(s.base + "/readyz", timeout=1).status_code == 200
    return False


def _until(check: Callable[[], bool], within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@dataclass
class Load:
    """CONCURRENCY clients in a thread of their own, each request with a fresh x-request-id."""

    base: str
    answered: list[str] = field(default_factory=list)  # ids of requests that got a whole response
    failed: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Load:
        self._thread = threading.Thread(target=asyncio.run, args=(self._run(),), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=30)

    def wait_for(self, n: int, within_s: float = 30) -> None:
        _until(lambda: len(self.answered) >= n, within_s, f"{n} answered requests")

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY), timeout=timeout) as s:
            await asyncio.gather(*(self._client(s) for _ in range(CONCURRENCY)))

    async def _client(self, session: aiohttp.ClientSession) -> None:
        url = self.base + "/v1/chat/completions"
        while not self._stop.is_set():
            rid = uuid.uuid4().hex
            try:
                async with session.post(url, json=BODY, headers={"x-request-id": rid}) as r:
                    await r.read()
                self.answered.append(rid)  # any status: every response has a usage record
            except (TimeoutError, aiohttp.ClientError):
                self.failed += 1  # e.g. the gateway shutting down: no answer, nothing to account for
                await asyncio.sleep(0.05)


def stored_counts(pg: PostgresServer, database: str) -> dict[str, int]:
    out = pg.psql("SELECT request_id, count(*) FROM usage_records GROUP BY request_id", database=database)
    return {rid: int(n) for rid, n in (line.split("|") for line in out.splitlines() if line)}


def assert_every_answer_stored_once(pg: PostgresServer, database: str, answered: list[str],
                                    within_s: float = 30) -> None:
    want = set(answered)
    assert len(want) == len(answered)
    counts: dict[str, int] = {}

    def all_there() -> bool:
        nonlocal counts
        counts = stored_counts(pg, database)
        return want <= counts.keys()

    _until(all_there, within_s, "every answered request's record in the store")
    assert {rid: n for rid, n in counts.items() if n != 1} == {}
    total = int(pg.psql("SELECT count(*) FROM usage_records", database=database))
    rolled = int(pg.psql("SELECT coalesce(sum(requests), 0) FROM usage_rollups", database=database))
    assert rolled == total  # no record counted twice in the rollups either
    print(f"{len(want)} answered, {total} stored, rollups {rolled}")


def spill_files(tmp_path: Path) -> list[Path]:
    return list((tmp_path / "spill").glob("*.jsonl"))


@pytest.mark.timeout(150)
def test_postgres_stopped_30s_under_load_loses_and_doubles_nothing(tmp_path: Path) -> None:
    with start_postgres() as pg:
        database = pg.create_database()
        with serve(tmp_path, gateway_config(tmp_path, pg.url(database)), "gw") as gw:
            with Load(gw.base) as load:
                load.wait_for(200)
                pg.stop()
                stopped_at, during = time.monotonic(), len(load.answered)
                _until(lambda: bool(spill_files(tmp_path)), 10, "records spilled while the database is down")
                time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped_at)))
                during = len(load.answered) - during
                pg.start()
                load.wait_for(len(load.answered) + 200)
            assert during > 500, "the gateway kept serving through the outage"
            assert_every_answer_stored_once(pg, database, load.answered)
            _until(lambda: not spill_files(tmp_path), 10, "spill files replayed and removed")
            gw.stop()
        print(f"{during} requests answered during the {OUTAGE_S:.0f} s outage; {load.failed} client errors")


@pytest.mark.timeout(150)
def test_sigterm_mid_load_keeps_every_answered_record(tmp_path: Path) -> None:
    """`--workers 2`: the supervisor forwards SIGTERM, each worker flushes its own buffer. (One process, and
    a SIGTERM while the database is down, are the next test's.)"""
    workers = 2
    with start_postgres() as pg:
        database = pg.create_database()
        cfg = gateway_config(tmp_path, pg.url(database))
        with serve(tmp_path, cfg, "first", workers) as gw, Load(gw.base) as load:
            load.wait_for(300)
            gw.stop()  # mid-load: in-flight requests finish, the buffer is flushed before exit
        assert load.failed > 0, "the load was still running when the gateway stopped"
        assert_every_answer_stored_once(pg, database, load.answered, within_s=1)  # no restart needed
        with serve(tmp_path, cfg, "again", workers) as gw:
            gw.stop()
        assert_every_answer_stored_once(pg, database, load.answered, within_s=1)


@pytest.mark.timeout(150)
def test_sigterm_while_the_database_is_down_spills_and_the_restart_replays(tmp_path: Path) -> None:
    with start_postgres() as pg:
        database = pg.create_database()
        cfg = gateway_config(tmp_path, pg.url(database))
        with serve(tmp_path, cfg, "first") as gw, Load(gw.base) as load:
            load.wait_for(200)
            pg.stop()
            load.wait_for(len(load.answered) + 300)
            gw.stop()  # its buffer goes to the spill file: the store is down
        assert spill_files(tmp_path)
        pg.start()
        with serve(tmp_path, cfg, "again") as gw:
            assert_every_answer_stored_once(pg, database, load.answered)
            _until(lambda: not spill_files(tmp_path), 10, "the previous run's spill file replayed and removed")
            gw.stop()

"""The supervisor survives: PostgreSQL stopped in the middle of a tick, its background loop through an
outage, failures of its own, and a shutdown while a tick hangs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.store import SqlStore, open_store
from control.prompts.supervisor import Change, Supervisor, TickReport
from policies.prompts.documents import ExperimentDoc, ExperimentRuntime
from tests.control.prompts._results_app import results_app, start_experiment
from tests.control.prompts._results_support import Traffic, experiment_doc
from tests.servers import PostgresServer, start_postgres

GUARDED = {"guardrails": [{"metric": "error_rate", "max": 0.2, "min_requests": 100}]}


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A server of this test's own, to stop and start."""
    with start_postgres() as server:
        yield server


class Counting(Supervisor):
    """Records every tick's report; ``ticked`` is set once ``wanted`` ticks ran."""

    def __init__(self, *args: Any, wanted: int = 3, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.reports: list[TickReport] = []
        self.wanted = wanted
        self.ticked = asyncio.Event()

    async def tick(self) -> TickReport:
        report = await super().tick()
        self.reports.append(report)
        if len(self.reports) >= self.wanted:
            self.ticked.set()
        return report


async def test_postgres_stopped_during_a_tick(own_postgres: PostgresServer, tmp_path: Path) -> None:
    url = own_postgres.url(own_postgres.create_database())
    async with results_app(url, tmp_path) as (admin, service, store):
        await start_experiment(admin, experiment_doc(**GUARDED))
        t = Traffic(store, "exp1")
        await t.records("a", 120, error_rate=0.0)
        await t.records("b", 120, error_rate=0.6)

        class StopsTheDatabase:
            """Lists the running experiments, then the database goes away before the supervisor reads."""

            async def running(self) -> list[tuple[ExperimentDoc, ExperimentRuntime]]:
                found = await service.running()
                own_postgres.stop()
                return found

            async def update_runtime(self, experiment_id: str, change: Change, *, actor: str, kind: str,
                                     message: str, detail: dict[str, Any]) -> ExperimentRuntime | None:
                return await service.update_runtime(experiment_id, change, actor=actor, kind=kind, message=message,
                                                    detail=detail)

        try:
            report = await Supervisor(store, StopsTheDatabase()).tick()
            assert report.experiments == 1 and report.failed == 1 and report.stopped == []
            # The background loop keeps ticking through the outage, and stops cleanly.
            looping = Counting(store, service, interval_s=0.05, wanted=3)
            async with looping.running():
                await asyncio.wait_for(looping.ticked.wait(), 60)
            assert all(r.failed == 1 for r in looping.reports[:3])
        finally:
            own_postgres.start()
        sup = Supervisor(store, service)
        stopped = []
        for _ in range(3):  # the first may meet a connection the restart broke
            stopped += (await sup.tick()).stopped
        assert stopped == [("exp1", "b")]


class _Registry:
    def __init__(self, running: Any) -> None:
        self._running = running

    async def running(self) -> list[tuple[ExperimentDoc, ExperimentRuntime]]:
        return await self._running()  # type: ignore[no-any-return]

    async def update_runtime(self, experiment_id: str, change: Change, *, actor: str, kind: str, message: str,
                             detail: dict[str, Any]) -> ExperimentRuntime | None:
        raise AssertionError("nothing to change")


@pytest.fixture
async def unused_store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    store = open_store(f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}")
    try:
        yield store
    finally:
        await store.aclose()


async def test_its_own_failures_are_logged_and_the_loop_goes_on(unused_store: SqlStore,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    async def broken() -> list[Any]:
        raise RuntimeError("a bug")

    sup = Counting(unused_store, _Registry(broken), interval_s=0.01, wanted=2)
    async with sup.running():
        await asyncio.wait_for(sup.ticked.wait(), 30)
    assert [r.failed for r in sup.reports[:2]] == [1, 1]
    assert "listing running experiments failed" in caplog.text and "RuntimeError: a bug" in caplog.text


async def test_shutdown_is_prompt_when_idle_and_when_a_tick_hangs(unused_store: SqlStore) -> None:
    async def nothing() -> list[Any]:
        return []

    idle = Counting(unused_store, _Registry(nothing), interval_s=3600, wanted=1)
    began = time.monotonic()
    async with idle.running():
        await asyncio.wait_for(idle.ticked.wait(), 30)
    assert time.monotonic() - began < 5  # not the hour it would sleep

    entered = asyncio.Event()

    async def hangs() -> list[Any]:
        entered.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    stuck = Supervisor(unused_store, _Registry(hangs), interval_s=0.01, shutdown_grace_s=0.2)
    began = time.monotonic()
    async with stuck.running():
        await asyncio.wait_for(entered.wait(), 30)
    assert time.monotonic() - began < 5  # cancelled after the grace

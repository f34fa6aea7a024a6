"""control/serving/canary.py: the usage_records read behind canary judging, on SQLite and PostgreSQL.

Rows go in through ``adapters.usage_store.write_usage``, as the gateway's usage writer stores them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

import pytest

from adapters.adminapi.host import load_control_plane
from adapters.adminapi.settings import ControlCfg
from adapters.store import SqlStore, StoreUnavailable, migrate, open_store
from adapters.usage_store import UsageRow, write_usage
from control.serving.canary import CanaryCandidate, judge_canaries, load_slot_stats
from policies.serving import CanaryBounds
from tests.servers import PostgresServer, start_postgres

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
BOUNDS = CanaryBounds(window_s=300, min_requests=10, max_error_rate_delta=0.05, max_p95_ratio=1.5)
_ids = count()


def stable(e: str = "ep1") -> str:
    return f"serving:{e}:stable"


def canary(e: str = "ep1") -> str:
    return f"serving:{e}:canary"


def candidate(e: str = "ep1", since: datetime = NOW - timedelta(hours=1)) -> CanaryCandidate:
    return CanaryCandidate(endpoint_id=e, stable_provider=stable(e), canary_provider=canary(e), since=since)


def rows(n: int, provider: str, *, ago_s: float = 10.0, status: int = 200, latency_s: float = 0.2,
         first_provider: str | None = None) -> list[UsageRow]:
    """``n`` stored requests served by ``provider``, ``ago_s`` seconds before NOW (the n-th a millisecond apart)."""
    out = []
    for i in range(n):
        k = next(_ids)
        out.append(UsageRow(record_id=f"r{k:08d}", request_id=f"q{k}", ts=NOW.timestamp() - ago_s - i / 1000,
                            endpoint="chat", route="ep", model="m", provider=provider, status=status,
                            latency_s=latency_s, usage_source="upstream", fallback=first_provider is not None,
                            first_provider=first_provider))
    return out


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SqlStore]:
    s = open_store(database_url, feed_mode="local")
    await migrate(s, load_control_plane(ControlCfg(), modules=[], environ={}).migration_plan())
    try:
        yield s
    finally:
        await s.aclose()


async def test_an_empty_table_waits(store: SqlStore) -> None:
    verdicts = await judge_canaries(store, [candidate("a"), candidate("b")], BOUNDS, now=NOW)
    assert [(e, v.action) for e, v in verdicts] == [("a", "wait"), ("b", "wait")]
    assert verdicts[0][1].stats["canary"]["requests"] == 0
    assert await judge_canaries(store, [], BOUNDS, now=NOW) == []


async def test_counts_errors_client_errors_and_latency_per_slot(store: SqlStore) -> None:
    await write_usage(store, [
        *rows(40, stable(), latency_s=0.2), *rows(2, stable(), status=502),
        *rows(18, canary(), latency_s=0.25), *rows(2, canary(), status=503), *rows(7, canary(), status=429),
        *rows(3, "openai", latency_s=9.0),  # another provider: not read
    ])
    [(endpoint, verdict)] = await judge_canaries(store, [candidate()], BOUNDS, now=NOW)
    assert endpoint == "ep1" and verdict.action == "rollback"  # 10% vs 4.76%: 5.24 points > 5
    assert verdict.stats["stable"] == {"requests": 42, "errors": 2, "client_errors": 0, "error_rate": 0.047619,
                                       "latency_samples": 40, "p95_latency_s": 0.2}
    assert verdict.stats["canary"] == {"requests": 20, "errors": 2, "client_errors": 7, "error_rate": 0.1,
                                       "latency_samples": 18, "p95_latency_s": 0.25}
    assert verdict.stats["providers"] == {"stable": stable(), "canary": canary()}
    assert verdict.stats["window"] == {"from": "2026-03-01T11:55:00+00:00", "to": "2026-03-01T12:00:00+00:00"}
    assert "max_error_rate_delta" in verdict.reason


async def test_the_first_planned_slot_owns_a_request_that_failed_over(store: SqlStore) -> None:
    await write_usage(store, [
        *rows(30, stable()), *rows(30, canary()),
        # planned on the canary, which failed; stable served them: the canary's errors, not stable's successes
        *rows(5, stable(), first_provider=canary(), latency_s=3.0),
        # and the other way round: stable's errors, even though the canary answered
        *rows(1, canary(), first_provider=stable(), latency_s=3.0),
        # planned on the canary, failed over to stable, which refused the request: still the canary's error
        *rows(1, stable(), first_provider=canary(), status=400),
    ])
    stats = await load_slot_stats(store, [candidate()], BOUNDS, now=NOW)
    s, c = stats[stable()], stats[canary()]
    assert (s.requests, s.errors, s.client_errors, len(s.latencies_s)) == (31, 1, 0, 30)
    assert (c.requests, c.errors, c.client_errors, len(c.latencies_s)) == (36, 6, 0, 30)
    assert max(s.latencies_s) == max(c.latencies_s) == 0.2  # failed-over requests are not timed
    [(_, verdict)] = await judge_canaries(store, [candidate()], BOUNDS, now=NOW)
    assert verdict.action == "rollback" and "canary 16.67% (6 of 36)" in verdict.reason


async def test_the_window_is_the_canarys_and_the_last_window_s(store: SqlStore) -> None:
    since = NOW - timedelta(seconds=120)
    await write_usage(store, [
        *rows(20, stable(), ago_s=60), *rows(20, canary(), ago_s=60),
        *rows(50, canary(), ago_s=150, status=500),  # before the canary started: an earlier canary's
        *rows(50, stable(), ago_s=400, status=500),  # before the window
        *rows(50, canary(), ago_s=-5, status=500),  # after now (another replica's clock): not yet
    ])
    [(_, verdict)] = await judge_canaries(store, [candidate(since=since)], BOUNDS, now=NOW)
    assert verdict.action == "ok"
    assert (verdict.stats["stable"]["requests"], verdict.stats["canary"]["requests"]) == (20, 20)
    assert verdict.stats["window"]["from"] == since.isoformat()
    # a canary older than the window: the window bounds it, and stable's old errors are now in it
    wide = CanaryBounds(window_s=600, min_requests=10, max_error_rate_delta=0.05, max_p95_ratio=1.5)
    [(_, older)] = await judge_canaries(store, [candidate(since=NOW - timedelta(hours=2))], wide, now=NOW)
    assert (older.stats["stable"]["requests"], older.stats["stable"]["errors"]) == (70, 50)
    assert (older.stats["canary"]["requests"], older.stats["canary"]["errors"]) == (70, 50)


async def test_several_candidates_in_one_pass(store: SqlStore) -> None:
    since_b = NOW - timedelta(seconds=30)
    await write_usage(store, [
        *rows(50, stable("a"), latency_s=0.2), *rows(20, canary("a"), latency_s=0.6),  # slow canary
        *rows(50, stable("b"), latency_s=0.2, ago_s=10), *rows(20, canary("b"), latency_s=0.2, ago_s=10),
        *rows(20, canary("b"), status=500, ago_s=60),  # b's canary restarted 30 s ago: these were before
        *rows(50, stable("c")), *rows(3, canary("c")),  # too few yet
    ])
    found = await judge_canaries(store, [candidate("a"), candidate("b", since=since_b), candidate("c")], BOUNDS,
                                 now=NOW)
    assert [(e, v.action) for e, v in found] == [("a", "rollback"), ("b", "ok"), ("c", "wait")]
    assert "p95 latency: canary 0.600 s vs stable 0.200 s: 3.00x" in found[0][1].reason
    assert found[1][1].stats["canary"]["errors"] == 0


async def test_hundreds_of_candidates_in_one_pass(store: SqlStore) -> None:
    """More slots than SQLite allows members in one UNION ALL (500): read in chunks, each slot its own."""
    many = [candidate(f"e{i}") for i in range(260)]
    await write_usage(store, [r for i in range(260) for r in rows(i % 4, canary(f"e{i}"), latency_s=0.1 + i)])
    stats = await load_slot_stats(store, many, BOUNDS, now=NOW)
    assert len(stats) == 520
    assert all(stats[canary(f"e{i}")].requests == i % 4 for i in range(260))
    assert all(set(stats[canary(f"e{i}")].latencies_s) <= {0.1 + i} for i in range(260))
    assert not any(stats[stable(f"e{i}")].requests for i in range(260))


async def test_latencies_are_the_newest_within_the_cap(store: SqlStore) -> None:
    await write_usage(store, [*rows(5, canary(), ago_s=10, latency_s=0.1),  # the newest
                              *rows(5, canary(), ago_s=100, latency_s=5.0),
                              *rows(5, stable(), ago_s=10, latency_s=0.3), *rows(5, stable(), ago_s=100)])
    stats = await load_slot_stats(store, [candidate()], BOUNDS, now=NOW, sample_cap=5)
    assert sorted(stats[canary()].latencies_s) == [0.1] * 5
    assert stats[canary()].requests == 10  # counts are not capped
    assert sorted(stats[stable()].latencies_s) == [0.3] * 5
    uncapped = await load_slot_stats(store, [candidate()], BOUNDS, now=NOW)
    assert sorted(uncapped[canary()].latencies_s) == [0.1] * 5 + [5.0] * 5


def test_candidates_are_checked() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        CanaryCandidate("e", stable(), canary(), datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="one provider"):
        CanaryCandidate("e", stable(), stable(), NOW)


async def test_a_provider_in_two_candidates_is_refused(tmp_path: Any) -> None:
    s = open_store(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}", feed_mode="local")
    try:
        twin = CanaryCandidate("b", stable("a"), canary("b"), NOW)
        with pytest.raises(ValueError, match="more than one candidate"):
            await judge_canaries(s, [candidate("a"), twin], BOUNDS, now=NOW)
    finally:
        await s.aclose()


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    with start_postgres() as server:
        yield server


async def test_an_outage_raises_the_stores_error(own_postgres: PostgresServer) -> None:
    s = open_store(own_postgres.url(own_postgres.create_database()), feed_mode="local", timeout_s=5)
    try:
        await migrate(s, load_control_plane(ControlCfg(), modules=[], environ={}).migration_plan())
        await write_usage(s, rows(20, canary()))
        assert (await judge_canaries(s, [candidate()], BOUNDS, now=NOW))[0][1].action == "ok"
        own_postgres.stop()
        try:
            with pytest.raises(StoreUnavailable):
                await judge_canaries(s, [candidate()], BOUNDS, now=NOW)
        finally:
            own_postgres.start()
        assert (await judge_canaries(s, [candidate()], BOUNDS, now=NOW))[0][1].action == "ok"  # and after it
    finally:
        await s.aclose()

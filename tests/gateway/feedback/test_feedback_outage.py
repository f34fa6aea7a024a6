"""POST /v1/feedback when the database cannot take it: a 503 with Retry-After in OpenAI's schema, within its
store deadline, with nothing written; and nothing lost once the database is back (PostgreSQL stopped and
started again under a running gateway)."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from gateway.feedback import service
from tests.gateway.feedback.support import Served, error_of, serving, until
from tests.servers import start_postgres


async def _rateable(s: Served) -> str:
    """A request whose record is stored (rated once to know it)."""
    rid = (await s.chat()).headers["x-request-id"]
    first = await s.rate({"request_id": rid, "score": 1})
    assert first.status_code == 201, first.text
    return rid


def _unavailable(r: httpx.Response, took: float, limit_s: float) -> None:
    assert r.status_code == 503, r.text
    error = error_of(r)
    assert error["type"] == "server_error" and error["code"] == "store_unavailable"
    assert "not recorded" in error["message"] and int(r.headers["retry-after"]) >= 1
    assert took < limit_s, took


@contextlib.contextmanager
def _sqlite_write_lock(database_url: str) -> Iterator[None]:
    db = sqlite3.connect(make_url(database_url).database or "", isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")  # the write lock: every other writer waits
        yield
    finally:
        db.rollback()
        db.close()


async def test_a_blocked_insert_is_a_bounded_503_and_writes_nothing(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(service, "STORE_TIMEOUT_S", 1.0)
    # PostgreSQL: the endpoint's own deadline bounds the wait, under a lax store default. SQLite: a lock wait
    # blocks its driver thread for the store's busy timeout (control.store.timeout_s), whatever the caller's.
    lax = database_url.startswith("postgresql")
    async with serving(database_url, tmp_path, monkeypatch, store={"timeout_s": 30.0 if lax else 1.0}) as s:
        rid = await _rateable(s)
        if database_url.startswith("sqlite"):
            with _sqlite_write_lock(database_url):
                started = time.monotonic()
                r = await s.rate({"request_id": rid, "label": "blocked"})
                took = time.monotonic() - started
        else:
            locker = await asyncpg.connect(database_url.replace("+asyncpg", ""))
            try:
                async with locker.transaction():
                    await locker.execute("LOCK TABLE feedback IN ACCESS EXCLUSIVE MODE")
                    started = time.monotonic()
                    r = await s.rate({"request_id": rid, "label": "blocked"})
                    took = time.monotonic() - started
            finally:
                await locker.close()
        _unavailable(r, took, 1.0 + 1.5)
        assert [x["label"] for x in await s.rows()] == [None]  # the first rating only
        again = await s.rate({"request_id": rid, "label": "after"})
        assert again.status_code == 201, again.text
        assert [x["label"] for x in await s.rows()] == [None, "after"]
        registry = s.app.state.gateway.metrics.registry
        assert registry.get_sample_value("llmops_feedback_total", {"outcome": "unavailable"}) == 1


async def test_postgres_stopped_then_back_loses_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with start_postgres() as pg:
        database = pg.create_database()
        async with serving(pg.url(database), tmp_path, monkeypatch, store={"timeout_s": 2.0}) as s:
            before = await _rateable(s)
            pg.stop()
            started = time.monotonic()
            r = await s.rate({"request_id": before, "score": 2})
            _unavailable(r, time.monotonic() - started, service.STORE_TIMEOUT_S + 2.0)
            during = await s.chat()  # served while the database is down: its record waits in the spill file
            assert during.status_code == 200
            pg.start()
            answers: dict[str, int] = {}

            async def rated(rid: str, score: float) -> bool:
                r = await s.rate({"request_id": rid, "score": score})
                assert r.status_code in (201, 503), r.text  # 503 while the pool reconnects; never a 404 or 500
                answers[rid] = answers.get(rid, 0) + (r.status_code == 201)
                return r.status_code == 201

            await until(lambda: rated(before, 3), 20, "feedback on the earlier request to be recorded again")
            await until(lambda: rated(during.headers["x-request-id"], 4), 30,
                        "the request made during the outage to be rateable (its record replayed)")
            rows = await s.rows()
            assert [(x["request_id"], x["score"]) for x in rows] == [
                (before, 1.0), (before, 3.0), (during.headers["x-request-id"], 4.0)]
            assert answers == {before: 1, during.headers["x-request-id"]: 1}

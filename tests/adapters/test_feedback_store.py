"""adapters/feedback_store.py on both backends: which records a caller may rate, which arm they ran under,
and one feedback row written whole."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from adapters.adminapi.host import load_control_plane
from adapters.adminapi.settings import ControlCfg
from adapters.dataplane import feedback
from adapters.feedback_store import MAX_LISTED, FeedbackRow, Rated, find_rated, insert_feedback
from adapters.store import SqlStore, migrate, open_store
from adapters.usage_store import UsageRow, write_usage

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
_n = 0


def usage(request_id: str, key_id: str | None = "ka", **kw: Any) -> UsageRow:
    global _n
    _n += 1
    base: dict[str, Any] = {"record_id": f"rec-{_n}", "request_id": request_id, "ts": T0 + _n, "endpoint": "chat",
                            "route": "r", "model": "m", "provider": "p", "status": 200, "latency_s": 0.1,
                            "usage_source": "upstream", "key_id": key_id}
    return UsageRow(**{**base, **kw})


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SqlStore]:
    s = open_store(database_url, feed_mode="local")
    await migrate(s, load_control_plane(ControlCfg(), modules=[], environ={}).migration_plan())
    try:
        yield s
    finally:
        await s.aclose()


async def find(store: SqlStore, **kw: Any) -> Rated | None:
    return await find_rated(store, timeout_s=5.0, **{"key_id": "ka", **kw})


async def test_request_id_takes_the_callers_most_recent_routed_record(store: SqlStore) -> None:
    await write_usage(store, [
        usage("dup", experiment="e", variant="old"),
        usage("dup", experiment="e", variant="new"),  # later: this one counts
        usage("dup", key_id="kb", experiment="e", variant="theirs"),  # later still, but another key's
        usage("dup", attempts=0, variant="refused"),  # refused before routing (or a Litestar response): not rateable
        usage("refused", attempts=0, experiment="e", variant="x"),
        usage("anon", key_id=None, variant="v"),
    ])
    assert await find(store, request_id="dup") == Rated(request_ids=["dup"], requests=1, experiment="e",
                                                        variant="new")
    assert (await find(store, request_id="dup", key_id="kb")).variant == "theirs"  # type: ignore[union-attr]
    assert (await find(store, request_id="dup", key_id=None)).variant == "theirs"  # type: ignore[union-attr]
    assert await find(store, request_id="refused") is None
    assert await find(store, request_id="refused", key_id=None) is None
    assert await find(store, request_id="anon") is None  # a keyless record is nobody's own
    assert (await find(store, request_id="anon", key_id=None)).variant == "v"  # type: ignore[union-attr]
    assert await find(store, request_id="unknown") is None


async def test_episode_arm_is_kept_only_when_every_record_agrees(store: SqlStore) -> None:
    await write_usage(store, [
        *(usage(f"one-{i}", episode_id="ep-one", experiment="e", variant="a") for i in range(3)),
        usage("one-b", key_id="kb", episode_id="ep-one", experiment="e", variant="b"),  # another key's: not counted
        usage("ramp-1", episode_id="ep-ramp", experiment="e", variant="a"),
        usage("ramp-2", episode_id="ep-ramp", experiment="e", variant="b"),
        usage("two-1", episode_id="ep-two", experiment="e", variant="a"),
        usage("two-2", episode_id="ep-two", experiment="f", variant="a"),
        usage("mix-1", episode_id="ep-mix", experiment="e", variant="a"),
        usage("mix-2", episode_id="ep-mix"),  # outside the experiment
        usage("rep", episode_id="ep-rep"), usage("rep", episode_id="ep-rep"),  # one request id used twice
    ])
    assert await find(store, episode_id="ep-one") == Rated(
        request_ids=["one-2", "one-1", "one-0"], requests=3, experiment="e", variant="a")
    assert await find(store, episode_id="ep-one", key_id="kb") == Rated(
        request_ids=["one-b"], requests=1, experiment="e", variant="b")
    assert await find(store, episode_id="ep-ramp") == Rated(
        request_ids=["ramp-2", "ramp-1"], requests=2, experiment="e", variant=None)
    assert (await find(store, episode_id="ep-two")) == Rated(
        request_ids=["two-2", "two-1"], requests=2, experiment=None, variant=None)
    assert (await find(store, episode_id="ep-mix")) == Rated(
        request_ids=["mix-2", "mix-1"], requests=2, experiment=None, variant=None)
    assert (await find(store, episode_id="ep-rep")) == Rated(
        request_ids=["rep"], requests=2, experiment=None, variant=None)
    assert await find(store, episode_id="ep-none") is None


async def test_a_long_episode_lists_its_most_recent_request_ids(store: SqlStore) -> None:
    await write_usage(store, [usage(f"long-{i:03}", episode_id="ep-long") for i in range(MAX_LISTED + 20)])
    found = await find(store, episode_id="ep-long")
    assert found is not None and found.requests == MAX_LISTED + 20
    assert found.request_ids == [f"long-{i:03}" for i in range(MAX_LISTED + 19, 19, -1)]


async def test_exactly_one_id(store: SqlStore) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        await find(store, request_id="a", episode_id="b")
    with pytest.raises(ValueError, match="exactly one"):
        await find(store)


async def test_insert_writes_the_row_as_given(store: SqlStore) -> None:
    row = FeedbackRow(feedback_id="fb_1", ts=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), request_id="r1",
                      episode_id=None, experiment="e", variant="a", key_id="ka", team="t", score=-0.25, label="true",
                      positive=True, comment="é" * 4000)
    await insert_feedback(store, row, timeout_s=5.0)
    async with store.read() as conn:
        got = (await conn.execute(select(feedback))).mappings().one()
    fields = FeedbackRow.__struct_fields__
    assert {k: got[k] for k in fields} == {k: getattr(row, k) for k in fields}

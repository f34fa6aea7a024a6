"""Console sessions on both databases: the key is sealed under the cookie's token, rows end on sign-out, expiry
and idleness, and a stolen table (or a forged cookie) opens nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from adapters.adminapi.console_sessions import ConsoleSessions, csrf_token, session_id
from adapters.adminapi.tables import ADMIN_MIGRATIONS, console_sessions
from adapters.store import STORE_MIGRATIONS, SqlStore, migrate, open_store, utcnow

KEY = "llmops_0123456789abcdef_" + "k" * 43


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SqlStore]:
    opened = open_store(database_url)
    await migrate(opened, {"store": STORE_MIGRATIONS, "admin": ADMIN_MIGRATIONS})
    try:
        yield opened
    finally:
        await opened.aclose()


async def test_a_session_opens_with_its_token_and_holds_the_key_sealed(store: SqlStore) -> None:
    sessions = ConsoleSessions(store)
    token = await sessions.create(KEY, "key_0123456789abcdef")
    opened = await sessions.open(token)
    assert opened is not None and opened.key == KEY and opened.key_id == "key_0123456789abcdef"
    assert opened.csrf == csrf_token(token) and opened.csrf != token
    async with store.read() as conn:
        row = (await conn.execute(select(console_sessions))).one()
    assert row.id == session_id(token) and token not in row.id  # only the token's hash is stored
    assert KEY.encode() not in bytes(row.sealed_key) and b"k" * 43 not in bytes(row.sealed_key)


async def test_unknown_forged_and_tampered_tokens_open_nothing(store: SqlStore) -> None:
    sessions = ConsoleSessions(store)
    token = await sessions.create(KEY, "key_0123456789abcdef")
    assert await sessions.open("") is None
    assert await sessions.open("x" * 500) is None
    assert await sessions.open(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    # a row copied under another token's id cannot be opened with that token: the seal is bound to both
    other = await sessions.create(KEY, "key_0123456789abcdef")
    async with store.begin() as conn:
        sealed = (await conn.execute(select(console_sessions.c.sealed_key)
                                     .where(console_sessions.c.id == session_id(token)))).scalar_one()
        await conn.execute(update(console_sessions).where(console_sessions.c.id == session_id(other))
                           .values(sealed_key=sealed))
    assert await sessions.open(other) is None
    assert (await sessions.open(token)) is not None


async def test_sign_out_ends_only_that_session(store: SqlStore) -> None:
    sessions = ConsoleSessions(store)
    first, second = (await sessions.create(KEY, "key_a"), await sessions.create(KEY, "key_a"))
    await sessions.end(first)
    assert await sessions.open(first) is None
    assert await sessions.open(second) is not None
    assert await sessions.end_all("key_a") == 1
    assert await sessions.open(second) is None


async def test_expired_and_idle_sessions_are_refused_and_purged(store: SqlStore) -> None:
    sessions = ConsoleSessions(store, ttl_s=3600, idle_s=600)
    tokens = [await sessions.create(KEY, "key_a") for _ in range(3)]
    expired, idle, live = tokens
    now = utcnow()
    async with store.begin() as conn:
        await conn.execute(update(console_sessions).where(console_sessions.c.id == session_id(expired))
                           .values(expires_at=now - timedelta(seconds=1)))
        await conn.execute(update(console_sessions).where(console_sessions.c.id == session_id(idle))
                           .values(seen_at=now - timedelta(seconds=601)))
    assert await sessions.open(expired) is None
    assert await sessions.purge() == 1  # `expired` was deleted when met; `idle` goes now
    assert await sessions.open(idle) is None
    assert await sessions.open(live) is not None
    async with store.read() as conn:
        assert [r.id for r in (await conn.execute(select(console_sessions.c.id))).all()] == [session_id(live)]

"""Web console sessions: a random token in an HttpOnly cookie, one row per session in the store.

The console acts as the signed-in person by calling the admin API (and the data plane) with their own
API key, so every call is authorised and audited exactly as if they had made it. The key therefore has
to be kept for the session, and is kept *sealed*: AES-GCM under a key derived (HKDF-SHA256) from the
cookie's token, which the server never stores (the row's id is the token's SHA-256). A copy of the
table, or of a backup, opens no key; the cookie alone is the session, as with any session cookie.

Rows live in the store, so a session works on every replica and worker and survives restarts, and
sign-out deletes the row: a copied cookie dies with it. Sessions expire after ``ttl_s`` and after
``idle_s`` without use; expired rows are deleted as they are met and by ``purge``. The CSRF token is
derived from the session token too (an HMAC), so it needs no storage and changes with each session.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import delete, insert, select, update

from adapters.adminapi.tables import console_sessions
from adapters.store import Store, utcnow

__all__ = ["ConsoleSessions", "OpenSession", "csrf_token", "session_id"]

_TOKEN_BYTES = 32
_NONCE_BYTES = 12
_SEEN_EVERY = timedelta(seconds=60)  # `seen_at` is rewritten at most this often per session


def session_id(token: str) -> str:
    """The row id of a session: the SHA-256 of its cookie token (hex)."""
    return hashlib.sha256(token.encode()).hexdigest()


def csrf_token(token: str) -> str:
    """The CSRF token that forms of this session must echo (an HMAC of the session token)."""
    return hmac.new(token.encode(), b"llmops-console-csrf", hashlib.sha256).hexdigest()


def _cipher(token: str) -> AESGCM:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"llmops-console-session").derive(token.encode())
    return AESGCM(key)


@dataclass(frozen=True)
class OpenSession:
    """A live session: the API key it acts with, and its CSRF token."""

    key: str
    key_id: str
    csrf: str


class ConsoleSessions:
    """Create, open and end console sessions in ``store`` (``adapters.adminapi.tables.console_sessions``)."""

    def __init__(self, store: Store, *, ttl_s: float = 12 * 3600, idle_s: float = 2 * 3600) -> None:
        self._store = store
        self._ttl = timedelta(seconds=ttl_s)
        self._idle = timedelta(seconds=idle_s)

    async def create(self, api_key: str, key_id: str) -> str:
        """A new session for ``api_key`` (already authenticated by the caller): the cookie's token."""
        token = secrets.token_urlsafe(_TOKEN_BYTES)
        sid = session_id(token)
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = nonce + _cipher(token).encrypt(nonce, api_key.encode(), sid.encode())
        now = utcnow()
        async with self._store.begin() as conn:
            await conn.execute(insert(console_sessions).values(
                id=sid, key_id=key_id, sealed_key=sealed, created_at=now, expires_at=now + self._ttl, seen_at=now))
        return token

    async def open(self, token: str) -> OpenSession | None:
        """The session of a cookie token; ``None`` when unknown, expired, idle too long or not openable."""
        if not token or len(token) > 100:
            return None
        sid = session_id(token)
        s = console_sessions.c
        async with self._store.read() as conn:
            row = (await conn.execute(
                select(s.key_id, s.sealed_key, s.expires_at, s.seen_at).where(s.id == sid))).one_or_none()
        if row is None:
            return None
        now = utcnow()
        if row.expires_at <= now or row.seen_at + self._idle <= now:
            await self._delete(sid)
            return None
        sealed = bytes(row.sealed_key)
        try:
            key = _cipher(token).decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], sid.encode()).decode()
        except (InvalidTag, ValueError):
            return None
        if now - row.seen_at >= _SEEN_EVERY:
            async with self._store.begin() as conn:
                await conn.execute(update(console_sessions).where(s.id == sid).values(seen_at=now))
        return OpenSession(key=key, key_id=row.key_id, csrf=csrf_token(token))

    async def end(self, token: str) -> None:
        """Sign-out: the row goes, so the cookie (or any copy of it) opens nothing any more."""
        await self._delete(session_id(token))

    async def end_all(self, key_id: str) -> int:
        """Every session of one key (e.g. when it is revoked); how many there were."""
        async with self._store.begin() as conn:
            result = await conn.execute(delete(console_sessions).where(console_sessions.c.key_id == key_id))
        return int(result.rowcount or 0)

    async def purge(self) -> int:
        """Delete expired and idle sessions; how many."""
        now = utcnow()
        s = console_sessions.c
        async with self._store.begin() as conn:
            result = await conn.execute(delete(console_sessions).where(
                (s.expires_at <= now) | (s.seen_at <= now - self._idle)))
        return int(result.rowcount or 0)

    async def _delete(self, sid: str) -> None:
        async with self._store.begin() as conn:
            await conn.execute(delete(console_sessions).where(console_sessions.c.id == sid))

"""Admin authentication: bearer keys from the one key table, and the guard's role check.

Key format: ``llmops_<16 hex key id>_<43 url-safe chars of secret>``. The key id
is public (it names the key in lists and in the audit log); only the secret's
SHA-256 is stored (``gateway_keys.secret_sha256``, hex of ``sha256(secret)``, the
secret being the part after the second underscore). A plain hash is enough because
the secret is 256 random bits: slow password hashes (bcrypt, argon2) exist to protect
guessable passwords, and would only make every admin call slower. Lookup is by key id,
then the digests are compared with ``hmac.compare_digest``, so response timing
reveals nothing about how much of a guessed secret was right. The data plane checks
the same digests from the ``keys`` snapshot (``key_digest`` gives them).

Admin keys and data-plane keys are one model (``adapters.dataplane.gateway_keys``): a
key has a list of roles, and its admin role is the highest of them (``rbac``). A key
holding only ``inference`` is refused (403) on every admin path. Expired and revoked
keys are refused (401). Keys are read from the table on every admin call, so a
revocation is immediate here (the data plane follows the snapshot).

The bootstrap key (``LLMOPS_ADMIN_KEY``) is an admin that exists only in the
environment: it is never stored, shows up in the audit log as ``bootstrap``,
and is how the first stored key gets created over HTTP.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from litestar.connection import ASGIConnection
from sqlalchemy import select

from adapters.adminapi.errors import Forbidden, Unauthorized
from adapters.adminapi.rbac import Role, admin_role, required_role, requires
from adapters.dataplane import gateway_keys
from adapters.store import Store, utcnow

__all__ = [
    "BOOTSTRAP_KEY_ID",
    "Actor",
    "Authenticator",
    "Principal",
    "Role",
    "generate_key",
    "generate_secret",
    "hash_secret",
    "key_digest",
    "parse_key",
    "required_role",
    "requires",
]

KEY_PREFIX = "llmops"
BOOTSTRAP_KEY_ID = "bootstrap"
_KEY_PATTERN = re.compile(rf"^{KEY_PREFIX}_([0-9a-f]{{16}})_([A-Za-z0-9_-]{{43}})$")
_NO_DIGEST = "0" * 64


@dataclass(frozen=True)
class Principal:
    """Who a request authenticated as. ``key_id`` is public; the secret never leaves ``Authenticator``.

    ``role`` is the admin role (the highest of ``roles``; ``Role.inference`` for a data-plane-only key).
    """

    key_id: str
    name: str
    role: Role
    roles: tuple[str, ...] = ()
    team_id: str | None = None


@dataclass(frozen=True)
class Actor:
    """The principal plus the request it acts in: what services need to write audit entries."""

    principal: Principal
    request_id: str


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def generate_secret(key_id: str) -> tuple[str, str]:
    """A new secret for ``key_id`` (``key_<16 hex>``): ``(full key to show once, sha256 of the secret)``."""
    secret = secrets.token_urlsafe(32)
    return f"{KEY_PREFIX}_{key_id.removeprefix('key_')}_{secret}", hash_secret(secret)


def generate_key() -> tuple[str, str, str]:
    """A new key: ``(key_id, full key to show once, sha256 of the secret to store)``."""
    key_id = f"key_{secrets.token_hex(8)}"
    token, digest = generate_secret(key_id)
    return key_id, token, digest


def parse_key(token: str) -> tuple[str, str] | None:
    """``(key_id, secret)`` of a well-formed key, else ``None``."""
    match = _KEY_PATTERN.match(token)
    return (f"key_{match.group(1)}", match.group(2)) if match else None


def key_digest(token: str) -> tuple[str, str] | None:
    """``(key_id, hex sha256 of the secret)`` of a well-formed key, as stored and published; else ``None``."""
    parsed = parse_key(token)
    return (parsed[0], hash_secret(parsed[1])) if parsed else None


def bearer_token(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    header = connection.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _expired(expires_at: datetime | None, now: datetime) -> bool:
    return expires_at is not None and expires_at <= now


class Authenticator:
    def __init__(self, store: Store | None, bootstrap_key_sha256: bytes | None) -> None:
        self._store = store
        self._bootstrap = bootstrap_key_sha256

    async def authenticate(self, token: str | None) -> Principal:
        """The principal for a bearer token; ``Unauthorized`` for a missing, unknown, expired or revoked key.

        ``StoreUnavailable`` escapes when the key table cannot be read (503, not 401:
        the key may be perfectly valid).
        """
        if not token:
            raise Unauthorized("Missing bearer key: send 'Authorization: Bearer <key>'")
        presented = hashlib.sha256(token.encode()).digest()
        if self._bootstrap is not None and hmac.compare_digest(presented, self._bootstrap):
            return Principal(key_id=BOOTSTRAP_KEY_ID, name="bootstrap", role=Role.admin, roles=(Role.admin.name,))
        parsed = parse_key(token)
        if parsed is None or self._store is None:
            raise Unauthorized("Invalid admin key")
        key_id, secret = parsed
        k = gateway_keys.c
        async with self._store.read() as conn:
            row = (await conn.execute(
                select(k.name, k.roles, k.team_id, k.secret_sha256, k.revoked_at, k.expires_at).where(k.id == key_id)
            )).one_or_none()
        # Compare even when the id is unknown, so both paths cost the same.
        stored = row.secret_sha256 if row is not None else _NO_DIGEST
        if not hmac.compare_digest(hash_secret(secret).encode(), stored.encode()) or row is None:
            raise Unauthorized("Invalid admin key")
        if row.revoked_at is not None:
            raise Unauthorized("Key has been revoked")
        if _expired(row.expires_at, utcnow()):
            raise Unauthorized("Key has expired")
        roles = tuple(row.roles)
        return Principal(key_id=key_id, name=row.name, role=admin_role(roles), roles=roles, team_id=row.team_id)

    @staticmethod
    def authorize(principal: Principal, minimum: Role, what: str) -> None:
        if principal.role >= minimum:
            return
        if principal.role is Role.inference:
            raise Forbidden(f"{what} needs role {minimum.name} or higher; key {principal.key_id} is data-plane "
                            f"only (role inference) and cannot use the admin API")
        raise Forbidden(
            f"{what} needs role {minimum.name} or higher; key {principal.key_id} is {principal.role.name}"
        )

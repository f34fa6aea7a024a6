"""Admin authentication: bearer keys with a role, and the guard that enforces each route's minimum role.

Key format: ``llmops_<16 hex key id>_<43 url-safe chars of secret>``. The key id
is public (it names the key in lists and in the audit log); only the secret's
SHA-256 is stored. A plain hash is enough because the secret is 256 random
bits: slow password hashes (bcrypt, argon2) exist to protect guessable
passwords, and would only make every admin call slower. Lookup is by key id,
then the digests are compared with ``hmac.compare_digest``, so response timing
reveals nothing about how much of a guessed secret was right.

Roles are ordered ``viewer < developer < operator < admin``. A route states its
minimum with ``opt=requires(Role.admin)``; without it, reads (GET/HEAD) need
``viewer`` and anything else ``operator``. ``opt={"public": True}`` skips auth.

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
from enum import IntEnum
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler
from sqlalchemy import select

from adapters.adminapi.errors import Forbidden, Unauthorized
from adapters.adminapi.tables import api_keys
from adapters.store import Store

__all__ = [
    "BOOTSTRAP_KEY_ID",
    "Actor",
    "Authenticator",
    "Principal",
    "Role",
    "generate_key",
    "hash_secret",
    "parse_key",
    "required_role",
    "requires",
]

KEY_PREFIX = "llmops"
BOOTSTRAP_KEY_ID = "bootstrap"
_KEY_PATTERN = re.compile(rf"^{KEY_PREFIX}_([0-9a-f]{{16}})_([A-Za-z0-9_-]{{43}})$")
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Role(IntEnum):
    viewer = 1
    developer = 2
    operator = 3
    admin = 4

    @classmethod
    def parse(cls, value: str | Role) -> Role:
        return value if isinstance(value, Role) else cls[value]


@dataclass(frozen=True)
class Principal:
    """Who a request authenticated as. ``key_id`` is public; the secret never leaves ``Authenticator``."""

    key_id: str
    name: str
    role: Role


@dataclass(frozen=True)
class Actor:
    """The principal plus the request it acts in: what services need to write audit entries."""

    principal: Principal
    request_id: str


def requires(role: Role | str) -> dict[str, Any]:
    """Route option stating the minimum role: ``@post("/x", opt=requires(Role.admin))``."""
    return {"min_role": Role.parse(role)}


def required_role(handler: BaseRouteHandler) -> Role | None:
    """The handler's minimum role; ``None`` for public routes."""
    opt = handler.opt
    if opt.get("public"):
        return None
    if "min_role" in opt:
        return Role.parse(opt["min_role"])
    methods: set[str] = set(getattr(handler, "http_methods", ()) or ())
    return Role.viewer if methods and set(methods) <= _READ_METHODS else Role.operator


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def generate_key() -> tuple[str, str, str]:
    """A new key: ``(key_id, full key to show once, sha256 of the secret to store)``."""
    id_hex = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return f"key_{id_hex}", f"{KEY_PREFIX}_{id_hex}_{secret}", hash_secret(secret)


def parse_key(token: str) -> tuple[str, str] | None:
    """``(key_id, secret)`` of a well-formed key, else ``None``."""
    match = _KEY_PATTERN.match(token)
    return (f"key_{match.group(1)}", match.group(2)) if match else None


def bearer_token(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    header = connection.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class Authenticator:
    def __init__(self, store: Store | None, bootstrap_key_sha256: bytes | None) -> None:
        self._store = store
        self._bootstrap = bootstrap_key_sha256

    async def authenticate(self, token: str | None) -> Principal:
        """The principal for a bearer token; ``Unauthorized`` for a missing, unknown or revoked key.

        ``StoreUnavailable`` escapes when the key table cannot be read (503, not 401:
        the key may be perfectly valid).
        """
        if not token:
            raise Unauthorized("Missing bearer key: send 'Authorization: Bearer <key>'")
        presented = hashlib.sha256(token.encode()).digest()
        if self._bootstrap is not None and hmac.compare_digest(presented, self._bootstrap):
            return Principal(key_id=BOOTSTRAP_KEY_ID, name="bootstrap", role=Role.admin)
        parsed = parse_key(token)
        if parsed is None or self._store is None:
            raise Unauthorized("Invalid admin key")
        key_id, secret = parsed
        async with self._store.read() as conn:
            row = (await conn.execute(
                select(api_keys.c.name, api_keys.c.role, api_keys.c.secret_sha256, api_keys.c.revoked_at)
                .where(api_keys.c.id == key_id)
            )).one_or_none()
        # Compare even when the id is unknown, so both paths cost the same.
        stored = row.secret_sha256 if row is not None else "0" * 64
        if not hmac.compare_digest(hash_secret(secret).encode(), stored.encode()) or row is None:
            raise Unauthorized("Invalid admin key")
        if row.revoked_at is not None:
            raise Unauthorized("Admin key has been revoked")
        return Principal(key_id=key_id, name=row.name, role=Role.parse(row.role))

    @staticmethod
    def authorize(principal: Principal, minimum: Role, what: str) -> None:
        if principal.role < minimum:
            raise Forbidden(
                f"{what} needs role {minimum.name} or higher; key {principal.key_id} is {principal.role.name}"
            )

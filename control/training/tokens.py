"""Job-scoped tokens: what a training process authenticates with (``contract.ENV_TOKEN``).

A token is ``ljt_`` + 256 random bits (43 url-safe characters), minted when the job is created and handed to
the runtime only (a Kubernetes Secret; the process environment here): the API never returns it. Only its
SHA-256 is stored (``training_jobs.token_hash``, unique), as with admin keys: a plain hash suffices for 256
random bits. A token authenticates only its own job's paths (``inputs``, ``artifacts``, ``metrics``, and that
job's MLflow run), and only while the job is not finished: a leaked token dies with its job.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.training.contract import JOB_TOKEN_PREFIX
from control.training.tables import jobs

__all__ = ["FINISHED", "bearer_token", "hash_token", "job_for_token", "mint_token"]

FINISHED = frozenset({"succeeded", "failed", "cancelled"})


def mint_token() -> tuple[str, str]:
    """A new token and its hash (store the hash, hand the token to the runtime)."""
    token = JOB_TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, hash_token(token)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def bearer_token(headers: Any) -> str | None:
    """The job token of an ``Authorization: Bearer ljt_…`` header (None for anything else, e.g. an admin key)."""
    value = headers.get("authorization") or ""
    scheme, _, token = value.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token.startswith(JOB_TOKEN_PREFIX) or len(token) > 100:
        return None
    return token


async def job_for_token(conn: AsyncConnection, token: str, job_id: str | None = None) -> Any | None:
    """The job row ``token`` belongs to, when it is live (and is ``job_id`` when given); None otherwise.

    Looked up by hash (unique index), then compared in constant time, so timing says nothing about a guess."""
    digest = hash_token(token)
    row = (await conn.execute(select(jobs).where(jobs.c.token_hash == digest))).one_or_none()
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        return None
    if row.status in FINISHED or (job_id is not None and row.id != job_id):
        return None
    return row

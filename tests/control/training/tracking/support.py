"""Shared pieces of the tracking tests: a migrated store, and a job row with a live token."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.store import SqlStore, migrate, open_store, utcnow
from control.training.tables import TRAINING_MIGRATIONS, jobs
from control.training.tokens import mint_token


@contextlib.asynccontextmanager
async def tracking_store(database_url: str) -> AsyncIterator[SqlStore]:
    store = open_store(database_url, feed_mode="local")
    try:
        await migrate(store, {"training": TRAINING_MIGRATIONS})
        yield store
    finally:
        await store.aclose()


async def insert_job(conn: AsyncConnection, job_id: str, *, status: str = "running", name: str = "tiny",
                     experiment: str = "tiny-exp", hyperparameters: dict[str, Any] | None = None) -> str:
    """A ``training_jobs`` row as the jobs module would write it (its creation path is not ours); the token."""
    token, digest = mint_token()
    now = utcnow()
    await conn.execute(jobs.insert().values(
        id=job_id, name=name, job_type="finetune", status=status,
        spec={"name": name, "jobType": "finetune", "hyperparameters": hyperparameters or {"lr": 0.01, "epochs": 2}},
        owner_team="ml", base_model_id="model_base", dataset_id="ds_1", dataset_version=1, experiment=experiment,
        runtime="local", attempt=1, token_hash=digest, cancel_requested=False, created_at=now, created_by="alice",
        updated_at=now,
    ))
    return token

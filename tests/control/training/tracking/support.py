"""Shared pieces of the tracking tests: a migrated store, an app serving only the tracking routes, job rows.

The app mounts this package's controllers in a module named ``training`` with the training migrations and no
lifespan, so these tests do not depend on the jobs supervisor (the lead's end-to-end test runs the whole module).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from litestar.types import ControllerRouterHandler
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.adminapi import ControlCfg, Migration, ModuleContext, no_lifespan
from adapters.adminapi.testing import AdminTestApp, admin_test_app
from adapters.store import SqlStore, migrate, open_store, utcnow
from control.training.tables import TRAINING_MIGRATIONS, jobs
from control.training.tokens import mint_token
from control.training.tracking import mlflow_routes, routes

API = "/llm-ops/v1"
MLFLOW = f"{API}/training/mlflow"


class TrackingModule:
    """The training module's tracking face alone (same name, routes and migrations)."""

    name = "training"

    def routes(self) -> Sequence[ControllerRouterHandler]:
        return [*routes.CONTROLLERS, *mlflow_routes.CONTROLLERS]

    def migrations(self) -> Sequence[Migration]:
        return TRAINING_MIGRATIONS

    def lifespan(self, ctx: ModuleContext) -> AbstractAsyncContextManager[None]:
        return no_lifespan(ctx)


@contextlib.asynccontextmanager
async def tracking_app(database_url: str, data_dir: Path, *, real_socket: bool = False) -> AsyncIterator[AdminTestApp]:
    cfg = ControlCfg(database_url=database_url, data_dir=str(data_dir), change_feed="local")
    async with admin_test_app(cfg, modules=[TrackingModule()], real_socket=real_socket) as app:
        yield app


@contextlib.asynccontextmanager
async def tracking_store(database_url: str) -> AsyncIterator[SqlStore]:
    store = open_store(database_url, feed_mode="local")
    try:
        await migrate(store, {"training": TRAINING_MIGRATIONS})
        yield store
    finally:
        await store.aclose()


async def insert_job(conn: AsyncConnection, job_id: str, *, status: str = "running", name: str | None = None,
                     experiment: str = "tiny-exp", hyperparameters: dict[str, Any] | None = None) -> str:
    """A ``training_jobs`` row as the jobs module would write it (its creation path is not ours); the token."""
    token, digest = mint_token()
    now = utcnow()
    name = name or f"tiny-{job_id.replace('_', '-').lower()}"[:40]  # names are unique
    await conn.execute(jobs.insert().values(
        id=job_id, name=name, job_type="finetune", status=status,
        spec={"name": name, "jobType": "finetune", "hyperparameters": hyperparameters or {"lr": 0.01, "epochs": 2}},
        owner_team="ml", base_model_id="model_base", dataset_id="ds_1", dataset_version=1, experiment=experiment,
        runtime="local", attempt=1, token_hash=digest, cancel_requested=False, created_at=now, created_by="alice",
        updated_at=now,
    ))
    return token


async def add_job(app: AdminTestApp, job_id: str, **kwargs: Any) -> str:
    """``insert_job`` through the running plane's store; the job's token."""
    store = app.plane.store
    assert store is not None
    async with store.begin() as conn:
        return await insert_job(conn, job_id, **kwargs)


async def make_key(app: AdminTestApp, role: str) -> str:
    resp = await app.client.post(f"{API}/admin/keys", json={"name": f"k-{role}", "role": role})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["data"]["key"])


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}

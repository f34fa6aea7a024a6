"""Shared by the training jobs' tests: the admin app with a catalog stand-in, an evaluation stand-in and the
training module on a ``ScriptedRuntime``; helpers to store a job's output and to wait for a state.

``FakeCatalog`` is a test double of the catalog's services a job needs (``MODEL_CATALOG``, ``DATASET_READER``,
``MODEL_REFS``, ``MODEL_REGISTRY``), in memory; the real ones have their own tests
(tests/control/catalog/test_model_registry.py) and the lead's end-to-end test drives them all together.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.adminapi import Conflict, ControlCfg, Migration, ModuleContext, NotFound, SemanticError
from adapters.adminapi.seams import (
    DATASET_READER,
    EVALUATIONS,
    MODEL_CATALOG,
    MODEL_REFS,
    MODEL_REGISTRY,
    CatalogDatasetVersion,
    CatalogModel,
    ModelRegistration,
)
from adapters.adminapi.testing import AdminTestApp, admin_test_app
from adapters.store import utcnow
from adapters.training.settings import TrainingSettings, load_training_settings
from control.training import TrainingModule
from control.training.tables import artifacts
from tests import polling
from tests.control.training.runtime_double import Cluster, ScriptedRuntime

API = "/llm-ops/v1/training"
API_BASE_URL = "http://127.0.0.1:9/llm-ops/v1"


class FakeCatalog:
    """A module named ``catalog`` providing the four services; tests fill ``models``/``datasets`` directly."""

    name = "catalog"

    def __init__(self) -> None:
        self.models: dict[str, CatalogModel] = {}
        self.datasets: dict[str, dict[int, str]] = {}  # id -> {version: "ready" | another status}
        self.refs: set[tuple[str, str, str]] = set()
        self.registered: list[tuple[ModelRegistration, str]] = []
        self.refuse_registration: str | None = None

    def add_model(self, model_id: str, *, type_: str = "base", status: str = "approved", team: str = "ml") -> None:
        self.models[model_id] = CatalogModel(id=model_id, name=model_id, type=type_,  # type: ignore[arg-type]
                                             status=status, version=1, owner_team=team)  # type: ignore[arg-type]

    def add_dataset(self, dataset_id: str, **versions: str) -> None:
        self.datasets[dataset_id] = {int(v.lstrip("v")): s for v, s in versions.items()} or {1: "ready"}

    # MODEL_CATALOG
    async def get(self, conn: AsyncConnection, model_id: str, *, lock: bool = False) -> CatalogModel:
        if model_id not in self.models:
            raise NotFound(f"No model {model_id!r}")
        return self.models[model_id]

    # DATASET_READER
    async def version(self, conn: AsyncConnection, dataset_id: str, version: int | None = None
                      ) -> CatalogDatasetVersion:
        versions = self.datasets.get(dataset_id)
        if not versions:
            raise NotFound(f"No dataset {dataset_id!r}")
        if version is None:
            ready = [v for v, s in versions.items() if s == "ready"]
            if not ready:
                raise Conflict(f"Dataset {dataset_id!r} has no ready version")
            version = max(ready)
        if version not in versions:
            raise NotFound(f"Dataset {dataset_id!r} has no version {version}")
        if versions[version] != "ready":
            raise Conflict(f"Dataset {dataset_id!r} version {version} is {versions[version]}")
        return CatalogDatasetVersion(dataset_id=dataset_id, name=dataset_id, version=version, format="jsonl",
                                     row_count=3, columns=["text"])

    def rows(self, dataset_id: str, version: int, *, batch_rows: int = 256) -> AsyncIterator[list[dict[str, Any]]]:
        raise NotImplementedError

    # MODEL_REFS
    async def add(self, conn: AsyncConnection, model_id: str, kind: str, ref_id: str) -> None:
        if model_id not in self.models:
            raise NotFound(f"No model {model_id!r}")
        self.refs.add((model_id, kind, ref_id))

    async def remove(self, conn: AsyncConnection, model_id: str, kind: str, ref_id: str) -> bool:
        found = (model_id, kind, ref_id) in self.refs
        self.refs.discard((model_id, kind, ref_id))
        return found

    # MODEL_REGISTRY
    async def register(self, conn: AsyncConnection, registration: ModelRegistration, *, actor: str) -> CatalogModel:
        if self.refuse_registration:
            raise SemanticError([], self.refuse_registration)
        for earlier, _actor in self.registered:
            if earlier.training_job_id == registration.training_job_id:
                return self.models[f"model_{earlier.training_job_id}"]
        self.registered.append((registration, actor))
        model = CatalogModel(id=f"model_{registration.training_job_id}", name=registration.name,
                             type=registration.type, status="draft", version=1, owner_team=registration.owner_team,
                             format=registration.format, parent_model_id=registration.parent_model_id,
                             files=[f.key for f in registration.files])
        self.models[model.id] = model
        return model

    def routes(self) -> Sequence[Any]:
        return []

    def migrations(self) -> Sequence[Migration]:
        return ()

    @contextlib.asynccontextmanager
    async def _run(self, ctx: ModuleContext) -> AsyncIterator[None]:
        for key in (MODEL_CATALOG, DATASET_READER, MODEL_REFS, MODEL_REGISTRY):
            ctx.provide(key, self)  # type: ignore[arg-type]  # one object, four protocols
        yield

    def lifespan(self, ctx: ModuleContext) -> contextlib.AbstractAsyncContextManager[None]:
        return self._run(ctx)


class FakeEvaluation:
    """A module named ``evaluation`` providing ``EVALUATIONS``: records each start; ``answer`` is returned,
    ``refuse`` raised as a 422."""

    name = "evaluation"

    def __init__(self, answer: str | None = "run_1") -> None:
        self.answer = answer
        self.refuse: str | None = None
        self.calls: list[dict[str, str]] = []

    async def start_for_model(self, *, model_id: str, trigger: str, actor: str) -> str | None:
        self.calls.append({"model_id": model_id, "trigger": trigger, "actor": actor})
        if self.refuse:
            raise SemanticError([], self.refuse)
        return self.answer

    def routes(self) -> Sequence[Any]:
        return []

    def migrations(self) -> Sequence[Migration]:
        return ()

    @contextlib.asynccontextmanager
    async def _run(self, ctx: ModuleContext) -> AsyncIterator[None]:
        ctx.provide(EVALUATIONS, self)
        yield

    def lifespan(self, ctx: ModuleContext) -> contextlib.AbstractAsyncContextManager[None]:
        return self._run(ctx)


def fast_settings(**over: Any) -> TrainingSettings:
    values: dict[str, Any] = {"sync_interval_s": 0.05, "lease_s": 5.0, "default_backoff_s": 0.0,
                              "backoff_max_s": 0.0, "cancel_grace_s": 0.0, "max_concurrent_jobs": 4}
    values.update(over)
    return load_training_settings({}, **values)


def catalog_with_data() -> FakeCatalog:
    catalog = FakeCatalog()
    catalog.add_model("base-1")
    catalog.add_dataset("ds", v1="ready")
    return catalog


@contextlib.asynccontextmanager
async def training_app(database_url: str, data_dir: Path, *, catalog: FakeCatalog | None = None,
                       cluster: Cluster | None = None, settings: TrainingSettings | None = None,
                       evaluation: FakeEvaluation | None = None, background: bool = False,
                       runtime_name: str = "local") -> AsyncIterator[tuple[AdminTestApp, TrainingModule]]:
    """The app with catalog (+ evaluation) + training; ``background=False``: the test drives the passes."""
    cfg = ControlCfg(database_url=database_url, data_dir=str(data_dir), change_feed="poll", poll_interval_s=0.1)
    runtime = ScriptedRuntime(cluster, name=runtime_name)  # type: ignore[arg-type]
    module = TrainingModule(settings=settings or fast_settings(), runtime=runtime, api_base_url=API_BASE_URL,
                            background=background)
    modules: list[Any] = [catalog or catalog_with_data(), *([evaluation] if evaluation else []), module]
    async with admin_test_app(cfg, modules=modules) as app:
        yield app, module


def job_body(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": "ft-1", "jobType": "finetune", "baseModelId": "base-1",
                            "dataset": {"datasetId": "ds"}, "hyperparameters": {"steps": 20}}
    body.update(over)
    return {k: v for k, v in body.items() if v is not None}


async def create(app: AdminTestApp, **over: Any) -> dict[str, Any]:
    resp = await app.client.post(f"{API}/jobs", json=job_body(**over))
    assert resp.status_code == 201, resp.text
    return dict(resp.json()["data"])


async def job(app: AdminTestApp, job_id: str) -> dict[str, Any]:
    resp = await app.client.get(f"{API}/jobs/{job_id}")
    assert resp.status_code == 200, resp.text
    return dict(resp.json()["data"])


async def store_output(app: AdminTestApp, job_id: str, names: Sequence[str] = ("config.json", "model.safetensors"),
                       *, attempt: int = 1) -> None:
    """Rows as the job's ``PUT artifacts/output/<name>`` would leave them (the object store is not needed)."""
    store = app.plane.store
    assert store is not None
    async with store.begin() as conn:
        for name in names:
            await conn.execute(insert(artifacts).values(
                job_id=job_id, path=f"output/{name}", key=f"training/{job_id}/output/{name}", size_bytes=10,
                sha256="0" * 64, attempt=attempt, created_at=utcnow()))


class LogLines(logging.Handler):
    """Every record of the ``llmops`` loggers, formatted with its traceback, while the block runs (pytest's
    ``caplog`` loses its handler once Litestar configures logging for the app)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@contextlib.contextmanager
def log_lines() -> Iterator[LogLines]:
    handler, logger = LogLines(), logging.getLogger("llmops")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def until(check: Callable[[], Awaitable[Any]], within_s: float = 20.0, poll_s: float = 0.02) -> Any:
    """Poll ``check`` until it returns something truthy; that value (``tests.polling.until``, polled faster)."""
    return await polling.until(check, within_s, poll_s=poll_s)


async def status_is(app: AdminTestApp, job_id: str, *statuses: str, within_s: float = 20.0) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        found = await job(app, job_id)
        return found if found["status"] in statuses else None

    return dict(await until(check, within_s))

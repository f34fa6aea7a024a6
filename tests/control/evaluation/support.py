"""The worker's tests: a real gateway (with its own control plane on the same database, so its usage writer
records every call) routing to the mock upstream, and a control plane with the evaluation module and a
catalog stand-in.

``FakeCatalog`` is a test double of the two catalog services a run needs (``DATASET_READER``,
``MODEL_CATALOG``), in memory, so a test chooses the rows and can hold the reader between batches
(``hold_at``: a restart mid-run happens at a row the test picked). The real reader has its own tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from adapters.adminapi import Conflict, ControlCfg, Migration, ModuleContext, NotFound
from adapters.adminapi.seams import DATASET_READER, MODEL_CATALOG, CatalogDatasetVersion, CatalogModel
from adapters.adminapi.testing import AdminTestApp, admin_test_app
from adapters.testdoubles.mock_upstream import MockServer
from control.evaluation import EvaluationModule
from tests.conftest import RunningGateway, run_gateway

API = "/llm-ops/v1/evaluation"
PRICE = {"model": "m0", "input_per_mtok": "1000", "output_per_mtok": "2000"}  # $0.001 / $0.002 a token


class FakeDatasets:
    """``DatasetReader`` over in-memory rows: ``{dataset id: (name, {version: rows or "uploading"})}``."""

    def __init__(self) -> None:
        self.data: dict[str, dict[int, list[dict[str, Any]] | str]] = {}
        self.hold_at: int | None = None  # rows() waits before yielding the batch that starts here
        self.held = asyncio.Event()
        self.release = asyncio.Event()
        self.batches_read = 0
        self.batch_rows: int | None = None  # smaller batches than asked, so a test can stop between them

    def add(self, dataset_id: str, rows: list[dict[str, Any]] | str, version: int = 1) -> None:
        self.data.setdefault(dataset_id, {})[version] = rows

    async def version(self, conn: AsyncConnection, dataset_id: str, version: int | None = None
                      ) -> CatalogDatasetVersion:
        versions = self.data.get(dataset_id)
        if not versions:
            raise NotFound(f"No dataset {dataset_id!r}")
        number = version if version is not None else max(v for v, r in versions.items() if not isinstance(r, str))
        rows = versions.get(number)
        if rows is None:
            raise NotFound(f"Dataset {dataset_id!r} has no version {number}")
        if isinstance(rows, str):
            raise Conflict(f"Dataset {dataset_id!r} version {number} is {rows}")
        columns = list(dict.fromkeys(k for r in rows for k in r))
        return CatalogDatasetVersion(dataset_id=dataset_id, name=f"{dataset_id} data", version=number, format="jsonl",
                                     row_count=len(rows), columns=columns)

    async def rows(self, dataset_id: str, version: int, *, batch_rows: int = 256
                   ) -> AsyncIterator[list[dict[str, Any]]]:
        rows = self.data[dataset_id][version]
        assert not isinstance(rows, str)
        batch_rows = self.batch_rows or batch_rows
        for start in range(0, len(rows), batch_rows):
            if self.hold_at is not None and start >= self.hold_at:
                self.held.set()
                await self.release.wait()
            self.batches_read += 1
            yield [dict(r) for r in rows[start:start + batch_rows]]


class FakeModels:
    def __init__(self) -> None:
        self.models: dict[str, CatalogModel] = {}

    def add(self, model_id: str, name: str, type_: str = "external") -> None:
        self.models[model_id] = CatalogModel(id=model_id, name=name, type=type_,  # type: ignore[arg-type]
                                             status="approved", version=1, owner_team="team_default")

    async def get(self, conn: AsyncConnection, model_id: str, *, lock: bool = False) -> CatalogModel:
        if model_id not in self.models:
            raise NotFound(f"No model {model_id!r}")
        return self.models[model_id]


class FakeCatalog:
    """A module named ``catalog`` (service names start with their module's) that provides the two services."""

    name = "catalog"

    def __init__(self) -> None:
        self.datasets = FakeDatasets()
        self.models = FakeModels()
        self.ctx: ModuleContext | None = None

    def routes(self) -> Sequence[Any]:
        return []

    def migrations(self) -> Sequence[Migration]:
        return ()

    @contextlib.asynccontextmanager
    async def _run(self, ctx: ModuleContext) -> AsyncIterator[None]:
        self.ctx = ctx
        ctx.provide(DATASET_READER, self.datasets)
        ctx.provide(MODEL_CATALOG, self.models)
        yield

    def lifespan(self, ctx: ModuleContext) -> contextlib.AbstractAsyncContextManager[None]:
        return self._run(ctx)


def gateway_config(database_url: str, data_dir: Path, mock: MockServer, **route: Any) -> dict[str, Any]:
    """Route ``r`` to the mock (priced), a control plane without modules on the same database (usage writer)."""
    return {
        "server": {"log_level": "warning", "control_refresh_s": 0.2},
        "control": {"database_url": database_url, "data_dir": str(data_dir / "gateway"), "modules": [],
                    "change_feed": "poll", "poll_interval_s": 0.1},
        "metering": {"flush_interval_s": 0.05},
        "pricing": {"use_litellm_map": False, "models": [PRICE]},
        "providers": [{"name": "p0", "kind": "openai", "base_url": mock.url}],
        "routes": [{"name": "r", "targets": [{"provider": "p0", "model": "m0"}], "retries": 0,
                    "retry_backoff_s": 0.0, **route},
                   {"name": "r2", "targets": [{"provider": "p0", "model": "m0"}], "retries": 0}],
    }


def settings(url: str, **extra: Any) -> dict[str, Any]:
    return {"gateway_url": url, "gateway_routes": ["r", "r2"], "poll_s": 0.05, "progress_s": 0.05, "lease_s": 5,
            "usage_wait_s": 5, "retry_backoff_s": 0.01, "outage_backoff_max_s": 0.1, **extra}


@contextlib.asynccontextmanager
async def gateway(database_url: str, data_dir: Path, mock: MockServer, **route: Any
                  ) -> AsyncIterator[RunningGateway]:
    async with run_gateway(gateway_config(database_url, data_dir, mock, **route)) as gw:
        yield gw


@contextlib.asynccontextmanager
async def plane(database_url: str, data_dir: Path, catalog: FakeCatalog, evaluation: dict[str, Any],
                *, module: EvaluationModule | None = None) -> AsyncIterator[tuple[AdminTestApp, EvaluationModule]]:
    cfg = ControlCfg(database_url=database_url, data_dir=str(data_dir / "control"), change_feed="poll",
                     poll_interval_s=0.1, modules=None, module_settings={"evaluation": evaluation})
    module = module or EvaluationModule()
    async with admin_test_app(cfg, modules=[catalog, module]) as app:
        yield app, module


def qa_rows(n: int) -> list[dict[str, Any]]:
    return [{"q": f"question number {i}", "a": f"answer {i}"} for i in range(n)]


def run_body(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": "smoke", "targets": [{"kind": "route", "id": "r"}],
                            "dataset": {"datasetId": "ds"}, "mapping": {"input": "q", "reference": "a"},
                            "concurrency": 4}
    body.update(over)
    return body


async def until(check: Callable[[], Awaitable[Any]], within_s: float = 30.0, poll_s: float = 0.02) -> Any:
    """Poll ``check`` until it returns something truthy; that value."""
    deadline = time.monotonic() + within_s
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, f"not seen within {within_s} s"
        await asyncio.sleep(poll_s)


async def finished(app: AdminTestApp, run_id: str, within_s: float = 60.0) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        body = (await app.client.get(f"{API}/runs/{run_id}")).json()["data"]
        return body if body["status"] in ("succeeded", "failed", "cancelled") else None

    return dict(await until(check, within_s))


async def publish_routes(app: AdminTestApp, *names: str, base_url: str = "http://127.0.0.1:9/v1") -> None:
    """Publish a ``routes`` snapshot as the catalog does for approved external models (route = model name)."""
    from adapters.snapshots import ProviderSpec, RouteSpec, RoutesSnapshot, TargetSpec
    from adapters.store import publish

    store = app.plane.store
    assert store is not None
    providers = [ProviderSpec(name=f"catalog:{n}", kind="openai", base_urls=[base_url]) for n in names]
    routes = [RouteSpec(name=n, targets=[TargetSpec(provider=f"catalog:{n}", model="m0")]) for n in names]

    async def build(generation: int, at: Any) -> RoutesSnapshot:
        return RoutesSnapshot(generation=generation, published_at=at, providers=providers, routes=routes)

    async with store.begin() as conn:
        await publish(conn, store.changes, "routes", build)


class Forwarder:
    """A TCP port in front of the gateway that a test can close (connections refused, open ones cut) and open
    again on the same port: a gateway outage without stopping the gateway."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for pipe in list(self._pipes):
            pipe.cancel()
        await self._server.wait_closed()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._pipes.add(task)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
            dst.close()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        except (asyncio.CancelledError, ConnectionError):
            pass
        finally:
            for w in (writer, up_writer):
                w.close()
            self._pipes.discard(task)

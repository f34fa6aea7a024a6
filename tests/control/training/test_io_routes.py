"""The job's I/O API (inputs and artifacts) with job tokens, on both databases and the local object store.

The app mounts the I/O routes and the training tables only (no supervisor, which would adopt or fail the jobs
these tests insert straight into ``training_jobs``), beside ``FakeCatalog`` for the dataset and base model.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import msgspec
import pytest
from sqlalchemy import insert, select, update

from adapters.adminapi import ControlCfg, Migration, ModuleContext
from adapters.adminapi.seams import CatalogModel
from adapters.adminapi.services import ServiceRegistry
from adapters.adminapi.testing import AdminTestApp, admin_test_app
from adapters.objectstore import ObjectStore
from adapters.store import utcnow
from adapters.training.settings import TrainingSettings
from adapters.training.trainer.client import ApiError, JobClient
from control.training import TrainingModule, io_routes
from control.training.artifacts import artifact_key, delete_job_artifacts, output_files, validate_artifact_path
from control.training.service import JobService
from control.training.services import TRAINING
from control.training.tables import TRAINING_MIGRATIONS, artifacts, jobs
from control.training.tokens import mint_token
from tests.control.evaluation.support import FakeCatalog

API = "/llm-ops/v1/training/jobs"
LIMIT = 4096  # TRAINING_MAX_ARTIFACT_BYTES of these tests


class IOModule:
    """The training module's name, tables and I/O routes, with settings of the test's choosing."""

    name = "training"

    def __init__(self, settings: TrainingSettings) -> None:
        self.settings = settings

    def routes(self) -> Sequence[Any]:
        return io_routes.CONTROLLERS

    def migrations(self) -> Sequence[Migration]:
        return TRAINING_MIGRATIONS

    def lifespan(self, ctx: ModuleContext) -> contextlib.AbstractAsyncContextManager[None]:
        return self._run(ctx)

    @contextlib.asynccontextmanager
    async def _run(self, ctx: ModuleContext) -> AsyncIterator[None]:
        # The routes read the module's settings from its job service; only ``settings`` is needed of it.
        ctx.provide(TRAINING, cast(JobService, SimpleNamespace(settings=self.settings)))
        yield


class Env(msgspec.Struct):
    app: AdminTestApp
    catalog: FakeCatalog

    @property
    def objects(self) -> ObjectStore:
        assert self.catalog.ctx is not None and self.catalog.ctx.object_store is not None
        return self.catalog.ctx.object_store

    async def add_job(self, job_id: str, *, status: str = "running", base_model_id: str | None = "mdl_base",
                      attempt: int = 1) -> dict[str, str]:
        """A job row as the jobs service writes it; the headers its token authenticates with."""
        token, digest = mint_token()
        now = utcnow()
        store = self.app.plane.store
        assert store is not None
        async with store.begin() as conn:
            await conn.execute(insert(jobs).values(
                id=job_id, name=job_id.replace("_", "-"), job_type="finetune" if base_model_id else "from_scratch",
                status=status, spec={}, owner_team="team_default", base_model_id=base_model_id, dataset_id="ds",
                dataset_version=1, experiment=job_id, runtime="local", attempt=attempt, token_hash=digest,
                cancel_requested=False, created_at=now, created_by="test", updated_at=now))
        return {"authorization": f"Bearer {token}"}

    async def set_job(self, job_id: str, **values: Any) -> None:
        assert self.app.plane.store is not None
        async with self.app.plane.store.begin() as conn:
            await conn.execute(update(jobs).where(jobs.c.id == job_id).values(**values))

    async def rows(self, job_id: str) -> list[Any]:
        assert self.app.plane.store is not None
        async with self.app.plane.store.read() as conn:
            return list((await conn.execute(select(artifacts).where(artifacts.c.job_id == job_id)
                                            .order_by(artifacts.c.path))).all())

    async def put_object(self, key: str, data: bytes) -> None:
        async def chunks() -> AsyncIterator[bytes]:
            yield data

        await self.objects.put_stream(key, chunks())


@pytest.fixture
async def env(database_url: str, tmp_path: Path) -> AsyncIterator[Env]:
    async with _env(database_url, tmp_path) as e:
        yield e


@contextlib.asynccontextmanager
async def _env(database_url: str, tmp_path: Path, *, real_socket: bool = False) -> AsyncIterator[Env]:
    catalog = FakeCatalog()
    catalog.datasets.add("ds", [{"text": f"row {i} ✓", "n": i, "tags": ["a", {"b": None}]} for i in range(600)])
    cfg = ControlCfg(database_url=database_url, data_dir=str(tmp_path), change_feed="local")
    module = IOModule(TrainingSettings(max_artifact_bytes=LIMIT))
    async with admin_test_app(cfg, modules=[catalog, module], real_socket=real_socket) as app:
        e = Env(app=app, catalog=catalog)
        await e.put_object("models/mdl_base/upl_1/model.safetensors", b"\x00weights" * 1000)
        await e.put_object("models/mdl_base/upl_1/config.json", b'{"model_type": "x"}')
        catalog.models.models["mdl_base"] = CatalogModel(
            id="mdl_base", name="base", type="base", status="approved", version=1, owner_team="team_default",
            format="safetensors",
            files=["models/mdl_base/upl_1/config.json", "models/mdl_base/upl_1/model.safetensors"])
        yield e


def _fail(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body: dict[str, Any] = resp.json()
    assert body["status"] == "fail" and body["message"]
    return body


async def test_dataset_is_streamed_as_json_lines_in_file_order(env: Env) -> None:
    headers = await env.add_job("job_a")
    resp = await env.app.client.get(f"{API}/job_a/inputs/dataset", headers=headers)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/x-ndjson")
    lines = resp.content.decode().splitlines()
    assert [msgspec.json.decode(line) for line in lines] == env.catalog.datasets.data["ds"][1]
    assert env.catalog.datasets.batches_read == 3  # read batch by batch (256 rows), not as one list


async def test_dataset_not_ready_is_refused_before_the_stream(env: Env) -> None:
    headers = await env.add_job("job_a")
    env.catalog.datasets.add("ds", "uploading", version=1)
    _fail(await env.app.client.get(f"{API}/job_a/inputs/dataset", headers=headers), 409)


async def test_base_model_files_are_listed_and_downloaded(env: Env) -> None:
    headers = await env.add_job("job_a")
    resp = await env.app.client.get(f"{API}/job_a/inputs/model", headers=headers)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"files": [{"name": "config.json"}, {"name": "model.safetensors"}]}
    got = await env.app.client.get(f"{API}/job_a/inputs/model/model.safetensors", headers=headers)
    assert got.status_code == 200 and got.content == b"\x00weights" * 1000
    assert got.headers["content-type"] == "application/octet-stream"
    assert _fail(await env.app.client.get(f"{API}/job_a/inputs/model/tokenizer.json", headers=headers),
                 404)["data"] == {"name": "tokenizer.json"}
    await env.objects.delete("models/mdl_base/upl_1/config.json")  # the catalog lists a file the store lost
    _fail(await env.app.client.get(f"{API}/job_a/inputs/model/config.json", headers=headers), 404)


async def test_a_job_without_base_model_has_no_model_input(env: Env) -> None:
    headers = await env.add_job("job_s", base_model_id=None)
    body = _fail(await env.app.client.get(f"{API}/job_s/inputs/model", headers=headers), 404)
    assert "no base model" in body["message"]
    _fail(await env.app.client.get(f"{API}/job_s/inputs/model/model.safetensors", headers=headers), 404)


async def test_put_list_get_round_trip_and_replace(env: Env) -> None:
    headers = await env.add_job("job_a", attempt=1)
    client = env.app.client
    data = os.urandom(LIMIT)  # exactly the limit is allowed
    resp = await client.put(f"{API}/job_a/artifacts/output/model.safetensors", content=data, headers=headers)
    assert resp.status_code == 201, resp.text
    assert resp.json() == {"path": "output/model.safetensors", "key": "training/job_a/output/model.safetensors",
                                   "sizeBytes": LIMIT, "sha256": hashlib.sha256(data).hexdigest()}
    ckpt = b'{"step": 10}'
    assert (await client.put(f"{API}/job_a/artifacts/checkpoints/step-10/trainer_state.json", content=ckpt,
                             headers=headers)).status_code == 201

    listed = (await client.get(f"{API}/job_a/artifacts", headers=headers)).json()["files"]
    assert listed == [
        {"path": "checkpoints/step-10/trainer_state.json", "sizeBytes": len(ckpt),
         "sha256": hashlib.sha256(ckpt).hexdigest()},
        {"path": "output/model.safetensors", "sizeBytes": LIMIT, "sha256": hashlib.sha256(data).hexdigest()},
    ]
    only = (await client.get(f"{API}/job_a/artifacts", params={"prefix": "checkpoints/"}, headers=headers)).json()
    assert [f["path"] for f in only["files"]] == ["checkpoints/step-10/trainer_state.json"]
    none = await client.get(f"{API}/job_a/artifacts", params={"prefix": "checkpoints_"}, headers=headers)
    assert none.json()["files"] == []  # a plain prefix: '_' is no wildcard
    got = await client.get(f"{API}/job_a/artifacts/output/model.safetensors", headers=headers)
    assert got.status_code == 200 and got.content == data

    await env.set_job("job_a", attempt=2)  # a retry stores the same path again: the row and the file are replaced
    again = b"smaller"
    assert (await client.put(f"{API}/job_a/artifacts/output/model.safetensors", content=again,
                             headers=headers)).status_code == 201
    rows = await env.rows("job_a")
    assert [(r.path, r.size_bytes, r.sha256, r.attempt) for r in rows] == [
        ("checkpoints/step-10/trainer_state.json", len(ckpt), hashlib.sha256(ckpt).hexdigest(), 1),
        ("output/model.safetensors", len(again), hashlib.sha256(again).hexdigest(), 2)]
    assert (await client.get(f"{API}/job_a/artifacts/output/model.safetensors", headers=headers)).content == again
    _fail(await client.get(f"{API}/job_a/artifacts/output/missing.bin", headers=headers), 404)


async def test_chunked_upload_streams_and_an_empty_file_is_a_file(env: Env) -> None:
    headers = await env.add_job("job_a")

    async def parts() -> AsyncIterator[bytes]:
        for i in range(4):
            yield bytes([i]) * 1000

    resp = await env.app.client.put(f"{API}/job_a/artifacts/checkpoints/step-1/model.safetensors", content=parts(),
                                    headers=headers)
    assert resp.status_code == 201 and resp.json()["sizeBytes"] == 4000
    empty = await env.app.client.put(f"{API}/job_a/artifacts/output/empty.txt", content=b"", headers=headers)
    assert empty.status_code == 201 and empty.json()["sha256"] == hashlib.sha256(b"").hexdigest()
    assert (await env.app.client.get(f"{API}/job_a/artifacts/output/empty.txt", headers=headers)).content == b""


BAD_PATHS = [
    "model.safetensors",  # not under a root
    "logs/out.txt",
    "output",
    "output/",  # nothing after the root
    "output//model.safetensors",  # an empty segment (Litestar's parameter would fold it away)
    "output/a/",
    "output/%2e%2e/%2e%2e/other_job/output/x",  # '..', sent encoded (a client library folds the plain form)
    "output/%2e/x",
    "output/a%5Cb",  # backslash
    "output/a%00b",  # NUL
    "output/a%0Ab",  # newline
    "output/with space",
    "output/caf%C3%A9.bin",  # beyond [A-Za-z0-9._-]
    "output/" + "a" * 250 + "/" + "b" * 255,  # 513 characters
    "output/" + "a" * 256,  # one segment longer than a file name may be
]


async def test_every_kind_of_bad_path_is_a_400_naming_path_and_stores_nothing(env: Env) -> None:
    headers = await env.add_job("job_a")
    for path in BAD_PATHS:
        resp = await env.app.client.put(f"{API}/job_a/artifacts/{path}", content=b"x", headers=headers)
        body = _fail(resp, 400)
        assert [e["field"] for e in body["data"]["errors"]] == ["path"], path
        _fail(await env.app.client.get(f"{API}/job_a/artifacts/{path}", headers=headers), 400)
    assert await env.rows("job_a") == []
    assert await env.objects.list("training/") == []
    longest = "output/" + "a" * 250 + "/" + "b" * 254
    ok = await env.app.client.put(f"{API}/job_a/artifacts/{longest}", content=b"x", headers=headers)
    assert ok.status_code == 201, ok.text  # 512 characters is the most


async def test_a_path_that_needs_a_file_as_directory_is_a_400(env: Env) -> None:
    headers = await env.add_job("job_a")
    assert (await env.app.client.put(f"{API}/job_a/artifacts/output/a", content=b"1", headers=headers)
            ).status_code == 201
    body = _fail(await env.app.client.put(f"{API}/job_a/artifacts/output/a/b", content=b"2", headers=headers), 400)
    assert body["data"]["errors"][0]["field"] == "path"
    assert [r.path for r in await env.rows("job_a")] == ["output/a"]


async def test_over_the_size_limit_is_a_413_and_nothing_is_stored(env: Env) -> None:
    headers = await env.add_job("job_a")
    declared = await env.app.client.put(f"{API}/job_a/artifacts/output/big.bin", content=b"x" * (LIMIT + 1),
                                        headers=headers)
    assert _fail(declared, 413)["data"] == {"maxArtifactBytes": LIMIT}

    async def parts() -> AsyncIterator[bytes]:  # chunked: no Content-Length, caught while streaming
        for _ in range(5):
            yield b"y" * 1000

    streamed = await env.app.client.put(f"{API}/job_a/artifacts/output/big.bin", content=parts(), headers=headers)
    _fail(streamed, 413)
    assert await env.rows("job_a") == []
    assert await env.objects.list("training/") == []


async def test_only_the_jobs_own_live_token_is_accepted(env: Env) -> None:
    mine = await env.add_job("job_a")
    other = await env.add_job("job_b")
    finished = await env.add_job("job_done", status="succeeded")
    token = mine["authorization"].split()[1]
    refused: list[dict[str, str]] = [
        {"authorization": ""},  # none
        {"authorization": f"Bearer {env.app.bootstrap_key}"},  # an admin key is not a job token
        {"authorization": "Bearer ljt_not-a-real-token"},
        {"authorization": f"Basic {token}"},
        other,  # another job's token
    ]
    paths = [("GET", "inputs/dataset"), ("GET", "inputs/model"), ("GET", "inputs/model/config.json"),
             ("PUT", "artifacts/output/x.bin"), ("GET", "artifacts"), ("GET", "artifacts/output/x.bin")]
    messages = set()
    for method, path in paths:
        for headers in refused:
            resp = await env.app.client.request(method, f"{API}/job_a/{path}", headers=headers, content=b"data"
                                                if method == "PUT" else None)
            messages.add(_fail(resp, 401)["message"])
            assert token not in resp.text and "ljt_not" not in resp.text
        done = await env.app.client.request(method, f"{API}/job_done/{path}", headers=finished,
                                            content=b"data" if method == "PUT" else None)
        messages.add(_fail(done, 401)["message"])
        # Refused before anything else: a bad path or a missing job says nothing without the token.
        _fail(await env.app.client.request(method, f"{API}/job_nope/{path}", headers=mine), 401)
    assert len(messages) == 1
    assert await env.rows("job_a") == [] and await env.objects.list("training/") == []
    await env.set_job("job_a", status="cancelled")  # the token dies with its job
    _fail(await env.app.client.get(f"{API}/job_a/artifacts", headers=mine), 401)


async def _put_then_disconnect(env: Env, headers: dict[str, str], path: str) -> list[dict[str, Any]]:
    """Drive the app as a server would for a client that sends part of the body, then goes away."""
    events: list[dict[str, Any]] = [{"type": "http.request", "body": b"partial" * 100, "more_body": True},
                                    {"type": "http.disconnect"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return events.pop(0) if events else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    full = f"{API}/job_a/artifacts/{path}"
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "PUT", "scheme": "http",
             "path": full, "raw_path": full.encode(), "root_path": "", "query_string": b"",
             "headers": [(b"host", b"admin.test"), (b"authorization", headers["authorization"].encode()),
                         (b"content-length", b"4000")],
             "client": ("127.0.0.1", 5000), "server": ("admin.test", 80), "state": {}}
    await env.app.app(scope, receive, send)  # type: ignore[arg-type]
    return sent


async def test_a_client_gone_mid_upload_leaves_no_object_and_no_row(env: Env) -> None:
    headers = await env.add_job("job_a")
    sent = await _put_then_disconnect(env, headers, "output/model.safetensors")
    assert sent[0]["status"] == 400  # what a server would send to no one: the upload was dropped, not stored
    assert await env.rows("job_a") == []
    assert await env.objects.list("training/") == []
    # Over an earlier upload of the same path: that file and its row stay as they were.
    assert (await env.app.client.put(f"{API}/job_a/artifacts/output/model.safetensors", content=b"v1",
                                     headers=headers)).status_code == 201
    await _put_then_disconnect(env, headers, "output/model.safetensors")
    assert [(r.size_bytes, r.sha256) for r in await env.rows("job_a")] == [(2, hashlib.sha256(b"v1").hexdigest())]
    assert (await env.app.client.get(f"{API}/job_a/artifacts/output/model.safetensors", headers=headers)
            ).content == b"v1"


async def test_output_files_and_delete_job_artifacts(env: Env) -> None:
    headers = await env.add_job("job_a")
    other = await env.add_job("job_a2")  # a job id that extends this one's: its files are not touched
    files = {"checkpoints/step-1/model.safetensors": b"c1", "checkpoints/step-1/trainer_state.json": b"{}",
             "output/model.safetensors": b"weights", "output/config.json": b'{"a": 1}'}
    for path, data in files.items():
        assert (await env.app.client.put(f"{API}/job_a/artifacts/{path}", content=data, headers=headers)
                ).status_code == 201
    assert (await env.app.client.put(f"{API}/job_a2/artifacts/checkpoints/x", content=b"x", headers=other)
            ).status_code == 201
    await env.put_object(artifact_key("job_a", "checkpoints/step-2/orphan.bin"), b"no row")  # a failed record
    store = env.app.plane.store
    assert store is not None

    async with store.read() as conn:
        registered = await output_files(conn, "job_a")
    assert [(f.name, f.key, f.size_bytes, f.sha256) for f in registered] == [
        ("config.json", "training/job_a/output/config.json", 8, hashlib.sha256(b'{"a": 1}').hexdigest()),
        ("model.safetensors", "training/job_a/output/model.safetensors", 7, hashlib.sha256(b"weights").hexdigest())]

    async with store.begin() as conn:
        assert await delete_job_artifacts(conn, env.objects, "job_a", keep_output=True) == 2
    assert [r.path for r in await env.rows("job_a")] == ["output/config.json", "output/model.safetensors"]
    assert await env.objects.list("training/job_a/") == ["training/job_a/output/config.json",
                                                          "training/job_a/output/model.safetensors"]
    async with store.begin() as conn:
        assert await delete_job_artifacts(conn, env.objects, "job_a", keep_output=False) == 2
    assert await env.rows("job_a") == [] and await env.objects.list("training/job_a/") == []
    assert await env.objects.list("training/job_a2/") == ["training/job_a2/checkpoints/x"]
    assert len(await env.rows("job_a2")) == 1


@pytest.mark.parametrize(("path", "error"), [
    ("output/model.safetensors", None),
    ("checkpoints/step-100/optimizer.safetensors", None),
    ("output/tokenizer/vocab_v2.json", None),
    ("outputs/x", "must start with"),
    ("/output/x", "must start with"),
    ("output//x", "empty segment"),
    ("output/x/", "empty segment"),
    ("output/../../x", "'..'"),
    ("output/a\\b", "letters, digits"),
    ("output/a\x7fb", "letters, digits"),
    ("output/" + "x" * 250 + "/" + "y" * 255, "at most 512"),
    ("output/" + "x" * 256, "at most 255"),
])
def test_validate_artifact_path(path: str, error: str | None) -> None:
    found = validate_artifact_path(path)
    assert (found is None) if error is None else (found is not None and error in found)


def test_the_limit_falls_back_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINING_MAX_ARTIFACT_BYTES", "1234")
    io_routes._environment_settings.cache_clear()
    try:
        assert io_routes._max_artifact_bytes(SimpleNamespace(services=ServiceRegistry())) == 1234  # type: ignore[arg-type]
    finally:
        io_routes._environment_settings.cache_clear()


def test_the_training_module_mounts_the_io_routes() -> None:
    assert io_routes.JobIOController in TrainingModule().routes()


async def test_the_reference_trainers_client_speaks_this_api(database_url: str, tmp_path: Path) -> None:
    """The trainer's own client (stdlib, in a thread: the server shares this loop) over a real socket."""
    async with _env(database_url, tmp_path, real_socket=True) as e:
        token = (await e.add_job("job_a"))["authorization"].split()[1]
        client = JobClient(f"{e.app.url}/llm-ops/v1", "job_a", token, retries=0)
        rows = await asyncio.to_thread(lambda: list(client.dataset_rows()))
        assert rows == e.catalog.datasets.data["ds"][1]
        assert await asyncio.to_thread(client.model_files) == ["config.json", "model.safetensors"]
        assert await asyncio.to_thread(client.model_file, "config.json") == b'{"model_type": "x"}'
        answer = await asyncio.to_thread(client.put_artifact, "checkpoints/step-5/model.safetensors", b"w" * 10)
        assert answer["sizeBytes"] == 10 and answer["sha256"] == hashlib.sha256(b"w" * 10).hexdigest()
        listed = await asyncio.to_thread(client.list_artifacts, "checkpoints/")
        assert [f["path"] for f in listed] == ["checkpoints/step-5/model.safetensors"]
        assert await asyncio.to_thread(client.artifact, "checkpoints/step-5/model.safetensors") == b"w" * 10
        stranger = JobClient(f"{e.app.url}/llm-ops/v1", "job_a", "ljt_" + "x" * 43, retries=0)
        with pytest.raises(ApiError) as refused:
            await asyncio.to_thread(stranger.list_artifacts, "")
        assert refused.value.status == 401


async def test_a_dataset_failing_mid_stream_is_a_truncated_response(database_url: str, tmp_path: Path) -> None:
    """Not a short file that looks complete: the connection ends without the body's last chunk."""
    async with _env(database_url, tmp_path, real_socket=True) as e:
        headers = await e.add_job("job_a")

        async def failing(dataset_id: str, version: int, *, batch_rows: int = 256
                          ) -> AsyncIterator[list[dict[str, Any]]]:
            yield [{"text": "first"}]
            raise RuntimeError("the dataset's file went away")

        e.catalog.datasets.rows = failing  # type: ignore[method-assign]
        async with httpx.AsyncClient(base_url=e.app.url, headers=headers, timeout=30) as client:
            with pytest.raises(httpx.TransportError):
                await client.get(f"{API}/job_a/inputs/dataset")

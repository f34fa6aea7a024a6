"""The MODEL_REGISTRY seam: a training job's output becomes a draft catalog model with its files and lineage."""

from __future__ import annotations

import asyncio
import hashlib
import json
import struct
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from sqlalchemy import func, select, text

from adapters.adminapi import Conflict, ModuleContext, NotFound, SemanticError, ValidationFailed
from adapters.adminapi.seams import MODEL_CATALOG, MODEL_REGISTRY, CatalogModel, ModelRegistration, RegisteredFile
from adapters.adminapi.testing import AdminTestApp
from adapters.objectstore import ObjectStore
from adapters.store import migrate, open_store, schema_drift
from control.catalog.tables import CATALOG_MIGRATIONS, model_files, model_versions, models
from tests.control.catalog._helpers import API, data, upload

CONFIG = json.dumps({"architectures": ["LlamaForCausalLM"], "hidden_size": 8}).encode()


def _safetensors(payload: bytes) -> bytes:
    header = json.dumps({"w": {"dtype": "U8", "shape": [len(payload)], "data_offsets": [0, len(payload)]}}).encode()
    return struct.pack("<Q", len(header)) + header + payload


async def _chunks(content: bytes) -> AsyncIterator[bytes]:
    yield content


def _ctx(app: AdminTestApp) -> ModuleContext:
    return app.plane._require_running().contexts["catalog"]


def _store(app: AdminTestApp) -> ObjectStore:
    store = _ctx(app).object_store
    assert store is not None
    return store


async def _outputs(app: AdminTestApp, job_id: str, names: tuple[str, ...] = ("config.json", "model.safetensors")
                   ) -> list[RegisteredFile]:
    """What a job uploads under ``training/{job}/output/`` before it is registered."""
    contents = {"config.json": CONFIG, "model.safetensors": _safetensors(job_id.encode() * 8),
                "tokenizer.json": b'{"version": "1.0"}'}
    files = []
    for name in names:
        stored = await _store(app).put_stream(f"training/{job_id}/output/{name}", _chunks(contents[name]))
        files.append(RegisteredFile(name=name, key=stored.key, size_bytes=stored.size_bytes, sha256=stored.sha256))
    return files


async def _dataset(app: AdminTestApp, name: str = "sft-data") -> str:
    ds = data(await app.client.post(f"{API}/datasets", json={"name": name, "ownerTeam": "ml"}), 201)
    data(await upload(app, f"datasets/{ds['id']}/upload", ("file", "train.csv", b"prompt,answer\nhi,hello\n")), 201)
    return ds["id"]


async def _base(app: AdminTestApp, name: str = "tiny-base") -> str:
    body = {"name": name, "type": "base", "ownerTeam": "ml", "format": "safetensors"}
    return data(await app.client.post(f"{API}/models", json=body), 201)["id"]


def _registration(job_id: str, files: list[RegisteredFile], dataset_id: str, **changes: Any) -> ModelRegistration:
    fields: dict[str, Any] = {
        "name": "tiny-ft", "type": "fine-tuned", "owner_team": "ml", "format": "safetensors", "files": files,
        "dataset_id": dataset_id, "dataset_version": 1, "training_job_id": job_id,
        "description": "LoRA on sft-data", "tags": ["sft"], "labels": {"trainer": "reference"}, **changes}
    return ModelRegistration(**fields)


async def _register(app: AdminTestApp, registration: ModelRegistration, actor: str = "training:supervisor"
                    ) -> CatalogModel:
    ctx = _ctx(app)
    async with ctx.store.begin() as conn:
        return await ctx.services[MODEL_REGISTRY].register(conn, registration, actor=actor)


async def _count(app: AdminTestApp, query: Any) -> int:
    async with _ctx(app).store.read() as conn:
        return int((await conn.execute(query)).scalar_one())


async def test_registers_a_fine_tuned_model_with_files_and_lineage(catalog: AdminTestApp) -> None:
    c = catalog.client
    dataset_id = await _dataset(catalog)
    root = await _base(catalog)
    first = await _register(catalog, _registration("job_first", await _outputs(catalog, "job_first"), dataset_id,
                                                   parent_model_id=root, name="tiny-ft"))
    files = await _outputs(catalog, "job_second", ("config.json", "model.safetensors", "tokenizer.json"))
    model = await _register(catalog, _registration("job_second", files, dataset_id, parent_model_id=first.id,
                                                   name="tiny-ft-v2"))
    assert (model.type, model.status, model.version, model.parent_model_id) == ("fine-tuned", "draft", 1, first.id)
    assert model.file_names == ["config.json", "model.safetensors", "tokenizer.json"]
    assert model.files == [f.key for f in files]

    got = data(await c.get(f"{API}/models/{model.id}"))
    assert (got["name"], got["type"], got["status"], got["parentModelId"], got["trainingJobId"]) == (
        "tiny-ft-v2", "fine-tuned", "draft", first.id, "job_second")
    assert got["trainingDatasets"] == [{"datasetId": dataset_id, "version": 1}]
    assert (got["format"], got["tags"], got["labels"], got["description"]) == (
        "safetensors", ["sft"], {"trainer": "reference"}, "LoRA on sft-data")
    assert data(await c.get(f"{API}/models/{root}"))["trainingJobId"] is None  # created by hand

    listed = data(await c.get(f"{API}/models/{model.id}/files"))
    assert listed["complete"] is True and listed["missingFiles"] == []
    by_name = {f["filename"]: f for f in listed["files"]}
    for f in files:
        assert (by_name[f.name]["sizeBytes"], by_name[f.name]["sha256"]) == (f.size_bytes, f.sha256)
        assert by_name[f.name]["storageUri"] == _store(catalog).uri(f.key)  # no copy: the job's own object
    assert by_name["config.json"]["contentType"] == "application/json"
    assert by_name["config.json"]["sha256"] == hashlib.sha256(CONFIG).hexdigest()

    lineage = data(await c.get(f"{API}/models/{model.id}/lineage"))
    assert (lineage["model"]["id"], lineage["model"]["trainingJobId"]) == (model.id, "job_second")
    assert [(m["id"], m["trainingJobId"]) for m in lineage["ancestors"]] == [(first.id, "job_first"), (root, None)]
    assert lineage["trainingDatasets"] == [{"datasetId": dataset_id, "version": 1, "name": "sft-data",
                                            "status": "ready"}]
    parent_lineage = data(await c.get(f"{API}/models/{first.id}/lineage"))
    assert [(m["id"], m["trainingJobId"]) for m in parent_lineage["children"]] == [(model.id, "job_second")]

    versions = data(await c.get(f"{API}/models/{model.id}/versions"))
    assert versions["total"] == 1 and versions["items"][0]["definition"]["parentModelId"] == first.id
    audit = data(await c.get(f"/llm-ops/v1/audit/logs?action=catalog.model.register&resourceId={model.id}"))
    (entry,) = audit["items"]
    assert entry["actorName"] == "training:supervisor" and entry["after"]["trainingJobId"] == "job_second"
    assert "job_second" in entry["detail"] and "3 file(s)" in entry["detail"]

    # Idempotent per job: a retried registration (even with another name) returns the first model.
    again = await _register(catalog, _registration("job_second", files, dataset_id, parent_model_id=first.id,
                                                   name="something-else"))
    assert again == model
    assert await _count(catalog, select(func.count()).select_from(models)) == 3
    assert await _count(catalog, select(func.count()).select_from(model_versions)) == 3
    assert data(await c.get("/llm-ops/v1/audit/logs?action=catalog.model.register"))["total"] == 2


async def test_a_taken_name_gets_a_suffix(catalog: AdminTestApp) -> None:
    dataset_id = await _dataset(catalog)
    await _base(catalog, "tiny")  # taken by hand
    names = []
    for job in ("job_a", "job_b"):  # from_scratch / pretrain: a base model, no parent
        registered = await _register(catalog, _registration(job, await _outputs(catalog, job), dataset_id,
                                                            type="base", name="tiny"))
        assert (registered.type, registered.parent_model_id) == ("base", None)
        names.append(registered.name)
    assert names == ["tiny-2", "tiny-3"]
    long = "x" * 100
    await _base(catalog, long)
    cut = await _register(catalog, _registration("job_long", await _outputs(catalog, "job_long"), dataset_id,
                                                 type="base", name=long))
    assert cut.name == "x" * 98 + "-2"
    # A deleted model's name is free again.
    data(await catalog.client.delete(f"{API}/models/{cut.id}"))
    again = await _register(catalog, _registration("job_c", await _outputs(catalog, "job_c"), dataset_id,
                                                   type="base", name="tiny-2-x"))
    assert again.name == "tiny-2-x"


async def test_refused_registrations_store_nothing(catalog: AdminTestApp) -> None:
    c = catalog.client
    dataset_id = await _dataset(catalog)
    root = await _base(catalog)
    files = await _outputs(catalog, "job_bad")
    external = data(await c.post(f"{API}/models", json={
        "name": "hosted", "type": "external", "ownerTeam": "ml",
        "provider": {"kind": "openai", "baseUrl": "https://api.openai.com/v1", "model": "gpt-4o-mini",
                     "apiKeyRef": "env:OPENAI_API_KEY"}}), 201)["id"]
    ragged = data(await c.post(f"{API}/datasets", json={"name": "ragged", "ownerTeam": "ml"}), 201)["id"]
    assert (await upload(catalog, f"datasets/{ragged}/upload", ("file", "r.csv", b"a,b\n1,2\n3\n"))).status_code == 422

    def reg(**changes: Any) -> ModelRegistration:
        merged = {"parent_model_id": root, **changes}
        return _registration("job_bad", merged.pop("files", files), merged.pop("dataset_id", dataset_id), **merged)

    async def refused(error: type[Exception], registration: ModelRegistration) -> Any:
        with pytest.raises(error) as caught:
            await _register(catalog, registration)
        return caught.value

    assert "mdl_nope" in (await refused(NotFound, reg(parent_model_id="mdl_nope"))).message
    assert "version 7" in (await refused(NotFound, reg(dataset_version=7))).message
    assert "ds_nope" in (await refused(NotFound, reg(dataset_id="ds_nope"))).message
    unfit = await refused(SemanticError, reg(parent_model_id=external))
    assert [e.field for e in unfit.errors] == ["parentModelId"] and "external" in unfit.message
    unready = await refused(SemanticError, reg(dataset_id=ragged, dataset_version=1))
    assert [e.field for e in unready.errors] == ["trainingDatasets[0].version"] and "invalid" in unready.message

    no_config = await refused(SemanticError, reg(files=[f for f in files if f.name != "config.json"]))
    assert [e.field for e in no_config.errors] == ["files"] and "config.json" in no_config.message
    weights = files[1]
    odd = await refused(SemanticError, reg(files=[
        *files, msgspec.structs.replace(weights, name="../x.json"), msgspec.structs.replace(weights, name="run.exe"),
        weights, msgspec.structs.replace(weights, name="b.safetensors", sha256="XYZ", size_bytes=-1),
        msgspec.structs.replace(weights, name="c.safetensors", key="/etc/passwd")]))
    assert [e.field for e in odd.errors] == ["files[2].name", "files[3].name", "files[4].name", "files[5].sizeBytes",
                                             "files[5].sha256", "files[6].key"]
    ghost = msgspec.structs.replace(weights, key="training/job_bad/output/never-uploaded.safetensors")
    absent = await refused(SemanticError, reg(files=[files[0], ghost]))
    assert [e.field for e in absent.errors] == ["files[1].key"] and "no object" in absent.message
    shape = await refused(ValidationFailed, reg(parent_model_id=None))  # fine-tuned needs its parent
    assert [e.field for e in shape.errors] == ["parentModelId"]
    bounds = await refused(ValidationFailed, reg(name="bad name!"))
    assert [e.field for e in bounds.errors] == ["name"]
    await refused(ValidationFailed, reg(training_job_id="j" * 41))

    # Files another catalog model owns cannot be handed over (deleting this model would delete them).
    owned = await _register(catalog, _registration("job_ok", await _outputs(catalog, "job_ok"), dataset_id,
                                                   parent_model_id=root))
    taken = await refused(SemanticError, reg(files=[
        RegisteredFile(name=n, key=k, size_bytes=1, sha256="0" * 64) for n, k in zip(owned.file_names, owned.files,
                                                                                   strict=True)]))
    assert [e.field for e in taken.errors] == ["files[0].key", "files[1].key"] and "belongs" in taken.message

    assert await _count(catalog, select(func.count()).select_from(models)) == 3  # root, hosted, the good one
    assert await _count(catalog, select(func.count()).select_from(model_files)) == 2
    assert data(await c.get("/llm-ops/v1/audit/logs?action=catalog.model.register"))["total"] == 1
    assert all([await _store(catalog).exists(f.key) for f in files])  # still the job's: nothing was registered


async def test_deleting_a_registered_model_deletes_its_objects(catalog: AdminTestApp) -> None:
    dataset_id = await _dataset(catalog)
    files = await _outputs(catalog, "job_del")
    model = await _register(catalog, _registration("job_del", files, dataset_id, type="base"))
    store = _store(catalog)
    assert all([await store.exists(f.key) for f in files])
    data(await catalog.client.delete(f"{API}/models/{model.id}"))
    assert not any([await store.exists(f.key) for f in files])
    with pytest.raises(Conflict, match="deleted"):  # the job's model is gone, and its files with it
        await _register(catalog, _registration("job_del", files, dataset_id, type="base"))


async def test_a_registered_model_can_be_approved_and_read_through_the_catalog_seam(catalog: AdminTestApp) -> None:
    c = catalog.client
    dataset_id = await _dataset(catalog)
    root = await _base(catalog)
    files = await _outputs(catalog, "job_ship")
    model = await _register(catalog, _registration("job_ship", files, dataset_id, parent_model_id=root))
    url = f"{API}/models/{model.id}"
    data(await c.patch(f"{url}/status", json={"status": "under_review"}))  # its files are complete
    data(await c.post(f"{url}/approvals", json={"decision": "approve"}), 201)
    assert data(await c.patch(f"{url}/status", json={"status": "approved"}))["status"] == "approved"
    ctx = _ctx(catalog)
    async with ctx.store.begin() as conn:
        read = await ctx.services[MODEL_CATALOG].get(conn, model.id, lock=True)
    assert (read.status, read.type, read.parent_model_id) == ("approved", "fine-tuned", root)
    assert list(zip(read.file_names, read.files, strict=True)) == [(f.name, f.key) for f in files]


async def test_registration_is_part_of_the_callers_transaction(catalog: AdminTestApp) -> None:
    dataset_id = await _dataset(catalog)
    files = await _outputs(catalog, "job_tx")
    ctx = _ctx(catalog)

    class CallerFailed(Exception):
        pass

    with pytest.raises(CallerFailed):
        async with ctx.store.begin() as conn:
            await ctx.services[MODEL_REGISTRY].register(conn, _registration("job_tx", files, dataset_id, type="base"),
                                                        actor="training:supervisor")
            raise CallerFailed  # e.g. the job's own update failed after registering
    assert await _count(catalog, select(func.count()).select_from(models)) == 0
    assert await _store(catalog).exists(files[0].key)  # a rolled-back registration never owned the files
    assert (await _register(catalog, _registration("job_tx", files, dataset_id, type="base"))).name == "tiny-ft"


@pytest.mark.parametrize("same_job", [False, True], ids=["two-jobs", "one-job"])
async def test_concurrent_registrations(catalog: AdminTestApp, same_job: bool) -> None:
    """On PostgreSQL the second insert waits on the first's uncommitted row, then loses inside its savepoint:
    another job takes the next suffix; the same job returns the first model. (SQLite serialises writers.)"""
    dataset_id = await _dataset(catalog)
    ctx = _ctx(catalog)
    registry = ctx.services[MODEL_REGISTRY]
    first_files = await _outputs(catalog, "job_one")
    second = _registration("job_one", first_files, dataset_id, type="base") if same_job else _registration(
        "job_two", await _outputs(catalog, "job_two"), dataset_id, type="base")
    holding, release = asyncio.Event(), asyncio.Event()

    async def first() -> CatalogModel:
        async with ctx.store.begin() as conn:
            model = await registry.register(conn, _registration("job_one", first_files, dataset_id, type="base"),
                                            actor="a")
            holding.set()
            await release.wait()
        return model

    one = asyncio.create_task(first())
    await holding.wait()
    two = asyncio.create_task(_register(catalog, second, actor="b"))
    async with ctx.store.read() as conn:
        postgres = conn.dialect.name == "postgresql"
    while postgres and not two.done():  # wait until the second insert is blocked by the first's row
        async with ctx.store.read() as conn:
            waiting = (await conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                                               "current_database() AND wait_event_type = 'Lock'"))).scalar_one()
        if waiting:
            break
        await asyncio.sleep(0.01)
    assert not two.done()
    release.set()
    won, other = await one, await two
    assert won.name == "tiny-ft"
    if same_job:
        assert other == won
    else:
        assert other.name == "tiny-ft-2" and other.id != won.id
    assert await _count(catalog, select(func.count()).select_from(models)) == (1 if same_job else 2)


async def test_live_tables_match_what_migrations_build(database_url: str) -> None:
    store = open_store(database_url, feed_mode="local")
    try:
        await migrate(store, {"catalog": CATALOG_MIGRATIONS[:1]})  # a catalog as the previous release left it
        await migrate(store, {"catalog": CATALOG_MIGRATIONS})
        assert await schema_drift(store, models, model_files, model_versions) == []
    finally:
        await store.aclose()

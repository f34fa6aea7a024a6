"""POST training/jobs: validation (each field named), references, defaults resolved, what creation records."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sqlalchemy import select

from adapters.adminapi.tables import audit_log
from control.training.tables import events, jobs, runs
from tests.control.training.support import API, FakeCatalog, catalog_with_data, create, job_body, training_app


def _fields(resp: Any) -> dict[str, str]:
    return {e["field"]: e["message"] for e in resp.json()["data"]["errors"]}


async def test_a_finetune_is_queued_with_every_default_resolved(database_url: str, tmp_path: Path) -> None:
    catalog = catalog_with_data()
    async with training_app(database_url, tmp_path, catalog=catalog) as (app, _module):
        created = await create(app)
        assert created["status"] == "queued" and created["attempt"] == 0 and created["runtime"] == "local"
        assert created["trainer"] == "reference" and created["command"] is None  # local default
        assert created["resources"] == {"useGpu": False, "gpusPerNode": 0, "nodes": 1}
        assert created["retryPolicy"] == {"maxRetries": 2, "backoffS": 0.0, "backoffMaxS": 0.0,
                                          "nonRetryableExitCodes": [2]}
        assert created["dataset"] == {"datasetId": "ds", "version": 1}  # the latest ready one
        assert created["experiment"] == "ft-1" and created["register"]["name"] == "ft-1"
        assert created["evaluateOnSuccess"] is True and created["deadlineS"] == 86400
        assert created["links"]["experiment"] == f"{API}/experiments/{created['id']}"
        assert created["timeline"][0]["status"] == "queued"
        assert ("base-1", "training_job", created["id"]) in catalog.refs  # the base cannot be deleted now
        store = app.plane.store
        assert store is not None
        async with store.read() as conn:
            row = (await conn.execute(select(jobs).where(jobs.c.id == created["id"]))).one()
            run = (await conn.execute(select(runs).where(runs.c.run_id == created["id"]))).one()
            audit = (await conn.execute(select(audit_log.c.action, audit_log.c.resource_id).where(
                audit_log.c.action == "training.job.create"))).all()
        assert row.spec["trainer"] == "reference" and len(row.token_hash) == 64
        assert run.status == "SCHEDULED" and run.job_id == created["id"]
        assert audit == [("training.job.create", created["id"])]
        assert row.token_hash not in str(created)


async def test_explicit_choices_are_kept(database_url: str, tmp_path: Path) -> None:
    async with training_app(database_url, tmp_path) as (app, _module):
        created = await create(app, name="scratch", jobType="distributed", baseModelId=None,
                               architecture={"layers": 2}, dataset={"datasetId": "ds", "version": 1},
                               command=["python", "train.py", "--fast"], image="registry.local/t:1",
                               resources={"useGpu": True, "gpusPerNode": 4, "nodes": 2},
                               retryPolicy={"maxRetries": 0, "backoffS": 5, "backoffMaxS": 50,
                                            "nonRetryableExitCodes": [2, 3]},
                               deadlineS=3600, experiment="exp-a", ownerTeam="research", env={"HF_HOME": "/cache"},
                               evaluateOnSuccess=False, register={"name": "tiny-lm", "tags": ["small"]})
    assert created["trainer"] is None and created["command"] == ["python", "train.py", "--fast"]
    assert created["resources"] == {"useGpu": True, "gpusPerNode": 4, "nodes": 2}
    assert created["retryPolicy"]["nonRetryableExitCodes"] == [2, 3] and created["deadlineS"] == 3600
    assert created["experiment"] == "exp-a" and created["ownerTeam"] == "research"
    assert created["env"] == {"HF_HOME": "/cache"} and created["evaluateOnSuccess"] is False
    assert created["register"] == {"name": "tiny-lm", "tags": ["small"], "description": ""}


async def test_every_rule_the_body_breaks_is_named_in_one_422(database_url: str, tmp_path: Path) -> None:
    async with training_app(database_url, tmp_path) as (app, _module):
        resp = await app.client.post(f"{API}/jobs", json=job_body(
            jobType="distributed", baseModelId="base-1", architecture={"layers": 2}, trainer="reference",
            command=["python", "x.py"], resources={"useGpu": False, "gpusPerNode": 2, "nodes": 1},
            retryPolicy={"backoffS": 10, "backoffMaxS": 1},
            env={"LLMOPS_JOB_ID": "x", "MLFLOW_TRACKING_URI": "x", "RANK": "0", "HF_TOKEN": "x",
                 "OK_NAME": "hf_" + "a" * 30, "1BAD": "x"}))
        assert resp.status_code == 422, resp.text
        fields = _fields(resp)
        assert set(fields) == {"architecture", "command", "resources.nodes", "resources.gpusPerNode",
                               "retryPolicy.backoffMaxS", "env.LLMOPS_JOB_ID", "env.MLFLOW_TRACKING_URI", "env.RANK",
                               "env.HF_TOKEN", "env.OK_NAME", "env.1BAD"}
        assert "reserved" in fields["env.RANK"] and "secret" in fields["env.HF_TOKEN"]
        assert "2 or more nodes" in fields["resources.nodes"]
        assert resp.json()["status"] == "fail"


async def test_type_rules_on_base_model_and_architecture(database_url: str, tmp_path: Path) -> None:
    async with training_app(database_url, tmp_path) as (app, _module):
        cases: list[tuple[dict[str, Any], str]] = [
            ({"baseModelId": None}, "baseModelId"),  # a finetune needs one
            ({"jobType": "from_scratch", "architecture": {"layers": 1}}, "baseModelId"),  # forbidden
            ({"jobType": "pretrain", "baseModelId": None}, "architecture"),  # required
            ({"jobType": "distributed", "baseModelId": None, "resources": {"nodes": 2}}, "architecture"),
            ({"resources": {"nodes": 3}}, "resources.nodes"),  # only distributed jobs have several nodes
        ]
        for over, field in cases:
            resp = await app.client.post(f"{API}/jobs", json=job_body(**over))
            assert resp.status_code == 422, (over, resp.text)
            assert field in _fields(resp), (over, resp.text)


async def test_the_base_model_and_the_dataset_are_checked_in_the_catalog(database_url: str, tmp_path: Path) -> None:
    catalog = FakeCatalog()
    catalog.add_model("draft-1", status="draft")
    catalog.add_model("ext-1", type_="external")
    catalog.add_model("base-1")
    catalog.add_dataset("ds", v1="ready", v2="uploading")
    catalog.add_dataset("raw", v1="invalid")
    async with training_app(database_url, tmp_path, catalog=catalog) as (app, _module):
        async def refused(**over: Any) -> dict[str, str]:
            resp = await app.client.post(f"{API}/jobs", json=job_body(**over))
            assert resp.status_code == 422, resp.text
            return _fields(resp)

        assert "draft" in (await refused(baseModelId="draft-1"))["baseModelId"]
        assert "external" in (await refused(baseModelId="ext-1"))["baseModelId"]
        assert "No model" in (await refused(baseModelId="nope"))["baseModelId"]
        assert "not ready" in (await refused(dataset={"datasetId": "ds", "version": 2}))["dataset.version"]
        assert "No dataset" in (await refused(dataset={"datasetId": "none"}))["dataset.datasetId"]
        assert "no version 9" in (await refused(dataset={"datasetId": "ds", "version": 9}))["dataset.version"]
        assert "not ready" in (await refused(dataset={"datasetId": "raw"}))["dataset.datasetId"]
        both = await refused(baseModelId="nope", dataset={"datasetId": "none"}, resources={"nodes": 2})
        assert set(both) == {"baseModelId", "dataset.datasetId", "resources.nodes"}
        created = await create(app, dataset={"datasetId": "ds"})
        assert created["dataset"]["version"] == 1  # v2 is not ready
        assert catalog.refs == {("base-1", "training_job", created["id"])}  # none from the refused ones


async def test_schema_errors_are_400s_naming_the_field(database_url: str, tmp_path: Path) -> None:
    async with training_app(database_url, tmp_path) as (app, _module):
        for over, field in [({"name": "Bad_Name"}, "name"), ({"name": "x" * 41}, "name"),
                            ({"jobType": "rlhf"}, "jobType"), ({"unknownField": 1}, "unknownField"),
                            ({"resources": {"nodes": 0}}, "resources.nodes"),
                            ({"hyperparameters": {"lr": [1]}}, "hyperparameters"),
                            ({"retryPolicy": {"nonRetryableExitCodes": [0]}}, "retryPolicy.nonRetryableExitCodes")]:
            resp = await app.client.post(f"{API}/jobs", json=job_body(**over))
            assert resp.status_code == 400, (over, resp.text)
            assert any(e["field"].startswith(field) for e in resp.json()["data"]["errors"]), (over, resp.text)


async def test_a_taken_name_is_a_409_and_nothing_is_written(database_url: str, tmp_path: Path) -> None:
    async with training_app(database_url, tmp_path) as (app, _module):
        first = await create(app)
        resp = await app.client.post(f"{API}/jobs", json=job_body())
        assert resp.status_code == 409 and resp.json()["data"] == {"jobId": first["id"]}, resp.text
        store = app.plane.store
        assert store is not None
        async with store.read() as conn:
            assert len((await conn.execute(select(jobs.c.id))).all()) == 1
            assert len((await conn.execute(select(events.c.id))).all()) == 1


async def test_two_creates_racing_for_one_name_make_one_job(database_url: str, tmp_path: Path) -> None:
    # the unique index settles what the check before the insert cannot: both see the name free
    async with training_app(database_url, tmp_path) as (app, _module):
        answers = await asyncio.gather(*(app.client.post(f"{API}/jobs", json=job_body()) for _ in range(4)))
        assert sorted(r.status_code for r in answers) == [201, 409, 409, 409], [r.text for r in answers]
        store = app.plane.store
        assert store is not None
        async with store.read() as conn:
            assert len((await conn.execute(select(jobs.c.id))).all()) == 1


async def test_a_viewer_cannot_submit(database_url: str, tmp_path: Path) -> None:
    async with training_app(database_url, tmp_path) as (app, _module):
        key = await app.client.post("/llm-ops/v1/admin/keys", json={"name": "v", "role": "viewer"})
        assert key.status_code == 201, key.text
        viewer = {"authorization": f"Bearer {key.json()['data']['key']}"}
        resp = await app.client.post(f"{API}/jobs", json=job_body(), headers=viewer)
        assert resp.status_code == 403, resp.text
        assert (await app.client.get(f"{API}/jobs", headers=viewer)).status_code == 200

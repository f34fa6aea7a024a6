"""A fine-tune against the real catalog (its MODEL_CATALOG, DATASET_READER, MODEL_REFS and MODEL_REGISTRY) and
the real job I/O API, on a scripted runtime: the trainer's part (storing the output) is done here with the
attempt's own token."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from adapters.adminapi import ControlCfg
from adapters.adminapi.testing import admin_test_app
from control.catalog import CatalogModule
from control.training import TrainingModule
from tests.control.catalog._helpers import data, upload
from tests.control.training.runtime_double import Cluster, ScriptedRuntime
from tests.control.training.support import API, API_BASE_URL, fast_settings

CATALOG = "/llm-ops/v1/catalog"
GGUF = b"GGUF" + b"\x03\x00\x00\x00" + b"\x00" * 100
SAFETENSORS = (lambda header: len(header).to_bytes(8, "little") + header)(b'{"__metadata__":{}}')


async def test_a_finetune_of_a_catalog_model_is_registered_with_its_lineage(database_url: str,
                                                                            tmp_path: Path) -> None:
    cluster = Cluster()
    module = TrainingModule(settings=fast_settings(), runtime=ScriptedRuntime(cluster), api_base_url=API_BASE_URL,
                            background=False)
    cfg = ControlCfg(database_url=database_url, data_dir=str(tmp_path), change_feed="poll", poll_interval_s=0.1,
                     module_settings={"catalog": {"analysis": {"workers": 1}}})
    async with admin_test_app(cfg, modules=[CatalogModule(), module]) as app:
        c = app.client
        base = data(await c.post(f"{CATALOG}/models", json={"name": "base-llm", "type": "base", "ownerTeam": "ml",
                                                            "format": "gguf"}), 201)
        data(await upload(app, f"models/{base['id']}/upload", ("files", "base.gguf", GGUF)), 201)
        draft = await c.post(f"{API}/jobs", json=_body(base["id"], "none"))
        assert draft.status_code == 422 and "draft" in draft.text  # not approved yet
        data(await c.patch(f"{CATALOG}/models/{base['id']}/status", json={"status": "under_review"}))
        data(await c.post(f"{CATALOG}/models/{base['id']}/approvals", json={"decision": "approve"}), 201)
        data(await c.patch(f"{CATALOG}/models/{base['id']}/status", json={"status": "approved"}))
        ds = data(await c.post(f"{CATALOG}/datasets", json={"name": "chats", "ownerTeam": "ml"}), 201)
        rows = "".join(json.dumps({"text": f"hello {i}"}) + "\n" for i in range(5)).encode()
        data(await upload(app, f"datasets/{ds['id']}/upload", ("file", "chats.jsonl", rows)), 201)

        job = data(await c.post(f"{API}/jobs", json=_body(base["id"], ds["id"])), 201)
        assert job["dataset"] == {"datasetId": ds["id"], "version": 1}
        refused = await c.delete(f"{CATALOG}/models/{base['id']}")
        assert refused.status_code == 409, refused.text  # the job holds a reference to its base model

        assert module.supervisor is not None
        await module.supervisor.sync_once()
        token = cluster.submits[0].secret_env["LLMOPS_JOB_TOKEN"]
        trainer = {"authorization": f"Bearer {token}"}
        for name, content in (("config.json", b'{"model_type": "tiny"}'), ("model.safetensors", SAFETENSORS)):
            stored = await c.put(f"{API}/jobs/{job['id']}/artifacts/output/{name}", content=content, headers=trainer)
            assert stored.status_code == 201, stored.text
        cluster.move(job["id"], 1, "succeeded", exit_code=0)
        await module.supervisor.sync_once()
        done = data(await c.get(f"{API}/jobs/{job['id']}"))
        assert done["status"] == "succeeded", done
        model = data(await c.get(f"{CATALOG}/models/{done['resultModelId']}"))
        lineage = data(await c.get(f"{CATALOG}/models/{done['resultModelId']}/lineage"))
        listed = data(await c.get(f"{API}/jobs", params={"modelId": done["resultModelId"]}))
        after = await c.put(f"{API}/jobs/{job['id']}/artifacts/output/late.json", content=b"{}", headers=trainer)
    assert model["type"] == "fine-tuned" and model["status"] == "draft" and model["name"] == "ft-catalog"
    assert model["parentModelId"] == base["id"] and model["trainingJobId"] == job["id"]
    assert model["trainingDatasets"] == [{"datasetId": ds["id"], "version": 1}]
    assert _has(lineage, job["id"]) and [j["id"] for j in listed["items"]] == [job["id"]]
    assert after.status_code == 401  # the token died with its job


def _body(base_id: str, dataset_id: str) -> dict[str, Any]:
    return {"name": "ft-catalog", "jobType": "finetune", "baseModelId": base_id, "dataset": {"datasetId": dataset_id}}


def _has(value: Any, wanted: str) -> bool:
    """``wanted`` appears somewhere in the JSON ``value``."""
    return wanted in json.dumps(value)

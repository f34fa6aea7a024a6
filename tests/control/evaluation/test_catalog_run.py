"""A run over a dataset uploaded to the real catalog (its DATASET_READER), through a real gateway."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from adapters.adminapi import ControlCfg
from adapters.adminapi.testing import admin_test_app
from adapters.testdoubles.mock_state import MockConfig, ScriptRule
from adapters.testdoubles.mock_upstream import MockServer
from control.catalog import CatalogModule
from control.evaluation import EvaluationModule
from tests.control.catalog._helpers import data, upload
from tests.control.evaluation.support import API, finished, gateway, settings

ROWS: list[dict[str, Any]] = [
    {"messages": [{"role": "system", "content": "Réponds brièvement."}, {"role": "user", "content": "首都は?"}],
     "reference": "東京"},
    {"messages": [{"role": "user", "content": "Столица России?"}], "reference": "Москва"},
    {"messages": [{"role": "user", "content": "عاصمة مصر؟"}], "reference": "القاهرة"},
]


async def test_a_catalog_dataset_with_chat_rows_and_non_latin_references(database_url: str, tmp_path: Path,
                                                                        mock: MockServer) -> None:
    mock.config = MockConfig(script=[ScriptRule(match="首都", reply="東京"), ScriptRule(match="Столица",
                                                                                     reply="Москва!"),
                                     ScriptRule(match="عاصمة", reply="الإسكندرية")])
    async with gateway(database_url, tmp_path, mock) as gw:
        cfg = ControlCfg(database_url=database_url, data_dir=str(tmp_path / "control"), change_feed="poll",
                         poll_interval_s=0.1, max_upload_bytes=256 * 1024,
                         module_settings={"catalog": {"analysis": {"workers": 1}}, "evaluation": settings(gw.url)})
        async with admin_test_app(cfg, modules=[CatalogModule(), EvaluationModule()]) as app:
            ds = data(await app.client.post("/llm-ops/v1/catalog/datasets", json={"name": "capitals",
                                                                                  "ownerTeam": "ml"}), 201)
            content = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS).encode()
            resp = await upload(app, f"datasets/{ds['id']}/upload", ("file", "capitals.jsonl", content))
            assert resp.status_code == 201, resp.text
            body = {"name": "capitals", "targets": [{"kind": "route", "id": "r"}],
                    "dataset": {"datasetId": ds["id"]}, "mapping": {"messages": "messages", "reference": "reference"}}
            created = await app.client.post(f"{API}/runs", json=body)
            assert created.status_code == 201, created.text
            done = await finished(app, created.json()["data"]["id"])
            items = (await app.client.get(f"{API}/runs/{done['id']}/items")).json()["data"]["items"]
    assert done["status"] == "succeeded" and done["dataset"]["version"] == 1
    assert [i["input"] for i in items] == [r["messages"] for r in ROWS]  # the chat itself was sent
    assert [i["outputs"][0]["text"] for i in items] == ["東京", "Москва!", "الإسكندرية"]
    assert [i["scores"]["0"]["exact_match"] for i in items] == [1.0, 1.0, 0.0]
    assert items[0]["scores"]["0"]["rouge1"] == 1.0 and items[1]["scores"]["0"]["rouge1"] == 1.0  # not 0
    assert done["metrics"]["0"]["chrf"]["available"] and done["metrics"]["0"]["chrf"]["value"] > 0
    sent = [r.body["messages"] for r in mock.requests if r.path.endswith("/chat/completions")]
    assert sorted(map(json.dumps, sent)) == sorted(json.dumps(r["messages"]) for r in ROWS)

"""The worker against a real gateway routing to the mock upstream: outputs, tokens, cost, metrics, bounds."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from sqlalchemy import select

from adapters.dataplane import usage_records
from adapters.testdoubles.mock_state import MockConfig, ScriptRule
from adapters.testdoubles.mock_upstream import MockServer
from tests.control.evaluation.support import API, FakeCatalog, finished, gateway, plane, qa_rows, run_body, settings


async def test_a_run_generates_through_the_gateway_and_scores_every_item(database_url: str, tmp_path: Path,
                                                                         mock: MockServer) -> None:
    mock.config = MockConfig(script=[ScriptRule(match="number 1", reply="answer 1"),
                                     ScriptRule(match="number 2", reply="Answer 2!")])
    catalog = FakeCatalog()
    catalog.datasets.add("ds", qa_rows(6))
    async with gateway(database_url, tmp_path, mock) as gw, \
            plane(database_url, tmp_path, catalog, settings(gw.url)) as (app, _module):
        created = await app.client.post(f"{API}/runs", json=run_body())
        assert created.status_code == 201, created.text
        run = created.json()["data"]
        assert run["status"] == "queued" and run["progress"] == {"done": 0, "failed": 0, "total": 6}
        assert run["targets"] == [{"kind": "route", "id": "r", "route": "r"}]
        done = await finished(app, run["id"])
        assert done["status"] == "succeeded", done
        assert done["progress"] == {"done": 6, "failed": 0, "total": 6}
        items = (await app.client.get(f"{API}/runs/{run['id']}/items", params={"pageSize": 10})).json()["data"]
        assert items["total"] == 6
        by_index = {i["index"]: i for i in items["items"]}
        assert by_index[1]["outputs"][0]["text"] == "answer 1"
        assert by_index[1]["scores"]["0"]["exact_match"] == 1.0
        assert by_index[2]["scores"]["0"]["exact_match"] == 1.0  # SQuAD normalisation: case, punctuation
        assert by_index[3]["scores"]["0"]["exact_match"] == 0.0
        out = by_index[3]["outputs"][0]
        assert out["promptTokens"] == 4 and out["completionTokens"] == 16  # the mock counts words (and the role)
        # the gateway priced it: 4 * $0.001 + 16 * $0.002
        assert Decimal(out["costUsd"]) == Decimal("0.036")
        async with app.plane.store.read() as conn:  # type: ignore[union-attr]
            usage = (await conn.execute(select(usage_records.c.request_id).where(
                usage_records.c.request_id == out["requestId"]))).scalar_one()
        assert usage.startswith(run["id"])
        metrics = done["metrics"]["0"]
        assert metrics["exact_match"]["value"] == 2 / 6 and metrics["exact_match"]["n"] == 6
        assert metrics["exact_match"]["ciLow"] <= 2 / 6 <= metrics["exact_match"]["ciHigh"]
        assert metrics["bleu"]["available"] and "nrefs:1" in metrics["bleu"]["note"]
        assert metrics["completion_tokens"]["value"] > 1
        assert Decimal(done["costUsd"]) > 0
        assert [e["event"] for e in done["timeline"]] == ["created", "started", "finished"]
        assert len(done["samples"]) == 6
        seen = [r for r in mock.requests if r.path.endswith("/chat/completions")]
        assert len(seen) == 6 and all(r.headers.get("x-llmops-evaluation-run") is None for r in seen)

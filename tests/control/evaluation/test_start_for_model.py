"""``EVALUATIONS.start_for_model``: the auto-evaluation is inherited along the model's lineage (own gate, else the
parent's, …), the run targets the new model and records the gate it came from; a model no route serves yet gets a
``waiting`` run (``test_waiting_runs``); refusals are admin errors whose message names the gate (the training
timeline shows it)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert

from adapters.adminapi import ControlCfg, NotFound, SemanticError, Unprocessable
from adapters.adminapi.seams import EVALUATIONS, CatalogModel, EvaluationStarter
from adapters.adminapi.testing import AdminTestApp, admin_test_app
from adapters.store import utcnow
from control.evaluation import EvaluationModule
from control.evaluation.lineage import MAX_GENERATIONS
from control.evaluation.tables import gates
from tests.control.evaluation.support import API, FakeCatalog, publish_routes, qa_rows, run_body
from tests.control.evaluation.test_targets import FakeServing, _ref

# base <- ft1 <- ft2 (<- ft3: served by nothing); a loop (loop_a <-> loop_b); "ep_*" endpoints serve ft1, ft2, base
# (their routes published, as serving publishes a healthy endpoint's).
LINEAGE = {"base": None, "ft1": "base", "ft2": "ft1", "ft3": "ft2", "loop_a": "loop_b", "loop_b": "loop_a"}


@pytest.fixture
async def catalog() -> FakeCatalog:
    catalog = FakeCatalog()
    catalog.datasets.add("ds", qa_rows(2))
    for model_id, parent in LINEAGE.items():
        add(catalog, model_id, parent)
    return catalog


def add(catalog: FakeCatalog, model_id: str, parent: str | None) -> None:
    catalog.models.models[model_id] = CatalogModel(
        id=model_id, name=f"model-{model_id}", type="fine-tuned" if parent else "base", status="draft", version=1,
        owner_team="team_default", parent_model_id=parent)


@pytest.fixture
async def app(database_url: str, tmp_path: Path, catalog: FakeCatalog) -> AsyncIterator[AdminTestApp]:
    serving = FakeServing([_ref(f"ep_{m}", f"{m}-route", m) for m in ("base", "ft1", "ft2", "loop_a")])
    cfg = ControlCfg(database_url=database_url, data_dir=str(tmp_path), change_feed="local",
                     module_settings={"evaluation": {"worker": False, "gateway_routes": ["r"]}})
    async with admin_test_app(cfg, modules=[catalog, EvaluationModule(), serving]) as app:
        await publish_routes(app, *(f"{m}-route" for m in ("base", "ft1", "ft2", "loop_a")))
        yield app


def starter(app: AdminTestApp) -> EvaluationStarter:
    return app.plane._require_running().contexts["evaluation"].services[EVALUATIONS]


async def set_gate(app: AdminTestApp, model_id: str, **config: Any) -> None:
    resp = await app.client.put(f"{API}/gates/model/{model_id}", json=config)
    assert resp.status_code == 200, resp.text


def auto(name: str, **over: Any) -> dict[str, Any]:
    return run_body(name=name, targets=[{"kind": "route", "id": "r"}], **over)


async def start(app: AdminTestApp, model_id: str, job: str = "job_1") -> str | None:
    return await starter(app).start_for_model(model_id=model_id, trigger=f"training:{job}", actor="alice")


async def run_of(app: AdminTestApp, run_id: str | None) -> dict[str, Any]:
    assert run_id is not None
    resp = await app.client.get(f"{API}/runs/{run_id}")
    assert resp.status_code == 200, resp.text
    return resp.json()["data"]


async def test_a_fine_tune_inherits_its_parents_auto_evaluation(app: AdminTestApp) -> None:
    assert await start(app, "ft1") is None  # no gate anywhere
    await set_gate(app, "base", autoEvaluate=auto("base suite"))
    await set_gate(app, "ft1", thresholds=[{"metric": "exact_match", "min": 0.5}])  # no autoEvaluate: not a stop
    run = await run_of(app, await start(app, "ft1", "job_7"))
    assert run["name"] == "base suite" and run["createdBy"] == "alice"
    assert run["targets"] == [{"kind": "model", "id": "ft1", "route": "ft1-route"}]  # the new model, not the gate's
    created = run["timeline"][0]
    assert created["event"] == "created"
    assert created["detail"]["trigger"] == "training:job_7" and created["detail"]["gate"] == "model/base"
    listed = (await app.client.get(f"{API}/runs", params={"modelId": "ft1"})).json()["data"]["items"]
    assert [r["id"] for r in listed] == [run["id"]]


async def test_the_nearest_gate_wins_and_a_grandparents_is_found(app: AdminTestApp) -> None:
    await set_gate(app, "base", autoEvaluate=auto("base suite"))
    grand = await run_of(app, await start(app, "ft2"))  # ft2 -> ft1 -> base
    assert grand["name"] == "base suite" and grand["timeline"][0]["detail"]["gate"] == "model/base"
    assert grand["targets"] == [{"kind": "model", "id": "ft2", "route": "ft2-route"}]
    await set_gate(app, "ft1", autoEvaluate=auto("ft1 suite"))
    assert (await run_of(app, await start(app, "ft2")))["name"] == "ft1 suite"  # the parent before the grandparent
    await set_gate(app, "ft2", autoEvaluate=auto("own suite", limit=1))
    own = await run_of(app, await start(app, "ft2"))
    assert own["name"] == "own suite" and own["timeline"][0]["detail"]["gate"] == "model/ft2"
    assert own["progress"]["total"] == 1  # the gate's run as configured (limit), only the target replaced
    assert (await run_of(app, await start(app, "base")))["name"] == "base suite"  # a base model: its own


async def test_an_unserved_model_gets_a_run_that_waits_for_it(app: AdminTestApp) -> None:
    await set_gate(app, "base", autoEvaluate=auto("base suite"))
    run = await run_of(app, await start(app, "ft3"))
    assert run["status"] == "waiting" and run["targets"] == [{"kind": "model", "id": "ft3", "route": None}]
    assert [e["event"] for e in run["timeline"]] == ["created", "waiting_for_route"]
    listed = (await app.client.get(f"{API}/runs", params={"modelId": "ft3"})).json()["data"]["items"]
    assert [r["id"] for r in listed] == [run["id"]]


async def test_a_gate_whose_run_cannot_start_names_it(app: AdminTestApp, catalog: FakeCatalog) -> None:
    await set_gate(app, "base", autoEvaluate=auto("base suite", dataset={"datasetId": "ds_gone"}))
    with pytest.raises(SemanticError) as refused:
        await start(app, "ft1")
    assert refused.value.message == ("the evaluation configured on the gate of model 'base' cannot start on model "
                                     "'ft1': Invalid dataset.datasetId: No dataset 'ds_gone'")


async def test_unknown_models_and_unreadable_gates_are_admin_errors(app: AdminTestApp) -> None:
    with pytest.raises(NotFound):
        await start(app, "mdl_missing")
    store = app.plane.store
    assert store is not None
    async with store.begin() as conn:  # a row this version cannot read
        await conn.execute(insert(gates).values(subject_kind="model", subject_id="ft1",
                                                config={"autoEvaluate": "not a run"}, created_at=utcnow(),
                                                updated_at=utcnow(), updated_by="t"))
    with pytest.raises(Unprocessable, match=r"the gate of model 'ft1' cannot be read .*set it again"):
        await start(app, "ft2")


async def test_a_lineage_loop_or_one_too_deep_ends_the_walk(app: AdminTestApp, catalog: FakeCatalog,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="llmops.evaluation"):
        assert await start(app, "loop_a") is None  # loop_a -> loop_b -> loop_a: ends where it closes, no gate
    assert "lineage of model loop_a loops at loop_a" in caplog.text
    await set_gate(app, "loop_b", autoEvaluate=auto("loop suite"))
    assert (await run_of(app, await start(app, "loop_a")))["name"] == "loop suite"  # found before the loop closes

    chain = [f"deep_{i}" for i in range(MAX_GENERATIONS + 2)]  # deep_0 is the root
    for i, model_id in enumerate(chain):
        add(catalog, model_id, chain[i - 1] if i else None)
    await set_gate(app, chain[0], autoEvaluate=auto("root suite"))
    assert await start(app, chain[-1]) is None  # the root is MAX_GENERATIONS + 1 generations up
    found = await run_of(app, await start(app, chain[-2]))  # MAX_GENERATIONS up: found (waiting: nothing serves it)
    assert found["name"] == "root suite" and found["status"] == "waiting"

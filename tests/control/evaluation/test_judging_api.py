"""``POST runs/{id}/llm-judge`` and judged runs through the evaluation module, its worker and a real gateway
(the mock upstream, a test double, scripted with the judge's answers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adapters.testdoubles.mock_state import MockConfig, ScriptRule
from adapters.testdoubles.mock_upstream import MockServer
from tests.control.evaluation.support import (
    API,
    FakeCatalog,
    finished,
    gateway,
    plane,
    qa_rows,
    run_body,
    settings,
    until,
)
from tests.control.evaluation.support_j import data, fail, key, seed_run

JUDGE = {"model": {"kind": "route", "id": "r2"}, "rubric": "helpfulness"}


async def test_judging_a_finished_run(database_url: str, tmp_path: Path, mock: MockServer) -> None:
    # Generation answers "answer <i>"; the judge (route r2, same mock) scores by what it reads.
    mock.config = MockConfig(script=[ScriptRule(match="<response>\nanswer 1\n", reply='{"score": 2}'),
                                     ScriptRule(match="<response>\nanswer", reply='{"score": 4, "rationale": "ok"}'),
                                     *[ScriptRule(match=f"number {i}", reply=f"answer {i}") for i in range(5)]])
    catalog = FakeCatalog()
    catalog.datasets.add("ds", qa_rows(5))
    async with gateway(database_url, tmp_path, mock) as gw, \
            plane(database_url, tmp_path, catalog, settings(gw.url)) as (app, _module):
        c = app.client
        run = data(await c.post(f"{API}/runs", json=run_body()), 201)["id"]
        assert (await finished(app, run))["status"] == "succeeded"
        judge = f"{API}/runs/{run}/llm-judge"

        viewer, _ = await key(app, "viewer", "v")
        fail(await c.post(judge, json={"judge": JUDGE}, headers=viewer), 403)
        bad = fail(await c.post(judge, json={"judge": {**JUDGE, "mode": "pairwise", "rubric": "{{ nope }}",
                                                       "model": {"kind": "route", "id": "missing"}}}), 422)
        assert [e["field"] for e in bad["data"]["errors"]] == ["judge.mode", "judge.rubric", "judge.model.id"]
        needs_context = fail(await c.post(judge, json={"judge": {**JUDGE, "rubric": "faithfulness"}}), 422)
        assert "needs a context" in needs_context["message"]
        fail(await c.post(f"{API}/runs/run_nope/llm-judge", json={"judge": JUDGE}), 404)
        fail(await c.post(judge, json={"judge": {**JUDGE, "scale": 3}}), 400)

        developer, _ = await key(app, "developer", "d")
        queued = await c.post(judge, json={"judge": JUDGE}, headers=developer)
        assert queued.status_code == 202, queued.text
        assert queued.json()["data"]["timeline"][-1]["event"] == "judging_queued"

        async def judged() -> dict[str, Any] | None:
            body = data(await c.get(f"{API}/runs/{run}"))
            return body if body["judge"] and "parsed" in body["judge"] else None

        done = await until(judged, 60)
        assert done["judge"]["parsed"] == 5 and done["judge"]["route"] == "r2"
        assert done["metrics"]["0"]["judge_score"]["value"] == (2 + 4 * 4) / 5
        assert done["metrics"]["0"]["exact_match"]["n"] == 5  # the run's own metrics are still there
        events = [e["event"] for e in done["timeline"]]
        assert events[-3:] == ["judging_queued", "judging_started", "judging_finished"]
        judge_calls = [r for r in mock.requests if r.body and r.body.get("model") == "m0"
                       and r.body.get("response_format")]
        assert len(judge_calls) == 5
        audit = data(await c.get("/llm-ops/v1/audit/logs?action=evaluation.run.judge"))["items"]
        assert audit[0]["resourceId"] == run and audit[0]["actorName"] == "d"

        # The same judge again resumes (nothing to ask); another judge replaces the verdicts.
        data(await c.post(judge, json={"judge": JUDGE}), 202)
        await until(lambda: _judge_done(c, run, 2))
        assert len([r for r in mock.requests if r.body and r.body.get("response_format")]) == 5
        data(await c.post(judge, json={"judge": {**JUDGE, "scaleMax": 10}}), 202)
        await until(lambda: _judge_done(c, run, 3))
        redone = data(await c.get(f"{API}/runs/{run}"))
        assert redone["judge"]["scaleMax"] == 10 and redone["judge"]["calls"] == 5
        assert len([r for r in mock.requests if r.body and r.body.get("response_format")]) == 10

        cancelled = await seed_run(app.plane.store, status="cancelled", outputs={0: {0: "x"}})
        assert "only a finished run" in fail(await c.post(f"{API}/runs/{cancelled}/llm-judge",
                                                          json={"judge": JUDGE}), 409)["message"]
        nothing = await seed_run(app.plane.store, status="failed", outputs={0: {0: None}})
        assert "no output to judge" in fail(await c.post(f"{API}/runs/{nothing}/llm-judge",
                                                         json={"judge": JUDGE}), 409)["message"]
        # A failed run (its judge was unreachable, say) keeps its outputs: they can be judged again.
        failed = await seed_run(app.plane.store, status="failed", outputs={0: {0: "answer 0"}})
        data(await c.post(f"{API}/runs/{failed}/llm-judge", json={"judge": JUDGE}), 202)
        await until(lambda: _judge_done(c, failed, 1))
        assert data(await c.get(f"{API}/runs/{failed}"))["metrics"]["0"]["judge_score"]["value"] == 4


async def _judge_done(c: Any, run: str, times: int) -> bool:
    timeline = data(await c.get(f"{API}/runs/{run}"))["timeline"]
    return sum(e["event"] == "judging_finished" for e in timeline) >= times


async def test_an_llm_judge_run_judges_after_generation(database_url: str, tmp_path: Path,
                                                        mock: MockServer) -> None:
    mock.config = MockConfig(script=[ScriptRule(match="<response_a>", reply='{"winner": "A"}')])
    catalog = FakeCatalog()
    catalog.datasets.add("ds", qa_rows(4))
    async with gateway(database_url, tmp_path, mock) as gw, \
            plane(database_url, tmp_path, catalog, settings(gw.url)) as (app, _module):
        body = run_body(type="llm_judge", targets=[{"kind": "route", "id": "r"}, {"kind": "route", "id": "r2"}],
                        judge={**JUDGE, "mode": "pairwise"})
        run = data(await app.client.post(f"{API}/runs", json=body), 201)["id"]
        done = await finished(app, run)
        assert done["status"] == "succeeded", done
        # "A" in both orders: the first shown always wins, so every row is a flip and nobody wins.
        assert done["judge"]["flipRate"] == 1.0 and done["judge"]["winRates"] == {"0": 0.0, "1": 0.0}
        assert done["metrics"]["1"]["judge_win_rate"]["value"] == 0.0

"""Human review: round-robin assignment, who may read and rate what, replacing ratings, and agreement."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select

from adapters.adminapi import ControlCfg
from adapters.adminapi.testing import AdminTestApp, admin_test_app
from adapters.store import utcnow
from control.evaluation.review import assign, plan_assignments
from control.evaluation.tables import assignments, events, items, judgments
from policies.evaluation.agreement import cohen_kappa
from tests.control.evaluation.support_j import API, JModule, data, fail, key, seed_run


@pytest.fixture
async def plane(database_url: str, tmp_path: Path) -> AsyncIterator[tuple[AdminTestApp, JModule]]:
    module = JModule()
    cfg = ControlCfg(database_url=database_url, data_dir=str(tmp_path / "data"), change_feed="local")
    async with admin_test_app(cfg, modules=[module]) as app:
        yield app, module


def review_cfg(reviewers: list[str], per_item: int = 2, **extra: Any) -> dict[str, Any]:
    return {"reviewers": reviewers, "ratersPerItem": per_item, "rubric": "Is it helpful?", "scaleMin": 1,
            "scaleMax": 5, **extra}


def test_round_robin_gives_distinct_reviewers_and_equal_shares() -> None:
    outputs = [(i, 0) for i in range(7)]
    plan = plan_assignments(outputs, ["a", "b", "c"], 2)
    per_output: dict[tuple[int, int], list[str]] = {}
    for out, who in plan:
        per_output.setdefault(out, []).append(who)
    assert all(len(set(w)) == 2 for w in per_output.values()) and len(per_output) == 7
    shares = Counter(who for _, who in plan)
    assert sorted(shares.values()) == [4, 5, 5] and sum(shares.values()) == 14
    assert plan[:4] == [((0, 0), "a"), ((0, 0), "b"), ((1, 0), "c"), ((1, 0), "a")]
    assert len(plan_assignments(outputs, ["a"], 3)) == 7  # never more raters than reviewers


async def test_assignment_skips_failed_outputs_and_is_idempotent(plane: tuple[AdminTestApp, JModule]) -> None:
    app, module = plane
    run = await seed_run(app.plane.store, review=review_cfg(["r1", "r2", "r3"]),
                         outputs={0: {0: "a", 1: "b", 2: None, 3: "d"}})
    assert await assign(module.ctx, run) == 6
    assert await assign(module.ctx, run) == 0
    async with app.plane.store.read() as conn:
        rows = (await conn.execute(select(assignments.c.idx, assignments.c.reviewer)
                                   .where(assignments.c.run_id == run))).all()
        logged = (await conn.execute(select(events.c.detail).where(events.c.run_id == run,
                                                                   events.c.event == "review_assigned"))).all()
    assert sorted(rows) == [(0, "r1"), (0, "r2"), (1, "r1"), (1, "r3"), (3, "r2"), (3, "r3")]
    assert [d for (d,) in logged] == [{"assignments": 6, "outputs": 3, "reviewers": 3, "ratersPerItem": 2}]


async def _reviewed_run(app: AdminTestApp, module: JModule, reviewers: list[str], n: int = 4,
                        **extra: Any) -> str:
    run = await seed_run(app.plane.store, review=review_cfg(reviewers, **extra),
                         outputs={0: {i: f"out {i}" for i in range(n)}}, references={i: f"ref {i}" for i in range(n)},
                         scores={0: {i: {"bleu": 10.0} for i in range(n)}})
    await assign(module.ctx, run)
    return run


async def test_who_sees_and_rates_what(plane: tuple[AdminTestApp, JModule]) -> None:
    app, module = plane
    c = app.client
    ann, ann_id = await key(app, "viewer", "ann")
    bob, _ = await key(app, "viewer", "bob")  # listed by name
    eve, eve_id = await key(app, "viewer", "eve")  # not a reviewer
    operator, _ = await key(app, "operator", "op")
    run = await _reviewed_run(app, module, [ann_id, "bob"])
    tasks = f"{API}/runs/{run}/human-review/tasks"
    submit = f"{API}/runs/{run}/human-review"

    mine = data(await c.get(tasks, headers=ann))
    assert mine["total"] == 4 and [t["item"] for t in mine["items"]] == [0, 1, 2, 3]
    first = mine["items"][0]
    assert first == {"runId": run, "item": 0, "target": 0, "input": "question 0", "output": "out 0",
                     "reference": "ref 0", "rubric": "Is it helpful?", "scaleMin": 1, "scaleMax": 5, "done": False}
    assert data(await c.get(tasks, headers=bob))["total"] == 4
    assert data(await c.get(tasks, headers=eve))["total"] == 0
    assert data(await c.get(tasks, params={"reviewer": "bob", "pageSize": 2}, headers=operator))["items"][1][
        "item"] == 1
    fail(await c.get(tasks, params={"reviewer": "bob"}, headers=ann), 403)

    summary = data(await c.post(submit, json={"item": 0, "score": 4, "comment": "good"}, headers=ann))
    assert summary["ratings"] == 1 and summary["itemsRated"] == 1 and summary["meanScore"]["value"] == 4.0
    assert data(await c.get(tasks, headers=ann))["items"][0]["done"] is True

    bad = fail(await c.post(submit, json={"item": 0, "score": 6}, headers=ann), 422)
    assert bad["data"]["errors"][0]["field"] == "score" and "1 to 5" in bad["message"]
    fail(await c.post(submit, json={"item": 0, "score": 3.5}, headers=ann), 422)
    fail(await c.post(submit, json={"item": 1, "score": 3}, headers=eve), 403)  # not assigned
    fail(await c.post(submit, json={"item": 1, "score": 3}, params={"reviewer": ann_id}, headers=bob), 403)
    assert fail(await c.post(submit, json={"item": 9, "score": 3}, headers=ann), 422)["data"]["errors"][0][
        "field"] == "item"
    fail(await c.post(submit, json={"item": 0, "score": "4"}, headers=ann), 400)
    fail(await c.post(f"{API}/runs/run_nope/human-review", json={"item": 0, "score": 4}, headers=ann), 404)
    no_review = await seed_run(app.plane.store, outputs={0: {0: "x"}})
    fail(await c.post(f"{API}/runs/{no_review}/human-review", json={"item": 0, "score": 4}, headers=ann), 409)

    # A second rating by the same reviewer replaces the first; an operator may enter one for a reviewer.
    replaced = data(await c.post(submit, json={"item": 0, "score": 2}, headers=ann))
    assert replaced["ratings"] == 1 and replaced["meanScore"]["value"] == 2.0
    data(await c.post(submit, json={"item": 0, "score": 4}, params={"reviewer": "bob"}, headers=operator))
    audit = data(await c.get("/llm-ops/v1/audit/logs?action=evaluation.review.submit"))["items"]
    assert audit[0]["after"] == {"item": 0, "target": 0, "reviewer": "bob", "score": 4.0}
    assert audit[0]["actorName"] == "op" and eve_id not in str(audit)


async def test_summary_agreement_and_scores(plane: tuple[AdminTestApp, JModule]) -> None:
    app, module = plane
    c = app.client
    ann, ann_id = await key(app, "viewer", "ann")
    bob, bob_id = await key(app, "viewer", "bob")
    run = await _reviewed_run(app, module, [ann_id, bob_id], n=6)
    a_scores, b_scores = [1, 2, 3, 4, 5, 5], [1, 3, 3, 5, 4, 5]
    for i, (a, b) in enumerate(zip(a_scores, b_scores, strict=True)):
        data(await c.post(f"{API}/runs/{run}/human-review", json={"item": i, "score": a}, headers=ann))
        summary = data(await c.post(f"{API}/runs/{run}/human-review", json={"item": i, "score": b}, headers=bob))
    expected = cohen_kappa([float(x) for x in a_scores], [float(x) for x in b_scores], weights="quadratic",
                           labels=[1.0, 2.0, 3.0, 4.0, 5.0])
    assert summary["agreement"]["method"] == "cohen_kappa_weighted"
    assert summary["agreement"]["value"] == pytest.approx(expected) and summary["agreement"]["n"] == 6
    means = [(a + b) / 2 for a, b in zip(a_scores, b_scores, strict=True)]
    assert summary["meanScore"]["value"] == pytest.approx(sum(means) / 6) and summary["meanScore"]["n"] == 6
    assert summary["judgeAgreement"] is None

    async with app.plane.store.read() as conn:
        stored = dict((await conn.execute(select(items.c.idx, items.c.scores).where(items.c.run_id == run))).all())
    assert stored[1] == {"bleu": 10.0, "human_score": 2.5}

    # Three raters on some outputs: Krippendorff's alpha (missing ratings allowed).
    cy, cy_id = await key(app, "viewer", "cy")
    three = await _reviewed_run(app, module, [ann_id, bob_id, cy_id], n=3)
    for headers, scores in ((ann, {0: 1, 1: 2}), (bob, {0: 1, 2: 3}), (cy, {1: 2, 2: 3})):  # as round-robin assigned
        for item, score in scores.items():
            summary = data(await c.post(f"{API}/runs/{three}/human-review", json={"item": item, "score": score},
                                        headers=headers))
    assert summary["agreement"]["method"] == "krippendorff_alpha" and summary["agreement"]["value"] == 1.0


async def test_the_judges_agreement_with_the_humans(plane: tuple[AdminTestApp, JModule]) -> None:
    app, module = plane
    c = app.client
    ann, ann_id = await key(app, "viewer", "ann")
    bob, bob_id = await key(app, "viewer", "bob")
    judge = {"model": {"kind": "route", "id": "judge"}, "mode": "pointwise", "rubric": "helpfulness",
             "scaleMin": 1, "scaleMax": 5}
    run = await seed_run(app.plane.store, review=review_cfg([ann_id, bob_id]), judge=judge,
                         outputs={0: {i: f"out {i}" for i in range(4)}})
    await assign(module.ctx, run)
    judged = [5, 1, 3, 4]
    async with app.plane.store.begin() as conn:
        await conn.execute(insert(judgments), [
            {"run_id": run, "idx": i, "kind": "pointwise", "target": 0, "order": 0, "judge_route": "judge",
             "raw": "{}", "parsed": True, "score": float(s), "created_at": utcnow()} for i, s in enumerate(judged)])
    # Humans: item means 5, 1.5 (rounds half up to 2), 3, 4.
    for i, (a, b) in enumerate([(5, 5), (1, 2), (3, 3), (4, 4)]):
        data(await c.post(f"{API}/runs/{run}/human-review", json={"item": i, "score": a}, headers=ann))
        summary = data(await c.post(f"{API}/runs/{run}/human-review", json={"item": i, "score": b}, headers=bob))
    ja = summary["judgeAgreement"]
    assert ja["method"] == "cohen_kappa_weighted" and ja["n"] == 4 and ja["raters"] == 2
    assert ja["value"] == pytest.approx(cohen_kappa([5.0, 1.0, 3.0, 4.0], [5.0, 2.0, 3.0, 4.0],
                                                    weights="quadratic", labels=[1.0, 2.0, 3.0, 4.0, 5.0]))
    assert 0.8 < ja["value"] < 1.0

    other_scale = await seed_run(app.plane.store, review=review_cfg([ann_id]), judge={**judge, "scaleMax": 10},
                                 outputs={0: {0: "x"}})
    await assign(module.ctx, other_scale)
    async with app.plane.store.begin() as conn:
        await conn.execute(insert(judgments).values(run_id=other_scale, idx=0, kind="pointwise", target=0, order=0,
                                                    judge_route="judge", raw="{}", parsed=True, score=7.0,
                                                    created_at=utcnow()))
    summary = data(await c.post(f"{API}/runs/{other_scale}/human-review", json={"item": 0, "score": 3}, headers=ann))
    assert summary["judgeAgreement"]["value"] is None and "scale differs" in summary["judgeAgreement"]["note"]


async def test_a_pairwise_judges_agreement_with_the_humans_preference(plane: tuple[AdminTestApp, JModule]) -> None:
    app, module = plane
    c = app.client
    ann, ann_id = await key(app, "viewer", "ann")
    judge = {"model": {"kind": "route", "id": "judge"}, "mode": "pairwise", "rubric": "helpfulness",
             "scaleMin": 1, "scaleMax": 5}
    two = [{"kind": "route", "id": "a", "route": "a"}, {"kind": "route", "id": "b", "route": "b"}]
    run = await seed_run(app.plane.store, targets=two, review=review_cfg([ann_id], per_item=1), judge=judge,
                         outputs={0: {i: f"a{i}" for i in range(4)}, 1: {i: f"b{i}" for i in range(4)}})
    await assign(module.ctx, run)
    # Per row, the answers shown (A, B) in order 0 (A = target 0) and order 1 (A = target 1).
    verdicts = {0: ("A", "B"),  # target 0 wins
                1: ("B", "A"),  # target 1 wins
                2: ("A", "A"),  # the orders disagree: no preference
                3: ("tie", "tie")}
    async with app.plane.store.begin() as conn:
        await conn.execute(insert(judgments), [
            {"run_id": run, "idx": i, "kind": "pairwise", "target": 0, "order": o, "judge_route": "judge",
             "raw": f'{{"winner": "{w}"}}', "parsed": True, "winner": w, "created_at": utcnow()}
            for i, pair in verdicts.items() for o, w in enumerate(pair)])
    # ann prefers target 0 on rows 0 and 2, target 1 on row 1, neither on row 3: the judge disagrees on row 2.
    for i, (a, b) in enumerate([(5, 2), (1, 4), (4, 3), (3, 3)]):
        data(await c.post(f"{API}/runs/{run}/human-review", json={"item": i, "score": a, "target": 0}, headers=ann))
        summary = data(await c.post(f"{API}/runs/{run}/human-review", json={"item": i, "score": b, "target": 1},
                                    headers=ann))
    ja = summary["judgeAgreement"]
    assert ja["method"] == "cohen_kappa_weighted" and ja["n"] == 4 and "pairwise verdict" in ja["compared"]
    assert ja["value"] == pytest.approx(cohen_kappa([1.0, -1.0, 0.0, 0.0], [1.0, -1.0, 1.0, 0.0],
                                                    weights="quadratic", labels=[-1.0, 0.0, 1.0]))

"""The LLM judge through a real gateway: the mock upstream (a test double) scripted with the judge's answers."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from sqlalchemy import select

from adapters.adminapi import ControlCfg
from adapters.adminapi.testing import AdminTestApp, admin_test_app
from adapters.errors import UpstreamStatus
from adapters.testdoubles.function_upstream import FunctionUpstream, chat_completion
from adapters.testdoubles.mock_state import ScriptRule
from adapters.testdoubles.mock_upstream import MockServer
from adapters.upstream.base import UpstreamCall
from control.evaluation.judging import JudgeCaller, judge_run
from control.evaluation.tables import items, judgments, runs
from tests.conftest import RunningGateway, run_gateway
from tests.control.evaluation.support_j import JModule, seed_run

POINTWISE = {"model": {"kind": "route", "id": "judge"}, "mode": "pointwise", "rubric": "helpfulness",
             "scaleMin": 1, "scaleMax": 5}
PAIRWISE = {**POINTWISE, "mode": "pairwise"}


@pytest.fixture
async def plane(database_url: str, tmp_path: Path) -> AsyncIterator[tuple[AdminTestApp, JModule]]:
    module = JModule()
    cfg = ControlCfg(database_url=database_url, data_dir=str(tmp_path / "data"), change_feed="local")
    async with admin_test_app(cfg, modules=[module]) as app:
        yield app, module


def _gateway_cfg(base_url: str) -> dict[str, Any]:
    return {"server": {"log_level": "warning"}, "control": {"enabled": False},
            "providers": [{"name": "p", "kind": "openai", "base_url": base_url}],
            "routes": [{"name": "judge", "targets": [{"provider": "p", "model": "judge-model"}], "retries": 0,
                        "retry_backoff_s": 0.0}]}


@contextlib.asynccontextmanager
async def caller_for(gw: RunningGateway) -> AsyncIterator[JudgeCaller]:
    """A ``JudgeCaller`` posting to the gateway's /v1/chat/completions, as the worker's client does."""
    async with aiohttp.ClientSession() as session:
        async def ask(body: dict[str, Any]) -> tuple[int, dict[str, Any] | None, str | None]:
            async with session.post(gw.url + "/v1/chat/completions", json=body,
                                    headers={"x-llmops-evaluation-run": "test"}) as resp:
                text = await resp.text()
                return resp.status, json.loads(text) if text else None, resp.headers.get("x-request-id")

        yield JudgeCaller(ask=ask, route="judge")


def script(mock: MockServer, rules: dict[str, str]) -> None:
    mock.config = msgspec.structs.replace(mock.config, script=[ScriptRule(match=m, reply=r) for m, r in rules.items()])


async def judgment_rows(app: AdminTestApp, run_id: str) -> list[Any]:
    async with app.plane.store.read() as conn:
        return list((await conn.execute(select(judgments).where(judgments.c.run_id == run_id)
                                        .order_by(judgments.c.idx, judgments.c.target, judgments.c.order))).all())


async def run_row(app: AdminTestApp, run_id: str) -> Any:
    async with app.plane.store.read() as conn:
        return (await conn.execute(select(runs).where(runs.c.id == run_id))).one()


async def item_scores(app: AdminTestApp, run_id: str) -> dict[tuple[int, int], dict[str, Any]]:
    async with app.plane.store.read() as conn:
        rows = await conn.execute(select(items.c.idx, items.c.target, items.c.scores).where(items.c.run_id == run_id))
        return {(i, t): s for i, t, s in rows}


async def test_pointwise_scores_parsed_strictly_and_never_twice(plane: tuple[AdminTestApp, JModule],
                                                               mock: MockServer) -> None:
    app, module = plane
    run = await seed_run(app.plane.store, outputs={0: {i: f"output-{i}" for i in range(7)}},
                         scores={0: {i: {"bleu": 1.0} for i in range(7)}}, judge=POINTWISE)
    script(mock, {
        "output-0\n": '{"score": 5, "rationale": "complete"}',
        "output-1\n": '```json\n{"score": 4, "rationale": "fine"}\n```',
        "output-2\n": "Score: 2",  # the documented pattern
        "output-3\n": '{"score": 3, "rationale": "ok"}',
        "output-4\n": "I'd give it a 4 out of 5.",  # prose: unparseable, never read as a 4
        "output-5\n": '{"score": 9, "rationale": "off the scale"}',  # out of range: unparseable
        "output-6\n": '{"score": 4} {"score": 5}',  # two objects: unparseable
    })
    async with run_gateway(_gateway_cfg(mock.url)) as gw, caller_for(gw) as caller:
        summary = await judge_run(module.ctx, run, POINTWISE, caller)
        assert caller.calls == 7
        sent = [r.body for r in mock.requests if r.path == "/v1/chat/completions"]
        assert len(sent) == 7 and all(b["response_format"] == {"type": "json_object"} and b["temperature"] == 0
                                      and b["model"] == "judge-model" for b in sent)

        assert summary is not None
        assert (summary["parsed"], summary["unparseable"], summary["failed"], summary["calls"]) == (4, 3, 0, 7)
        assert summary["mode"] == "pointwise" and summary["route"] == "judge" and summary["jsonMode"] is True
        mean = summary["targets"]["0"]["meanScore"]
        assert mean["value"] == pytest.approx((5 + 4 + 2 + 3) / 4) and mean["n"] == 4
        assert mean["ciLow"] <= mean["value"] <= mean["ciHigh"]

        rows = await judgment_rows(app, run)
        assert [(r.idx, r.parsed, r.score) for r in rows] == [
            (0, True, 5.0), (1, True, 4.0), (2, True, 2.0), (3, True, 3.0), (4, False, None), (5, False, None),
            (6, False, None)]
        assert rows[4].raw == "I'd give it a 4 out of 5." and rows[4].error  # kept as received, with the reason
        assert rows[0].rationale == "complete" and all(r.judge_route == "judge" for r in rows)

        stored = await run_row(app, run)
        assert stored.judge_summary == summary
        assert stored.metrics_summary["0"]["judge_score"]["value"] == pytest.approx(3.5)
        scores = await item_scores(app, run)
        assert scores[(0, 0)] == {"bleu": 1.0, "judge_score": 5.0} and scores[(4, 0)]["judge_score"] is None

        # Judged again: every answer is stored, so nothing is asked twice and the summary is the same.
        caller.calls = 0
        again = await judge_run(module.ctx, run, POINTWISE, caller)
        assert caller.calls == 0 and again is not None and again["parsed"] == 4
        assert len(await judgment_rows(app, run)) == 7


async def test_pairwise_runs_both_orders_and_counts_flips(plane: tuple[AdminTestApp, JModule],
                                                          mock: MockServer) -> None:
    app, module = plane
    two = [{"kind": "route", "id": "a", "route": "a"}, {"kind": "route", "id": "b", "route": "b"}]
    run = await seed_run(app.plane.store, targets=two,
                         outputs={0: {i: f"x{i}" for i in range(6)}, 1: {i: f"y{i}" for i in range(6)}})

    def order(a: str, b: str) -> str:
        return f"<response_a>\n{a}\n</response_a>\n<response_b>\n{b}\n</response_b>"

    script(mock, {
        order("x0", "y0"): '{"winner": "A"}', order("y0", "x0"): '{"winner": "B"}',  # x wins in both orders
        order("x1", "y1"): '{"winner": "B"}', order("y1", "x1"): '{"winner": "A"}',  # y wins in both
        order("x2", "y2"): '{"winner": "tie"}', order("y2", "x2"): "Winner: tie",  # a tie, once by the pattern
        order("x3", "y3"): '{"winner": "A"}', order("y3", "x3"): '{"winner": "A"}',  # the first shown: a flip
        order("x4", "y4"): '{"winner": "B"}', order("y4", "x4"): '{"winner": "A"}',  # y wins
        order("x5", "y5"): '{"winner": "A"}', order("y5", "x5"): "A is better",  # one order unparseable
    })
    async with run_gateway(_gateway_cfg(mock.url)) as gw, caller_for(gw) as caller:
        summary = await judge_run(module.ctx, run, PAIRWISE, caller)
    assert caller.calls == 12
    assert summary is not None
    assert summary["outcomes"] == {"x": 1, "y": 2, "tie": 1, "inconsistent": 1, "unparsed": 1}
    assert summary["winRates"] == {"0": 0.2, "1": 0.4} and summary["tieRate"] == 0.2
    assert summary["flipRate"] == 0.2 and summary["unparseable"] == 1 and summary["rows"] == 5
    rows = await judgment_rows(app, run)
    assert [(r.idx, r.order, r.winner) for r in rows][:2] == [(0, 0, "A"), (0, 1, "B")]
    stored = await run_row(app, run)
    assert stored.metrics_summary["1"]["judge_win_rate"]["value"] == pytest.approx(0.4)
    assert stored.metrics_summary["0"]["judge_win_rate"]["n"] == 5
    scores = await item_scores(app, run)
    assert [scores[(i, 0)]["judge_win_rate"] for i in range(6)] == [1.0, 0.0, 0.0, 0.0, 0.0, None]
    assert [scores[(i, 1)]["judge_win_rate"] for i in range(6)] == [0.0, 1.0, 0.0, 0.0, 1.0, None]


async def test_a_route_without_json_mode_is_read_by_the_pattern(plane: tuple[AdminTestApp, JModule]) -> None:
    app, module = plane
    run = await seed_run(app.plane.store, outputs={0: {i: f"o{i}" for i in range(3)}})
    seen: list[dict[str, Any]] = []

    def handler(call: UpstreamCall) -> Any:
        seen.append(call.body)
        if "response_format" in call.body:
            raise UpstreamStatus(400, b'{"error": {"message": "response_format is not supported"}}', "fn")
        return chat_completion("Score: 3\nRationale: fine", model="judge-model")

    cfg = {**_gateway_cfg("http://unused.test/v1")}
    async with run_gateway(cfg, upstreams={"p": FunctionUpstream(handler, "p")}) as gw, caller_for(gw) as caller:
        summary = await judge_run(module.ctx, run, POINTWISE, caller)
    assert summary is not None and summary["jsonMode"] is False and summary["parsed"] == 3
    # Calls already in flight when the first 400 came back are asked again; after it, none has JSON mode.
    with_json = [i for i, b in enumerate(seen) if "response_format" in b]
    assert 1 <= len(with_json) <= 3 and len(seen) == 3 + len(with_json)
    assert with_json == list(range(len(with_json)))


async def test_failed_calls_are_recorded_and_asked_again(plane: tuple[AdminTestApp, JModule]) -> None:
    app, module = plane
    run = await seed_run(app.plane.store, outputs={0: {0: "good", 1: "bad", 2: None}})  # row 2 failed generation
    broken = {"bad"}

    def handler(call: UpstreamCall) -> Any:
        text = call.body["messages"][-1]["content"]
        if any(f"\n{b}\n" in text for b in broken):
            raise UpstreamStatus(503, b'{"error": {"message": "overloaded"}}', "fn")
        return chat_completion('{"score": 4, "rationale": "ok"}', model="judge-model")

    async with run_gateway(_gateway_cfg("http://unused.test/v1"), upstreams={"p": FunctionUpstream(handler, "p")}
                           ) as gw, caller_for(gw) as caller:
        summary = await judge_run(module.ctx, run, POINTWISE, caller)
        assert summary is not None and (summary["parsed"], summary["failed"], summary["calls"]) == (1, 1, 2)
        failed = (await judgment_rows(app, run))[1]
        assert failed.raw is None and not failed.parsed and failed.error.startswith("HTTP 503")
        broken.clear()
        caller.calls = 0
        summary = await judge_run(module.ctx, run, POINTWISE, caller)
        assert caller.calls == 1  # only the failed one, never the one already answered
        assert summary is not None and (summary["parsed"], summary["failed"]) == (2, 0)


async def test_a_cancelled_run_stops_judging(plane: tuple[AdminTestApp, JModule], mock: MockServer) -> None:
    app, module = plane
    run = await seed_run(app.plane.store, status="cancelling", outputs={0: {i: f"o{i}" for i in range(5)}})
    async with run_gateway(_gateway_cfg(mock.url)) as gw, caller_for(gw) as caller:
        assert await judge_run(module.ctx, run, POINTWISE, caller) is None
        assert caller.calls == 0
        stopped = await judge_run(module.ctx, run, POINTWISE, caller, stop=lambda: True)
    assert stopped is None and (await run_row(app, run)).judge_summary is None


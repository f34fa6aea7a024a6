"""Experiments on the request path: a variant's route, params, template and variables applied, the
experiment named in headers and usage records on every endpoint, and a rollback published through the
store in force on a running gateway without a restart."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from adapters.snapshots import ExperimentsSnapshot
from adapters.store import publish
from adapters.testdoubles.mock_upstream import MockServer
from policies.prompts.assignment import unit_point
from tests.conftest import capture_usage
from tests.gateway.inprocess import in_process
from tests.gateway.prompts.support import MSG, SUPPORT, config, experiment

URL = "/v1/chat/completions"
SHORT = {"name": "short", "messages": [{"role": "system", "content": "Be {{ tone }} about {{ product }}."}],
         "variables": [{"name": "tone"}, {"name": "product"}]}
EXP = {"id": "exp1", "route": "support", "state": "running", "variants": [
    {"name": "control"},
    {"name": "b", "route": "alt", "template": "short", "params": {"temperature": 0.1, "max_tokens": 7},
     "variables": {"tone": "terse"}}]}
USERS = [f"user-{i}" for i in range(40)]


def _expected(user: str, experiment_id: str = "exp1") -> str:
    """The variant the pure assignment gives a user of a two-arm, equal-weight, fully allocated experiment."""
    return "control" if unit_point(experiment_id, user)[1] < 0.5 else "b"


async def test_each_variant_applies_its_route_params_template_and_variables(mock: MockServer) -> None:
    cfg = config(mock.url, prompts={"templates": [SUPPORT, SHORT], "experiments": [EXP]})
    async with in_process(cfg) as (gw, client):
        seen = capture_usage(gw)
        got: dict[str, str] = {}
        for user in USERS:
            r = await client.post(URL, json={"model": "support", "messages": MSG, "user": user,
                                             "llmops": {"variables": {"customer": "ACME"}, "episode_id": user}})
            assert r.status_code == 200, r.text
            assert r.headers["x-llmops-experiment"] == "exp1"
            variant = got[user] = r.headers["x-llmops-variant"]
            sent = mock.requests[-1].body
            assert "llmops" not in sent and sent["messages"][1:] == MSG
            if variant == "control":
                assert r.headers["x-llmops-route"] == "support" and sent["model"] == "m-support"
                assert r.headers["x-llmops-template-version"] == "support@1"
                assert sent["messages"][0]["content"] == "You support llmops for ACME, in English."
                assert "temperature" not in sent
            else:
                assert r.headers["x-llmops-route"] == "alt" and sent["model"] == "m-alt"  # redirected
                assert r.headers["x-llmops-template-version"] == "short@1"
                assert sent["messages"][0]["content"] == "Be terse about llmops."  # route < variant variables
                assert (sent["temperature"], sent["max_tokens"]) == (0.1, 7)
        assert got == {u: _expected(u) for u in USERS}  # sticky: the stable hash, nothing else
        assert set(got.values()) == {"control", "b"}
        again = await client.post(URL, json={"model": "support", "messages": MSG, "user": USERS[0],
                                             "metadata": {"customer": "x"}})
        assert again.headers["x-llmops-variant"] == got[USERS[0]]
        await gw.usage.drain()
    records = [(r.route, r.experiment, r.variant, r.episode_id) for r in seen[:len(USERS)]]
    assert records == [("support" if got[u] == "control" else "alt", "exp1", got[u], u) for u in USERS]


async def test_experiment_headers_reach_the_client_on_every_endpoint(mock: MockServer) -> None:
    exp = {**EXP, "variants": [{"name": "control"}, {"name": "b", "route": "alt"}]}
    cfg = config(mock.url, prompts={"templates": [SUPPORT], "experiments": [exp]})
    user = next(u for u in USERS if _expected(u) == "b")
    async with in_process(cfg) as (gw, client):
        seen = capture_usage(gw)
        chat = {"messages": MSG, "stream": True, "llmops": {"variables": {"customer": "c"}}}
        for path, extra in ((URL, chat), ("/v1/completions", {"prompt": "hi"}),
                            ("/v1/completions", {"prompt": "hi", "stream": True}),
                            ("/v1/embeddings", {"input": "hi"}), ("/v1/responses", {"input": "hi", "stream": True})):
            r = await client.post(path, json={"model": "support", "user": user, **extra})
            assert r.status_code == 200, (path, r.text)
            assert (r.headers["x-llmops-experiment"], r.headers["x-llmops-variant"]) == ("exp1", "b"), path
            assert r.headers["x-llmops-route"] == "alt" and mock.requests[-1].body["model"] == "m-alt"
        await gw.usage.drain()
    assert {(r.endpoint, r.variant, r.route) for r in seen} == {
        (e, "b", "alt") for e in ("chat", "completions", "embeddings", "responses")}


async def test_outside_the_allocation_the_route_serves_as_usual(mock: MockServer) -> None:
    exp = {**EXP, "allocation": 0.0}
    cfg = config(mock.url, prompts={"templates": [SUPPORT, SHORT], "experiments": [exp]})
    async with in_process(cfg) as (gw, client):
        seen = capture_usage(gw)
        r = await client.post(URL, json={"model": "support", "messages": MSG, "user": "u",
                                         "llmops": {"variables": {"customer": "c"}}})
        assert r.status_code == 200 and "x-llmops-experiment" not in r.headers
        assert r.headers["x-llmops-template-version"] == "support@1"
        await gw.usage.drain()
    assert (seen[0].experiment, seen[0].variant) == (None, None)


def _experiments(*specs: Any) -> Any:
    async def build(generation: int, at: datetime) -> ExperimentsSnapshot:
        return ExperimentsSnapshot(generation=generation, published_at=at, experiments=list(specs))
    return build


async def test_a_published_rollback_is_in_force_without_a_restart(mock: MockServer, database_url: str,
                                                                  tmp_path: Path) -> None:
    cfg = config(mock.url, prompts={"templates": [SUPPORT, SHORT]},
                 control={"database_url": database_url, "data_dir": str(tmp_path), "modules": ["governance"]})
    async with in_process(cfg) as (gw, client):
        store = gw.store
        assert store is not None

        async def publish_and_wait(*specs: Any) -> None:
            before = gw.generation.control.experiments
            async with store.begin() as conn:
                await publish(conn, store.changes, "experiments", _experiments(*specs))
            start = time.monotonic()
            while gw.generation.control.experiments is before:  # followed live, no rebuild, no restart
                assert time.monotonic() - start < 2.0
                await asyncio.sleep(0.01)

        async def variants() -> Counter[str]:
            out: Counter[str] = Counter()
            for user in USERS:
                r = await client.post(URL, json={"model": "support", "messages": MSG, "user": user,
                                                 "llmops": {"variables": {"customer": "c"}}})
                assert r.status_code == 200, r.text
                out[f"{r.headers.get('x-llmops-variant')}:{mock.requests[-1].body['model']}"] += 1
            return out

        generation = gw.generation
        await publish_and_wait(experiment(EXP, state="running", started_at=time.time()))
        running = await variants()
        assert set(running) == {"control:m-support", "b:m-alt"}
        await publish_and_wait(experiment(EXP, state="running", started_at=time.time(), rolled_back=True))
        assert await variants() == {"control:m-support": len(USERS)}  # everyone on control, still counted
        assert gw.generation is generation  # no rebuild, let alone a restart

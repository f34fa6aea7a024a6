"""The gateway YAML's ``prompts:`` section through a real gateway app: synced at start-up, a whole experiment
(with the template it uses) applied atomically on reload, and a reload the prompts module refuses rejected
as a whole (routes included), on both databases."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from adapters.store import Store
from gateway.config import ConfigError, decode_config
from tests.conftest import RunningGateway, run_gateway

from .conftest import experiment, published, template

ADMIN = {"authorization": "Bearer adm-secret"}
RELOAD = "/llm-ops/v1/gateway/reload"


@pytest.fixture
def admin_key() -> Iterator[None]:
    os.environ["LLMOPS_ADMIN_KEY"] = "adm-secret"
    try:
        yield
    finally:
        del os.environ["LLMOPS_ADMIN_KEY"]


def config(database_url: str, data_dir: Path, **prompts: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "server": {"log_level": "warning"},
        "control": {"database_url": database_url, "data_dir": str(data_dir), "modules": ["prompts"]},
        "providers": [{"name": "mock", "kind": "openai", "base_url": "builtin:mock"}],
        "routes": [{"name": "chat", "targets": [{"provider": "mock", "model": "m"}]}],
    }
    if prompts:
        cfg["prompts"] = prompts
    return cfg


async def _models(h: httpx.AsyncClient) -> list[str]:
    return sorted(m["id"] for m in (await h.get("/v1/models")).json()["data"])


async def _followed(g: RunningGateway, templates: int, experiments: int) -> None:
    """Wait until the gateway serves these generations; it reads both kinds in one read, so it holds both."""
    deadline = time.monotonic() + 5
    while True:
        control = g.gateway.generation.control
        if control.experiments is not None and control.experiments.generation >= experiments:
            assert control.templates is not None and control.templates.generation == templates
            assert control.experiments.generation == experiments
            return
        assert time.monotonic() < deadline, "the gateway never read the new snapshots"
        await asyncio.sleep(0.01)


def _store(g: RunningGateway) -> Store:
    assert g.gateway.store is not None
    return g.gateway.store


@pytest.fixture
async def gateway(database_url: str, tmp_path: Path, admin_key: None) -> AsyncIterator[tuple[RunningGateway, Path]]:
    path = tmp_path / "gateway.yaml"
    cfg = config(database_url, tmp_path / "data")
    path.write_text(yaml.safe_dump(cfg))
    async with run_gateway(decode_config(cfg), config_path=path) as g:
        yield g, path


async def test_a_yaml_experiment_is_applied_whole_on_reload(gateway: tuple[RunningGateway, Path],
                                                            database_url: str, tmp_path: Path) -> None:
    g, path = gateway
    store = _store(g)
    tpl0, exp0 = await published(store)
    assert tpl0.templates == [] and exp0.experiments == []
    declared = {"templates": [template()], "experiments": [experiment(route="chat", b="support", state="running")]}
    path.write_text(yaml.safe_dump(config(database_url, tmp_path / "data", **declared)))
    async with httpx.AsyncClient(base_url=g.url, timeout=10) as h:
        resp = await h.post(RELOAD, headers=ADMIN)
        assert resp.status_code == 200, resp.text
    tpl1, exp1 = await published(store)
    assert (tpl1.generation, exp1.generation) == (tpl0.generation + 1, exp0.generation + 1)  # one publish each
    assert [(t.name, t.version, t.source) for t in tpl1.templates] == [("support", 1, "config")]
    assert [(e.document.id, e.runtime.state, e.source) for e in exp1.experiments] == [("exp1", "running", "config")]
    await _followed(g, tpl1.generation, exp1.generation)
    assert g.gateway.generation.control.experiments.experiments[0].document.variants[1].template == "support"

    # the same file again (another worker's SIGHUP, say): nothing written, nothing published
    await g.gateway.reload()
    assert await published(store) == (tpl1, exp1)

    # dropped from the file: the experiment is deleted, the template stays (released to the API)
    path.write_text(yaml.safe_dump(config(database_url, tmp_path / "data")))
    await g.gateway.reload()
    tpl2, exp2 = await published(store)
    assert exp2.experiments == [] and [(t.name, t.source) for t in tpl2.templates] == [("support", "api")]


async def test_a_reload_the_prompts_module_refuses_changes_nothing(gateway: tuple[RunningGateway, Path],
                                                                   database_url: str, tmp_path: Path) -> None:
    g, path = gateway
    before = await published(_store(g))
    bad = config(database_url, tmp_path / "data", templates=[template()],
                 experiments=[experiment(route="chat", b="ghost", state="running")])
    bad["routes"].append({"name": "extra", "targets": [{"provider": "mock", "model": "x"}]})
    path.write_text(yaml.safe_dump(bad))
    async with httpx.AsyncClient(base_url=g.url, timeout=10) as h:
        resp = await h.post(RELOAD, headers=ADMIN)
        assert resp.status_code == 400, resp.text
        body = resp.json()
        assert body["status"] == "fail" and "the running config is kept" in body["message"]
        assert "prompts.experiments[0].variants[1].template: no template named 'ghost'" in body["message"]
        assert await _models(h) == ["chat"]  # the routes were not swapped either
    with pytest.raises(ConfigError, match="prompts: refused, nothing changed"):
        await g.gateway.reload()  # SIGHUP's path
    assert g.gateway.metrics.reloads.labels("error")._value.get() == 2
    assert await published(_store(g)) == before
    assert [r.name for r in g.gateway.cfg.routes] == ["chat"]


async def test_the_yaml_is_synced_at_start_up(database_url: str, tmp_path: Path, admin_key: None) -> None:
    cfg = config(database_url, tmp_path / "data", templates=[template()],
                 experiments=[experiment(route="chat", b="support@1")])
    cfg["routes"][0]["template"] = "support@1"
    async with run_gateway(decode_config(cfg)) as g, httpx.AsyncClient(base_url=g.url, timeout=10) as h:
        tpl, exp = await published(_store(g))
        assert [(t.name, t.version) for t in tpl.templates] == [("support", 1)]
        assert [(e.document.id, e.runtime.state) for e in exp.experiments] == [("exp1", "draft")]
        got = (await h.get("/llm-ops/v1/prompts/experiments/exp1", headers=ADMIN)).json()["data"]
        assert got["source"] == "config" and got["document"]["variants"][1]["template"] == "support@1"


async def test_a_rollback_reaches_the_gateway_without_a_restart(gateway: tuple[RunningGateway, Path],
                                                                 database_url: str, tmp_path: Path) -> None:
    g, path = gateway
    declared = {"templates": [template(), template("concise", "Be concise about {{ product }}.")],
                "experiments": [experiment(route="chat", a="concise", b="support", state="running")]}
    path.write_text(yaml.safe_dump(config(database_url, tmp_path / "data", **declared)))
    await g.gateway.reload()
    users = [f"user-{i}" for i in range(12)]
    async with httpx.AsyncClient(base_url=g.url, timeout=10) as h:
        async def variants() -> set[str]:
            seen = set()
            for user in users:
                r = await h.post("/v1/chat/completions", json={"model": "chat", "user": user,
                                                               "messages": [{"role": "user", "content": "hi"}]})
                assert r.status_code == 200, r.text
                assert r.headers["x-llmops-experiment"] == "exp1"
                seen.add(r.headers["x-llmops-variant"])
            return seen

        deadline = time.monotonic() + 5
        while await variants() != {"a", "b"}:  # until the gateway read the synced snapshots
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        start = time.monotonic()
        resp = await h.post("/llm-ops/v1/prompts/experiments/exp1/rollback", headers=ADMIN)
        assert resp.status_code == 200, resp.text
        while await variants() != {"a"}:  # every user on the control variant
            assert time.monotonic() - start < 3, "the rollback did not reach the gateway within 3 s"
            await asyncio.sleep(0.02)

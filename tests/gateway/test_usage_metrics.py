"""Token, cost, priced/unpriced and A/B counters from usage records: values, bounded labels, workers."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from adapters.gateway_plugins import RequestContext
from adapters.usage import Principal, UsageRecord
from gateway.usage_metrics import MAX_LABEL_CHARS, LabelLimits, UsageMetrics
from tests.conftest import capture_usage, run_gateway, simple_config

MSG = [{"role": "user", "content": "hi"}]


def _rec(route: str = "r", model: str = "m", provider: str = "p", team: str | None = "t", **kw: Any) -> UsageRecord:
    kw.setdefault("status", 200)
    kw.setdefault("latency_s", 0.2)
    return UsageRecord(request_id="same-id", route=route, provider=provider, model=model, stream=False,
                       principal=None if team is None else Principal(key_id="k-secret-id", team=team), **kw)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def _scrape(m: UsageMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(m)
    return _samples(generate_latest(registry).decode())


def test_tokens_by_kind_cost_and_pricing_counts() -> None:
    m = UsageMetrics()
    m.observe_many([
        _rec(prompt_tokens=100, completion_tokens=40, cached_read_tokens=60, cache_write_tokens=10,
             reasoning_tokens=30, cost_usd=Decimal("0.0001"), price_source="config"),
        _rec(prompt_tokens=1, completion_tokens=2, cost_usd=Decimal("0.0002"), price_source="litellm"),
        _rec(team="u", prompt_tokens=5, completion_tokens=5),  # tokens, no price: unpriced, no cost series
        _rec(provider="vllm", model="llama", team=None, prompt_tokens=7, completion_tokens=3,
             price_source="gpu_hour", gpu_usd_per_hour=Decimal(2)),  # priced by the hour: cost null here
        _rec(route="-", provider="-", model="-", status=401, usage_source="none", error="invalid_api_key"),
    ])
    s = _scrape(m)
    labels = {"route": "r", "model": "m", "provider": "p", "team": "t"}
    got = {kind: _value(s, "llmops_tokens_total", **labels, kind=kind)
           for kind in ("prompt", "completion", "cached_read", "cache_write", "reasoning")}
    assert got == {"prompt": 101, "completion": 42, "cached_read": 60, "cache_write": 10, "reasoning": 30}
    assert _value(s, "llmops_cost_usd_total", **labels) == float(Decimal("0.0003"))
    assert _value(s, "llmops_tokens_total", route="r", model="m", provider="p", team="u", kind="prompt") == 5
    assert _value(s, "llmops_cost_usd_total", route="r", model="m", provider="p", team="u") is None  # never a 0
    gpu = {"route": "r", "model": "llama", "provider": "vllm", "team": "-"}
    assert _value(s, "llmops_tokens_total", **gpu, kind="completion") == 3
    assert _value(s, "llmops_cost_usd_total", **gpu) is None
    assert _value(s, "llmops_usage_priced_total", provider="p", model="m") == 2
    assert _value(s, "llmops_usage_unpriced_total", provider="p", model="m") == 1
    assert _value(s, "llmops_usage_priced_total", provider="vllm", model="llama") == 1
    assert _value(s, "llmops_usage_unpriced_total", provider="vllm", model="llama") is None
    # The denied request used no tokens and had nothing to price: neither priced nor unpriced.
    assert not any(dict(k[1]).get("provider") == "-" for k in s if "priced" in k[0])
    # Bounded labels only: no request id, key id or user in any series.
    assert not any(v in ("same-id", "k-secret-id") for _, lbl in s for _, v in lbl)


def test_denied_records_with_tokens_count_under_dash() -> None:
    m = UsageMetrics()
    m.observe_many([_rec(route="-", provider="-", model="-", team=None, status=429, prompt_tokens=12)])
    s = _scrape(m)
    assert _value(s, "llmops_tokens_total", route="-", model="-", provider="-", team="-", kind="prompt") == 12
    assert _value(s, "llmops_usage_unpriced_total", provider="-", model="-") == 1


def test_label_budgets_send_new_values_to_other_and_cut_long_ones() -> None:
    m = UsageMetrics(limits=LabelLimits(teams=2, models=3))
    long_model = "x" * (MAX_LABEL_CHARS + 50)
    m.observe_many([_rec(team=f"team-{i}", model=long_model, prompt_tokens=1) for i in range(5)])
    m.observe_many([_rec(team="team-0", model=f"m{i}", prompt_tokens=1) for i in range(4)])
    s = _scrape(m)
    teams = {dict(k[1])["team"]: v for k, v in s.items()
             if k[0] == "llmops_tokens_total" and dict(k[1])["model"] == "x" * MAX_LABEL_CHARS}
    assert teams == {"team-0": 1, "team-1": 1, "other": 3}
    models = {dict(k[1])["model"] for k in s if k[0] == "llmops_tokens_total"}
    assert models == {"x" * MAX_LABEL_CHARS, "m0", "m1", "other"}
    assert len(m._team._kept) == 2 and m._team.overflowed == 3  # rejected values are not stored
    assert sum(v for k, v in s.items() if k[0] == "llmops_tokens_total") == 9  # nothing lost, only merged


def test_series_cap_folds_new_combinations_into_one_other_series() -> None:
    m = UsageMetrics(limits=LabelLimits(series=2))
    m.observe_many([_rec(route=f"r{i}", prompt_tokens=10) for i in range(6)])
    s = _scrape(m)
    routes = {dict(k[1])["route"]: v for k, v in s.items() if k[0] == "llmops_tokens_total"}
    assert routes == {"r0": 10, "r1": 10, "other": 40}
    assert len(m._series) == 3


def test_variants_get_requests_latency_tokens_and_cost() -> None:
    m = UsageMetrics()
    m.observe_many([
        _rec(variant="a", latency_s=0.2, prompt_tokens=10, completion_tokens=5, cost_usd=Decimal("0.5"),
             price_source="config"),
        _rec(variant="a", latency_s=3.0, status=502, prompt_tokens=10),
        _rec(variant="b", latency_s=0.01, completion_tokens=7),
        _rec(prompt_tokens=99),  # no variant: not in the variant series
    ])
    s = _scrape(m)
    a = {"route": "r", "variant": "a"}
    assert _value(s, "llmops_variant_requests_total", **a, status_class="2xx") == 1
    assert _value(s, "llmops_variant_requests_total", **a, status_class="5xx") == 1
    assert _value(s, "llmops_variant_latency_seconds_bucket", **a, le="0.25") == 1
    assert _value(s, "llmops_variant_latency_seconds_bucket", **a, le="5.0") == 2
    assert _value(s, "llmops_variant_latency_seconds_count", **a) == 2
    assert _value(s, "llmops_variant_latency_seconds_sum", **a) == 3.2
    assert _value(s, "llmops_variant_tokens_total", **a, kind="prompt") == 20
    assert _value(s, "llmops_variant_cost_usd_total", **a) == 0.5
    assert _value(s, "llmops_variant_tokens_total", route="r", variant="b", kind="completion") == 7
    assert _value(s, "llmops_variant_cost_usd_total", route="r", variant="b") is None
    assert {dict(k[1])["variant"] for k in s if k[0].startswith("llmops_variant_")} == {"a", "b"}


def _worker(path: str, team: str, batches: int) -> None:
    m = UsageMetrics(shared_dir=path)
    for _ in range(batches):  # the same series rewritten whole after each batch: idempotent
        m.observe_many([_rec(team=team, prompt_tokens=3, completion_tokens=1, cost_usd=Decimal("0.25"),
                             price_source="config", variant="a", latency_s=0.2)])


def test_worker_files_sum_over_processes(tmp_path: Path) -> None:
    fork = multiprocessing.get_context("fork")
    procs = [fork.Process(target=_worker, args=(str(tmp_path), team, n)) for team, n in (("t", 3), ("t", 2),
                                                                                             ("u", 1))]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert len(list(tmp_path.glob("counter_usage-*.db"))) == 3
    registry = CollectorRegistry()
    MultiProcessCollector(registry, str(tmp_path))
    s = _samples(generate_latest(registry).decode())
    t = {"route": "r", "model": "m", "provider": "p", "team": "t"}
    assert _value(s, "llmops_tokens_total", **t, kind="prompt") == 15
    assert _value(s, "llmops_cost_usd_total", **t) == 1.25
    assert _value(s, "llmops_tokens_total", **{**t, "team": "u"}, kind="completion") == 1
    assert _value(s, "llmops_usage_priced_total", provider="p", model="m") == 6
    assert _value(s, "llmops_variant_requests_total", route="r", variant="a", status_class="2xx") == 6
    assert _value(s, "llmops_variant_latency_seconds_bucket", route="r", variant="a", le="0.25") == 6
    assert _value(s, "llmops_variant_latency_seconds_count", route="r", variant="a") == 6
    # In one process the collector yields the same families itself; with shared files, none.
    assert list(UsageMetrics(shared_dir=str(tmp_path)).collect()) == []


class _Team:
    name = "team"

    def on_request(self, ctx: RequestContext) -> None:
        ctx.principal = Principal(key_id="key-1", team=ctx.headers.get("x-team") or None)


async def test_gateway_exports_tokens_by_team_after_traffic(mock: Any) -> None:
    async with run_gateway(simple_config(mock.url), plugins=[_Team()]) as g, \
            httpx.AsyncClient(base_url=g.url) as h:
        seen = capture_usage(g.gateway)
        for team, stream in (("alpha", False), ("alpha", True), ("beta", False)):
            r = await h.post("/v1/chat/completions", json={"model": "r", "stream": stream, "messages": MSG},
                             headers={"x-team": team})
            assert r.status_code == 200
        assert (await h.post("/v1/embeddings", json={"model": "r", "input": "hi"})).status_code == 200
        assert (await h.post("/v1/chat/completions", json={"model": "nope", "messages": MSG})).status_code == 404
        await g.gateway.usage.drain()
        s = _samples((await h.get("/metrics")).text)
    ok = [r for r in seen if r.status == 200 and r.route == "r"]
    assert len(ok) == 4 and all(r.prompt_tokens and r.usage_source == "upstream" for r in ok)

    def tokens(team: str, kind: str) -> float | None:
        return _value(s, "llmops_tokens_total", route="r", model="m0", provider="p0", team=team, kind=kind)

    alpha = [r for r in ok if r.principal and r.principal.team == "alpha"]
    assert tokens("alpha", "prompt") == sum(r.prompt_tokens for r in alpha)
    assert tokens("alpha", "completion") == sum(r.completion_tokens for r in alpha)
    beta = [r for r in ok if r.principal and r.principal.team == "beta"]
    assert tokens("beta", "completion") == sum(r.completion_tokens for r in beta)
    assert tokens("-", "prompt") == next(r.prompt_tokens for r in ok if r.endpoint == "embeddings")
    priced = _value(s, "llmops_usage_priced_total", provider="p0", model="m0") or 0
    unpriced = _value(s, "llmops_usage_unpriced_total", provider="p0", model="m0") or 0
    assert priced + unpriced == 4
    assert priced == sum(1 for r in ok if r.price_source is not None)


@contextlib.contextmanager
def _serve_two_workers(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`llmops serve --workers 2` on the built-in mock; (base URL, metrics dir). Allows a slow start: on a busy
    2-core machine importing the gateway alone can take over 10 s per process."""
    import signal
    import subprocess
    import sys
    import time

    import yaml

    from tests.conftest import free_port

    cfg = {"server": {"log_level": "info"}, "control": {"enabled": False},
           "providers": [{"name": "mock", "kind": "openai", "base_url": "builtin:mock"}],
           "routes": [{"name": "one", "targets": [{"provider": "mock", "model": "m"}]}]}
    (tmp_path / "gw.yaml").write_text(yaml.safe_dump(cfg))
    metrics_dir, log = tmp_path / "metrics", tmp_path / "serve.log"
    metrics_dir.mkdir()
    port = free_port()
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--config", str(tmp_path / "gw.yaml"), "--port", str(port),
             "--workers", "2"], stdout=subprocess.DEVNULL, stderr=err, cwd=tmp_path,
            env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)})
    try:
        deadline = time.monotonic() + 90
        while log.read_text().count("serving") < 2:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}", metrics_dir
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise


def test_serve_workers_sum_tokens_over_workers(tmp_path: Path) -> None:
    """`serve --workers 2`: whichever worker answers the scrape, the token counters are every worker's sum."""
    import asyncio

    from tests.gateway.test_workers import _until

    with _serve_two_workers(tmp_path) as (base, metrics_dir):
        completion = 0

        async def burst() -> None:
            nonlocal completion
            # A fresh connection per request, several at once: the kernel hands them to both workers.
            async with httpx.AsyncClient(base_url=base, limits=httpx.Limits(max_keepalive_connections=0)) as h:
                rs = await asyncio.gather(*(h.post("/v1/chat/completions", json={"model": "one", "messages": MSG})
                                            for _ in range(20)))
            assert all(r.status_code == 200 for r in rs)
            completion += sum(r.json()["usage"]["completion_tokens"] for r in rs)

        def both_counted() -> bool:
            asyncio.run(burst())
            return len(list(metrics_dir.glob("counter_usage-*.db"))) >= 2

        def scraped() -> float | None:
            text = httpx.get(base + "/metrics", headers={"connection": "close"}, timeout=5).text
            return _value(_samples(text), "llmops_tokens_total", route="one", model="m", provider="mock", team="-",
                          kind="completion")

        _until(both_counted, "usage counted by both workers", deadline_s=60)
        _until(lambda: scraped() == completion, f"llmops_tokens_total == {completion}", deadline_s=60)
        for _ in range(10):
            assert scraped() == completion

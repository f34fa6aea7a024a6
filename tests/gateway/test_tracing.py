"""OpenTelemetry traces: GenAI spans from usage records to a real OTLP/HTTP receiver; free when off."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.testdoubles.otlp_receiver import OtlpReceiver, start_otlp_receiver
from adapters.usage import Principal, UsageRecord
from gateway.app import create_app
from gateway.config import ConfigError, TracingCfg, decode_config
from gateway.tracing import check_tracing
from tests.conftest import capture_usage, run_gateway, simple_config

MSG = [{"role": "user", "content": "hi"}]
CLIENT, ERROR = 3, 2  # OTLP's SpanKind.CLIENT and StatusCode.ERROR


@pytest.fixture
async def receiver() -> AsyncIterator[OtlpReceiver]:
    r = await start_otlp_receiver()
    try:
        yield r
    finally:
        await r.stop()


def _config(upstream: str, tracing: dict[str, Any]) -> dict[str, Any]:
    return {**simple_config(upstream), "tracing": tracing}


async def test_one_genai_span_per_request_with_usage_and_errors(mock: Any, receiver: OtlpReceiver) -> None:
    cfg = _config(mock.url, {"enabled": True, "endpoint": receiver.url, "service_name": "gw-test",
                             "headers": {"x-collector-token": "tok"}})
    async with run_gateway(cfg) as g, httpx.AsyncClient(base_url=g.url) as h:
        seen = capture_usage(g.gateway)
        assert (await h.post("/v1/chat/completions", json={"model": "r", "messages": MSG})).status_code == 200
        r = await h.post("/v1/chat/completions", json={"model": "r", "stream": True, "messages": MSG})
        assert r.status_code == 200
        assert (await h.post("/v1/embeddings", json={"model": "r", "input": "hello"})).status_code == 200
        assert (await h.post("/v1/chat/completions", json={"model": "nope", "messages": MSG})).status_code == 404
        assert (await h.get("/healthz")).status_code == 200  # not a model call: no span
        await g.gateway.usage.drain()
    # Leaving the context stopped the gateway, which flushed the exporter.
    spans = await receiver.wait_for(4)
    assert len(spans) == 4
    records = {r.request_id: r for r in seen if r.route in ("r", "-")}
    by_id = {s.attributes["llmops.request_id"]: s for s in spans}
    assert by_id.keys() == records.keys()
    for rid, span in by_id.items():
        rec = records[rid]
        assert span.kind == CLIENT and span.parent_span_id == "" and span.scope == "llmops.gateway"
        assert span.resource["service.name"] == "gw-test"
        assert span.start_ns == int(rec.ts * 1e9) and span.end_ns - span.start_ns == int(rec.latency_s * 1e9)
        assert span.attributes["gen_ai.usage.input_tokens"] == rec.prompt_tokens
        assert span.attributes["gen_ai.usage.output_tokens"] == rec.completion_tokens
        assert span.attributes["llmops.route"] == rec.route and span.attributes["llmops.status"] == rec.status
    chat, stream, embed = (next(s for s in spans if s.attributes["llmops.route"] == "r"
                                and s.attributes["llmops.endpoint"] == e and s.attributes["llmops.stream"] == st)
                           for e, st in (("chat", False), ("chat", True), ("embeddings", False)))
    assert chat.name == "chat m0" and embed.name == "embeddings m0"
    for s in (chat, stream):
        assert s.attributes["gen_ai.operation.name"] == "chat"
        assert s.attributes["gen_ai.provider.name"] == s.attributes["gen_ai.system"] == "p0"
        assert s.attributes["gen_ai.request.model"] == s.attributes["gen_ai.response.model"] == "m0"
        assert s.attributes["gen_ai.usage.output_tokens"] > 0 and s.status_code != ERROR
    assert embed.attributes["gen_ai.operation.name"] == "embeddings"
    denied = next(s for s in spans if s.attributes["llmops.route"] == "-")
    assert denied.status_code == ERROR and denied.attributes["error.type"] == "not_found_error"
    assert denied.name == "chat" and "gen_ai.request.model" not in denied.attributes
    assert "gen_ai.response.model" not in denied.attributes
    assert all(h.get("x-collector-token") == "tok" for h in receiver.headers)


async def test_upstream_failure_span_is_an_error(mock: Any, receiver: OtlpReceiver) -> None:
    from adapters.testdoubles.mock_state import Fault

    mock.push_faults(Fault(kind="status", status=503), Fault(kind="status", status=503))
    cfg = _config(mock.url, {"enabled": True, "endpoint": receiver.url})
    async with run_gateway(cfg) as g, httpx.AsyncClient(base_url=g.url) as h:
        seen = capture_usage(g.gateway)
        r = await h.post("/v1/chat/completions", json={"model": "r", "messages": MSG})
        assert r.status_code >= 500
        await g.gateway.usage.drain()
    (rec,) = [r for r in seen if r.route == "r"]
    (span,) = await receiver.wait_for(1)
    assert span.status_code == ERROR and span.attributes["http.response.status_code"] == r.status_code
    assert span.attributes["error.type"] == rec.error == span.status_message
    assert span.attributes["llmops.attempts"] == rec.attempts and span.attributes["llmops.route"] == "r"
    assert "gen_ai.response.model" not in span.attributes


async def test_spans_carry_the_record_id_the_usage_writer_stored(mock: Any, receiver: OtlpReceiver,
                                                                 tmp_path: Path) -> None:
    cfg = {**_config(mock.url, {"enabled": True, "endpoint": receiver.url}),
           "control": {"data_dir": str(tmp_path / "control"), "modules": []}}
    async with run_gateway(cfg) as g, httpx.AsyncClient(base_url=g.url) as h:
        seen = capture_usage(g.gateway)
        assert (await h.post("/v1/chat/completions", json={"model": "r", "messages": MSG})).status_code == 200
        await g.gateway.usage.drain()
    (rec,) = [r for r in seen if r.route == "r"]
    (span,) = await receiver.wait_for(1)
    assert rec.record_id and span.attributes["llmops.record_id"] == rec.record_id


def test_span_attributes_of_a_priced_record_with_principal_and_variant() -> None:
    from gateway.genai_spans import span_attributes

    rec = UsageRecord(request_id="rid", route="r", provider="openai", model="gpt-4o", stream=True, status=200,
                      latency_s=1.5, ttft_s=0.25, prompt_tokens=100, completion_tokens=20, cached_read_tokens=80,
                      cache_write_tokens=5, reasoning_tokens=7, endpoint="completions", record_id="rec1",
                      cost_usd=Decimal("0.00125"), price_source="config", variant="b",
                      principal=Principal(key_id="key-1", team="ml"))
    a = span_attributes(rec)
    assert a["gen_ai.operation.name"] == "text_completion"
    assert (a["llmops.usage.cached_read_tokens"], a["llmops.usage.cache_write_tokens"],
            a["llmops.usage.reasoning_tokens"]) == (80, 5, 7)
    assert a["llmops.cost_usd"] == 0.00125 and a["llmops.price_source"] == "config"
    assert (a["llmops.variant"], a["llmops.team"], a["llmops.key_id"]) == ("b", "ml", "key-1")
    assert (a["llmops.record_id"], a["llmops.ttft_s"]) == ("rec1", 0.25)
    assert "error.type" not in a


async def test_sample_ratio_zero_sends_nothing_and_reload_switches_tracing(mock: Any,
                                                                           receiver: OtlpReceiver) -> None:
    off = _config(mock.url, {"enabled": False, "endpoint": receiver.url})
    async with run_gateway(off) as g, httpx.AsyncClient(base_url=g.url) as h:
        async def one() -> str:
            r = await h.post("/v1/chat/completions", json={"model": "r", "messages": MSG})
            assert r.status_code == 200
            await g.gateway.usage.drain()
            return r.headers["x-request-id"]

        await one()
        await g.gateway.reload(decode_config(_config(mock.url, {"enabled": True, "endpoint": receiver.url,
                                                                "sample_ratio": 0.0})))
        await one()
        await g.gateway.reload(decode_config(_config(mock.url, {"enabled": True, "endpoint": receiver.url})))
        traced = await one()
        spans = await receiver.wait_for(1)  # the exporter sends within its 1 s schedule
        await g.gateway.reload(decode_config(off))  # turning it off flushes and stops the exporter
        await one()
    assert [s.attributes["llmops.request_id"] for s in receiver.spans] == [traced]
    assert spans[0].attributes["llmops.route"] == "r"


def test_check_tracing_refuses_what_cannot_work(monkeypatch: pytest.MonkeyPatch) -> None:
    check_tracing(TracingCfg(enabled=False, sample_ratio=7.0))  # off: nothing is checked
    check_tracing(TracingCfg(enabled=True))
    with pytest.raises(ConfigError, match="sample_ratio"):
        check_tracing(TracingCfg(enabled=True, sample_ratio=1.5))
    with pytest.raises(ConfigError, match="endpoint"):
        check_tracing(TracingCfg(enabled=True, endpoint="collector:4317"))
    with pytest.raises(ConfigError, match="control characters"):
        check_tracing(TracingCfg(enabled=True, headers={"authorization": "Bearer x\r\nX-Evil: 1"}))
    monkeypatch.setattr("gateway.tracing._find_spec", lambda name: None)
    with pytest.raises(ConfigError, match="otel` extra"):
        check_tracing(TracingCfg(enabled=True))
    with pytest.raises(ConfigError, match="otel` extra"):
        create_app(decode_config({**simple_config("http://127.0.0.1:9/v1"), "tracing": {"enabled": True}}))


_SCRIPT = textwrap.dedent("""
    import asyncio, json, sys
    import httpx
    from litestar import Litestar
    from tests.conftest import run_gateway, simple_config

    def otel():
        return {m for m in sys.modules if m.split(".")[0] == "opentelemetry"}

    async def main(enabled):
        Litestar()  # Litestar itself imports opentelemetry's root package when it is installed
        before = otel()
        endpoint = "http://127.0.0.1:9/v1/traces"
        if enabled:  # the receiver imports opentelemetry's protobuf classes: only then
            from adapters.testdoubles.otlp_receiver import start_otlp_receiver
            endpoint = (await start_otlp_receiver()).url
        cfg = {**simple_config("builtin:mock"), "tracing": {"enabled": enabled, "endpoint": endpoint}}
        async with run_gateway(cfg) as g, httpx.AsyncClient(base_url=g.url) as h:
            body = {"model": "r", "messages": [{"role": "user", "content": "hi"}]}
            r = await h.post("/v1/chat/completions", json=body)
            assert r.status_code == 200, r.text
            await g.gateway.usage.drain()
            loaded = sorted(otel() - before)
        print(json.dumps(loaded))

    asyncio.run(main(sys.argv[1] == "on"))
""")


@pytest.mark.parametrize("state", ["off", "on"])
def test_tracing_off_imports_no_opentelemetry(state: str) -> None:
    """In a fresh interpreter: off, a served request loads no opentelemetry module beyond the root
    package Litestar imports by itself; on, it loads the SDK."""
    done = subprocess.run([sys.executable, "-c", _SCRIPT, state], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    if state == "off":
        assert loaded == []
    else:
        assert {"opentelemetry.sdk.trace", "opentelemetry.exporter.otlp.proto.http.trace_exporter"} <= set(loaded)

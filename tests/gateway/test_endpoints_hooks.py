"""The non-chat endpoints go through the same plug-in hooks, response filters and failure
paths as chat; provider kinds that cannot serve an endpoint answer 501, naming the kind."""

from __future__ import annotations

from typing import Any

import httpx
import msgspec
import pytest

from adapters.errors import EndpointNotSupported
from adapters.gateway_plugins import RequestContext
from adapters.testdoubles import FunctionUpstream
from adapters.testdoubles.mock_upstream import Fault
from adapters.upstream import Timeouts, UpstreamCall
from adapters.upstream.litellm_provider import LiteLLMUpstream
from tests.conftest import capture_usage, run_gateway, simple_config
from tests.gateway.inprocess import fn_config, in_process


def _responses_events(text: str) -> list[dict[str, Any]]:
    return [
        {"type": "response.created", "sequence_number": 0, "response": {"id": "resp_1", "usage": None}},
        {"type": "response.output_text.delta", "sequence_number": 1, "delta": text},
        {"type": "response.completed", "sequence_number": 2,
         "response": {"id": "resp_1", "usage": {"input_tokens": 2, "output_tokens": 7, "total_tokens": 9}}},
    ]


class Recorder:
    """on_request, on_route, a response filter (upper-cases what it sees) and on_finish."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, Any]] = []

    async def on_request(self, ctx: RequestContext) -> None:
        self.seen.append(("request", ctx.endpoint, ctx.model))
        ctx.body["user"] = "tagged"

    async def on_route(self, ctx: RequestContext) -> None:
        self.seen.append(("route", ctx.endpoint, ctx.upstream_model))

    def response_filter(self, ctx: RequestContext) -> Any:
        return _Upper()

    async def on_finish(self, ctx: RequestContext, usage: Any) -> None:
        self.seen.append(("finish", usage.endpoint, (usage.prompt_tokens, usage.completion_tokens)))


class _Upper:
    def body(self, completion: dict[str, Any]) -> dict[str, Any]:
        for d in completion.get("data", []):
            d["filtered"] = True
        return completion

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        if isinstance(chunk.get("delta"), str):
            chunk["delta"] = chunk["delta"].upper()
        for c in chunk.get("choices", []):
            c["text"] = c.get("text", "").upper()
        return [chunk]

    def flush(self) -> list[dict[str, Any]]:
        return []


async def test_hooks_and_filters_see_every_endpoint() -> None:
    calls: list[UpstreamCall] = []

    def handler(call: UpstreamCall) -> Any:
        calls.append(call)
        if call.endpoint == "embeddings":
            return {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [1.0]}],
                    "model": "m0", "usage": {"prompt_tokens": 4, "total_tokens": 4}}
        if call.endpoint == "completions":
            return [{"id": "c", "object": "text_completion", "choices": [{"index": 0, "text": t}]}
                    for t in ("ab", "cd")] + [{"id": "c", "choices": [], "usage": {
                        "prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}]
        return _responses_events("hey")

    rec = Recorder()
    async with in_process(fn_config(), upstreams={"fn": FunctionUpstream(handler)}, plugins=[rec]) as (gw, client):
        e = await client.post("/v1/embeddings", json={"model": "r", "input": "a b c d"})
        assert e.status_code == 200 and e.json()["data"][0]["filtered"] is True
        c = await client.post("/v1/completions", json={"model": "r", "prompt": "x", "stream": True})
        assert '"text":"AB"' in c.text and c.text.endswith("data: [DONE]\n\n")
        assert '"usage"' not in c.text  # the client did not ask for the usage chunk
        r = await client.post("/v1/responses", json={"model": "r", "input": "x", "stream": True})
        assert "event: response.output_text.delta\ndata: " in r.text and '"delta":"HEY"' in r.text
        await gw.usage.drain()
    assert [c.endpoint for c in calls] == ["embeddings", "completions", "responses"]
    assert all(c.body["user"] == "tagged" for c in calls)  # on_request rewrote each body
    assert [s for s in rec.seen if s[0] != "finish"] == [
        ("request", "embeddings", "r"), ("route", "embeddings", "m0"),
        ("request", "completions", "r"), ("route", "completions", "m0"),
        ("request", "responses", "r"), ("route", "responses", "m0"),
    ]
    assert sorted(s for s in rec.seen if s[0] == "finish") == [  # off the request path, in the usage worker
        ("finish", "completions", (1, 2)), ("finish", "embeddings", (4, 0)), ("finish", "responses", (2, 7))]


async def test_missing_usage_is_counted_from_the_endpoint_prompt() -> None:
    def handler(call: UpstreamCall) -> Any:
        if call.endpoint == "completions":
            return {"id": "c", "object": "text_completion", "choices": [{"index": 0, "text": "one two"}]}
        return {"object": "list", "data": [], "model": "m0"}

    async with in_process(fn_config(), upstreams={"fn": FunctionUpstream(handler)}) as (gw, client):
        seen = capture_usage(gw)
        await client.post("/v1/completions", json={"model": "r", "prompt": ["alpha beta", "gamma"]})
        await client.post("/v1/embeddings", json={"model": "r", "input": [[1, 2, 3], [4]]})
        await gw.usage.drain()
    comp, emb = seen
    assert comp.usage_source in ("counted", "estimated") and comp.prompt_tokens > 0 and comp.completion_tokens > 0
    assert (emb.endpoint, emb.prompt_tokens, emb.completion_tokens) == ("embeddings", 4, 0)  # token ids count as is


async def test_responses_mid_stream_failure_is_an_error_event(mock) -> None:
    async with run_gateway(simple_config(mock.url)) as g, httpx.AsyncClient(base_url=g.url) as h:
        for kind, code in (("error_mid_stream", "server_error"), ("drop_mid_stream", "upstream_error")):
            # the upstream's own error event is relayed; a broken stream becomes the gateway's
            mock.push_faults(Fault(kind=kind, after_chunks=2))
            r = await h.post("/v1/responses", json={"model": "r", "input": "x", "stream": True})
            assert r.status_code == 200
            last = r.text.strip().split("\n\n")[-1]
            assert last.startswith("event: error\ndata: "), r.text
            err = msgspec.json.decode(last.split("data: ", 1)[1])
            assert (err["type"], err["code"]) == ("error", code) and err["sequence_number"] > 0


@pytest.mark.parametrize("path, body", [
    ("/v1/embeddings", {"model": "r", "input": "x"}),
    ("/v1/completions", {"model": "r", "prompt": "x"}),
    ("/v1/responses", {"model": "r", "input": "x", "stream": True}),
])
async def test_ollama_native_kind_answers_501_naming_the_kind(mock, path, body) -> None:
    cfg = simple_config(mock.root_url)
    cfg["providers"][0]["kind"] = "ollama"
    async with run_gateway(cfg) as g, httpx.AsyncClient(base_url=g.url) as h:
        r = await h.post(path, json=body)
        assert r.status_code == 501, r.text
        err = r.json()["error"]
        assert err["code"] == "unsupported_endpoint" and "'ollama'" in err["message"]
        assert not mock.requests  # refused before any upstream call
        ok = await h.post("/v1/chat/completions", json={"model": "r", "messages": [{"role": "user", "content": "x"}]})
        assert ok.status_code == 200  # the breaker was not tripped by the refusals


async def test_litellm_kind_refuses_other_endpoints() -> None:
    up = LiteLLMUpstream("ll")
    for endpoint in ("embeddings", "completions", "responses"):
        call = UpstreamCall(body={"model": "m"}, request_id="r", timeouts=Timeouts(), endpoint=endpoint)
        with pytest.raises(EndpointNotSupported, match="kind 'litellm'"):
            await up.complete(up.backends[0], call)
        with pytest.raises(EndpointNotSupported):
            await anext(up.stream(up.backends[0], call))

"""The mock upstream's known logprobs (perplexity by hand) and scripted replies (a judge's verdicts),
over real loopback sockets, and once through the gateway so usage is seen metered."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import pytest

from adapters.testdoubles import MockConfig, MockServer, start_mock_upstream
from adapters.testdoubles.mock_endpoints import token_logprob
from adapters.testdoubles.mock_responses import split_pieces
from adapters.testdoubles.mock_state import ScriptRule
from tests.conftest import capture_usage, run_gateway, simple_config

VERDICT = '{"score": 4,\n  "rationale": "mostly right"}'  # 5 tokens: '{"score":', ' 4,', '\n  "rationale":', …
JUDGE = [ScriptRule(match="Rate the answer", reply=VERDICT), ScriptRule(match="*", reply="fallback answer")]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def server() -> AsyncIterator[MockServer]:
    async with await start_mock_upstream(MockConfig(faults=True)) as srv:
        yield srv


async def post(http: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, Any]:
    async with http.post(url, json=body) as resp:
        return resp.status, msgspec.json.decode(await resp.read())


async def sse(http: aiohttp.ClientSession, url: str, body: Any) -> list[Any]:
    async with http.post(url, json=body) as resp:
        assert resp.status == 200
        text = (await resp.read()).decode()
    return [msgspec.json.decode(f[6:]) for f in text.split("\n\n") if f.startswith("data: {")]


def test_the_rule_by_hand() -> None:
    assert [token_logprob(t) for t in ["the", " cat", " b", " is", " here", "\n  x"]] == [
        -0.5, -0.5, -1.0, -1.5, -1.0, -1.0]
    for text in ["", "a", " a  b\n", "x\ty  ", "   ", VERDICT, "日本語 の テキスト"]:
        assert "".join(split_pieces(text)) == text


async def test_echo_logprobs_give_a_known_perplexity(server: MockServer, http: aiohttp.ClientSession) -> None:
    """The loglikelihood call (echo, max_tokens 0): -0.5, -1.5, -1.0 after a null first token, so the
    perplexity over the scored tokens is exp((0.5 + 1.5 + 1.0) / 3) = e."""
    status, body = await post(http, server.url + "/completions",
                              {"model": "m", "prompt": "the cat is here", "max_tokens": 0, "echo": True, "logprobs": 1})
    assert status == 200
    choice = body["choices"][0]
    lp = choice["logprobs"]
    assert choice["text"] == "the cat is here" and body["usage"]["completion_tokens"] == 0
    assert lp["tokens"] == ["the", " cat", " is", " here"] and lp["text_offset"] == [0, 3, 7, 10]
    assert lp["token_logprobs"] == [None, -0.5, -1.5, -1.0]
    assert lp["top_logprobs"] == [None, {" cat": -0.5}, {" is": -1.5}, {" here": -1.0}]
    scored = [v for v in lp["token_logprobs"] if v is not None]
    assert math.exp(-sum(scored) / len(scored)) == pytest.approx(math.e)


async def test_logprobs_over_prompt_and_answer_stream_matches_body(server: MockServer,
                                                                  http: aiohttp.ClientSession) -> None:
    """Tokens concatenate to the text and every offset points at its token, streamed or not; the
    streamed chunks carry the same tokens and values as the whole body."""
    req = {"model": "m", "prompt": "Q:  two\nA:", "max_tokens": 5, "echo": True, "logprobs": 0}
    _, body = await post(http, server.url + "/completions", req)
    choice = body["choices"][0]
    text, lp = choice["text"], choice["logprobs"]
    assert text == "Q:  two\nA: mock token reply from the" and choice["finish_reason"] == "length"
    assert lp["tokens"] == ["Q:", "  two", "\nA:", " mock", " token", " reply", " from", " the"]
    assert lp["token_logprobs"] == [None, -0.5, -1.5, -1.0, -1.5, -1.5, -1.0, -0.5] and lp["top_logprobs"] == []
    assert "".join(lp["tokens"]) == text
    assert [text[o:].startswith(t) for o, t in zip(lp["text_offset"], lp["tokens"], strict=True)] == [True] * 8

    server.config = MockConfig(chunk_tokens=2)
    chunks = await sse(http, server.url + "/completions", {**req, "stream": True})
    parts = [c["choices"][0] for c in chunks if c["choices"] and c["choices"][0]["logprobs"]]
    assert "".join(p["text"] for p in parts) == text
    for key in ("tokens", "token_logprobs", "text_offset"):
        assert [v for p in parts for v in p["logprobs"][key]] == lp[key], key


async def test_logprobs_off_refuses_and_omit_answers_without(server: MockServer,
                                                             http: aiohttp.ClientSession) -> None:
    url, req = server.url + "/completions", {"model": "m", "prompt": "a b", "max_tokens": 0, "echo": True,
                                             "logprobs": 1}
    assert (await post(http, server.root_url + "/_mock/config", {"logprobs": False}))[0] == 200
    status, body = await post(http, url, req)
    assert status == 400 and body["error"]["param"] == "logprobs"
    assert body["error"]["type"] == "invalid_request_error"
    status, body = await post(http, url, {**req, "logprobs": None})  # not asking still works
    assert status == 200 and body["choices"][0]["logprobs"] is None

    server.config = MockConfig(logprobs="omit", faults=True)
    status, body = await post(http, url, req)
    assert status == 200 and body["choices"][0]["logprobs"] is None and body["choices"][0]["text"] == "a b"
    chunks = await sse(http, url, {**req, "max_tokens": 2, "stream": True})
    assert chunks and all(c["choices"][0]["logprobs"] is None for c in chunks)
    assert (await post(http, server.root_url + "/_mock/config", {"logprobs": "sometimes"}))[0] == 400


def _chat(*users: str, **extra: Any) -> dict[str, Any]:
    msgs = [{"role": "system", "content": "You are a strict judge."}]
    msgs += [{"role": "user", "content": u} for u in users]
    return {"model": "judge", "messages": msgs, **extra}


async def test_script_answers_chat_exactly(server: MockServer, http: aiohttp.ClientSession) -> None:
    server.config = MockConfig(script=JUDGE)
    url = server.url + "/chat/completions"
    status, body = await post(http, url, _chat("Rate the answer: 4"))
    assert status == 200 and body["choices"][0]["message"]["content"] == VERDICT
    assert body["choices"][0]["finish_reason"] == "stop" and body["usage"]["completion_tokens"] == 5
    assert msgspec.json.decode(body["choices"][0]["message"]["content"]) == {"score": 4, "rationale": "mostly right"}

    chunks = await sse(http, url, _chat("Rate the answer", stream=True, stream_options={"include_usage": True}))
    deltas = [c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]]
    assert "".join(deltas) == VERDICT and len([d for d in deltas if d]) == 5
    assert chunks[-1]["usage"]["completion_tokens"] == 5

    # Only the last user message is matched; the catch-all answers the rest.
    _, body = await post(http, url, _chat("Rate the answer", "now something else"))
    assert body["choices"][0]["message"]["content"] == "fallback answer"
    parts = [{"type": "text", "text": "Please"}, {"type": "text", "text": "Rate the answer"}]
    _, body = await post(http, url, {"model": "j", "messages": [{"role": "user", "content": parts}]})
    assert body["choices"][0]["message"]["content"] == VERDICT
    _, body = await post(http, url, _chat("Rate the answer", max_tokens=2))
    choice = body["choices"][0]
    assert (choice["message"]["content"], choice["finish_reason"]) == ('{"score": 4,', "length")
    assert body["usage"]["completion_tokens"] == 2

    server.config = MockConfig(script=[ScriptRule(match="nothing like it", reply="x")])
    _, body = await post(http, url, _chat("Rate the answer", max_tokens=3))
    assert body["choices"][0]["message"]["content"] == "mock token reply"  # no rule matched: the word cycle


async def test_script_answers_completions_ollama_and_responses(server: MockServer,
                                                               http: aiohttp.ClientSession) -> None:
    server.config = MockConfig(script=[ScriptRule(match="Rate", reply="B wins"), ScriptRule(match="*", reply="")])
    _, body = await post(http, server.url + "/completions", {"model": "m", "prompt": ["zzz", "Rate it"]})
    assert [c["text"] for c in body["choices"]] == ["B wins", "B wins"]  # the last prompt is matched
    assert body["usage"]["completion_tokens"] == 4
    chunks = await sse(http, server.url + "/completions", {"model": "m", "prompt": "Rate", "stream": True,
                                                           "echo": True, "logprobs": 1})
    text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
    assert text == "Rate B wins"
    _, body = await post(http, server.url + "/completions", {"model": "m", "prompt": "hello"})
    assert body["choices"][0]["text"] == "" and body["usage"]["completion_tokens"] == 0

    _, body = await post(http, server.root_url + "/api/chat",
                         {"model": "m", "stream": False, "messages": [{"role": "user", "content": "Rate"}]})
    assert body["message"]["content"] == "B wins" and body["eval_count"] == 2
    _, body = await post(http, server.url + "/responses", {"model": "m", "input": "Rate this"})
    assert body["output"][0]["content"][0]["text"] == "B wins" and body["usage"]["output_tokens"] == 2


async def test_script_over_http_control(server: MockServer, http: aiohttp.ClientSession) -> None:
    root = server.root_url
    status, body = await post(http, root + "/_mock/config", {"script": [{"match": "*", "reply": "yes"}]})
    assert status == 200 and body["script"] == [{"match": "*", "reply": "yes"}]
    assert server.config.script == [ScriptRule(match="*", reply="yes")]
    _, body = await post(http, server.url + "/chat/completions", _chat("anything"))
    assert body["choices"][0]["message"]["content"] == "yes"
    # a later patch of another field keeps the script
    assert (await post(http, root + "/_mock/config", {"latency_s": 0.0}))[1]["script"] == [{"match": "*",
                                                                                           "reply": "yes"}]
    for bad in ({"script": [{"match": "*"}]}, {"script": [{"match": "*", "reply": "x", "extra": 1}]},
                {"script": {"match": "*", "reply": "x"}}):
        status, body = await post(http, root + "/_mock/config", bad)
        assert status == 400 and body["error"]["type"] == "invalid_request_error", bad
    assert (await post(http, root + "/_mock/reset", None))[0] == 200
    assert server.config.script == []


async def test_scripted_judge_and_logprobs_through_the_gateway(http: aiohttp.ClientSession) -> None:
    """What the evaluation worker sees: a scripted verdict relayed intact and metered, and a refusal of
    logprobs relayed as the upstream's 400 (so perplexity is reported unavailable, not 0)."""
    async with await start_mock_upstream(MockConfig(script=JUDGE)) as mock, \
            run_gateway(simple_config(mock.url)) as g:
        seen = capture_usage(g.gateway)
        status, body = await post(http, g.base_url + "/chat/completions", {**_chat("Rate the answer"), "model": "r"})
        assert status == 200 and body["choices"][0]["message"]["content"] == VERDICT
        mock.config = MockConfig(logprobs=False)
        status, body = await post(http, g.base_url + "/completions",
                                  {"model": "r", "prompt": "a b", "max_tokens": 0, "echo": True, "logprobs": 1})
        assert status == 400 and body["error"]["param"] == "logprobs"
        await g.gateway.usage.drain()
        assert [(r.endpoint, r.completion_tokens) for r in seen if r.completion_tokens] == [("chat", 5)]

"""Stream/non-stream parity of usage records, per adapter kind and endpoint, against the test
doubles' known counts: the same request, streamed or not, is metered with the same exact
prompt, completion, cached-read, cache-write and reasoning tokens."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from adapters.testdoubles.mock_anthropic import AnthropicConfig, start_mock_anthropic
from adapters.testdoubles.mock_upstream import MockConfig, MockServer
from tests.gateway.inprocess import in_process
from tests.gateway.usage.records import Recorder, counts

TEN_WORDS = "one two three four five six seven eight nine ten"
CHAT = {"model": "r", "messages": [{"role": "user", "content": TEN_WORDS}]}  # the doubles: 10 words + 1 = 11
EIGHT = "a b c d e f g h"  # 8 prompt tokens for the doubles' completions/embeddings/responses
# 4 of the prompt's tokens read from the cache, 2 written to it; 6 visible answer tokens + 5 hidden reasoning
DETAILS = MockConfig(completion_tokens=6, cached_tokens=4, cache_write_tokens=2, reasoning_tokens=5)


def _cfg(kind: str, base_url: str, model: str, **provider: Any) -> dict[str, Any]:
    return {
        "server": {"log_level": "warning"}, "control": {"enabled": False},
        "providers": [{"name": "p", "kind": kind, "base_url": base_url, **provider}],
        "routes": [{"name": "r", "targets": [{"provider": "p", "model": model}], "retries": 0}],
    }


def _usage_chunks(sse: bytes) -> list[dict[str, Any]]:
    chunks = (msgspec.json.decode(line[6:]) for line in sse.split(b"\n") if line.startswith(b"data: {"))
    return [c for c in chunks if c.get("usage")]


@pytest.mark.parametrize("on_last_choice", [False, True], ids=["usage-chunk", "usage-on-finish-chunk"])
@pytest.mark.parametrize("client_asks", [False, True], ids=["client-no-usage", "client-include-usage"])
async def test_openai_chat(mock: MockServer, on_last_choice: bool, client_asks: bool) -> None:
    mock.config = msgspec.structs.replace(DETAILS, usage_on_last_choice=on_last_choice)
    async with in_process(_cfg("openai", mock.url, "m0")) as (gw, client):
        extra = {"stream_options": {"include_usage": True}} if client_asks else {}
        plain, streamed = await Recorder(gw, client).pair("/v1/chat/completions", CHAT, **extra)
        assert counts(plain) == counts(streamed) == (11, 11, 4, 2, 5, "upstream")
        assert mock.requests[-1].body["stream_options"] == {"include_usage": True}  # asked upstream either way
        r = await client.post("/v1/chat/completions", json={**CHAT, "stream": True, **extra})
        chunks = _usage_chunks(r.content)
        if on_last_choice:  # that chunk carries a choice too, so it reaches the client either way
            assert len(chunks) == 1 and chunks[0]["choices"][0]["finish_reason"] == "stop"
        else:  # the usage-only chunk the gateway asked for is the client's only when it asked
            assert len(chunks) == int(client_asks) and all(c["choices"] == [] for c in chunks)


@pytest.mark.parametrize("on_last_choice", [False, True], ids=["usage-chunk", "usage-on-finish-chunk"])
async def test_openai_completions(mock: MockServer, on_last_choice: bool) -> None:
    mock.config = msgspec.structs.replace(DETAILS, usage_on_last_choice=on_last_choice)
    async with in_process(_cfg("openai", mock.url, "m0")) as (gw, client):
        plain, streamed = await Recorder(gw, client).pair("/v1/completions", {"model": "r", "prompt": EIGHT})
        assert counts(plain) == counts(streamed) == (8, 11, 4, 2, 5, "upstream")
        assert plain.endpoint == "completions"


async def test_openai_responses(mock: MockServer) -> None:
    """input_tokens_details.cached_tokens, output_tokens_details.reasoning_tokens; streamed, the
    response.completed event's response.usage."""
    mock.config = DETAILS
    async with in_process(_cfg("openai", mock.url, "m0")) as (gw, client):
        plain, streamed = await Recorder(gw, client).pair("/v1/responses", {"model": "r", "input": EIGHT})
        assert counts(plain) == counts(streamed) == (8, 11, 4, 2, 5, "upstream")
        assert plain.endpoint == "responses"


async def test_openai_embeddings_report_prompt_tokens_only(mock: MockServer) -> None:
    mock.config = DETAILS
    async with in_process(_cfg("openai", mock.url, "m0")) as (gw, client):
        rec, _ = await Recorder(gw, client).one("/v1/embeddings", {"model": "r", "input": [EIGHT, "i j"]})
        assert (rec.endpoint, *counts(rec)) == ("embeddings", 10, 0, 0, 0, 0, "upstream")


async def test_ollama_native_chat(mock: MockServer) -> None:
    mock.config = MockConfig(completion_tokens=6)
    async with in_process(_cfg("ollama", mock.root_url, "llama3.2")) as (gw, client):
        rec = Recorder(gw, client)
        plain, streamed = await rec.pair("/v1/chat/completions", CHAT)
        assert mock.requests[-1].path == "/api/chat"
        # prompt_eval_count / eval_count; Ollama reports no cache or reasoning split
        assert counts(plain) == counts(streamed) == (11, 6, 0, 0, 0, "upstream")
        _, r = await rec.one("/v1/chat/completions", CHAT)
        assert r.json()["usage"] == {"prompt_tokens": 11, "completion_tokens": 6, "total_tokens": 17}


@pytest.mark.parametrize(("read", "write"), [(3, 2), (7, 3)], ids=["mostly-uncached", "mostly-cached"])
async def test_litellm_anthropic(read: int, write: int) -> None:
    """Anthropic's input_tokens exclude cache reads and writes; the record's prompt includes them
    (both splits: a wrong convention can hide when the uncached part is the larger one)."""
    anthropic = await start_mock_anthropic(AnthropicConfig(
        completion_tokens=6, cache_read_input_tokens=read, cache_creation_input_tokens=write))
    cfg = _cfg("litellm", anthropic.root_url, "anthropic/claude-3-5-sonnet-20241022", api_key="sk-ant-test")
    try:
        async with in_process(cfg) as (gw, client):
            plain, streamed = await Recorder(gw, client).pair("/v1/chat/completions", CHAT)
    finally:
        await anthropic.stop()
    assert [r.path for r in anthropic.requests] == ["/v1/messages"] * 2
    assert anthropic.requests[-1].headers["x-api-key"] == "sk-ant-test"
    assert counts(plain) == counts(streamed) == (11, 6, read, write, 0, "upstream")


async def test_litellm_openai_details(mock: MockServer) -> None:
    """litellm's ModelResponse usage (prompt_tokens_details, completion_tokens_details) from an
    OpenAI-compatible upstream, streamed (litellm's usage chunk also carries a choice) and not."""
    mock.config = DETAILS
    async with in_process(_cfg("litellm", mock.url, "openai/m0", api_key="sk-test")) as (gw, client):
        plain, streamed = await Recorder(gw, client).pair("/v1/chat/completions", CHAT)
        assert counts(plain) == counts(streamed) == (11, 11, 4, 2, 5, "upstream")

"""Upstreams that report no usage: the usage worker counts with the model's tokenizer, offline
(record `counted`, stored as estimated), or at ~4 characters per token without one
(`estimated`, with a warning: never silent). Streamed and not, the counts agree."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from adapters.testdoubles.mock_upstream import MockConfig, MockServer
from gateway import tokens
from tests.gateway.inprocess import in_process
from tests.gateway.usage.records import Recorder, counts

# Token counts of these strings, from tiktoken's own files (litellm's bundle):
TEXT = "naïve café résumé 東京 is nice"  # cl100k_base: 12 tokens, o200k_base: 8
# The double's answer, "mock token reply from the test": 6 tokens in both.
# OpenAI's chat recipe: 3 per message + the role ("user": 1 token) + the content, + 3 priming the reply.
CHAT_CL100K, CHAT_O200K = 3 + 1 + 12 + 3, 3 + 1 + 8 + 3


def chat(route: str) -> dict[str, Any]:
    return {"model": route, "messages": [{"role": "user", "content": TEXT}]}


def _cfg(kind: str, base_url: str, **provider: Any) -> dict[str, Any]:
    """Route `o` serves gpt-4o-mini (o200k_base), route `c` a model tiktoken does not know (cl100k_base)."""
    return {
        "server": {"log_level": "warning"}, "control": {"enabled": False},
        "providers": [{"name": "p", "kind": kind, "base_url": base_url, **provider}],
        "routes": [{"name": "o", "targets": [{"provider": "p", "model": "gpt-4o-mini"}], "retries": 0},
                   {"name": "c", "targets": [{"provider": "p", "model": "llama-3.1-8b"}], "retries": 0}],
    }


@pytest.fixture
def no_usage(mock: MockServer) -> MockServer:
    mock.config = MockConfig(completion_tokens=6, usage=False)
    return mock


async def test_chat_counted_with_the_models_encoding(no_usage: MockServer) -> None:
    async with in_process(_cfg("openai", no_usage.url)) as (gw, client):
        rec = Recorder(gw, client)
        plain, streamed = await rec.pair("/v1/chat/completions", chat("o"))
        assert counts(plain) == counts(streamed) == (CHAT_O200K, 6, 0, 0, 0, "counted")
        plain, streamed = await rec.pair("/v1/chat/completions", chat("c"))
        assert counts(plain) == counts(streamed) == (CHAT_CL100K, 6, 0, 0, 0, "counted")


@pytest.mark.parametrize(("route", "prompt"), [("o", 8), ("c", 12)], ids=["o200k", "cl100k"])
async def test_completions_embeddings_responses_counted(no_usage: MockServer, route: str, prompt: int) -> None:
    async with in_process(_cfg("openai", no_usage.url)) as (gw, client):
        rec = Recorder(gw, client)
        plain, streamed = await rec.pair("/v1/completions", {"model": route, "prompt": TEXT})
        assert counts(plain) == counts(streamed) == (prompt, 6, 0, 0, 0, "counted")
        plain, streamed = await rec.pair("/v1/responses", {"model": route, "input": TEXT})
        assert counts(plain) == counts(streamed) == (prompt, 6, 0, 0, 0, "counted")
        one, _ = await rec.one("/v1/embeddings", {"model": route, "input": [TEXT, TEXT]})
        assert (one.endpoint, *counts(one)) == ("embeddings", 2 * prompt, 0, 0, 0, 0, "counted")


async def test_openai_stream_usage_off_is_counted(mock: MockServer) -> None:
    """`stream_usage: false` (an upstream that rejects stream_options): its streams get counted."""
    mock.config = MockConfig(completion_tokens=6)
    async with in_process(_cfg("openai", mock.url, stream_usage=False)) as (gw, client):
        plain, streamed = await Recorder(gw, client).pair("/v1/chat/completions", chat("o"))
        assert "stream_options" not in mock.requests[-1].body
        assert counts(plain) == (7, 6, 0, 0, 0, "upstream")  # the double's own count: 6 words + 1
        assert counts(streamed) == (CHAT_O200K, 6, 0, 0, 0, "counted")  # nothing reported: the tokenizer's


async def test_ollama_without_prompt_eval_count_is_counted(no_usage: MockServer) -> None:
    async with in_process(_cfg("ollama", no_usage.root_url)) as (gw, client):
        rec = Recorder(gw, client)
        plain, streamed = await rec.pair("/v1/chat/completions", chat("c"))
        assert no_usage.requests[-1].path == "/api/chat"
        assert counts(plain) == counts(streamed) == (CHAT_CL100K, 6, 0, 0, 0, "counted")
        _, r = await rec.one("/v1/chat/completions", chat("c"))
        assert "usage" not in r.json()  # no report to relay; the record is the gateway's count


async def test_without_a_tokenizer_records_say_estimated_and_a_warning_is_logged(
    no_usage: MockServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(tokens, "_encoder", lambda: None)  # neither tiktoken nor litellm's files
    tokens._warn_estimating.cache_clear()
    try:
        async with in_process(_cfg("openai", no_usage.url)) as (gw, client):
            with caplog.at_level(logging.WARNING, logger="llmops.metering"):
                plain, streamed = await Recorder(gw, client).pair("/v1/chat/completions", chat("o"))
    finally:
        tokens._warn_estimating.cache_clear()
    # ~4 characters per token: TEXT is 28 characters (7), "user" 1, the answer 30 (8)
    assert counts(plain) == counts(streamed) == (3 + 1 + 7 + 3, 8, 0, 0, 0, "estimated")
    warnings = [r.message for r in caplog.records if "~4 characters per token" in r.message]
    assert len(warnings) == 1  # said once, not per record


def test_encoding_per_model_family() -> None:
    o200k = ["gpt-4o", "gpt-4o-mini", "openai/gpt-4o-2024-08-06", "azure/gpt-4.1-nano", "gpt-5", "gpt-5-mini",
             "o1", "o1-mini", "o3-mini", "o4-mini", "ft:gpt-4o-mini:org::abc", "chatgpt-4o-latest"]
    cl100k = ["gpt-4", "gpt-4-turbo", "gpt-3.5-turbo", "llama-3.1-8b", "mistral/mistral-large", "o1x", "gpt-40",
              "anthropic/claude-3-5-sonnet", ""]
    assert {m: tokens.encoding_for(m) for m in o200k} == dict.fromkeys(o200k, "o200k_base")
    assert {m: tokens.encoding_for(m) for m in cl100k} == dict.fromkeys(cl100k, "cl100k_base")


def test_counting_never_reaches_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """tiktoken downloads an encoding when its cache misses; litellm's bundle must serve both."""
    import tiktoken.load
    import tiktoken.registry

    def offline(*args: Any, **kwargs: Any) -> bytes:
        raise AssertionError("tiktoken tried to download an encoding")

    monkeypatch.setattr(tiktoken.load, "read_file", offline)
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})  # forget loaded ones: read the files again
    tokens._load.cache_clear()
    tokens._encoder.cache_clear()
    try:
        assert tokens.count_tokens(TEXT, "gpt-4o") == 8 and tokens.count_tokens(TEXT, "llama") == 12
    finally:
        tokens._load.cache_clear()
        tokens._encoder.cache_clear()

"""The Anthropic Messages API double: faithful enough for litellm's `anthropic/` provider."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import msgspec
import pytest

from adapters.testdoubles.mock_anthropic import AnthropicConfig, AnthropicMock, start_mock_anthropic

HEADERS = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
BODY = {"model": "claude-x", "max_tokens": 100, "system": "be brief",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "one two three four"}]}]}


@pytest.fixture
async def anthropic() -> AsyncIterator[AnthropicMock]:
    server = await start_mock_anthropic(AnthropicConfig(completion_tokens=3, cache_read_input_tokens=4,
                                                        cache_creation_input_tokens=1))
    try:
        yield server
    finally:
        await server.stop()


async def test_message_usage_keeps_the_cache_apart(anthropic: AnthropicMock) -> None:
    async with aiohttp.ClientSession() as s, s.post(anthropic.root_url + "/v1/messages", json=BODY,
                                                    headers=HEADERS) as r:
        msg = await r.json()
    assert msg["content"] == [{"type": "text", "text": "mock token reply"}] and msg["stop_reason"] == "end_turn"
    # the prompt: 4 words + 1 per message + 2 system words = 7, of which 4 read and 1 written
    assert msg["usage"] == {"input_tokens": 2, "cache_creation_input_tokens": 1, "cache_read_input_tokens": 4,
                            "output_tokens": 3}


async def test_stream_events(anthropic: AnthropicMock) -> None:
    body = {**BODY, "stream": True, "max_tokens": 2}
    async with aiohttp.ClientSession() as s, s.post(anthropic.root_url + "/v1/messages", json=body,
                                                    headers=HEADERS) as r:
        raw = await r.read()
    events = [e.split(b"\n") for e in raw.strip().split(b"\n\n")]
    kinds = [e[0].removeprefix(b"event: ").decode() for e in events]
    assert kinds == ["message_start", "content_block_start", "ping", "content_block_delta", "content_block_delta",
                     "content_block_stop", "message_delta", "message_stop"]
    data = [msgspec.json.decode(e[1].removeprefix(b"data: ")) for e in events]
    assert data[0]["message"]["usage"] == {"input_tokens": 2, "cache_creation_input_tokens": 1,
                                           "cache_read_input_tokens": 4, "output_tokens": 1}
    assert data[6] == {"type": "message_delta", "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
                       "usage": {"output_tokens": 2}}
    assert "".join(d["delta"]["text"] for d in data if d["type"] == "content_block_delta") == "mock token"


@pytest.mark.parametrize(("headers", "body", "status", "kind"), [
    ({"anthropic-version": "2023-06-01"}, BODY, 401, "authentication_error"),
    ({"x-api-key": "k"}, BODY, 400, "invalid_request_error"),
    (HEADERS, {k: v for k, v in BODY.items() if k != "max_tokens"}, 400, "invalid_request_error"),
])
async def test_refusals_in_anthropics_error_shape(anthropic: AnthropicMock, headers: dict, body: dict, status: int,
                                                  kind: str) -> None:
    async with aiohttp.ClientSession() as s, s.post(anthropic.root_url + "/v1/messages", json=body,
                                                    headers=headers) as r:
        assert r.status == status
        err = await r.json()
    assert err["type"] == "error" and err["error"]["type"] == kind

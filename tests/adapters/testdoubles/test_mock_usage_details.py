"""The mock upstream's usage details, read by the unmodified `openai` SDK: cached reads, cache
writes (`prompt_tokens_details.cache_write_tokens`), reasoning (added to the completion), usage on the finish chunk."""

from __future__ import annotations

import openai

from adapters.testdoubles.mock_upstream import MockConfig, MockServer

MSG = [{"role": "user", "content": "one two three four five six seven eight nine ten"}]


def _client(mock: MockServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=mock.url, api_key="x", max_retries=0, timeout=10)


async def test_chat_details_plain_and_streamed(mock: MockServer) -> None:
    mock.config = MockConfig(completion_tokens=6, cached_tokens=4, cache_write_tokens=2, reasoning_tokens=5,
                             usage_on_last_choice=True)
    c = _client(mock)
    r = await c.chat.completions.create(model="m", messages=MSG)  # type: ignore[arg-type]
    u = r.usage
    assert u is not None and (u.prompt_tokens, u.completion_tokens, u.total_tokens) == (11, 11, 22)
    assert u.prompt_tokens_details is not None and u.prompt_tokens_details.cached_tokens == 4
    assert u.prompt_tokens_details.cache_write_tokens == 2
    assert u.completion_tokens_details is not None and u.completion_tokens_details.reasoning_tokens == 5
    chunks = [ch async for ch in await c.chat.completions.create(
        model="m", messages=MSG, stream=True, stream_options={"include_usage": True})]  # type: ignore[arg-type]
    with_usage = [ch for ch in chunks if ch.usage is not None]
    assert len(with_usage) == 1 and with_usage[0] is chunks[-1] and with_usage[0].usage == u
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_plain_usage_without_details_by_default(mock: MockServer) -> None:
    r = await _client(mock).completions.create(model="m", prompt="a b c", max_tokens=2)
    assert r.usage is not None and r.usage.model_dump(exclude_none=True) == {
        "prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}

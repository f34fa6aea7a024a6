"""Providers' usage objects read into the normalised `Usage`: prompt includes cached reads and
cache writes, completion includes reasoning, never counted twice."""

from __future__ import annotations

import msgspec
import pytest

from adapters.upstream import Usage
from adapters.upstream.answers import parse_answer
from adapters.upstream.openai_compat import parse_completion
from adapters.upstream.usage_wire import WireUsage, to_usage, usage_json


def read(raw: dict) -> tuple[int, ...]:
    u = to_usage(msgspec.json.decode(msgspec.json.encode(raw), type=WireUsage))
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    return (u.prompt_tokens, u.completion_tokens, u.cached_read_tokens, u.cache_write_tokens, u.reasoning_tokens)


@pytest.mark.parametrize(("raw", "expected"), [
    ({"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}, (11, 7, 0, 0, 0)),
    # OpenAI chat: details inside prompt/completion counts
    ({"prompt_tokens": 2006, "completion_tokens": 300, "total_tokens": 2306,
      "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
      "completion_tokens_details": {"reasoning_tokens": 192, "audio_tokens": 0, "accepted_prediction_tokens": 0,
                                    "rejected_prediction_tokens": 0}}, (2006, 300, 1920, 0, 192)),
    # explicit nulls, as vLLM and some proxies send them
    ({"prompt_tokens": 5, "completion_tokens": None, "prompt_tokens_details": None,
      "completion_tokens_details": {"reasoning_tokens": None}}, (5, 0, 0, 0, 0)),
    # OpenRouter: cache writes in prompt_tokens_details
    ({"prompt_tokens": 100, "completion_tokens": 1,
      "prompt_tokens_details": {"cached_tokens": 60, "cache_write_tokens": 30}}, (100, 1, 60, 30, 0)),
    # litellm (and a LiteLLM proxy) relaying Anthropic: prompt already includes both, reported twice over
    ({"prompt_tokens": 142, "completion_tokens": 20, "total_tokens": 162,
      "prompt_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 30, "cache_creation_tokens": 30,
                                "text_tokens": 12},
      "cache_creation_input_tokens": 30, "cache_read_input_tokens": 100}, (142, 20, 100, 30, 0)),
    # DeepSeek: hit/miss split of an inclusive prompt count
    ({"prompt_tokens": 50, "completion_tokens": 4, "prompt_cache_hit_tokens": 32, "prompt_cache_miss_tokens": 18},
     (50, 4, 32, 0, 0)),
    # the Responses API
    ({"input_tokens": 8, "input_tokens_details": {"cached_tokens": 4}, "output_tokens": 11,
      "output_tokens_details": {"reasoning_tokens": 5}, "total_tokens": 19}, (8, 11, 4, 0, 5)),
    # Anthropic's Messages API: input_tokens is only the uncached rest
    ({"input_tokens": 12, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 30, "output_tokens": 20},
     (142, 20, 100, 30, 0)),
    ({"input_tokens": 12, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0, "output_tokens": 2},
     (12, 2, 0, 0, 0)),
    # a prompt count that cannot include its cached part is read as exclusive, never as less than it
    ({"prompt_tokens": 10, "completion_tokens": 1, "cache_read_input_tokens": 40}, (50, 1, 40, 0, 0)),
])
def test_shapes(raw: dict, expected: tuple[int, ...]) -> None:
    assert read(raw) == expected


def test_usage_json_round_trips() -> None:
    u = Usage(prompt_tokens=20, completion_tokens=9, total_tokens=29, cached_read_tokens=8, cache_write_tokens=3,
              reasoning_tokens=4)
    wire = usage_json(u)
    assert wire == {"prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29,
                    "prompt_tokens_details": {"cached_tokens": 8, "cache_write_tokens": 3},
                    "completion_tokens_details": {"reasoning_tokens": 4}}
    assert to_usage(msgspec.json.decode(msgspec.json.encode(wire), type=WireUsage)) == u
    assert usage_json(Usage(prompt_tokens=1, completion_tokens=2)) == {
        "prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}


def test_bodies_of_every_endpoint() -> None:
    chat = (b'{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":3,'
            b'"prompt_tokens_details":{"cached_tokens":8}}}')
    c = parse_completion(chat, "p")
    assert c.usage is not None and (c.usage.prompt_tokens, c.usage.cached_read_tokens) == (9, 8)
    body = (b'{"choices":[{"text":"x"}],"usage":{"prompt_tokens":4,"completion_tokens":1,'
            b'"completion_tokens_details":{"reasoning_tokens":1}}}')
    c = parse_answer("completions", body, "p")
    assert c.usage is not None and c.usage.reasoning_tokens == 1
    c = parse_answer("embeddings", b'{"data":[],"usage":{"prompt_tokens":4,"total_tokens":4}}', "p")
    assert c.usage == Usage(prompt_tokens=4, total_tokens=4)
    body = (b'{"output":[],"usage":{"input_tokens":6,"input_tokens_details":{"cached_tokens":2},'
            b'"output_tokens":3,"output_tokens_details":{"reasoning_tokens":2}}}')
    c = parse_answer("responses", body, "p")
    assert c.usage == Usage(prompt_tokens=6, completion_tokens=3, total_tokens=9, cached_read_tokens=2,
                            reasoning_tokens=2)
    assert parse_answer("embeddings", b'{"data":[]}', "p").usage is None

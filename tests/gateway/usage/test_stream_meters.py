"""The stream meters read usage from whichever chunk carries it, choices or not, with its details."""

from __future__ import annotations

from gateway.completions.service import CompletionMeter
from gateway.metering import StreamMeter
from gateway.responses.service import ResponsesMeter

DETAILS = (b'"usage":{"prompt_tokens":11,"completion_tokens":9,"total_tokens":20,'
           b'"prompt_tokens_details":{"cached_tokens":4,"cache_write_tokens":2},'
           b'"completion_tokens_details":{"reasoning_tokens":5}}')


def _counts(meter: object) -> tuple[int, ...]:
    u = meter.usage  # type: ignore[attr-defined]
    assert u is not None
    return (u.prompt_tokens, u.completion_tokens, u.cached_read_tokens, u.cache_write_tokens, u.reasoning_tokens)


def test_usage_on_a_chunk_with_choices_is_read_and_forwarded() -> None:
    m = StreamMeter(client_wants_usage=False)
    assert m.feed(b'{"choices":[{"delta":{"content":"hi"}}]}')
    assert m.feed(b'{"choices":[{"delta":{},"finish_reason":"stop"}],' + DETAILS + b"}")  # has choices: kept
    assert _counts(m) == (11, 9, 4, 2, 5) and m.text == "hi"


def test_usage_only_chunk_dropped_unless_asked_but_read_either_way() -> None:
    for asked in (False, True):
        m = StreamMeter(client_wants_usage=asked)
        assert m.feed(b'{"choices":[],' + DETAILS + b"}") is asked
        assert _counts(m) == (11, 9, 4, 2, 5)


def test_continuous_usage_last_report_wins() -> None:
    """vLLM's continuous_usage_stats: a running total on every chunk, the last one final."""
    m = StreamMeter(client_wants_usage=False)
    for i in range(1, 4):
        m.feed(b'{"choices":[{"delta":{"content":"w"}}],"usage":{"prompt_tokens":7,"completion_tokens":%d}}' % i)
    m.feed(b'{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3}}')
    assert _counts(m) == (7, 3, 0, 0, 0)
    assert StreamMeter(False).usage is None


def test_completion_meter_reads_usage_on_the_finish_chunk() -> None:
    m = CompletionMeter(client_wants_usage=False)
    assert m.feed(b'{"choices":[{"text":"a b"}]}')
    assert m.feed(b'{"choices":[{"text":"","finish_reason":"stop"}],' + DETAILS + b"}")
    assert _counts(m) == (11, 9, 4, 2, 5) and m.text == "a b"


def test_responses_meter_reads_details_from_the_completed_event() -> None:
    m = ResponsesMeter(client_wants_usage=False)
    m.feed(b'{"type":"response.output_text.delta","delta":"x"}')
    m.feed(b'{"type":"response.completed","response":{"usage":{"input_tokens":8,'
           b'"input_tokens_details":{"cached_tokens":4},"output_tokens":11,'
           b'"output_tokens_details":{"reasoning_tokens":5}}}}')
    assert _counts(m) == (8, 11, 4, 0, 5)

"""Usage buffer and per-request stats: unit level."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import generate_latest

from gateway.metering import StreamMeter, UsageQueue, UsageRecord
from gateway.metrics import GatewayMetrics


def _rec(i: int = 0, **kw) -> UsageRecord:
    return UsageRecord(request_id=str(i), route="r", provider="p", model="m", stream=False, status=200,
                       latency_s=0.01, **kw)


async def test_queue_flushes_to_every_consumer_and_survives_a_broken_one(caplog) -> None:
    m = GatewayMetrics()
    seen: list[UsageRecord] = []

    class Broken:
        async def consume(self, records):
            raise RuntimeError("sink down")

    class Good:
        async def consume(self, records):
            seen.extend(records)

    q = UsageQueue([Broken(), Good()], m, flush_interval_s=0.01)
    await q.start()
    with caplog.at_level(logging.ERROR):
        for i in range(5):
            q.record(_rec(i))
        await q.drain()
    assert [r.request_id for r in seen] == ["0", "1", "2", "3", "4"]
    assert "usage consumer" in caplog.text
    await q.stop()


async def test_full_buffer_drops_and_counts() -> None:
    m = GatewayMetrics()
    q = UsageQueue([], m, maxsize=3)
    for i in range(5):
        q.record(_rec(i))
    assert m.usage_dropped._value.get() == 2


async def test_counted_usage_fills_tokens_off_the_request_path() -> None:
    m = GatewayMetrics()
    q = UsageQueue([], m, flush_interval_s=0.01)
    await q.start()
    rec = _rec()
    rec.apply_usage(None, [{"role": "user", "content": "hello world " * 20}], "a reply of several words")
    q.record(rec)
    await q.drain()
    await q.stop()
    assert rec.usage_source == "counted" and rec.prompt_tokens > 20 and rec.completion_tokens >= 4
    assert rec.prompt_messages is None  # released once counted


def test_request_stats_exposition_uses_inclusive_buckets() -> None:
    m = GatewayMetrics()
    a, b = _rec(1), _rec(2)
    a.latency_s, a.ttft_s, a.prompt_tokens, a.completion_tokens = 0.005, 0.001, 3, 4
    b.latency_s, b.prompt_tokens = 0.0051, 1
    m.stats.observe_many([a, b])
    text = generate_latest(m.registry).decode()
    assert 'llmops_request_latency_seconds_bucket{le="0.005",provider="p",route="r"} 1.0' in text
    assert 'llmops_request_latency_seconds_bucket{le="0.01",provider="p",route="r"} 2.0' in text
    assert 'llmops_request_latency_seconds_count{provider="p",route="r"} 2.0' in text
    assert 'llmops_time_to_first_token_seconds_count{provider="p",route="r"} 1.0' in text
    assert 'llmops_requests_total{provider="p",route="r",status="200"} 2.0' in text
    assert "llmops_tokens_total{" not in text  # tokens are gateway/usage_metrics.py's (test_usage_metrics.py)


def test_stream_meter_drops_unrequested_usage_chunk_and_rejects_garbage() -> None:
    meter = StreamMeter(client_wants_usage=False)
    assert meter.feed(b'{"choices":[{"delta":{"content":"hi"}}]}')
    assert not meter.feed(b'{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}')
    assert meter.usage is not None and meter.usage.completion_tokens == 2 and meter.text == "hi"
    with pytest.raises(ValueError):
        meter.feed(b"{not json")


async def test_without_a_tokenizer_the_record_says_estimated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gateway.tokens._encoder", lambda: None)  # neither tiktoken nor litellm's files
    q = UsageQueue([], GatewayMetrics(), flush_interval_s=0.01)
    await q.start()
    rec = _rec()
    rec.apply_usage(None, [{"role": "user", "content": "x" * 40}], "y" * 20)
    q.record(rec)
    await q.drain()
    await q.stop()
    assert rec.usage_source == "estimated"  # never a silent characters / 4
    # OpenAI's recipe at ~4 characters per token: 3 per message + role "user" + content + 3 priming the reply
    assert (rec.prompt_tokens, rec.completion_tokens) == (3 + 1 + 10 + 3, 5)


async def test_finish_hooks_run_after_counting_even_when_the_record_was_dropped() -> None:
    from adapters.gateway_plugins import RequestContext

    m = GatewayMetrics()
    q = UsageQueue([], m, maxsize=1, flush_interval_s=0.01)
    got: list[tuple[str, int]] = []

    async def finish(ctx: RequestContext, rec: UsageRecord) -> None:
        assert ctx.usage is rec
        got.append((rec.request_id, rec.completion_tokens))

    recs = [_rec(i) for i in range(2)]
    for rec in recs:
        rec.apply_usage(None, [], "some words to count")
        q.record_finished(rec, RequestContext(str(rec.request_id), "m", {}, False, []), finish)
    await q.start()
    await q.drain()
    await q.stop()
    assert m.usage_dropped._value.get() == 1
    assert [i for i, _ in got] == ["0", "1"] and all(n > 0 for _, n in got)

"""The mock upstream speaks /v1/completions, /v1/embeddings and /v1/responses as OpenAI does:
checked with the `openai` SDK pointed straight at it (no gateway)."""

from __future__ import annotations

import httpx
import openai

from adapters.testdoubles.mock_upstream import Fault


def client(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0, timeout=10)


async def test_completions_echo_logprobs_and_stream(mock) -> None:
    c = client(mock.url)
    r = await c.completions.create(model="m", prompt=["a b", "c"], max_tokens=2, echo=True, logprobs=2, n=2)
    assert [ch.index for ch in r.choices] == [0, 1, 2, 3]
    assert r.choices[0].text == "a b mock token" and r.choices[2].text == "c mock token"
    lp = r.choices[0].logprobs
    assert lp.tokens == ["a", " b", " mock", " token"] and lp.text_offset == [0, 1, 3, 8]
    assert lp.top_logprobs[0] is None and lp.top_logprobs[1] == {" b": -1.0}
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (3, 8)
    chunks = [ch async for ch in await c.completions.create(
        model="m", prompt="x", max_tokens=3, stream=True, stream_options={"include_usage": True})]
    assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == "mock token reply"
    assert chunks[-1].usage.completion_tokens == 3 and chunks[-2].choices[0].finish_reason == "length"


async def test_embeddings_deterministic(mock) -> None:
    c = client(mock.url)
    a = await c.embeddings.create(model="m", input="same text", encoding_format="float")
    b = await c.embeddings.create(model="m", input=["same text"])  # base64 on the wire
    assert a.data[0].embedding == b.data[0].embedding or all(
        abs(x - y) < 1e-6 for x, y in zip(a.data[0].embedding, b.data[0].embedding, strict=True))
    assert a.usage.prompt_tokens == 2 and a.usage.total_tokens == 2


async def test_responses_events_in_order_and_faults(mock) -> None:
    c = client(mock.url)
    r = await c.responses.create(model="m", input="hi", instructions="be brief", max_output_tokens=3)
    assert r.status == "incomplete" and r.output_text == "mock token reply"
    assert (r.usage.input_tokens, r.usage.output_tokens, r.instructions) == (3, 3, "be brief")
    events = [e async for e in await c.responses.create(model="m", input="hi", stream=True)]
    assert [e.type for e in events[:4]] == ["response.created", "response.in_progress",
                                            "response.output_item.added", "response.content_part.added"]
    assert [e.type for e in events[-4:]] == ["response.output_text.done", "response.content_part.done",
                                             "response.output_item.done", "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    mock.push_faults(Fault(kind="status", status=429))
    async with httpx.AsyncClient() as h:
        bad = await h.post(mock.url + "/responses", json={"model": "m", "input": "x"})
        assert bad.status_code == 429 and bad.json()["error"]["code"] == "rate_limit_exceeded"
        missing = await h.post(mock.url + "/embeddings", json={"model": "m"})
        assert missing.status_code == 400 and missing.json()["error"]["param"] == "input"

"""/v1/completions, /v1/embeddings and /v1/responses through the unmodified `openai` SDK, with the
gateway in front of the mock upstream: bodies relayed, usage metered with the serving endpoint."""

from __future__ import annotations

import math

import httpx
import openai
import pytest

from tests.conftest import capture_usage, run_gateway, simple_config


def client(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0, timeout=10)


async def _records(g, seen: list, n: int) -> list:
    await g.gateway.usage.drain()
    assert len(seen) == n, seen
    return seen


async def test_completions_with_echo_and_logprobs(mock) -> None:
    async with run_gateway(simple_config(mock.url)) as g:
        seen = capture_usage(g.gateway)
        c = client(g.base_url)
        # lm-evaluation-harness's loglikelihood call: the prompt echoed with its tokens' logprobs.
        r = await c.completions.create(model="r", prompt="the cat sat", max_tokens=0, echo=True, logprobs=1)
        sent = mock.requests[-1]
        assert sent.path == "/v1/completions" and sent.body["model"] == "m0"
        assert sent.body["echo"] is True and sent.body["logprobs"] == 1
        lp = r.choices[0].logprobs
        assert r.choices[0].text == "the cat sat" and lp is not None
        assert lp.tokens == ["the", " cat", " sat"] and lp.token_logprobs == [None, -0.5, -0.5]
        assert r.usage is not None and r.usage.prompt_tokens == 3 and r.usage.completion_tokens == 0

        r = await c.completions.create(model="r", prompt="hi", max_tokens=4)
        assert r.object == "text_completion" and r.choices[0].text == "mock token reply from"

        text, usage = [], None
        stream = await c.completions.create(model="r", prompt="hi", max_tokens=4, stream=True, logprobs=0,
                                            stream_options={"include_usage": True})
        async for chunk in stream:
            if chunk.choices:
                text.append(chunk.choices[0].text)
            if chunk.usage is not None:
                usage = chunk.usage
        assert "".join(text) == "mock token reply from"
        assert usage is not None and usage.completion_tokens == 4

        recs = await _records(g, seen, 3)
        assert {r.endpoint for r in recs} == {"completions"}
        assert [(r.stream, r.prompt_tokens, r.completion_tokens, r.usage_source) for r in recs] == [
            (False, 3, 0, "upstream"), (False, 1, 4, "upstream"), (True, 1, 4, "upstream")]


async def test_completions_stream_without_usage_chunk_is_still_metered(mock) -> None:
    async with run_gateway(simple_config(mock.url)) as g:
        seen = capture_usage(g.gateway)
        stream = await client(g.base_url).completions.create(model="r", prompt="hi", max_tokens=3, stream=True)
        chunks = [chunk async for chunk in stream]
        assert all(ch.usage is None for ch in chunks)  # the gateway asked for usage; the client did not
        assert mock.requests[-1].body["stream_options"] == {"include_usage": True}
        (rec,) = await _records(g, seen, 1)
        assert (rec.endpoint, rec.completion_tokens, rec.usage_source) == ("completions", 3, "upstream")


async def test_embeddings_float_and_base64(mock) -> None:
    async with run_gateway(simple_config(mock.url)) as g:
        seen = capture_usage(g.gateway)
        c = client(g.base_url)
        r = await c.embeddings.create(model="r", input=["hello world", "bye"])  # the SDK asks for base64
        assert mock.requests[-1].path == "/v1/embeddings" and mock.requests[-1].body["model"] == "m0"
        assert [d.index for d in r.data] == [0, 1] and len(r.data[0].embedding) == 8
        assert math.isclose(sum(v * v for v in r.data[0].embedding), 1.0, rel_tol=1e-5)
        f = await c.embeddings.create(model="r", input="hello world", encoding_format="float", dimensions=4)
        assert len(f.data[0].embedding) == 4 and f.usage.prompt_tokens == 2
        recs = await _records(g, seen, 2)
        assert [(r.endpoint, r.prompt_tokens, r.completion_tokens) for r in recs] == [
            ("embeddings", 3, 0), ("embeddings", 2, 0)]


async def test_responses_plain_and_streamed(mock) -> None:
    async with run_gateway(simple_config(mock.url)) as g:
        seen = capture_usage(g.gateway)
        c = client(g.base_url)
        r = await c.responses.create(model="r", input="say something nice", max_output_tokens=5)
        assert mock.requests[-1].path == "/v1/responses" and mock.requests[-1].body["model"] == "m0"
        assert r.output_text == "mock token reply from the"
        assert r.usage is not None and (r.usage.input_tokens, r.usage.output_tokens) == (3, 5)

        kinds, deltas, final = [], [], None
        stream = await c.responses.create(model="r", input=[{"role": "user", "content": "hi"}], stream=True)
        async for event in stream:
            kinds.append(event.type)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
            elif event.type == "response.completed":
                final = event.response
        assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
        assert "response.output_text.done" in kinds
        assert final is not None and final.usage is not None and final.output_text == "".join(deltas)

        recs = await _records(g, seen, 2)
        assert [(r.endpoint, r.stream, r.prompt_tokens, r.completion_tokens) for r in recs] == [
            ("responses", False, 3, 5), ("responses", True, 1, 16)]
        assert recs[1].ttft_s is not None


async def test_responses_stream_is_typed_sse_without_done(mock) -> None:
    async with run_gateway(simple_config(mock.url)) as g, httpx.AsyncClient(base_url=g.url) as h:
        r = await h.post("/v1/responses", json={"model": "r", "input": "hi", "stream": True, "max_output_tokens": 2})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [e for e in r.text.split("\n\n") if e]
        assert events[0].startswith("event: response.created\ndata: {")
        assert events[-1].startswith("event: response.incomplete\n")  # max_output_tokens hit
        assert "[DONE]" not in r.text


async def test_endpoints_are_routed_and_resilient(mock, mock2) -> None:
    """A failing primary falls back for every endpoint, as for chat."""
    async with run_gateway(simple_config(mock.url, mock2.url, retries=0)) as g:
        c = client(g.base_url)
        mock.push_faults("status:500", "status:500", "status:500")
        await c.embeddings.create(model="r", input="x", encoding_format="float")
        await c.completions.create(model="r", prompt="x", max_tokens=1)
        await c.responses.create(model="r", input="x")
        assert [q.path for q in mock2.requests] == ["/v1/embeddings", "/v1/completions", "/v1/responses"]
        assert {q.body["model"] for q in mock2.requests} == {"m1"}


@pytest.mark.parametrize("path, body, param", [
    ("/v1/completions", {"model": "r"}, "prompt"),
    ("/v1/embeddings", {"model": "r"}, "input"),
    ("/v1/responses", {"input": "x"}, "model"),
    ("/v1/embeddings", {"input": "x", "model": "nope"}, "model"),
])
async def test_bad_requests_answer_openai_errors(mock, path, body, param) -> None:
    async with run_gateway(simple_config(mock.url)) as g, httpx.AsyncClient(base_url=g.url) as h:
        r = await h.post(path, json=body)
        assert r.status_code in (400, 404) and r.json()["error"]["param"] == param
        assert (await h.get(path)).status_code == 405

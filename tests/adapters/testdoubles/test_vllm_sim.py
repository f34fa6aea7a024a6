"""The vLLM simulator (a test double) over HTTP: a repeated prompt is faster on the replica that cached it and
only there, requests queue past max_num_seqs, an old prefix is evicted, a conversation's next turn hits on the
last answer, and its /metrics and streams parse as vLLM's and OpenAI's. Times are scaled to ~0.2 s effects."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapters.testdoubles.vllm_sim import SimParams, VllmSim
from adapters.testdoubles.vllm_sim_model import output_pieces
from tests.polling import until

# 2000 tokens/s: a 400-token prompt prefills in 0.2 s uncached, in ~8 ms once 384 of its tokens are cached.
FAST = SimParams(replicas=2, prefill_tokens_per_s=2000.0, prefill_overhead_s=0.0, decode_tokens_per_s=1000.0,
                 output_tokens=4)
LONG = "lorem ipsum " * 130  # ~1,600 characters: ~400 tokens


@dataclass
class Answer:
    sent_at: float
    first_at: float  # the first content chunk
    done_at: float
    text: str
    usage: dict[str, Any]

    @property
    def ttft(self) -> float:
        return self.first_at - self.sent_at


def _user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


async def _stream(http: aiohttp.ClientSession, url: str, messages: list[dict[str, Any]]) -> Answer:
    body = {"model": "any", "messages": messages, "stream": True, "stream_options": {"include_usage": True}}
    sent = time.monotonic()
    first, parts = 0.0, []
    usage: dict[str, Any] = {}
    async with http.post(url + "/chat/completions", json=body) as resp:
        assert resp.status == 200
        async for line in resp.content:
            if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
                continue
            chunk = msgspec.json.decode(line[6:])
            usage = chunk.get("usage") or usage
            content = chunk["choices"][0]["delta"].get("content") if chunk["choices"] else None
            if content:
                first = first or time.monotonic()
                parts.append(content)
    return Answer(sent, first, time.monotonic(), "".join(parts), usage)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def _metrics(http: aiohttp.ClientSession, url: str) -> dict[str, float]:
    """Every sample, by name (labels dropped, histogram buckets omitted)."""
    async with http.get(url.removesuffix("/v1") + "/metrics") as resp:
        text = await resp.text()
    return {s.name: s.value for fam in text_string_to_metric_families(text) for s in fam.samples
            if not s.name.endswith("_bucket")}


async def _stats(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(url.removesuffix("/v1") + "/sim/stats") as resp:
        return await resp.json()


async def test_a_repeated_prompt_hits_the_cache_on_its_replica_and_only_there(http: aiohttp.ClientSession) -> None:
    async with VllmSim(FAST) as sim:
        one, two = sim.urls
        cold = await _stream(http, one, _user(LONG))
        warm = await _stream(http, one, _user(LONG))
        other = await _stream(http, two, _user(LONG))
        assert cold.usage["prompt_tokens_details"]["cached_tokens"] == 0 and cold.ttft >= 0.18
        assert warm.usage["prompt_tokens_details"]["cached_tokens"] >= 0.9 * warm.usage["prompt_tokens"]
        assert warm.ttft < cold.ttft / 2
        assert other.usage["prompt_tokens_details"]["cached_tokens"] == 0 and other.ttft >= 0.18
        m1, m2 = await _metrics(http, one), await _metrics(http, two)
        assert m1["vllm:prefix_cache_hits_total"] == warm.usage["prompt_tokens_details"]["cached_tokens"]
        assert m1["vllm:prefix_cache_queries_total"] == 2 * cold.usage["prompt_tokens"]
        assert m2["vllm:prefix_cache_hits_total"] == 0
        assert (await _stats(http, one))["cached_tokens"] == m1["vllm:prefix_cache_hits_total"]
        assert sim.replicas[0].stats().requests == 2


async def test_past_max_num_seqs_a_request_waits_for_the_running_one(http: aiohttp.ClientSession) -> None:
    params = msgspec.structs.replace(FAST, max_num_seqs=1, decode_tokens_per_s=100.0, output_tokens=40)
    async with VllmSim(params) as sim:
        url = sim.urls[0]
        first = asyncio.create_task(_stream(http, url, _user("first " * 30)))
        await until(lambda: _running(http, url, 1), 5, "the first request running")
        second = asyncio.create_task(_stream(http, url, _user("second " * 30)))
        await until(lambda: _waiting(http, url, 1), 5, "the second request waiting")
        a, b = await first, await second
        assert b.first_at > a.done_at  # its TTFT holds the rest of the first request (~0.4 s of decode)
        assert b.ttft > 0.2 and b.ttft > a.ttft  # lower bounds only: a loaded machine only adds time
        stats = await _stats(http, url)
        assert (stats["peak_waiting"], stats["waiting"], stats["running"]) == (1, 0, 0)


async def _running(http: aiohttp.ClientSession, url: str, n: int) -> bool:
    return (await _metrics(http, url))["vllm:num_requests_running"] == n


async def _waiting(http: aiohttp.ClientSession, url: str, n: int) -> bool:
    return (await _metrics(http, url))["vllm:num_requests_waiting"] == n


async def test_a_tiny_cache_evicts_an_old_prefix(http: aiohttp.ClientSession) -> None:
    params = msgspec.structs.replace(FAST, replicas=1, cache_blocks=12)  # a prompt below is ~8 blocks
    async with VllmSim(params) as sim:
        url = sim.urls[0]

        async def cached(name: str) -> int:
            answer = await _stream(http, url, _user(name + " padding" * 64))
            return int(answer.usage["prompt_tokens_details"]["cached_tokens"])

        assert await cached("alpha") == 0
        assert await cached("alpha") > 100
        assert await cached("beta") == 0
        assert await cached("gamma") == 0
        assert await cached("alpha") == 0  # beta and gamma pushed it out
        stats = sim.replicas[0].stats()
        assert stats.evictions > 0 and stats.cache_blocks <= 12


async def test_the_next_turn_hits_on_the_last_prompt_and_its_answer(http: aiohttp.ClientSession) -> None:
    params = msgspec.structs.replace(FAST, replicas=1, output_tokens=40)  # an answer of ~3 blocks
    async with VllmSim(params) as sim:
        url = sim.urls[0] + "/chat/completions"
        turn1 = [{"role": "system", "content": "be brief"}, *_user(LONG)]
        async with http.post(url, json={"model": "m", "messages": turn1}) as resp:
            one = await resp.json()
        reply = one["choices"][0]["message"]["content"]
        assert reply == "".join(output_pieces(40)) and one["choices"][0]["finish_reason"] == "stop"
        turn2 = [*turn1, {"role": "assistant", "content": reply}, *_user("and then?")]
        async with http.post(url, json={"model": "m", "messages": turn2, "max_tokens": 2}) as resp:
            two = await resp.json()
        assert two["choices"][0]["finish_reason"] == "length" and two["usage"]["completion_tokens"] == 2
        # More than the whole first prompt is cached: the answer's blocks were cached as it finished.
        assert two["usage"]["prompt_tokens_details"]["cached_tokens"] > one["usage"]["prompt_tokens"]


async def test_openai_sdk_reads_streams_and_answers_and_metrics_parse(http: aiohttp.ClientSession) -> None:
    from openai import AsyncOpenAI

    async with VllmSim(msgspec.structs.replace(FAST, replicas=1, stream_chunk_tokens=3)) as sim:
        client = AsyncOpenAI(base_url=sim.urls[0], api_key="unused", max_retries=0)
        try:
            stream = await client.chat.completions.create(
                model="sim-model", messages=[{"role": "user", "content": LONG}], stream=True,
                stream_options={"include_usage": True})
            chunks = [c async for c in stream]
            done = await client.chat.completions.create(
                model="sim-model", messages=[{"role": "user", "content": [{"type": "text", "text": LONG}]}])
            models = await client.models.list()
        finally:
            await client.close()
        assert chunks[0].choices[0].delta.role == "assistant"
        assert [len(c.choices) for c in chunks[-2:]] == [1, 0] and chunks[-2].choices[0].finish_reason == "stop"
        assert "".join(c.choices[0].delta.content or "" for c in chunks[:-1]) == "".join(output_pieces(4))
        assert len(chunks) == 1 + 2 + 1 + 1  # role, 4 tokens in chunks of 3, finish, usage
        usage = chunks[-1].usage
        assert usage is not None and usage.prompt_tokens_details is not None
        # A list of text parts renders as the same prompt, so the second request hits.
        assert done.usage is not None and done.usage.prompt_tokens_details is not None
        expected = (usage.prompt_tokens - 1) // 16 * 16  # whole blocks, never the last token
        assert done.usage.prompt_tokens_details.cached_tokens == expected > 0
        assert done.model == "sim-model" and [m.id for m in models.data] == ["sim-model"]
        async with http.get(sim.urls[0].removesuffix("/v1") + "/metrics") as resp:
            families = {f.name: f for f in text_string_to_metric_families(await resp.text())}
        for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:gpu_cache_usage_perc",
                     "vllm:kv_cache_usage_perc"):
            assert families[name].type == "gauge"
            assert families[name].samples[0].labels == {"model_name": "sim-model"}
        for name in ("vllm:prefix_cache_queries", "vllm:prefix_cache_hits", "vllm:request_success"):
            assert families[name].type == "counter"
        ttft = families["vllm:time_to_first_token_seconds"]
        assert ttft.type == "histogram"
        assert {s.name: s.value for s in ttft.samples}["vllm:time_to_first_token_seconds_count"] == 2
        assert 0 < families["vllm:gpu_cache_usage_perc"].samples[0].value < 1


@pytest.mark.parametrize("body", [
    b"not json", b"[]", b"{}", b'{"messages": []}', b'{"messages": "hi"}', b'{"messages": [{"role": 1}]}',
    b'{"messages": [{"role": "user", "content": 5}]}',
    b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": "many"}',
    b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}',
    b'{"messages": [{"role": "user", "content": "x"}], "stream": "yes"}',
])
async def test_bad_bodies_get_openai_shaped_400s(http: aiohttp.ClientSession, body: bytes) -> None:
    async with VllmSim(msgspec.structs.replace(FAST, replicas=1)) as sim:
        async with http.post(sim.urls[0] + "/chat/completions", data=body) as resp:
            assert resp.status == 400
            error = (await resp.json())["error"]
        assert error["type"] == "invalid_request_error" and error["message"]
        assert sim.replicas[0].stats().requests == 0


async def test_a_client_that_hangs_up_frees_its_slot_and_reset_waits_for_idle(
        http: aiohttp.ClientSession) -> None:
    params = msgspec.structs.replace(FAST, replicas=1, max_num_seqs=1, decode_tokens_per_s=50.0, output_tokens=500)
    async with VllmSim(params) as sim:
        url, root = sim.urls[0], sim.urls[0].removesuffix("/v1")
        engine = sim.replicas[0].engine
        body = {"model": "m", "messages": _user(LONG), "stream": True}
        resp = await http.post(url + "/chat/completions", json=body)
        await resp.content.readline()  # the role chunk: it is running, holding its slot and blocks
        waiter = asyncio.create_task(_stream(http, url, _user("queued")))
        await until(lambda: _waiting(http, url, 1), 5, "a request waiting")
        async with http.post(root + "/sim/reset") as busy:
            assert busy.status == 409
        assert engine.cache.pinned > 0
        waiter.cancel()  # a queued client that leaves leaves the queue at once
        await until(lambda: _waiting(http, url, 0), 5, "the queue empty")
        assert engine.slots.running == 1
        resp.close()
        await until(lambda: _idle(http, url), 5, "the replica idle")
        assert engine.cache.pinned == 0 and engine.stats().success == 0
        async with http.post(url + "/chat/completions", json={**body, "stream": False, "max_tokens": 2}) as resp2:
            assert resp2.status == 200  # the slot is free again
        async with http.post(root + "/sim/reset") as reset:
            assert reset.status == 200
        stats = engine.stats()
        assert (stats.requests, stats.cached_tokens, stats.cache_blocks, stats.peak_waiting) == (0, 0, 0, 0)
        async with http.get(root + "/health") as health:
            assert health.status == 200


async def _idle(http: aiohttp.ClientSession, url: str) -> bool:
    stats = await _stats(http, url)
    return stats["running"] == 0 and stats["waiting"] == 0


async def test_the_cli_prints_its_urls_serves_and_exits_0_on_sigterm(http: aiohttp.ClientSession) -> None:
    cmd = [sys.executable, "-m", "adapters.testdoubles.vllm_sim", "--replicas", "2", "--cache-blocks", "64",
           "--model", "tiny"]
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE, env={**os.environ})
    try:
        assert proc.stdout is not None
        line = msgspec.json.decode(await asyncio.wait_for(proc.stdout.readline(), 20))
        assert line["params"] == {**msgspec.structs.asdict(SimParams()), "replicas": 2, "cache_blocks": 64,
                                  "model": "tiny"}
        assert len(line["urls"]) == 2 and all(u.startswith("http://127.0.0.1:") for u in line["urls"])
        async with http.get(line["urls"][1] + "/models") as resp:
            assert (await resp.json())["data"][0]["id"] == "tiny"
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

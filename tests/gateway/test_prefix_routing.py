"""`balance: prefix_affinity` through a real gateway on simulated vLLM replicas (a TEST DOUBLE with a prefix
cache): a conversation stays where its prefix is cached, customers spread, sessions stick by header or
`user`, and a stopped replica's traffic moves to the others. Which replica served a request is read from
the simulator's per-replica counters; requests are sent one at a time, so exactly one counter moves."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from adapters.testdoubles.vllm_sim import SimParams, VllmSim
from tests.conftest import run_gateway

FAST = SimParams(replicas=4, prefill_tokens_per_s=1_000_000.0, prefill_overhead_s=0.0, decode_tokens_per_s=10_000.0,
                 output_tokens=8)


def _text(seed: str, chars: int) -> str:
    rng = random.Random(seed)
    return " ".join("".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 8))) for _ in range(chars))[
        :chars]


def _config(urls: list[str], **affinity: Any) -> dict[str, Any]:
    return {
        "server": {"log_level": "warning"},
        "control": {"enabled": False},
        "providers": [{"name": "v", "kind": "openai", "base_urls": urls, "balance": "prefix_affinity",
                       "metrics_interval_s": 0.2, "prefix_affinity": affinity,
                       "breaker": {"failure_threshold": 1, "cooldown_s": 60}}],
        "routes": [{"name": "r", "targets": [{"provider": "v", "model": "sim-model"}], "retry_backoff_s": 0.0}],
    }


@pytest.fixture
async def sim() -> AsyncIterator[VllmSim]:
    async with VllmSim(FAST) as s:
        yield s


class Client:
    """Posts one chat at a time and tells which replica served it."""

    def __init__(self, h: httpx.AsyncClient, sim: VllmSim) -> None:
        self.h, self.sim = h, sim

    async def chat(self, messages: list[dict[str, str]], headers: dict[str, str] | None = None,
                   **extra: Any) -> tuple[int, dict[str, Any]]:
        before = [r.stats().requests for r in self.sim.replicas]
        r = await self.h.post("/v1/chat/completions", json={"model": "r", "messages": messages, **extra},
                              headers=headers)
        assert r.status_code == 200, r.text
        moved = [i for i, (b, rep) in enumerate(zip(before, self.sim.replicas, strict=True))
                 if rep.stats().requests != b]
        assert len(moved) == 1, moved
        return moved[0], r.json()


def _cached(body: dict[str, Any]) -> int:
    return int(body["usage"]["prompt_tokens_details"]["cached_tokens"])


async def _conversation(c: Client, system: str, turns: int, tag: str) -> list[tuple[int, int]]:
    """(replica, cached tokens) of each turn; each turn sends the history and the reply back."""
    messages = [{"role": "system", "content": system}]
    out = []
    for t in range(turns):
        messages.append({"role": "user", "content": _text(f"{tag}:{t}", 200)})
        replica, body = await c.chat(messages)
        out.append((replica, _cached(body)))
        messages.append({"role": "assistant", "content": body["choices"][0]["message"]["content"]})
    return out


async def test_a_conversation_and_its_customers_stay_on_the_replica_holding_their_prefix(sim: VllmSim) -> None:
    async with run_gateway(_config(sim.urls)) as g, httpx.AsyncClient(base_url=g.url) as h:
        c = Client(h, sim)
        system = _text("customer-0", 4000)
        turns = await _conversation(c, system, 4, "a")
        home = turns[0][0]
        assert [r for r, _ in turns] == [home] * 4
        assert turns[0][1] == 0 and all(cached > 0 for _, cached in turns[1:])
        # later turns hit on the earlier turn's prompt and reply too, not only the system prompt
        assert turns[3][1] > turns[1][1] > 1000 // 4
        # another conversation with the same customer: same replica, its system prompt already cached
        other = await _conversation(c, system, 2, "b")
        assert [r for r, _ in other] == [home, home] and other[0][1] >= 3900 // 4


async def test_different_customers_spread_over_replicas(sim: VllmSim) -> None:
    async with run_gateway(_config(sim.urls)) as g, httpx.AsyncClient(base_url=g.url) as h:
        c = Client(h, sim)
        systems = [_text(f"customer-{k}", 2000) for k in range(8)]
        first = [(await c.chat([{"role": "system", "content": s}, {"role": "user", "content": "hi"}]))[0]
                 for s in systems]
        assert len(set(first)) > 1
        again = [await c.chat([{"role": "system", "content": s}, {"role": "user", "content": "more"}])
                 for s in systems]
        assert [r for r, _ in again] == first and all(_cached(b) > 0 for _, b in again)


@pytest.mark.parametrize("affinity", ["header", "user"])
async def test_a_session_sticks_to_one_replica_whatever_its_prompt(sim: VllmSim, affinity: str) -> None:
    async with run_gateway(_config(sim.urls, affinity=affinity)) as g, httpx.AsyncClient(base_url=g.url) as h:
        c = Client(h, sim)

        async def send(session: str, n: int) -> int:
            messages = [{"role": "user", "content": _text(f"{session}:{n}", 1500)}]  # unrelated prompts
            if affinity == "header":
                return (await c.chat(messages, headers={"x-session-id": session}))[0]
            return (await c.chat(messages, user=session))[0]

        homes = []
        for k in range(8):
            replicas = {await send(f"session-{k}", n) for n in range(4)}
            assert len(replicas) == 1, (k, replicas)
            homes.append(replicas.pop())
        assert len(set(homes)) > 1  # sessions are spread, not all on one replica


async def test_a_stopped_replica_traffic_moves_to_the_others(sim: VllmSim) -> None:
    async with run_gateway(_config(sim.urls)) as g, httpx.AsyncClient(base_url=g.url) as h:
        c = Client(h, sim)
        system = _text("customer-stop", 3000)
        messages = [{"role": "system", "content": system}, {"role": "user", "content": "one"}]
        home, _ = await c.chat(messages)
        await sim.replicas[home].stop()
        backends = g.gateway.generation.providers["v"].backends
        # the first request fails on the stopped replica, opens its breaker (threshold 1) and is retried
        moved, _ = await c.chat([*messages, {"role": "user", "content": "two"}])
        assert moved != home and not backends[home].breaker.available()
        # with the breaker open the conversation settles on one of the others and hits its cache there
        later = [await c.chat([*messages, {"role": "user", "content": f"turn {n}"}]) for n in range(3)]
        assert {r for r, _ in later} == {moved} and all(_cached(b) > 0 for _, b in later)
        # other customers keep being served, by the live replicas only
        for k in range(6):
            r, _ = await c.chat([{"role": "system", "content": _text(f"other-{k}", 1000)},
                                 {"role": "user", "content": "hi"}])
            assert r != home


async def test_a_retry_leaves_the_replica_that_just_failed(sim: VllmSim) -> None:
    cfg = _config(sim.urls)
    cfg["providers"][0]["breaker"] = {"failure_threshold": 5, "cooldown_s": 60}  # the default threshold
    async with run_gateway(cfg) as g, httpx.AsyncClient(base_url=g.url) as h:
        c = Client(h, sim)
        messages = [{"role": "system", "content": _text("customer-retry", 3000)}, {"role": "user", "content": "one"}]
        home, _ = await c.chat(messages)
        await sim.replicas[home].stop()
        moved, _ = await c.chat([*messages, {"role": "user", "content": "two"}])  # retries: 1 (the default)
        assert moved != home

"""The prefix-affinity picker: block hashing, the index, rendezvous order and the bounded-load fallback."""

from __future__ import annotations

import math
import random
from collections import Counter
from typing import Any

import pytest

from adapters.upstream import Backend, CircuitBreaker
from adapters.upstream.prefix_affinity import (
    PrefixAffinity,
    block_hashes,
    render_prompt,
    rendezvous_score,
    stable_key,
)

URLS = [f"http://vllm-{i}:8000/v1" for i in range(8)]


def _backends(urls: list[str] = URLS) -> list[Backend]:
    return [Backend(url=u, breaker=CircuitBreaker(1, 60)) for u in urls]


def _picker(urls: list[str] = URLS, **kw: Any) -> PrefixAffinity:
    kw.setdefault("block_chars", 16)
    return PrefixAffinity(urls, **kw)


def _chat(*contents: str, system: str = "") -> dict[str, Any]:
    msgs = [{"role": "system", "content": system}] if system else []
    msgs += [{"role": "user" if i % 2 == 0 else "assistant", "content": c} for i, c in enumerate(contents)]
    return {"model": "m", "messages": msgs}


def _text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("abcdefghij ") for _ in range(n))


# -- hashing ----------------------------------------------------------------------------------------------

def test_block_hashes_are_cumulative_and_cover_only_full_blocks() -> None:
    a = block_hashes("x" * 40 + "tail", 16, 100)
    assert len(a) == 2  # 44 chars: two full blocks of 16, the rest ignored as vLLM ignores a partial block
    b = block_hashes("y" * 16 + "x" * 24, 16, 100)
    # Same second block's text, different first block: the cumulative hash differs.
    assert a[1] != b[1]
    # A shared prefix gives the same leading hashes, then they part.
    c = block_hashes("x" * 16 + "z" * 16, 16, 100)
    assert c[0] == a[0] and c[1] != a[1]
    assert block_hashes("x" * 1000, 16, 5) == block_hashes("x" * 80, 16, 5)  # bounded work on huge prompts


def test_render_prompt_keeps_roles_and_text_parts_in_order() -> None:
    body = {"messages": [
        {"role": "system", "content": "S"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {}},
                                     {"type": "text", "text": "b"}]},
        "junk", {"role": 3, "content": None},
    ]}
    assert render_prompt(body) == "system\nS\x1euser\nab\x1e\n\x1e"
    # Moving text between roles changes the rendering (a role is part of the prefix, as in a chat template).
    assert render_prompt(_chat("hi", system="s")) != render_prompt(_chat("s", "hi"))
    assert render_prompt({"prompt": "p"}) == "p"
    assert render_prompt({"prompt": ["p", "q"]}) == "p"
    assert render_prompt({"input": "x"}) == ""


def test_stable_key_is_the_same_in_every_process() -> None:
    assert stable_key("abc") == 891568578  # crc32: independent of PYTHONHASHSEED
    assert rendezvous_score(1, 2) == rendezvous_score(1, 2) != rendezvous_score(2, 1)


# -- affinity -----------------------------------------------------------------------------------------------

def test_conversation_turns_and_shared_system_prompt_stay_on_one_replica() -> None:
    rng = random.Random(1)
    backends, p = _backends(), _picker()
    system = _text(rng, 400)
    first = p.pick(backends, _chat("q1 " + _text(rng, 40), system=system))
    assert first is not None
    turns = ["q1 " + _text(rng, 40)]
    for _ in range(5):  # multi-turn: history grows, always the same replica
        turns += [_text(rng, 60), "q " + _text(rng, 30)]
        assert p.pick(backends, _chat(*turns, system=system)) is first
    # Another conversation of the same customer (same long system prompt): same replica.
    assert p.pick(backends, _chat("other question " + _text(rng, 50), system=system)) is first


def test_unseen_prompts_go_to_the_least_loaded_replica() -> None:
    rng = random.Random(2)
    backends, p = _backends(), _picker()
    for i, b in enumerate(backends):
        b.inflight = 5 if i != 3 else 1
    assert p.pick(backends, _chat(_text(rng, 200))) is backends[3]
    backends[3].inflight = 9
    backends[6].waiting = -4.0  # a scraped queue counts like in-flight requests
    assert p.pick(backends, _chat(_text(rng, 200))) is backends[6]


def test_customers_spread_when_load_is_even() -> None:
    rng = random.Random(3)
    backends, p = _backends(), _picker()
    homes: Counter[str] = Counter()
    for _ in range(200):
        b = p.pick(backends, _chat("hello", system=_text(rng, 300)))
        assert b is not None
        homes[b.url] += 1
    assert len(homes) == 8 and max(homes.values()) <= 40  # ties broken by rendezvous, not always replica 0


# -- bounded load ---------------------------------------------------------------------------------------

def test_an_overloaded_home_is_passed_over_for_the_next_in_rendezvous_order() -> None:
    rng = random.Random(4)
    backends, p = _backends(), _picker(epsilon=0.25)
    body = _chat("q", system=_text(rng, 400))
    home = p.pick(backends, body)
    assert home is not None
    for b in backends:
        b.inflight = 4
    home.inflight = 6  # cap = ceil(1.25 * (8 * 4 + 2 + 1) / 8) = 6: 6 + 1 > 6
    cap = math.ceil(1.25 * (sum(b.inflight for b in backends) + 1) / 8)
    assert home.inflight + 1 > cap
    spill = p.pick(backends, body)
    assert spill is not None and spill is not home
    # The spill follows rendezvous order on the prefix: the same request spills to the same replica.
    assert p.pick(backends, body) in (spill, home)
    home.inflight = 4  # back under the bound: the prefix's holders come first again
    assert p.pick(backends, body) in (home, spill)


def test_no_replica_exceeds_the_bound_under_a_hot_prefix() -> None:
    """Every request shares one prefix (a hot customer): the home fills to the bound, then others take it,
    and no replica ever holds more than ceil((1 + eps) x mean) requests."""
    rng = random.Random(5)
    backends, p = _backends(), _picker(epsilon=0.5)
    system = _text(rng, 400)
    for n in range(1, 200):
        b = p.pick(backends, _chat(_text(rng, 20), system=system))
        assert b is not None
        b.inflight += 1
        mean = n / len(backends)
        assert max(x.inflight for x in backends) <= math.ceil(1.5 * mean) or n < 2
    # Bounded, yet not sprayed everywhere: the prefix lives on as few replicas as the bound allows.
    used = sum(1 for b in backends if b.inflight)
    assert math.ceil(len(backends) / 1.5) <= used < len(backends)


def test_breakers_are_honoured_and_all_open_gives_none() -> None:
    rng = random.Random(6)
    backends, p = _backends(URLS[:2]), _picker(URLS[:2])
    body = _chat("q", system=_text(rng, 300))
    home = p.pick(backends, body)
    assert home is not None
    home.breaker.record_failure()
    other = p.pick(backends, body)
    assert other is not None and other is not home
    other.breaker.record_failure()
    assert p.pick(backends, body) is None


# -- replica set change -------------------------------------------------------------------------------------

def test_removing_a_replica_moves_only_its_own_customers() -> None:
    """A reload that drops a replica: the new picker adopts the old one's index, so customers placed on the
    seven survivors stay exactly where they were, and the gone replica's customers spread over the rest."""
    rng = random.Random(7)
    systems = [_text(rng, 300) for _ in range(120)]
    full, full_backends = _picker(), _backends()
    before = {}
    for s in systems:
        b = full.pick(full_backends, _chat("q", system=s))
        assert b is not None
        b.inflight += 1  # load moves placements around: they are not a function of the prompt alone
        before[s] = b.url
    gone = URLS[5]
    survivors = [u for u in URLS if u != gone]
    p2, b2 = _picker(survivors), _backends(survivors)
    p2.adopt(full)
    after = {}
    for s in systems:
        b = p2.pick(b2, _chat("q2", system=s))
        assert b is not None
        b.inflight += 1
        after[s] = b.url
    stayed = [s for s in systems if before[s] != gone]
    assert stayed and all(after[s] == before[s] for s in stayed)
    assert {after[s] for s in systems if before[s] == gone} - {gone} == {after[s] for s in systems
                                                                         if before[s] == gone}
    # Without adopting, the placements start over (what the adoption saves).
    p3, b3 = _picker(survivors), _backends(survivors)
    fresh = [p3.pick(b3, _chat("q2", system=s)) for s in stayed]
    assert sum(b is not None and b.url != before[s] for b, s in zip(fresh, stayed, strict=True)) > len(stayed) // 4


# -- sessions -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("affinity", ["user", "header"])
def test_session_affinity_ignores_the_prompt(affinity: str) -> None:
    rng = random.Random(8)
    backends, p = _backends(), _picker(affinity=affinity, header="X-Session-ID")

    def pick(session: str) -> Backend:
        body = _chat(_text(rng, 100))
        headers = [(b"x-session-id", session.encode())]
        if affinity == "user":
            body["user"] = session
        b = p.pick(backends, body, headers)
        assert b is not None
        return b

    for s in ("alice", "bob", "carol"):
        assert len({pick(s).url for _ in range(10)}) == 1
    assert len({pick(f"user-{i}").url for i in range(64)}) >= 5  # sessions spread
    # No session value: the prompt decides (and the request still gets a replica).
    assert p.pick(backends, _chat(_text(rng, 100)), []) is not None


# -- the index stays bounded ------------------------------------------------------------------------------

def test_index_is_bounded_per_replica_and_forgets_the_oldest() -> None:
    rng = random.Random(9)
    backends, p = _backends(URLS[:2]), _picker(URLS[:2], index_blocks=64)
    old_system = _text(rng, 600)
    home = p.pick(backends, _chat("q", system=old_system))
    assert home is not None
    i = backends.index(home)
    for _ in range(200):  # floods of unrelated prompts
        p.pick(backends, _chat(_text(rng, 600)))
    assert p.held(0) <= 64 and p.held(1) <= 64
    assert len(p._holders) <= 128
    # The old prefix was forgotten: the next pick is by load, not by memory.
    backends[i].inflight = 3
    assert p.pick(backends, _chat("q", system=old_system)) is backends[1 - i]


def test_a_retry_leaves_the_prefix_holder_that_failed_and_teaches_the_index_its_new_home() -> None:
    rng = random.Random(9)
    backends, p = _backends(URLS[:3]), _picker(URLS[:3])
    body = _chat("q", system=_text(rng, 300))
    home = p.pick(backends, body)
    assert home is not None and p.pick(backends, body) is home  # its prefix lives there
    moved = p.pick(backends, body, None, home)  # a retry after home failed (its breaker still closed)
    assert moved is not None and moved is not home
    assert p.pick(backends, _chat("q2", system=_text(random.Random(9), 300))) in (home, moved)  # both hold it
    for b in backends:
        if b is not home:
            b.breaker.record_failure()
    assert p.pick(backends, body, None, home) is home  # the only one left takes the retry

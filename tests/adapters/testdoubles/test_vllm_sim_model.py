"""The vLLM simulator's pure parts: the template, token and block arithmetic, the pinned LRU, the FIFO slots."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from adapters.testdoubles.vllm_sim_model import (
    PrefixCache,
    SimParams,
    block_hashes,
    output_pieces,
    prompt_tokens,
    render_chat,
    render_continuation,
)
from adapters.testdoubles.vllm_sim_replica import FifoSlots

P = SimParams(chars_per_token=2, block_tokens=2)  # 4-character blocks keep the arithmetic visible


def test_template_tokens_and_the_next_turn_starts_with_the_last_one() -> None:
    prompt = render_chat([("system", "be brief"), ("user", "hi")])
    assert prompt == "<|system|>\nbe brief<|end|>\n<|user|>\nhi<|end|>\n<|assistant|>\n"
    assert prompt_tokens("abcde", 4) == 2 and prompt_tokens("abcd", 4) == 1
    reply = "".join(output_pieces(3))
    assert reply == "sim says the"
    turn2 = render_chat([("system", "be brief"), ("user", "hi"), ("assistant", reply), ("user", "more")])
    assert turn2.startswith(render_continuation(prompt, reply))


def test_block_hashes_cover_full_blocks_and_chain_on_their_parents() -> None:
    assert len(block_hashes("abcdefghi", P)) == 2  # the partial block "i" is not hashed
    a, b = block_hashes("xxxxyyyy", P), block_hashes("zzzzyyyy", P)
    assert a[0] != b[0] and a[1] != b[1]  # the same text after another prefix is another block
    assert block_hashes("xxxxyyyyzz", P) == a


def test_lru_evicts_oldest_unpinned_blocks_and_never_pinned_ones() -> None:
    cache = PrefixCache(3)
    cache.pin([1, 2, 3, 4])
    assert len(cache) == 4 and cache.evictions == 0  # all pinned: over capacity until released
    cache.release([1, 2, 3, 4])
    # Released tail first: 4 is the oldest, so it goes; the prefix's head stays.
    assert (len(cache), cache.match([1, 2, 3, 4]), 4 in cache, cache.evictions) == (3, 3, False, 1)
    cache.pin([1])
    cache.release([], [7, 8])  # an answer's blocks arrive unpinned and evict the oldest others
    assert 1 in cache and 7 in cache and 8 in cache and 2 not in cache and 3 not in cache
    assert cache.match([1, 9, 7]) == 1  # stops at the first miss
    cache.release([1])
    assert cache.pinned == 0
    cache.clear()
    assert len(cache) == 0 and cache.evictions == 0


def test_shared_blocks_stay_pinned_until_their_last_user_leaves() -> None:
    cache = PrefixCache(1)
    cache.pin([1])
    cache.pin([1, 2])
    cache.release([1, 2])
    assert 1 in cache and cache.pinned == 1
    cache.release([1])
    assert cache.pinned == 0 and len(cache) == 1


@pytest.mark.parametrize("bad", [{"replicas": 0}, {"block_tokens": 0}, {"decode_tokens_per_s": 0.0},
                                 {"prefill_overhead_s": -1.0}, {"model": ""}])
def test_params_refuse_nonsense(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        SimParams(**bad)  # type: ignore[arg-type]
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(bad, SimParams)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"replica": 2}, SimParams)  # a typo is refused, not ignored


async def test_slots_queue_first_come_first_served_and_a_cancelled_waiter_leaves() -> None:
    slots = FifoSlots(1)
    await slots.acquire()
    order: list[str] = []

    async def take(name: str) -> None:
        await slots.acquire()
        order.append(name)

    a, b, c = (asyncio.create_task(take(n)) for n in "abc")
    await asyncio.sleep(0)
    assert (slots.running, slots.waiting, slots.peak_waiting) == (1, 3, 3)
    b.cancel()
    await asyncio.sleep(0)
    assert slots.waiting == 2
    slots.release()
    await a
    slots.release()
    await c
    assert order == ["a", "c"] and slots.running == 1
    slots.release()
    assert slots.running == 0


async def test_a_waiter_cancelled_as_it_is_granted_passes_the_slot_on() -> None:
    slots = FifoSlots(1)
    await slots.acquire()
    first = asyncio.create_task(slots.acquire())
    second = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    slots.release()  # grants `first` ...
    first.cancel()  # ... which is cancelled before it runs: `second` gets the slot
    await second
    assert first.cancelled() and (slots.running, slots.waiting) == (1, 0)

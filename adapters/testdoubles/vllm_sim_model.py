"""The simulator's model of a prompt (a TEST DOUBLE, not a model): its parameters, the chat template, token
counts by characters, cumulative block hashes and a per-replica prefix cache (LRU over block hashes, with pins).

Pure data and arithmetic, no I/O and no clock: `vllm_sim_replica` adds time and scheduling on top."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence

import msgspec

__all__ = ["OUTPUT_WORDS", "PrefixCache", "SimParams", "block_hashes", "output_pieces", "prompt_tokens",
           "render_chat", "render_continuation"]

END = "<|end|>\n"
GENERATION_PROMPT = "<|assistant|>\n"
OUTPUT_WORDS = ("sim", "says", "the", "cached", "prefix", "was", "reused", "here")
_SEED_HASH = 0  # the parent hash of a prompt's first block (vLLM's NONE_HASH)


class SimParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Every knob of the simulator; each field is also a `--kebab-case` CLI flag."""

    replicas: int = 4
    model: str = "sim-model"
    chars_per_token: int = 4
    block_tokens: int = 16
    cache_blocks: int = 8192
    max_num_seqs: int = 16
    prefill_tokens_per_s: float = 20000.0
    prefill_overhead_s: float = 0.002
    decode_tokens_per_s: float = 100.0
    output_tokens: int = 32
    max_output_tokens: int = 1024
    stream_chunk_tokens: int = 1

    def __post_init__(self) -> None:
        positive = ("replicas", "chars_per_token", "block_tokens", "cache_blocks", "max_num_seqs",
                    "prefill_tokens_per_s", "decode_tokens_per_s", "output_tokens", "max_output_tokens",
                    "stream_chunk_tokens")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.prefill_overhead_s < 0:
            raise ValueError("prefill_overhead_s must not be negative")
        if not self.model:
            raise ValueError("model must not be empty")

    @property
    def block_chars(self) -> int:
        return self.block_tokens * self.chars_per_token


def render_chat(messages: Iterable[tuple[str, str]]) -> str:
    """The fixed chat template: `<|role|>\\ncontent<|end|>\\n` per message, then the generation prompt."""
    return "".join(f"<|{role}|>\n{content}{END}" for role, content in messages) + GENERATION_PROMPT


def render_continuation(prompt: str, output: str) -> str:
    """The prompt followed by the answer as the template renders it on the next turn, so that turn's prompt
    starts with exactly this text."""
    return prompt + output + END


def prompt_tokens(text: str, chars_per_token: int) -> int:
    return -(-len(text) // chars_per_token)


def block_hashes(text: str, params: SimParams) -> list[int]:
    """One hash per *full* block, each over (parent hash, block text): equal hashes mean equal prefixes."""
    size = params.block_chars
    out: list[int] = []
    parent = _SEED_HASH
    for start in range(0, len(text) - size + 1, size):
        parent = hash((parent, text[start:start + size]))
        out.append(parent)
    return out


def output_pieces(n: int) -> list[str]:
    """The answer's tokens: a deterministic word cycle, one word per token."""
    return [(" " if i else "") + OUTPUT_WORDS[i % len(OUTPUT_WORDS)] for i in range(n)]


class PrefixCache:
    """Cached block hashes of one replica, as vLLM's block pool keeps them: a block in use by a running sequence
    is pinned (a reference count) and sits outside the LRU, so it cannot be evicted; a block no one uses goes
    to the LRU's recent end and is evicted oldest first. When every cached block is pinned the cache holds more
    than `capacity` until pins are released (vLLM would preempt a sequence; the simulator does not)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._lru: OrderedDict[int, None] = OrderedDict()  # unpinned, oldest first
        self._pins: dict[int, int] = {}
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._lru) + len(self._pins)

    @property
    def pinned(self) -> int:
        """How many cached blocks running sequences hold."""
        return len(self._pins)

    def __contains__(self, block: int) -> bool:
        return block in self._pins or block in self._lru

    def match(self, blocks: Sequence[int]) -> int:
        """How many leading blocks are cached, stopping at the first miss."""
        n = 0
        for block in blocks:
            if block not in self:
                break
            n += 1
        return n

    def pin(self, blocks: Iterable[int]) -> None:
        """Take a reference on each block, caching the ones not cached yet."""
        for block in blocks:
            if block in self._pins:
                self._pins[block] += 1
            else:
                self._lru.pop(block, None)
                self._pins[block] = 1
        self._evict()

    def release(self, pinned: Sequence[int], extra: Sequence[int] = ()) -> None:
        """Drop a sequence's references on `pinned` and cache `extra` (its answer's blocks) unpinned. Blocks
        reach the recent end last-block-first, as vLLM frees them, so a prefix's tail is evicted before its
        head."""
        for block in reversed(extra):
            if block not in self._pins:
                self._lru[block] = None
                self._lru.move_to_end(block)
        for block in reversed(pinned):
            refs = self._pins.get(block, 0)
            if refs > 1:
                self._pins[block] = refs - 1
            elif refs == 1:
                del self._pins[block]
                self._lru[block] = None
        self._evict()

    def clear(self) -> None:
        self._lru.clear()
        self._pins.clear()
        self.evictions = 0

    def _evict(self) -> None:
        while len(self) > self.capacity and self._lru:
            self._lru.popitem(last=False)
            self.evictions += 1

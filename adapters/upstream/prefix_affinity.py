"""`balance: prefix_affinity`: send a request to the replica that most likely holds its prompt's prefix in
vLLM's KV cache, unless that replica is overloaded.

vLLM's automatic prefix caching reuses the KV blocks of a prompt prefix it computed before; a request
landing on a replica that holds its prefix skips most of its prefill. We cannot see vLLM's cache, so we
remember what we sent where:

* **Blocks.** The rendered messages (`render_prompt`) are cut into blocks of `block_chars` characters
  and hashed cumulatively, each block's hash covering everything before it, as vLLM hashes its token
  blocks (`block_hashes`). Characters stand in for tokens: the gateway never tokenizes. Only full blocks
  count, as in vLLM. Block hashes use Python's `hash` (salted per process): the index is per process.
* **Index.** Per replica, an LRU of the block hashes routed to it (`index_blocks` entries, about the size
  of its KV cache), plus one map from block hash to the replicas holding it. Lookup walks the blocks
  from the longest prefix back, so a multi-turn conversation finds its previous turn in a few probes.
  Only the blocks a replica did not hold are added; the longest held one is touched.
* **Choice.** The replicas holding the longest recently seen prefix come first, then the others; each
  group in **rendezvous** (highest-random-weight) order on that prefix, scored with a hash that is the
  same in every process, so a replica set change moves only the removed replica's share of prefixes. A
  prompt nothing holds goes to the least-loaded replica (ties broken by rendezvous on its first block):
  with nothing to reuse, load is all that matters.
* **Bounded load.** A replica is taken only if its load (our in-flight requests plus its scraped
  `vllm:num_requests_waiting`) plus this request stays within ceil((1 + epsilon) x mean), the mean
  counting this request (consistent hashing with bounded loads, Mirrokni et al. 2018). Otherwise the
  next replica in order is tried; one always fits, so no replica runs far above the mean.
* **Sessions.** `affinity: user` (the body's `user`) or `affinity: header` (a named header) keys the
  request on that value instead: rendezvous order on it, same load bound, no index. A request without
  the value falls back to its prompt.

Everything here is process-local and touched only by the event loop's thread: nothing is shared, locked
or awaited on the hot path. Breakers are honoured: a replica whose breaker is open is skipped.
"""

from __future__ import annotations

import math
import zlib
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Literal

from adapters.upstream.balancer import candidates
from adapters.upstream.base import Backend

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["PrefixAffinity", "block_hashes", "render_prompt", "rendezvous_score", "stable_key"]

_M64 = (1 << 64) - 1


def render_prompt(body: dict[str, Any]) -> str:
    """The text a chat template would start from: each message's role and text, in order (a completions
    `prompt` as is). Tool definitions and sampling settings are left out: they rarely change within a
    conversation, and vLLM's template puts them before the messages only for some models."""
    messages = body.get("messages")
    if isinstance(messages, list):
        parts: list[str] = []
        for m in messages:
            if not isinstance(m, dict):
                continue
            role = m.get("role")
            parts.append(role if isinstance(role, str) else "")
            parts.append("\n")
            content = m.get("content")
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):
                for part in content:
                    if isinstance(part, dict):
                        text = part.get("text")
                        if isinstance(text, str):
                            parts.append(text)
            parts.append("\x1e")
        return "".join(parts)
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
        return prompt[0]
    return ""


def block_hashes(text: str, block_chars: int, max_blocks: int) -> list[int]:
    """Cumulative hashes of the leading full blocks: hash i covers characters [0, (i + 1) x block_chars)."""
    n = min(len(text) // block_chars, max_blocks)
    out: list[int] = []
    h = 0
    for start in range(0, n * block_chars, block_chars):
        h = hash((h, text[start:start + block_chars]))
        out.append(h)
    return out


def stable_key(text: str) -> int:
    """A hash that every gateway process agrees on (Python's `hash` of a str is salted per process)."""
    return zlib.crc32(text.encode("utf-8", "surrogatepass"))


def rendezvous_score(key: int, seed: int) -> int:
    """Highest-random-weight score of a replica (`seed`) for a key: splitmix64's finalizer over both."""
    z = (key * 0x9E3779B97F4A7C15 + seed) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


class PrefixAffinity:
    """One provider's picker and prefix index. The gateway keeps one per provider and hands it the
    provider's replicas on every pick; they must be the same list for the picker's life."""

    def __init__(
        self, urls: Sequence[str], *, block_chars: int = 512, max_blocks: int = 256, index_blocks: int = 4096,
        epsilon: float = 0.25, affinity: Literal["prompt", "user", "header"] = "prompt",
        header: str = "x-session-id",
    ) -> None:
        self.block_chars, self.max_blocks, self.index_blocks = block_chars, max_blocks, index_blocks
        self.epsilon, self.affinity = epsilon, affinity
        self.header = header.lower().encode("latin-1")
        self.urls = list(urls)
        self._seeds = [stable_key(u) for u in urls]  # a replica's identity is its URL, not its position
        self._lru: list[OrderedDict[int, None]] = [OrderedDict() for _ in urls]
        self._holders: dict[int, int] = {}  # block hash -> bit mask of the replicas whose index holds it

    def pick(self, backends: list[Backend], body: dict[str, Any],
             headers: list[tuple[bytes, bytes]] | None = None, avoid: Backend | None = None) -> Backend | None:
        """The replica for this request, or None when every breaker is open. Records the prompt's blocks
        against the chosen replica (a request is routed once per attempt, and a retry lands elsewhere: ``avoid``,
        the replica its last attempt failed on, is left out while another is available)."""
        live = candidates(backends, avoid)
        if not live:
            return None
        if len(live) == 1:
            i = live[0]
        else:
            cap = self._cap(backends, live)
            session = self._session(body, headers) if self.affinity != "prompt" else None
            if session is not None:
                key = stable_key(session)
                i = self._first_fitting(backends, sorted(live, key=lambda r: -rendezvous_score(key, self._seeds[r])),
                                        cap)
                return backends[i] if backends[i].breaker.acquire() else None
            text = render_prompt(body)
            hashes = block_hashes(text, self.block_chars, self.max_blocks)
            i = self._choose(backends, live, cap, text, hashes)
            self._record(i, hashes)
        b = backends[i]
        return b if b.breaker.acquire() else None

    # -- choice -------------------------------------------------------------------------------------------

    def _cap(self, backends: list[Backend], live: list[int]) -> float:
        total = 1.0  # this request
        for i in live:
            b = backends[i]
            total += b.inflight + b.waiting
        return math.ceil((1.0 + self.epsilon) * total / len(live))

    def _choose(self, backends: list[Backend], live: list[int], cap: float, text: str, hashes: list[int]) -> int:
        holders_of = self._holders
        for j in range(len(hashes) - 1, -1, -1):
            mask = holders_of.get(hashes[j])
            if not mask:
                continue
            if not _many(mask):  # the common case: one replica holds it; no ordering needed if it has room
                i = mask.bit_length() - 1
                if i in live:
                    b = backends[i]
                    if b.inflight + b.waiting + 1 <= cap:
                        return i
            # A key every process agrees on, distinct per prefix length: the first block's text and j.
            key = stable_key(text[: self.block_chars]) ^ ((j + 1) << 32)
            seeds = self._seeds
            order = sorted(live, key=lambda r: (not (mask >> r) & 1, -rendezvous_score(key, seeds[r])))
            return self._first_fitting(backends, order, cap)
        # Nothing to reuse: the least-loaded replica, ties by rendezvous on the first block.
        key = stable_key(text[: self.block_chars])
        seeds = self._seeds
        return min(live, key=lambda r: (backends[r].inflight + backends[r].waiting, -rendezvous_score(key, seeds[r])))

    @staticmethod
    def _first_fitting(backends: list[Backend], order: list[int], cap: float) -> int:
        for i in order:
            b = backends[i]
            if b.inflight + b.waiting + 1 <= cap:
                return i
        return min(order, key=lambda r: backends[r].inflight + backends[r].waiting)  # only with stale gauges

    def _session(self, body: dict[str, Any], headers: list[tuple[bytes, bytes]] | None) -> str | None:
        if self.affinity == "user":
            user = body.get("user")
            return user if isinstance(user, str) and user else None
        for name, value in headers or ():
            if name == self.header and value:
                return value.decode("latin-1")
        return None

    # -- index --------------------------------------------------------------------------------------------

    def _record(self, i: int, hashes: list[int]) -> None:
        """Add the blocks replica i did not hold (longest first, so shorter prefixes stay longest, as vLLM
        frees a sequence's blocks tail first) and touch the longest it held; evict its oldest beyond the cap."""
        if not hashes:
            return
        lru, holders, bit = self._lru[i], self._holders, 1 << i
        new: list[int] = []
        for h in reversed(hashes):
            if h in lru:
                lru.move_to_end(h)
                break
            new.append(h)
        for h in new:
            lru[h] = None
            holders[h] = holders.get(h, 0) | bit
        while len(lru) > self.index_blocks:
            old, _ = lru.popitem(last=False)
            mask = holders.get(old, 0) & ~bit
            if mask:
                holders[old] = mask
            else:
                holders.pop(old, None)

    def adopt(self, old: PrefixAffinity) -> None:
        """Take over what this provider's previous picker learned (a reload that changed its replica list):
        replicas listed by both keep their index, so only a removed replica's prefixes move."""
        where = {u: i for i, u in enumerate(self.urls)}
        for j, url in enumerate(old.urls):
            i = where.get(url)
            if i is None:
                continue
            lru = OrderedDict(old._lru[j])
            while len(lru) > self.index_blocks:
                lru.popitem(last=False)
            self._lru[i] = lru
        holders: dict[int, int] = {}
        for i, lru in enumerate(self._lru):
            bit = 1 << i
            for h in lru:
                holders[h] = holders.get(h, 0) | bit
        self._holders = holders

    def held(self, i: int) -> int:
        """How many block hashes replica i's index holds (for tests and the benchmark)."""
        return len(self._lru[i])


def _many(mask: int) -> bool:
    return mask & (mask - 1) != 0

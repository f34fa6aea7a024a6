"""Texts as byte-level training examples: a seeded 90/10 split, mini-batches, a fixed held-out set.

Each text becomes ``context`` zero bytes, its UTF-8 bytes and one closing zero (the end of the text is learned
too); every text is one segment of a single uint8 stream, and an example is a position in that stream whose
context is the ``context`` bytes before it. Nothing is copied per example: a batch gathers its windows from a
strided view of the stream. The split and the shards depend only on the texts and the seed, so every attempt
and every rank sees the same ones.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Corpus", "Examples"]

_EVAL_EXAMPLES = 4096


class Examples:
    """Positions in one stream; ``batch`` draws with replacement, ``chunks`` walks them in order."""

    def __init__(self, texts: list[str], context: int) -> None:
        parts: list[np.ndarray] = []
        positions: list[np.ndarray] = []
        offset = 0
        pad = np.zeros(context, np.uint8)
        for text in texts:
            data = np.frombuffer(text.encode("utf-8", "replace"), np.uint8)
            parts.extend([pad, data, np.zeros(1, np.uint8)])
            start = offset + context
            positions.append(np.arange(start, start + len(data) + 1, dtype=np.int64))
            offset = start + len(data) + 1
        self.context = context
        self.stream = np.concatenate(parts) if parts else np.zeros(context + 1, np.uint8)
        self.positions = np.concatenate(positions) if positions else np.zeros(0, np.int64)
        self._windows = np.lib.stride_tricks.sliding_window_view(self.stream, context)

    def __len__(self) -> int:
        return len(self.positions)

    def take(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(contexts (n, context) as int64 indices, targets (n,))."""
        return self._windows[positions - self.context].astype(np.int64), self.stream[positions].astype(np.int64)

    def shard(self, rank: int, world_size: int) -> Examples:
        """Every ``world_size``-th example from ``rank``: one data-parallel rank's share."""
        other = object.__new__(Examples)
        other.context, other.stream, other._windows = self.context, self.stream, self._windows
        other.positions = self.positions[rank::world_size]
        return other

    def batch(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
        return self.take(self.positions[rng.integers(0, len(self.positions), size)])

    def chunks(self, size: int) -> list[tuple[np.ndarray, np.ndarray]]:
        return [self.take(self.positions[i:i + size]) for i in range(0, len(self.positions), size)]


class Corpus:
    """The job's texts split once: ``train`` and ``held_out`` (at most ``_EVAL_EXAMPLES`` of it is evaluated)."""

    def __init__(self, texts: list[str], context: int, seed: int) -> None:
        rng = np.random.default_rng([seed, 0x5EED])
        if len(texts) >= 2:
            order = rng.permutation(len(texts))
            n_held = max(1, round(len(texts) * 0.1))
            held = [texts[i] for i in sorted(order[:n_held])]
            train = [texts[i] for i in sorted(order[n_held:])]
        else:  # one long text: its last tenth is held out
            cut = int(len(texts[0]) * 0.9)
            train, held = [texts[0][:cut] or texts[0]], [texts[0][cut:] or texts[0]]
        self.train = Examples(train, context)
        self.held_out = Examples(held, context)
        if len(self.held_out) > _EVAL_EXAMPLES:
            keep = np.sort(rng.choice(len(self.held_out), _EVAL_EXAMPLES, replace=False))
            self.held_out.positions = self.held_out.positions[keep]
        self.train_texts = len(train)
        self.held_out_texts = len(held)

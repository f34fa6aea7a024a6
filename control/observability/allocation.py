"""Exact, deterministic splits of an integer amount by weight (largest remainder, Hamilton's method).

A GPU-hour-priced provider costs a fixed amount each hour it serves traffic; reports spread that amount
over the rows of the hour by token share. Splitting in integer units (nano-dollars, micro-GPU-hours)
with the largest-remainder method makes the parts sum to the whole exactly, whatever the weights, so a
report's rows always add up to its total. Ties in the remainder go to the smaller key, so the same
data always splits the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["Key", "split"]

Key = tuple[str, ...]


def split(amount: int, weights: Sequence[tuple[Key, int]]) -> dict[Key, int]:
    """Split ``amount`` (a non-negative integer) over ``weights`` (key, weight >= 0) in proportion.

    The parts are integers that sum to ``amount`` exactly. All-zero weights split evenly (the hour was
    served, even if no tokens were counted). Keys must be distinct; ties in the remainder go to the smaller key.
    """
    if not weights:
        return {}
    if all(w == 0 for _, w in weights):
        weights = [(k, 1) for k, _ in weights]
    total = sum(w for _, w in weights)
    parts: dict[Key, int] = {}
    remainders: list[tuple[int, Key]] = []
    for key, weight in weights:
        part, remainder = divmod(amount * weight, total)
        parts[key] = part
        remainders.append((remainder, key))
    left = amount - sum(parts.values())  # < len(weights): each floor lost less than one unit
    if left:
        remainders.sort(key=lambda rk: (-rk[0], rk[1]))
        for _, key in remainders[:left]:
            parts[key] += 1
    return parts

"""allocation.split: parts are whole units that sum to the amount exactly, deterministically."""

from __future__ import annotations

import random

import pytest

from control.observability.allocation import split


def test_proportional_with_the_odd_units_to_the_largest_remainders() -> None:
    assert split(10, [(("a",), 1), (("b",), 1), (("c",), 1)]) == {("a",): 4, ("b",): 3, ("c",): 3}
    assert split(100, [(("a",), 1), (("b",), 3)]) == {("a",): 25, ("b",): 75}
    assert split(7, [(("a",), 1), (("b",), 2)]) == {("a",): 2, ("b",): 5}  # 2.33 / 4.67: b's remainder is larger


def test_ties_go_to_the_smaller_key_whatever_the_input_order() -> None:
    weights = [(("y",), 1), (("x",), 1)]
    assert split(1, weights) == split(1, list(reversed(weights))) == {("x",): 1, ("y",): 0}


def test_zero_weights_split_evenly_and_nothing_splits_to_nothing() -> None:
    assert split(5, [(("a",), 0), (("b",), 0)]) == {("a",): 3, ("b",): 2}
    assert split(0, [(("a",), 3)]) == {("a",): 0}
    assert split(5, []) == {}


@pytest.mark.parametrize("seed", range(20))
def test_parts_always_sum_to_the_amount(seed: int) -> None:
    rng = random.Random(seed)
    amount = rng.randrange(10**12)
    weights = [((f"k{i}",), rng.choice([0, rng.randrange(10**9)])) for i in range(rng.randrange(1, 300))]
    parts = split(amount, weights)
    assert sum(parts.values()) == amount
    total = sum(w for _, w in weights)
    for key, weight in weights:  # each part is within one unit of its exact share
        exact = amount * weight / total if total else amount / len(weights)
        assert abs(parts[key] - exact) < 1

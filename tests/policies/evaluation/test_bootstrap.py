"""Bootstrap intervals: deterministic, of the right width (coverage), paired, and for corpus metrics."""

from __future__ import annotations

import math
import random
from statistics import NormalDist

import numpy as np
import pytest

from policies.evaluation import bootstrap
from policies.evaluation.bootstrap import corpus_ci, mean_ci, paired_diff_ci
from policies.evaluation.metrics import bleu, chrf


def test_mean_ci_is_deterministic_for_a_seed() -> None:
    values = list(np.random.default_rng(1).normal(3.0, 1.0, size=50))
    assert mean_ci(values) == mean_ci(values)
    assert mean_ci(values, seed=1) != mean_ci(values, seed=2)
    mean, low, high = mean_ci(values)
    assert mean == pytest.approx(float(np.mean(values)))
    assert low is not None and high is not None and low < mean < high


def test_mean_ci_covers_the_true_mean_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(7)
    trials, covered, widths = 300, 0, []
    for _ in range(trials):
        sample = rng.normal(10.0, 2.0, size=40)
        _, low, high = mean_ci(list(sample), resamples=1000)
        assert low is not None and high is not None
        covered += low <= 10.0 <= high
        widths.append(high - low)
    assert 0.89 <= covered / trials <= 0.99
    # and the width is the standard error's: 2 * 1.96 * 2 / sqrt(40) = 1.24
    assert float(np.mean(widths)) == pytest.approx(2 * 1.96 * 2.0 / math.sqrt(40), rel=0.1)


@pytest.mark.parametrize(("values", "expected"), [
    ([], (None, None, None)),
    ([None, float("nan")], (None, None, None)),
    ([4.0], (4.0, None, None)),
    ([4.0, None], (4.0, None, None)),
    ([2.0, 2.0, 2.0], (2.0, 2.0, 2.0)),
    ([1.0, math.inf], (math.inf, None, None)),
])
def test_mean_ci_edge_cases(values: list[float | None], expected: tuple[float | None, ...]) -> None:
    assert mean_ci(values) == expected


def test_mean_ci_ignores_missing_values() -> None:
    assert mean_ci([1.0, None, 3.0, float("nan"), 5.0]) == mean_ci([1.0, 3.0, 5.0])


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="confidence"):
        mean_ci([1.0, 2.0], confidence=95)
    with pytest.raises(ValueError, match="resamples"):
        mean_ci([1.0, 2.0], resamples=0)
    with pytest.raises(ValueError, match="align"):
        paired_diff_ci([1.0], [1.0, 2.0])


def test_large_samples_use_the_normal_interval_the_bootstrap_converges_to() -> None:
    rng = np.random.default_rng(3)
    values = list(rng.exponential(1.0, size=5000))  # skewed, like latencies
    mean, low, high = mean_ci(values)
    assert low is not None and high is not None
    half = NormalDist().inv_cdf(0.975) * float(np.std(values)) / math.sqrt(len(values))
    assert (low, high) == pytest.approx((mean - half, mean + half), abs=0.05 * 2 * half)
    big = list(rng.exponential(1.0, size=bootstrap.EXACT_MAX_N + 1))
    m, lo, hi = mean_ci(big)
    half = NormalDist().inv_cdf(0.975) * float(np.std(big)) / math.sqrt(len(big))
    assert (lo, hi) == pytest.approx((m - half, m + half))


def test_paired_difference_sees_what_two_separate_intervals_miss() -> None:
    rng = np.random.default_rng(5)
    difficulty = rng.uniform(0, 1, size=60)  # items vary a lot; the candidate is better by 0.05 on each
    base = list(difficulty)
    candidate = list(difficulty + 0.05 + rng.normal(0, 0.01, size=60))
    diff, low, high = paired_diff_ci(base, candidate)
    assert diff == pytest.approx(0.05, abs=0.01)
    assert low is not None and high is not None and 0 < low < 0.05 < high
    _, base_low, base_high = mean_ci(base)
    _, cand_low, _ = mean_ci(candidate)
    assert base_low is not None and base_high is not None and cand_low is not None
    assert cand_low < base_high  # the unpaired intervals overlap: they could not tell


def test_paired_difference_is_second_minus_first_and_drops_incomplete_pairs() -> None:
    assert paired_diff_ci([1.0, None, 3.0, 2.0], [2.0, 5.0, None, float("nan")]) == (1.0, None, None)
    diff, _, _ = paired_diff_ci([1.0, 2.0, 3.0], [0.0, 1.0, 2.5])
    assert diff == pytest.approx(-5 / 6)


def _corpus(n: int) -> tuple[list[str], list[str]]:
    rnd = random.Random(11)
    vocab = ["the", "a", "cat", "dog", "sat", "on", "mat", "ran", "fast", "slow", "red", "blue", "house", "tree"]
    refs = [" ".join(rnd.choices(vocab, k=12)) for _ in range(n)]
    hyps = [" ".join(w if rnd.random() < 0.7 else rnd.choice(vocab) for w in r.split()) for r in refs]
    return hyps, refs


def test_corpus_ci_by_statistics_equals_recomputing_the_metric() -> None:
    hyps, refs = _corpus(30)
    fast = corpus_ci(hyps, refs, bleu, resamples=60, seed=4)
    slow = corpus_ci(hyps, refs, lambda h, r: bleu(h, r).value, resamples=60, seed=4)
    assert fast == pytest.approx(slow)
    value, low, high = fast
    assert value == pytest.approx(bleu(hyps, refs).value)
    assert low is not None and high is not None and low < value < high  # type: ignore[operator]


def test_corpus_ci_accepts_a_metric_returning_a_result() -> None:
    hyps, refs = _corpus(20)
    assert corpus_ci(hyps, refs, chrf, resamples=40) == pytest.approx(corpus_ci(hyps, refs, chrf.__call__,
                                                                               resamples=40))


def test_corpus_ci_drops_incomplete_pairs() -> None:
    hyps, refs = _corpus(10)
    assert corpus_ci([*hyps, None, "x"], [*refs, "y", None], bleu, resamples=50) == \
        corpus_ci(hyps, refs, bleu, resamples=50)
    assert corpus_ci([None], ["y"], bleu) == (None, None, None)
    assert corpus_ci(["the cat"], ["the cat"], bleu)[1:] == (None, None)


def test_corpus_ci_caps_the_draws_for_large_corpora(monkeypatch: pytest.MonkeyPatch) -> None:
    hyps, refs = _corpus(40)
    calls: list[int] = []
    real = bleu.score_stats

    def counting(total: np.ndarray) -> float:
        calls.append(1)
        return real(total)

    monkeypatch.setattr(bleu, "score_stats", counting)
    monkeypatch.setattr(bootstrap, "CORPUS_MAX_DRAWS", 40 * 300)
    corpus_ci(hyps, refs, bleu, resamples=1000)
    assert len(calls) == 1 + 300  # the value, then 300 resamples instead of 1,000

"""Experiment statistics (policies/prompts/stats.py) on synthetic data with a known effect, with none,
and with too little; the false-positive rate of each test over 200 simulated null experiments."""

from __future__ import annotations

import json
import math
from typing import Any

import msgspec
import numpy as np
import pytest
from scipy import stats as scipy_stats

from policies.prompts.documents import ExperimentDoc
from policies.prompts.stats import Analysis, Comparison, VariantData, analyse, bootstrap_quantile, holm

Z95 = 1.6448536269514722  # the standard normal's 0.95 quantile


def make_doc(variants: int = 2, **fields: Any) -> ExperimentDoc:
    return msgspec.convert({"id": "exp", "route": "chat",
                            "variants": [{"name": n} for n in "abcdefgh"[:variants]], **fields}, ExperimentDoc)


def compared(analysis: Analysis, metric: str, variant: str = "b") -> Comparison:
    return next(c for c in analysis.comparisons if c.metric == metric and c.variant == variant)


def test_per_variant_metrics_from_plain_lists() -> None:
    data = VariantData.from_lists(requests=4, errors=1, fallbacks=3, latencies=[1.0, 2.0, 3.0], ttfts=[0.5],
                                  prompt_tokens=[10, 20, 30, 40], completion_tokens=12, costs=[0.01, 0.03],
                                  unpriced=2, scores=[1.0, 5.0], labels=[True, False, True])
    assert data.prompt_tokens == 100 and data.prompt_tokens_each.size == 4 and data.completion_tokens_each.size == 0
    s = analyse(make_doc(), {"a": data}).variants[0]
    assert (s.requests, s.fallbacks, s.errors, s.error_rate) == (4, 3, 1, 0.25)
    assert (s.latency_p50_s, s.latency_p95_s, s.ttft_p50_s) == (2.0, pytest.approx(2.9), 0.5)
    assert (s.prompt_tokens, s.completion_tokens) == (25.0, 3.0)
    assert (s.cost_per_request_usd, s.priced, s.unpriced) == (pytest.approx(0.02), 2, 2)
    assert (s.feedback_score, s.feedback_count, s.feedback_rate, s.feedback_labels) == (3.0, 2, 2 / 3, 3)


def synthetic(rng: np.random.Generator, n: int, *, error_rate: float = 0.1, score: float = 3.0,
              median_s: float = 1.0, positive: float = 0.4) -> VariantData:
    """Known truths: scores N(score, 1); latencies log-normal, median ``median_s``, sigma 0.5."""
    return VariantData(requests=n, errors=int(rng.binomial(n, error_rate)), latencies=rng.lognormal(
        math.log(median_s), 0.5, n), scores=rng.normal(score, 1.0, n), costs=rng.gamma(2.0, 0.001, n),
        labels_positive=int(rng.binomial(n, positive)), labels_total=n,
        prompt_tokens_each=rng.poisson(100, n).astype(float))


def test_a_known_effect_is_found_and_its_interval_covers_the_truth() -> None:
    rng = np.random.default_rng(1)
    a = synthetic(rng, 3000)
    b = synthetic(rng, 3000, error_rate=0.06, score=3.2, median_s=0.8, positive=0.5)
    result = analyse(make_doc(metric="feedback_score"), {"a": a, "b": b})
    truths = {"error_rate": -0.04, "feedback_score": 0.2, "latency_p50_s": -0.2, "feedback_rate": 0.1,
              "latency_p95_s": (0.8 - 1.0) * math.exp(0.5 * Z95)}
    for metric, truth in truths.items():
        c = compared(result, metric)
        assert c.ci_low is not None and c.ci_high is not None
        assert c.ci_low <= truth <= c.ci_high, (metric, c)
        assert c.significant and c.p_value is not None and c.p_value < 0.05, (metric, c)
    assert compared(result, "error_rate").test.startswith("two-proportion z-test")
    assert compared(result, "feedback_score").test == "Welch t-test"
    assert compared(result, "latency_p95_s").test.startswith("percentile bootstrap")
    assert compared(result, "feedback_score").rel_diff == pytest.approx(compared(result, "feedback_score").diff / 3,
                                                                        rel=0.02)
    assert result.winner_candidate == "b"
    # Control better on a lower-is-better metric, and significantly so: keep control.
    assert analyse(make_doc(metric="error_rate"), {"a": b, "b": a}).winner_candidate == "a"


def test_no_effect_intervals_cover_zero_and_no_winner() -> None:
    """Over 20 null experiments (7 tests each; at 5 % one false positive in a third of them is expected):
    the intervals cover 0 and no winner is named, but for the odd 5 %."""
    covered, winners, tested = 0, 0, 0
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        result = analyse(make_doc(metric="latency_p50_s"), {"a": synthetic(rng, 1000), "b": synthetic(rng, 1000)},
                         seed=seed)
        winners += result.winner_candidate is not None
        for c in result.comparisons:
            if c.p_value is not None:
                assert c.ci_low is not None and c.ci_high is not None
                tested += 1
                covered += c.ci_low <= 0 <= c.ci_high
    assert tested == 140 and covered >= 0.9 * tested and winners <= 2, (covered, winners)


def null_pair(kind: str, rng: np.random.Generator, n: int = 200) -> tuple[VariantData, VariantData]:
    def one() -> VariantData:
        if kind == "proportion":
            return VariantData(requests=n, errors=int(rng.binomial(n, 0.1)))
        if kind == "welch":  # skewed, with unequal sizes: what Welch is for
            return VariantData(requests=n, costs=rng.exponential(0.002, int(rng.integers(n // 2, 2 * n))))
        return VariantData(requests=n, latencies=rng.lognormal(0.0, 0.6, n))
    return one(), one()


@pytest.mark.parametrize(("kind", "metrics"), [("proportion", ["error_rate"]), ("welch", ["cost_per_request_usd"]),
                                               ("bootstrap", ["latency_p50_s", "latency_p95_s"])])
def test_false_positive_rate_at_alpha_005_over_200_null_experiments(kind: str, metrics: list[str]) -> None:
    rng = np.random.default_rng(11)
    hits = {m: 0 for m in metrics}
    for seed in range(200):
        a, b = null_pair(kind, rng)
        result = analyse(make_doc(), {"a": a, "b": b}, seed=seed)
        for m in metrics:
            assert compared(result, m).p_value is not None
            hits[m] += compared(result, m).significant
    rates = {m: h / 200 for m, h in hits.items()}
    print(f"false-positive rate ({kind}): {rates}")
    # <= 0.08 as the issue demands; >= 0.01, else a test that never rejects would pass too.
    assert all(0.01 <= r <= 0.08 for r in rates.values()), rates


def test_too_little_data_is_null_with_a_reason_and_valid_json() -> None:
    tiny = VariantData.from_lists(requests=3, errors=1, latencies=[0.2, 0.3], scores=[4.0], labels=[True],
                                  costs=[0.0, 0.0])
    doc = make_doc(3, guardrails=[{"metric": "error_rate", "max": 0.1, "min_requests": 1}])
    for data in ({}, {"a": tiny, "b": tiny}, {"a": VariantData(), "b": tiny, "c": VariantData(requests=1)}):
        result = analyse(doc, data)
        assert result.winner_candidate is None and result.sample_size.requests_needed is None
        assert result.sample_size.reason
        for c in result.comparisons:
            assert not c.significant and c.p_value is None and c.reason, c
        text = msgspec.json.encode(result)
        json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in the output"))
    assert "needs 20 observations in each arm, has 2" in (compared(analyse(doc, {"a": tiny, "b": tiny}),
                                                                   "latency_p50_s").reason or "")


def test_degenerate_samples_do_not_produce_nan() -> None:
    same = VariantData(requests=50, scores=np.full(50, 4.0), costs=np.full(50, 0.01))
    result = analyse(make_doc(), {"a": same, "b": same})
    score = compared(result, "feedback_score")
    assert (score.diff, score.p_value, score.significant) == (0.0, None, False) and "no variance" in (score.reason
                                                                                                   or "")
    errors = compared(result, "error_rate")  # 0 of 50 in both arms
    assert (errors.p_value, errors.significant, errors.ci_low is not None) == (1.0, False, True)
    assert result.sample_size.reason  # no variance to size a test from
    assert b"NaN" not in msgspec.json.encode(result)


def test_sample_size_matches_the_normal_approximation_formula() -> None:
    # Proportions, 10 % -> 5 %: (1.95996 + 0.84162)^2 (0.1 * 0.9 + 0.05 * 0.95) / 0.05^2 = 431.7 -> 432.
    control = VariantData(requests=1000, errors=100)
    size = analyse(make_doc(metric="error_rate", min_effect=0.05),
                   {"a": control, "b": VariantData(requests=300, errors=30)}).sample_size
    assert (size.observations_needed, size.requests_needed, size.min_effect_source) == (432, 432, "configured")
    assert size.additional_requests == {"a": 0, "b": 132}
    # Means, sd 1, effect 0.5: 2 (1.95996 + 0.84162)^2 / 0.25 = 62.8 -> 63 scores per arm (the textbook 63);
    # feedback arrives on 1 request in 10, so 630 requests.
    z = np.random.default_rng(3).normal(size=100)
    scores = (z - z.mean()) / z.std(ddof=1) + 3.0
    size = analyse(make_doc(metric="feedback_score", min_effect=0.5),
                   {"a": VariantData(requests=1000, scores=scores)}).sample_size
    assert (size.observations_needed, size.requests_needed, size.additional_requests) == (63, 630, {"a": 0, "b": 630})
    # No min_effect: 5 % of control's value, here 0.005 of an error rate of 0.1.
    default = analyse(make_doc(metric="error_rate"), {"a": control}).sample_size
    assert default.min_effect_source == "default" and default.min_effect == pytest.approx(0.005)
    assert default.observations_needed == math.ceil(7.848879734349086 * (0.09 + 0.095 * 0.905) / 0.005**2)
    # A quantile: sized from control's bootstrap variance; more needed for a smaller effect.
    lat = VariantData(requests=500, latencies=np.random.default_rng(4).lognormal(0, 0.5, 500))
    small, large = (analyse(make_doc(metric="latency_p50_s", min_effect=e), {"a": lat}).sample_size
                    for e in (0.05, 0.1))
    assert small.observations_needed and large.observations_needed
    assert 3.5 < small.observations_needed / large.observations_needed < 4.5


def test_guardrails_absolute_and_ratio_after_min_requests() -> None:
    doc = make_doc(3, guardrails=[
        {"metric": "error_rate", "max": 0.05, "min_requests": 100},
        {"metric": "latency_p95_s", "max_ratio_to_control": 1.5, "min_requests": 100},
        {"metric": "cost_per_request_usd", "max": 0.02, "min_requests": 10}])
    control = VariantData(requests=100, errors=20, latencies=np.ones(80), costs=np.full(100, 0.05))
    data = {"a": control,  # control breaches everything, and is never stopped
            "b": VariantData(requests=100, errors=10, latencies=np.full(90, 2.0), costs=np.full(100, 0.01)),
            "c": VariantData(requests=99, errors=50, latencies=np.full(99, 1.4), costs=np.full(10, 0.03))}
    got = {(b.variant, b.metric, b.kind, round(b.value, 9), b.threshold) for b in analyse(doc, data).breaches}
    assert got == {("b", "error_rate", "max", 0.1, 0.05), ("b", "latency_p95_s", "ratio_to_control", 2.0, 1.5),
                   ("c", "cost_per_request_usd", "max", 0.03, 0.02)}
    # A ratio to a control below min_requests is noise: not judged.
    data["a"] = VariantData(requests=99, latencies=np.ones(99))
    assert not any(b.kind == "ratio_to_control" for b in analyse(doc, data).breaches)


def test_holm_adjustment_and_its_use_with_three_variants() -> None:
    assert holm([0.01, 0.04, None, 0.03]) == pytest.approx([0.03, 0.06, None, 0.06])  # type: ignore[arg-type]
    rng = np.random.default_rng(5)
    data = {"a": synthetic(rng, 400), "b": synthetic(rng, 400, score=3.25), "c": synthetic(rng, 400)}
    result = analyse(make_doc(3), data)
    assert result.correction == "holm"
    row = [compared(result, "feedback_score", v) for v in "bc"]
    assert [c.p_value_adjusted for c in row] == pytest.approx(holm([c.p_value for c in row]))  # type: ignore[arg-type]
    assert all((c.p_value_adjusted or 0) >= (c.p_value or 0) for c in row)
    assert analyse(make_doc(), {"a": data["a"], "b": data["b"]}).correction == "none"


def test_the_bootstrap_draws_match_brute_force_resampling() -> None:
    rng = np.random.default_rng(6)
    x = np.sort(rng.lognormal(0, 1, 37))
    for q in (0.5, 0.95, 0.3):
        fast = np.sort(bootstrap_quantile(x, q, rng, 20_000))
        slow = np.sort(np.quantile(x[rng.integers(0, x.size, (20_000, x.size))], q, axis=1))
        # The same distribution: the two empirical CDFs agree everywhere within sampling noise (KS).
        grid = np.union1d(fast, slow)
        gap = np.abs(np.searchsorted(fast, grid, "right") - np.searchsorted(slow, grid, "right")).max() / 20_000
        assert gap < 0.02, (q, gap)


def test_welch_is_scipys() -> None:
    rng = np.random.default_rng(8)
    a = VariantData(requests=40, scores=rng.normal(3, 1, 40))
    b = VariantData(requests=90, scores=rng.normal(3.4, 2, 90))
    c = compared(analyse(make_doc(), {"a": a, "b": b}), "feedback_score")
    reference = scipy_stats.ttest_ind(b.scores, a.scores, equal_var=False)
    low, high = reference.confidence_interval(0.95)
    assert (c.p_value, c.ci_low, c.ci_high) == pytest.approx((reference.pvalue, low, high))


def test_same_seed_same_answer() -> None:
    rng = np.random.default_rng(7)
    data = {"a": synthetic(rng, 300), "b": synthetic(rng, 300)}
    assert analyse(make_doc(), data, seed=3) == analyse(make_doc(), data, seed=3)

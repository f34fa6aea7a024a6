"""policies/serving/canary.py: every branch of the canary verdict, its edge cases, and monotonicity."""

from __future__ import annotations

import json
import random

import pytest

from policies.serving import CanaryBounds, SlotStats, judge, p95

BOUNDS = CanaryBounds(window_s=300, min_requests=20, max_error_rate_delta=0.05, max_p95_ratio=1.5)


def slot(requests: int, errors: int = 0, latency_s: float = 0.2, *, client_errors: int = 0,
         latencies: list[float] | None = None) -> SlotStats:
    """``requests`` judged, ``errors`` of them failed; the others timed at ``latency_s`` unless given."""
    timed = latencies if latencies is not None else [latency_s] * (requests - errors)
    return SlotStats(requests=requests, errors=errors, client_errors=client_errors, latencies_s=timed)


def test_p95_is_the_nearest_rank() -> None:
    assert p95([]) is None
    assert p95([0.3]) == 0.3
    values = [float(i) for i in range(1, 101)]  # 1..100
    random.Random(1).shuffle(values)
    assert p95(values) == 95.0
    assert p95([float(i) for i in range(1, 21)]) == 19.0  # ceil(0.95 * 20) = 19th
    assert p95([1.0, 2.0]) == 2.0


def test_too_few_canary_requests_waits_even_when_all_failed() -> None:
    verdict = judge(slot(100), slot(19, errors=19), BOUNDS)
    assert verdict.action == "wait"
    assert "19 of the 20" in verdict.reason
    assert judge(slot(100), slot(20, errors=19), BOUNDS).action == "rollback"


def test_a_canary_like_the_stable_is_ok() -> None:
    verdict = judge(slot(200, errors=4, latency_s=0.30), slot(40, errors=1, latency_s=0.33), BOUNDS)
    assert verdict.action == "ok"
    assert "canary 2.50% (1 of 40) vs stable 2.00% (4 of 200)" in verdict.reason
    assert "p95 latency: canary 0.330 s vs stable 0.300 s" in verdict.reason


def test_error_rate_breach_names_the_bound_and_both_values() -> None:
    verdict = judge(slot(100, errors=2), slot(40, errors=4), BOUNDS)  # 10% vs 2%: 8 points > 5
    assert verdict.action == "rollback"
    assert verdict.reason == ("error rate: canary 10.00% (4 of 40) vs stable 2.00% (2 of 100): 8.00 points higher, "
                              "over the bound max_error_rate_delta 0.05")


def test_error_rate_exactly_at_the_bound_is_within_it() -> None:
    # 17% - 12% is 0.05000000000000002 in floats: five points exactly, within the bound all the same
    assert judge(slot(100, errors=12), slot(100, errors=17), BOUNDS).action == "ok"
    assert judge(slot(100, errors=12), slot(100, errors=18), BOUNDS).action == "rollback"
    zero = CanaryBounds(window_s=60, min_requests=5, max_error_rate_delta=0.0, max_p95_ratio=2)
    assert judge(slot(50, errors=5), slot(50, errors=5), zero).action == "ok"  # equal rates pass a zero delta
    assert judge(slot(50, errors=5), slot(50, errors=6), zero).action == "rollback"


def test_latency_breach_names_the_ratio_and_the_bound() -> None:
    verdict = judge(slot(100, latency_s=0.2), slot(40, latency_s=0.5), BOUNDS)
    assert verdict.action == "rollback"
    assert verdict.reason == ("p95 latency: canary 0.500 s vs stable 0.200 s: 2.50x, over the bound "
                              "max_p95_ratio 1.5")
    assert judge(slot(100, latency_s=0.2), slot(40, latency_s=0.3), BOUNDS).action == "ok"  # exactly 1.5x
    assert judge(slot(100, latency_s=0.036), slot(40, latency_s=0.054), BOUNDS).action == "ok"  # 1.5x, float noise
    assert judge(slot(100, latency_s=0.036), slot(40, latency_s=0.0541), BOUNDS).action == "rollback"


def test_p95_not_the_mean_decides() -> None:
    # the canary's median equals the stable's, but its slowest 10% are 4x slower
    stable = slot(100, latencies=[0.2] * 100)
    canary = slot(100, latencies=[0.2] * 90 + [0.8] * 10)
    assert judge(stable, canary, BOUNDS).action == "rollback"
    canary_tail_under_5pct = slot(100, latencies=[0.2] * 96 + [5.0] * 4)
    assert judge(stable, canary_tail_under_5pct, BOUNDS).action == "ok"


def test_both_bounds_breached_are_both_named() -> None:
    verdict = judge(slot(100, latency_s=0.2), slot(40, errors=20, latency_s=1.0), BOUNDS)
    assert verdict.action == "rollback"
    assert "max_error_rate_delta" in verdict.reason and "max_p95_ratio" in verdict.reason


def test_no_stable_traffic_judges_the_canary_errors_alone() -> None:
    none = SlotStats()
    # latency is not compared: any latency is fine
    verdict = judge(none, slot(40, errors=2, latency_s=30.0), BOUNDS)  # 5%: at the bound against a baseline of 0
    assert verdict.action == "ok"
    assert "p95 latency not compared: stable has 0 of the 20 requests needed" in verdict.reason
    assert "baseline of 0 (stable has 0 of the 20 requests needed)" in verdict.reason
    assert judge(none, slot(40, errors=3), BOUNDS).action == "rollback"  # 7.5%


def test_little_stable_traffic_is_not_a_baseline() -> None:
    # 19 stable requests, all failed: below min_requests, so its 100% error rate excuses nothing
    verdict = judge(slot(19, errors=19), slot(40, errors=10), BOUNDS)
    assert verdict.action == "rollback"
    assert "a baseline of 0 (stable has 19 of the 20 requests needed)" in verdict.reason
    # with 20 it is trusted: both fail as often, the canary is no worse
    assert judge(slot(20, errors=5), slot(40, errors=10), BOUNDS).action == "ok"


def test_all_errors() -> None:
    all_failed = slot(40, errors=40)
    verdict = judge(slot(100), all_failed, BOUNDS)
    assert verdict.action == "rollback"
    assert "100.00% (40 of 40)" in verdict.reason
    assert verdict.stats["canary"]["p95_latency_s"] is None
    # both slots fail everything (a shared outage): the canary is no worse, and nothing has a latency
    both = judge(slot(100, errors=100), all_failed, BOUNDS)
    assert both.action == "ok"
    assert "p95 latency not compared: stable has no successful request to time" in both.reason


def test_zero_latency_is_compared_above_the_floor() -> None:
    instant = slot(100, latency_s=0.0)
    assert judge(instant, slot(40, latency_s=0.0), BOUNDS).action == "ok"  # no 0/0
    assert judge(instant, slot(40, latency_s=0.012), BOUNDS).action == "ok"  # 1.2x the 10 ms floor
    verdict = judge(instant, slot(40, latency_s=0.02), BOUNDS)
    assert verdict.action == "rollback"
    assert "(each raised to the floor 0.01 s): 2.00x" in verdict.reason
    no_floor = CanaryBounds(window_s=60, min_requests=20, max_error_rate_delta=0.05, max_p95_ratio=1.5,
                            latency_floor_s=0.0)
    assert "infx" in judge(instant, slot(40, latency_s=0.001), no_floor).reason
    assert judge(instant, slot(40, latency_s=0.0), no_floor).action == "ok"


def test_client_errors_are_reported_not_judged() -> None:
    verdict = judge(slot(100), slot(20, client_errors=500), BOUNDS)
    assert verdict.action == "ok"
    assert verdict.stats["canary"]["client_errors"] == 500
    assert judge(slot(100), slot(0, client_errors=500), BOUNDS).action == "wait"


def test_stats_are_the_audit_entry() -> None:
    verdict = judge(slot(200, errors=4, latency_s=0.3), slot(40, errors=1, latency_s=0.33), BOUNDS)
    stats = json.loads(json.dumps(verdict.stats))  # JSON-ready as it is
    assert stats["stable"] == {"requests": 200, "errors": 4, "client_errors": 0, "error_rate": 0.02,
                               "latency_samples": 196, "p95_latency_s": 0.3}
    assert stats["canary"]["error_rate"] == 0.025 and stats["canary"]["p95_latency_s"] == 0.33
    assert stats["bounds"] == {"window_s": 300, "min_requests": 20, "max_error_rate_delta": 0.05,
                               "max_p95_ratio": 1.5, "latency_floor_s": 0.01}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"window_s": 0}, "window_s"), ({"window_s": float("nan")}, "window_s"), ({"min_requests": 0}, "min_requests"),
    ({"max_error_rate_delta": 1.5}, "max_error_rate_delta"), ({"max_error_rate_delta": -0.1}, "max_error_rate_delta"),
    ({"max_p95_ratio": 0.9}, "max_p95_ratio"), ({"max_p95_ratio": float("inf")}, "max_p95_ratio"),
    ({"latency_floor_s": -1}, "latency_floor_s"),
])
def test_bounds_refuse_nonsense(kwargs: dict[str, float], message: str) -> None:
    values = {"window_s": 300.0, "min_requests": 20, "max_error_rate_delta": 0.05, "max_p95_ratio": 1.5, **kwargs}
    with pytest.raises(ValueError, match=message):
        CanaryBounds(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(("requests", "errors", "client_errors"), [(-1, 0, 0), (5, 6, 0), (5, -1, 0), (5, 0, -2)])
def test_slot_stats_refuse_inconsistent_counts(requests: int, errors: int, client_errors: int) -> None:
    with pytest.raises(ValueError, match="inconsistent counts"):
        SlotStats(requests=requests, errors=errors, client_errors=client_errors)


# -- monotonicity: a worse canary, a better stable or looser bounds never flip the verdict the wrong way ----------

_RANK = {"ok": 0, "rollback": 1}


def _random_case(rng: random.Random) -> tuple[SlotStats, SlotStats, CanaryBounds]:
    bounds = CanaryBounds(window_s=300, min_requests=rng.randint(1, 30), max_error_rate_delta=rng.uniform(0, 0.3),
                          max_p95_ratio=rng.uniform(1, 3), latency_floor_s=rng.choice([0.0, 0.01]))
    def one(max_requests: int) -> SlotStats:
        n = rng.randint(0, max_requests)
        e = rng.randint(0, n)
        return SlotStats(requests=n, errors=e, latencies_s=[rng.expovariate(5) for _ in range(n - e)])
    return one(80), one(80), bounds


def test_more_canary_errors_never_turn_a_rollback_into_ok() -> None:
    rng = random.Random(12)
    seen = set()
    for _ in range(3000):
        stable, canary, bounds = _random_case(rng)
        if canary.requests - canary.errors < 2:
            continue  # the last timed request failing leaves no latency to compare (test_all_errors)
        before = judge(stable, canary, bounds).action
        # one more of the same requests failed, the fastest: it leaves the latency sample, whose p95 cannot fall
        worse = SlotStats(requests=canary.requests, errors=canary.errors + 1,
                          latencies_s=sorted(canary.latencies_s)[1:])
        after = judge(stable, worse, bounds).action
        seen.add((before, after))
        if before != "wait":
            assert _RANK[after] >= _RANK[before], (stable, canary, bounds)
    assert ("ok", "rollback") in seen  # the property was exercised across the boundary


def test_a_slower_canary_never_turns_a_rollback_into_ok() -> None:
    rng = random.Random(13)
    seen = set()
    for _ in range(3000):
        stable, canary, bounds = _random_case(rng)
        before = judge(stable, canary, bounds).action
        slower = SlotStats(requests=canary.requests, errors=canary.errors,
                           latencies_s=[x * rng.uniform(1, 4) for x in canary.latencies_s])
        after = judge(stable, slower, bounds).action
        seen.add((before, after))
        assert before == "wait" or _RANK[after] >= _RANK[before]
    assert ("ok", "rollback") in seen


def test_a_worse_stable_never_turns_ok_into_a_rollback() -> None:
    rng = random.Random(14)
    seen = set()
    for _ in range(3000):
        stable, canary, bounds = _random_case(rng)
        if stable.requests < bounds.min_requests:
            continue  # below min_requests the stable's numbers are not used at all
        before = judge(stable, canary, bounds).action
        worse = SlotStats(requests=stable.requests, errors=min(stable.requests, stable.errors + rng.randint(1, 5)),
                          latencies_s=[x * rng.uniform(1, 4) for x in stable.latencies_s])
        if not worse.latencies_s:
            continue  # no latency left to compare: a different question (test_all_errors)
        after = judge(worse, canary, bounds).action
        seen.add((before, after))
        assert before == "wait" or _RANK[after] <= _RANK[before]
    assert ("rollback", "ok") in seen


def test_looser_bounds_never_turn_ok_into_a_rollback() -> None:
    rng = random.Random(15)
    seen = set()
    for _ in range(3000):
        stable, canary, bounds = _random_case(rng)
        before = judge(stable, canary, bounds).action
        looser = CanaryBounds(window_s=bounds.window_s, min_requests=bounds.min_requests,
                              max_error_rate_delta=min(1.0, bounds.max_error_rate_delta + rng.uniform(0, 0.2)),
                              max_p95_ratio=bounds.max_p95_ratio * rng.uniform(1, 2),
                              latency_floor_s=bounds.latency_floor_s)
        after = judge(stable, canary, looser).action
        seen.add((before, after))
        assert before == "wait" or _RANK[after] <= _RANK[before]
    assert ("rollback", "ok") in seen

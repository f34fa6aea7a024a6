import random

from adapters.upstream import Backend, CircuitBreaker, pick_backend
from adapters.upstream.balancer import RandomBalancer


def _b(url: str, inflight: int = 0, waiting: float = 0) -> Backend:
    return Backend(url=url, breaker=CircuitBreaker(1, 60), inflight=inflight, waiting=waiting)


def test_picks_fewest_inflight_plus_waiting() -> None:
    a, b, c = _b("a", 3), _b("b", 1), _b("c", 0, waiting=5)
    assert pick_backend([a, b, c]) is b


def test_skips_open_circuits_and_returns_none_when_all_open() -> None:
    a, b = _b("a", 0), _b("b", 9)
    a.breaker.record_failure()
    assert pick_backend([a, b]) is b
    b.breaker.record_failure()
    assert pick_backend([a, b]) is None
    assert pick_backend([a]) is None


def test_ties_rotate() -> None:
    bs = [_b("a"), _b("b"), _b("c")]
    assert {pick_backend(bs).url for _ in range(9)} == {"a", "b", "c"}  # type: ignore[union-attr]


def test_a_retry_avoids_the_replica_it_failed_on_unless_it_is_the_only_one() -> None:
    a, b = _b("a", 0), _b("b", 5)
    assert pick_backend([a, b], avoid=a) is b  # busier, but not the one that just failed
    b.breaker.record_failure()
    assert pick_backend([a, b], avoid=a) is a  # nothing else is open: the failed one gets the retry
    assert pick_backend([a], avoid=a) is a


def test_random_balancer_avoids_the_failed_replica() -> None:
    bs = [_b("a"), _b("b"), _b("c")]
    picker = RandomBalancer(random.Random(3))
    assert all(picker.pick(bs, {}, None, bs[1]) is not bs[1] for _ in range(30))
    bs[0].breaker.record_failure()
    bs[2].breaker.record_failure()
    assert picker.pick(bs, {}, None, bs[1]) is bs[1]

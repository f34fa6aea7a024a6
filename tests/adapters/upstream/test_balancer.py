from adapters.upstream import Backend, CircuitBreaker, pick_backend


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

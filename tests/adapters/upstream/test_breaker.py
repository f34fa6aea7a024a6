from adapters.upstream.breaker import BreakerState, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_threshold_and_probes_once_after_cooldown() -> None:
    clock, changes = Clock(), []
    b = CircuitBreaker(3, 10, clock=clock, on_change=changes.append)
    for _ in range(2):
        assert b.acquire()
        b.record_failure()
    assert b.state is BreakerState.CLOSED
    b.record_success()  # success resets the consecutive count
    for _ in range(3):
        b.record_failure()
    assert b.state is BreakerState.OPEN and not b.available() and not b.acquire()
    clock.now = 10
    assert b.available() and b.acquire()
    assert b.state is BreakerState.HALF_OPEN
    assert not b.acquire(), "only one probe while half-open"
    b.record_failure()
    assert b.state is BreakerState.OPEN and not b.acquire()
    clock.now = 20
    assert b.acquire()
    b.record_success()
    assert b.state is BreakerState.CLOSED
    assert changes == [BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.OPEN, BreakerState.HALF_OPEN,
                       BreakerState.CLOSED]


def test_release_frees_the_probe_without_a_verdict() -> None:
    clock = Clock()
    b = CircuitBreaker(1, 5, clock=clock)
    b.record_failure()
    clock.now = 5
    assert b.acquire()
    b.release()
    assert b.state is BreakerState.HALF_OPEN and b.acquire()

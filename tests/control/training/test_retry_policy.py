"""The retry policy (``retry.decide``): pure, so every branch is checked here without a database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from control.training.protocol import RetryPolicy
from control.training.retry import backoff_s, decide

NOW = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = RetryPolicy(max_retries=3, backoff_s=30, backoff_max_s=100, non_retryable_exit_codes=[2])


def test_backoff_doubles_up_to_its_cap() -> None:
    assert [backoff_s(POLICY, n) for n in (1, 2, 3, 4, 80)] == [30, 60, 100, 100, 100]


def test_a_failed_attempt_is_retried_after_its_backoff() -> None:
    decision = decide(POLICY, 2, 1, "ProcessExited", now=NOW, deadline_at=None)
    assert decision.retry and decision.at == NOW + timedelta(seconds=60) and decision.delay_s == 60
    assert decision.message == "attempt 3 in 60 s"


def test_unknown_exit_codes_are_retried() -> None:
    assert decide(POLICY, 1, None, "Lost", now=NOW, deadline_at=None).retry


def test_a_non_retryable_exit_code_ends_the_job() -> None:
    decision = decide(POLICY, 1, 2, "ProcessExited", now=NOW, deadline_at=None)
    assert not decision.retry and decision.reason == "ProcessExited"
    assert decision.message == "exit code 2 is not retried"


def test_the_last_retry_is_the_last() -> None:
    assert decide(POLICY, 3, 1, "OOMKilled", now=NOW, deadline_at=None).retry  # 3rd attempt: 2 retries used
    last = decide(POLICY, 4, 1, "OOMKilled", now=NOW, deadline_at=None)
    assert not last.retry and last.message == "no retries left (3 retries allowed)"
    none = RetryPolicy(max_retries=0, backoff_s=0, backoff_max_s=0, non_retryable_exit_codes=[])
    assert decide(none, 1, 1, "x", now=NOW, deadline_at=None).message == "no retries left (0 retries allowed)"


def test_the_deadline_ends_retries() -> None:
    soon = NOW + timedelta(seconds=10)
    late = decide(POLICY, 1, 1, "ProcessExited", now=NOW, deadline_at=soon)  # 30 s backoff would pass it
    assert not late.retry and late.reason == "DeadlineExceeded"
    assert not decide(POLICY, 1, 1, "ProcessExited", now=soon, deadline_at=soon).retry
    hit = decide(POLICY, 1, None, "DeadlineExceeded", now=NOW, deadline_at=None)  # the runtime enforced it
    assert not hit.retry and hit.reason == "DeadlineExceeded"
    assert decide(POLICY, 1, 1, "ProcessExited", now=NOW, deadline_at=NOW + timedelta(seconds=31)).retry

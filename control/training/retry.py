"""What follows a failed attempt: another one after a backoff, or the end of the job (pure, no I/O).

The n-th attempt failed. The job fails at once when the exit code is one the policy does not retry, when
``maxRetries`` are used up (``n - 1`` retries so far), when the attempt ran into the deadline, or when the
next attempt could not start before the deadline; otherwise the next one starts after
``min(backoffS * 2**(n-1), backoffMaxS)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from control.training.protocol import RetryPolicy

__all__ = ["DEADLINE", "Decision", "backoff_s", "decide"]

DEADLINE = "DeadlineExceeded"


@dataclass(frozen=True)
class Decision:
    retry: bool
    reason: str  # the job's reason when it fails (the attempt's own otherwise)
    message: str
    at: datetime | None = None  # when the next attempt may start
    delay_s: float = 0.0


def backoff_s(policy: RetryPolicy, attempt: int) -> float:
    """The delay before the attempt after ``attempt`` (1-based): doubling from ``backoffS``, capped."""
    return float(min(policy.backoff_s * 2 ** min(attempt - 1, 60), policy.backoff_max_s))


def decide(policy: RetryPolicy, attempt: int, exit_code: int | None, reason: str, *, now: datetime,
           deadline_at: datetime | None) -> Decision:
    """After attempt ``attempt`` failed with ``exit_code`` (None: unknown, e.g. lost) for ``reason``."""
    if exit_code is not None and exit_code in policy.non_retryable_exit_codes:
        return Decision(False, reason, f"exit code {exit_code} is not retried")
    if reason == DEADLINE or (deadline_at is not None and now >= deadline_at):
        return Decision(False, DEADLINE, "the job's deadline passed")
    if attempt > policy.max_retries:
        retries = policy.max_retries
        return Decision(False, reason, f"no retries left ({retries} retr{'y' if retries == 1 else 'ies'} allowed)")
    delay = backoff_s(policy, attempt)
    at = now + timedelta(seconds=delay)
    if deadline_at is not None and at >= deadline_at:
        return Decision(False, DEADLINE, f"the next attempt would start after the job's deadline (in {delay:g} s)")
    return Decision(True, reason, f"attempt {attempt + 1} in {delay:g} s", at=at, delay_s=delay)

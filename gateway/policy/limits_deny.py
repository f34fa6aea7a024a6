"""What a refused request is told, and the ``x-ratelimit-*`` headers of every answer.

Headers follow OpenAI's: ``x-ratelimit-limit-requests``, ``-remaining-requests`` and
``-reset-requests`` (time until the bucket is full again, e.g. ``6m0s``) from the tightest
requests-per-minute bucket that applies, and the same ``-tokens`` trio from the tightest
tokens-per-minute bucket. A 429 carries them too, with ``Retry-After`` (whole seconds).

Errors, in OpenAI's body: a rate or concurrency limit is 429 ``rate_limit_error``
(``rate_limit_exceeded`` / ``concurrency_limit_exceeded``); a budget 429 or 402 (``budget_status``)
``insufficient_quota`` / ``budget_exceeded``, naming what is spent and when the period resets; a
fail-closed backend outage 503 ``rate_limiter_unavailable``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from adapters.errors import GatewayError, RateLimited
from policies.limits import Demand, Plan, Rules, Verdict, format_reset

__all__ = ["BudgetExceeded", "LimitExceeded", "LimiterUnavailable", "denial", "rate_headers"]

_PER = {"rpm": "minute", "tpm": "minute", "tpd": "day"}


class LimitExceeded(RateLimited):
    """429 with ``Retry-After`` and the ``x-ratelimit-*`` headers."""

    def __init__(self, message: str, *, retry_after_s: float, code: str, headers: dict[str, str]) -> None:
        super().__init__(message, retry_after_s=retry_after_s, code=code)
        self.extra_headers = headers

    def headers(self) -> dict[str, str]:
        return {**super().headers(), **self.extra_headers}


class BudgetExceeded(LimitExceeded):
    kind = "insufficient_quota"

    def __init__(self, message: str, *, retry_after_s: float, status: int, headers: dict[str, str]) -> None:
        super().__init__(message, retry_after_s=retry_after_s, code="budget_exceeded", headers=headers)
        self._status = status

    @property
    def http_status(self) -> int:
        return self._status


class LimiterUnavailable(GatewayError):
    """The shared rate-limit backend is down and the plug-in fails closed."""

    status = 503
    kind = "server_error"

    def __init__(self, why: str, *, retry_after_s: float) -> None:
        super().__init__(f"Requests are refused while limits and budgets cannot be checked: {why}. "
                         "Retry shortly.", code="rate_limiter_unavailable")
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"retry-after": str(max(1, round(self.retry_after_s)))}




_RESETS: dict[int, bytes] = {}  # milliseconds -> formatted (bounded): formatting costs more than the rest


def _reset(seconds: float) -> bytes:
    ms = int(seconds * 1000 + 0.5)
    text = _RESETS.get(ms)
    if text is None:
        if len(_RESETS) >= 10_000:
            _RESETS.clear()
        text = _RESETS[ms] = format_reset(ms / 1000).encode()
    return text


def rate_headers(plan: Plan, verdict: Verdict) -> list[tuple[bytes, bytes]]:
    """OpenAI's six headers (those whose limits apply), ready for the answer: the tightest bucket of each kind."""
    out: list[tuple[bytes, bytes]] = []
    levels = verdict.levels
    for j, limit_header, names, others in plan.headers:
        for other, other_header in others:  # more than one bucket of the kind: the one with the least left
            if levels[other][0] < levels[j][0]:
                j, limit_header = other, other_header
        remaining, reset_s = levels[j]
        out += (limit_header, (names[0], b"%d" % remaining if remaining > 0 else b"0"), (names[1], _reset(reset_s)))
    return out


def _usd(nano: int) -> str:
    return f"{nano / 1e9:,.2f}" if nano >= 10**7 or nano == 0 else f"{nano / 1e9:.6f}"


def denial(rules: Rules, plan: Plan, demand: Demand, verdict: Verdict, budget_status: int) -> GatewayError:
    """The error for a refused ``demand``, from the check that refused it."""
    headers = {name.decode(): value.decode() for name, value in rate_headers(plan, verdict)}
    retry = verdict.retry_after_s
    i = verdict.index
    if verdict.kind == "bucket":
        rule = rules.rates[i]
        cost = demand.cost_of(demand.buckets[i])
        per = _PER[rule.kind]
        if rule.kind == "rpm":
            message = (f"Rate limit reached: {rule.limit} requests per minute ({rule.source}). "
                       f"Please try again in {format_reset(retry)}.")
        elif cost > rule.limit:
            message = (f"This request needs about {cost} tokens (prompt estimate plus max_tokens), more than "
                       f"the {rule.limit} tokens per {per} allowed ({rule.source}); lower max_tokens.")
        else:
            left = max(0, verdict.levels[i][0])
            message = (f"Rate limit reached: {rule.limit} tokens per {per} ({rule.source}); this request reserves "
                       f"{cost} (prompt estimate plus max_tokens) and {left} are left. "
                       f"Please try again in {format_reset(retry)}.")
        return LimitExceeded(message, retry_after_s=retry, code="rate_limit_exceeded", headers=headers)
    if verdict.kind == "slot":
        slot_rule = rules.slots[i]
        return LimitExceeded(f"Too many concurrent requests: at most {slot_rule.limit} at once ({slot_rule.source}). "
                             "Please try again when one has finished.", retry_after_s=retry,
                             code="concurrency_limit_exceeded", headers=headers)
    budget, spend = rules.budgets[i], demand.spends[i]
    ends_in = verdict.ends_in_s[i] if i < len(verdict.ends_in_s) else retry
    resets = datetime.fromtimestamp(time.time() + ends_in, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    subject, _, name = spend.key.partition("=")
    message = (f"Budget exceeded: the {budget.period} budget of ${_usd(budget.limit_nano)} for {subject} {name} "
               f"({budget.source}) has ${_usd(verdict.spent)} spent and ${_usd(verdict.reserved)} reserved by "
               f"requests in flight; this request may cost up to ${_usd(demand.cost)}. It resets at {resets}.")
    return BudgetExceeded(message, retry_after_s=retry, status=budget_status, headers=headers)

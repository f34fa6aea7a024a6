"""policies/limits.py: which rules apply, what a request reserves, periods and header formats."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from policies.documents import Limits, PolicyDocument
from policies.limits import (
    cap_max_tokens,
    compile_rules,
    estimate_prompt_tokens,
    format_reset,
    period_bounds,
    period_end,
    requested_max_tokens,
    to_nano,
)


class Own(msgspec.Struct):
    limits: Limits | None = None
    budget_usd: Decimal | None = None
    budget_period: str | None = None
    allowed_models: list[str] | None = None


def _doc(**fields: Any) -> PolicyDocument:
    return msgspec.convert(fields, PolicyDocument)


def test_counters_are_kept_per_the_configured_dimensions() -> None:
    rules = compile_rules(
        "research", [("p1", "base", _doc(limits={"requestsPerMinute": 10, "maxConcurrentRequests": 2}))],
        Own(limits=Limits(tokens_per_minute=1000)), Own(limits=Limits(tokens_per_day=10**6)),
        policy_per=("team", "route"))
    d = rules.demand("id1", 60, "k1", "chat/gpt-4o|x", tokens=50, cost_nano=0)
    assert [(b.key, b.limit, b.window_s, d.cost_of(b)) for b in d.buckets] == [
        ("k|tpm|k=k1", 1000, 60, 50),  # the key's own: per key
        ("t|tpd|t=research", 10**6, 86_400, 50),  # the team's own: per team
        ("p:p1|rpm|t=research|r=chat/gpt-4o|x", 10, 60, 1),  # the route (any text) last
    ]
    assert [(s.key, s.limit) for s in d.slots] == [("p:p1|conc|t=research|r=chat/gpt-4o|x", 2)]
    assert rules.needs_tokens and not rules.needs_cost and rules.reserves


def test_budgets_share_a_spend_per_subject_and_alert_only_never_refuses() -> None:
    rules = compile_rules(
        "research", [("p1", "cap", _doc(budget={"limitUsd": 50, "period": "weekly", "onExceed": "alert",
                                                 "alertAtPercent": [50, 90]}))],
        Own(budget_usd=Decimal("10.5"), budget_period="daily"), Own(budget_usd=Decimal("100"), budget_period="monthly"))
    d = rules.demand("id", 60, "k1", "r", tokens=0, cost_nano=7)
    assert d.cost == 7 and [(s.key, s.period, s.limit) for s in d.spends] == [
        ("key=k1", "daily", 10_500_000_000), ("team=research", "monthly", 100 * 10**9),
        ("team=research", "weekly", -1)]
    settled = rules.plan("k1", "r").settlement(d, ["d1", "m1", "w1"], 0, 5)
    assert (settled.reserved, settled.actual, settled.periods) == (7, 5, ["d1", "m1", "w1"])
    assert [(r.key, r.alerts) for r in settled.spends][2] == (
        "team=research", [("p:p1@50", 25 * 10**9), ("p:p1@90", 45 * 10**9), ("p:p1@100", 50 * 10**9)])
    assert rules.plan("k1", "r").settlement(d, [], 0, 5).spends == []  # no answer came: nothing to settle
    assert rules.alerts(0) == [("k@80", 8_400_000_000)]
    assert rules.alerts(2) == [("p:p1@50", 25 * 10**9), ("p:p1@90", 45 * 10**9), ("p:p1@100", 50 * 10**9)]
    per_key = compile_rules("t", [("p1", "cap", _doc(budget={"limitUsd": 5, "period": "daily"}))],
                            policy_budget_per="key")
    assert per_key.demand("id", 60, "k9", "r", 0, 0).spends[0].key == "key=k9"


def test_model_rules_match_route_model_and_provider_model_and_deny_wins() -> None:
    rules = compile_rules("t", [("p1", "m", _doc(models={"allow": ["gpt-4o*", "ollama/*"], "deny": ["*-mini"]}))])
    assert rules.model_denied("chat", "openai", "gpt-4o") is None
    assert rules.model_denied("gpt-4o-route", "x", "whatever") is None  # the route matches
    assert rules.model_denied("chat", "ollama", "llama3") is None  # provider/model matches
    assert rules.model_denied("chat", "openai", "gpt-4o-mini") == "policy m"
    assert rules.model_denied("chat", "openai", "claude-3") == "policy m"
    own = compile_rules("t", [], Own(allowed_models=["llama*"]))  # the auth plug-in checks a key's own list
    assert own.model_denied("chat", "p", "gpt-4o") is None and own.empty


def test_the_smallest_max_tokens_cap_wins_and_empty_rules_are_empty() -> None:
    rules = compile_rules("t", [("p1", "big", _doc(limits={"maxTokensPerRequest": 500}))],
                          Own(limits=Limits(max_tokens_per_request=100)))
    assert (rules.max_tokens, rules.max_tokens_source) == (100, "key")
    assert compile_rules("t", [("p1", "g", _doc(guardrails=[{"kind": "max_input", "maxChars": 5}]))]).empty


@pytest.mark.parametrize(("body", "endpoint", "asked", "after"), [
    ({"max_tokens": 900}, "chat", 900, {"max_tokens": 100}),
    ({"max_completion_tokens": 50}, "chat", 50, {"max_completion_tokens": 50}),
    ({"max_output_tokens": 700}, "responses", 700, {"max_output_tokens": 100}),
    ({}, "responses", None, {"max_output_tokens": 100}),
    ({}, "completions", None, {"max_tokens": 100}),
    ({"max_tokens": True}, "chat", None, {"max_tokens": 100}),  # not a count
])
def test_requested_max_tokens_and_the_cap(body: dict[str, Any], endpoint: str, asked: int | None,
                                          after: dict[str, Any]) -> None:
    assert requested_max_tokens(body) == asked
    cap_max_tokens(body, endpoint, 100)
    assert body == after


def test_prompt_estimates_read_every_prompt_shape() -> None:
    chat = {"messages": [{"role": "user", "content": "x" * 400},
                         {"role": "user", "content": [{"type": "text", "text": "y" * 40}]}]}
    assert estimate_prompt_tokens(chat, "chat") == (400 + 40 + 3 * 16) // 4 + 1  # 16 characters of framing a part
    assert estimate_prompt_tokens({"prompt": ["ab" * 10, "cd"]}, "completions") == 6
    assert estimate_prompt_tokens({"input": [1, 2, 3]}, "embeddings") == 4
    assert estimate_prompt_tokens({"input": "hello world!"}, "responses") == 4
    assert estimate_prompt_tokens({}, "chat") == 1


def test_periods_are_utc_days_weeks_from_monday_and_calendar_months() -> None:
    start = datetime(2023, 12, 25, tzinfo=UTC)  # crosses a year end and a leap February
    for hours in range(0, 24 * 500, 7):
        at = start + timedelta(hours=hours, minutes=13)
        t = at.timestamp()
        day = at.replace(hour=0, minute=0)
        monday = day - timedelta(days=at.weekday())
        first = day.replace(day=1)
        next_month = (first + timedelta(days=32)).replace(day=1)
        assert period_bounds("daily", t)[1:] == (day.timestamp(), (day + timedelta(days=1)).timestamp())
        assert period_bounds("weekly", t)[1:] == (monday.timestamp(), (monday + timedelta(days=7)).timestamp())
        pid, begins, ends = period_bounds("monthly", t)
        assert (pid, begins, ends) == (f"m{at.year:04d}{at.month:02d}", first.timestamp(), next_month.timestamp())
        for kind in ("daily", "weekly", "monthly"):
            pid, _, ends = period_bounds(kind, t)  # type: ignore[arg-type]
            assert period_end(pid) == ends


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (0.0201, "20ms"), (0.0004, "1ms"), (1.5, "1.5s"), (59.996, "59.996s"), (60, "1m0s"),
    (360, "6m0s"), (3601, "1h0m1s"), (86_400, "24h0m0s")])
def test_reset_times_read_like_openais(seconds: float, text: str) -> None:
    assert format_reset(seconds) == text


def test_money_rounds_up_to_whole_nano_dollars() -> None:
    assert to_nano(Decimal("0.0000000001")) == 1
    assert to_nano(Decimal("12.5")) == 12_500_000_000
    assert to_nano(0.1) == 100_000_000

"""Query parameters: UTC instants, windows and dimension lists, checked into 400s that name the parameter."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from adapters.adminapi import SemanticError, ValidationFailed
from control.observability.params import iso, parse_group_by, parse_instant, parse_window

NOW = datetime(2026, 12, 1, 10, 17, tzinfo=UTC)


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-12-01", datetime(2026, 12, 1, tzinfo=UTC)),
    ("2026-12-01T05:00:00Z", datetime(2026, 12, 1, 5, tzinfo=UTC)),
    ("2026-12-01T05:00:00.000Z", datetime(2026, 12, 1, 5, tzinfo=UTC)),  # what a browser's toISOString() sends
    ("2026-12-01T07:30:00+02:30", datetime(2026, 12, 1, 5, tzinfo=UTC)),
    ("2026-12-01 05:00:00", datetime(2026, 12, 1, 5, tzinfo=UTC)),  # no offset: UTC
])
def test_instants_are_utc(text: str, expected: datetime) -> None:
    assert parse_instant("start", text)[0] == expected


def test_default_window_is_the_last_seven_days_to_the_end_of_this_hour() -> None:
    window = parse_window(None, None, max_days=400, now=NOW)
    assert (iso(window.start), iso(window.end)) == ("2026-11-24T11:00:00Z", "2026-12-01T11:00:00Z")
    assert iso(parse_window("2026-11-01", None, max_days=400, now=NOW).end) == "2026-12-01T11:00:00Z"
    assert iso(parse_window(None, "2026-11-10", max_days=400, now=NOW).start) == "2026-11-03T00:00:00Z"


def test_a_bare_end_date_may_include_its_day() -> None:
    window = parse_window("2026-11-01", "2026-11-30", max_days=400, now=NOW, inclusive_end_date=True)
    assert iso(window.end) == "2026-12-01T00:00:00Z"
    assert iso(parse_window("2026-11-01", "2026-11-30T12:00:00Z", max_days=400, now=NOW,
                            inclusive_end_date=True).end) == "2026-11-30T12:00:00Z"


def test_an_empty_window_is_refused_on_meaning() -> None:
    with pytest.raises(SemanticError) as caught:
        parse_window("2026-12-01", "2026-12-01", max_days=400, now=NOW)
    assert [e.field for e in caught.value.errors] == ["end"]


@pytest.mark.parametrize("text", ["2026-12-01T05", "20261201", "2026-W48-1", "2026-12-01T05:00:00Zjunk"])
def test_only_dates_and_rfc3339_date_times(text: str) -> None:
    with pytest.raises(ValidationFailed):
        parse_instant("start", text)


def test_both_bad_instants_are_reported() -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_window("soon", "later", max_days=400, now=NOW)
    assert [e.field for e in caught.value.errors] == ["start", "end"]


def test_the_window_is_bounded() -> None:
    parse_window("2026-01-01", "2026-01-31", max_days=30, now=NOW)
    with pytest.raises(SemanticError, match="at most 30 days"):
        parse_window("2026-01-01", "2026-02-01", max_days=30, now=NOW)


def test_group_by() -> None:
    assert parse_group_by(None) == parse_group_by(" ") == ()
    assert parse_group_by("team, model") == ("team", "model")
    assert parse_group_by("team,model,team") == ("team", "model")
    with pytest.raises(ValidationFailed, match="unknown dimension 'colour'"):
        parse_group_by("team,colour")

"""Preview redaction: only flagged columns, span by span, nested values too."""

from __future__ import annotations

from control.catalog.datasets.redaction import flagged_columns, redact_rows, redact_text
from control.catalog.datasets_analysis import Finding, PiiReport, default_rules
from control.catalog.datasets_analysis.pii import PiiColumnFindings


class Names:
    def detect(self, text: str) -> list[Finding]:
        at = text.find("Alice")
        return [Finding(rule="person", start=at, end=at + 5)] if at >= 0 else []


def test_spans_are_masked_and_the_rest_of_the_text_kept() -> None:
    rules = default_rules()
    assert redact_text("mail bob@example.com or 4111 1111 1111 1111", rules) == \
        "mail b***@e***.com or **** **** **** 1111"
    assert redact_text("Alice says hi", rules, [Names()]) == "*** says hi"  # too short to keep its ends
    assert redact_text("nothing here", rules) == "nothing here"


def test_only_flagged_top_level_columns_are_touched() -> None:
    report = PiiReport(pii_status="detected", total_findings=2, scanned_cells=4, rules=["email"], findings=[
        PiiColumnFindings(column="messages[].content", rule="email", count=1, examples=[]),
        PiiColumnFindings(column="card", rule="credit_card", count=1, examples=[])])
    assert flagged_columns(report) == ["card", "messages"]
    rows = [{"messages": [{"role": "user", "content": "x@y.io please"}], "card": 4111111111111111,
             "other": "z@w.io", "n": 5}]
    out = redact_rows(rows, flagged_columns(report), default_rules())
    assert out == [{"messages": [{"role": "user", "content": "x***@y***.io please"}],
                    "card": "**** **** **** 1111", "other": "z@w.io", "n": 5}]

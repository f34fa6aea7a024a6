"""policies/pii.py: the pure string API the gateway's guardrails call (detect spans, redact)."""

from __future__ import annotations

from typing import get_args

import pytest

from policies.documents import PiiEntity
from policies.pii import BUILTIN_RULES, ENTITY_RULES, Finding, PiiDetector, PiiRule, detect, redact, rules_for

TEXT = "Mail jane.doe@example.com, card 4111 1111 1111 1111, from 10.1.2.3, ssn 123-45-6789."


def test_detect_finds_sorted_non_overlapping_spans() -> None:
    found = detect(TEXT)
    assert [(f.rule, TEXT[f.start:f.end]) for f in found] == [
        ("email", "jane.doe@example.com"), ("credit_card", "4111 1111 1111 1111"),
        ("ipv4", "10.1.2.3"), ("us_ssn", "123-45-6789"),
    ]


def test_earlier_rules_claim_overlapping_text() -> None:
    card = [r for r in BUILTIN_RULES if r.name == "credit_card"]
    digits = PiiRule("digits", r"\d+")
    text = "4111 1111 1111 1111 / 42"
    assert [(f.rule, f.start) for f in detect(text, [*card, digits])] == [("credit_card", 0), ("digits", 22)]
    assert [f.rule for f in detect(text, [digits, *card])] == ["digits"] * 5


def test_validators_reject_look_alikes() -> None:
    assert detect("order 4111 1111 1111 1112 and GB00 WEST 1234 5698 7654 32") == []  # bad Luhn, bad mod-97
    assert [f.rule for f in detect("iban GB82 WEST 1234 5698 7654 32")] == ["iban"]


def test_every_policy_entity_maps_to_builtin_rules() -> None:
    names = {r.name for r in BUILTIN_RULES}
    assert set(ENTITY_RULES) == set(get_args(PiiEntity))
    for entity, rules in ENTITY_RULES.items():
        assert rules and set(rules) <= names, entity
    assert [r.name for r in rules_for(["national_id", "ip_address"])] == ["us_ssn", "uk_nino", "ipv6", "ipv4"]


def test_rules_for_limits_what_is_found() -> None:
    found = detect(TEXT, rules_for(["email"]))
    assert [f.rule for f in found] == ["email"]


def test_redact_replaces_spans_with_labels_or_masks() -> None:
    assert redact(TEXT, detect(TEXT, rules_for(["email", "credit_card"]))) == (
        "Mail [EMAIL], card [CREDIT_CARD], from 10.1.2.3, ssn 123-45-6789.")
    rules = {r.name: r for r in BUILTIN_RULES}
    masked = redact(TEXT, detect(TEXT), lambda f, value: rules[f.rule].redact(value))
    assert masked == "Mail j***@e***.com, card **** **** **** 1111, from 10.*.*.*, ssn ***-**-6789."
    assert redact("nothing here", []) == "nothing here"


def test_redact_refuses_overlapping_findings() -> None:
    with pytest.raises(ValueError, match="overlapping"):
        redact("abcdef", [Finding("x", 0, 3), Finding("y", 2, 4)])


def test_detectors_add_findings_but_rules_claim_first() -> None:
    class Names:
        def detect(self, text: str) -> list[Finding]:
            return [Finding("person", 0, 4, score=0.9), Finding("person", 5, 9)]

    assert isinstance(Names(), PiiDetector)
    found = detect("Jane 4111 1111 1111 1111", detectors=[Names()])
    assert [(f.rule, f.start) for f in found] == [("person", 0), ("credit_card", 5)]


def test_dataset_scanner_uses_the_shared_definitions() -> None:
    import control.catalog.datasets_analysis as analysis
    import control.catalog.datasets_analysis.pii_rules as old
    import policies.pii as new

    assert analysis.PiiDetector is new.PiiDetector and analysis.Finding is new.Finding
    for name in old.__all__:
        assert getattr(old, name) is getattr(new, name), name

"""PII rules, validators and redaction; the scanner's counting and examples."""

from __future__ import annotations

import random
import re

import msgspec
import pyarrow as pa
import pytest

from control.catalog.datasets_analysis import BUILTIN_RULES, Finding, PiiDetector, PiiRule, scan
from policies.pii import iban_ok, luhn_ok

RULES = {r.name: r for r in BUILTIN_RULES}


def _found(rule: str, text: str) -> list[str]:
    return [text[s:e] for s, e in RULES[rule].find(text)]


def _scan(columns: dict[str, list]) -> dict[tuple[str, str], tuple[int, list[str]]]:
    report = scan([pa.RecordBatch.from_pydict(columns)])
    return {(f.column, f.rule): (f.count, f.examples) for f in report.findings}


VALID_CARDS = ["4111 1111 1111 1111", "5500-0000-0000-0004", "378282246310005", "4012888888881881"]
LUHN_INVALID_CARDS = ["4111 1111 1111 1112", "5500000000000005", "378282246310006"]


@pytest.mark.parametrize("card", VALID_CARDS)
def test_valid_cards_are_found(card: str) -> None:
    assert _found("credit_card", f"paid with {card} yesterday") == [card]


@pytest.mark.parametrize("card", LUHN_INVALID_CARDS)
def test_luhn_invalid_cards_are_not(card: str) -> None:
    assert not luhn_ok(card)
    assert _found("credit_card", f"paid with {card} yesterday") == []


def test_random_sixteen_digit_numbers_failing_luhn_never_match() -> None:
    rng = random.Random(7)
    numbers = [str(rng.randrange(10**15, 10**16)) for _ in range(2000)]
    failing = [n for n in numbers if not luhn_ok(n)]
    assert len(failing) > 1700
    assert all(_found("credit_card", n) == [] for n in failing)


def test_luhn_valid_number_without_issuer_prefix_is_ignored() -> None:
    assert luhn_ok("0000000000000000")
    assert _found("credit_card", "0000000000000000") == []


VALID_IBANS = ["GB82 WEST 1234 5698 7654 32", "DE89370400440532013000", "FR14 2004 1010 0505 0001 3M02 606"]
INVALID_IBANS = ["GB82 WEST 1234 5698 7654 33", "DE00370400440532013000", "GB82 WEST 1234"]


@pytest.mark.parametrize("iban", VALID_IBANS)
def test_valid_ibans_pass_mod97(iban: str) -> None:
    assert iban_ok(iban)
    assert _found("iban", f"IBAN: {iban}.") == [iban]


@pytest.mark.parametrize("iban", INVALID_IBANS)
def test_invalid_ibans_fail(iban: str) -> None:
    assert not iban_ok(iban)
    assert _found("iban", f"IBAN: {iban}.") == []


def test_iban_followed_by_capitals_still_counts() -> None:
    assert len(_found("iban", "to GB82 WEST 1234 5698 7654 32 REF")) == 1


@pytest.mark.parametrize(
    ("rule", "hit", "miss"),
    [
        ("email", "mail john.doe+x@mail.example.co.uk now", "user@localhost or @handle"),
        ("phone", "call +44 20 7946 0958 or (555) 123-4567", "on 2024-01-15, v1.2.3, order 12345"),
        ("ipv4", "from 192.168.1.20 and 8.8.8.8.", "999.1.1.1 or 1.2.3"),
        ("ipv6", "via 2001:db8::8a2e:370:7334 and fe80::1", "at 12:30:45 or ::1"),
        ("us_ssn", "ssn 123-45-6789", "000-12-3456 666-12-3456 123-45-67890"),
        ("uk_nino", "NI AB 12 34 56 C and JG103759A", "GB123456A AB123456E QQ123456C"),
    ],
)
def test_rules_find_true_positives_and_skip_lookalikes(rule: str, hit: str, miss: str) -> None:
    assert _found(rule, hit)
    assert _found(rule, miss) == []


def test_phone_count_in_text() -> None:
    assert _found("phone", "call +44 20 7946 0958 or (555) 123-4567") == ["+44 20 7946 0958", "(555) 123-4567"]


def test_counts_per_column_with_redacted_examples_only() -> None:
    raw = {
        "contact": ["john.doe@example.com", "mail jane@corp.org please", None, "nothing here"],
        "payment": ["4111 1111 1111 1111", "4111 1111 1111 1112", "GB82 WEST 1234 5698 7654 32", "x"],
        "net": ["192.168.1.20", "+44 20 7946 0958", "123-45-6789", "AB 12 34 56 C"],
    }
    found = _scan(raw)
    assert found[("contact", "email")] == (2, ["j***@e***.com", "j***@c***.org"])
    assert found[("payment", "credit_card")] == (1, ["**** **** **** 1111"])
    assert found[("payment", "iban")] == (1, ["GB** **** 5432"])
    assert found[("net", "ipv4")] == (1, ["192.*.*.*"])
    assert found[("net", "phone")] == (1, ["+** ** **** **58"])
    assert found[("net", "us_ssn")] == (1, ["***-**-6789"])
    assert found[("net", "uk_nino")] == (1, ["AB ** ** ** *"])
    report = scan([pa.RecordBatch.from_pydict(raw)])
    encoded = msgspec.json.encode(report).decode()
    for value in ["john.doe", "jane@corp", "4111 1111 1111 1111", "WEST 1234", "192.168.1.20", "7946", "123-45",
                  "12 34 56"]:
        assert value not in encoded
    assert report.pii_status == "detected"
    assert report.total_findings == 8
    assert report.scanned_cells == 11


def test_a_card_is_not_also_counted_as_a_phone() -> None:
    found = _scan({"t": ["card 4111 1111 1111 1111 only"]})
    assert list(found) == [("t", "credit_card")]


def test_numbers_stored_as_integers_are_scanned() -> None:
    found = _scan({"card": pa.array([4111111111111111, 1234], pa.int64())})
    assert found[("card", "credit_card")][0] == 1


def test_nested_chat_records_are_scanned_by_path() -> None:
    messages = [[{"role": "user", "content": "I am ann@example.com"}, {"role": "assistant", "content": "ok"}]]
    found = _scan({"messages": messages})
    assert found == {("messages[].content", "email"): (1, ["a***@e***.com"])}


def test_clean_data_is_clean() -> None:
    report = scan([pa.RecordBatch.from_pydict({"t": ["hello world", "no pii here", None]})])
    assert (report.pii_status, report.total_findings, report.findings) == ("clean", 0, [])


def test_examples_are_capped_and_distinct() -> None:
    emails = [f"user{i}@example.com" for i in range(10)] * 2
    (count, examples) = _scan({"e": emails})[("e", "email")]
    assert count == 20
    assert examples == ["u***@e***.com"]


def test_custom_rule_and_detector_hook() -> None:
    employee = PiiRule("employee_id", re.compile(r"\bEMP-\d{6}\b"), prefilter=r"EMP-\d")

    class Names:
        def detect(self, text: str) -> list[Finding]:
            return [Finding("person", m.start(), m.end(), 0.9) for m in re.finditer(r"\bAlice Smith\b", text)]

    assert isinstance(Names(), PiiDetector)
    batch = pa.RecordBatch.from_pydict({"note": ["EMP-123456 is Alice Smith", "john@example.com"]})
    report = scan([batch], rules=[employee], detectors=[Names()])
    found = {(f.column, f.rule): (f.count, f.examples) for f in report.findings}
    assert found == {("note", "employee_id"): (1, ["E***6"]), ("note", "person"): (1, ["A***h"])}
    assert report.rules == ["employee_id"]

"""PII detection on strings: a regex finds candidates, a validator rejects look-alikes, a redactor masks.

Shared by the dataset scanner (``control.catalog.datasets_analysis.pii``, which runs
these rules over Arrow columns) and the gateway's guardrails, which call the pure
string API: ``detect(text, rules)`` returns non-overlapping ``Finding`` spans and
``redact(text, findings)`` replaces them. ``rules_for(entities)`` turns a policy's
``PiiGuardrail.entities`` (``policies.documents.PiiEntity``) into rules.

Covered national ids: US Social Security Number (AAA-GG-SSSS, dashes required,
never-issued areas 000/666/9xx excluded) and UK National Insurance number
(AB 12 34 56 C, HMRC's excluded prefixes removed). Others plug in as ``PiiRule``.

Each ``prefilter`` is an RE2 pattern that every true match must contain; Arrow
runs it over whole columns so the Python regex only sees candidate cells.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import msgspec

from policies.documents import PiiEntity

__all__ = [
    "BUILTIN_RULES",
    "ENTITY_RULES",
    "Finding",
    "PiiDetector",
    "PiiRule",
    "default_rules",
    "detect",
    "iban_ok",
    "luhn_ok",
    "mask",
    "redact",
    "rules_for",
]


class Finding(msgspec.Struct, frozen=True):
    """A span ``text[start:end]`` that a detector thinks is PII of kind ``rule``."""

    rule: str
    start: int
    end: int
    score: float = 1.0


@runtime_checkable
class PiiDetector(Protocol):
    """Extra detection beyond regex rules (e.g. an NER model). Called once per text; must not raise for odd text."""

    def detect(self, text: str) -> list[Finding]: ...


def mask(value: str) -> str:
    """Generic redaction: first and last character only, and only if the value is long enough to hide."""
    return f"{value[0]}***{value[-1]}" if len(value) >= 6 else "***"


@dataclass(frozen=True)
class PiiRule:
    """One kind of PII. ``validator`` (optional) confirms a regex match; ``redact`` masks it for examples."""

    name: str
    pattern: re.Pattern[str] | str
    validator: Callable[[str], bool] | None = None
    prefilter: str | None = None
    redact: Callable[[str], str] = mask
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        compiled = self.pattern if isinstance(self.pattern, re.Pattern) else re.compile(self.pattern)
        object.__setattr__(self, "regex", compiled)

    def find(self, text: str) -> list[tuple[int, int]]:
        return [
            m.span() for m in self.regex.finditer(text) if self.validator is None or self.validator(m.group())
        ]


def _digits(value: str) -> str:
    return re.sub(r"\D", "", value)


def luhn_ok(number: str) -> bool:
    digits = [int(d) for d in _digits(number)]
    checksum = sum(digits[-1::-2]) + sum(sum(divmod(2 * d, 10)) for d in digits[-2::-2])
    return bool(digits) and checksum % 10 == 0


# Visa, Mastercard (51-55, 2221-2720), Amex, Diners, JCB, Discover.
_CARD_PREFIX = re.compile(
    r"^(?:4|5[1-5]|2(?:2[2-9][1-9]|2[3-9]\d|[3-6]\d\d|7[01]\d|720)|3[47]|3[068]|35|6(?:011|5|4[4-9]))"
)


def _card_ok(value: str) -> bool:
    digits = _digits(value)
    # Issuer prefix plus Luhn: random 16-digit numbers pass Luhn 1 time in 10, the prefix cuts that further.
    return 13 <= len(digits) <= 19 and bool(_CARD_PREFIX.match(digits)) and luhn_ok(digits)


# Lengths from the SWIFT IBAN registry, for the countries most likely to show up.
_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AT": 20, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29, "CH": 21, "CY": 28,
    "CZ": 24, "DE": 22, "DK": 18, "EE": 20, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GI": 23,
    "GL": 18, "GR": 27, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IS": 26, "IT": 27, "KW": 30, "KZ": 20,
    "LB": 28, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MT": 31, "NL": 18, "NO": 15, "PK": 24,
    "PL": 28, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SE": 24, "SI": 19, "SK": 24, "SM": 27,
    "TR": 26, "UA": 29,
}


def _iban_body(value: str) -> str | None:
    """The IBAN inside a greedy match ('GB82 WEST ... 32 ABC' -> 22 characters), if the length fits."""
    compact = value.replace(" ", "")
    length = _IBAN_LENGTHS.get(compact[:2])
    if length is None:
        return compact if 15 <= len(compact) <= 34 else None
    return compact[:length] if len(compact) >= length else None


def iban_ok(value: str) -> bool:
    body = _iban_body(value)
    if body is None:
        return False
    rearranged = body[4:] + body[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def _ipv6_ok(value: str) -> bool:
    try:
        ipaddress.IPv6Address(value)
    except ValueError:
        return False
    return sum(ch in "0123456789abcdefABCDEF" for ch in value) >= 4  # not '::' or '::1'


def _phone_ok(value: str) -> bool:
    digits = _digits(value)
    return 8 <= len(digits) <= 15 and len(set(digits)) > 2


def _redact_email(value: str) -> str:
    local, _, domain = value.partition("@")
    labels = domain.split(".")
    return f"{local[0]}***@{labels[0][0]}***.{labels[-1]}"


def _redact_digits(keep: int) -> Callable[[str], str]:
    def redact(value: str) -> str:
        total = sum(ch.isdigit() for ch in value)
        seen, out = 0, []
        for ch in value:
            if ch.isdigit():
                seen += 1
                out.append(ch if seen > total - keep else "*")
            else:
                out.append(ch)
        return "".join(out)
    return redact


def _redact_card(value: str) -> str:
    return "**** **** **** " + _digits(value)[-4:]


def _redact_iban(value: str) -> str:
    body = _iban_body(value) or value.replace(" ", "")
    return f"{body[:2]}** **** {body[-4:]}"


BUILTIN_RULES: tuple[PiiRule, ...] = (  # order matters: earlier rules claim overlapping text first
    PiiRule("credit_card", r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])", _card_ok,
            prefilter=r"(?:\d[ -]?){12,18}\d", redact=_redact_card),
    PiiRule("iban", r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b", iban_ok,
            prefilter=r"[A-Z]{2}\d{2} ?[A-Z0-9]", redact=_redact_iban),
    PiiRule("us_ssn", r"(?<![\d-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\d-])",
            prefilter=r"\d{3}-\d{2}-\d{4}", redact=_redact_digits(4)),
    PiiRule("uk_nino",
            r"\b(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b",
            prefilter=r"[A-Z]{2} ?\d{2} ?\d{2} ?\d{2} ?[A-D]", redact=lambda v: v[:2] + " ** ** ** *"),
    PiiRule("email", r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}\b",
            prefilter=r"@[A-Za-z0-9-]+\.", redact=_redact_email),
    PiiRule("ipv6", r"(?<![\w:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:])", _ipv6_ok,
            prefilter=r"[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:", redact=lambda v: v.split(":")[0] + ":****"),
    PiiRule("ipv4",
            r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?!\.?\d)",
            prefilter=r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}",
            redact=lambda v: v.split(".")[0] + ".*.*.*"),
    PiiRule("phone", r"(?<![\w+])(?:\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,4}"
            r"|\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4})(?!\w)", _phone_ok,
            prefilter=r"\+\d|\d{3}\)?[ .-]\d{3}[ .-]\d{4}", redact=_redact_digits(2)),
)


def default_rules() -> list[PiiRule]:
    return list(BUILTIN_RULES)


# Policy entities (``PiiGuardrail.entities``) name families; the rules are finer-grained.
ENTITY_RULES: Mapping[PiiEntity, tuple[str, ...]] = {
    "email": ("email",),
    "phone": ("phone",),
    "credit_card": ("credit_card",),
    "iban": ("iban",),
    "ip_address": ("ipv4", "ipv6"),
    "national_id": ("us_ssn", "uk_nino"),
}


def rules_for(entities: Iterable[PiiEntity], rules: Sequence[PiiRule] = BUILTIN_RULES) -> list[PiiRule]:
    """The rules covering ``entities``, in ``rules`` order (which decides who claims overlapping text)."""
    wanted = {name for entity in entities for name in ENTITY_RULES[entity]}
    return [rule for rule in rules if rule.name in wanted]


def detect(text: str, rules: Sequence[PiiRule] = BUILTIN_RULES,
           detectors: Sequence[PiiDetector] = ()) -> list[Finding]:
    """Non-overlapping findings sorted by position. Earlier rules claim text first, as in the dataset
    scanner (a card number is not also a phone number); detectors' findings may not overlap a rule's."""
    claimed: list[Finding] = []
    candidates = [Finding(rule.name, start, end) for rule in rules for start, end in rule.find(text)]
    candidates += [f for detector in detectors for f in detector.detect(text)]
    for finding in candidates:
        if not any(finding.start < c.end and c.start < finding.end for c in claimed):
            claimed.append(finding)
    return sorted(claimed, key=lambda f: f.start)


def redact(text: str, findings: Sequence[Finding],
           replacement: Callable[[Finding, str], str] = lambda f, _value: f"[{f.rule.upper()}]") -> str:
    """``text`` with each finding replaced (default ``[EMAIL]``); findings must not overlap (``detect``'s don't)."""
    out: list[str] = []
    pos = 0
    for finding in sorted(findings, key=lambda f: f.start):
        if finding.start < pos:
            raise ValueError(f"overlapping findings at {finding.start}")
        out += [text[pos:finding.start], replacement(finding, text[finding.start:finding.end])]
        pos = finding.end
    out.append(text[pos:])
    return "".join(out)

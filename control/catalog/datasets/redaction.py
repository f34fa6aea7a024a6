"""Mask PII in preview rows before they are stored, so the catalog never keeps raw PII of a dataset.

Only columns the scan flagged are touched (a finding at ``messages[].content``
flags the top-level column ``messages``); inside them every text (and integer, which
the scan also reads as digits) is searched with the same rules and detectors
and each match replaced by its rule's redaction (``j***@e***.com``,
``**** **** **** 1111``), so the surrounding text stays readable.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from control.catalog.datasets_analysis import PiiDetector, PiiReport, PiiRule
from policies.pii import mask

__all__ = ["flagged_columns", "redact_rows", "redact_text"]

_TOP_LEVEL = re.compile(r"[.\[]")


def flagged_columns(report: PiiReport) -> list[str]:
    return sorted({_TOP_LEVEL.split(f.column, maxsplit=1)[0] for f in report.findings})


def redact_rows(rows: list[dict[str, Any]], columns: Sequence[str], rules: Sequence[PiiRule],
                detectors: Sequence[PiiDetector] = ()) -> list[dict[str, Any]]:
    flagged = set(columns)
    return [{k: _redact(v, rules, detectors) if k in flagged else v for k, v in row.items()} for row in rows]


def _redact(value: Any, rules: Sequence[PiiRule], detectors: Sequence[PiiDetector]) -> Any:
    if isinstance(value, str):
        return redact_text(value, rules, detectors)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        text = str(value)
        masked = redact_text(text, rules, detectors)
        return value if masked == text else masked
    if isinstance(value, list):
        return [_redact(v, rules, detectors) for v in value]
    if isinstance(value, dict):
        return {k: _redact(v, rules, detectors) for k, v in value.items()}
    return value


def redact_text(text: str, rules: Sequence[PiiRule], detectors: Sequence[PiiDetector] = ()) -> str:
    """Replace every rule or detector match; earlier rules win overlaps, as in the scan."""
    spans: list[tuple[int, int, str]] = []

    def claim(start: int, end: int, replacement: str) -> None:
        if not any(start < e and s < end for s, e, _ in spans):
            spans.append((start, end, replacement))

    for rule in rules:
        for start, end in rule.find(text):
            claim(start, end, rule.redact(text[start:end]))
    for detector in detectors:
        for finding in detector.detect(text):
            claim(finding.start, finding.end, mask(text[finding.start:finding.end]))
    for start, end, replacement in sorted(spans, reverse=True):
        text = text[:start] + replacement + text[end:]
    return text

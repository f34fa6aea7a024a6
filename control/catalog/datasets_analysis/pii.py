"""PII scan: counts per column and rule, with a few redacted examples and never a raw value.

Rules (``policies.pii``, shared with the gateway's guardrails) are regex +
validator; ``PiiDetector`` plugs in anything else, e.g. an NER model, and sees
every non-null text cell, so keep it fast or sample upstream. Which cells are
scanned: string columns, integer columns (card or phone numbers stored as
numbers), and the string leaves inside lists and structs (``messages[].content``), so chat-format JSONL is covered.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Literal

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from policies.pii import Finding, PiiDetector, PiiRule, default_rules, mask

__all__ = ["Finding", "PiiColumnFindings", "PiiDetector", "PiiReport", "PiiScanner", "scan"]


class PiiColumnFindings(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    column: str
    rule: str
    count: int
    examples: list[str]


class PiiReport(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    pii_status: Literal["clean", "detected"]
    total_findings: int
    scanned_cells: int
    findings: list[PiiColumnFindings]
    rules: list[str]


class PiiScanner:
    """Feed every batch once, then ``report``."""

    def __init__(
        self,
        rules: Sequence[PiiRule] | None = None,
        detectors: Sequence[PiiDetector] = (),
        *,
        max_examples: int = 3,
    ) -> None:
        self.rules = list(default_rules() if rules is None else rules)
        self.detectors = list(detectors)
        self.max_examples = max_examples
        prefilters = [r.prefilter for r in self.rules]
        self._any_prefilter = None if None in prefilters else "|".join(f"(?:{p})" for p in prefilters)
        self.scanned_cells = 0
        self._counts: dict[tuple[str, str], int] = {}
        self._examples: dict[tuple[str, str], list[str]] = {}

    def feed(self, batch: pa.RecordBatch) -> None:
        for name, array in zip(batch.schema.names, batch.columns, strict=True):
            for path, text in _text_leaves(name, array):
                self._scan_column(path, text)

    def _scan_column(self, column: str, text: pa.Array) -> None:
        text = text.drop_null()
        self.scanned_cells += len(text)
        if len(text) == 0:
            return
        if self.rules:
            # One combined RE2 pass first: most columns have no candidate at all.
            rows = pc.indices_nonzero(_matches(text, self._any_prefilter))
            if len(rows):
                self._scan_rows(column, text.take(rows))
        for detector in self.detectors:
            for value in text.to_pylist():
                for finding in detector.detect(value):
                    self._record(column, finding.rule, mask(value[finding.start:finding.end]))

    def _scan_rows(self, column: str, text: pa.Array) -> None:
        hits = [set(pc.indices_nonzero(_matches(text, rule.prefilter)).to_pylist()) for rule in self.rules]
        for row in sorted(set().union(*hits)):
            value = text[row].as_py()
            claimed: list[tuple[int, int]] = []
            for rule, rule_hits in zip(self.rules, hits, strict=True):
                if row in rule_hits:
                    self._match_rule(column, rule, value, claimed)

    def _match_rule(self, column: str, rule: PiiRule, value: str, claimed: list[tuple[int, int]]) -> None:
        for start, end in rule.find(value):
            if any(start < c_end and c_start < end for c_start, c_end in claimed):
                continue  # a card number is not also a phone number
            claimed.append((start, end))
            self._record(column, rule.name, rule.redact(value[start:end]))

    def _record(self, column: str, rule: str, example: str) -> None:
        key = (column, rule)
        self._counts[key] = self._counts.get(key, 0) + 1
        examples = self._examples.setdefault(key, [])
        if len(examples) < self.max_examples and example not in examples:
            examples.append(example)

    def report(self) -> PiiReport:
        findings = [
            PiiColumnFindings(column=column, rule=rule, count=count, examples=self._examples[(column, rule)])
            for (column, rule), count in sorted(self._counts.items())
        ]
        total = sum(self._counts.values())
        return PiiReport(
            pii_status="detected" if total else "clean",
            total_findings=total,
            scanned_cells=self.scanned_cells,
            findings=findings,
            rules=[r.name for r in self.rules],
        )


def _matches(text: pa.Array, prefilter: str | None) -> pa.Array:
    if prefilter is None:
        return pa.array([True] * len(text))
    return pc.fill_null(pc.match_substring_regex(text, prefilter), False)


def _text_leaves(name: str, array: pa.Array) -> Iterator[tuple[str, pa.Array]]:
    """Every string-ish leaf of a column with its path; integers are scanned as their digits."""
    dtype = array.type
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        yield name, array
    elif pa.types.is_integer(dtype):
        yield name, pc.cast(array, pa.string())
    elif pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        yield from _text_leaves(f"{name}[]", array.flatten())
    elif pa.types.is_struct(dtype):
        for index in range(dtype.num_fields):
            child = dtype.field(index).name
            yield from _text_leaves(f"{name}.{child}", pc.struct_field(array, [index]))
    elif pa.types.is_dictionary(dtype):
        yield from _text_leaves(name, array.dictionary_decode())


def scan(
    batches: Iterable[pa.RecordBatch],
    rules: Sequence[PiiRule] | None = None,
    detectors: Sequence[PiiDetector] = (),
) -> PiiReport:
    scanner = PiiScanner(rules, detectors)
    for batch in batches:
        scanner.feed(batch)
    return scanner.report()

"""The catalog's own settings (``control.module_settings.catalog``), decoded and checked once at start-up.

PII scanning is configurable at two levels: here (which rules exist: the
built-ins, minus ``disabled_pii_rules``, plus ``custom_pii_rules``; extra
detectors such as an NER model) and per dataset (``piiRules``: the subset to run).

    control:
      module_settings:
        catalog:
          disabled_pii_rules: [ipv6]
          custom_pii_rules: [{name: employee_id, pattern: "EMP-\\\\d{6}"}]
          pii_detectors: ["mypkg.ner:make_detector"]   # factory() -> PiiDetector
          preview_rows: 20
          analysis:                  # dataset analysis: worker processes and what a file may declare
            workers: 2
            memory_limit_mb: 2048    # address space per worker (RLIMIT_AS); past it: 413
            max_rows: 1000000        # rows analysed; the rest is counted and the report says "sampled"
"""

from __future__ import annotations

import importlib
import re
from typing import Annotated

import msgspec

from control.catalog.datasets_analysis import BUILTIN_RULES, PiiDetector, PiiRule

__all__ = ["AnalysisSettings", "CatalogSettings", "CustomPiiRule", "PiiConfig", "load_detectors"]

RuleName = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{0,39}$")]


class CustomPiiRule(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: RuleName
    pattern: Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]

    def __post_init__(self) -> None:
        try:
            re.compile(self.pattern)
        except re.error as err:
            raise ValueError(f"custom PII rule {self.name!r}: invalid pattern: {err}") from err


class AnalysisSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where dataset analysis runs (worker processes of its own) and the caps on what a file may declare."""

    workers: Annotated[int, msgspec.Meta(ge=1, le=64)] = 2  # concurrent analyses; more uploads wait their turn
    memory_limit_mb: Annotated[int, msgspec.Meta(ge=768, le=1 << 20)] = 2048  # per worker address space
    tasks_per_child: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 4  # then the worker is replaced
    max_rows: Annotated[int, msgspec.Meta(ge=1)] = 1_000_000
    max_columns: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 2048
    max_depth: Annotated[int, msgspec.Meta(ge=2, le=500)] = 64
    max_decompressed_bytes: Annotated[int, msgspec.Meta(ge=1)] = 4 << 30
    max_compression_ratio: Annotated[float, msgspec.Meta(ge=1)] = 100.0


class CatalogSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    disabled_pii_rules: list[RuleName] = []
    custom_pii_rules: list[CustomPiiRule] = []
    pii_detectors: list[str] = []  # "package.module:factory"; each factory() returns a PiiDetector
    preview_rows: Annotated[int, msgspec.Meta(ge=1, le=200)] = 20
    max_files_per_upload: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 64
    analysis: AnalysisSettings = AnalysisSettings()
    # A dataset version still ``uploading`` after this long was abandoned (crash, database outage): its row
    # is removed and its number reused. Must exceed the longest upload plus analysis.
    stale_upload_s: Annotated[float, msgspec.Meta(ge=60)] = 3600.0

    def __post_init__(self) -> None:
        builtin = {r.name for r in BUILTIN_RULES}
        unknown = sorted(set(self.disabled_pii_rules) - builtin)
        if unknown:
            raise ValueError(f"disabled_pii_rules names unknown rules {unknown}; built-ins are {sorted(builtin)}")
        clash = sorted({r.name for r in self.custom_pii_rules} & builtin)
        names = [r.name for r in self.custom_pii_rules]
        if clash or len(names) != len(set(names)):
            raise ValueError(f"custom_pii_rules names must be unique and not built-in (clash: {clash or names})")


class PiiConfig:
    """The rules and detectors available to dataset scans, resolved once from ``CatalogSettings``."""

    def __init__(self, settings: CatalogSettings, detectors: list[PiiDetector]) -> None:
        rules = [r for r in BUILTIN_RULES if r.name not in settings.disabled_pii_rules]
        rules += [PiiRule(r.name, r.pattern) for r in settings.custom_pii_rules]
        self.rules: dict[str, PiiRule] = {r.name: r for r in rules}
        self.detectors = detectors

    def select(self, names: list[str] | None) -> list[PiiRule]:
        """The dataset's chosen rules (``None``: all available), in the built-in precedence order."""
        if names is None:
            return list(self.rules.values())
        chosen = set(names)
        return [rule for name, rule in self.rules.items() if name in chosen]


def load_detectors(specs: list[str]) -> list[PiiDetector]:
    """Import each ``module:factory`` and call it; fails start-up naming the bad entry."""
    detectors: list[PiiDetector] = []
    for spec in specs:
        module_name, sep, attr = spec.partition(":")
        if not sep or not module_name or not attr:
            raise ValueError(f"pii_detectors entry {spec!r} must look like 'package.module:factory'")
        factory = getattr(importlib.import_module(module_name), attr)
        detector = factory()
        if not isinstance(detector, PiiDetector):
            raise ValueError(f"pii_detectors entry {spec!r} did not return an object with detect(text)")
        detectors.append(detector)
    return detectors
